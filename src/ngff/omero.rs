//! A display (`omero`) block for images that have none, so that viewers open an output with
//! a sensible contrast and colour instead of guessing. Pure: the caller measures the data.
//!
//! Per channel: `label` `channel_N`, `color` (white for one channel, else [`CHANNEL_COLORS`]
//! in turn), `active`, and a `window` whose `min`/`max` are the data range and whose
//! `start`/`end` are the [`LOW_PERCENTILE`] and [`HIGH_PERCENTILE`] of the values (so a
//! few hot pixels do not darken the image). `rdefs.defaultZ` is the middle plane.

use serde_json::{Value, json};

use crate::dtype::DType;

/// Colours of the channels of a multi-channel image, in order, repeating after the last:
/// green, magenta, cyan, red, blue, yellow (distinguishable in overlays).
pub const CHANNEL_COLORS: [&str; 6] = ["00FF00", "FF00FF", "00FFFF", "FF0000", "0000FF", "FFFF00"];

/// Colour of the channel of a single-channel image.
pub const SINGLE_CHANNEL_COLOR: &str = "FFFFFF";

/// The share of values below `window.start` (0.1%).
pub const LOW_PERCENTILE: f64 = 0.001;

/// The share of values at or below `window.end` (99.9%).
pub const HIGH_PERCENTILE: f64 = 0.999;

/// The display window of one channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelWindow {
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// Shown as black.
    pub start: f64,
    /// Shown at full colour.
    pub end: f64,
}

impl ChannelWindow {
    /// The window of a channel's values: range and robust percentiles of the finite ones
    /// (NaN and infinities are not numbers JSON can hold). No finite value gives 0 to 1.
    /// Reorders `values` (a selection per percentile, linear time: the top level of a large
    /// volume holds millions of values, and a full sort of them was a visible serial step
    /// at the end of every build).
    #[must_use]
    pub fn of_values(values: &mut Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return Self::range(0.0, 1.0);
        }
        let mut at = |share: f64| {
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let index = (share * (values.len() - 1) as f64).round() as usize;
            *values.select_nth_unstable_by(index, f64::total_cmp).1
        };
        let (start, end) = (at(LOW_PERCENTILE), at(HIGH_PERCENTILE));
        // The order of a sort (`total_cmp`: -0.0 before 0.0), so the window is the same.
        let min = values.iter().copied().min_by(f64::total_cmp).unwrap_or(0.0);
        let max = values.iter().copied().max_by(f64::total_cmp).unwrap_or(1.0);
        Self { min, max, start, end }
    }

    /// The window of a channel of 8- or 16-bit integers given as counts: `counts[i]` values
    /// equal `lowest + i`. The same window as [`ChannelWindow::of_values`] on those values,
    /// in one pass over the bins instead of one over every value.
    #[must_use]
    pub fn of_counts(counts: &[u64], lowest: f64) -> Self {
        let total: u64 = counts.iter().sum();
        let (Some(first), Some(last)) = (counts.iter().position(|&c| c > 0), counts.iter().rposition(|&c| c > 0))
        else {
            return Self::range(0.0, 1.0);
        };
        #[allow(clippy::cast_precision_loss)]
        let value = |bin: usize| lowest + bin as f64;
        // The value at position `index` of the sorted values.
        let at = |share: f64| {
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let index = (share * (total - 1) as f64).round() as u64;
            let mut below = 0u64;
            for (bin, &count) in counts.iter().enumerate() {
                below += count;
                if below > index {
                    return value(bin);
                }
            }
            value(last)
        };
        Self {
            min: value(first),
            max: value(last),
            start: at(LOW_PERCENTILE),
            end: at(HIGH_PERCENTILE),
        }
    }

    /// The whole range of a dtype (0 to 1 for floats): the window when the data were not
    /// measured.
    #[must_use]
    pub fn of_dtype(dtype: DType) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let (min, max) = match dtype {
            DType::U8 => (0.0, f64::from(u8::MAX)),
            DType::U16 => (0.0, f64::from(u16::MAX)),
            DType::U32 => (0.0, f64::from(u32::MAX)),
            DType::U64 => (0.0, u64::MAX as f64),
            DType::I8 => (f64::from(i8::MIN), f64::from(i8::MAX)),
            DType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
            DType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
            DType::I64 => (i64::MIN as f64, i64::MAX as f64),
            DType::F32 | DType::F64 => (0.0, 1.0),
        };
        Self::range(min, max)
    }

    fn range(min: f64, max: f64) -> Self {
        Self {
            min,
            max,
            start: min,
            end: max,
        }
    }
}

