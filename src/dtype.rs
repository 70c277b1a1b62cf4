//! Element types a pyramid can hold (SPEC §5) and their numeric rules (SPEC §2).
//!
//! Integer outputs are rounded to nearest with ties to even and clamped to the type's
//! range; integer means are computed exactly from integer sums (no float accumulation).
//! Float outputs are not rounded, and NaN propagates.

mod window_sum;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use window_sum::WindowSum;

/// The data type of an array's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// `uint8`
    #[serde(rename = "uint8")]
    U8,
    /// `uint16`
    #[serde(rename = "uint16")]
    U16,
    /// `uint32`
    #[serde(rename = "uint32")]
    U32,
    /// `uint64`
    #[serde(rename = "uint64")]
    U64,
    /// `int8`
    #[serde(rename = "int8")]
    I8,
    /// `int16`
    #[serde(rename = "int16")]
    I16,
    /// `int32`
    #[serde(rename = "int32")]
    I32,
    /// `int64`
    #[serde(rename = "int64")]
    I64,
    /// `float32`
    #[serde(rename = "float32")]
    F32,
    /// `float64`
    #[serde(rename = "float64")]
    F64,
}

impl DType {
    /// Every supported type, in a stable order.
    pub const ALL: [DType; 10] = [
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F32,
        DType::F64,
    ];

    /// Size of one element in bytes.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// The Zarr v3 / numpy-style name, e.g. `uint16`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    /// Parses a Zarr v3 / numpy name such as `uint16`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The little-endian Zarr v2 `dtype` string, e.g. `<u2`.
    #[must_use]
    pub fn zarr_v2_name(self) -> &'static str {
        match self {
            DType::U8 => "|u1",
            DType::U16 => "<u2",
            DType::U32 => "<u4",
            DType::U64 => "<u8",
            DType::I8 => "|i1",
            DType::I16 => "<i2",
            DType::I32 => "<i4",
            DType::I64 => "<i8",
            DType::F32 => "<f4",
            DType::F64 => "<f8",
        }
    }

    /// Bytes of an array of this type with `shape`; `None` if that overflows 64 bits.
    #[must_use]
    pub fn bytes_of(self, shape: &[u64]) -> Option<u64> {
        shape.iter().try_fold(self.size() as u64, |n, &d| n.checked_mul(d))
    }

    /// True for `float32` and `float64`.
    #[must_use]
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rounds `sum / count` to the nearest integer, ties to even (exact integer arithmetic).
#[must_use]
pub fn div_round_half_even(sum: i128, count: i128) -> i128 {
    debug_assert!(count > 0);
    let (quotient, remainder) = if count.count_ones() == 1 {
        // Windows of factor 2 hold 1, 2, 4, 8 … voxels: shifts instead of divisions.
        (sum >> count.trailing_zeros(), sum & (count - 1))
    } else {
        (sum.div_euclid(count), sum.rem_euclid(count))
    };
    let twice_remainder = 2 * remainder;
    if twice_remainder > count || (twice_remainder == count && quotient & 1 == 1) {
        quotient + 1
    } else {
        quotient
    }
}

/// Same as [`div_round_half_even`] for sums that fit in `i64` (every type up to 32 bits).
#[must_use]
pub fn div_round_half_even_i64(sum: i64, count: i64) -> i64 {
    debug_assert!(count > 0);
    let (quotient, remainder) = if count.count_ones() == 1 {
        (sum >> count.trailing_zeros(), sum & (count - 1))
    } else {
        (sum.div_euclid(count), sum.rem_euclid(count))
    };
    let twice_remainder = 2 * remainder;
    if twice_remainder > count || (twice_remainder == count && quotient & 1 == 1) {
        quotient + 1
    } else {
        quotient
    }
}

/// 2⁵²: from here on every `f64` is an integer.
const INTEGRAL_FROM: f64 = 4_503_599_627_370_496.0;

/// `value` rounded to the nearest integer, ties to even: the same as
/// [`f64::round_ties_even`], in plain additions that inline and vectorise (on the baseline
/// x86-64 target, without SSE4.1, `round_ties_even` and `floor` are library calls, which
/// cost a gaussian step an eighth of its time). Adding and subtracting 2⁵² leaves no
/// fraction bits, and the addition rounds to nearest even.
#[inline(always)]
#[must_use]
pub fn round_half_even(value: f64) -> f64 {
    if value.abs() < INTEGRAL_FROM {
        let shift = INTEGRAL_FROM.copysign(value);
        // `copysign`: −0.3 rounds to −0.0, as `round_ties_even` gives, not to +0.0.
        ((value + shift) - shift).copysign(value)
    } else {
        value
    }
}

