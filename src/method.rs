//! The downsampling methods and their exact definitions (SPEC §2).
//!
//! One step reduces level `k` (shape `n` per axis) to level `k + 1` (shape `ceil(n / f)`)
//! with per-axis integer factors `f`. The window of output index `i` on an axis is
//! `[i·f, min((i+1)·f, n))`; the last window may be partial and only in-bounds voxels count.
//!
//! - **nearest**: the first voxel of the window.
//! - **mean**: the sum of the window divided by its voxel count; integers are summed exactly
//!   and rounded to nearest, ties to even.
//! - **gaussian**: a normalised Gaussian blur with `σ = f/3` truncated at radius
//!   `floor(4σ + 0.5)`, reflect border (`x[-1] = x[0]`), along every axis with `f > 1`;
//!   then the mean of the blurred values over the window, with no rounding in between.
//! - **mode** (labels, integer types only): the most frequent value of the window, ties to
//!   the smallest value.
//! - **min**, **max**: the smallest / largest value of the window; NaN propagates.
//!
//! Mode, min and max return values of their window, so they are exact on every type.
//!
//! Every method is described by per-axis [`AxisStencil`]s (mode, min and max by the same
//! windows as mean). For gaussian the blur and the
//! window mean are folded into one weight list per output index (reflection included), so
//! a backend never materialises the full-resolution blurred array: that is both exact
//! (up to float rounding) and about three times less arithmetic.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dtype::DType;

/// A downsampling method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The first voxel of each window (`x[::f]`).
    Nearest,
    /// The mean over the in-bounds voxels of each window.
    #[default]
    Mean,
    /// Reflect-border Gaussian blur (σ = f/3), then the window mean.
    Gaussian,
    /// The most frequent value of each window, ties to the smallest (label images).
    Mode,
    /// The smallest value of each window.
    Min,
    /// The largest value of each window (keeps thin bright structures visible).
    Max,
}

impl Method {
    /// Every method, in a stable order.
    pub const ALL: [Method; 6] = [
        Method::Nearest,
        Method::Mean,
        Method::Gaussian,
        Method::Mode,
        Method::Min,
        Method::Max,
    ];

    /// The name used on the command line and in the metadata.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Method::Nearest => "nearest",
            Method::Mean => "mean",
            Method::Gaussian => "gaussian",
            Method::Mode => "mode",
            Method::Min => "min",
            Method::Max => "max",
        }
    }

    /// True if the method is defined on `dtype`: mode counts equal values, so it takes
    /// integer types only (label images); every other method takes every type.
    #[must_use]
    pub fn accepts(self, dtype: DType) -> bool {
        !(self == Method::Mode && dtype.is_float())
    }

    /// True if every output value is a value of its window (nearest, mode, min, max):
    /// nothing is computed, so nothing is rounded.
    #[must_use]
    pub fn selects_input_values(self) -> bool {
        matches!(self, Method::Nearest | Method::Mode | Method::Min | Method::Max)
    }

    /// True if the method represents each output voxel by the centre of its window, so
    /// level translations shift by half a window (SPEC §4); false for nearest, which
    /// keeps the window's first voxel.
    #[must_use]
    pub fn samples_window_centre(self) -> bool {
        !matches!(self, Method::Nearest)
    }

    /// Border halo (in input voxels) this method reads beyond the windows on an axis
    /// with factor `factor`.
    #[must_use]
    pub fn halo(self, factor: u32) -> u64 {
        match self {
            Method::Gaussian if factor > 1 => u64::from(gaussian_radius(factor)),
            _ => 0,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown method name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown method `{0}` (expected nearest, mean, gaussian, mode, min or max)")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownMethod(s.to_string()))
    }
}

/// The Gaussian σ for a factor: `f / 3` (2/3 for f = 2).
#[must_use]
pub fn gaussian_sigma(factor: u32) -> f64 {
    f64::from(factor) / 3.0
}

