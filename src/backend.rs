//! The [`Downsampler`] interface every compute backend implements, and the backend choice
//! (SPEC §5).
//!
//! A backend computes one or more pyramid steps on a tile: given a source tile of level `k`
//! that covers what the wanted outputs need (windows plus the gaussian halo, see
//! [`required_source`]), it returns level `k + 1` on the wanted region, and optionally
//! goes on to `k + 2`, … without handing the intermediate levels back first
//! ([`Downsampler::downsample_chain`]).

#[cfg(feature = "gpu")]
pub mod calibrate;
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::method::{AxisStencil, Method, source_range};
use crate::tile::{Region, Tile, TileElement, TileRef};

/// What `info --gpu` reports about an adapter.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterSummary {
    /// Adapter name.
    pub name: String,
    /// Graphics API.
    pub backend: String,
    /// Discrete, integrated, virtual, software (`Cpu`) or other.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// True for software rasterisers such as lavapipe.
    pub software: bool,
    /// Would `--backend auto` use it?
    pub used_by_auto: bool,
    /// Largest storage buffer binding, bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Workgroups per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Bytes of the largest device-local memory heap, where the driver tells (Vulkan).
    pub device_memory: Option<u64>,
    /// Bytes of device memory the buffers of the tiles on the device may fill: half of
    /// `device_memory`, or what `OME_PYRAMID_GPU_MEMORY_MIB` sets (at most all of it);
    /// `None` where neither is known.
    pub buffer_memory: Option<u64>,
    /// True when `OME_PYRAMID_GPU_MEMORY_MIB` set `buffer_memory`.
    pub buffer_memory_from_env: bool,
}

/// Every GPU adapter wgpu finds, best first; none in a build without the `gpu` feature.
#[must_use]
pub fn list_adapters() -> Vec<AdapterSummary> {
    #[cfg(feature = "gpu")]
    return gpu::list_adapters();
    #[cfg(not(feature = "gpu"))]
    Vec::new()
}

/// True if this build can run the GPU backend (the `gpu` feature).
pub const GPU_SUPPORT: bool = cfg!(feature = "gpu");

/// One pyramid step: how level `k` (of `src_shape`) becomes level `k + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The method.
    pub method: Method,
    /// Per-axis integer factors.
    pub factors: Vec<u32>,
    /// Full shape of the level being reduced (edges and reflection depend on it).
    pub src_shape: Vec<u64>,
}

impl Step {
    /// The per-axis stencils of this step from a source tile over `src` to the outputs `dst`.
    ///
    /// # Panics
    /// If `src` does not cover [`required_source`]`(self, dst)` (an engine bug).
    #[must_use]
    pub fn stencils(&self, src: &Region, dst: &Region) -> Vec<AxisStencil> {
        (0..dst.ndim())
            .map(|a| {
                AxisStencil::new(
                    self.method,
                    self.factors[a],
                    self.src_shape[a],
                    (src.start[a], src.end(a)),
                    (dst.start[a], dst.end(a)),
                )
            })
            .collect()
    }

    /// Shape of the level this step produces: `ceil(n / f)` per axis.
    #[must_use]
    pub fn dst_shape(&self) -> Vec<u64> {
        self.src_shape
            .iter()
            .zip(&self.factors)
            .map(|(&n, &f)| n.div_ceil(u64::from(f)))
            .collect()
    }
}

/// The source region a step needs to produce `dst` (windows plus halo, clipped to the level).
#[must_use]
pub fn required_source(step: &Step, dst: &Region) -> Region {
    let (start, end): (Vec<u64>, Vec<u64>) = (0..dst.ndim())
        .map(|a| {
            source_range(
                step.method,
                step.factors[a],
                step.src_shape[a],
                dst.start[a],
                dst.end(a),
            )
        })
        .unzip();
    Region::from_bounds(&start, &end)
}

/// Which kind of backend computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Multi-threaded CPU kernels.
    Cpu,
    /// WGSL compute shaders through wgpu.
    Gpu,
}

