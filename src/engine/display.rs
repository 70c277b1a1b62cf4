//! What viewers need to show an output, measured on the top level, which the build has
//! just written and which is the smallest level, so the volume is not read again: the
//! `omero` block of an image whose input has none (channel windows), and the default
//! `colors` of a label image (one per label value found).

use std::sync::Arc;

use serde_json::Value;

use super::BuildError;
use crate::dtype::DType;
use crate::ngff::label::default_colors;
use crate::ngff::omero::{ChannelWindow, default_omero};
use crate::plan::{Axis, AxisKind, PyramidPlan};
use crate::store::{Sink, StoreElement, TileReader};
use crate::tile::Region;

/// The `omero` block for an output: measured on the top level when it fits a quarter of
/// the memory budget, else (a pyramid of one huge level) the dtype's whole range, said in
/// the log.
///
/// # Errors
/// [`BuildError::Store`] if the top level cannot be read back.
pub(super) fn measured_omero<T: StoreElement>(
    sink: &dyn Sink,
    plan: &PyramidPlan,
    axes: &[Axis],
    memory_bytes: u64,
) -> Result<Value, BuildError> {
    let channel_axis = axes.iter().position(|a| a.kind == AxisKind::Channel);
    let level0 = &plan.levels[0].shape;
    let channels = channel_axis.map_or(1, |c| level0[c]);
    let z_planes = axes.iter().position(|a| a.name == "z").map(|z| level0[z]);
    let top = plan.len() - 1;
    let shape = &plan.levels[top].shape;
    let budget = memory_bytes / 4;
    let Some(regions) = sample_planes(shape, channel_axis, T::DTYPE.size() as u64, budget) else {
        tracing::warn!(
            "one plane of the top level is too large to measure within --memory; the display windows span the whole {} range",
            T::DTYPE
        );
        let window = ChannelWindow::of_dtype(T::DTYPE);
        let windows = vec![window; usize::try_from(channels).unwrap_or(1)];
        return Ok(default_omero(&windows, z_planes));
    };
    let reader = TileReader::<T>::new(sink.read_level(top)?, budget, Arc::new(|_: &Region| 1));
    let mut tallies: Vec<Tally> = (0..channels).map(|_| Tally::new(T::DTYPE)).collect();
    for region in &regions {
        let data = reader.read(region)?;
        tally_channels(&data, &region.shape, channel_axis, &mut tallies);
    }
    let windows = tallies.into_iter().map(Tally::window).collect::<Vec<_>>();
    Ok(default_omero(&windows, z_planes))
}

/// The values of one channel as the display window needs them: counts per value for 8- and
/// 16-bit integers (linear in the values, a few KiB), else the values themselves.
enum Tally {
    /// `counts[i]` values equal `i - offset`.
    Counts {
        counts: Vec<u64>,
        offset: i64,
    },
    Values(Vec<f64>),
}

impl Tally {
    fn new(dtype: DType) -> Self {
        let counted = |bins: usize, offset: i64| Tally::Counts {
            counts: vec![0; bins],
            offset,
        };
        match dtype {
            DType::U8 => counted(1 << 8, 0),
            DType::I8 => counted(1 << 8, 1 << 7),
            DType::U16 => counted(1 << 16, 0),
            DType::I16 => counted(1 << 16, 1 << 15),
            _ => Tally::Values(Vec::new()),
        }
    }

    /// Counts (or keeps) `values`.
    fn add_all<T: StoreElement>(&mut self, values: &[T]) {
        match self {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Tally::Counts { counts, offset } => {
                for v in values {
                    counts[(v.to_f64() as i64 + *offset) as usize] += 1;
                }
            }
            Tally::Values(all) => all.extend(values.iter().map(|v| v.to_f64())),
        }
    }

