//! Nearest (SPEC §2): `y[i] = x[i·f]`, the first voxel of each window, as numpy `x[::f]`.
//! Output values are input values, so every dtype is exact.

use super::{StepGeometry, fill_rows, first_input};
use crate::method::AxisStencil;

/// Nearest on one tile.
pub(crate) fn nearest<T: Copy + Default + Send + Sync>(src: &[T], geometry: &StepGeometry) -> Vec<T> {
    let ndim = geometry.src_shape.len();
    let src_strides = &geometry.src_strides;
    let last = &geometry.stencils[ndim - 1];
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
            match last {
                AxisStencil::Identity { offset } => {
                    row.copy_from_slice(&src[base + offset..base + offset + row.len()]);
                }
                stencil => {
                    for (x, out) in row.iter_mut().enumerate() {
                        *out = src[base + first_input(stencil, x)];
                    }
                }
            }
        },
    );
    dst
}
