//! Zarr v2 and v3 arrays and OME-Zarr images (v0.4 `.zattrs` or v0.5 `ome` attributes) as
//! sources: [`open_source`] opens an input (an array, or an image group whose first dataset
//! is level 0), and a level of the output is read back the same way. Any codec and chunk
//! grid `zarrs` reads, sharding included; chunks decode through [`ChunkDecoder`] with
//! bounded memory, and only regular files are read.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use zarrs::array::{Array, ArrayShardedExt, ArraySubset, ChunkGrid};
use zarrs::plugin::ExtensionName;
use zarrs::storage::ReadableStorageTraits;

use super::codec::OutputCodec;
use super::decode::ChunkDecoder;
use super::error::{StoreError, boxed};
use super::node::{NodeKind, probe_node};
use super::source::{ChunkSource, ImageMetadata, Source};
use super::{ReadStorage, files, tree};
use crate::dtype::DType;
use crate::journal::InputFingerprint;
use crate::ngff::{NgffError, read_input_image};
use crate::tile::Region;

/// A Zarr array read chunk by chunk: an input's level 0 (with its image metadata), or a
/// level of the output as stored.
pub struct ZarrSource {
    /// The path the user gave (the image group, or the array).
    path: PathBuf,
    /// The array's own directory.
    array_dir: PathBuf,
    /// The array.
    array: Arc<Array<dyn ReadableStorageTraits>>,
    /// Path of the array inside the store (`/` for a plain array).
    array_path: String,
    decoder: ChunkDecoder,
    /// The read grid (inner chunks of a sharded array).
    grid: ChunkGrid,
    dtype: DType,
    shape: Vec<u64>,
    chunk_shape: Vec<u64>,
    fill: Vec<u8>,
    /// Zarr format (2 or 3).
    zarr_format: u8,
    /// The array's metadata as stored (`.zarray` or `zarr.json`).
    raw_metadata: Value,
    image: ImageMetadata,
    stored_codec: Option<OutputCodec>,
    stored_shards: Option<(Vec<u64>, OutputCodec)>,
    /// True if chunks are plain files under `path` (no store layer in between), so stored
    /// chunks can be copied file to file.
    plain_files: bool,
}

impl std::fmt::Debug for ZarrSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrSource")
            .field("path", &self.path)
            .field("array_path", &self.array_path)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("chunk_shape", &self.chunk_shape)
            .finish_non_exhaustive()
    }
}

impl ZarrSource {
    /// A source over an opened array; refuses dtypes outside SPEC §5, empty axes and sizes
    /// that are not addressable.
    fn new(
        array: Arc<Array<dyn ReadableStorageTraits>>,
        path: PathBuf,
        array_dir: PathBuf,
        array_path: String,
        raw_metadata: Value,
        image: Option<ImageMetadata>,
        plain_files: bool,
    ) -> Result<Self, StoreError> {
        let type_name = array.data_type().name_v3().map(|n| n.to_string()).unwrap_or_default();
        let dtype = DType::from_name(&type_name).ok_or_else(|| StoreError::UnsupportedDType {
            path: array_dir.clone(),
            dtype: if type_name.is_empty() {
                array.data_type().to_string()
            } else {
                type_name
            },
        })?;
        let shape = array.shape().to_vec();
        if shape.contains(&0) {
            return Err(StoreError::EmptyAxis { path: array_dir, shape });
        }
        let grid = array.subchunk_grid();
        let chunk_shape = grid
            .chunk_shape_u64(&vec![0; shape.len()])
            .ok()
            .flatten()
            .unwrap_or_else(|| shape.clone());
        for (what, dims) in [("shape", &shape), ("chunk shape", &chunk_shape)] {
            let bytes = dtype.bytes_of(dims);
            if bytes.is_none_or(|b| usize::try_from(b).is_err()) {
                return Err(StoreError::TooLarge {
                    path: array_dir,
                    what: format!("its {what} {dims:?} of {dtype}"),
                });
            }
        }
        let zarr_format = if matches!(raw_metadata.get("zarr_format"), Some(v) if v == 3) {
            3
        } else {
            2
        };
        let stored_codec = if array.is_sharded() {
            None
        } else {
            OutputCodec::of_stored_chunks(&raw_metadata, dtype)
        };
        let stored_shards = if array.is_exclusively_sharded() {
            copyable_shards(&raw_metadata, dtype).and_then(|codec| {
                let shard = array
                    .chunk_grid()
                    .chunk_shape_u64(&vec![0; shape.len()])
                    .ok()
                    .flatten()?;
                Some((shard, codec))
            })
        } else {
            None
        };
        let fill = array.fill_value().as_ne_bytes().to_vec();
        Ok(Self {
            decoder: ChunkDecoder::new(array.clone()),
            path,
            array_dir,
            array,
            array_path,
            grid,
            dtype,
            shape,
            chunk_shape,
            fill,
            zarr_format,
            raw_metadata,
            image: image.unwrap_or_default(),
            stored_codec,
            stored_shards,
            plain_files,
        })
    }

