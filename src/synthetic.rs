//! Writing plain Zarr arrays: synthetic volumes for `demo` and `bench` (structure plus
//! noise, never zeros), and given data for tests. Zarr v2, v3, and sharded v3.

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{Value, json};
use zarrs::array::{Array, ArrayMetadataOptions, ArrayMetadataV2, ArrayMetadataV3};
use zarrs::filesystem::FilesystemStore;
use zarrs::storage::ReadableWritableStorageTraits;

use crate::dtype::{DType, Sample};
use crate::store::{StoreElement, StoreError};
use crate::tile::{Region, TileData, TileElement};

/// Layout of an array to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayFormat {
    /// Zarr v2 (`.zarray`, `/` separator).
    V2,
    /// Zarr v3 (`zarr.json`), regular chunks.
    V3,
    /// Zarr v3 with the sharding codec: shards of `shard_shape` holding inner chunks.
    V3Sharded {
        /// Shape of a shard (a multiple of the chunk shape).
        shard_shape: Vec<u64>,
    },
}

/// The codec of an array to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed.
    None,
    /// Zstandard at a level.
    Zstd(i32),
    /// Blosc/LZ4 with byte shuffle at a level.
    BloscLz4(i32),
    /// Gzip at a level.
    Gzip(i32),
}

/// What to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArraySpec {
    /// Array shape.
    pub shape: Vec<u64>,
    /// Chunk shape (inner chunk shape when sharded).
    pub chunks: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Layout.
    pub format: ArrayFormat,
    /// Codec.
    pub codec: Codec,
}

fn v2_compressor(codec: Codec) -> Value {
    match codec {
        Codec::None => Value::Null,
        Codec::Zstd(level) => json!({"id": "zstd", "level": level}),
        Codec::BloscLz4(level) => {
            json!({"id": "blosc", "cname": "lz4", "clevel": level, "shuffle": 1, "blocksize": 0})
        }
        Codec::Gzip(level) => json!({"id": "gzip", "level": level}),
    }
}

fn v3_codecs(codec: Codec, dtype: DType) -> Vec<Value> {
    let mut codecs = vec![json!({"name": "bytes", "configuration": {"endian": "little"}})];
    match codec {
        Codec::None => {}
        Codec::Zstd(level) => {
            codecs.push(json!({"name": "zstd", "configuration": {"level": level, "checksum": false}}))
        }
        Codec::BloscLz4(level) => codecs.push(json!({"name": "blosc", "configuration": {
            "cname": "lz4", "clevel": level, "shuffle": "shuffle", "typesize": dtype.size(), "blocksize": 0}})),
        Codec::Gzip(level) => codecs.push(json!({"name": "gzip", "configuration": {"level": level}})),
    }
    codecs
}

/// Refuses, before anything is made, a spec whose array or chunk (shard) bytes are not
/// addressable: every chunk is written from one buffer.
fn check_sizes(path: &Path, spec: &ArraySpec) -> Result<(), StoreError> {
    let unit = match &spec.format {
        ArrayFormat::V3Sharded { shard_shape } => ("shard shape", shard_shape),
        _ => ("chunk shape", &spec.chunks),
    };
    for (what, dims) in [("shape", &spec.shape), unit] {
        let bytes = spec.dtype.bytes_of(dims);
        if bytes.is_none_or(|b| usize::try_from(b).is_err()) {
            return Err(StoreError::TooLarge {
                path: path.to_path_buf(),
                what: format!("its {what} {dims:?} of {}", spec.dtype),
            });
        }
    }
    Ok(())
}

