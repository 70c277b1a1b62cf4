//! The OME-NGFF 0.5 output layout: a Zarr v3 group whose level `k` is the array `k`, with
//! `dimension_names`, the fill value and the output codec as a v3 chain (`bytes` and the
//! compressor), inside a `sharding_indexed` codec (index at the end, with a CRC32C) when the
//! level is sharded. Every `zarr.json` is written here, so it holds exactly the Zarr v3
//! fields. The group's `zarr.json` has no attributes until [`Sink::write_attributes`]
//! writes it again with the image metadata, last and atomically.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use zarrs::array::codec::CodecChain;
use zarrs::array::{Array, ArrayMetadataV3};
use zarrs::metadata::v3::MetadataV3;

use super::error::{StoreError, io_error};
use super::node::{fill_value_json, write_json_atomically, write_or_check_json};
use super::sink::{LevelLayout, LevelSink, Sink};
use super::zarr_level::{InnerChunks, ZarrLevel};
use super::{ChunkSource, ZarrSource, files};

/// Name of every node's metadata file.
const NODE_FILE: &str = "zarr.json";

/// A 0.5 output being written.
pub struct ZarrV3Sink {
    root: files::OutputRoot,
}

impl std::fmt::Debug for ZarrV3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrV3Sink")
            .field("path", &self.root.path)
            .finish_non_exhaustive()
    }
}

/// A group's `zarr.json`.
fn group_metadata(attributes: &Value) -> Value {
    json!({"zarr_format": 3, "node_type": "group", "attributes": attributes})
}

/// The `zarr.json` of a level array.
fn array_metadata(layout: &LevelLayout, chunk_codecs: Vec<Value>) -> Value {
    let (grid, codecs) = match &layout.shards {
        None => (&layout.chunks, chunk_codecs),
        Some(shards) => (
            shards,
            vec![json!({"name": "sharding_indexed", "configuration": {
                "chunk_shape": layout.chunks,
                "codecs": chunk_codecs,
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                "index_location": "end",
            }})],
        ),
    };
    json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": layout.shape,
        "data_type": layout.dtype.name(),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_value_json(&layout.fill, layout.dtype),
        "codecs": codecs,
        "attributes": {},
        "dimension_names": layout.dimension_names,
    })
}

impl ZarrV3Sink {
    /// Creates the output directory and its group `zarr.json` (no attributes yet), writing
    /// chunks through `layer` (a wrapper of the file store) if given.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created.
    pub fn create(path: &Path, layer: Option<&files::OutputLayer>) -> Result<Self, StoreError> {
        fs::create_dir_all(path).map_err(io_error("cannot create the output directory", path))?;
        write_json_atomically(&path.join(NODE_FILE), &group_metadata(&json!({})))?;
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

impl Sink for ZarrV3Sink {
    fn path(&self) -> &Path {
        &self.root.path
    }

    fn group_file(&self) -> &'static str {
        NODE_FILE
    }

    fn create_level(&self, level: usize, layout: &LevelLayout) -> Result<Box<dyn LevelSink>, StoreError> {
        let dir = self.root.path.join(level.to_string());
        let invalid = |reason: String| StoreError::InvalidMetadata {
            path: dir.clone(),
            reason,
        };
        let chunk_codecs = layout
            .codec
            .to_v3(layout.dtype)
            .ok_or_else(|| invalid("the codec has no Zarr v3 form".into()))?;
        let meta = array_metadata(layout, chunk_codecs.clone());
        let metadata: ArrayMetadataV3 = serde_json::from_value(meta.clone()).map_err(|e| invalid(e.to_string()))?;
        let array = Array::new_with_metadata(self.root.storage.clone(), &format!("/{level}"), metadata.into())
            .map_err(|e| invalid(e.to_string()))?;
        let inner = match &layout.shards {
            None => None,
            Some(_) => {
                let codecs: Vec<MetadataV3> =
                    serde_json::from_value(Value::Array(chunk_codecs)).map_err(|e| invalid(e.to_string()))?;
                Some(InnerChunks {
                    chain: CodecChain::from_metadata(&codecs).map_err(|e| invalid(e.to_string()))?,
                })
            }
        };
        fs::create_dir_all(&dir).map_err(io_error("cannot create", &dir))?;
        write_or_check_json(&dir.join(NODE_FILE), &meta, !self.root.existing)?;
        Ok(Box::new(ZarrLevel::new(
            array,
            self.root.storage.clone(),
            dir,
            self.root.plain_files.then(|| self.root.path.clone()),
            (&layout.shape, &layout.chunks, layout.shards.as_deref()),
            inner,
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
        write_json_atomically(&self.root.path.join(NODE_FILE), &group_metadata(attributes))
    }
}
