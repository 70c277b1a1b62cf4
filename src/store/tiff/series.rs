//! A series: the image one `build` makes a pyramid of, assembled from 2-D pages. Whatever
//! the file says (OME-XML, ImageJ, nothing, a folder of slices), it comes down to sizes of
//! t, c and z, the page holding each (t, c, z) plane, and physical sizes; this module turns
//! that into the array the reader presents: axes t, c, z, y, x (those longer than 1, and y
//! and x always), with a page's samples (RGB) as the c axis.

use std::path::PathBuf;

use super::page::PageLayout;
use crate::ngff::normalize_space_unit;
use crate::plan::{Axis, AxisKind};

/// Sizes of the plane axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    /// Time points.
    pub t: u64,
    /// Channels stored as separate pages.
    pub c: u64,
    /// Focal planes.
    pub z: u64,
}

impl Dims {
    /// Number of planes.
    pub(crate) fn planes(self) -> u64 {
        self.t * self.c * self.z
    }

    /// The index of plane (t, c, z) in t, c, z order (z fastest).
    pub(crate) fn index(self, t: u64, c: u64, z: u64) -> u64 {
        (t * self.c + c) * self.z + z
    }
}

/// Where one plane is stored: a page of one of the series' files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlaneRef {
    /// Index into the series' files.
    pub file: usize,
    /// Page (image file directory) index in that file.
    pub page: usize,
}

/// A physical size as the file gives it: value and unit as written.
pub(crate) type PhysicalSize = (f64, String);

/// Physical sizes as the file gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Physical {
    /// Pixel width.
    pub x: Option<PhysicalSize>,
    /// Pixel height.
    pub y: Option<PhysicalSize>,
    /// Distance between focal planes.
    pub z: Option<PhysicalSize>,
    /// Time between time points.
    pub t: Option<PhysicalSize>,
}

/// A channel's name and colour (`RRGGBB`), as the file gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelLabel {
    /// Name.
    pub label: Option<String>,
    /// Colour.
    pub color: Option<String>,
}

/// What an axis of the presented array indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Planes: the plane index grows by `stride` per step.
    Plane {
        /// Planes per step.
        stride: u64,
    },
    /// The samples of a pixel.
    Sample,
    /// Rows.
    Y,
    /// Columns.
    X,
}

/// Which kind of file a series comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeriesKind {
    /// A TIFF without metadata the reader understands: its pages are a z stack.
    Plain,
    /// An OME-TIFF.
    Ome,
    /// An ImageJ hyperstack.
    ImageJ,
    /// A folder or glob of 2-D TIFFs, one per z plane.
    Slices,
}

impl SeriesKind {
    /// A name for messages and `info`.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            SeriesKind::Plain => "TIFF",
            SeriesKind::Ome => "OME-TIFF",
            SeriesKind::ImageJ => "ImageJ hyperstack",
            SeriesKind::Slices => "stack of 2-D TIFF slices",
        }
    }
}

/// A series as the reader presents it.
#[derive(Debug)]
pub(crate) struct Series {
    /// The kind of input.
    pub kind: SeriesKind,
    /// The files holding its pages.
    pub files: Vec<PathBuf>,
    /// Axes, t, c, z, y, x order.
    pub axes: Vec<Axis>,
    /// Shape, one length per axis.
    pub shape: Vec<u64>,
    /// What each axis indexes.
    pub roles: Vec<Role>,
    /// Pixel size per axis, if the file gives any.
    pub scale: Option<Vec<f64>>,
    /// Image name.
    pub name: Option<String>,
    /// Channel names and colours.
    pub channels: Option<Vec<ChannelLabel>>,
    /// The layout all pages share.
    pub layout: PageLayout,
    /// Per plane in t, c, z order: where it is stored (`None`: not stored, reads as 0).
    pub planes: Vec<Option<PlaneRef>>,
    /// The axes are a default (no metadata named them): `--axes` may rename them.
    pub axes_replaceable: bool,
    /// How many series the input holds.
    pub series_count: usize,
    /// What was dropped from the metadata, for the log.
    pub warnings: Vec<String>,
}