/// The kernel radius for a factor: `floor(4σ + 0.5)` (3 for f = 2), as scipy's
/// `gaussian_filter(..., truncate=4.0)`.
#[must_use]
pub fn gaussian_radius(factor: u32) -> u32 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let radius = (4.0 * gaussian_sigma(factor) + 0.5).floor() as u32;
    radius
}

/// The normalised kernel `g[-r..=r]` for a factor, as scipy computes it.
#[must_use]
pub fn gaussian_kernel(factor: u32) -> Vec<f64> {
    let sigma = gaussian_sigma(factor);
    let radius = i64::from(gaussian_radius(factor));
    #[allow(clippy::cast_precision_loss)]
    let raw: Vec<f64> = (-radius..=radius)
        .map(|k| (-0.5 / (sigma * sigma) * (k * k) as f64).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / total).collect()
}

/// Maps any index onto `[0, n)` by half-sample symmetric reflection (scipy `reflect`):
/// `x[-1] = x[0]`, `x[-2] = x[1]`, `x[n] = x[n-1]`, repeating with period `2n`.
#[must_use]
pub fn reflect_index(index: i64, n: u64) -> u64 {
    let n = i64::try_from(n).expect("axis length fits i64");
    let period = 2 * n;
    let m = index.rem_euclid(period);
    let folded = if m >= n { period - 1 - m } else { m };
    u64::try_from(folded).expect("reflected index is non-negative")
}

/// The window of output index `out` on an axis of length `n` with factor `f`:
/// `[out·f, min((out+1)·f, n))`.
#[must_use]
pub fn window(out: u64, factor: u32, n: u64) -> (u64, u64) {
    let f = u64::from(factor);
    (out * f, ((out + 1) * f).min(n))
}

/// How one axis of one step maps input voxels (local to a source tile) to output voxels
/// (local to a destination tile).
///
/// Indices are relative to the source tile's start on this axis; every index lies in the
/// source tile, which the engine guarantees by reading [`source_range`].
#[derive(Debug, Clone, PartialEq)]
pub enum AxisStencil {
    /// Factor 1: output `i` is input `offset + i`.
    Identity {
        /// Local input index of output 0.
        offset: usize,
    },
    /// Nearest: output `i` is input `first[i]`.
    Pick {
        /// Local input index per output.
        first: Vec<usize>,
    },
    /// Mean, mode, min, max: output `i` reduces inputs `[start[i], start[i] + count[i])`.
    Window {
        /// Local first input per output.
        start: Vec<usize>,
        /// Number of inputs per output (the last window may be partial).
        count: Vec<usize>,
    },
    /// Gaussian: output `i` is `Σ weight[t] · input[index[t]]` for `t` in
    /// `offsets[i]..offsets[i+1]` (blur, reflection and window mean folded together).
    Taps {
        /// CSR row offsets, one more than the number of outputs.
        offsets: Vec<usize>,
        /// Local input index per tap.
        index: Vec<usize>,
        /// Weight per tap; the weights of one output sum to 1.
        weight: Vec<f64>,
    },
}

/// The outputs of a taps stencil away from the axis' edges, which share one tap list:
/// output `o` of `outputs` is `Σ_k weights[k] · input[first + stride · (o − outputs.start) + k]`.
/// Both backends compute them without the per-tap index lists, in the same tap order: the
/// CPU tap by tap over the whole run (contiguous, vectorised passes instead of one short
/// indirect sum per output), the GPU from one weight list in its parameter block.
#[derive(Debug, PartialEq)]
pub(crate) struct Interior {
    /// The outputs of the run.
    pub(crate) outputs: Range<usize>,
    /// The first input of its first output.
    pub(crate) first: usize,
    /// Inputs between the first inputs of consecutive outputs (the factor).
    pub(crate) stride: usize,
    /// The taps' weights, the same for every output of the run.
    pub(crate) weights: Vec<f64>,
}

