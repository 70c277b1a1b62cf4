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
//! same way along the next axis. The slab is made row by row as the next axis's outputs
//! need its rows, in a ring of a few rows ([`RowRing`]), and an identity axis (factor 1)
//! passes the input's own slab on unconverted, so scratch memory is a few rows per axis,
//! not a copy of the tile. The summation order is the same as applying whole-array
//! passes.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::{PARALLEL_MIN_OUTPUTS, StepGeometry};
use crate::dtype::{Sample, near_half, snap_half};
use crate::method::{AxisStencil, Interior};

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
    match stencil {
        AxisStencil::Identity { offset } => {
            for (d, v) in out.iter_mut().zip(&src[(offset + o) * inner..][..inner]) {
                *d = v.to_f64();
            }
        }
        AxisStencil::Taps { .. } => combine(stencil_taps(stencil, o), |i| &src[i * inner..][..inner], out),
        AxisStencil::Pick { .. } | AxisStencil::Window { .. } => {
            unreachable!("gaussian builds taps or identity stencils only")
        }
    }
}

/// The inputs and weights of output `o` of a taps stencil.
#[inline(always)]
fn stencil_taps(stencil: &AxisStencil, o: usize) -> (&[usize], &[f64]) {
    let AxisStencil::Taps { offsets, index, weight } = stencil else {
        unreachable!("only taps stencils have taps")
    };
    let taps = offsets[o]..offsets[o + 1];
    (&index[taps.clone()], &weight[taps])
}

/// `out = Σ_t weights[t] · input(inputs[t])`, each `input(i)` a slice of `out.len()`
/// values; with AVX2 where the CPU has it ([`avx2`]).
fn combine<'a, S: Sample + 'a>(taps: (&[usize], &[f64]), input: impl Fn(usize) -> &'a [S], out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the CPU has AVX2, the one feature the function enables.
        #[allow(unsafe_code)]
        unsafe {
            avx2::combine(taps, input, out);
        }
        return;
    }
    combine_inline(taps, input, out);
}

#[inline(always)]
fn combine_inline<'a, S: Sample + 'a>(
    (inputs, weights): (&[usize], &[f64]),
    input: impl Fn(usize) -> &'a [S],
    out: &mut [f64],
) {
    if inputs.is_empty() {
        out.fill(0.0);
        return;
    }
    if let (Ok(inputs), Ok(weights)) = (
        <&[usize; FUSED_TAPS]>::try_from(inputs),
        <&[f64; FUSED_TAPS]>::try_from(weights),
    ) {
        fused_sum(out, &inputs.map(&input), weights, true);
        return;
    }
    let inner = out.len();
    for start in (0..inner).step_by(BLOCK) {
        let end = (start + BLOCK).min(inner);
        let block = &mut out[start..end];
        // The first tap sets the block (`+ 0.0`: the sum of a zeroed block with it, to the
        // sign of a zero), the others add to it.
        let w = weights[0];
        for (d, v) in block.iter_mut().zip(&input(inputs[0])[start..end]) {
            *d = w * v.to_f64() + 0.0;
        }
        for (&i, &w) in inputs.iter().zip(weights).skip(1) {
            for (d, v) in block.iter_mut().zip(&input(i)[start..end]) {
                *d += w * v.to_f64();
            }
        }
    }
}

/// The tap count of factor 2 (radius 3 around a window of 2), summed by [`fused_sum`].
const FUSED_TAPS: usize = 8;

/// `out[j] = w₀·x₀[j] + w₁·x₁[j] + … + w₇·x₇[j]`, added left to right (with `+ 0.0` right
/// after the first term when `plus_zero`, as [`combine_slabs`] starts its sums): the sum
/// that one pass per tap over `out` makes, each output's terms in the same order, but kept
/// in a register instead of loaded and stored once per tap.
#[inline(always)]
fn fused_sum<S: Sample>(out: &mut [f64], inputs: &[&[S]; FUSED_TAPS], weights: &[f64; FUSED_TAPS], plus_zero: bool) {
    let n = out.len();
    let inputs = inputs.map(|x| &x[..n]);
    for (j, d) in out.iter_mut().enumerate() {
        let mut sum = weights[0] * inputs[0][j].to_f64();
        if plus_zero {
            sum += 0.0;
        }
        for k in 1..FUSED_TAPS {
            sum += weights[k] * inputs[k][j].to_f64();
        }
        *d = sum;
    }
}