/// What a series is made of, before it is assembled.
pub(crate) struct Parts {
    /// The kind of input.
    pub kind: SeriesKind,
    /// The files.
    pub files: Vec<PathBuf>,
    /// Plane counts.
    pub dims: Dims,
    /// Per plane in t, c, z order.
    pub planes: Vec<Option<PlaneRef>>,
    /// The shared page layout.
    pub layout: PageLayout,
    /// Physical sizes.
    pub physical: Physical,
    /// Image name.
    pub name: Option<String>,
    /// Channel names and colours.
    pub channels: Option<Vec<ChannelLabel>>,
    /// How many series the input holds.
    pub series_count: usize,
}

impl Parts {
    /// A z stack of `planes` without metadata but the pixel width and height.
    pub(crate) fn z_stack(
        kind: SeriesKind,
        files: Vec<PathBuf>,
        planes: Vec<PlaneRef>,
        layout: PageLayout,
        (x, y): (Option<PhysicalSize>, Option<PhysicalSize>),
    ) -> Self {
        Self {
            kind,
            files,
            dims: Dims {
                t: 1,
                c: 1,
                z: u64::try_from(planes.len()).unwrap_or(u64::MAX),
            },
            planes: planes.into_iter().map(Some).collect(),
            layout,
            physical: Physical {
                x,
                y,
                ..Physical::default()
            },
            name: None,
            channels: None,
            series_count: 1,
        }
    }
}

impl Series {
    /// Assembles the array the reader presents.
    ///
    /// # Errors
    /// A one-line reason when pages hold several samples and there are several channel
    /// planes as well.
    pub(crate) fn assemble(parts: Parts) -> Result<Self, String> {
        let Parts {
            kind,
            files,
            dims,
            planes,
            layout,
            physical,
            name,
            channels,
            series_count,
        } = parts;
        let samples = u64::from(layout.samples);
        if samples > 1 && dims.c > 1 {
            return Err(format!(
                "the pages hold {samples} samples per pixel and there are {} channels besides; such images are not supported",
                dims.c
            ));
        }
        let mut warnings = Vec::new();
        let mut axes = Vec::new();
        let mut shape = Vec::new();
        let mut roles = Vec::new();
        let mut scale = Vec::new();
        let mut any_scale = false;
        let mut push = |name: &str, size: u64, role: Role, size_unit: Option<&PhysicalSize>| {
            let mut axis = Axis::from_name(name);
            let mut step = 1.0;
            if let Some((value, unit)) = size_unit {
                match physical_unit(axis.kind == AxisKind::Time, unit) {
                    Ok(unit) if value.is_finite() && *value > 0.0 => {
                        axis.unit = unit;
                        step = *value;
                        any_scale = true;
                    }
                    Ok(_) => warnings.push(format!("the {name} pixel size {value} is not positive; it is left out")),
                    Err(e) => warnings.push(format!("the {name} unit is left out: {e}")),
                }
            }
            axes.push(axis);
            shape.push(size);
            roles.push(role);
            scale.push(step);
        };
        if dims.t > 1 {
            push(
                "t",
                dims.t,
                Role::Plane {
                    stride: dims.c * dims.z,
                },
                physical.t.as_ref(),
            );
        }
        if dims.c > 1 {
            push("c", dims.c, Role::Plane { stride: dims.z }, None);
        } else if samples > 1 {
            push("c", samples, Role::Sample, None);
        }
        if dims.z > 1 {
            push("z", dims.z, Role::Plane { stride: 1 }, physical.z.as_ref());
        }
        push(
            "y",
            u64::from(layout.height),
            Role::Y,
            physical.y.as_ref().or(physical.x.as_ref()),
        );
        push(
            "x",
            u64::from(layout.width),
            Role::X,
            physical.x.as_ref().or(physical.y.as_ref()),
        );
        let channel_count = if dims.c > 1 { dims.c } else { samples };
        let channels = channels.filter(|c| u64::try_from(c.len()).is_ok_and(|n| n == channel_count));
        Ok(Self {
            kind,
            files,
            axes,
            shape,
            roles,
            scale: any_scale.then_some(scale),
            name,
            channels,
            layout,
            planes,
            axes_replaceable: matches!(kind, SeriesKind::Plain | SeriesKind::Slices),
            series_count,
            warnings,
        })
    }
}