/// The `omero` block for channels with these windows; `z_planes` is the level-0 length of
/// the `z` axis, if the image has one.
#[must_use]
pub fn default_omero(windows: &[ChannelWindow], z_planes: Option<u64>) -> Value {
    let channels: Vec<Value> = windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let color = if windows.len() == 1 {
                SINGLE_CHANNEL_COLOR
            } else {
                CHANNEL_COLORS[i % CHANNEL_COLORS.len()]
            };
            json!({
                "label": format!("channel_{i}"),
                "color": color,
                "active": true,
                "window": {"min": w.min, "max": w.max, "start": w.start, "end": w.end},
            })
        })
        .collect();
    let mut rdefs = json!({
        "defaultT": 0,
        "model": if windows.len() == 1 { "greyscale" } else { "color" },
    });
    if let Some(planes) = z_planes {
        rdefs["defaultZ"] = json!(planes / 2);
    }
    json!({"channels": channels, "rdefs": rdefs})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ngff::omero_problem;

    #[test]
    fn percentiles_ignore_a_few_outliers() {
        let mut values: Vec<f64> = (0..10_000).map(|i| f64::from(i % 100)).collect();
        values[17] = 60_000.0;
        values.push(f64::NAN);
        let w = ChannelWindow::of_values(&mut values);
        assert_eq!((w.min, w.max), (0.0, 60_000.0));
        assert_eq!((w.start, w.end), (0.0, 99.0), "one hot pixel does not set the window");
    }

    #[test]
    fn the_selected_window_is_the_sorted_one() {
        let mut rng = crate::synthetic::SplitMix64::new(11);
        for len in [1, 2, 3, 999, 10_007] {
            let values: Vec<f64> = (0..len).map(|_| (rng.next_f64() * 2000.0).round() - 1000.0).collect();
            let mut sorted = values.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            let at = |share: f64| sorted[(share * (len - 1) as f64).round() as usize];
            let w = ChannelWindow::of_values(&mut values.clone());
            assert_eq!(
                (w.min, w.max, w.start, w.end),
                (sorted[0], sorted[len - 1], at(LOW_PERCENTILE), at(HIGH_PERCENTILE)),
                "{len} values"
            );
        }
    }

    #[test]
    fn counted_windows_are_the_sorted_ones() {
        let mut rng = crate::synthetic::SplitMix64::new(5);
        for len in [1usize, 2, 999, 20_001] {
            let values: Vec<i64> = (0..len).map(|_| (rng.next_f64() * 700.0) as i64 - 300).collect();
            let mut counts = vec![0u64; 1000];
            for &v in &values {
                counts[(v + 300) as usize] += 1;
            }
            let mut floats: Vec<f64> = values.iter().map(|&v| v as f64).collect();
            assert_eq!(
                ChannelWindow::of_counts(&counts, -300.0),
                ChannelWindow::of_values(&mut floats),
                "{len} values"
            );
        }
        assert_eq!(ChannelWindow::of_counts(&[0, 0], 0.0), ChannelWindow::range(0.0, 1.0));
    }

    #[test]
    fn no_finite_value_gives_a_unit_window() {
        let w = ChannelWindow::of_values(&mut vec![f64::NAN, f64::INFINITY]);
        assert_eq!((w.start, w.end), (0.0, 1.0));
    }

    #[test]
    fn the_block_is_valid_and_names_every_channel() {
        let windows = [ChannelWindow::of_dtype(DType::U16), ChannelWindow::of_dtype(DType::U16)];
        let omero = default_omero(&windows, Some(101));
        assert_eq!(omero_problem(&omero), None);
        assert_eq!(omero["channels"][1]["label"], "channel_1");
        assert_eq!(omero["channels"][0]["color"], CHANNEL_COLORS[0]);
        assert_eq!(omero["channels"][1]["color"], CHANNEL_COLORS[1]);
        assert_eq!(omero["rdefs"]["defaultZ"], 50);
        let single = default_omero(&windows[..1], None);
        assert_eq!(single["channels"][0]["color"], SINGLE_CHANNEL_COLOR);
        assert!(single["rdefs"].get("defaultZ").is_none());
    }
}