    /// Opens level `level` of an output at `root` through its store, to read it back.
    ///
    /// # Errors
    /// [`StoreError::OpenArray`] if its metadata cannot be read.
    pub(crate) fn open_level(storage: &super::WriteStorage, root: &Path, level: usize) -> Result<Self, StoreError> {
        let (array_path, dir) = (format!("/{level}"), root.join(level.to_string()));
        let storage: ReadStorage = storage.clone();
        let array = Array::open(storage, &array_path).map_err(|e| StoreError::OpenArray {
            path: dir.clone(),
            source: boxed(e),
        })?;
        let raw_metadata = serde_json::to_value(array.metadata()).unwrap_or(Value::Null);
        Self::new(Arc::new(array), dir.clone(), dir, array_path, raw_metadata, None, false)
    }

    /// The array.
    #[must_use]
    pub fn array(&self) -> &Arc<Array<dyn ReadableStorageTraits>> {
        &self.array
    }

    /// Path of the array inside the store (`/` for a plain array).
    #[must_use]
    pub fn array_path(&self) -> &str {
        &self.array_path
    }

    /// The array's own directory.
    #[must_use]
    pub fn array_dir(&self) -> &Path {
        &self.array_dir
    }

    /// Zarr format of the array (2 or 3).
    #[must_use]
    pub fn zarr_format(&self) -> u8 {
        self.zarr_format
    }

    /// The array's metadata as stored (`.zarray` or `zarr.json`).
    #[must_use]
    pub fn raw_metadata(&self) -> &Value {
        &self.raw_metadata
    }

    /// The fill value as Zarr v2 JSON.
    #[must_use]
    pub fn fill_value_json(&self) -> Value {
        super::node::fill_value_json(&self.fill, self.dtype)
    }

    /// The shard shape, for a sharded array (the read chunks are its inner chunks).
    #[must_use]
    pub fn shard_shape(&self) -> Option<Vec<u64>> {
        if !self.array.is_sharded() {
            return None;
        }
        self.array
            .chunk_grid()
            .chunk_shape_u64(&vec![0; self.shape.len()])
            .ok()
            .flatten()
    }

    /// The files the array stores its chunks (or shards) in, and their bytes.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the array's directory cannot be read.
    pub fn stored_files(&self) -> Result<crate::journal::StoredTotals, StoreError> {
        let Some(keys) = tree::ChunkKeys::of(&self.raw_metadata) else {
            return Ok(crate::journal::StoredTotals::default());
        };
        tree::count_chunk_files(&self.array_dir, &keys).map_err(|source| StoreError::Io {
            action: "cannot read",
            path: self.array_dir.clone(),
            source,
        })
    }

    /// The key of stored chunk `indices` (of the array's chunk grid).
    #[must_use]
    pub fn chunk_key(&self, indices: &[u64]) -> String {
        self.array.chunk_key(indices).to_string()
    }
}