impl Interior {
    /// The longest run around the middle output whose taps are the middle's, shifted by
    /// the same stride per output (weights equal bit for bit); `None` for other stencils
    /// or runs of fewer than two outputs.
    pub(crate) fn of(stencil: &AxisStencil) -> Option<Self> {
        let AxisStencil::Taps { offsets, index, weight } = stencil else {
            return None;
        };
        let outputs = offsets.len() - 1;
        if outputs < 2 {
            return None;
        }
        let middle = outputs / 2;
        let taps = |o: usize| offsets[o]..offsets[o + 1];
        let weights = &weight[taps(middle)];
        let first_of = |o: usize| index[offsets[o]];
        let stride = first_of(middle).checked_sub(first_of(middle - 1))?;
        // Output `o` reads `first_of(middle) + stride · (o − middle) + k` for tap `k`.
        let shares = |o: usize| {
            let taps = taps(o);
            let expected = (first_of(middle) + stride * o).checked_sub(stride * middle);
            taps.len() == weights.len()
                && expected.is_some_and(|first| index[taps.clone()].iter().enumerate().all(|(k, &i)| i == first + k))
                && weight[taps]
                    .iter()
                    .zip(weights)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
        };
        if !shares(middle) {
            return None;
        }
        let lo = (0..middle).rev().take_while(|&o| shares(o)).last().unwrap_or(middle);
        let hi = (middle + 1..outputs)
            .take_while(|&o| shares(o))
            .last()
            .unwrap_or(middle)
            + 1;
        (hi - lo >= 2).then(|| Interior {
            outputs: lo..hi,
            first: first_of(lo),
            stride,
            weights: weights.to_vec(),
        })
    }
}

/// The input range `[start, end)` on one axis needed to compute outputs `[out_start, out_end)`
/// of a step with this method and factor on an axis of length `n` (windows plus halo,
/// clipped to the axis; reflection never reaches outside the clipped range).
#[must_use]
pub fn source_range(method: Method, factor: u32, n: u64, out_start: u64, out_end: u64) -> (u64, u64) {
    let f = u64::from(factor);
    let halo = method.halo(factor);
    let first = out_start * f;
    let last_end = (out_end * f).min(n);
    match method {
        // Nearest only ever reads the first voxel of each window.
        Method::Nearest if factor > 1 => (first, ((out_end - 1) * f + 1).min(n)),
        _ => (first.saturating_sub(halo), (last_end + halo).min(n)),
    }
}

impl AxisStencil {
    /// Builds the stencil of one axis.
    ///
    /// `n` is the axis length of the level being reduced, `src` the source tile's range on
    /// this axis and `dst` the outputs wanted. The source must cover [`source_range`].
    ///
    /// # Panics
    /// If the source range does not cover what the outputs need (an engine bug).
    #[must_use]
    pub fn new(method: Method, factor: u32, n: u64, src: (u64, u64), dst: (u64, u64)) -> Self {
        let needed = source_range(method, factor, n, dst.0, dst.1);
        assert!(
            dst.0 >= dst.1 || (src.0 <= needed.0 && src.1 >= needed.1),
            "source range {src:?} does not cover {needed:?} needed for outputs {dst:?}"
        );
        let local = |i: u64| usize::try_from(i - src.0).expect("local index fits usize");
        if factor == 1 {
            return AxisStencil::Identity { offset: local(dst.0) };
        }
        match method {
            Method::Nearest => AxisStencil::Pick {
                first: (dst.0..dst.1).map(|o| local(window(o, factor, n).0)).collect(),
            },
            Method::Mean | Method::Mode | Method::Min | Method::Max => {
                let (start, count) = (dst.0..dst.1)
                    .map(|o| {
                        let (lo, hi) = window(o, factor, n);
                        (local(lo), usize::try_from(hi - lo).expect("window fits usize"))
                    })
                    .unzip();
                AxisStencil::Window { start, count }
            }
            Method::Gaussian => {
                let kernel = gaussian_kernel(factor);
                let radius = i64::from(gaussian_radius(factor));
                let mut offsets = vec![0];
                let mut index = Vec::new();
                let mut weight = Vec::new();
                // Weights of one output, keyed by global input index, kept sorted.
                let mut folded: Vec<(u64, f64)> = Vec::new();
                for o in dst.0..dst.1 {
                    let (lo, hi) = window(o, factor, n);
                    #[allow(clippy::cast_precision_loss)]
                    let inv_count = 1.0 / (hi - lo) as f64;
                    folded.clear();
                    for i in lo..hi {
                        let i = i64::try_from(i).expect("index fits i64");
                        for (k, g) in (-radius..=radius).zip(&kernel) {
                            let j = reflect_index(i + k, n);
                            match folded.binary_search_by_key(&j, |&(jj, _)| jj) {
                                Ok(pos) => folded[pos].1 += g * inv_count,
                                Err(pos) => folded.insert(pos, (j, g * inv_count)),
                            }
                        }
                    }
                    for &(j, w) in &folded {
                        index.push(local(j));
                        weight.push(w);
                    }
                    offsets.push(index.len());
                }
                AxisStencil::Taps { offsets, index, weight }
            }
        }
    }

