//! The OME-NGFF v0.4 output layout (SPEC §4): a Zarr v2 group (`.zgroup`, `.zattrs`) whose
//! level `k` is the array `k` with `order "C"`, `dimension_separator "/"`, a little-endian
//! dtype, `filters null` and the output codec as `compressor`. `.zarray` files are written
//! here, not by zarrs, so they hold exactly the Zarr v2 fields; `.zattrs` is written last,
//! atomically.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use zarrs::array::{Array, ArrayMetadataV2};

use super::error::{StoreError, io_error};
use super::node::{fill_value_json, write_json_atomically, write_or_check_json};
use super::sink::{LevelLayout, LevelSink, Sink};
use super::zarr_level::ZarrLevel;
use super::{ChunkSource, ZarrSource, files};

/// Name of the group's metadata file.
const GROUP_FILE: &str = ".zgroup";
/// Name of the attributes file written last.
pub const ATTRIBUTES_FILE: &str = ".zattrs";

/// A v0.4 output being written.
pub struct ZarrV2Sink {
    root: files::OutputRoot,
}

impl std::fmt::Debug for ZarrV2Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrV2Sink")
            .field("path", &self.root.path)
            .finish_non_exhaustive()
    }
}

impl ZarrV2Sink {
    /// Creates the output directory and its `.zgroup`, writing chunks through `layer` (a
    /// wrapper of the file store) if given. No `.zattrs` is written until
    /// [`Sink::write_attributes`].
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created.
    pub fn create(path: &Path, layer: Option<&files::OutputLayer>) -> Result<Self, StoreError> {
        fs::create_dir_all(path).map_err(io_error("cannot create the output directory", path))?;
        fs::write(path.join(GROUP_FILE), b"{\n  \"zarr_format\": 2\n}\n")
            .map_err(io_error("cannot write", &path.join(GROUP_FILE)))?;
        Ok(Self {
            root: files::OutputRoot::open(path, layer, false)?,
        })
    }

    /// Opens an output whose metadata a partitioned build's plan wrote: levels are opened
    /// for writing chunks, and their metadata is checked instead of written.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the output is not a directory.
    pub fn open_existing(path: &Path, layer: Option<&files::OutputLayer>) -> Result<Self, StoreError> {
        Ok(Self {
            root: files::OutputRoot::open(path, layer, true)?,
        })
    }
}

impl Sink for ZarrV2Sink {
    fn path(&self) -> &Path {
        &self.root.path
    }

    fn group_file(&self) -> &'static str {
        GROUP_FILE
    }

    fn create_level(&self, level: usize, layout: &LevelLayout) -> Result<Box<dyn LevelSink>, StoreError> {
        let array_path = format!("/{level}");
        let dir = self.root.path.join(level.to_string());
        let meta = json!({
            "zarr_format": 2,
            "shape": layout.shape,
            "chunks": layout.chunks,
            "dtype": layout.dtype.zarr_v2_name(),
            "compressor": layout.codec.to_v2(),
            "fill_value": fill_value_json(&layout.fill, layout.dtype),
            "order": "C",
            "filters": null,
            "dimension_separator": "/",
        });
        let metadata: ArrayMetadataV2 =
            serde_json::from_value(meta.clone()).map_err(|e| StoreError::InvalidMetadata {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
        let array = Array::new_with_metadata(self.root.storage.clone(), &array_path, metadata.into()).map_err(|e| {
            StoreError::InvalidMetadata {
                path: dir.clone(),
                reason: e.to_string(),
            }
        })?;
        fs::create_dir_all(&dir).map_err(io_error("cannot create", &dir))?;
        write_or_check_json(&dir.join(".zarray"), &meta, !self.root.existing)?;
        Ok(Box::new(ZarrLevel::new(
            array,
            self.root.storage.clone(),
            dir,
            self.root.plain_files.then(|| self.root.path.clone()),
            (&layout.shape, &layout.chunks, None),
            None,
        )))
    }

    fn read_level(&self, level: usize) -> Result<Arc<dyn ChunkSource>, StoreError> {
        Ok(Arc::new(ZarrSource::open_level(
            &self.root.storage,
            &self.root.path,
            level,
        )?))
    }

    fn write_attributes(&self, attributes: &Value) -> Result<(), StoreError> {
        write_json_atomically(&self.root.path.join(ATTRIBUTES_FILE), attributes)
    }
}