/// Creates an empty array at `path` (a new directory) and returns it.
///
/// # Errors
/// [`StoreError`] if the directory or metadata cannot be written.
pub fn create_array(path: &Path, spec: &ArraySpec) -> Result<Array<dyn ReadableWritableStorageTraits>, StoreError> {
    check_sizes(path, spec)?;
    std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
        action: "cannot create",
        path: path.to_path_buf(),
        source,
    })?;
    let store: Arc<dyn ReadableWritableStorageTraits> =
        Arc::new(FilesystemStore::new(path).map_err(|e| StoreError::Io {
            action: "cannot open",
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?);
    let invalid = |e: &dyn std::fmt::Display| StoreError::InvalidMetadata {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let metadata = match &spec.format {
        ArrayFormat::V2 => {
            let meta: ArrayMetadataV2 = serde_json::from_value(json!({
                "zarr_format": 2, "shape": spec.shape, "chunks": spec.chunks, "dtype": spec.dtype.zarr_v2_name(),
                "compressor": v2_compressor(spec.codec), "fill_value": 0, "order": "C", "filters": null,
                "dimension_separator": "/",
            }))
            .map_err(|e| invalid(&e))?;
            meta.into()
        }
        ArrayFormat::V3 | ArrayFormat::V3Sharded { .. } => {
            let (grid_shape, codecs) = match &spec.format {
                ArrayFormat::V3Sharded { shard_shape } => (
                    shard_shape.clone(),
                    vec![json!({"name": "sharding_indexed", "configuration": {
                        "chunk_shape": spec.chunks,
                        "codecs": v3_codecs(spec.codec, spec.dtype),
                        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                        "index_location": "end",
                    }})],
                ),
                _ => (spec.chunks.clone(), v3_codecs(spec.codec, spec.dtype)),
            };
            let meta: ArrayMetadataV3 = serde_json::from_value(json!({
                "zarr_format": 3, "node_type": "array", "shape": spec.shape, "data_type": spec.dtype.name(),
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid_shape}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": 0, "codecs": codecs,
            }))
            .map_err(|e| invalid(&e))?;
            meta.into()
        }
    };
    let array = Array::new_with_metadata(store, "/", metadata).map_err(|e| invalid(&e))?;
    let options = ArrayMetadataOptions::default().with_include_zarrs_metadata(false);
    array.store_metadata_opt(&options).map_err(|e| invalid(&e))?;
    Ok(array)
}

/// Writes an array whose elements come from `value(flat C-order index)`, in parallel over
/// chunks (or shards).
fn write_with<T: StoreElement>(
    path: &Path,
    spec: &ArraySpec,
    value: &(dyn Fn(&[u64]) -> T + Sync),
) -> Result<(), StoreError> {
    let array = create_array(path, spec)?;
    let grid_shape = array.chunk_grid_shape().to_vec();
    let total: u64 = grid_shape.iter().product();
    let ndim = spec.shape.len();
    (0..total).into_par_iter().try_for_each(|i| {
        let mut idx = vec![0u64; ndim];
        let mut rest = i;
        for a in (0..ndim).rev() {
            idx[a] = rest % grid_shape[a];
            rest /= grid_shape[a];
        }
        let subset = array.chunk_subset(&idx).expect("chunk indices from the grid");
        let region = Region::new(subset.start().to_vec(), subset.shape().to_vec());
        let mut data = Vec::with_capacity(region.len());
        let mut position = region.start.clone();
        for _ in 0..region.len() {
            let inside = position.iter().zip(&spec.shape).all(|(p, n)| p < n);
            data.push(if inside { value(&position) } else { T::default() });
            for a in (0..ndim).rev() {
                position[a] += 1;
                if position[a] < region.end(a) {
                    break;
                }
                position[a] = region.start[a];
            }
        }
        array
            .store_chunk(&idx, data.as_slice())
            .map_err(|e| StoreError::WriteChunk {
                path: path.to_path_buf(),
                key: array.chunk_key(&idx).to_string(),
                source: Box::new(e),
            })
    })
}

/// Writes `data` (C order, `spec.shape`) as a new array at `path`.
///
/// # Errors
/// [`StoreError`] on I/O failure.
///
/// # Panics
/// If the data type or length does not match `spec`.
pub fn write_array(path: &Path, spec: &ArraySpec, data: &TileData) -> Result<(), StoreError> {
    assert_eq!(data.dtype(), spec.dtype, "data type matches the spec");
    let whole = Region::whole(&spec.shape);
    assert_eq!(data.len(), whole.len(), "data length matches the shape");
    crate::dispatch_dtype!(spec.dtype, T => {
        let values = T::view(data).expect("dtype checked");
        let strides = whole.strides();
        write_with::<T>(path, spec, &|p: &[u64]| {
            let flat: usize = p.iter().zip(&strides).map(|(&i, &s)| usize::try_from(i).unwrap_or(0) * s).sum();
            values[flat]
        })
    })
}

/// Reads a whole array back (for tests and checks).
///
/// # Errors
/// [`StoreError`] if it cannot be opened or read.
pub fn read_array(path: &Path, array_path: &str) -> Result<(Vec<u64>, TileData), StoreError> {
    let store: crate::store::ReadStorage = Arc::new(FilesystemStore::new(path).map_err(|e| StoreError::Io {
        action: "cannot open",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?);
    let array = Array::open(store, array_path).map_err(|e| StoreError::OpenArray {
        path: path.join(array_path.trim_start_matches('/')),
        source: Box::new(e),
    })?;
    let shape = array.shape().to_vec();
    let type_name = zarrs::plugin::ExtensionName::name_v3(array.data_type())
        .map(|n| n.to_string())
        .unwrap_or_default();
    let dtype = DType::from_name(&type_name).ok_or_else(|| StoreError::UnsupportedDType {
        path: path.to_path_buf(),
        dtype: type_name,
    })?;
    let subset = array.subset_all();
    let data = crate::dispatch_dtype!(dtype, T => {
        let values: Vec<T> = array.retrieve_array_subset(&subset).map_err(|e| StoreError::ReadChunk {
            path: path.to_path_buf(),
            key: "(whole array)".into(),
            source: Box::new(e),
        })?;
        T::wrap(values)
    });
    Ok((shape, data))
}

/// A tile of `shape` holding uniform random values in `[0, 200)` of `dtype` (seeded): what
/// kernel benchmarks and the `auto` backend calibration compute on.
#[must_use]
pub fn random_tile(dtype: DType, shape: &[u64], seed: u64) -> crate::tile::Tile {
    let len = usize::try_from(shape.iter().product::<u64>()).unwrap_or(0);
    let mut rng = SplitMix64::new(seed);
    let data = crate::dispatch_dtype!(dtype, T => {
        T::wrap((0..len).map(|_| T::from_f64(rng.next_f64() * 200.0)).collect())
    });
    crate::tile::Tile::new(Region::whole(shape), data)
}

/// SplitMix64: a small, good-enough generator for reproducible synthetic data.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        hash64(self.0)
    }
    /// A uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let v = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        v
    }
}

