//! A PNG preview of an OME-Zarr image (`ome-pyramid thumbnail IMAGE OUT.png`), so that a
//! conversion can be checked at a glance and a test can check that an output is not blank.
//!
//! - The level: the finest whose y and x fit `size`; if none does, the coarsest, reduced
//!   further by a block maximum.
//! - Maximum-intensity projection over z (and every other axis but the channel, y and x;
//!   time at t = 0), read in slabs of z planes that fit a quarter of the memory budget.
//! - Channels blended with the `omero` colours and windows (`blend`), or the defaults
//!   `build` writes where the image has none.

mod blend;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

pub use blend::{ChannelStyle, blend, channel_styles};

use crate::dtype::Sample;
use crate::engine::BuildError;
use crate::image::{OmeZarrImage, not_an_image};
use crate::plan::AxisKind;
use crate::store::error::io_error;
use crate::store::{self, ChunkSource, StoreElement, StoreError, TileReader};
use crate::tile::Region;

/// A rendered preview.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGB bytes, row by row.
    pub rgb: Vec<u8>,
    /// The level it was made from.
    pub level: usize,
    /// The planes projected into it (z planes, times every other non-channel axis).
    pub planes: u64,
    /// The channels blended into it.
    pub channels: u64,
}

impl Thumbnail {
    /// The share of pixels with a component above 10 of 255 (0 for a blank picture).
    #[must_use]
    pub fn lit_fraction(&self) -> f64 {
        let pixels = self.rgb.chunks_exact(3);
        let total = pixels.len().max(1);
        let lit = pixels.filter(|p| p.iter().any(|&c| c > 10)).count();
        #[allow(clippy::cast_precision_loss)]
        let fraction = lit as f64 / total as f64;
        fraction
    }

