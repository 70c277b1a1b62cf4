//! Nearest (SPEC §2): `y[i] = x[i·f]`, the first voxel of each window, as numpy `x[::f]`.
//! Output values are input values, so every dtype is exact.

use super::{StepGeometry, fill_rows, first_input};
use crate::method::AxisStencil;

/// Nearest on one tile.
pub(crate) fn nearest<T: Copy + Default + Send + Sync>(src: &[T], geometry: &StepGeometry) -> Vec<T> {
    let ndim = geometry.src_shape.len();
    let src_strides = &geometry.src_strides;
    let last = LastAxis::of(&geometry.stencils[ndim - 1]);
    let mut dst = vec![T::default(); geometry.dst_shape.iter().product()];
    fill_rows(
        &mut dst,
        &geometry.dst_shape,
        || (),
        |(), outer, row| {
            let base: usize = outer
                .iter()
                .enumerate()
                .map(|(a, &o)| first_input(&geometry.stencils[a], o) * src_strides[a])
                .sum();
            last.pick_row(&src[base..], row);
        },
    );
    dst
}

/// How a row's outputs pick their inputs along the last axis.
enum LastAxis<'a> {
    /// Output `i` is input `first + i·step` (the stencil nearest builds: every window but
    /// a clipped last one starts `factor` after the one before).
    Strided { first: usize, step: usize },
    /// Any other list of inputs, one per output.
    Listed(&'a AxisStencil),
}

impl<'a> LastAxis<'a> {
    fn of(stencil: &'a AxisStencil) -> Self {
        match stencil {
            AxisStencil::Identity { offset } => Self::Strided {
                first: *offset,
                step: 1,
            },
            AxisStencil::Pick { first } if first.len() >= 2 => {
                let step = first[1].wrapping_sub(first[0]);
                let strided = step > 0 && first.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step);
                if strided {
                    Self::Strided { first: first[0], step }
                } else {
                    Self::Listed(stencil)
                }
            }
            AxisStencil::Pick { first } if first.len() == 1 => Self::Strided {
                first: first[0],
                step: 1,
            },
            stencil => Self::Listed(stencil),
        }
    }

    /// Fills `row` from `src`, the input row (and what follows it).
    fn pick_row<T: Copy>(&self, src: &[T], row: &mut [T]) {
        let n = row.len();
        match *self {
            Self::Strided { first, step: 1 } => row.copy_from_slice(&src[first..first + n]),
            Self::Strided { first, step: 2 } => pick_every::<T, 2>(&src[first..], row),
            Self::Strided { first, step: 3 } => pick_every::<T, 3>(&src[first..], row),
            Self::Strided { first, step: 4 } => pick_every::<T, 4>(&src[first..], row),
            Self::Strided { first, step } => {
                for (out, &value) in row.iter_mut().zip(src[first..].iter().step_by(step)) {
                    *out = value;
                }
            }
            Self::Listed(stencil) => {
                for (x, out) in row.iter_mut().enumerate() {
                    *out = src[first_input(stencil, x)];
                }
            }
        }
    }
}

/// `row[i] = src[i·F]`, with `F` known to the compiler so the loop vectorises.
fn pick_every<T: Copy, const F: usize>(src: &[T], row: &mut [T]) {
    let Some((last, head)) = row.split_last_mut() else {
        return;
    };
    // All outputs but the last have a whole window of `F` inputs in `src`; the last may
    // have only its first.
    let windows = src[..head.len() * F].chunks_exact(F);
    for (out, window) in head.iter_mut().zip(windows) {
        *out = window[0];
    }
    *last = src[head.len() * F];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_rows_equal_the_listed_picks() {
        let src: Vec<u16> = (0..200).collect();
        for step in 1..=6 {
            for first in [0usize, 1, 3] {
                for n in [1usize, 2, 7, 30] {
                    let picks: Vec<usize> = (0..n).map(|i| first + i * step).collect();
                    let listed = AxisStencil::Pick { first: picks };
                    let mut expected = vec![0u16; n];
                    LastAxis::Listed(&listed).pick_row(&src, &mut expected);
                    let strided = LastAxis::of(&listed);
                    assert!(
                        n < 2 || matches!(strided, LastAxis::Strided { step: s, .. } if s == step),
                        "step {step} n {n}"
                    );
                    let mut row = vec![0u16; n];
                    strided.pick_row(&src, &mut row);
                    assert_eq!(row, expected, "step {step} first {first} n {n}");
                }
            }
        }
    }

    #[test]
    fn uneven_picks_stay_listed() {
        let stencil = AxisStencil::Pick { first: vec![0, 2, 5] };
        assert!(matches!(LastAxis::of(&stencil), LastAxis::Listed(_)));
        let mut row = [0u8; 3];
        LastAxis::of(&stencil).pick_row(&[10, 11, 12, 13, 14, 15], &mut row);
        assert_eq!(row, [10, 12, 15]);
    }
}
