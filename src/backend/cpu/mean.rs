//! Mean (SPEC §2): `y[i] = sum(x[W(i)]) / |W(i)|` over the in-bounds voxels of each window.
//!
//! Integers are summed exactly (`i64`, or `i128` for 64-bit types; `i32` for 8- and 16-bit
//! types where the step's windows are small enough, see [`WindowSum`]) and the quotient is
//! rounded to nearest, ties to even; floats are summed in `f64`, so NaN propagates.
//!
//! Per output row, the input rows of the window are first added element by element (a
//! contiguous, vectorised pass), then neighbouring sums are combined along the last axis.

use super::{StepGeometry, fill_rows, row_span, window_of, window_rows};
use crate::dtype::{Sample, WindowSum};
use crate::method::AxisStencil;

/// Mean on one tile, summed in `T`'s narrow accumulator where the windows allow it.
pub(crate) fn mean<T: Sample>(src: &[T], geometry: &StepGeometry) -> Vec<T> {
    if largest_window(geometry) <= T::NARROW_WINDOW {
        mean_summed_in::<T, T::NarrowAcc>(src, geometry)
    } else {
        mean_summed_in::<T, T::Acc>(src, geometry)
    }
}

/// Voxels in the step's largest window.
fn largest_window(geometry: &StepGeometry) -> u64 {
    geometry
        .stencils
        .iter()
        .map(|stencil| match stencil {
            AxisStencil::Window { count, .. } => count.iter().copied().max().unwrap_or(1) as u64,
            _ => 1,
        })
        .fold(1u64, u64::saturating_mul)
}

/// Mean on one tile with window sums in `A`.
fn mean_summed_in<T: Sample, A: WindowSum<T>>(src: &[T], geometry: &StepGeometry) -> Vec<T> {
    let ndim = geometry.src_shape.len();
    let (lo, hi) = row_span(&geometry.stencils[ndim - 1], geometry.dst_shape[ndim - 1]);
    let row = MeanRow { src, geometry, lo, hi };
    let mut dst = vec![T::default(); geometry.dst_shape.iter().product()];
    fill_rows(
        &mut dst,
        &geometry.dst_shape,
        Scratch::<A>::default,
        |scratch, outer, out_row| {
            #[cfg(target_arch = "x86_64")]
            if super::has_avx2() {
                // SAFETY: the CPU has AVX2, the one feature the function enables.
                #[allow(unsafe_code)]
                unsafe {
                    row.fill_avx2(scratch, outer, out_row);
                }
                return;
            }
            row.fill(scratch, outer, out_row);
        },
    );
    dst
}

/// The buffers of one thread: a row's column sums, the offsets of a window's rows, and
/// the sums of pairs of columns.
#[derive(Default)]
struct Scratch<A> {
    column_sums: Vec<A>,
    rows: Vec<usize>,
    pairs: Vec<A>,
}

/// One output row of the mean: the source and its step, and the span `[lo, hi)` of each
/// input row that the last axis reads.
struct MeanRow<'a, T> {
    src: &'a [T],
    geometry: &'a StepGeometry,
    lo: usize,
    hi: usize,
}

