//! Min and max (SPEC §2): the smallest / largest in-bounds value of each window; NaN
//! propagates, and −0.0 counts as below +0.0 ([`Sample::lesser`], [`Sample::greater`]), so
//! the result never depends on the order a window is visited in, nor on the tiling.
//!
//! As for mean, the input rows of a window are first reduced element by element (a
//! contiguous pass), then neighbouring columns are reduced along the last axis.

use super::{StepGeometry, fill_rows, row_span, window_of, window_rows};
use crate::dtype::Sample;

/// Min (`pick = T::lesser`) or max (`pick = T::greater`) on one tile.
pub(crate) fn extremum<T: Sample>(src: &[T], geometry: &StepGeometry, pick: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let ndim = geometry.src_shape.len();
    let last = &geometry.stencils[ndim - 1];
    let dst_row_len = geometry.dst_shape[ndim - 1];
    let (lo, hi) = row_span(last, dst_row_len);
    let mut dst = vec![T::default(); geometry.dst_shape.iter().product()];
    fill_rows(
        &mut dst,
        &geometry.dst_shape,
        || (vec![T::default(); hi - lo], Vec::<usize>::new()),
        |(columns, rows), outer, out_row| {
            window_rows(geometry, outer, rows);
            let (head, tail) = rows.split_first().expect("at least one row");
            columns.copy_from_slice(&src[head + lo..head + hi]);
            for &r in tail {
                for (column, &v) in columns.iter_mut().zip(&src[r + lo..r + hi]) {
                    *column = pick(*column, v);
                }
            }
            for (x, out) in out_row.iter_mut().enumerate() {
                let (first, count) = window_of(last, x);
                let window = &columns[first - lo..first - lo + count];
                *out = window[1..].iter().fold(window[0], |best, &v| pick(best, v));
            }
        },
    );
    dst
}