impl ChunkSource for ZarrSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn chunk_shape(&self) -> &[u64] {
        &self.chunk_shape
    }

    fn grid_shape(&self) -> Vec<u64> {
        self.grid.grid_shape().to_vec()
    }

    fn chunks_in(&self, region: &Region) -> Vec<Vec<u64>> {
        chunks_of_region(&self.grid, region)
    }

    fn chunk_region(&self, indices: &[u64]) -> Region {
        grid_region(&self.grid, indices)
    }

    fn chunk_name(&self, indices: &[u64]) -> String {
        if self.array.is_sharded() {
            let shard: Vec<u64> = match self.grid.subset(indices) {
                Ok(Some(sub)) => self
                    .array
                    .chunk_grid()
                    .chunk_indices(sub.start())
                    .ok()
                    .flatten()
                    .map(|v| v.to_vec())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            format!("{} (inner chunk {indices:?})", self.array.chunk_key(&shard))
        } else {
            self.array.chunk_key(indices).to_string()
        }
    }

    fn fill_bytes(&self) -> &[u8] {
        &self.fill
    }

    fn read_chunk(&self, indices: &[u64]) -> Result<Vec<u8>, StoreError> {
        let shape = grid_region(&self.grid, indices).shape;
        self.decoder.decode(indices, &shape).map_err(|e| StoreError::ReadChunk {
            path: self.path.clone(),
            key: self.chunk_name(indices),
            source: boxed(e),
        })
    }

    fn nothing_stored_in(&self, region: &Region) -> Result<bool, StoreError> {
        let storage = self.array.storage();
        for idx in chunks_of_region(self.array.chunk_grid(), region) {
            let key = self.array.chunk_key(&idx);
            let size = storage.size_key(&key).map_err(|e| StoreError::ReadChunk {
                path: self.path.clone(),
                key: key.to_string(),
                source: boxed(e),
            })?;
            if size.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Source for ZarrSource {
    fn image(&self) -> &ImageMetadata {
        &self.image
    }

    fn identity(&self) -> Value {
        json!({
            "input_array": self.array_path,
            "input_metadata": self.raw_metadata,
        })
    }

    fn fingerprint(&self) -> Result<InputFingerprint, StoreError> {
        tree::fingerprint_files(&self.array_dir).map_err(|source| StoreError::Io {
            action: "cannot read the input",
            path: self.array_dir.clone(),
            source,
        })
    }

    fn stored_codec(&self) -> Option<&OutputCodec> {
        self.stored_codec.as_ref()
    }

    fn stored_shards(&self) -> Option<(&[u64], &OutputCodec)> {
        self.stored_shards
            .as_ref()
            .map(|(shape, codec)| (shape.as_slice(), codec))
    }

    fn stored_chunk(&self, indices: &[u64]) -> Result<Option<Vec<u8>>, StoreError> {
        self.array
            .retrieve_encoded_chunk(indices)
            .map_err(|e| StoreError::ReadChunk {
                path: self.path.clone(),
                key: self.chunk_key(indices),
                source: boxed(e),
            })
    }

    fn stored_chunk_file(&self, indices: &[u64]) -> Option<PathBuf> {
        self.plain_files
            .then(|| self.path.join(self.array.chunk_key(indices).as_str()))
    }
}

/// The inner codec of a sharded array's metadata, if its shards are laid out as ome-pyramid
/// writes them: index at the end, encoded as little-endian bytes with a CRC32C.
fn copyable_shards(meta: &Value, dtype: DType) -> Option<OutputCodec> {
    let codecs = meta.get("codecs")?.as_array()?;
    let [sharding] = codecs.as_slice() else { return None };
    let config = sharding.get("configuration")?;
    let location = config.get("index_location").and_then(Value::as_str).unwrap_or("end");
    let index = config.get("index_codecs")?.as_array()?;
    let little_bytes = |c: &Value| {
        c.get("name").and_then(Value::as_str) == Some("bytes")
            && c.get("configuration")
                .and_then(|c| c.get("endian"))
                .and_then(Value::as_str)
                .is_none_or(|e| e == "little")
    };
    let index_ok = matches!(index.as_slice(), [bytes, crc] if little_bytes(bytes)
        && crc.get("name").and_then(Value::as_str) == Some("crc32c"));
    if location != "end" || !index_ok {
        return None;
    }
    OutputCodec::of_stored_chunks(&json!({"zarr_format": 3, "codecs": config.get("codecs")?}), dtype)
}

/// The region of chunk `indices` of `grid` (not clipped to the array).
///
/// # Panics
/// If the indices are outside the grid.
fn grid_region(grid: &ChunkGrid, indices: &[u64]) -> Region {
    let subset = grid
        .subset(indices)
        .ok()
        .flatten()
        .expect("chunk indices come from the grid itself");
    Region::new(subset.start().to_vec(), subset.shape().to_vec())
}

/// Indices of the chunks of `grid` that intersect `region`.
fn chunks_of_region(grid: &ChunkGrid, region: &Region) -> Vec<Vec<u64>> {
    let subset = ArraySubset::new_with_start_shape(region.start.clone(), region.shape.clone())
        .expect("start and shape have the same length");
    match grid.chunks_in_array_subset(&subset) {
        Ok(Some(chunks)) => chunks.indices().into_iter().map(|i| i.to_vec()).collect(),
        _ => Vec::new(),
    }
}

/// Opens the input of a build: an array, or an OME-Zarr image group (level 0).
///
/// # Errors
/// [`StoreError`] naming what is wrong: missing path, not Zarr, malformed metadata,
/// missing dataset, unsupported dtype, zero-sized axis.
pub fn open_source(path: &Path) -> Result<ZarrSource, StoreError> {
    open_source_with(path, None)
}

/// As [`open_source`], reading chunks through `layer` (a wrapper of the file store).
///
/// # Errors
/// As [`open_source`].
pub fn open_source_with(
    path: &Path,
    layer: Option<&(dyn Fn(ReadStorage) -> ReadStorage + Send + Sync)>,
) -> Result<ZarrSource, StoreError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound(path.to_path_buf())),
        Err(source) => {
            return Err(StoreError::Inaccessible {
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(meta) if !meta.is_dir() => return Err(StoreError::NotZarr(path.to_path_buf())),
        Ok(_) => {}
    }
    let store: ReadStorage = files::RegularFileStore::new(path).map_err(|e| StoreError::OpenArray {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let plain_files = layer.is_none();
    let store = match layer {
        Some(layer) => layer(store),
        None => store,
    };
    let (array_path, raw_metadata, image) = match probe_node(path)? {
        NodeKind::ArrayV2(meta) | NodeKind::ArrayV3(meta) => ("/".to_string(), meta, None),
        NodeKind::Group(attributes) => {
            let image = read_input_image(&attributes)
                .map_err(|source| StoreError::Ngff {
                    path: path.to_path_buf(),
                    source,
                })?
                .ok_or_else(|| StoreError::NotAnImage(path.to_path_buf()))?;
            let dataset = image.level0_path.trim_matches('/').to_string();
            let dir = path.join(&dataset);
            let meta = match probe_node(&dir) {
                Ok(NodeKind::ArrayV2(meta) | NodeKind::ArrayV3(meta)) => meta,
                Ok(NodeKind::Group(_)) => {
                    return Err(StoreError::MissingDataset {
                        path: path.to_path_buf(),
                        dataset,
                        source: "it is a group, not an array".into(),
                    });
                }
                Err(e) => {
                    return Err(StoreError::MissingDataset {
                        path: path.to_path_buf(),
                        dataset,
                        source: boxed(e),
                    });
                }
            };
            (format!("/{dataset}"), meta, Some(image))
        }
    };
    let array_dir = path.join(array_path.trim_start_matches('/'));
    let array = Array::open(store, &array_path).map_err(|e| StoreError::OpenArray {
        path: array_dir.clone(),
        source: boxed(e),
    })?;
    let source = ZarrSource::new(
        Arc::new(array),
        path.to_path_buf(),
        array_dir,
        array_path,
        raw_metadata,
        image.clone().map(ImageMetadata::from),
        plain_files,
    )?;
    if let Some(image) = &image
        && !image.axes.is_empty()
        && image.axes.len() != source.shape.len()
    {
        return Err(StoreError::Ngff {
            path: path.to_path_buf(),
            source: NgffError::Malformed(format!(
                "{} axes are listed but dataset `{}` has {} dimensions",
                image.axes.len(),
                image.level0_path,
                source.shape.len()
            )),
        });
    }
    Ok(source)
}