impl BackendKind {
    /// `cpu` or `gpu`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for with `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// A hardware GPU adapter where one is there and measured faster than the CPU on the
    /// build's method and dtype (see `backend::calibrate`), else the CPU; the reason is
    /// logged and recorded in the metadata's `backend` entry.
    #[default]
    Auto,
    /// A GPU adapter, software ones (lavapipe) included; an error if none.
    Gpu,
    /// The CPU kernels.
    Cpu,
}

/// Error for an unknown backend name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown backend `{0}` (expected auto, gpu or cpu)")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendChoice {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "gpu" => Ok(BackendChoice::Gpu),
            "cpu" => Ok(BackendChoice::Cpu),
            _ => Err(UnknownBackend(s.to_string())),
        }
    }
}

/// A failure inside a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No GPU adapter could be found or opened.
    #[error("no GPU adapter available: {0}")]
    NoAdapter(String),
    /// The GPU device was lost or a GPU operation failed.
    #[error("GPU failure: {0}")]
    Gpu(String),
    /// The backend cannot compute this data type.
    #[error("the {backend} backend cannot compute {dtype} data")]
    UnsupportedDType {
        /// Backend name.
        backend: &'static str,
        /// The data type.
        dtype: DType,
    },
}

/// The levels a backend computed for a chain, one per step: host tiles, or (GPU) the
/// mapped memory the device's results were read back into, released when dropped.
#[derive(Debug)]
pub enum ComputedLevels {
    /// Host tiles.
    Tiles(Vec<Tile>),
    /// Levels in a GPU's mapped readback memory, and the region each holds.
    #[cfg(feature = "gpu")]
    Mapped {
        /// Per level, its region.
        regions: Vec<Region>,
        /// The levels' elements.
        levels: gpu::MappedLevels,
    },
}

impl ComputedLevels {
    /// How many levels.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            ComputedLevels::Tiles(tiles) => tiles.len(),
            #[cfg(feature = "gpu")]
            ComputedLevels::Mapped { regions, .. } => regions.len(),
        }
    }

    /// True if there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Level `i`'s elements and region.
    ///
    /// # Panics
    /// If `T` is not the levels' data type.
    #[must_use]
    pub fn level<T: TileElement>(&self, i: usize) -> (&[T], &Region) {
        match self {
            ComputedLevels::Tiles(tiles) => (
                T::view(&tiles[i].data).expect("levels are read as their own dtype"),
                &tiles[i].region,
            ),
            #[cfg(feature = "gpu")]
            ComputedLevels::Mapped { regions, levels } => (levels.level::<T>(i), &regions[i]),
        }
    }
}

/// A compute backend: turns a tile of level `k` into tiles of the levels above it.
pub trait Downsampler: Send + Sync {
    /// Which kind of backend this is.
    fn kind(&self) -> BackendKind;

    /// A one-line description for logs and metadata, e.g. `cpu (2 threads)`.
    fn description(&self) -> String;

    /// True if this backend computes `method` on `dtype` itself, within SPEC §2's agreement.
    fn supports(&self, method: Method, dtype: DType) -> bool;

    /// Computes one step on `dst`, reading from `src`, which must contain
    /// [`required_source`]`(step, dst)`.
    ///
    /// # Errors
    /// [`BackendError`] if the computation fails (GPU lost, unsupported type).
    fn downsample(&self, step: &Step, src: &Tile, dst: &Region) -> Result<Tile, BackendError>;

    /// As [`Downsampler::downsample`], from borrowed source data (a decoded chunk). The
    /// CPU backend reads it in place; the default copies it into a tile first.
    ///
    /// # Errors
    /// As [`Downsampler::downsample`].
    fn downsample_ref(&self, step: &Step, src: TileRef<'_>, dst: &Region) -> Result<Tile, BackendError> {
        self.downsample(step, &src.to_tile(), dst)
    }