/// Output `o` of the last axis of one row.
#[inline(always)]
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

impl Interior {
    /// Sets `values` (this run's outputs) from `row`. The row's span is first split by
    /// phase (`phases[p][j] = row[first + stride · j + p]`, in `f64`), so tap `k` of output
    /// `o` is `phases[k % stride][o + k / stride]`: each tap is then one contiguous pass.
    #[inline(always)]
    fn apply<S: Sample>(&self, row: &[S], values: &mut [f64], phases: &mut Vec<f64>) {
        let (taps, stride, outputs) = (self.weights.len(), self.stride, values.len());
        let len = outputs + (taps - 1) / stride;
        phases.clear();
        phases.resize(stride * len, 0.0);
        let span = &row[self.first..];
        if stride == 2 && span.len() >= 2 * len {
            // Factor 2, the common case: even and odd inputs, in a loop that vectorises.
            let (even, odd) = phases.split_at_mut(len);
            for ((e, o), pair) in even.iter_mut().zip(odd).zip(span[..2 * len].chunks_exact(2)) {
                *e = pair[0].to_f64();
                *o = pair[1].to_f64();
            }
        } else {
            for (j, group) in span.chunks(stride).take(len).enumerate() {
                for (p, x) in group.iter().enumerate() {
                    phases[p * len + j] = x.to_f64();
                }
            }
        }
        let tap = |k: usize| {
            let phase = &phases[(k % stride) * len..][..len];
            &phase[k / stride..k / stride + outputs]
        };
        // The first tap sets each value, the others add to it in tap order: the same sum
        // as `row_output` (whose `sum` starts from −0.0, which changes no addend).
        if let Ok(weights) = <&[f64; FUSED_TAPS]>::try_from(self.weights.as_slice()) {
            let inputs: [&[f64]; FUSED_TAPS] = std::array::from_fn(tap);
            fused_sum(values, &inputs, weights, false);
            return;
        }
        let (w, rest) = self.weights.split_first().expect("a run has taps");
        for (v, x) in values.iter_mut().zip(tap(0)) {
            *v = w * x;
        }
        for (k, w) in rest.iter().enumerate() {
            for (v, x) in values.iter_mut().zip(tap(k + 1)) {
                *v += w * x;
            }
        }
    }
}

/// The last axis of a step: its stencil, and the run of outputs sharing one tap list.
struct LastAxis<'a> {
    stencil: &'a AxisStencil,
    interior: Option<Interior>,
}

/// Reduces one row along the last axis into `out`, through `values` (scratch). With AVX2
/// where the CPU has it ([`avx2`]).
fn reduce_row<S: Sample, T: Sample>(
    row: &[S],
    last: &LastAxis<'_>,
    magnitude: &Magnitude<'_, T>,
    out: &mut [T],
    (values, phases): (&mut Vec<f64>, &mut Vec<f64>),
) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the CPU has AVX2, the one feature the function enables.
        #[allow(unsafe_code)]
        unsafe {
            avx2::reduce_row(row, last, magnitude, out, (values, phases));
        }
        return;
    }
    reduce_row_inline(row, last, magnitude, out, (values, phases));
}

#[inline(always)]
fn reduce_row_inline<S: Sample, T: Sample>(
    row: &[S],
    last: &LastAxis<'_>,
    magnitude: &Magnitude<'_, T>,
    out: &mut [T],
    (values, phases): (&mut Vec<f64>, &mut Vec<f64>),
) {
    values.clear();
    values.resize(out.len(), 0.0);
    let interior = last.interior.as_ref().map_or(0..0, |run| run.outputs.clone());
    for o in (0..interior.start).chain(interior.end..out.len()) {
        values[o] = row_output(row, last.stencil, o);
    }
    if let Some(run) = &last.interior {
        run.apply(row, &mut values[interior], phases);
    }
    round_row(values, magnitude, out);
}

