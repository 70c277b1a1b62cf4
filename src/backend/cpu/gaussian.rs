//! Gaussian (SPEC §2): blur along every axis with `f > 1` by a normalised Gaussian
//! (`σ = f/3`, radius `floor(4σ + 0.5)`, reflect border), then the window mean, with no
//! rounding in between; integers are rounded half to even and clamped at the end (values
//! within float error of a half-integer are that tie: see [`Sample::from_filtered`]; the
//! error scale is the largest magnitude in the tile, found only for tiles where a value
//! comes that close to a half-integer).
//!
//! The blur and the window mean are folded into one tap list per output index
//! ([`AxisStencil::Taps`]), applied axis by axis in `f64`, outermost axis first. The work
//! recurses over output slabs: output `o` of the outermost axis is the weighted sum of a
//! few input slabs (a contiguous, vectorised combination), and that slab is reduced the
//! same way along the next axis. Scratch memory is one slab per axis, not a copy of the
//! tile, and the summation order is the same as applying whole-array passes.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::{PARALLEL_MIN_OUTPUTS, StepGeometry};
use crate::dtype::{Sample, snap_half};
use crate::method::AxisStencil;

/// The largest magnitude of a tile's values: the scale of the rounding error of the
/// weighted sums made from them, which decides what counts as a tie. It costs a pass over
/// the tile, so it is found only once a value comes within float error of a half-integer
/// at the largest scale any value could have.
struct Magnitude<'a, T> {
    tile: &'a [T],
    found: OnceLock<f64>,
}

impl<T: Sample> Magnitude<'_, T> {
    /// The output element for `value`.
    fn round<U: Sample>(&self, value: f64) -> U {
        if U::MAX_MAGNITUDE == 0.0 || snap_half(value, U::MAX_MAGNITUDE) == value {
            // Not near a half-integer even at the widest scale (or a float): the tile's
            // magnitude cannot change the result.
            return U::from_filtered(value, 0.0);
        }
        let magnitude = *self
            .found
            .get_or_init(|| self.tile.iter().fold(0.0f64, |m, v| m.max(v.to_f64().abs())));
        U::from_filtered(value, magnitude)
    }
}

/// Slabs are combined in blocks of this many values so the destination stays in L1.
const BLOCK: usize = 2048;

/// `out = Σ_t w_t · slab(index_t)` (or the single slab of an identity axis), where
/// `slab(i)` is the `i`-th of the contiguous slabs of length `out.len()` in `src`.
fn combine_slabs<S: Sample>(src: &[S], stencil: &AxisStencil, o: usize, out: &mut [f64]) {
    let inner = out.len();
    let slab = |i: usize| &src[i * inner..(i + 1) * inner];
    match stencil {
        AxisStencil::Identity { offset } => {
            for (d, v) in out.iter_mut().zip(slab(offset + o)) {
                *d = v.to_f64();
            }
        }
        AxisStencil::Taps { offsets, index, weight } => {
            let taps = offsets[o]..offsets[o + 1];
            if taps.is_empty() {
                out.fill(0.0);
                return;
            }
            for start in (0..inner).step_by(BLOCK) {
                let end = (start + BLOCK).min(inner);
                let block = &mut out[start..end];
                // The first tap sets the block (`+ 0.0`: the sum of a zeroed block with it,
                // to the sign of a zero), the others add to it.
                let w = weight[taps.start];
                for (d, v) in block.iter_mut().zip(&slab(index[taps.start])[start..end]) {
                    *d = w * v.to_f64() + 0.0;
                }
                for t in taps.start + 1..taps.end {
                    let w = weight[t];
                    for (d, v) in block.iter_mut().zip(&slab(index[t])[start..end]) {
                        *d += w * v.to_f64();
                    }
                }
            }
        }
        AxisStencil::Pick { .. } | AxisStencil::Window { .. } => {
            unreachable!("gaussian builds taps or identity stencils only")
        }
    }
}

/// Output `o` of the last axis of one row.
fn row_output<S: Sample>(row: &[S], stencil: &AxisStencil, o: usize) -> f64 {
    match stencil {
        AxisStencil::Identity { offset } => row[offset + o].to_f64(),
        AxisStencil::Taps { offsets, index, weight } => (offsets[o]..offsets[o + 1])
            .map(|t| weight[t] * row[index[t]].to_f64())
            .sum(),
        AxisStencil::Pick { .. } | AxisStencil::Window { .. } => {
            unreachable!("gaussian builds taps or identity stencils only")
        }
    }
}

/// Reduces `src` (C order, `shape`) along every axis into `out` (C order, `dst_shape`).
/// `scratch[k]` holds the slab of depth `k`.
fn reduce<S: Sample, T: Sample>(
    src: &[S],
    (shape, dst_shape): (&[usize], &[usize]),
    stencils: &[AxisStencil],
    magnitude: &Magnitude<'_, T>,
    out: &mut [T],
    scratch: &mut [Vec<f64>],
) {
    if shape.len() == 1 {
        for (o, y) in out.iter_mut().enumerate() {
            *y = magnitude.round(row_output(src, &stencils[0], o));
        }
        return;
    }
    let inner: usize = shape[1..].iter().product();
    let out_inner: usize = dst_shape[1..].iter().product();
    let (slab, deeper) = scratch.split_first_mut().expect("one scratch slab per axis");
    slab.resize(inner, 0.0);
    for (o, out_slab) in out.chunks_mut(out_inner).enumerate() {
        combine_slabs(src, &stencils[0], o, slab);
        reduce(
            slab.as_slice(),
            (&shape[1..], &dst_shape[1..]),
            &stencils[1..],
            magnitude,
            out_slab,
            deeper,
        );
    }
}

/// Gaussian on one tile.
pub(crate) fn gaussian<T: Sample>(src: &[T], geometry: &StepGeometry) -> Vec<T> {
    let shape = &geometry.src_shape;
    let dst_shape = &geometry.dst_shape;
    let ndim = shape.len();
    let mut dst = vec![T::default(); dst_shape.iter().product()];
    if dst.is_empty() {
        return dst;
    }
    let inner: usize = shape[1..].iter().product();
    let out_inner: usize = dst_shape[1..].iter().product();
    let magnitude = Magnitude {
        tile: src,
        found: OnceLock::new(),
    };
    // Each output slab of the outermost axis is independent: run them in parallel.
    let slab_task = |scratch: &mut Vec<Vec<f64>>, o: usize, out_slab: &mut [T]| {
        let (slab, deeper) = scratch.split_first_mut().expect("scratch per axis");
        slab.resize(inner, 0.0);
        combine_slabs(src, &geometry.stencils[0], o, slab);
        reduce(
            slab.as_slice(),
            (&shape[1..], &dst_shape[1..]),
            &geometry.stencils[1..],
            &magnitude,
            out_slab,
            deeper,
        );
    };
    let new_scratch = || vec![Vec::new(); ndim];
    if dst.len() >= PARALLEL_MIN_OUTPUTS {
        dst.par_chunks_mut(out_inner)
            .enumerate()
            .for_each_init(new_scratch, |scratch, (o, out_slab)| slab_task(scratch, o, out_slab));
    } else {
        let mut scratch = new_scratch();
        for (o, out_slab) in dst.chunks_mut(out_inner).enumerate() {
            slab_task(&mut scratch, o, out_slab);
        }
    }
    dst
}