    /// Host memory this backend holds for one task beyond the tiles the engine counts
    /// itself (the source tile and the levels computed from it), for a task computing
    /// `output_bytes` of levels with `method` from `source_bytes` of source: what the
    /// `--memory` budget must add per concurrent task. None on the CPU.
    fn task_memory_bytes(&self, method: Method, source_bytes: u64, output_bytes: u64) -> u64 {
        let _ = (method, source_bytes, output_bytes);
        0
    }

    /// True if this backend computes a tile of `source_elements` with `method` on `dtype`,
    /// and the `output_elements` of levels made from it, in one piece. The default, and the
    /// CPU, always do; a GPU does if the tile fits a ring slot's share of the device's
    /// memory and the adapter's limits. The engine plans passes no deeper than that where
    /// it can: a tile that does not fit is split, each piece and step uploaded and read
    /// back on its own.
    fn holds_tile(&self, method: Method, dtype: DType, source_elements: u64, output_elements: u64) -> bool {
        let _ = (method, dtype, source_elements, output_elements);
        true
    }

    /// Threads of its own this backend computes tiles on, for `method` on `dtype`: each
    /// takes a read tile, computes it, and hands it on to be written, while the engine's
    /// workers go on reading and writing (see the engine's stages). 0, the default, when
    /// the workers compute: the CPU's kernels are work for the same cores as decoding and
    /// encoding, and a thread of their own would only take turns with them.
    fn compute_threads(&self, method: Method, dtype: DType) -> usize {
        let _ = (method, dtype);
        0
    }

    /// Computes several steps in a row: level `k + i + 1` on `chain[i].1` from level
    /// `k + i`. `src` must contain what `chain[0]` needs and each `chain[i].1` must contain
    /// what `chain[i + 1]` needs. Returns one tile per step.
    ///
    /// The default computes the steps one after another; a GPU backend keeps the
    /// intermediate levels on the device.
    ///
    /// # Errors
    /// As [`Downsampler::downsample`].
    fn downsample_chain(&self, src: &Tile, chain: &[(Step, Region)]) -> Result<Vec<Tile>, BackendError> {
        let mut outputs: Vec<Tile> = Vec::with_capacity(chain.len());
        for (step, dst) in chain {
            let tile = self.downsample(step, outputs.last().unwrap_or(src), dst)?;
            outputs.push(tile);
        }
        Ok(outputs)
    }

    /// Memory this backend computes from, taken for the source tile of `chain` (holding
    /// `region` of `dtype`) before it is read, so the tile reader writes the tile there
    /// rather than into a host tile the backend would copy: for the GPU, a mapped buffer
    /// the device copies from. `None`, the default, where the backend reads host tiles, or
    /// where this chain would not run in one piece.
    #[cfg(feature = "gpu")]
    fn stage_source(&self, dtype: DType, region: &Region, chain: &[(Step, Region)]) -> Option<gpu::StagedTile> {
        let _ = (dtype, region, chain);
        None
    }

    /// As [`Downsampler::downsample_chain`], for each of `tiles`: a tile
    /// [`Downsampler::stage_source`] gave and the reader filled, and the regions its chain
    /// computes. Returns the levels of each tile, in order; they may stay in the backend's
    /// memory (a GPU's mapped readback) until they are dropped. A GPU computes the tiles in
    /// one submission.
    ///
    /// # Errors
    /// As [`Downsampler::downsample`], for the tiles as a whole; [`BackendError::Gpu`] from
    /// a backend that stages nothing.
    #[cfg(feature = "gpu")]
    fn downsample_staged(
        &self,
        tiles: Vec<(gpu::StagedTile, Vec<Region>)>,
    ) -> Result<Vec<ComputedLevels>, BackendError> {
        let _ = tiles;
        Err(BackendError::Gpu(format!(
            "the {} backend stages no tiles",
            self.kind()
        )))
    }

    /// Source bytes of staged tiles this backend computes together at most
    /// (`downsample_staged`, with the `gpu` feature): a tile smaller than this waits in no
    /// queue for others, but the tiles already waiting when it is computed go with it. 0,
    /// the default: one at a time, and what every backend that stages no tiles keeps.
    fn staged_batch_bytes(&self) -> u64 {
        0
    }
}
