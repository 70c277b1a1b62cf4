//! How many loop iterations one invocation of a step's kernels runs at most, and the budget
//! a software adapter allows.
//!
//! Mesa's llvmpipe (lavapipe) ends every loop of an invocation once that invocation has run
//! 65 535 loop iterations in all, every loop of the shader counted together
//! (`LP_MAX_TGSI_LOOP_ITERATIONS` in gallivm): no error, the kernel just returns wrong
//! values. Mode compares up to every pair of a window's voxels (all of them where the values
//! are distinct), n(n + 1)/2 iterations per output, so a uint8 word of four outputs with
//! windows of 3×3×3×3×3 voxels went past it and its last output came back 0. Hardware
//! adapters have no such cap. The GPU backend leaves a step whose bound exceeds the budget
//! to the CPU on software adapters ([`super::GpuBackend`]).
//!
//! The bounds count every loop of the kernels, constant-length ones too (the compiler
//! unrolls those, so the bounds are generous): a step under its bound is safe.

use crate::backend::Step;
use crate::dtype::DType;
use crate::method::Method;

use super::program::{MAX_AXES, elements_per_word};

/// Loop iterations an invocation may run on a software adapter before its loops are ended
/// (llvmpipe's limit).
pub const SOFTWARE_LOOP_BUDGET: u64 = 65_535;

/// Loops an output takes besides its window's: its window's or taps' lookups, one per axis,
/// and stepping to the next output's index.
const PER_OUTPUT: u64 = 3 * MAX_AXES as u64;

/// `f32` values a gaussian invocation computes into workgroup memory per pass at most (the
/// fused passes' 4088 values shared by 256 invocations, rounded up).
const GAUSSIAN_CELLS: u64 = 16;

/// The most loop iterations one invocation of `step`'s kernels runs on `dtype`: a word's
/// outputs (one to four), each with its window's or taps' loops.
#[must_use]
pub fn per_invocation(step: &Step, dtype: DType) -> u64 {
    let lanes = elements_per_word(dtype);
    let factors: Vec<u64> = step.factors.iter().map(|&f| u64::from(f)).collect();
    let window = factors.iter().fold(1u64, |n, &f| n.saturating_mul(f));
    let per_output = match step.method {
        Method::Nearest => 0,
        Method::Min | Method::Max => window,
        // The window's nested loops, one per axis (each inner loop starts once per
        // iteration of those around it), and the 64-step division of a large sum.
        Method::Mean => nested_loops(&factors).saturating_add(64),
        // Each voxel counts the equal voxels after it (cut short only where the data allow).
        Method::Mode => window.saturating_mul(window.saturating_add(1)) / 2,
        Method::Gaussian => return gaussian(step, lanes),
    };
    lanes
        .saturating_mul(per_output.saturating_add(PER_OUTPUT))
        .saturating_add(PER_OUTPUT)
}

/// Iterations of loops nested one per axis, the outermost first, each running its axis's
/// factor: the sum of the factors' running products.
fn nested_loops(factors: &[u64]) -> u64 {
    factors
        .iter()
        .scan(1u64, |product, &f| {
            *product = product.saturating_mul(f);
            Some(*product)
        })
        .fold(0u64, u64::saturating_add)
}

/// Gaussian: a pass's taps along each reduced axis (at most the window and the halo on
/// both sides), for each value an invocation computes in workgroup memory and each output of
/// its word, and the fused y–x pass's loop over a workgroup's rows.
fn gaussian(step: &Step, lanes: u64) -> u64 {
    let taps: u64 = step
        .factors
        .iter()
        .filter(|&&f| f > 1)
        .map(|&f| {
            let taps = u64::from(f).saturating_add(Method::Gaussian.halo(f).saturating_mul(2));
            taps.saturating_add(1 + PER_OUTPUT)
        })
        .fold(0u64, u64::saturating_add);
    (GAUSSIAN_CELLS + lanes)
        .saturating_mul(taps)
        .saturating_add(u64::from(super::program::WORKGROUP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(method: Method, factors: &[u32]) -> Step {
        Step {
            method,
            factors: factors.to_vec(),
            src_shape: factors.iter().map(|&f| u64::from(f) * 8).collect(),
        }
    }

    fn within_budget(method: Method, factors: &[u32], dtype: DType) -> bool {
        per_invocation(&step(method, factors), dtype) < SOFTWARE_LOOP_BUDGET
    }

    #[test]
    fn mode_over_five_axes_of_three_on_uint8_exceeds_lavapipes_budget() {
        // The case CI found: four outputs of 243 voxels each, about 118 000 iterations.
        assert!(!within_budget(Method::Mode, &[3, 3, 3, 3, 3], DType::U8));
        // 180-voxel windows stay under it, four to a word; 243 do one to a word.
        assert!(within_budget(Method::Mode, &[1, 1, 5, 6, 6], DType::U8));
        assert!(within_budget(Method::Mode, &[3, 3, 3, 3, 3], DType::U32));
    }

    #[test]
    fn the_usual_steps_stay_far_under_the_budget() {
        for method in [
            Method::Nearest,
            Method::Mean,
            Method::Mode,
            Method::Min,
            Method::Max,
            Method::Gaussian,
        ] {
            for dtype in [DType::U8, DType::U16, DType::F32] {
                let bound = per_invocation(&step(method, &[2, 2, 2]), dtype);
                assert!(bound < SOFTWARE_LOOP_BUDGET / 16, "{method} {dtype}: {bound}");
            }
        }
    }

    #[test]
    fn mean_counts_each_inner_loop_once_per_iteration_of_the_loops_around_it() {
        assert_eq!(nested_loops(&[1, 1, 16, 16, 16]), 1 + 1 + 16 + 256 + 4096);
        // uint8: four outputs of 4 370 + 64 + 15 iterations, and the invocation's 15.
        assert_eq!(
            per_invocation(&step(Method::Mean, &[1, 1, 16, 16, 16]), DType::U8),
            4 * 4449 + 15
        );
        assert!(!within_budget(Method::Mean, &[1, 1, 32, 32, 32], DType::U8));
    }

    #[test]
    fn huge_factors_saturate_instead_of_overflowing() {
        let bound = per_invocation(&step(Method::Mode, &[u32::MAX; 5]), DType::U8);
        assert_eq!(bound, u64::MAX);
        assert!(per_invocation(&step(Method::Gaussian, &[u32::MAX; 3]), DType::U8) > SOFTWARE_LOOP_BUDGET);
    }
}