impl<T: Sample> MeanRow<'_, T> {
    /// [`MeanRow::fill`] compiled for AVX2 (twice the lanes of SSE2 for the column sums):
    /// the same integer and IEEE operations, so the same means.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fill_avx2<A: WindowSum<T>>(&self, scratch: &mut Scratch<A>, outer: &[usize], out_row: &mut [T]) {
        self.fill(scratch, outer, out_row);
    }

    /// Fills `out_row`, the output row at `outer` (its index on every axis but the last).
    #[inline(always)]
    fn fill<A: WindowSum<T>>(&self, scratch: &mut Scratch<A>, outer: &[usize], out_row: &mut [T]) {
        let &Self { src, geometry, lo, hi } = self;
        let Scratch {
            column_sums,
            rows,
            pairs,
        } = scratch;
        column_sums.resize(hi - lo, A::default());
        let ndim = geometry.src_shape.len();
        let last = &geometry.stencils[ndim - 1];
        let src_row_len = geometry.src_shape[ndim - 1];
        let outer_count = window_rows(geometry, outer, rows);
        // Column sums over the window's rows: contiguous adds.
        let (head, tail) = rows.split_first().expect("at least one row");
        for (sum, &v) in column_sums.iter_mut().zip(&src[head + lo..head + hi]) {
            *sum = A::of(v);
        }
        for &r in tail {
            debug_assert!(r + src_row_len <= src.len());
            for (sum, &v) in column_sums.iter_mut().zip(&src[r + lo..r + hi]) {
                *sum += A::of(v);
            }
        }
        // Along the last axis.
        match last {
            AxisStencil::Window { start, count } if count[0] == 2 => {
                let full = if count[count.len() - 1] == 2 {
                    count.len()
                } else {
                    count.len() - 1
                };
                // Pair sums (output i reads columns 2i and 2i + 1) into their own buffer, a
                // pass that vectorises, then the means of the pairs.
                let base = start[0] - lo;
                pairs.clear();
                pairs.extend(column_sums[base..base + 2 * full].chunks_exact(2).map(|pair| {
                    let mut sum = pair[0];
                    sum += pair[1];
                    sum
                }));
                A::means(pairs, outer_count * 2, &mut out_row[..full]);
                // The partial last window, one voxel wide.
                for x in full..count.len() {
                    out_row[x] = column_sums[start[x] - lo].mean(outer_count * count[x] as u64);
                }
            }
            stencil => {
                for (x, out) in out_row.iter_mut().enumerate() {
                    let (first, count) = window_of(stencil, x);
                    let mut sum = column_sums[first - lo];
                    for &v in &column_sums[first - lo + 1..first - lo + count] {
                        sum += v;
                    }
                    *out = sum.mean(outer_count * count as u64);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Step;
    use crate::method::Method;
    use crate::tile::Region;

    /// Every output row of a 2×2×2 mean over `src` (shape 5 × 9 × 67), from the baseline
    /// build of [`MeanRow::fill`] and from its AVX2 build.
    #[cfg(target_arch = "x86_64")]
    fn both_builds<T: Sample, A: WindowSum<T>>(src: &[T]) -> (Vec<T>, Vec<T>) {
        let shape = [5, 9, 67];
        let step = Step {
            method: Method::Mean,
            factors: vec![2, 2, 2],
            src_shape: shape.to_vec(),
        };
        let dst = [3usize, 5, 34];
        let geometry = StepGeometry::new(&step, &Region::whole(&shape), &Region::whole(&[3, 5, 34]));
        let (lo, hi) = row_span(&geometry.stencils[2], dst[2]);
        let row = MeanRow {
            src,
            geometry: &geometry,
            lo,
            hi,
        };
        let mut scratch = Scratch::<A>::default();
        let (mut baseline, mut wide) = (Vec::new(), Vec::new());
        for outer in (0..dst[0]).flat_map(|z| (0..dst[1]).map(move |y| [z, y])) {
            let (mut a, mut b) = (vec![T::default(); dst[2]], vec![T::default(); dst[2]]);
            row.fill(&mut scratch, &outer, &mut a);
            // SAFETY: the caller checked that the CPU has AVX2.
            #[allow(unsafe_code)]
            unsafe {
                row.fill_avx2(&mut scratch, &outer, &mut b);
            }
            baseline.extend(a);
            wide.extend(b);
        }
        (baseline, wide)
    }

    /// The AVX2 build gives the baseline build's means (elsewhere the tests run the AVX2
    /// build wherever the CPU has it).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_baseline_builds_agree() {
        if !super::super::has_avx2() {
            return;
        }
        let len = 5 * 9 * 67;
        let integers: Vec<u16> = (0..len).map(|i| (i * 7919 % 65536) as u16).collect();
        let (baseline, wide) = both_builds::<u16, i32>(&integers);
        assert_eq!(baseline, wide);
        assert!(baseline.iter().any(|&v| v > 1000));
        let floats: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let (baseline, wide) = both_builds::<f32, f64>(&floats);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&baseline), bits(&wide));
    }
}