/// The SplitMix64 finaliser: a stateless hash of 64 bits.
#[must_use]
pub fn hash64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A separable Gaussian blob: `Σ_b Π_axis profile_b,axis[i_axis]` is cheap per voxel.
struct Blobs {
    /// `profiles[blob][axis]`.
    profiles: Vec<Vec<Profile>>,
    weights: Vec<f32>,
}

/// One blob's profile along one axis: a table for axes short enough to tabulate, else
/// the formula itself (a volume may be far longer than memory along one axis).
enum Profile {
    Table(Vec<f32>),
    Formula { centre: f64, width: f64 },
}

impl Profile {
    /// Axes up to this length are tabulated.
    const MAX_TABLE: u64 = 1 << 20;

    fn value(centre: f64, width: f64, i: u64) -> f32 {
        #[allow(clippy::cast_precision_loss)]
        let d = (i as f64 - centre) / width;
        #[allow(clippy::cast_possible_truncation)]
        let v = (-0.5 * d * d).exp() as f32;
        v
    }

    fn new(n: u64, centre: f64, width: f64) -> Self {
        if n <= Self::MAX_TABLE {
            Profile::Table((0..n).map(|i| Self::value(centre, width, i)).collect())
        } else {
            Profile::Formula { centre, width }
        }
    }

    fn at(&self, i: u64) -> f32 {
        match self {
            Profile::Table(table) => table[usize::try_from(i).unwrap_or(0)],
            Profile::Formula { centre, width } => Self::value(*centre, *width, i),
        }
    }
}