    /// Number of outputs on this axis (for [`AxisStencil::Identity`], not known here).
    #[must_use]
    pub fn outputs(&self) -> Option<usize> {
        match self {
            AxisStencil::Identity { .. } => None,
            AxisStencil::Pick { first } => Some(first.len()),
            AxisStencil::Window { start, .. } => Some(start.len()),
            AxisStencil::Taps { offsets, .. } => Some(offsets.len() - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_parameters_match_the_spec() {
        assert!((gaussian_sigma(2) - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(gaussian_radius(2), 3);
        assert_eq!(gaussian_radius(3), 4);
        assert_eq!(gaussian_radius(4), 5);
        let k = gaussian_kernel(2);
        assert_eq!(k.len(), 7);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((k[0] - k[6]).abs() < 1e-18 && k[3] > k[2]);
    }

    #[test]
    fn reflect_is_half_sample_symmetric() {
        let n = 5;
        let got: Vec<u64> = (-4..9).map(|i| reflect_index(i, n)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 0, 1, 2, 3, 4, 4, 3, 2, 1]);
        assert_eq!(reflect_index(-3, 1), 0);
        assert_eq!(reflect_index(-3, 2), 1); // x1 x0 | x0 x1 | x1 x0: index -3 is x1
    }

    #[test]
    fn gaussian_taps_sum_to_one_and_stay_in_bounds() {
        for n in [1u64, 2, 3, 7, 20] {
            let outputs = n.div_ceil(2);
            let stencil = AxisStencil::new(Method::Gaussian, 2, n, (0, n), (0, outputs));
            let AxisStencil::Taps { offsets, index, weight } = stencil else {
                panic!("gaussian gives taps")
            };
            for o in 0..outputs as usize {
                let s: f64 = weight[offsets[o]..offsets[o + 1]].iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "n={n} o={o} sum={s}");
            }
            assert!(index.iter().all(|&i| (i as u64) < n));
        }
    }

    #[test]
    fn source_range_covers_windows_and_halo() {
        assert_eq!(source_range(Method::Mean, 2, 9, 1, 5), (2, 9));
        assert_eq!(source_range(Method::Gaussian, 2, 9, 1, 3), (0, 9));
        assert_eq!(source_range(Method::Gaussian, 2, 100, 10, 20), (17, 43));
        assert_eq!(source_range(Method::Nearest, 2, 9, 1, 5), (2, 9));
        assert_eq!(source_range(Method::Nearest, 3, 10, 0, 2), (0, 4));
        assert_eq!(source_range(Method::Mean, 1, 10, 3, 5), (3, 5));
    }
}
