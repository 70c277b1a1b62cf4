//! Storage: opening the input, creating the output group and its level arrays, reading
//! tiles and writing chunks (SPEC §1 inputs, §4 layout, §5 streaming). Built on `zarrs`.
//!
//! - Inputs: a Zarr v2 or v3 array (any codec and chunk grid `zarrs` reads, sharding
//!   included), or a group holding OME-Zarr `multiscales` (v0.4 `.zattrs`, or v0.5 `ome`
//!   attributes), whose first dataset is level 0.
//! - Output: a Zarr v2 group; level `k` is the array `k` with `order "C"`,
//!   `dimension_separator "/"`, a little-endian dtype, `filters null` and the chosen
//!   compressor. `.zattrs` is written last, atomically.
//! - [`TileReader`] reads any region of a level through a bounded cache of decoded chunks
//!   that keeps a chunk exactly until the last tile that needs it has read it, so each
//!   chunk is decoded once per pass whenever the memory budget allows.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use zarrs::array::{
    Array, ArrayBytes, ArrayMetadataV2, ArrayShardedExt, ArraySubset, ChunkGrid, CodecOptions, Element, ElementOwned,
};
use zarrs::plugin::ExtensionName;
use zarrs::storage::{ReadableStorageTraits, ReadableWritableStorageTraits, StoreKey};

pub mod decode;
pub mod files;
pub mod tree;

use decode::ChunkDecoder;

use crate::dtype::DType;
use crate::ngff::{InputImage, NgffError, read_input_image};
use crate::tile::{Region, TileElement, copy_overlap};

/// A readable store.
pub type ReadStorage = Arc<dyn ReadableStorageTraits>;
/// A readable and writable store.
pub type WriteStorage = Arc<dyn ReadableWritableStorageTraits>;

