//! How `--backend auto` chooses between a hardware GPU and the CPU: by measurement, not by
//! the GPU's mere presence.
//!
//! 1. The CPU computes the build's first step (its method, dtype and factors) on a synthetic
//!    tile of up to [`CALIBRATION_BYTES`] shaped after level 0, once to warm up and then
//!    [`RUNS`] times on every thread of the build's pool ([`CpuRate::measure`]). From the
//!    best run it estimates how long its kernels would take over every level the build
//!    computes from. Below [`GPU_WORTH_SECONDS`] no GPU is even looked for: it could save at
//!    most that time, and opening a device, compiling its kernels and timing them costs
//!    about as much.
//! 2. Otherwise the GPU computes the same tile (warmed up on a small corner of it, which
//!    compiles the kernels), timed end to end (upload, dispatches, readback), up to
//!    [`RUNS`] times; its runs stop once one takes four times the CPU's best, since it has
//!    lost ([`CpuRate::against`]). The faster by GB/s of input is used, and the two rates
//!    are the reason recorded in the metadata's `backend` entry.
//!
//! Why per-tile kernel throughput decides: a build's codec work (decode, encode) runs on the
//! CPU either way, so the GPU helps exactly when it computes a tile faster than the CPU's
//! kernels do; where it does not (a slow or busy GPU, a cheap method such as nearest on a
//! many-core CPU), the CPU keeps the whole build.

use std::time::{Duration, Instant};

use crate::backend::{BackendError, Downsampler, Step};
use crate::dtype::DType;
use crate::method::Method;
use crate::tile::{Region, Tile};

/// Largest calibration tile, bytes.
pub const CALIBRATION_BYTES: u64 = 16 << 20;

/// The calibration tile holds at most this fraction of level 0 (its four CPU runs cost an
/// eighth of the first step's kernel work at most).
const SMALL_INPUT_SHARE: u64 = 32;

/// Timed runs per backend (after one warm-up run); the best counts.
pub const RUNS: usize = 3;

/// A build whose levels the CPU's kernels compute in less than this (estimated from the
/// calibration tile) stays on the CPU without opening the GPU. Opening Mesa lavapipe and
/// timing it added 0.05 to 1.2 s to a build on the 2-core machine of BENCHMARKS.md (0.47 s
/// for gaussian on the peer input once the GPU warmed up on a small corner); a GPU could
/// save at most the CPU's kernel time. No hardware GPU has been measured yet. The
/// environment variable `OME_PYRAMID_AUTO_MIN_SECONDS` replaces it.
pub const GPU_WORTH_SECONDS: f64 = 0.5;

/// The CPU's rate on the calibration tile, and the tile, ready to time a GPU against.
pub struct CpuRate {
    step: Step,
    src: Tile,
    dst: Region,
    /// Bytes of the tile.
    bytes: u64,
    /// The best run.
    best: Duration,
    /// CPU threads.
    threads: usize,
}

impl CpuRate {
    /// Times `method` with `factors` on the CPU on a synthetic tile of `dtype` shaped after
    /// `level_shape` (the source level), capped at [`CALIBRATION_BYTES`].
    ///
    /// # Errors
    /// [`BackendError`] if the CPU fails on the tile.
    pub fn measure(
        cpu: &dyn Downsampler,
        method: Method,
        dtype: DType,
        factors: &[u32],
        level_shape: &[u64],
    ) -> Result<Self, BackendError> {
        // A small input gets a small tile: timing costs at most a few percent of its build.
        let level_bytes = dtype.bytes_of(level_shape).unwrap_or(u64::MAX);
        let shape = tile_shape(
            level_shape,
            dtype.size() as u64,
            CALIBRATION_BYTES.min(level_bytes / SMALL_INPUT_SHARE),
        );
        let src = crate::synthetic::random_tile(dtype, &shape, 3);
        let step = Step {
            method,
            factors: factors.to_vec(),
            src_shape: shape.clone(),
        };
        let dst = Region::whole(&step.dst_shape());
        let bytes = shape.iter().product::<u64>() * dtype.size() as u64;
        let mut rate = Self {
            src,
            step,
            dst,
            bytes,
            best: Duration::MAX,
            threads: rayon::current_num_threads(),
        };
        cpu.downsample(&rate.step, &rate.src, &rate.dst)?;
        rate.best = rate.best_time(cpu, Duration::MAX)?;
        Ok(rate)
    }

