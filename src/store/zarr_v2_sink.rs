//! The OME-NGFF v0.4 output layout (SPEC §4): a Zarr v2 group (`.zgroup`, `.zattrs`) whose
//! level `k` is the array `k` with `order "C"`, `dimension_separator "/"`, a little-endian
//! dtype, `filters null` and the output codec as `compressor`. `.zarray` files are written
//! here, not by zarrs, so they hold exactly the Zarr v2 fields; `.zattrs` is written last,
//! atomically.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use zarrs::array::{Array, ArrayBytes, ArrayMetadataV2, CodecOptions};
use zarrs::storage::{ReadableWritableStorageTraits, StoreKey};

use super::error::{StoreError, boxed, io_error};
use super::node::{fill_value_json, write_json_atomically};
use super::sink::{LevelLayout, LevelSink, Sink};
use super::{ChunkSource, ReadStorage, Source, WriteStorage, ZarrSource, files, tree};
use crate::tile::Region;

/// Name of the group's metadata file.
const GROUP_FILE: &str = ".zgroup";
/// Name of the attributes file written last.
pub const ATTRIBUTES_FILE: &str = ".zattrs";

/// A v0.4 output being written.
pub struct ZarrV2Sink {
    path: PathBuf,
    storage: WriteStorage,
    /// True if chunks are plain files under `path` (no store layer in between).
    plain_files: bool,
}

impl std::fmt::Debug for ZarrV2Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrV2Sink")
            .field("path", &self.path)
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
    pub fn create(
        path: &Path,
        layer: Option<&(dyn Fn(WriteStorage) -> WriteStorage + Send + Sync)>,
    ) -> Result<Self, StoreError> {
        fs::create_dir_all(path).map_err(io_error("cannot create the output directory", path))?;
        fs::write(path.join(GROUP_FILE), b"{\n  \"zarr_format\": 2\n}\n")
            .map_err(io_error("cannot write", &path.join(GROUP_FILE)))?;
        let storage: WriteStorage = files::RegularFileStore::new(path).map_err(|e| StoreError::Io {
            action: "cannot open the output store",
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let plain_files = layer.is_none();
        let storage = match layer {
            Some(layer) => layer(storage),
            None => storage,
        };
        Ok(Self {
            path: path.to_path_buf(),
            storage,
            plain_files,
        })
    }
}

impl Sink for ZarrV2Sink {
    fn path(&self) -> &Path {
        &self.path
    }

    fn group_file(&self) -> &'static str {
        GROUP_FILE
    }

    fn create_level(&self, level: usize, layout: &LevelLayout) -> Result<Box<dyn LevelSink>, StoreError> {
        let array_path = format!("/{level}");
        let dir = self.path.join(level.to_string());
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
        let array = Array::new_with_metadata(self.storage.clone(), &array_path, metadata.into()).map_err(|e| {
            StoreError::InvalidMetadata {
                path: dir.clone(),
                reason: e.to_string(),
            }
        })?;
        fs::create_dir_all(&dir).map_err(io_error("cannot create", &dir))?;
        write_json_atomically(&dir.join(".zarray"), &meta)?;
        Ok(Box::new(ZarrV2Level {
            array,
            storage: self.storage.clone(),
            dir,
            root: self.plain_files.then(|| self.path.clone()),
        }))
    }

    fn read_level(&self, level: usize) -> Result<Arc<dyn ChunkSource>, StoreError> {
        let storage: ReadStorage = self.storage.clone();
        let source = ZarrSource::open_array(storage, &format!("/{level}"), &self.path.join(level.to_string()))?;
        Ok(Arc::new(source))
    }

    fn write_attributes(&self, attributes: &Value) -> Result<(), StoreError> {
        write_json_atomically(&self.path.join(ATTRIBUTES_FILE), attributes)
    }
}

/// One level array of a [`ZarrV2Sink`].
pub struct ZarrV2Level {
    array: Array<dyn ReadableWritableStorageTraits>,
    storage: WriteStorage,
    dir: PathBuf,
    /// The group directory, when chunks are plain files under it.
    root: Option<PathBuf>,
}

impl ZarrV2Level {
    fn codec_options() -> CodecOptions {
        CodecOptions::default().with_concurrent_target(1)
    }
}