/// `out[o]`, the element for `values[o]`: one branch-free pass where no value of the row
/// is near a half-integer even at the widest error scale (the usual case), else each value
/// through [`Magnitude::round`].
#[inline(always)]
fn round_row<T: Sample>(values: &[f64], magnitude: &Magnitude<'_, T>, out: &mut [T]) {
    let near_tie = T::MAX_MAGNITUDE != 0.0
        && values
            .iter()
            .fold(false, |near, &v| near | near_half(v, T::MAX_MAGNITUDE));
    if near_tie {
        for (y, &v) in out.iter_mut().zip(values) {
            *y = magnitude.round(v);
        }
    } else {
        // No value snaps, at any scale up to the widest: `from_filtered` is `from_f64`.
        for (y, &v) in out.iter_mut().zip(values) {
            *y = T::from_filtered(v, 0.0);
        }
    }
}

/// The kernels above compiled for AVX2 (four `f64` lanes instead of SSE2's two), with the
/// same results ([`super::has_avx2`]).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{LastAxis, Magnitude, Sample};

    #[target_feature(enable = "avx2")]
    pub(super) fn combine<'a, S: Sample + 'a>(
        taps: (&[usize], &[f64]),
        input: impl Fn(usize) -> &'a [S],
        out: &mut [f64],
    ) {
        super::combine_inline(taps, input, out);
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn reduce_row<S: Sample, T: Sample>(
        row: &[S],
        last: &LastAxis<'_>,
        magnitude: &Magnitude<'_, T>,
        out: &mut [T],
        scratch: (&mut Vec<f64>, &mut Vec<f64>),
    ) {
        super::reduce_row_inline(row, last, magnitude, out, scratch);
    }
}

/// Scratch memory of one depth of [`reduce`]: a slab, or a ring of rows of one
/// ([`RowRing`]); at the last axis, a row's values before rounding and its input split by
/// phase ([`Interior::apply`]).
#[derive(Default)]
struct Depth {
    buffer: Vec<f64>,
    /// Per row slot of a ring, the row it holds.
    held: Vec<Option<usize>>,
}

/// The rows of one output slab of the outermost axis (its sub-slabs along the next axis),
/// each computed when an output of the next axis first needs it and kept in one of a few
/// slots while the next outputs still read it. The slab is never written whole, so its
/// rows are combined again while they are still in cache: with factor 2 a slab row is
/// read by 4 outputs, and a whole slab of a large tile does not fit in L2.
struct RowRing<'d> {
    rows: &'d mut Vec<f64>,
    held: &'d mut Vec<Option<usize>>,
    len: usize,
}

impl<'d> RowRing<'d> {
    /// An empty ring of `slots` rows of `len` values.
    fn new(depth: &'d mut Depth, slots: usize, len: usize) -> Self {
        depth.buffer.resize(slots * len, 0.0);
        depth.held.clear();
        depth.held.resize(slots, None);
        Self {
            rows: &mut depth.buffer,
            held: &mut depth.held,
            len,
        }
    }

    /// Computes row `row` with `fill` unless its slot holds it already.
    fn ensure(&mut self, row: usize, fill: impl FnOnce(&mut [f64])) {
        let slot = row % self.held.len();
        if self.held[slot] != Some(row) {
            fill(&mut self.rows[slot * self.len..][..self.len]);
            self.held[slot] = Some(row);
        }
    }

    /// Row `row`, which [`RowRing::ensure`] made since any row sharing its slot.
    fn row(&self, row: usize) -> &[f64] {
        let slot = row % self.held.len();
        debug_assert_eq!(self.held[slot], Some(row), "row {row} is in its slot");
        &self.rows[slot * self.len..][..self.len]
    }
}

