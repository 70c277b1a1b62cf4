//! The `omero` display block of an output whose input has none: channel windows measured
//! on the top level, which the build has just written and which is the smallest level, so
//! the volume is not read again.

use std::sync::Arc;

use serde_json::Value;

use super::BuildError;
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
    let bytes = T::DTYPE.bytes_of(shape).unwrap_or(u64::MAX);
    if bytes > memory_bytes / 4 {
        tracing::warn!(
            "the top level ({bytes} bytes) is too large to measure within --memory; the display windows span the whole {} range",
            T::DTYPE
        );
        let window = ChannelWindow::of_dtype(T::DTYPE);
        let windows = vec![window; usize::try_from(channels).unwrap_or(1)];
        return Ok(default_omero(&windows, z_planes));
    }
    let reader = TileReader::<T>::new(sink.read_level(top)?, memory_bytes / 4, Arc::new(|_: &Region| 1));
    let data = reader.read(&Region::whole(shape))?;
    let windows = channel_values(&data, shape, channel_axis)
        .iter_mut()
        .map(ChannelWindow::of_values)
        .collect::<Vec<_>>();
    Ok(default_omero(&windows, z_planes))
}

/// The values of each channel (all of them where there is no channel axis), as `f64`.
fn channel_values<T: StoreElement>(data: &[T], shape: &[u64], channel_axis: Option<usize>) -> Vec<Vec<f64>> {
    let Some(c) = channel_axis else {
        return vec![data.iter().map(|v| v.to_f64()).collect()];
    };
    let to_usize = |n: u64| usize::try_from(n).expect("a level read into memory has usize extents");
    let stride: usize = shape[c + 1..].iter().map(|&n| to_usize(n)).product();
    let count = to_usize(shape[c]);
    let mut channels = vec![Vec::with_capacity(data.len() / count.max(1)); count];
    for (i, v) in data.iter().enumerate() {
        channels[(i / stride) % count].push(v.to_f64());
    }
    channels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_split_by_channel() {
        // c×y×x = 2×2×2: the first four values are channel 0.
        let data: Vec<u16> = vec![1, 2, 3, 4, 10, 20, 30, 40];
        let channels = channel_values(&data, &[2, 2, 2], Some(0));
        assert_eq!(channels, vec![vec![1.0, 2.0, 3.0, 4.0], vec![10.0, 20.0, 30.0, 40.0]]);
        // t×c×x = 2×2×1: channels alternate.
        let channels = channel_values(&data[..4], &[2, 2, 1], Some(1));
        assert_eq!(channels, vec![vec![1.0, 3.0], vec![2.0, 4.0]]);
        assert_eq!(channel_values(&data[..2], &[2], None), vec![vec![1.0, 2.0]]);
    }
}
