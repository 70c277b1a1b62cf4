//! Gaussian (SPEC §2): blur along every axis with `f > 1` by a normalised Gaussian
//! (`σ = f/3`, radius `floor(4σ + 0.5)`, reflect border), then the window mean, with no
//! rounding in between; integers are rounded half to even and clamped at the end.
//!
//! The blur and the window mean are folded into one tap list per output index
//! ([`AxisStencil::Taps`]), applied axis by axis in `f64`, outermost axis first. The outer
//! passes combine whole contiguous slabs (vectorised), so only the last pass gathers.

use rayon::prelude::*;

use super::{PARALLEL_MIN_OUTPUTS, StepGeometry};
use crate::dtype::Sample;
use crate::method::AxisStencil;

/// Slabs are combined in blocks of this many values so the destination stays in L1.
const BLOCK: usize = 2048;

/// Applies `stencil` along `axis` of `src` (C order, `shape`), giving `out_len` outputs on
/// that axis, in `f64`.
fn apply_axis<S: Sample>(
    src: &[S],
    shape: &[usize],
    axis: usize,
    stencil: &AxisStencil,
    out_len: usize,
) -> Vec<f64> {
    let outer: usize = shape[..axis].iter().product();
    let n_in = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![0f64; outer * out_len * inner];
    if out.is_empty() {
        return out;
    }
    // One output slab: outer block `b`, output index `o`, `inner` contiguous values.
    let fill_slab = |slab_number: usize, slab: &mut [f64]| {
        let b = slab_number / out_len;
        let o = slab_number % out_len;
        let input_slab = |i: usize| &src[(b * n_in + i) * inner..(b * n_in + i + 1) * inner];
        match stencil {
            AxisStencil::Identity { offset } => {
                for (d, v) in slab.iter_mut().zip(input_slab(offset + o)) {
                    *d = v.to_f64();
                }
            }
            AxisStencil::Taps {
                offsets,
                index,
                weight,
            } => {
                let taps = offsets[o]..offsets[o + 1];
                if inner == 1 {
                    slab[0] = taps
                        .map(|t| weight[t] * input_slab(index[t])[0].to_f64())
                        .sum();
                    return;
                }
                for start in (0..inner).step_by(BLOCK) {
                    let end = (start + BLOCK).min(inner);
                    let dst = &mut slab[start..end];
                    for t in taps.clone() {
                        let w = weight[t];
                        for (d, v) in dst.iter_mut().zip(&input_slab(index[t])[start..end]) {
                            *d += w * v.to_f64();
                        }
                    }
                }
            }
            AxisStencil::Pick { .. } | AxisStencil::Window { .. } => {
                unreachable!("gaussian builds taps or identity stencils only")
            }
        }
    };
    if inner == 1 {
        // The last axis: one row of outputs per input row; group rows to amortise.
        let fill_row = |b: usize, row: &mut [f64]| {
            for (o, out) in row.iter_mut().enumerate() {
                let mut one = [0f64];
                fill_slab(b * out_len + o, &mut one);
                *out = one[0];
            }
        };
        if out.len() >= PARALLEL_MIN_OUTPUTS {
            out.par_chunks_mut(out_len)
                .enumerate()
                .for_each(|(b, row)| fill_row(b, row));
        } else {
            out.chunks_mut(out_len)
                .enumerate()
                .for_each(|(b, row)| fill_row(b, row));
        }
    } else if out.len() >= PARALLEL_MIN_OUTPUTS {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(s, slab)| fill_slab(s, slab));
    } else {
        out.chunks_mut(inner)
            .enumerate()
            .for_each(|(s, slab)| fill_slab(s, slab));
    }
    out
}

/// Gaussian on one tile.
pub(crate) fn gaussian<T: Sample>(src: &[T], geometry: &StepGeometry) -> Vec<T> {
    let ndim = geometry.src_shape.len();
    let mut shape = geometry.src_shape.clone();
    let mut blurred: Option<Vec<f64>> = None;
    for axis in 0..ndim {
        let out_len = geometry.dst_shape[axis];
        let stencil = &geometry.stencils[axis];
        let unchanged =
            matches!(stencil, AxisStencil::Identity { offset: 0 }) && shape[axis] == out_len;
        if unchanged {
            continue;
        }
        let next = match &blurred {
            None => apply_axis(src, &shape, axis, stencil, out_len),
            Some(values) => apply_axis(values, &shape, axis, stencil, out_len),
        };
        shape[axis] = out_len;
        blurred = Some(next);
    }
    match blurred {
        Some(values) => values.into_iter().map(T::from_f64).collect(),
        None => src.to_vec(),
    }
}
