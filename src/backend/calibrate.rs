//! How `--backend auto` chooses between a hardware GPU and the CPU: by measurement, not by
//! the GPU's mere presence. Before the build, both backends compute the build's first step
//! (its method, dtype and factors) on the same synthetic tile of up to [`CALIBRATION_BYTES`],
//! each once to warm up and then up to [`RUNS`] times (the GPU's runs stop once one takes
//! four times the CPU's best: it has lost); the GPU is timed end to end (upload,
//! dispatches, readback), the CPU on every thread of the build's pool. The faster one by
//! GB/s of input is used, and the two rates are the reason recorded in the metadata's
//! `backend` entry. It takes a fraction of a second, and only where a hardware adapter exists.
//!
//! Why per-tile kernel throughput decides: a build's codec work (decode, encode) runs on the
//! CPU either way, so the GPU helps exactly when it computes a tile faster than the CPU's
//! kernels do; where it does not (a slow or busy GPU, a cheap method such as nearest on a
//! many-core CPU), the CPU keeps the whole build.

use std::time::{Duration, Instant};

use crate::backend::{BackendError, Downsampler, Step};
use crate::dtype::DType;
use crate::method::Method;
use crate::tile::Region;

/// Largest calibration tile, bytes.
pub const CALIBRATION_BYTES: u64 = 16 << 20;

/// Timed runs per backend (after one warm-up run); the best counts.
pub const RUNS: usize = 3;

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
    /// Times `step`'s method on both backends on a synthetic tile of `dtype` shaped after
    /// `level_shape` (the source level), capped at [`CALIBRATION_BYTES`].
    ///
    /// # Errors
    /// [`BackendError`] if either backend fails on the tile.
    pub fn measure(
        cpu: &dyn Downsampler,
        gpu: &dyn Downsampler,
        method: Method,
        dtype: DType,
        factors: &[u32],
        level_shape: &[u64],
    ) -> Result<Self, BackendError> {
        let shape = tile_shape(level_shape, dtype.size() as u64);
        let src = crate::synthetic::random_tile(dtype, &shape, 3);
        let step = Step {
            method,
            factors: factors.to_vec(),
            src_shape: shape.clone(),
        };
        let dst = Region::whole(&step.dst_shape());
        let bytes = shape.iter().product::<u64>() * dtype.size() as u64;
        // The best of the timed runs; one run slower than `enough` ends the measurement (a
        // backend that far behind loses whatever its other runs would show).
        let best_time = |backend: &dyn Downsampler, enough: Duration| -> Result<Duration, BackendError> {
            backend.downsample(&step, &src, &dst)?;
            let mut best = Duration::MAX;
            for _ in 0..RUNS {
                let started = Instant::now();
                std::hint::black_box(backend.downsample(&step, &src, &dst)?);
                best = best.min(started.elapsed());
                if best > enough {
                    break;
                }
            }
            Ok(best)
        };
        let cpu_time = best_time(cpu, Duration::MAX)?;
        let gpu_time = best_time(gpu, cpu_time.saturating_mul(4))?;
        #[allow(clippy::cast_precision_loss)]
        let rate = |time: Duration| bytes as f64 / 1e9 / time.as_secs_f64().max(1e-9);
        Ok(Self {
            method,
            dtype,
            cpu_gb_per_s: rate(cpu_time),
            cpu_threads: rayon::current_num_threads(),
            gpu_gb_per_s: rate(gpu_time),
            tile: shape,
        })
    }

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
/// others up to 32, then halved along the longest axis until it holds at most
/// [`CALIBRATION_BYTES`].
fn tile_shape(level_shape: &[u64], element: u64) -> Vec<u64> {
    let ndim = level_shape.len();
    let mut shape: Vec<u64> = level_shape
        .iter()
        .enumerate()
        .map(|(a, &n)| n.min(if a + 2 >= ndim { 256 } else { 32 }).max(1))
        .collect();
    while shape.iter().product::<u64>() * element > CALIBRATION_BYTES {
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
        assert_eq!(tile_shape(&[256, 1024, 1024], 2), vec![32, 256, 256]);
        assert_eq!(tile_shape(&[3, 10, 4000, 4000], 8), vec![3, 10, 256, 256]);
        assert_eq!(tile_shape(&[7, 9], 1), vec![7, 9]);
        assert!(tile_shape(&[1 << 20, 1 << 20, 1 << 20], 8).iter().product::<u64>() * 8 <= CALIBRATION_BYTES);
    }

    #[test]
    fn both_backends_are_measured_and_the_faster_one_is_named() {
        let Ok(gpu) = GpuBackend::new(true) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI has lavapipe: a GPU adapter must be found"
            );
            eprintln!("SKIPPED both_backends_are_measured_and_the_faster_one_is_named: no GPU adapter");
            return;
        };
        let cpu = CpuBackend::new();
        let measured = Calibration::measure(&cpu, &gpu, Method::Mean, DType::U16, &[2, 2, 2], &[40, 300, 300]).unwrap();
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