    /// GB/s of input.
    #[must_use]
    pub fn gb_per_s(&self) -> f64 {
        gb_per_s(self.bytes, self.best)
    }

    /// Seconds the CPU's kernels would take over `bytes` of source levels at this rate.
    #[must_use]
    pub fn seconds_for(&self, bytes: u64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let seconds = bytes as f64 / 1e9 / self.gb_per_s();
        seconds
    }

    /// The estimate behind [`too_short_record`], for the log: `seconds` of kernel time at
    /// this rate, and how it was measured.
    #[must_use]
    pub fn estimate(&self, seconds: f64) -> String {
        format!(
            "about {seconds:.2} s at {:.2} GB/s with {} threads on a {:?} tile",
            self.gb_per_s(),
            self.threads,
            self.src.region.shape
        )
    }
}

/// Why a build whose CPU kernels take less than `threshold` seconds stays on the CPU
/// unmeasured against a GPU, for the metadata: without the measurement, so that two runs of
/// the same build, or an interrupted one and its resumption, write the same metadata.
#[must_use]
pub fn too_short_record(threshold: f64) -> String {
    format!(
        "auto: the CPU, without timing the GPU: its kernels compute this build's levels in under {threshold:.2} s, less than looking for, opening and timing a GPU is worth"
    )
}

impl CpuRate {
    /// Times `gpu` on the same tile: warmed up on a small corner (which compiles its
    /// kernels), then up to [`RUNS`] runs, stopping once one takes four times the CPU's best.
    ///
    /// # Errors
    /// [`BackendError`] if the GPU fails on the tile.
    pub fn against(&self, gpu: &dyn Downsampler) -> Result<Calibration, BackendError> {
        let corner: Vec<u64> = self.src.region.shape.iter().map(|&n| n.min(16)).collect();
        let warm_up = Step {
            src_shape: corner.clone(),
            ..self.step.clone()
        };
        let src = crate::synthetic::random_tile(self.src.data.dtype(), &corner, 5);
        gpu.downsample(&warm_up, &src, &Region::whole(&warm_up.dst_shape()))?;
        let gpu_best = self.best_time(gpu, self.best.saturating_mul(4))?;
        Ok(Calibration {
            method: self.step.method,
            dtype: self.src.data.dtype(),
            tile: self.src.region.shape.clone(),
            cpu_gb_per_s: self.gb_per_s(),
            cpu_threads: self.threads,
            gpu_gb_per_s: gb_per_s(self.bytes, gpu_best),
        })
    }

    /// The best of up to [`RUNS`] timed runs of `backend` on the tile; a run slower than
    /// `enough` ends the measurement (a backend that far behind loses whatever its other
    /// runs would show).
    fn best_time(&self, backend: &dyn Downsampler, enough: Duration) -> Result<Duration, BackendError> {
        let mut best = Duration::MAX;
        for _ in 0..RUNS {
            let started = Instant::now();
            std::hint::black_box(backend.downsample(&self.step, &self.src, &self.dst)?);
            best = best.min(started.elapsed());
            if best > enough {
                break;
            }
        }
        Ok(best)
    }
}

fn gb_per_s(bytes: u64, time: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let rate = bytes as f64 / 1e9 / time.as_secs_f64().max(1e-9);
    rate
}

/// What the calibration measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Method and dtype measured.
    pub method: Method,
    /// The data type.
    pub dtype: DType,
    /// The tile's shape.
    pub tile: Vec<u64>,
    /// CPU kernels on the pool's threads: GB/s of input.
    pub cpu_gb_per_s: f64,
    /// CPU threads.
    pub cpu_threads: usize,
    /// GPU, upload and readback included: GB/s of input.
    pub gpu_gb_per_s: f64,
}