/// 1.5 · 2⁵²: an integer `n` with `|n| < 2⁵¹` added to it gives an `f64` whose low mantissa
/// bits are `n` in two's complement.
const TWOS_COMPLEMENT_SHIFT: f64 = 6_755_399_441_055_744.0;

/// The two's complement bits of `value`, an integer with `|value| < 2⁵¹`, in the low bits of
/// the result (cast to a narrower integer type to keep them): an addition and a bit move,
/// which vectorise, where `value as i64` is a scalar conversion per value.
#[inline(always)]
#[must_use]
pub fn integral_bits(value: f64) -> u64 {
    (value + TWOS_COMPLEMENT_SHIFT).to_bits()
}

/// The largest integer not above `value` (as [`f64::floor`], inlined: see
/// [`round_half_even`]).
#[inline(always)]
#[must_use]
pub fn floor(value: f64) -> f64 {
    let rounded = round_half_even(value);
    if rounded > value { rounded - 1.0 } else { rounded }
}

/// How close a filtered value must be to a half-integer to count as that exact tie, in
/// units in the last place of the largest magnitude it was computed from.
pub const TIE_ULPS: f64 = 64.0;

/// `value`, moved onto the half-integer it is within [`TIE_ULPS`] ulps of, if any; the ulps
/// are those of `magnitude` (the largest absolute input `value` was computed from), since
/// the rounding error of a weighted sum scales with its terms, not with its result: two
/// inputs of ±700 averaging to exactly −1.5 give −1.5 ± 1e-13.
#[must_use]
pub fn snap_half(value: f64, magnitude: f64) -> f64 {
    if near_half(value, magnitude) {
        floor(value) + 0.5
    } else {
        value
    }
}

/// Whether `value` is within float error of a half-integer, the test of [`snap_half`]
/// (branch-free, so a loop over a row of values vectorises).
#[inline(always)]
#[must_use]
pub fn near_half(value: f64, magnitude: f64) -> bool {
    let half = floor(value) + 0.5;
    let scale = value.abs().max(magnitude.abs()).max(1.0);
    (value - half).abs() <= TIE_ULPS * f64::EPSILON * scale
}

/// An element type the kernels compute on.
///
/// `Acc` is the exact accumulator of a window sum: `i64` for integers up to 32 bits, `i128`
/// for 64-bit integers, `f64` for floats. `NarrowAcc` is a faster one that is exact for
/// windows of at most `NARROW_WINDOW` voxels (`i32` for 8- and 16-bit integers; `Acc`
/// itself for the other types).
pub trait Sample: bytemuck::Pod + Copy + Send + Sync + PartialEq + PartialOrd + fmt::Debug + Default + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// The largest magnitude a value can have, the widest error scale a tie is judged at
    /// ([`Sample::from_filtered`]); 0 for floats, which are never snapped to ties.
    const MAX_MAGNITUDE: f64;
    /// Exact accumulator for window sums.
    type Acc: WindowSum<Self>;
    /// Accumulator for window sums of at most [`Sample::NARROW_WINDOW`] voxels.
    type NarrowAcc: WindowSum<Self>;
    /// The most voxels a window summed in [`Sample::NarrowAcc`] may have.
    const NARROW_WINDOW: u64;

    /// Converts to `f64` (exact for every type but 64-bit integers beyond 2^53).
    fn to_f64(self) -> f64;
    /// Converts a filtered value back: integers round half to even and clamp, floats cast.
    fn from_f64(value: f64) -> Self;

    /// As [`Sample::from_f64`] for a value computed in floating point from inputs of at most
    /// `magnitude` whose exact value may be a half-integer: within [`TIE_ULPS`] units in the
    /// last place (of `magnitude`) of one, it is taken as that tie and rounded to even. (A
    /// gaussian over an axis no longer than its factor is the plain mean, and symmetric data
    /// give exact ties too, which summation order would otherwise decide.)
    fn from_filtered(value: f64, magnitude: f64) -> Self {
        Self::from_f64(snap_half(value, magnitude))
    }

    /// The smaller of two values, for `min` (SPEC §2). Floats: NaN propagates, and −0.0 is
    /// below +0.0, so a window's minimum never depends on the order it is visited in.
    #[inline(always)]
    fn lesser(self, other: Self) -> Self {
        if other < self { other } else { self }
    }

    /// The larger of two values, for `max`; as [`Sample::lesser`] for NaN and zeros.
    #[inline(always)]
    fn greater(self, other: Self) -> Self {
        if other > self { other } else { self }
    }
}