/// Reduces `src` (C order, `shape`) along every axis into `out` (C order, `dst_shape`),
/// one output slab of the outermost axis at a time ([`reduce_slab`]); `scratch` holds one
/// [`Depth`] per axis, plus one.
fn reduce<S: Sample, T: Sample>(
    src: &[S],
    shapes: (&[usize], &[usize]),
    stencils: &[AxisStencil],
    last: (&LastAxis<'_>, &Magnitude<'_, T>),
    out: &mut [T],
    scratch: &mut [Depth],
) {
    if let [values, phases] = scratch {
        debug_assert_eq!(shapes.0.len(), 1, "the last axis");
        reduce_row(src, last.0, last.1, out, (&mut values.buffer, &mut phases.buffer));
        return;
    }
    let out_inner: usize = shapes.1[1..].iter().product();
    for (o, out_slab) in out.chunks_mut(out_inner).enumerate() {
        reduce_slab(src, shapes, stencils, last, (o, out_slab), scratch);
    }
}

/// Output slab `o` of the outermost axis of `src` (at least two axes), reduced along the
/// others into `out_slab`. The axes after the first are reduced by [`reduce`], from:
/// - an identity axis: the source slab itself, read as stored;
/// - with two axes left: the one combined row;
/// - else: the slab's rows, combined by the next axis's outputs as they need them through
///   a [`RowRing`]. Every value is the same sum, in the same order, as combining the whole
///   slab first would make.
fn reduce_slab<S: Sample, T: Sample>(
    src: &[S],
    (shape, dst_shape): (&[usize], &[usize]),
    stencils: &[AxisStencil],
    last: (&LastAxis<'_>, &Magnitude<'_, T>),
    (o, out_slab): (usize, &mut [T]),
    scratch: &mut [Depth],
) {
    let inner: usize = shape[1..].iter().product();
    let (depth, deeper) = scratch.split_first_mut().expect("one scratch depth per axis");
    let rest = (&shape[1..], &dst_shape[1..]);
    if let AxisStencil::Identity { offset } = &stencils[0] {
        reduce(
            &src[(offset + o) * inner..][..inner],
            rest,
            &stencils[1..],
            last,
            out_slab,
            deeper,
        );
        return;
    }
    if shape.len() == 2 {
        depth.buffer.resize(inner, 0.0);
        combine_slabs(src, &stencils[0], o, &mut depth.buffer);
        reduce(&depth.buffer, rest, &stencils[1..], last, out_slab, deeper);
        return;
    }
    let (rows, row_len) = (shape[1], shape[2..].iter().product::<usize>());
    let next = &stencils[1];
    let outputs = dst_shape[1];
    // Enough slots for the rows of any one output of the next axis.
    let span = |p: usize| match next {
        AxisStencil::Identity { .. } => 1,
        _ => {
            let inputs = stencil_taps(next, p).0;
            inputs
                .iter()
                .max()
                .map_or(1, |hi| hi - inputs.iter().min().unwrap_or(hi) + 1)
        }
    };
    let slots = (0..outputs).map(span).max().unwrap_or(1);
    let (row_depth, deepest) = deeper.split_first_mut().expect("one scratch depth per axis");
    let mut ring = RowRing::new(depth, slots, row_len);
    let taps = stencil_taps(&stencils[0], o);
    let slab_row = |row: usize, values: &mut [f64]| {
        combine(taps, |i| &src[(i * rows + row) * row_len..][..row_len], values);
    };
    let rest = (&shape[2..], &dst_shape[2..]);
    let out_inner: usize = dst_shape[2..].iter().product();
    for (p, out_row) in out_slab.chunks_mut(out_inner).enumerate() {
        match next {
            AxisStencil::Identity { offset } => {
                ring.ensure(offset + p, |values| slab_row(offset + p, values));
                reduce(ring.row(offset + p), rest, &stencils[2..], last, out_row, deepest);
            }
            _ => {
                let next_taps = stencil_taps(next, p);
                for &row in next_taps.0 {
                    ring.ensure(row, |values| slab_row(row, values));
                }
                row_depth.buffer.resize(row_len, 0.0);
                combine(next_taps, |row| ring.row(row), &mut row_depth.buffer);
                reduce(&row_depth.buffer, rest, &stencils[2..], last, out_row, deepest);
            }
        }
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
    let magnitude = Magnitude {
        tile: src,
        found: OnceLock::new(),
    };
    let stencil = &geometry.stencils[ndim - 1];
    let last = LastAxis {
        stencil,
        interior: Interior::of(stencil),
    };
    let last = (&last, &magnitude);
    let shapes = (shape.as_slice(), dst_shape.as_slice());
    let new_scratch = || (0..=ndim).map(|_| Depth::default()).collect::<Vec<_>>();
    if ndim == 1 {
        reduce(src, shapes, &geometry.stencils, last, &mut dst, &mut new_scratch());
        return dst;
    }
    // Each output slab of the outermost axis is independent: run them in parallel.
    let out_inner: usize = dst_shape[1..].iter().product();
    if dst.len() >= PARALLEL_MIN_OUTPUTS {
        dst.par_chunks_mut(out_inner)
            .enumerate()
            .for_each_init(new_scratch, |scratch, slab| {
                reduce_slab(src, shapes, &geometry.stencils, last, slab, scratch);
            });
    } else {
        reduce(src, shapes, &geometry.stencils, last, &mut dst, &mut new_scratch());
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::{Method, source_range};

    /// The stencil of outputs `dst` of an axis of length `n`, read from the source range
    /// those outputs need.
    fn stencil(factor: u32, n: u64, dst: (u64, u64)) -> (AxisStencil, (u64, u64)) {
        let src = source_range(Method::Gaussian, factor, n, dst.0, dst.1);
        (AxisStencil::new(Method::Gaussian, factor, n, src, dst), src)
    }

    /// A row of `len` values with fractions, signs and a negative zero, as `f64` inputs of
    /// the last axis are after the other axes.
    fn row(len: usize) -> Vec<f64> {
        (0..len)
            .map(|i| match i % 7 {
                0 => -0.0,
                k => (i as f64 * 37.25 - 500.0) / k as f64,
            })
            .collect()
    }

    #[test]
    fn interior_covers_the_outputs_away_from_reflection() {
        // Factor 2 reads 3 inputs beyond each window: output o reads [2o − 3, 2o + 5),
        // reflected only for o < 2 and past 2o + 5 > n.
        let (whole, _) = stencil(2, 100, (0, 50));
        let run = Interior::of(&whole).expect("a long axis has an interior");
        assert_eq!(run.outputs, 2..48);
        assert_eq!((run.first, run.stride, run.weights.len()), (1, 2, 8));
        // A tile in the middle of the axis, read with its halo: every output is interior.
        let (middle, src) = stencil(3, 1000, (100, 140));
        let run = Interior::of(&middle).expect("interior");
        assert_eq!(run.outputs, 0..40);
        assert_eq!(run.first as u64, 100 * 3 - 4 - src.0);
        // Too short for two outputs sharing taps.
        assert_eq!(Interior::of(&stencil(2, 3, (0, 2)).0), None);
        assert_eq!(Interior::of(&AxisStencil::Identity { offset: 0 }), None);
    }

    #[test]
    fn interior_sums_equal_the_per_output_sums_bit_for_bit() {
        let mut runs = 0;
        for factor in [2, 3, 4] {
            for (n, dst) in [
                (64_u64, (0, 32 / u64::from(factor))),
                (301, (0, 101)),
                (1000, (37, 90)),
                (9, (0, 3)),
            ] {
                let dst = (dst.0, dst.1.min(n.div_ceil(u64::from(factor))));
                let (stencil, src) = stencil(factor, n, dst);
                let input = row(usize::try_from(src.1 - src.0).unwrap());
                let outputs = usize::try_from(dst.1 - dst.0).unwrap();
                let Some(run) = Interior::of(&stencil) else {
                    continue;
                };
                let mut values = vec![0.0; run.outputs.len()];
                run.apply(&input, &mut values, &mut Vec::new());
                for (o, v) in run.outputs.clone().zip(&values) {
                    let expected = row_output(&input, &stencil, o);
                    assert_eq!(v.to_bits(), expected.to_bits(), "factor {factor} n {n} output {o}");
                }
                assert!(run.outputs.end <= outputs);
                runs += 1;
            }
        }
        // Every case but the 9-voxel axis, whose outputs all reflect but one at most.
        assert_eq!(runs, 9);
    }

    #[test]
    fn rows_near_a_tie_round_as_each_value_alone() {
        let (stencil, src) = stencil(2, 40, (0, 20));
        let last = LastAxis {
            interior: Interior::of(&stencil),
            stencil: &stencil,
        };
        let len = usize::try_from(src.1 - src.0).unwrap();
        // A constant row of 2.5 (exact ties: even 2) with one value 1e-13 off a tie, and
        // rows far from any tie.
        let mut tied = vec![2.5; len];
        tied[7] = 3.5 + 1e-13;
        for input in [tied, row(len)] {
            let tile: Vec<u16> = vec![65535];
            let magnitude = Magnitude {
                tile: &tile,
                found: OnceLock::new(),
            };
            let mut out = vec![0u16; 20];
            reduce_row(&input, &last, &magnitude, &mut out, (&mut Vec::new(), &mut Vec::new()));
            let expected: Vec<u16> = (0..20)
                .map(|o| magnitude.round(row_output(&input, &stencil, o)))
                .collect();
            assert_eq!(out, expected);
        }
    }

    /// The AVX2 build of the kernels gives the baseline build's bits. Wherever the CPU has
    /// AVX2 every other test runs the AVX2 build, so this is where the baseline one is
    /// checked against it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_baseline_builds_agree_bit_for_bit() {
        if !crate::backend::cpu::has_avx2() {
            return;
        }
        for factor in [2, 3] {
            let (stencil, src) = stencil(factor, 301, (0, 101));
            let rows = usize::try_from(src.1 - src.0).unwrap();
            let inner = 37;
            let input: Vec<f64> = row(rows * inner);
            let as_u16: Vec<u16> = input.iter().map(|v| v.abs() as u16).collect();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let (mut baseline, mut wide) = (vec![0.0; inner], vec![0.0; inner]);
            let slab = |i: usize| &as_u16[i * inner..][..inner];
            for o in 0..101 {
                combine_inline(stencil_taps(&stencil, o), slab, &mut baseline);
                // SAFETY: the CPU has AVX2 (checked above).
                #[allow(unsafe_code)]
                unsafe {
                    avx2::combine(stencil_taps(&stencil, o), slab, &mut wide);
                }
                assert_eq!(bits(&baseline), bits(&wide), "factor {factor} slab {o}");
            }
            let last = LastAxis {
                interior: Interior::of(&stencil),
                stencil: &stencil,
            };
            let row = &input[..rows];
            let tile = [0.0f32];
            let magnitude = Magnitude {
                tile: &tile[..],
                found: OnceLock::new(),
            };
            let (mut baseline, mut wide) = (vec![0.0f32; 101], vec![0.0f32; 101]);
            reduce_row_inline(
                row,
                &last,
                &magnitude,
                &mut baseline,
                (&mut Vec::new(), &mut Vec::new()),
            );
            // SAFETY: the CPU has AVX2 (checked above).
            #[allow(unsafe_code)]
            unsafe {
                avx2::reduce_row(row, &last, &magnitude, &mut wide, (&mut Vec::new(), &mut Vec::new()));
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&baseline), bits(&wide), "factor {factor} row");
            assert!(baseline.iter().any(|&v| v != 0.0), "the row is not all zeros");
        }
    }
}