impl Calibration {
    /// True if the GPU computed the tile faster.
    #[must_use]
    pub fn prefers_gpu(&self) -> bool {
        self.gpu_gb_per_s > self.cpu_gb_per_s
    }

    /// The reason for the choice, as logged and recorded.
    #[must_use]
    pub fn reason(&self) -> String {
        format!(
            "auto: {} measured faster for {} on {} ({:.2} GB/s on the GPU with upload and readback, {:.2} GB/s on the CPU with {} threads, {:?} tile)",
            if self.prefers_gpu() { "the GPU" } else { "the CPU" },
            self.method,
            self.dtype,
            self.gpu_gb_per_s,
            self.cpu_gb_per_s,
            self.cpu_threads,
            self.tile
        )
    }
}

/// A tile shaped like the source level's leading corner: the last two axes up to 256, the
/// others up to 32, then halved along the longest axis until it holds at most `max_bytes`
/// (or one element).
fn tile_shape(level_shape: &[u64], element: u64, max_bytes: u64) -> Vec<u64> {
    let ndim = level_shape.len();
    let mut shape: Vec<u64> = level_shape
        .iter()
        .enumerate()
        .map(|(a, &n)| n.min(if a + 2 >= ndim { 256 } else { 32 }).max(1))
        .collect();
    while shape.iter().product::<u64>() * element > max_bytes && shape.iter().any(|&n| n > 1) {
        let longest = (0..ndim).max_by_key(|&a| shape[a]).unwrap_or(0);
        shape[longest] = shape[longest].div_ceil(2);
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::gpu::GpuBackend;

    #[test]
    fn the_tile_follows_the_level_and_stays_small() {
        let max = CALIBRATION_BYTES;
        assert_eq!(tile_shape(&[256, 1024, 1024], 2, max), vec![32, 256, 256]);
        assert_eq!(tile_shape(&[3, 10, 4000, 4000], 8, max), vec![3, 10, 256, 256]);
        assert_eq!(tile_shape(&[7, 9], 1, max), vec![7, 9]);
        assert!(tile_shape(&[1 << 20, 1 << 20, 1 << 20], 8, max).iter().product::<u64>() * 8 <= max);
        // A small input's tile: a 32nd of it.
        assert_eq!(tile_shape(&[16, 256, 256], 2, (2 << 20) / 32), vec![16, 64, 32]);
        assert_eq!(tile_shape(&[2, 2], 8, 0), vec![1, 1]);
    }

    #[test]
    fn both_backends_are_measured_and_the_faster_one_is_named() {
        let gpu = match GpuBackend::new(true) {
            Ok(gpu) => gpu,
            Err(e) => {
                crate::backend::gpu::no_adapter("both_backends_are_measured_and_the_faster_one_is_named", &e);
                return;
            }
        };
        let cpu = CpuRate::measure(
            &CpuBackend::new(),
            Method::Mean,
            DType::U16,
            &[2, 2, 2],
            &[512, 1024, 1024],
        )
        .unwrap();
        let measured = cpu.against(&gpu).unwrap();
        assert_eq!(measured.cpu_gb_per_s, cpu.gb_per_s());
        assert_eq!(measured.tile, vec![32, 256, 256]);
        assert!(measured.cpu_gb_per_s.is_finite() && measured.cpu_gb_per_s > 0.0);
        assert!(measured.gpu_gb_per_s.is_finite() && measured.gpu_gb_per_s > 0.0);
        let reason = measured.reason();
        let named = if measured.gpu_gb_per_s > measured.cpu_gb_per_s {
            "the GPU"
        } else {
            "the CPU"
        };
        assert!(
            reason.starts_with(&format!("auto: {named} measured faster")),
            "{reason}"
        );
        assert!(
            reason.contains(&format!("{:.2} GB/s on the GPU", measured.gpu_gb_per_s)),
            "{reason}"
        );
    }
}