/// [`Sample::lesser`] and [`Sample::greater`] of a float type: NaN first, then the IEEE
/// total order (which puts −0.0 below +0.0).
macro_rules! impl_float_extrema {
    () => {
        #[inline(always)]
        fn lesser(self, other: Self) -> Self {
            if self.is_nan() || (!other.is_nan() && self.total_cmp(&other).is_le()) {
                self
            } else {
                other
            }
        }
        #[inline(always)]
        fn greater(self, other: Self) -> Self {
            if self.is_nan() || (!other.is_nan() && self.total_cmp(&other).is_ge()) {
                self
            } else {
                other
            }
        }
    };
}

macro_rules! impl_sample_int {
    ($t:ty, $dtype:expr, i64, $narrow:ty, $window:expr) => {
        impl Sample for $t {
            const DTYPE: DType = $dtype;
            #[allow(clippy::cast_precision_loss)]
            const MAX_MAGNITUDE: f64 = if (<$t>::MAX as f64) > -(<$t>::MIN as f64) {
                <$t>::MAX as f64
            } else {
                -(<$t>::MIN as f64)
            };
            type Acc = i64;
            type NarrowAcc = $narrow;
            const NARROW_WINDOW: u64 = $window;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
            #[inline(always)]
            fn from_f64(value: f64) -> Self {
                // `round_half_even(value) as $t`, which saturates at the type's bounds (the
                // clamp SPEC §2 asks for) and maps NaN to 0, in operations that vectorise:
                // `as` from `f64` compiles to a scalar conversion per value.
                #[allow(clippy::cast_lossless, clippy::cast_precision_loss)]
                let (lowest, highest) = (<$t>::MIN as f64, <$t>::MAX as f64);
                let rounded = round_half_even(value);
                let clamped = if rounded.is_nan() {
                    0.0
                } else {
                    rounded.max(lowest).min(highest)
                };
                #[allow(clippy::cast_possible_truncation)]
                let value = integral_bits(clamped) as $t;
                value
            }
        }
    };
    ($t:ty, $dtype:expr, i128) => {
        impl Sample for $t {
            const DTYPE: DType = $dtype;
            #[allow(clippy::cast_precision_loss)]
            const MAX_MAGNITUDE: f64 = if (<$t>::MAX as f64) > -(<$t>::MIN as f64) {
                <$t>::MAX as f64
            } else {
                -(<$t>::MIN as f64)
            };
            type Acc = i128;
            type NarrowAcc = i128;
            const NARROW_WINDOW: u64 = u64::MAX;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                #[allow(clippy::cast_precision_loss)]
                let value = self as f64;
                value
            }
            #[inline(always)]
            fn from_f64(value: f64) -> Self {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let value = round_half_even(value) as $t;
                value
            }
        }
    };
}

// Narrow windows: the largest magnitude times the window stays within i32 (255 · 2²³,
// 65535 · 2¹⁵, 128 · 2²³, 32768 · 2¹⁵).
impl_sample_int!(u8, DType::U8, i64, i32, 1 << 23);
impl_sample_int!(u16, DType::U16, i64, i32, 1 << 15);
impl_sample_int!(u32, DType::U32, i64, i64, u64::MAX);
impl_sample_int!(i8, DType::I8, i64, i32, 1 << 23);
impl_sample_int!(i16, DType::I16, i64, i32, 1 << 15);
impl_sample_int!(i32, DType::I32, i64, i64, u64::MAX);
impl_sample_int!(u64, DType::U64, i128);
impl_sample_int!(i64, DType::I64, i128);

impl Sample for f32 {
    const DTYPE: DType = DType::F32;
    const MAX_MAGNITUDE: f64 = 0.0;
    impl_float_extrema!();
    #[inline(always)]
    fn from_filtered(value: f64, _magnitude: f64) -> Self {
        Self::from_f64(value)
    }
    type Acc = f64;
    type NarrowAcc = f64;
    const NARROW_WINDOW: u64 = u64::MAX;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        #[allow(clippy::cast_possible_truncation)]
        let value = value as f32;
        value
    }
}