impl Blobs {
    fn new(shape: &[u64], count: usize, rng: &mut SplitMix64) -> Self {
        let mut profiles = Vec::with_capacity(count);
        let mut weights = Vec::with_capacity(count);
        for _ in 0..count {
            let per_axis = shape
                .iter()
                .map(|&n| {
                    #[allow(clippy::cast_precision_loss)]
                    let n_f = n as f64;
                    let centre = rng.next_f64() * n_f;
                    let width = (0.05 + 0.2 * rng.next_f64()) * n_f.max(4.0);
                    Profile::new(n, centre, width)
                })
                .collect();
            profiles.push(per_axis);
            #[allow(clippy::cast_possible_truncation)]
            weights.push((0.3 + 0.7 * rng.next_f64()) as f32);
        }
        Self { profiles, weights }
    }

    fn at(&self, position: &[u64]) -> f32 {
        let mut total = 0.0;
        for (blob, w) in self.profiles.iter().zip(&self.weights) {
            let mut v = *w;
            for (axis, &i) in blob.iter().zip(position) {
                v *= axis.at(i);
            }
            total += v;
        }
        total
    }
}

/// Writes a synthetic volume that looks like camera data: smooth bright blobs over a dim
/// background and fine stripes, as photon counts (about 100 to 3100) with shot noise
/// (standard deviation √counts), scaled to the dtype. Reproducible from `seed`.
///
/// # Errors
/// [`StoreError`] on I/O failure.
pub fn write_synthetic(path: &Path, spec: &ArraySpec, seed: u64) -> Result<(), StoreError> {
    check_sizes(path, spec)?;
    let mut rng = SplitMix64::new(seed);
    let blobs = Blobs::new(&spec.shape, 12, &mut rng);
    let noise_seed = rng.next_u64();
    let last = spec.shape.len() - 1;
    let counts = move |p: &[u64]| -> f64 {
        let structure = f64::from(blobs.at(p)).min(1.5) / 1.5;
        #[allow(clippy::cast_precision_loss)]
        let stripes = 0.05 * ((p[last] as f64) * 0.37).sin() * ((p[last.saturating_sub(1)] as f64) * 0.11).cos();
        let mean = 100.0 + 3000.0 * (structure + stripes).max(0.0);
        // Shot noise: a sum of four uniforms is close to normal (σ = 1/√3 before scaling).
        let mut key = p
            .iter()
            .fold(noise_seed, |h, &i| hash64(h ^ i.wrapping_mul(0x9E37_79B9)));
        let mut normal = -2.0;
        for _ in 0..4 {
            key = hash64(key);
            #[allow(clippy::cast_precision_loss)]
            let uniform = (key >> 11) as f64 / (1u64 << 53) as f64;
            normal += uniform;
        }
        (mean + mean.sqrt() * normal * 3f64.sqrt()).max(0.0)
    };
    crate::dispatch_dtype!(spec.dtype, T => {
        let (scale, offset) = counts_to_dtype(T::DTYPE);
        write_with::<T>(path, spec, &|p: &[u64]| T::from_f64(counts(p) * scale + offset))
    })
}

/// How photon counts map onto each type: `value = counts · scale + offset`.
fn counts_to_dtype(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::U8 => (1.0 / 16.0, 0.0),
        DType::I8 => (1.0 / 16.0, -100.0),
        DType::U16 | DType::U32 | DType::U64 => (1.0, 0.0),
        DType::I16 | DType::I32 | DType::I64 => (1.0, -1000.0),
        DType::F32 | DType::F64 => (0.1, 0.0),
    }
}

/// A 64×64 uint16 Zarr v2 array of 16×16 zstd chunks at `dir/in.zarr`, for unit tests.
#[cfg(test)]
pub(crate) fn small_test_array(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("in.zarr");
    let spec = ArraySpec {
        shape: vec![64, 64],
        chunks: vec![16, 16],
        dtype: DType::U16,
        format: ArrayFormat::V2,
        codec: Codec::Zstd(1),
    };
    write_synthetic(&path, &spec, 3).expect("a small test array");
    path
}

/// A named pipe at `path`, for unit tests that a FIFO is refused instead of read.
#[cfg(all(test, unix))]
pub(crate) fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}