    /// Adds the values `other` tallied (of the same dtype).
    fn merge(&mut self, other: Tally) {
        match (self, other) {
            (Tally::Counts { counts, .. }, Tally::Counts { counts: more, .. }) => {
                for (c, m) in counts.iter_mut().zip(more) {
                    *c += m;
                }
            }
            (Tally::Values(values), Tally::Values(more)) => values.extend(more),
            _ => unreachable!("tallies of one dtype are of one kind"),
        }
    }

    fn window(self) -> ChannelWindow {
        match self {
            #[allow(clippy::cast_precision_loss)]
            Tally::Counts { counts, offset } => ChannelWindow::of_counts(&counts, -offset as f64),
            Tally::Values(mut values) => ChannelWindow::of_values(&mut values),
        }
    }
}

/// The regions of `shape` the display windows are measured on, holding at most `budget`
/// bytes together: the whole array when it fits, else evenly spaced planes (every channel,
/// all of y and x, one index of each other axis); `None` when one plane does not fit.
fn sample_planes(shape: &[u64], channel_axis: Option<usize>, element: u64, budget: u64) -> Option<Vec<Region>> {
    let whole = Region::whole(shape);
    if shape.iter().product::<u64>().saturating_mul(element) <= budget {
        return Some(vec![whole]);
    }
    let ndim = shape.len();
    // The axes a plane fixes: all but the channel axis and the last two (y and x).
    let fixed: Vec<usize> = (0..ndim.saturating_sub(2))
        .filter(|&a| Some(a) != channel_axis)
        .collect();
    let planes: u64 = fixed.iter().map(|&a| shape[a]).product();
    let plane_bytes = (shape.iter().product::<u64>() / planes.max(1)).saturating_mul(element);
    if fixed.is_empty() || plane_bytes > budget {
        return None;
    }
    let count = (budget / plane_bytes).clamp(1, planes);
    let regions = (0..count)
        .map(|k| {
            // Plane k of `count`, evenly spaced over the flat index of the fixed axes.
            let mut flat = (2 * k + 1) * planes / (2 * count);
            let mut region = whole.clone();
            for &a in fixed.iter().rev() {
                region.start[a] = flat % shape[a];
                region.shape[a] = 1;
                flat /= shape[a];
            }
            region
        })
        .collect();
    tracing::info!(
        "display windows measured on {count} of the top level's {planes} planes (the whole level does not fit --memory/4)"
    );
    Some(regions)
}

/// Names and colours the input gives its channels (OME-TIFF), put on the measured
/// `omero` block's channels; a colour that is not `RRGGBB` is left as measured.
pub(super) fn label_channels(omero: &mut Value, labels: &[(Option<String>, Option<String>)]) {
    let Some(channels) = omero.get_mut("channels").and_then(Value::as_array_mut) else {
        return;
    };
    if channels.len() != labels.len() {
        return;
    }
    for (channel, (label, color)) in channels.iter_mut().zip(labels) {
        if let Some(label) = label {
            channel["label"] = Value::from(label.as_str());
        }
        if let Some(color) = color
            .as_ref()
            .filter(|c| c.len() == 6 && c.chars().all(|h| h.is_ascii_hexdigit()))
        {
            channel["color"] = Value::from(color.as_str());
        }
    }
}

/// The default `colors` of a label image: one per distinct value of the top level (label 0
/// transparent), or the background's alone when the top level does not fit a quarter of
/// the memory budget or holds too many values, said in the log.
///
/// # Errors
/// [`BuildError::Store`] if the top level cannot be read back.
pub(super) fn measured_label_colors<T: StoreElement>(
    sink: &dyn Sink,
    plan: &PyramidPlan,
    memory_bytes: u64,
) -> Result<Value, BuildError> {
    let top = plan.len() - 1;
    let shape = &plan.levels[top].shape;
    let bytes = T::DTYPE.bytes_of(shape).unwrap_or(u64::MAX);
    if bytes > memory_bytes / 4 {
        tracing::warn!(
            "the top level ({bytes} bytes) is too large to list its labels within --memory; only the background gets a colour (give --colors)"
        );
        return Ok(default_colors(&[]));
    }
    let reader = TileReader::<T>::new(sink.read_level(top)?, memory_bytes / 4, Arc::new(|_: &Region| 1));
    let mut data = reader.read(&Region::whole(shape))?;
    data.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    data.dedup();
    let values: Vec<i128> = data.iter().filter_map(|v| label_value(*v)).collect();
    if values.len() > crate::ngff::label::MAX_DEFAULT_COLORS {
        tracing::warn!(
            "the top level holds {} label values; only the background gets a default colour (give --colors)",
            values.len()
        );
    }
    Ok(default_colors(&values))
}