/// The OME-NGFF name of a unit as files write it (`µm`, `um`, `micron`, `\u00B5m`, `nm`;
/// `s`, `ms`, `min`, `h`), or `None` for `pixel`, which is no physical size.
///
/// # Errors
/// A unit OME-NGFF has no name for.
fn physical_unit(time: bool, unit: &str) -> Result<Option<String>, String> {
    let unit = unit.trim().replace("\\u00B5", "µ").replace("\\u00b5", "µ");
    if time {
        let name = match unit.as_str() {
            "s" | "sec" | "second" | "seconds" => "second",
            "ms" | "msec" | "millisecond" => "millisecond",
            "µs" | "us" | "microsecond" => "microsecond",
            "ns" | "nanosecond" => "nanosecond",
            "min" | "minute" | "minutes" => "minute",
            "h" | "hr" | "hour" | "hours" => "hour",
            "d" | "day" | "days" => "day",
            other => return Err(format!("`{other}` is not a time unit OME-NGFF names")),
        };
        return Ok(Some(name.into()));
    }
    if matches!(unit.as_str(), "pixel" | "pixels" | "") {
        return Ok(None);
    }
    normalize_space_unit(&unit).map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::store::tiff::page::Chunking;

    fn layout(samples: u16) -> PageLayout {
        PageLayout {
            width: 70,
            height: 40,
            dtype: DType::U8,
            samples,
            planar: false,
            chunking: Chunking::Strips { rows: 16 },
            ycbcr: false,
        }
    }

    fn parts(dims: Dims, samples: u16, physical: Physical) -> Parts {
        Parts {
            kind: SeriesKind::ImageJ,
            files: vec![PathBuf::from("a.tif")],
            dims,
            planes: vec![None; usize::try_from(dims.planes()).unwrap()],
            layout: layout(samples),
            physical,
            name: None,
            channels: None,
            series_count: 1,
        }
    }

    #[test]
    fn axes_longer_than_one_come_in_tczyx_order_with_strides() {
        let physical = Physical {
            x: Some((0.25, "micron".into())),
            z: Some((1.5, "\\u00B5m".into())),
            t: Some((2.0, "sec".into())),
            ..Physical::default()
        };
        let series = Series::assemble(parts(Dims { t: 3, c: 2, z: 4 }, 1, physical)).unwrap();
        let names: String = series.axes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, "tczyx");
        assert_eq!(series.shape, [3, 2, 4, 40, 70]);
        assert_eq!(
            series.roles[..3],
            [
                Role::Plane { stride: 8 },
                Role::Plane { stride: 4 },
                Role::Plane { stride: 1 }
            ]
        );
        assert_eq!(series.scale, Some(vec![2.0, 1.0, 1.5, 0.25, 0.25]));
        assert_eq!(series.axes[0].unit.as_deref(), Some("second"));
        assert_eq!(series.axes[2].unit.as_deref(), Some("micrometer"));
        assert_eq!(series.axes[1].unit, None);
    }

    #[test]
    fn samples_are_the_channel_axis_and_a_single_plane_is_yx() {
        let rgb = Series::assemble(parts(Dims { t: 1, c: 1, z: 1 }, 3, Physical::default())).unwrap();
        assert_eq!(rgb.shape, [3, 40, 70]);
        assert_eq!(rgb.roles[0], Role::Sample);
        assert_eq!(rgb.scale, None);
        let both = Series::assemble(parts(Dims { t: 1, c: 2, z: 1 }, 3, Physical::default()));
        assert!(both.unwrap_err().contains("3 samples per pixel"));
    }
}
