//! Mean (SPEC §2): `y[i] = sum(x[W(i)]) / |W(i)|` over the in-bounds voxels of each window.
//!
//! Integers are summed exactly (`i64`, or `i128` for 64-bit types) and the quotient is
//! rounded to nearest, ties to even; floats are summed in `f64`, so NaN propagates.

use super::{StepGeometry, fill_rows};
use crate::dtype::Sample;
use crate::method::AxisStencil;

/// The input window `(first, count)` of output `o` on an outer axis.
fn window_of(stencil: &AxisStencil, o: usize) -> (usize, usize) {
    match stencil {
        AxisStencil::Identity { offset } => (offset + o, 1),
        AxisStencil::Pick { first } => (first[o], 1),
        AxisStencil::Window { start, count } => (start[o], count[o]),
        AxisStencil::Taps { .. } => unreachable!("mean never builds taps"),
    }
}

/// Adds the windows of one input row into `acc` (one accumulator per output).
#[inline]
fn accumulate_row<T: Sample>(acc: &mut [T::Acc], row: &[T], stencil: &AxisStencil) {
    match stencil {
        AxisStencil::Identity { offset } => {
            for (a, &v) in acc.iter_mut().zip(&row[*offset..]) {
                *a += v.to_acc();
            }
        }
        AxisStencil::Window { start, count } => {
            // Windows are consecutive with stride f; only the last may be partial.
            let factor = count[0];
            let first = start[0];
            let full = if count[count.len() - 1] == factor {
                count.len()
            } else {
                count.len() - 1
            };
            let body = &row[first..first + full * factor];
            if factor == 2 {
                for (a, pair) in acc[..full].iter_mut().zip(body.chunks_exact(2)) {
                    *a += pair[0].to_acc();
                    *a += pair[1].to_acc();
                }
            } else {
                for (a, window) in acc[..full].iter_mut().zip(body.chunks_exact(factor)) {
                    for &v in window {
                        *a += v.to_acc();
                    }
                }
            }
            for o in full..count.len() {
                for &v in &row[start[o]..start[o] + count[o]] {
                    acc[o] += v.to_acc();
                }
            }
        }
        AxisStencil::Pick { first } => {
            for (a, &i) in acc.iter_mut().zip(first) {
                *a += row[i].to_acc();
            }
        }
        AxisStencil::Taps { .. } => unreachable!("mean never builds taps"),
    }
}

/// Mean on one tile.
pub(crate) fn mean<T: Sample>(src: &[T], geometry: &StepGeometry) -> Vec<T> {
    let ndim = geometry.src_shape.len();
    let last = &geometry.stencils[ndim - 1];
    let src_row_len = geometry.src_shape[ndim - 1];
    let dst_row_len = geometry.dst_shape[ndim - 1];
    let mut dst = vec![T::default(); geometry.dst_shape.iter().product()];
    fill_rows(
        &mut dst,
        &geometry.dst_shape,
        || (vec![T::Acc::default(); dst_row_len], Vec::<usize>::new()),
        |(acc, rows), outer, out_row| {
            // Offsets of every input row in the window of this output row.
            rows.clear();
            rows.push(0);
            let mut outer_count = 1u64;
            for (a, &o) in outer.iter().enumerate() {
                let (first, count) = window_of(&geometry.stencils[a], o);
                outer_count *= count as u64;
                let stride = geometry.src_strides[a];
                let previous = rows.len();
                for r in 0..previous {
                    for k in 1..count {
                        rows.push(rows[r] + (first + k) * stride);
                    }
                    rows[r] += first * stride;
                }
            }
            acc.fill(T::Acc::default());
            for &r in rows.iter() {
                accumulate_row::<T>(acc, &src[r..r + src_row_len], last);
            }
            for (x, (out, &sum)) in out_row.iter_mut().zip(acc.iter()).enumerate() {
                let count = match last {
                    AxisStencil::Window { count, .. } => count[x] as u64,
                    _ => 1,
                };
                *out = T::mean_from_sum(sum, outer_count * count);
            }
        },
    );
    dst
}