/// The exact value of an integer sample (`None` for a float).
fn label_value<T: StoreElement>(value: T) -> Option<i128> {
    let json = crate::store::node::fill_value_json(bytemuck::bytes_of(&value), T::DTYPE);
    json.as_i64()
        .map(i128::from)
        .or_else(|| json.as_u64().map(i128::from))
        .filter(|_| !T::DTYPE.is_float())
}

/// The values of each channel (all of them where there is no channel axis), as `f64`.
/// Adds every value of `data` (of `shape`) to the tally of its channel.
fn tally_channels<T: StoreElement>(data: &[T], shape: &[u64], channel_axis: Option<usize>, tallies: &mut [Tally]) {
    use rayon::prelude::*;
    /// The most memory the per-thread counts of a parallel tally may take together.
    const PARALLEL_COUNTS_BYTES: usize = 64 << 20;
    /// Values per thread below which one thread tallies everything.
    const MIN_SHARE: usize = 1 << 20;
    let to_usize = |n: u64| usize::try_from(n).expect("a level read into memory has usize extents");
    // Value `i` belongs to channel `(i / stride) % count`.
    let (stride, count) = channel_axis.map_or((data.len().max(1), 1), |c| {
        (
            shape[c + 1..].iter().map(|&n| to_usize(n)).product(),
            to_usize(shape[c]),
        )
    });
    let dtype = T::DTYPE;
    // Counts (8- and 16-bit integers) are tallied in contiguous shares of the data, one set
    // of counts per share, then added up; values (the other types) are kept, not counted,
    // so they are tallied on one thread, and no merge ever copies them.
    let Tally::Counts { counts, .. } = Tally::new(dtype) else {
        tally_run(tallies, data, 0, (stride, count));
        return;
    };
    let set_bytes = count * counts.len() * size_of::<u64>();
    let shares = rayon::current_num_threads()
        .min(PARALLEL_COUNTS_BYTES / set_bytes.max(1))
        .min(data.len() / MIN_SHARE)
        .max(1);
    if shares == 1 {
        tally_run(tallies, data, 0, (stride, count));
        return;
    }
    let share_len = data.len().div_ceil(shares);
    let measured: Vec<Vec<Tally>> = data
        .par_chunks(share_len)
        .enumerate()
        .map(|(k, share)| {
            let mut local: Vec<Tally> = (0..count).map(|_| Tally::new(dtype)).collect();
            tally_run(&mut local, share, k * share_len, (stride, count));
            local
        })
        .collect();
    for share in measured {
        for (tally, part) in tallies.iter_mut().zip(share) {
            tally.merge(part);
        }
    }
}