/// Errors of the storage layer. Each names the path and, where there is one, the chunk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The input path does not exist.
    #[error("input `{0}` does not exist")]
    NotFound(PathBuf),
    /// The input path exists but cannot be looked at (permissions, a symbolic link loop).
    #[error("cannot access the input `{path}`")]
    Inaccessible {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Sizes that no machine can hold.
    #[error("`{path}` cannot be processed: {what} holds more bytes than a 64-bit machine can address")]
    TooLarge {
        /// The array.
        path: PathBuf,
        /// What is too large.
        what: String,
    },
    /// The input path is not a Zarr array or group.
    #[error("`{0}` is not a Zarr array or OME-Zarr image (no .zarray, .zgroup or zarr.json found)")]
    NotZarr(PathBuf),
    /// A group without `multiscales`.
    #[error("`{0}` is a Zarr group without OME `multiscales` metadata; point at an array or an OME-Zarr image")]
    NotAnImage(PathBuf),
    /// Malformed metadata.
    #[error("invalid metadata in `{path}`: {reason}")]
    InvalidMetadata {
        /// Where.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// OME metadata problems.
    #[error("invalid OME metadata in `{path}`")]
    Ngff {
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: NgffError,
    },
    /// `multiscales` names a dataset that is not there or cannot be opened.
    #[error("OME metadata in `{path}` names dataset `{dataset}`, which cannot be opened")]
    MissingDataset {
        /// The group.
        path: PathBuf,
        /// The dataset path.
        dataset: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The array cannot be opened.
    #[error("cannot open the Zarr array at `{path}`")]
    OpenArray {
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A data type outside SPEC §5.
    #[error("`{path}` holds {dtype} data; supported are uint8/16/32/64, int8/16/32/64, float32/64")]
    UnsupportedDType {
        /// Where.
        path: PathBuf,
        /// The data type.
        dtype: String,
    },
    /// An axis of length zero.
    #[error("`{path}` has shape {shape:?}: every axis must have at least one element")]
    EmptyAxis {
        /// Where.
        path: PathBuf,
        /// The shape.
        shape: Vec<u64>,
    },
    /// Reading or decoding a chunk failed.
    #[error("cannot read chunk `{key}` of `{path}`")]
    ReadChunk {
        /// The array.
        path: PathBuf,
        /// The chunk's store key.
        key: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Encoding or writing a chunk failed.
    #[error("cannot write chunk `{key}` of `{path}`")]
    WriteChunk {
        /// The array.
        path: PathBuf,
        /// The chunk's store key.
        key: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The build was cancelled while reading or writing.
    #[error("stopped on request")]
    Cancelled,
    /// Any other file-system failure.
    #[error("{action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// True for problems with what the user gave (exit code 2), false for failures
    /// while running (exit code 1).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        !matches!(
            self,
            StoreError::ReadChunk { .. }
                | StoreError::WriteChunk { .. }
                | StoreError::Io { .. }
                | StoreError::Cancelled
        )
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// Every element type the store reads and writes.
pub trait StoreElement: TileElement + Element + ElementOwned {}
impl<T: TileElement + Element + ElementOwned> StoreElement for T {}

/// An opened input: level 0 and what is known about it.
pub struct SourceImage {
    /// The path the user gave.
    pub path: PathBuf,
    /// The level-0 array.
    pub array: Arc<Array<dyn ReadableStorageTraits>>,
    /// Path of the level-0 array inside the store (`/` for a plain array).
    pub array_path: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<u64>,
    /// Read granularity: the chunk shape, or the inner chunk shape of a sharded array.
    pub chunk_shape: Vec<u64>,
    /// Zarr format of the level-0 array (2 or 3).
    pub zarr_format: u8,
    /// The level-0 array's raw metadata (`.zarray` or `zarr.json`).
    pub raw_metadata: Value,
    /// The level-0 codec as a Zarr v2 compressor (`Some(Value::Null)` = uncompressed),
    /// when v2 can express it and encoded chunks are valid v2 chunks as they are.
    pub v2_compressor: Option<Value>,
    /// The fill value as Zarr v2 JSON.
    pub fill_value: Value,
    /// OME image metadata, for an OME-Zarr input.
    pub image: Option<InputImage>,
    /// True if chunks are plain files under `path` (no store layer in between), so encoded
    /// chunks can be copied file to file.
    pub plain_files: bool,
}

impl std::fmt::Debug for SourceImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceImage")
            .field("path", &self.path)
            .field("array_path", &self.array_path)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("chunk_shape", &self.chunk_shape)
            .finish_non_exhaustive()
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, StoreError> {
    match tree::read_regular(path) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::InvalidMetadata {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Ok(None) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(StoreError::InvalidMetadata {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) => Err(StoreError::Io {
            action: "cannot read",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The kind of Zarr node found at a directory.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A v2 array (`.zarray`).
    ArrayV2(Value),
    /// A v3 array (`zarr.json`, `node_type: array`).
    ArrayV3(Value),
    /// A group, with its attributes.
    Group(Map<String, Value>),
}

/// Identifies the Zarr node at `dir`.
///
/// # Errors
/// [`StoreError::NotZarr`] if there is none, [`StoreError::InvalidMetadata`] if its JSON is bad.
pub fn probe_node(dir: &Path) -> Result<NodeKind, StoreError> {
    if let Some(meta) = read_json(&dir.join("zarr.json"))? {
        let attributes = meta
            .get("attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        return match meta.get("node_type").and_then(Value::as_str) {
            Some("array") => Ok(NodeKind::ArrayV3(meta)),
            Some("group") => Ok(NodeKind::Group(attributes)),
            _ => Err(StoreError::InvalidMetadata {
                path: dir.join("zarr.json"),
                reason: "`node_type` must be `array` or `group`".into(),
            }),
        };
    }
    if let Some(meta) = read_json(&dir.join(".zarray"))? {
        return Ok(NodeKind::ArrayV2(meta));
    }
    if dir.join(".zgroup").is_file() {
        let attributes = match read_json(&dir.join(".zattrs"))? {
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(StoreError::InvalidMetadata {
                    path: dir.join(".zattrs"),
                    reason: "attributes must be a JSON object".into(),
                });
            }
            None => Map::new(),
        };
        return Ok(NodeKind::Group(attributes));
    }
    Err(StoreError::NotZarr(dir.to_path_buf()))
}

/// Opens the input of a build: an array, or an OME-Zarr image group (level 0).
///
/// # Errors
/// [`StoreError`] naming what is wrong: missing path, not Zarr, malformed metadata,
/// missing dataset, unsupported dtype, zero-sized axis.
pub fn open_source(path: &Path) -> Result<SourceImage, StoreError> {
    open_source_with(path, None)
}

/// As [`open_source`], reading chunks through `layer` (a wrapper of the file store).
///
/// # Errors
/// As [`open_source`].
pub fn open_source_with(
    path: &Path,
    layer: Option<&(dyn Fn(ReadStorage) -> ReadStorage + Send + Sync)>,
) -> Result<SourceImage, StoreError> {
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
        let bytes = dims.iter().try_fold(dtype.size() as u64, |n, &d| n.checked_mul(d));
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
    let v2_compressor = if array.is_sharded() {
        None
    } else {
        v2_compressor_of(&raw_metadata, dtype)
    };
    let fill_value = fill_value_json(&array, dtype);
    if let Some(image) = &image
        && !image.axes.is_empty()
        && image.axes.len() != shape.len()
    {
        return Err(StoreError::Ngff {
            path: path.to_path_buf(),
            source: NgffError::Malformed(format!(
                "{} axes are listed but dataset `{}` has {} dimensions",
                image.axes.len(),
                image.level0_path,
                shape.len()
            )),
        });
    }
    Ok(SourceImage {
        path: path.to_path_buf(),
        array: Arc::new(array),
        array_path,
        dtype,
        shape,
        chunk_shape,
        zarr_format,
        raw_metadata,
        v2_compressor,
        fill_value,
        image,
        plain_files,
    })
}

fn fill_value_json(array: &Array<dyn ReadableStorageTraits>, dtype: DType) -> Value {
    let bytes = array.fill_value().as_ne_bytes();
    crate::dispatch_dtype!(dtype, T => {
        let value: T = bytemuck::pod_read_unaligned(bytes);
        number_json(value.to_f64_json())
    })
}

trait JsonNumber {
    fn to_f64_json(self) -> Value;
}
macro_rules! json_number {
    ($($t:ty),*) => {$(
        impl JsonNumber for $t {
            fn to_f64_json(self) -> Value { json!(self) }
        }
    )*};
}
json_number!(u8, u16, u32, u64, i8, i16, i32, i64);
impl JsonNumber for f32 {
    fn to_f64_json(self) -> Value {
        f64::from(self).to_f64_json()
    }
}
impl JsonNumber for f64 {
    fn to_f64_json(self) -> Value {
        if self.is_nan() {
            json!("NaN")
        } else if self.is_infinite() {
            json!(if self > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            json!(self)
        }
    }
}
fn number_json(v: Value) -> Value {
    v
}

/// Drops fields that do not change the encoded bytes, so two compressors compare equal
/// exactly when their chunks are interchangeable.
fn normalise_compressor(mut compressor: Value) -> Value {
    if let Some(map) = compressor.as_object_mut() {
        if map.get("checksum") == Some(&Value::Bool(false)) {
            map.remove("checksum");
        }
        map.remove("typesize");
        if map.get("id").and_then(Value::as_str) == Some("blosc") {
            map.entry("blocksize").or_insert(json!(0));
        }
    }
    compressor
}

/// The input's codec as a v2 compressor, if its encoded chunks are valid v2 chunks of a
/// C-order little-endian array with that compressor and no filters.
fn v2_compressor_of(meta: &Value, dtype: DType) -> Option<Value> {
    if meta.get("zarr_format").and_then(Value::as_u64) == Some(2) {
        let filters_empty = match meta.get("filters") {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        let dtype_ok = meta.get("dtype").and_then(Value::as_str) == Some(dtype.zarr_v2_name())
            || (dtype.size() == 1
                && meta
                    .get("dtype")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.ends_with(&dtype.zarr_v2_name()[1..])));
        let order_c = meta.get("order").and_then(Value::as_str).unwrap_or("C") == "C";
        if !(filters_empty && dtype_ok && order_c) {
            return None;
        }
        return Some(normalise_compressor(
            meta.get("compressor").cloned().unwrap_or(Value::Null),
        ));
    }
    let codecs = meta.get("codecs")?.as_array()?;
    let name = |c: &Value| c.get("name").and_then(Value::as_str).map(str::to_string);
    let config = |c: &Value| c.get("configuration").cloned().unwrap_or(json!({}));
    let first = codecs.first()?;
    if name(first)?.as_str() != "bytes" {
        return None;
    }
    let endian = config(first).get("endian").and_then(Value::as_str).map(str::to_string);
    if dtype.size() > 1 && endian.as_deref() != Some("little") {
        return None;
    }
    match codecs.len() {
        1 => Some(Value::Null),
        2 => {
            let c = &codecs[1];
            let cfg = config(c);
            match name(c)?.as_str() {
                "zstd" if cfg.get("checksum").and_then(Value::as_bool) != Some(true) => {
                    Some(json!({"id": "zstd", "level": cfg.get("level")?.clone()}))
                }
                "gzip" => Some(json!({"id": "gzip", "level": cfg.get("level")?.clone()})),
                "blosc" => {
                    let shuffle = match cfg.get("shuffle").and_then(Value::as_str)? {
                        "noshuffle" => 0,
                        "shuffle" => 1,
                        "bitshuffle" => 2,
                        _ => return None,
                    };
                    Some(json!({
                        "id": "blosc",
                        "cname": cfg.get("cname")?.clone(),
                        "clevel": cfg.get("clevel")?.clone(),
                        "shuffle": shuffle,
                        "blocksize": cfg.get("blocksize").cloned().unwrap_or(json!(0)),
                    }))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The codec of every output array (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// The input's codec where Zarr v2 can express it, else blosc-lz4 level 5 with byte shuffle.
    #[default]
    Input,
    /// Blosc with LZ4 and byte shuffle.
    BloscLz4,
    /// Blosc with Zstandard and byte shuffle.
    BloscZstd,
    /// Zstandard.
    Zstd,
    /// Gzip.
    Gzip,
    /// Uncompressed.
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "input" => Compression::Input,
            "blosc-lz4" | "blosc" => Compression::BloscLz4,
            "blosc-zstd" => Compression::BloscZstd,
            "zstd" => Compression::Zstd,
            "gzip" => Compression::Gzip,
            "none" | "raw" => Compression::None,
            _ => {
                return Err(format!(
                    "unknown compression `{s}` (expected input, blosc-lz4, blosc-zstd, zstd, gzip or none)"
                ));
            }
        })
    }
}

impl Compression {
    /// The Zarr v2 compressor JSON for this choice (`Value::Null` for none).
    ///
    /// # Errors
    /// A message when `level` is outside the codec's range.
    pub fn compressor_json(self, level: Option<i32>, source: &SourceImage) -> Result<Value, String> {
        let check = |lo: i32, hi: i32, default: i32, name: &str| {
            let l = level.unwrap_or(default);
            if (lo..=hi).contains(&l) {
                Ok(l)
            } else {
                Err(format!("compression level {l} is outside {lo}..={hi} for {name}"))
            }
        };
        let blosc = |cname: &str, clevel: i32| json!({"id": "blosc", "cname": cname, "clevel": clevel, "shuffle": 1, "blocksize": 0});
        Ok(match self {
            Compression::Input => match (&source.v2_compressor, level) {
                (Some(c), None) => c.clone(),
                (Some(c), Some(_)) if c.is_null() => {
                    return Err("--clevel needs a compressor, but the input is uncompressed".into());
                }
                (Some(c), Some(l)) => {
                    let mut c = c.clone();
                    let key = if c.get("id").and_then(Value::as_str) == Some("blosc") {
                        "clevel"
                    } else {
                        "level"
                    };
                    c[key] = json!(l);
                    c
                }
                (None, _) => blosc("lz4", check(0, 9, 5, "blosc")?),
            },
            Compression::BloscLz4 => blosc("lz4", check(0, 9, 5, "blosc")?),
            Compression::BloscZstd => blosc("zstd", check(0, 9, 5, "blosc")?),
            Compression::Zstd => json!({"id": "zstd", "level": check(-131_072, 22, 1, "zstd")?}),
            Compression::Gzip => json!({"id": "gzip", "level": check(0, 9, 1, "gzip")?}),
            Compression::None => {
                if level.is_some() {
                    return Err("--clevel has no meaning with --compression none".into());
                }
                Value::Null
            }
        })
    }
}

/// A short description of a Zarr array's codecs from its raw metadata, for `info`.
#[must_use]
pub fn describe_codecs(meta: &Value) -> String {
    if meta.get("zarr_format").and_then(Value::as_u64) == Some(2) {
        let compressor = meta.get("compressor").cloned().unwrap_or(Value::Null);
        let filters = meta.get("filters").cloned().unwrap_or(Value::Null);
        let mut s = if compressor.is_null() {
            "uncompressed".to_string()
        } else {
            compressor.to_string()
        };
        if !(filters.is_null() || filters.as_array().is_some_and(Vec::is_empty)) {
            s = format!("filters {filters}, {s}");
        }
        s
    } else {
        meta.get("codecs").map_or_else(|| "?".into(), Value::to_string)
    }
}

/// The output group being written.
pub struct OutputGroup {
    /// Its directory.
    pub path: PathBuf,
    storage: WriteStorage,
    plain_files: bool,
}

impl std::fmt::Debug for OutputGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputGroup")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Name of the attributes file written last.
pub const ATTRIBUTES_FILE: &str = ".zattrs";

impl OutputGroup {
    /// Creates the output directory and its `.zgroup`. No `.zattrs` is written until
    /// [`OutputGroup::write_attributes`].
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        Self::create_with(path, None)
    }

    /// As [`OutputGroup::create`], writing chunks through `layer` (a wrapper of the file store).
    ///
    /// # Errors
    /// As [`OutputGroup::create`].
    pub fn create_with(
        path: &Path,
        layer: Option<&(dyn Fn(WriteStorage) -> WriteStorage + Send + Sync)>,
    ) -> Result<Self, StoreError> {
        fs::create_dir_all(path).map_err(io_error("cannot create the output directory", path))?;
        fs::write(path.join(".zgroup"), b"{\n  \"zarr_format\": 2\n}\n")
            .map_err(io_error("cannot write", &path.join(".zgroup")))?;
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

    /// Opens level `level` (already written) for reading, through the same store.
    ///
    /// # Errors
    /// [`StoreError::OpenArray`] if its metadata cannot be read.
    pub fn open_level(&self, level: usize) -> Result<Arc<Array<dyn ReadableStorageTraits>>, StoreError> {
        let storage: ReadStorage = self.storage.clone();
        Array::open(storage, &format!("/{level}"))
            .map(Arc::new)
            .map_err(|e| StoreError::OpenArray {
                path: self.path.join(level.to_string()),
                source: boxed(e),
            })
    }

    /// Creates level array `level` with its `.zarray`.
    ///
    /// # Errors
    /// [`StoreError`] if the metadata is refused or cannot be written.
    pub fn create_level(
        &self,
        level: usize,
        shape: &[u64],
        chunks: &[u64],
        dtype: DType,
        compressor: &Value,
        fill_value: &Value,
    ) -> Result<LevelArray, StoreError> {
        let array_path = format!("/{level}");
        let dir = self.path.join(level.to_string());
        let meta = json!({
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": dtype.zarr_v2_name(),
            "compressor": compressor,
            "fill_value": fill_value,
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
        // `.zarray` is written here rather than by zarrs so it holds exactly the Zarr v2 fields.
        fs::create_dir_all(&dir).map_err(io_error("cannot create", &dir))?;
        write_json_atomically(&dir.join(".zarray"), &meta)?;
        Ok(LevelArray {
            array,
            storage: self.storage.clone(),
            dir,
            root: self.plain_files.then(|| self.path.clone()),
        })
    }

    /// Writes `.zattrs` atomically: a temporary file, flushed, then renamed.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn write_attributes(&self, attributes: &Value) -> Result<(), StoreError> {
        write_json_atomically(&self.path.join(ATTRIBUTES_FILE), attributes)
    }
}

/// Writes JSON to `path` through a temporary file and a rename, so readers see either the
/// old file or the whole new one.
///
/// # Errors
/// [`StoreError::Io`].
pub fn write_json_atomically(path: &Path, value: &Value) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp-ome-pyramid");
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    let mut file = fs::File::create(&tmp).map_err(io_error("cannot create", &tmp))?;
    file.write_all(text.as_bytes())
        .map_err(io_error("cannot write", &tmp))?;
    file.write_all(b"\n").map_err(io_error("cannot write", &tmp))?;
    file.sync_all().map_err(io_error("cannot flush", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error("cannot rename into place", path))?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable; not all platforms allow syncing a directory.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// One output level array.
pub struct LevelArray {
    array: Array<dyn ReadableWritableStorageTraits>,
    storage: WriteStorage,
    dir: PathBuf,
    /// The group directory, when chunks are plain files under it.
    root: Option<PathBuf>,
}

impl LevelArray {
    fn codec_options() -> CodecOptions {
        CodecOptions::default().with_concurrent_target(1)
    }

    /// Encodes and writes one chunk (`data` covers the full chunk, padding included), and
    /// returns the bytes stored. A chunk that holds only the fill value is not stored
    /// (valid Zarr): `None`.
    ///
    /// # Errors
    /// [`StoreError::WriteChunk`] naming the chunk.
    pub fn write_chunk<T: StoreElement>(&self, indices: &[u64], data: &[T]) -> Result<Option<u64>, StoreError> {
        use zarrs::array::codec::api::ArrayToBytesCodecTraits;
        let key = self.array.chunk_key(indices);
        let write_error = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::WriteChunk {
            path: self.dir.clone(),
            key: key.to_string(),
            source: e,
        };
        let bytes = ArrayBytes::new_flen(bytemuck::cast_slice::<T, u8>(data));
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

    /// Copies one chunk's encoded bytes from the source without decoding (the caller has
    /// checked the codecs and chunk shapes match) and returns the bytes stored. A missing
    /// chunk stays missing: `None`.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] or [`StoreError::WriteChunk`].
    pub fn copy_encoded_chunk(&self, source: &SourceImage, indices: &[u64]) -> Result<Option<u64>, StoreError> {
        if let (Some(root), true) = (&self.root, source.plain_files) {
            // File to file: one copy in the kernel (a reflink where the file system has them).
            let from = source.path.join(source.array.chunk_key(indices).as_str());
            let key = self.array.chunk_key(indices);
            let to = root.join(key.as_str());
            let write_error = |e: std::io::Error| StoreError::WriteChunk {
                path: self.dir.clone(),
                key: key.to_string(),
                source: Box::new(e),
            };
            match fs::metadata(&from) {
                // A missing chunk is the fill value: it stays missing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Ok(meta) if !meta.is_file() => {
                    return Err(StoreError::ReadChunk {
                        path: source.path.clone(),
                        key: source.array.chunk_key(indices).to_string(),
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
        let bytes = source
            .array
            .retrieve_encoded_chunk(indices)
            .map_err(|e| StoreError::ReadChunk {
                path: source.path.clone(),
                key: source.array.chunk_key(indices).to_string(),
                source: boxed(e),
            })?;
        let Some(bytes) = bytes else { return Ok(None) };
        let len = bytes.len() as u64;
        let key: StoreKey = self.array.chunk_key(indices);
        self.storage
            .set(&key, bytes.into())
            .map_err(|e| StoreError::WriteChunk {
                path: self.dir.clone(),
                key: key.to_string(),
                source: boxed(e),
            })?;
        Ok(Some(len))
    }

    /// The level's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The flat (C-order) index of chunk `indices` in the level's chunk grid.
    #[must_use]
    pub fn flat_index(&self, indices: &[u64]) -> u64 {
        let grid = self.array.chunk_grid_shape();
        indices.iter().zip(grid.iter()).fold(0, |flat, (&i, &n)| flat * n + i)
    }

    /// The chunk indices of a flat (C-order) index in the level's chunk grid.
    #[must_use]
    pub fn chunk_indices(&self, flat: u64) -> Vec<u64> {
        let grid = self.array.chunk_grid_shape();
        let mut rest = flat;
        let mut indices = vec![0u64; grid.len()];
        for a in (0..grid.len()).rev() {
            indices[a] = rest % grid[a].max(1);
            rest /= grid[a].max(1);
        }
        indices
    }

    /// Bytes stored for the chunk at flat index `flat`, if it is stored.
    #[must_use]
    pub fn stored_size(&self, flat: u64) -> Option<u64> {
        let key = self.array.chunk_key(&self.chunk_indices(flat));
        self.storage.size_key(&key).ok().flatten()
    }

    /// Indices of the chunks that intersect `region` (for a chunk-aligned region, exactly
    /// the chunks it covers).
    #[must_use]
    pub fn chunks_in(&self, region: &Region) -> Vec<Vec<u64>> {
        chunks_of_region(self.array.chunk_grid(), region)
    }

    /// The chunk grid region of chunk `indices` (not clipped to the array).
    #[must_use]
    pub fn chunk_region(&self, indices: &[u64]) -> Region {
        grid_region(self.array.chunk_grid(), indices)
    }
}

/// The region of chunk `indices` of `grid` (not clipped to the array).
///
/// # Panics
/// If the indices are outside the grid.
#[must_use]
pub fn grid_region(grid: &ChunkGrid, indices: &[u64]) -> Region {
    let subset = grid
        .subset(indices)
        .ok()
        .flatten()
        .expect("chunk indices come from the grid itself");
    Region::new(subset.start().to_vec(), subset.shape().to_vec())
}

/// Indices of the chunks of `grid` that intersect `region`.
#[must_use]
pub fn chunks_of_region(grid: &ChunkGrid, region: &Region) -> Vec<Vec<u64>> {
    let subset = ArraySubset::new_with_start_shape(region.start.clone(), region.shape.clone())
        .expect("start and shape have the same length");
    match grid.chunks_in_array_subset(&subset) {
        Ok(Some(chunks)) => chunks.indices().into_iter().map(|i| i.to_vec()).collect(),
        _ => Vec::new(),
    }
}

/// The bands of `chunk` that reads covering only part of it need: on each axis, each
/// distinct partial overlap of a read span (`read_spans[axis]` holds the `[start, end)` of
/// every tile column) with the chunk's voxels inside an array of `shape`, spanning the
/// chunk's whole extent on the other axes. A read that covers the chunk's voxels on every
/// axis needs the whole chunk; any other read lies inside one of these bands.
#[must_use]
pub fn halo_bands(chunk: &Region, read_spans: &[Vec<(u64, u64)>], shape: &[u64]) -> Vec<Region> {
    let mut bands = Vec::new();
    for (a, spans) in read_spans.iter().enumerate() {
        // The chunk's voxels inside the array (edge chunks extend past it).
        let (lo, hi) = (chunk.start[a], chunk.end(a).min(shape[a]));
        let mut partial: Vec<(u64, u64)> = spans
            .iter()
            .map(|&(s, e)| (s.max(lo), e.min(hi)))
            .filter(|&(s, e)| s < e && (s, e) != (lo, hi))
            .collect();
        partial.sort_unstable();
        partial.dedup();
        for (s, e) in partial {
            let mut band = chunk.clone();
            band.start[a] = s;
            band.shape[a] = e - s;
            bands.push(band);
        }
    }
    bands
}

/// Counters of a [`TileReader`].
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Chunks decoded.
    pub decoded: AtomicU64,
    /// Chunks decoded a second time or more because the cache could not keep them.
    pub redecoded: AtomicU64,
    /// Decoded bytes.
    pub decoded_bytes: AtomicU64,
}

/// Decoded elements: the decoder's own bytes viewed as `T` when their address is aligned
/// for it (always, in practice: large allocations are), else a typed copy.
enum Elements<T> {
    Bytes(Vec<u8>),
    Typed(Vec<T>),
}

impl<T: bytemuck::Pod> Elements<T> {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        if bytemuck::try_cast_slice::<u8, T>(&bytes).is_ok() {
            Self::Bytes(bytes)
        } else {
            Self::Typed(bytemuck::pod_collect_to_vec(&bytes))
        }
    }

    fn as_slice(&self) -> &[T] {
        match self {
            Self::Bytes(bytes) => bytemuck::cast_slice(bytes),
            Self::Typed(elements) => elements,
        }
    }
}

impl<T> Elements<T> {
    fn len(&self) -> usize {
        match self {
            Self::Bytes(bytes) => bytes.len() / size_of::<T>(),
            Self::Typed(elements) => elements.len(),
        }
    }
}

struct CacheSlot<T> {
    /// The whole decoded chunk, while the budget keeps it.
    data: Option<Arc<Elements<T>>>,
    /// Parts of the chunk kept for the reads that need only a part (a neighbour's halo),
    /// when the whole chunk does not fit the budget.
    bands: Vec<(Region, Arc<Elements<T>>)>,
    reads_left: u64,
    decoded_before: bool,
}

impl<T> CacheSlot<T> {
    fn cached_bytes(&self) -> u64 {
        let whole = self.data.as_ref().map_or(0, |d| d.len());
        let bands: usize = self.bands.iter().map(|(_, b)| b.len()).sum();
        ((whole + bands) * size_of::<T>()) as u64
    }
}

type SharedSlot<T> = Arc<Mutex<CacheSlot<T>>>;

/// How many reads of a pass will touch the chunk covering a region.
pub type ReadCounter = Arc<dyn Fn(&Region) -> u64 + Send + Sync>;

/// The bands of the chunk covering a region: sub-regions such that every read of the pass
/// that needs only part of the chunk (a neighbouring tile's halo) lies inside one of them.
pub type ChunkBands = Arc<dyn Fn(&Region) -> Vec<Region> + Send + Sync>;

/// Reads regions of one array, decoding each chunk once while the cache budget allows.
pub struct TileReader<T> {
    array: Arc<Array<dyn ReadableStorageTraits>>,
    path: PathBuf,
    decoder: ChunkDecoder,
    grid: ChunkGrid,
    /// Set to stop reading between chunks (the build was cancelled).
    cancel: Option<Arc<AtomicBool>>,
    fill: T,
    reads_of: ReadCounter,
    bands_of: Option<ChunkBands>,
    slots: Mutex<HashMap<Vec<u64>, SharedSlot<T>>>,
    cached_bytes: AtomicU64,
    budget_bytes: u64,
    /// Whole chunks are kept only while the cache holds less than this, so that the bands
    /// of a chunk layer (kept longest) always find room.
    whole_budget_bytes: u64,
    /// Counters.
    pub stats: ReadStats,
}

impl<T: StoreElement> TileReader<T> {
    /// A reader of `array` (whose chunks are the read units), keeping decoded chunks while
    /// future reads need them, within `budget_bytes`. `reads_of` says how many reads will
    /// touch a chunk's region over the pass.
    #[must_use]
    pub fn new(
        array: Arc<Array<dyn ReadableStorageTraits>>,
        path: PathBuf,
        budget_bytes: u64,
        reads_of: ReadCounter,
    ) -> Self {
        let decoder = ChunkDecoder::new(array.clone());
        let grid = array.subchunk_grid();
        let fill: T = bytemuck::pod_read_unaligned(array.fill_value().as_ne_bytes());
        Self {
            array,
            path,
            decoder,
            grid,
            cancel: None,
            fill,
            reads_of,
            bands_of: None,
            slots: Mutex::new(HashMap::new()),
            cached_bytes: AtomicU64::new(0),
            budget_bytes,
            whole_budget_bytes: budget_bytes,
            stats: ReadStats::default(),
        }
    }

    fn decode(&self, indices: &[u64]) -> Result<Elements<T>, StoreError> {
        if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(StoreError::Cancelled);
        }
        let shape = grid_region(&self.grid, indices).shape;
        let bytes = self
            .decoder
            .decode(indices, &shape)
            .map_err(|e| StoreError::ReadChunk {
                path: self.path.clone(),
                key: self.chunk_key(indices),
                source: boxed(e),
            })?;
        let data = Elements::from_bytes(bytes);
        self.stats.decoded.fetch_add(1, Ordering::Relaxed);
        self.stats
            .decoded_bytes
            .fetch_add((data.len() * size_of::<T>()) as u64, Ordering::Relaxed);
        Ok(data)
    }

    fn chunk_key(&self, indices: &[u64]) -> String {
        if self.array.is_sharded() {
            let shard: Vec<u64> = match (self.grid.subset(indices), self.array.chunk_grid()) {
                (Ok(Some(sub)), grid) => grid
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

    /// Stops reads between chunks with [`StoreError::Cancelled`] once `cancel` is set.
    #[must_use]
    pub fn with_cancel(mut self, cancel: Option<Arc<AtomicBool>>) -> Self {
        self.cancel = cancel;
        self
    }

    /// Keeps, when a chunk is too large for the cache budget, the bands that `bands_of`
    /// names: the parts of the chunk that reads needing only part of it (tile halos) use.
    /// Without it such reads decode the whole chunk again.
    #[must_use]
    pub fn with_bands(mut self, bands_of: ChunkBands) -> Self {
        // A neighbour's halo may be read a whole layer of tiles (along the first axis)
        // before the chunk's own tile: room for the bands of one such layer of chunks.
        let layer_chunks: u64 = self.grid.grid_shape().iter().skip(1).product();
        // The largest bands among the chunks at index 0 or 1 on each axis (edge and inner).
        let shape = self.grid.grid_shape().to_vec();
        let band_bytes = (0..1u64 << shape.len())
            .map(|corner| {
                let indices: Vec<u64> = (0..shape.len())
                    .map(|a| ((corner >> a) & 1).min(shape[a].saturating_sub(1)))
                    .collect();
                bands_of(&grid_region(&self.grid, &indices))
                    .iter()
                    .map(|band| band.num_elements() * size_of::<T>() as u64)
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        self.whole_budget_bytes = self.budget_bytes.saturating_sub(layer_chunks * band_bytes);
        self.bands_of = Some(bands_of);
        self
    }

    /// The part of chunk `indices` (covering `chunk_region`) that `wanted` (a sub-region
    /// of it) needs, from the cache or the store: the data and the region it holds, the
    /// whole chunk or a cached band containing `wanted`.
    fn chunk(
        &self,
        indices: &[u64],
        chunk_region: &Region,
        wanted: &Region,
    ) -> Result<(Arc<Elements<T>>, Region), StoreError> {
        let slot = self.slot(indices, chunk_region);
        let mut guard = slot.lock().expect("slot lock");
        let band = guard.bands.iter().find(|(band, _)| band.contains(wanted)).cloned();
        let found = if let Some(data) = &guard.data {
            (data.clone(), chunk_region.clone())
        } else if let Some((band, data)) = band {
            (data, band)
        } else {
            // Decoding under the slot lock is sequential (no nested parallelism), so a reader
            // waiting for this chunk always gets it.
            let data = Arc::new(self.decode(indices)?);
            if guard.decoded_before {
                self.stats.redecoded.fetch_add(1, Ordering::Relaxed);
            }
            guard.decoded_before = true;
            if guard.reads_left > 1 {
                self.keep(&mut guard, &data, chunk_region);
            }
            (data, chunk_region.clone())
        };
        self.release_read(guard, indices);
        Ok(found)
    }

    /// The cache slot of chunk `indices`, made on first use with the number of reads the
    /// pass will make of it.
    fn slot(&self, indices: &[u64], chunk_region: &Region) -> SharedSlot<T> {
        let mut slots = self.slots.lock().expect("cache lock");
        slots
            .entry(indices.to_vec())
            .or_insert_with(|| {
                Arc::new(Mutex::new(CacheSlot {
                    data: None,
                    bands: Vec::new(),
                    reads_left: (self.reads_of)(chunk_region),
                    decoded_before: false,
                }))
            })
            .clone()
    }

    /// Counts one read of chunk `indices` as made; after the last, its data is released.
    fn release_read(&self, mut guard: std::sync::MutexGuard<'_, CacheSlot<T>>, indices: &[u64]) {
        guard.reads_left = guard.reads_left.saturating_sub(1);
        if guard.reads_left == 0 {
            self.cached_bytes.fetch_sub(guard.cached_bytes(), Ordering::Relaxed);
            guard.data = None;
            guard.bands.clear();
            drop(guard);
            self.slots.lock().expect("cache lock").remove(indices);
        }
    }

    /// True if no chunk under `region` is stored (no shard, for a sharded array), so the
    /// region reads as the fill value only.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] if the store cannot be asked.
    pub fn nothing_stored_in(&self, region: &Region) -> Result<bool, StoreError> {
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

    /// Counts a read of `region` as made without reading it (a task that found nothing
    /// stored there), so that the cache still releases its chunks on time.
    pub fn skip(&self, region: &Region) {
        for idx in chunks_of_region(&self.grid, region) {
            let slot = self.slot(&idx, &grid_region(&self.grid, &idx));
            let guard = slot.lock().expect("slot lock");
            self.release_read(guard, &idx);
        }
    }

    /// Caches a freshly decoded chunk that later reads need: whole if the budget allows,
    /// else its bands (once per chunk; later whole-chunk reads decode it again).
    fn keep(&self, slot: &mut CacheSlot<T>, data: &Arc<Elements<T>>, chunk_region: &Region) {
        let whole = (data.len() * size_of::<T>()) as u64;
        let cached_band_bytes = slot.cached_bytes();
        if self.reserve(whole, self.whole_budget_bytes) {
            // The whole chunk serves every read: the bands are no longer needed.
            self.cached_bytes.fetch_sub(cached_band_bytes, Ordering::Relaxed);
            slot.bands.clear();
            slot.data = Some(data.clone());
            return;
        }
        let Some(bands_of) = &self.bands_of else { return };
        if !slot.bands.is_empty() {
            return;
        }
        for band in bands_of(chunk_region) {
            let Some(band) = band.intersect(chunk_region) else {
                continue;
            };
            let bytes = (band.len() * size_of::<T>()) as u64;
            if !self.reserve(bytes, self.budget_bytes) {
                break;
            }
            let mut part = vec![self.fill; band.len()];
            copy_overlap(data.as_slice(), chunk_region, &mut part, &band);
            slot.bands.push((band, Arc::new(Elements::Typed(part))));
        }
    }

    /// Adds `bytes` to the cache if it then holds at most `limit`.
    fn reserve(&self, bytes: u64, limit: u64) -> bool {
        let mut current = self.cached_bytes.load(Ordering::Relaxed);
        loop {
            if current + bytes > limit {
                return false;
            }
            match self.cached_bytes.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Reads `region` (inside the array) into a C-order buffer. Chunks are decoded in
    /// parallel when the region spans several.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] naming the first chunk that failed.
    pub fn read(&self, region: &Region) -> Result<Vec<T>, StoreError> {
        self.read_into(region, Vec::new())
    }

    /// As [`TileReader::read`], reusing `buffer`'s allocation (large tiles would otherwise
    /// be fresh, page-faulting memory for every task).
    ///
    /// # Errors
    /// As [`TileReader::read`].
    pub fn read_into(&self, region: &Region, mut buffer: Vec<T>) -> Result<Vec<T>, StoreError> {
        use rayon::prelude::*;
        // The chunks cover a region inside the array, so every element of the buffer is
        // overwritten below and the reused allocation need not be cleared first.
        if !Region::whole(self.array.shape()).contains(region) {
            buffer.clear();
        }
        buffer.truncate(region.len());
        buffer.resize(region.len(), self.fill);
        let out = buffer;
        let indices = chunks_of_region(&self.grid, region);
        // Each decoded chunk is copied in as soon as it is ready and then dropped (unless
        // the cache keeps it), so a read holds the tile plus a few chunks, not two tiles.
        let target = Mutex::new(out);
        indices.par_iter().try_for_each(|idx| {
            let chunk_region = grid_region(&self.grid, idx);
            let wanted = chunk_region.intersect(region).unwrap_or_else(|| chunk_region.clone());
            let (data, data_region) = self.chunk(idx, &chunk_region, &wanted)?;
            let mut out = target.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            copy_overlap(data.as_slice(), &data_region, out.as_mut_slice(), region);
            Ok::<(), StoreError>(())
        })?;
        Ok(target.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Bytes held by the cache now.
    #[must_use]
    pub fn cached_bytes(&self) -> u64 {
        self.cached_bytes.load(Ordering::Relaxed)
    }
}

/// What a decode-only or encode-only pass did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DecodeReport {
    /// Chunks decoded (or encoded).
    pub chunks: u64,
    /// Decoded bytes (the bytes given to the encoder, for an encode-only pass).
    pub bytes: u64,
    /// Wall time (of the encoding alone, for an encode-only pass).
    pub seconds: f64,
}

/// Reads and decodes every chunk of the input's level 0 once, in parallel on the current
/// rayon pool, and discards the data: the floor under any pyramid build of that input.
///
/// # Errors
/// [`StoreError`] if the input cannot be opened or a chunk cannot be read.
pub fn decode_only(path: &Path) -> Result<DecodeReport, StoreError> {
    use rayon::prelude::*;
    let source = open_source(path)?;
    let started = std::time::Instant::now();
    let grid = source.array.subchunk_grid();
    let shape = grid.grid_shape().to_vec();
    let total: u64 = shape.iter().product();
    let bytes = crate::dispatch_dtype!(source.dtype, T => {
        let reader = TileReader::<T>::new(source.array.clone(), source.path.clone(), 0, Arc::new(|_: &Region| 1));
        (0..total).into_par_iter().try_for_each(|i| {
            let mut rest = i;
            let mut idx = vec![0u64; shape.len()];
            for a in (0..shape.len()).rev() {
                idx[a] = rest % shape[a];
                rest /= shape[a];
            }
            reader.decode(&idx).map(drop)
        })?;
        reader.stats.decoded_bytes.load(Ordering::Relaxed)
    });
    Ok(DecodeReport {
        chunks: total,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Decoded bytes an encode-only pass holds at once.
const ENCODE_ONLY_BATCH_BYTES: u64 = 1 << 30;

/// Encodes every chunk of the array (or OME-Zarr level 0) at `path` again with its own
/// codecs, in parallel on the current rayon pool, and discards the result. Chunks are
/// decoded first, in batches of at most 1 GiB, and only the encoding is timed (together
/// with the all-fill check a writer makes before encoding). A chunk that is all fill
/// value is not encoded, as a writer would not store it.
///
/// With [`decode_only`] of a pyramid's level 0, this over its other levels gives the codec
/// floor of building them: any tool must decode the input and encode those levels.
///
/// # Errors
/// [`StoreError`] if the array cannot be opened or a chunk cannot be read or encoded.
pub fn encode_only(path: &Path) -> Result<DecodeReport, StoreError> {
    use rayon::prelude::*;
    use zarrs::array::ArrayToBytesCodecTraits;
    let source = open_source(path)?;
    let array = &source.array;
    let array_dir = path.join(source.array_path.trim_start_matches('/'));
    let codec_error = |indices: &[u64], e: Box<dyn std::error::Error + Send + Sync>| StoreError::ReadChunk {
        path: array_dir.clone(),
        key: array.chunk_key(indices).to_string(),
        source: e,
    };
    let grid_shape = array.chunk_grid_shape().to_vec();
    let all: Vec<Vec<u64>> = ArraySubset::new_with_shape(grid_shape)
        .indices()
        .into_iter()
        .map(|i| i.to_vec())
        .collect();
    let array_bytes = source.shape.iter().product::<u64>() * source.dtype.size() as u64;
    let chunk_bytes = array_bytes.div_ceil(all.len().max(1) as u64);
    let per_batch = usize::try_from((ENCODE_ONLY_BATCH_BYTES / chunk_bytes.max(1)).max(1)).unwrap_or(1);
    let options = CodecOptions::default().with_concurrent_target(1);
    let decoder = ChunkDecoder::new(array.clone());
    let (mut chunks, mut bytes, mut seconds) = (0u64, 0u64, 0.0f64);
    for batch in all.chunks(per_batch) {
        let decoded = batch
            .par_iter()
            .map(|indices| {
                let shape = array.chunk_shape(indices).map_err(|e| codec_error(indices, boxed(e)))?;
                let shape_u64: Vec<u64> = shape.iter().map(|n| n.get()).collect();
                let data = decoder
                    .decode(indices, &shape_u64)
                    .map_err(|e| codec_error(indices, boxed(e)))?;
                Ok((indices, ArrayBytes::new_flen(data), shape))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let started = std::time::Instant::now();
        let counts = decoded
            .into_par_iter()
            .map(|(indices, data, shape)| {
                if data.is_fill_value(array.fill_value()) {
                    return Ok((0, 0));
                }
                let size = data.size() as u64;
                array
                    .codecs()
                    .encode(data, &shape, array.data_type(), array.fill_value(), &options)
                    .map_err(|e| codec_error(indices, boxed(e)))?;
                Ok((1, size))
            })
            .collect::<Result<Vec<(u64, u64)>, StoreError>>()?;
        seconds += started.elapsed().as_secs_f64();
        chunks += counts.iter().map(|c| c.0).sum::<u64>();
        bytes += counts.iter().map(|c| c.1).sum::<u64>();
    }
    Ok(DecodeReport { chunks, bytes, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{ArrayFormat, ArraySpec, Codec, write_synthetic};

    /// The read spans, on both axes, of 32-voxel tiles of a 64×64 array with a 3-voxel
    /// halo, as a gaussian pass reads them.
    const SPANS: [(u64, u64); 2] = [(0, 35), (29, 64)];

    fn halo_tiles() -> Vec<Region> {
        let mut tiles = Vec::new();
        for &(y0, y1) in &SPANS {
            for &(x0, x1) in &SPANS {
                tiles.push(Region::from_bounds(&[y0, x0], &[y1, x1]));
            }
        }
        tiles
    }

    fn reader(source: &SourceImage, budget: u64, bands: bool) -> TileReader<u16> {
        let tiles = halo_tiles();
        let reads_of: ReadCounter =
            Arc::new(move |chunk: &Region| tiles.iter().filter(|t| t.intersect(chunk).is_some()).count() as u64);
        let reader = TileReader::new(source.array.clone(), source.path.clone(), budget, reads_of);
        if !bands {
            return reader;
        }
        let spans = vec![SPANS.to_vec(), SPANS.to_vec()];
        reader.with_bands(Arc::new(move |chunk: &Region| halo_bands(chunk, &spans, &[64, 64])))
    }

    /// A 64×64 uint16 array of 16×16 zstd chunks (v2) in `dir`.
    fn small_input(dir: &Path) -> (PathBuf, SourceImage) {
        let path = dir.join("in.zarr");
        let spec = ArraySpec {
            shape: vec![64, 64],
            chunks: vec![16, 16],
            dtype: crate::DType::U16,
            format: ArrayFormat::V2,
            codec: Codec::Zstd(1),
        };
        write_synthetic(&path, &spec, 3).unwrap();
        let source = open_source(&path).unwrap();
        (path, source)
    }

    #[test]
    fn a_reused_buffer_leaves_no_stale_values_in_a_read() {
        let dir = tempfile::TempDir::new().unwrap();
        let (_, source) = small_input(dir.path());
        let reader = TileReader::<u16>::new(source.array.clone(), source.path.clone(), 0, Arc::new(|_: &Region| 1));
        let region = Region::new(vec![5, 7], vec![40, 33]);
        let expected = reader.read(&region).unwrap();
        // Longer and shorter buffers full of a value the data never holds.
        for stale in [vec![u16::MAX; 4096], vec![u16::MAX; 100]] {
            assert_eq!(reader.read_into(&region, stale).unwrap(), expected);
        }
        assert!(!expected.contains(&u16::MAX));
        // Each element is the one stored at its place: compare with whole-array reads.
        let whole = reader.read(&Region::whole(&[64, 64])).unwrap();
        for (i, &v) in expected.iter().enumerate() {
            let (y, x) = (5 + i / 33, 7 + i % 33);
            assert_eq!(v, whole[y * 64 + x], "element ({y}, {x})");
        }
    }

    #[test]
    fn encode_only_encodes_every_stored_chunk_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let (path, source) = small_input(dir.path());
        let report = encode_only(&path).unwrap();
        assert_eq!((report.chunks, report.bytes), (16, 64 * 64 * 2));
        assert!(report.seconds > 0.0);
        // A missing chunk reads as fill value, which a writer does not store: not encoded.
        let key = source.array.chunk_key(&[1, 2]);
        fs::remove_file(path.join(key.as_str())).unwrap();
        let report = encode_only(&path).unwrap();
        assert_eq!((report.chunks, report.bytes), (15, 15 * 16 * 16 * 2));
        // Decoding only sees every chunk, stored or not.
        assert_eq!(decode_only(&path).unwrap().chunks, 16);
    }

    #[test]
    fn halo_bands_cover_every_partial_read() {
        let spans = vec![SPANS.to_vec(), SPANS.to_vec()];
        // Chunk [16, 32) × [32, 48): partial overlaps [29, 32) on y and [32, 35) on x.
        let chunk = Region::new(vec![16, 32], vec![16, 16]);
        assert_eq!(
            halo_bands(&chunk, &spans, &[64, 64]),
            vec![
                Region::new(vec![29, 32], vec![3, 16]),
                Region::new(vec![16, 32], vec![16, 3]),
            ]
        );
        // A corner chunk read whole by its only tile has no band; an edge chunk past the
        // array's end is read whole by a span ending at the array's end.
        assert!(halo_bands(&Region::new(vec![0, 0], vec![16, 16]), &spans, &[64, 64]).is_empty());
        assert!(halo_bands(&Region::new(vec![48, 48], vec![16, 16]), &spans, &[60, 60]).is_empty());
    }

    #[test]
    fn halo_reads_are_served_from_bands_when_whole_chunks_do_not_fit() {
        let dir = tempfile::TempDir::new().unwrap();
        let (_, source) = small_input(dir.path());
        let uncached = reader(&source, 0, false);
        // A whole chunk is 512 bytes; the bands of a chunk at most 2 × 96. A budget of
        // 1000 bytes leaves no room for whole chunks once a layer of bands is reserved.
        let banded = reader(&source, 1000, true);
        let plain = reader(&source, 1000, false);
        for tile in halo_tiles() {
            let expected = uncached.read(&tile).unwrap();
            assert_eq!(banded.read(&tile).unwrap(), expected, "{tile:?} through bands");
            assert_eq!(plain.read(&tile).unwrap(), expected, "{tile:?} through whole chunks");
        }
        let decoded = |r: &TileReader<u16>| r.stats.decoded.load(Ordering::Relaxed);
        // 16 chunks; the tiles touch 36 chunk-times (9 each).
        assert_eq!(decoded(&uncached), 36);
        // With bands a chunk is decoded at most twice: once for a neighbour's halo read
        // that comes first, once for its own tile.
        assert!(decoded(&banded) <= 32, "banded decodes: {}", decoded(&banded));
        assert!(
            decoded(&banded) < decoded(&plain),
            "bands {} vs whole chunks only {}",
            decoded(&banded),
            decoded(&plain)
        );
        // Everything is released once the last read of every chunk has happened.
        assert_eq!(banded.cached_bytes(), 0);
        assert_eq!(plain.cached_bytes(), 0);
    }
}
