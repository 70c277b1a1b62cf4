//! Mode (SPEC §2, label images): the most frequent value of each window, ties to the
//! smallest value; partial edge windows use their in-bounds voxels. Integer types only
//! ([`crate::Method::accepts`]); values are compared as they are, so 64-bit labels above
//! 2^53 are exact.
//!
//! The common windows (2×2, 2×2×2: up to [`PAIRWISE_MAX`] voxels) count equal pairs, with
//! no sorting and no allocation; larger windows are sorted and scanned for the longest run.

use std::cmp::Ordering;

use super::{StepGeometry, fill_rows, window_of, window_rows};
use crate::dtype::Sample;

/// Windows up to this many voxels are decided by pairwise counts.
const PAIRWISE_MAX: usize = 16;

/// Mode on one tile.
pub(crate) fn mode<T: Sample>(src: &[T], geometry: &StepGeometry) -> Vec<T> {
    let ndim = geometry.src_shape.len();
    let last = &geometry.stencils[ndim - 1];
    let mut dst = vec![T::default(); geometry.dst_shape.iter().product()];
    fill_rows(
        &mut dst,
        &geometry.dst_shape,
        || (Vec::<usize>::new(), Vec::<T>::new()),
        |(rows, values), outer, out_row| {
            window_rows(geometry, outer, rows);
            for (x, out) in out_row.iter_mut().enumerate() {
                let (first, count) = window_of(last, x);
                values.clear();
                for &r in rows.iter() {
                    values.extend_from_slice(&src[r + first..r + first + count]);
                }
                *out = most_frequent(values);
            }
        },
    );
    dst
}

/// The most frequent value of a non-empty window, ties to the smallest.
pub(crate) fn most_frequent<T: Sample>(values: &mut [T]) -> T {
    if values.len() <= PAIRWISE_MAX {
        most_frequent_pairwise(values)
    } else {
        most_frequent_sorted(values)
    }
}

/// By counting, for each voxel, the voxels equal to it.
fn most_frequent_pairwise<T: Sample>(values: &[T]) -> T {
    let mut best = values[0];
    let mut best_count = 0usize;
    for &v in values {
        let count = values.iter().filter(|&&w| w == v).count();
        if count > best_count || (count == best_count && v < best) {
            best = v;
            best_count = count;
        }
    }
    best
}

/// By sorting and taking the first longest run (runs are in ascending order).
fn most_frequent_sorted<T: Sample>(values: &mut [T]) -> T {
    values.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    let mut best = values[0];
    let mut best_count = 0usize;
    let mut start = 0;
    while start < values.len() {
        let v = values[start];
        let end = start + values[start..].iter().take_while(|&&w| w == v).count();
        if end - start > best_count {
            best = v;
            best_count = end - start;
        }
        start = end;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SplitMix64;

    #[test]
    fn ties_go_to_the_smallest_value() {
        assert_eq!(most_frequent(&mut [3u8, 1, 3, 1]), 1);
        assert_eq!(most_frequent(&mut [-2i16, 5, 5, -2, 7]), -2);
        assert_eq!(most_frequent(&mut [9u32]), 9);
        let mut big: Vec<i32> = (0..40).map(|i| 40 - i).collect();
        assert_eq!(most_frequent(&mut big), 1, "all distinct: the smallest");
    }

    #[test]
    fn labels_above_2_pow_53_stay_distinct() {
        let a = (1u64 << 53) + 1;
        let b = (1u64 << 53) + 2;
        assert_eq!(most_frequent(&mut [b, a, b, a, b, 0, 0, 7]), b);
        let mut many = vec![a; 20];
        many.extend([b; 21]);
        assert_eq!(most_frequent(&mut many), b);
    }

    #[test]
    fn pairwise_counts_agree_with_sorting() {
        let mut rng = SplitMix64::new(11);
        for _ in 0..2000 {
            let len = 1 + (rng.next_u64() % PAIRWISE_MAX as u64) as usize;
            let labels = 1 + rng.next_u64() % 5;
            let values: Vec<u16> = (0..len).map(|_| (rng.next_u64() % labels) as u16).collect();
            let expected = most_frequent_sorted(&mut values.clone());
            assert_eq!(most_frequent_pairwise(&values), expected, "{values:?}");
        }
    }
}