impl Sample for f64 {
    const DTYPE: DType = DType::F64;
    const MAX_MAGNITUDE: f64 = 0.0;
    impl_float_extrema!();
    #[inline(always)]
    fn from_filtered(value: f64, _magnitude: f64) -> Self {
        value
    }
    type Acc = f64;
    type NarrowAcc = f64;
    const NARROW_WINDOW: u64 = u64::MAX;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value
    }
}

/// Calls `$body` with the type alias `$T` bound to the Rust type of `$dtype`.
///
/// ```ignore
/// dispatch_dtype!(dtype, T => kernel::<T>(...))
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::U16 => {
                type $T = u16;
                $body
            }
            $crate::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::DType::U64 => {
                type $T = u64;
                $body
            }
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_magnitudes_are_the_widest_values() {
        assert_eq!(<u8 as Sample>::MAX_MAGNITUDE, 255.0);
        assert_eq!(<i16 as Sample>::MAX_MAGNITUDE, 32768.0);
        assert_eq!(<u64 as Sample>::MAX_MAGNITUDE, u64::MAX as f64);
        assert_eq!(<f32 as Sample>::MAX_MAGNITUDE, 0.0);
    }

    #[test]
    fn half_even_rounding_of_exact_means() {
        assert_eq!(div_round_half_even_i64(5, 2), 2); // 2.5 -> 2
        assert_eq!(div_round_half_even_i64(7, 2), 4); // 3.5 -> 4
        assert_eq!(div_round_half_even_i64(-5, 2), -2); // -2.5 -> -2
        assert_eq!(div_round_half_even_i64(-7, 2), -4); // -3.5 -> -4
        assert_eq!(div_round_half_even_i64(10, 4), 2); // 2.5 -> 2
        assert_eq!(div_round_half_even_i64(11, 4), 3); // 2.75 -> 3
        assert_eq!(div_round_half_even_i64(9, 4), 2); // 2.25 -> 2
        assert_eq!(div_round_half_even(-9, 4), -2); // -2.25 -> -2
        assert_eq!(div_round_half_even(-11, 4), -3);
    }

    #[test]
    fn float_to_integer_rounds_half_even_and_clamps() {
        fn as_cast<T: Sample>(v: f64, cast: fn(f64) -> T) {
            assert_eq!(T::from_f64(v), cast(round_half_even(v)), "{v}");
        }
        let values = [
            0.0,
            -0.0,
            0.4,
            0.5,
            1.5,
            -0.5,
            -1.5,
            -2.5,
            127.5,
            128.0,
            -128.5,
            -129.0,
            255.5,
            256.0,
            32767.5,
            -32768.5,
            65535.4,
            65535.5,
            65536.0,
            2147483647.5,
            -2147483648.5,
            4294967295.5,
            4294967296.0,
            1e300,
            -1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1e15 + 0.5,
        ];
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        for v in values {
            as_cast::<u8>(v, |r| r as u8);
            as_cast::<i8>(v, |r| r as i8);
            as_cast::<u16>(v, |r| r as u16);
            as_cast::<i16>(v, |r| r as i16);
            as_cast::<u32>(v, |r| r as u32);
            as_cast::<i32>(v, |r| r as i32);
        }
        assert_eq!(u8::from_f64(2.5), 2);
        assert_eq!(u8::from_f64(3.5), 4);
        assert_eq!(u8::from_f64(300.0), 255);
        assert_eq!(u8::from_f64(-3.0), 0);
        assert_eq!(i16::from_f64(-2.5), -2);
        assert_eq!(WindowSum::<u64>::mean(i128::from(u64::MAX) * 2, 2), u64::MAX);
        assert_eq!(WindowSum::<i64>::mean(i128::from(i64::MIN) * 3, 3), i64::MIN);
    }

    #[test]
    fn inlined_rounding_equals_the_library_functions() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            INTEGRAL_FROM - 0.5,
            -(INTEGRAL_FROM - 0.5),
            INTEGRAL_FROM,
            INTEGRAL_FROM * 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            #[allow(clippy::cast_precision_loss)]
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            values.extend([(unit - 0.5) * 1e5, (unit - 0.5) * 8.0, -((unit * 1e4).round() + 0.5)]);
        }
        for v in values {
            assert_eq!(round_half_even(v).to_bits(), v.round_ties_even().to_bits(), "{v}");
            assert_eq!(floor(v).to_bits(), v.floor().to_bits(), "{v}");
        }
        assert!(round_half_even(f64::NAN).is_nan() && floor(f64::NAN).is_nan());
    }

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
    }
}
