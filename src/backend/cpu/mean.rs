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
    let last = &geometry.stencils[ndim - 1];
    let src_row_len = geometry.src_shape[ndim - 1];
    let dst_row_len = geometry.dst_shape[ndim - 1];
    let (lo, hi) = row_span(last, dst_row_len);
    let mut dst = vec![T::default(); geometry.dst_shape.iter().product()];
    fill_rows(
        &mut dst,
        &geometry.dst_shape,
        || (vec![A::default(); hi - lo], Vec::<usize>::new()),
        |(column_sums, rows), outer, out_row| {
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
                    // The partial last window (one voxel wide) lies past the pairs compacted
                    // below, so its column is read first.
                    let partial: Vec<T> = (full..count.len())
                        .map(|x| column_sums[start[x] - lo].mean(outer_count * count[x] as u64))
                        .collect();
                    // Pair sums, compacted in place (output i reads columns 2i and 2i + 1).
                    let base = start[0] - lo;
                    for i in 0..full {
                        let mut sum = column_sums[base + 2 * i];
                        sum += column_sums[base + 2 * i + 1];
                        column_sums[i] = sum;
                    }
                    A::means(&column_sums[..full], outer_count * 2, &mut out_row[..full]);
                    out_row[full..].copy_from_slice(&partial);
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
        },
    );
    dst
}