impl LevelSink for ZarrV2Level {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn chunks_in(&self, region: &Region) -> Vec<Vec<u64>> {
        let subset = zarrs::array::ArraySubset::new_with_start_shape(region.start.clone(), region.shape.clone())
            .expect("start and shape have the same length");
        match self.array.chunk_grid().chunks_in_array_subset(&subset) {
            Ok(Some(chunks)) => chunks.indices().into_iter().map(|i| i.to_vec()).collect(),
            _ => Vec::new(),
        }
    }

    fn chunk_region(&self, indices: &[u64]) -> Region {
        let subset = self
            .array
            .chunk_grid()
            .subset(indices)
            .ok()
            .flatten()
            .expect("chunk indices come from the grid itself");
        Region::new(subset.start().to_vec(), subset.shape().to_vec())
    }

    fn flat_index(&self, indices: &[u64]) -> u64 {
        let grid = self.array.chunk_grid_shape();
        indices.iter().zip(grid.iter()).fold(0, |flat, (&i, &n)| flat * n + i)
    }

    fn chunk_indices(&self, flat: u64) -> Vec<u64> {
        let grid = self.array.chunk_grid_shape();
        let mut rest = flat;
        let mut indices = vec![0u64; grid.len()];
        for a in (0..grid.len()).rev() {
            indices[a] = rest % grid[a].max(1);
            rest /= grid[a].max(1);
        }
        indices
    }

    fn write_chunk(&self, indices: &[u64], data: &[u8]) -> Result<Option<u64>, StoreError> {
        use zarrs::array::codec::api::ArrayToBytesCodecTraits;
        let key = self.array.chunk_key(indices);
        let write_error = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::WriteChunk {
            path: self.dir.clone(),
            key: key.to_string(),
            source: e,
        };
        let bytes = ArrayBytes::new_flen(data);
        if bytes.is_fill_value(self.array.fill_value()) {
            // As zarrs does: a chunk of fill value is absent, whatever was there before.
            self.storage.erase(&key).map_err(|e| write_error(boxed(e)))?;
            return Ok(None);
        }
        let shape = self.array.chunk_shape(indices).map_err(|e| write_error(boxed(e)))?;
        let encoded = self
            .array
            .codecs()
            .encode(
                bytes,
                &shape,
                self.array.data_type(),
                self.array.fill_value(),
                &Self::codec_options(),
            )
            .map_err(|e| write_error(boxed(e)))?;
        let len = encoded.len() as u64;
        self.storage
            .set(&key, encoded.into_owned().into())
            .map_err(|e| write_error(boxed(e)))?;
        Ok(Some(len))
    }

    fn copy_stored_chunk(&self, source: &dyn Source, indices: &[u64]) -> Result<Option<u64>, StoreError> {
        let key = self.array.chunk_key(indices);
        let write_error = |e: std::io::Error| StoreError::WriteChunk {
            path: self.dir.clone(),
            key: key.to_string(),
            source: Box::new(e),
        };
        if let (Some(root), Some(from)) = (&self.root, source.stored_chunk_file(indices)) {
            // File to file: one copy in the kernel (a reflink where the file system has them).
            let to = root.join(key.as_str());
            match fs::metadata(&from) {
                // A missing chunk is the fill value: it stays missing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Ok(meta) if !meta.is_file() => {
                    return Err(StoreError::ReadChunk {
                        path: source.path().to_path_buf(),
                        key: source.chunk_name(indices),
                        source: boxed(tree::not_regular(&meta)),
                    });
                }
                _ => {}
            }
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir).map_err(write_error)?;
            }
            return fs::copy(&from, &to).map(Some).map_err(write_error);
        }
        let Some(bytes) = source.stored_chunk(indices)? else {
            return Ok(None);
        };
        let len = bytes.len() as u64;
        let key: StoreKey = key;
        self.storage
            .set(&key, bytes.into())
            .map_err(|e| StoreError::WriteChunk {
                path: self.dir.clone(),
                key: key.to_string(),
                source: boxed(e),
            })?;
        Ok(Some(len))
    }

    fn stored_size(&self, flat: u64) -> Option<u64> {
        let key = self.array.chunk_key(&self.chunk_indices(flat));
        self.storage.size_key(&key).ok().flatten()
    }
}