    /// Writes the picture as an 8-bit RGB PNG, through a temporary file renamed into place.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the file cannot be written.
    pub fn write_png(&self, path: &Path) -> Result<(), StoreError> {
        let tmp = path.with_extension("png.tmp-ome-pyramid");
        let file = std::fs::File::create(&tmp).map_err(io_error("cannot create", &tmp))?;
        let mut writer = std::io::BufWriter::new(file);
        let mut encoder = png::Encoder::new(&mut writer, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let encoded = encoder
            .write_header()
            .and_then(|mut w| w.write_image_data(&self.rgb).and_then(|()| w.finish()));
        encoded.map_err(|e| io_error("cannot write", &tmp)(std::io::Error::other(e)))?;
        writer.flush().map_err(io_error("cannot write", &tmp))?;
        drop(writer);
        std::fs::rename(&tmp, path).map_err(io_error("cannot rename into place", path))
    }
}

/// Where the axes of the picture are.
struct PictureAxes {
    y: usize,
    x: usize,
    channel: Option<usize>,
    time: Option<usize>,
}

fn picture_axes(image: &OmeZarrImage) -> Result<PictureAxes, BuildError> {
    let position = |name: &str| image.axes.iter().position(|a| a.name == name);
    let spaces: Vec<usize> = (0..image.axes.len())
        .filter(|&a| image.axes[a].kind == AxisKind::Space)
        .collect();
    let (y, x) = match (position("y"), position("x")) {
        (Some(y), Some(x)) => (y, x),
        _ if spaces.len() >= 2 => (spaces[spaces.len() - 2], spaces[spaces.len() - 1]),
        _ => return Err(not_an_image(&image.path, "has fewer than two space axes to draw")),
    };
    Ok(PictureAxes {
        y,
        x,
        channel: image.axes.iter().position(|a| a.kind == AxisKind::Channel),
        time: image.axes.iter().position(|a| a.kind == AxisKind::Time),
    })
}

/// Renders a preview of the OME-Zarr image at `image`, at most `size` pixels wide and high,
/// reading within `memory_bytes`.
///
/// # Errors
/// [`BuildError::InvalidOption`] (`image`) when `image` is not an OME-Zarr image with two
/// space axes; [`BuildError::Store`] when it cannot be read.
pub fn render(image: &Path, size: u32, memory_bytes: u64) -> Result<Thumbnail, BuildError> {
    let image = OmeZarrImage::open(image)?;
    let axes = picture_axes(&image)?;
    let size = u64::from(size.max(1));
    let level = image
        .levels
        .iter()
        .position(|l| l.shape[axes.y] <= size && l.shape[axes.x] <= size)
        .unwrap_or(image.levels.len() - 1);
    let source = store::open_source(&image.path.join(&image.levels[level].path))?;
    let shape = source.shape().to_vec();
    let dtype = source.dtype();
    let source: Arc<dyn ChunkSource> = Arc::new(source);
    let projections = crate::dispatch_dtype!(dtype, T => project::<T>(&source, &shape, &axes, memory_bytes)?);
    let (height, width) = (shape[axes.y], shape[axes.x]);
    let step = height.max(width).div_ceil(size).max(1);
    let (out_h, out_w) = (height.div_ceil(step), width.div_ceil(step));
    let reduced: Vec<Vec<f64>> = projections.iter().map(|p| block_max(p, height, width, step)).collect();
    let styles = channel_styles(image.omero.as_ref(), &reduced);
    let pixels = usize::try_from(out_h * out_w).expect("a thumbnail fits in memory");
    let rgb = blend(&reduced, &styles, pixels);
    let channels = axes.channel.map_or(1, |c| shape[c]);
    let planes =
        shape.iter().product::<u64>() / (height * width * channels).max(1) / axes.time.map_or(1, |t| shape[t]).max(1);
    Ok(Thumbnail {
        width: u32::try_from(out_w).expect("at most `size` wide"),
        height: u32::try_from(out_h).expect("at most `size` high"),
        rgb,
        level,
        planes,
        channels,
    })
}

/// The maximum over every axis but channel, y and x (time at t = 0) of each channel, as
/// `f64` planes of `y × x`, read in slabs along the slowest projected axes.
fn project<T: StoreElement>(
    source: &Arc<dyn ChunkSource>,
    shape: &[u64],
    axes: &PictureAxes,
    memory_bytes: u64,
) -> Result<Vec<Vec<f64>>, BuildError> {
    let channels = axes.channel.map_or(1, |c| shape[c]);
    let plane = shape[axes.y] * shape[axes.x];
    let plane_len = usize::try_from(plane).expect("a level plane fits in memory");
    let mut maxima = vec![vec![f64::NEG_INFINITY; plane_len]; usize::try_from(channels).unwrap_or(1)];
    let budget = (memory_bytes / 4).max(1);
    let reader = TileReader::<T>::new(source.clone(), budget, Arc::new(|_: &Region| 1));
    // The region of one read: whole y, x and channels; one time point; the other axes in
    // slabs whose planes fit the budget.
    let stacked: Vec<usize> = (0..shape.len())
        .filter(|&a| a != axes.y && a != axes.x && Some(a) != axes.channel && Some(a) != axes.time)
        .collect();
    let per_plane = T::DTYPE.bytes_of(&[plane, channels]).unwrap_or(u64::MAX);
    let slab_planes = (budget / per_plane.max(1)).max(1);
    let total_planes: u64 = stacked.iter().map(|&a| shape[a]).product();
    let mut first = 0;
    while first < total_planes {
        let count = slab_planes.min(total_planes - first);
        for region in slab_regions(shape, axes, &stacked, first, count) {
            let data = reader.read(&region)?;
            fold_max(&data, &region.shape, axes, &mut maxima);
        }
        first += count;
    }
    Ok(maxima)
}

/// The regions covering planes `first..first + count` of the stacked axes (C order), each a
/// box: planes are split where a slower stacked axis changes.
fn slab_regions(shape: &[u64], axes: &PictureAxes, stacked: &[usize], first: u64, count: u64) -> Vec<Region> {
    let mut regions = Vec::new();
    let innermost = stacked.last().map_or(1, |&a| shape[a]);
    let mut plane = first;
    while plane < first + count {
        // Position of `plane` along the stacked axes.
        let mut rest = plane;
        let mut index = vec![0u64; shape.len()];
        for &a in stacked.iter().rev() {
            index[a] = rest % shape[a];
            rest /= shape[a];
        }
        let run = (innermost - plane % innermost).min(first + count - plane);
        let mut start = vec![0u64; shape.len()];
        let mut extent = shape.to_vec();
        for &a in stacked {
            start[a] = index[a];
            extent[a] = 1;
        }
        if let Some(&inner) = stacked.last() {
            extent[inner] = run;
        }
        if let Some(t) = axes.time {
            start[t] = 0;
            extent[t] = 1;
        }
        regions.push(Region::new(start, extent));
        plane += run;
    }
    regions
}

/// Folds a read region into the per-channel maxima (NaN never wins).
fn fold_max<T: Sample>(data: &[T], region: &[u64], axes: &PictureAxes, maxima: &mut [Vec<f64>]) {
    let to_usize = |n: u64| usize::try_from(n).expect("a read region has usize extents");
    let mut strides = vec![1usize; region.len()];
    for a in (0..region.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * to_usize(region[a + 1]);
    }
    let width = to_usize(region[axes.x]);
    for (i, v) in data.iter().enumerate() {
        let value = v.to_f64();
        let c = axes.channel.map_or(0, |c| (i / strides[c]) % to_usize(region[c]));
        let y = (i / strides[axes.y]) % to_usize(region[axes.y]);
        let x = (i / strides[axes.x]) % width;
        let slot = &mut maxima[c][y * width + x];
        if value > *slot {
            *slot = value;
        }
    }
}

/// Reduces a `height × width` plane by the maximum of `step × step` blocks.
fn block_max(plane: &[f64], height: u64, width: u64, step: u64) -> Vec<f64> {
    if step == 1 {
        return plane.to_vec();
    }
    let to_usize = |n: u64| usize::try_from(n).expect("a plane fits in memory");
    let (h, w, s) = (to_usize(height), to_usize(width), to_usize(step));
    let out_w = w.div_ceil(s);
    let mut out = vec![f64::NEG_INFINITY; h.div_ceil(s) * out_w];
    for y in 0..h {
        for x in 0..w {
            let slot = &mut out[(y / s) * out_w + x / s];
            let value = plane[y * w + x];
            if value > *slot {
                *slot = value;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slabs_cover_every_plane_once_as_boxes() {
        // t, z, y, x with z stacked: planes 3..8 of z = 10 in one box.
        let axes = PictureAxes {
            y: 2,
            x: 3,
            channel: None,
            time: Some(0),
        };
        let shape = [4, 10, 5, 6];
        let regions = slab_regions(&shape, &axes, &[1], 3, 5);
        assert_eq!(regions, vec![Region::new(vec![0, 3, 0, 0], vec![1, 5, 5, 6])]);
        // Two stacked axes (a custom axis and z): a slab crossing a row of z splits.
        let axes = PictureAxes {
            y: 2,
            x: 3,
            channel: None,
            time: None,
        };
        let regions = slab_regions(&[2, 4, 5, 6], &axes, &[0, 1], 2, 4);
        assert_eq!(
            regions,
            vec![
                Region::new(vec![0, 2, 0, 0], vec![1, 2, 5, 6]),
                Region::new(vec![1, 0, 0, 0], vec![1, 2, 5, 6])
            ]
        );
    }

    #[test]
    fn block_maxima_keep_the_brightest_voxel() {
        let plane = [1.0, 5.0, 2.0, 0.0, 3.0, 1.0];
        assert_eq!(block_max(&plane, 2, 3, 2), vec![5.0, 2.0]);
        assert_eq!(block_max(&plane, 2, 3, 1), plane.to_vec());
    }
}