/// Adds `run`, the values from index `first` on, to `tallies`, value `i` to channel
/// `(i / stride) % count`: a stretch of one channel at a time, to the next multiple of
/// `stride`.
fn tally_run<T: StoreElement>(tallies: &mut [Tally], run: &[T], first: usize, (stride, count): (usize, usize)) {
    let mut j = 0;
    while j < run.len() {
        let i = first + j;
        let end = run.len().min(j + stride - i % stride);
        tallies[(i / stride) % count].add_all(&run[j..end]);
        j = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_too_large_is_measured_on_evenly_spaced_planes() {
        // t×c×z×y×x = 2×3×10×4×4 u16: a plane (3 channels × 4 × 4) is 96 bytes.
        let shape = [2, 3, 10, 4, 4];
        let all = sample_planes(&shape, Some(1), 2, 1 << 20).unwrap();
        assert_eq!(all, vec![Region::whole(&shape)]);
        let some = sample_planes(&shape, Some(1), 2, 96 * 4).unwrap();
        let starts: Vec<(u64, u64)> = some.iter().map(|r| (r.start[0], r.start[2])).collect();
        assert_eq!(
            starts,
            [(0, 2), (0, 7), (1, 2), (1, 7)],
            "4 of 20 planes, spread over t and z"
        );
        assert!(some.iter().all(|r| r.shape == [1, 3, 1, 4, 4]));
        assert_eq!(sample_planes(&shape, Some(1), 2, 95), None, "one plane does not fit");
        assert_eq!(
            sample_planes(&[100, 100], None, 2, 10),
            None,
            "a 2-D level has no planes to pick"
        );
    }

    #[test]
    fn values_are_tallied_by_channel() {
        let windows = |data: &[u16], shape: &[u64], axis: Option<usize>, channels: usize| {
            let mut tallies: Vec<Tally> = (0..channels).map(|_| Tally::new(DType::U16)).collect();
            tally_channels(data, shape, axis, &mut tallies);
            tallies
                .into_iter()
                .map(|t| {
                    let w = t.window();
                    (w.min, w.max)
                })
                .collect::<Vec<_>>()
        };
        // c×y×x = 2×2×2: the first four values are channel 0.
        let data: Vec<u16> = vec![1, 2, 3, 4, 10, 20, 30, 40];
        assert_eq!(windows(&data, &[2, 2, 2], Some(0), 2), [(1.0, 4.0), (10.0, 40.0)]);
        // t×c×x = 2×2×1: channels alternate.
        assert_eq!(windows(&data[..4], &[2, 2, 1], Some(1), 2), [(1.0, 3.0), (2.0, 4.0)]);
        assert_eq!(windows(&data[..2], &[2], None, 1), [(1.0, 2.0)]);
        // Shares tallied apart (with two threads or more) and added up: c×x = 2×(3·2^20 / 2),
        // channel 1 all 7s but one 9 in the last share.
        let half = 3 << 19;
        let mut long = vec![5u16; 2 * half];
        long[half..].fill(7);
        long[0] = 1;
        long[2 * half - 1] = 9;
        assert_eq!(windows(&long, &[2, half as u64], Some(0), 2), [(1.0, 5.0), (7.0, 9.0)]);
        // Floats are kept, per channel, on one thread.
        let mut by_channel = vec![Tally::new(DType::F32), Tally::new(DType::F32)];
        tally_channels(&[0.5f32, -1.0, 8.0, 2.0], &[2, 2], Some(0), &mut by_channel);
        let float_windows: Vec<(f64, f64)> = by_channel
            .into_iter()
            .map(|t| {
                let w = t.window();
                (w.min, w.max)
            })
            .collect();
        assert_eq!(float_windows, [(-1.0, 0.5), (2.0, 8.0)]);
        // Floats keep their values; signed 16-bit counts are offset.
        let mut floats = Tally::new(DType::F32);
        floats.add_all(&[-0.5f32, 2.25]);
        let w = floats.window();
        assert_eq!((w.min, w.max), (-0.5, 2.25));
        let mut signed = Tally::new(DType::I16);
        signed.add_all(&[-32768i16, 32767]);
        let w = signed.window();
        assert_eq!((w.min, w.max), (-32768.0, 32767.0));
    }

    #[test]
    fn label_values_are_exact_for_64_bit_integers() {
        assert_eq!(label_value(u64::MAX), Some(i128::from(u64::MAX)));
        assert_eq!(label_value(-3i8), Some(-3));
        assert_eq!(label_value(2.0f32), None);
    }
}
