//! Window sums for the mean (SPEC §2): an accumulator type per element type, and the
//! rounded mean from a sum.
//!
//! Every element type has an exact accumulator ([`Sample::Acc`](super::Sample::Acc):
//! `i64` for integers up to 32 bits, `i128` for 64-bit integers, `f64` for floats). The
//! 8- and 16-bit integers also have a narrow one ([`Sample::NarrowAcc`](super::Sample::NarrowAcc),
//! `i32`), exact for windows of up to [`Sample::NARROW_WINDOW`](super::Sample::NARROW_WINDOW)
//! voxels: the mean's column sums then run on twice as many SIMD lanes and move half the
//! bytes. Both give the same means, so which one a kernel uses never shows in its output.

use std::ops::AddAssign;

use super::{div_round_half_even, div_round_half_even_i64};

/// An accumulator of window sums of `T`.
pub trait WindowSum<T>: Copy + Default + AddAssign + Send + Sync {
    /// One value, widened.
    fn of(value: T) -> Self;
    /// The mean of a window from its sum and voxel count, rounded per SPEC §2.
    fn mean(self, count: u64) -> T;
    /// [`WindowSum::mean`] over a row of sums that share one `count`.
    fn means(sums: &[Self], count: u64, out: &mut [T]) {
        for (o, &s) in out.iter_mut().zip(sums) {
            *o = s.mean(count);
        }
    }
}

/// Integer sums in `$acc` (`i32` or `i64`) for the integer types `$t`.
macro_rules! impl_integer_sum {
    ($acc:ty: $($t:ty),+) => {$(
        impl WindowSum<$t> for $acc {
            #[inline(always)]
            fn of(value: $t) -> Self {
                <$acc>::from(value)
            }
            #[inline(always)]
            fn mean(self, count: u64) -> $t {
                #[allow(clippy::cast_possible_wrap)]
                let mean = div_round_half_even_i64(i64::from(self), count as i64);
                #[allow(clippy::cast_possible_truncation)]
                let value = mean as $t;
                value
            }
            #[inline(always)]
            fn means(sums: &[Self], count: u64, out: &mut [$t]) {
                if count > 1 && count.is_power_of_two() {
                    // Branch-free shifts, so the loop vectorises.
                    let shift = count.trailing_zeros();
                    #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
                    let (mask, half) = ((count - 1) as $acc, (count / 2) as $acc);
                    for (o, &s) in out.iter_mut().zip(sums) {
                        let quotient = s >> shift;
                        let remainder = s & mask;
                        let up = (remainder > half) | ((remainder == half) & (quotient & 1 == 1));
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let value = (quotient + <$acc>::from(up)) as $t;
                        *o = value;
                    }
                } else {
                    for (o, &s) in out.iter_mut().zip(sums) {
                        *o = s.mean(count);
                    }
                }
            }
        }
    )+};
}

impl_integer_sum!(i64: u8, u16, u32, i8, i16, i32);
impl_integer_sum!(i32: u8, u16, i8, i16);

/// 64-bit integers: `i128` sums.
macro_rules! impl_wide_sum {
    ($($t:ty),+) => {$(
        impl WindowSum<$t> for i128 {
            #[inline(always)]
            fn of(value: $t) -> Self {
                i128::from(value)
            }
            #[inline(always)]
            fn mean(self, count: u64) -> $t {
                let mean = div_round_half_even(self, i128::from(count));
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let value = mean as $t;
                value
            }
        }
    )+};
}

impl_wide_sum!(u64, i64);

impl WindowSum<f32> for f64 {
    #[inline(always)]
    fn of(value: f32) -> Self {
        f64::from(value)
    }
    #[inline(always)]
    fn mean(self, count: u64) -> f32 {
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let value = (self / count as f64) as f32;
        value
    }
}

impl WindowSum<f64> for f64 {
    #[inline(always)]
    fn of(value: f64) -> Self {
        value
    }
    #[inline(always)]
    fn mean(self, count: u64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let value = self / count as f64;
        value
    }
}

#[cfg(test)]
mod tests {
    use super::WindowSum;
    use crate::dtype::Sample;

    /// The means of `sums` of `count` voxels through both accumulators of `T`.
    fn both_means<T: Sample>(sums: &[i32], count: u64) -> (Vec<T>, Vec<T>)
    where
        i32: WindowSum<T>,
        i64: WindowSum<T>,
    {
        let mut narrow = vec![T::default(); sums.len()];
        let mut wide = vec![T::default(); sums.len()];
        <i32 as WindowSum<T>>::means(sums, count, &mut narrow);
        let wide_sums: Vec<i64> = sums.iter().map(|&s| i64::from(s)).collect();
        <i64 as WindowSum<T>>::means(&wide_sums, count, &mut wide);
        (narrow, wide)
    }

    #[test]
    fn narrow_and_exact_sums_give_the_same_means() {
        // Every remainder of small windows, and the largest sums a narrow window can hold.
        let largest = i32::try_from(u64::from(u16::MAX) * <u16 as Sample>::NARROW_WINDOW).unwrap();
        for count in [2u64, 3, 4, 6, 8, 27, 64] {
            let mut sums: Vec<i32> = (0..4 * i32::try_from(count).unwrap()).collect();
            sums.push(largest - i32::try_from(count).unwrap() / 2);
            let (narrow, wide) = both_means::<u16>(&sums, count);
            assert_eq!(narrow, wide, "u16, windows of {count}");
            let signed: Vec<i32> = (-4 * i32::try_from(count).unwrap()..4 * i32::try_from(count).unwrap()).collect();
            let (narrow, wide) = both_means::<i16>(&signed, count);
            assert_eq!(narrow, wide, "i16, windows of {count}");
        }
        // 0.5 → 0, 1.5 → 2, 2.5 → 2: ties to even through the shifts.
        assert_eq!(both_means::<u8>(&[1, 3, 5], 2).0, vec![0, 2, 2]);
        assert_eq!(both_means::<i8>(&[-1, -3, -5], 2).0, vec![0, -2, -2]);
    }

    #[test]
    fn narrow_windows_cannot_overflow_the_narrow_sum() {
        for (magnitude, window) in [
            (u64::from(u8::MAX), <u8 as Sample>::NARROW_WINDOW),
            (u64::from(u16::MAX), <u16 as Sample>::NARROW_WINDOW),
            (128, <i8 as Sample>::NARROW_WINDOW),
            (32768, <i16 as Sample>::NARROW_WINDOW),
        ] {
            assert!(magnitude * window <= i32::MAX as u64, "{magnitude} × {window}");
        }
    }
}
