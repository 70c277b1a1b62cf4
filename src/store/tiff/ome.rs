//! OME-TIFF: the OME-XML in the first page's description, read into typed structs, and the
//! mapping of one `<Image>` (a series) to axes, physical sizes, channels and the page that
//! holds each plane, across the files of a multi-file set (`TiffData` with `UUID`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::series::{Dims, Physical, PlaneRef};
use crate::store::tiff::series::ChannelLabel;

/// The root `<OME>` element (only what the reader uses; the rest is ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct Ome {
    /// The file's own UUID (`urn:uuid:…`).
    #[serde(rename = "@UUID")]
    pub uuid: Option<String>,
    /// The images (series).
    #[serde(rename = "Image", default)]
    pub images: Vec<OmeImage>,
    /// Set in the files of a multi-file set that do not hold the metadata.
    #[serde(rename = "BinaryOnly")]
    pub binary_only: Option<BinaryOnly>,
}

/// `<BinaryOnly MetadataFile="…">`.
#[derive(Debug, Deserialize)]
pub(crate) struct BinaryOnly {
    /// The file holding the full OME-XML.
    #[serde(rename = "@MetadataFile")]
    pub metadata_file: String,
}

/// One `<Image>`.
#[derive(Debug, Deserialize)]
pub(crate) struct OmeImage {
    /// `Image:N`.
    #[serde(rename = "@ID")]
    pub id: String,
    /// The image's name.
    #[serde(rename = "@Name")]
    pub name: Option<String>,
    /// Its pixels.
    #[serde(rename = "Pixels")]
    pub pixels: Pixels,
}

/// `<Pixels>`: sizes, order, physical sizes, channels and where the planes are.
#[derive(Debug, Deserialize)]
pub(crate) struct Pixels {
    /// `XYZCT`, `XYZTC`, `XYCTZ`, `XYCZT`, `XYTCZ` or `XYTZC`: fastest first.
    #[serde(rename = "@DimensionOrder")]
    pub dimension_order: String,
    /// `uint8` … `double`.
    #[serde(rename = "@Type")]
    pub pixel_type: String,
    #[serde(rename = "@SizeX")]
    pub size_x: u64,
    #[serde(rename = "@SizeY")]
    pub size_y: u64,
    #[serde(rename = "@SizeZ")]
    pub size_z: u64,
    #[serde(rename = "@SizeC")]
    pub size_c: u64,
    #[serde(rename = "@SizeT")]
    pub size_t: u64,
    #[serde(rename = "@PhysicalSizeX")]
    pub physical_size_x: Option<f64>,
    #[serde(rename = "@PhysicalSizeXUnit")]
    pub physical_size_x_unit: Option<String>,
    #[serde(rename = "@PhysicalSizeY")]
    pub physical_size_y: Option<f64>,
    #[serde(rename = "@PhysicalSizeYUnit")]
    pub physical_size_y_unit: Option<String>,
    #[serde(rename = "@PhysicalSizeZ")]
    pub physical_size_z: Option<f64>,
    #[serde(rename = "@PhysicalSizeZUnit")]
    pub physical_size_z_unit: Option<String>,
    #[serde(rename = "@TimeIncrement")]
    pub time_increment: Option<f64>,
    #[serde(rename = "@TimeIncrementUnit")]
    pub time_increment_unit: Option<String>,
    /// The channels.
    #[serde(rename = "Channel", default)]
    pub channels: Vec<Channel>,
    /// Which pages hold which planes.
    #[serde(rename = "TiffData", default)]
    pub tiff_data: Vec<TiffData>,
}

/// `<Channel>`.
#[derive(Debug, Deserialize)]
pub(crate) struct Channel {
    /// The channel's name.
    #[serde(rename = "@Name")]
    pub name: Option<String>,
    /// RGBA packed in a signed 32-bit integer.
    #[serde(rename = "@Color")]
    pub color: Option<i64>,
}

/// `<TiffData>`: `PlaneCount` pages from `IFD` on hold the planes from (`FirstZ`, `FirstC`,
/// `FirstT`) on, in `DimensionOrder`, in the file `UUID` names (else this one).
#[derive(Debug, Deserialize)]
pub(crate) struct TiffData {
    #[serde(rename = "@IFD")]
    pub ifd: Option<u64>,
    #[serde(rename = "@FirstZ")]
    pub first_z: Option<u64>,
    #[serde(rename = "@FirstC")]
    pub first_c: Option<u64>,
    #[serde(rename = "@FirstT")]
    pub first_t: Option<u64>,
    #[serde(rename = "@PlaneCount")]
    pub plane_count: Option<u64>,
    /// The legacy name of `PlaneCount`.
    #[serde(rename = "@NumPlanes")]
    pub num_planes: Option<u64>,
    /// The file holding the pages.
    #[serde(rename = "UUID")]
    pub uuid: Option<OmeUuid>,
}

/// `<UUID FileName="…">urn:uuid:…</UUID>`.
#[derive(Debug, Deserialize)]
pub(crate) struct OmeUuid {
    #[serde(rename = "@FileName")]
    pub file_name: Option<String>,
    #[serde(rename = "$text", default)]
    pub value: String,
}

/// True if an image description is OME-XML.
pub(crate) fn is_ome_xml(description: &str) -> bool {
    let head = description.trim_start();
    (head.starts_with("<?xml") || head.starts_with('<')) && head.contains("<OME")
}

/// Parses OME-XML.
///
/// # Errors
/// The parser's message.
pub(crate) fn parse(xml: &str) -> Result<Ome, String> {
    quick_xml::de::from_str(xml).map_err(|e| format!("the OME-XML cannot be read: {e}"))
}

/// One series of an OME-TIFF resolved to planes in files.
#[derive(Debug)]
pub(crate) struct OmeSeries {
    /// The image's name.
    pub name: Option<String>,
    /// Sizes of t, c (planes, not samples) and z.
    pub dims: Dims,
    /// Physical sizes.
    pub physical: Physical,
    /// Channel names and colours.
    pub channels: Option<Vec<ChannelLabel>>,
    /// The files: this one first, then those `TiffData` names.
    pub files: Vec<PathBuf>,
    /// Per plane in t, c, z order: where it is stored.
    pub planes: Vec<Option<PlaneRef>>,
    /// How many `<Image>`s the file describes.
    pub series_count: usize,
}

/// Resolves series `series` of `ome`, read from `path`, whose pages hold `samples` samples
/// each.
///
/// # Errors
/// A one-line reason: no such series, sizes or order that do not add up.
pub(crate) fn resolve(ome: &Ome, path: &Path, series: usize, samples: u16) -> Result<OmeSeries, String> {
    let count = ome.images.len();
    let image = ome.images.get(series).ok_or_else(|| match count {
        0 => "the OME-XML describes no image".to_string(),
        1 => format!("--series {series} was asked for, and the file holds one series (0)"),
        n => format!(
            "--series {series} was asked for, and the file holds {n} series (0 to {})",
            n - 1
        ),
    })?;
    let pixels = &image.pixels;
    if pixels.size_x == 0 || pixels.size_y == 0 || pixels.size_z == 0 || pixels.size_c == 0 || pixels.size_t == 0 {
        return Err(format!("{} has a size of 0", image.id));
    }
    let samples = u64::from(samples);
    if pixels.size_c % samples != 0 {
        return Err(format!(
            "{} has SizeC={} and its pages hold {samples} samples per pixel",
            image.id, pixels.size_c
        ));
    }
    let dims = Dims {
        t: pixels.size_t,
        c: pixels.size_c / samples,
        z: pixels.size_z,
    };
    let order = plane_order(&pixels.dimension_order)?;

    let folder = path.parent().unwrap_or_else(|| Path::new("."));
    let mut files = vec![path.to_path_buf()];
    let own_uuid = ome.uuid.as_deref();
    let total = dims.planes();
    let mut planes: Vec<Option<PlaneRef>> = vec![None; usize::try_from(total).map_err(|e| e.to_string())?];
    // The plane axes as indices into [t, c, z], and their sizes.
    let sizes = [dims.t, dims.c, dims.z];
    // Index in DimensionOrder (fastest first) of plane [t, c, z].
    let ravel = |tcz: [u64; 3]| -> u64 { order.iter().rev().fold(0, |index, &a| index * sizes[a] + tcz[a]) };
    // The plane at DimensionOrder index `i`, as [t, c, z].
    let unravel = |i: u64| -> [u64; 3] {
        let mut rest = i;
        let mut tcz = [0u64; 3];
        for &a in &order {
            tcz[a] = rest % sizes[a];
            rest /= sizes[a];
        }
        tcz
    };
    let store = |planes: &mut Vec<Option<PlaneRef>>, order_index: u64, plane: PlaneRef| -> Result<(), String> {
        if order_index >= total {
            return Err(format!(
                "{}'s TiffData maps more planes than SizeZ×SizeC×SizeT = {total}",
                image.id
            ));
        }
        let [t, c, z] = unravel(order_index);
        planes[usize::try_from(dims.index(t, c, z)).map_err(|e| e.to_string())?] = Some(plane);
        Ok(())
    };
    if pixels.tiff_data.is_empty() {
        for i in 0..total {
            store(
                &mut planes,
                i,
                PlaneRef {
                    file: 0,
                    page: to_usize(i)?,
                },
            )?;
        }
    } else {
        for data in &pixels.tiff_data {
            let file = match &data.uuid {
                Some(uuid) if Some(uuid.value.trim()) != own_uuid => {
                    let name = uuid.file_name.as_deref().ok_or_else(|| {
                        format!(
                            "{}'s TiffData names a file by UUID {} only, without FileName",
                            image.id, uuid.value
                        )
                    })?;
                    if name.contains('/') || name.contains('\\') {
                        return Err(format!(
                            "TiffData names `{name}`, which is not a file in the same folder"
                        ));
                    }
                    let target = folder.join(name);
                    match files.iter().position(|f| f == &target) {
                        Some(i) => i,
                        None => {
                            files.push(target);
                            files.len() - 1
                        }
                    }
                }
                _ => 0,
            };
            let first_page = data.ifd.unwrap_or(0);
            let count = data
                .plane_count
                .or(data.num_planes)
                .unwrap_or(if data.ifd.is_some() { 1 } else { total });
            let start = ravel([
                data.first_t.unwrap_or(0),
                data.first_c.unwrap_or(0),
                data.first_z.unwrap_or(0),
            ]);
            for i in 0..count {
                store(
                    &mut planes,
                    start + i,
                    PlaneRef {
                        file,
                        page: to_usize(first_page + i)?,
                    },
                )?;
            }
        }
    }
    let channels = (!pixels.channels.is_empty()).then(|| {
        pixels
            .channels
            .iter()
            .map(|c| ChannelLabel {
                label: c.name.clone(),
                color: c.color.map(rgba_to_hex),
            })
            .collect()
    });
    let space =
        |size: Option<f64>, unit: &Option<String>| size.map(|s| (s, unit.clone().unwrap_or_else(|| "µm".into())));
    Ok(OmeSeries {
        name: image.name.clone(),
        dims,
        physical: Physical {
            x: space(pixels.physical_size_x, &pixels.physical_size_x_unit),
            y: space(pixels.physical_size_y, &pixels.physical_size_y_unit),
            z: space(pixels.physical_size_z, &pixels.physical_size_z_unit),
            t: pixels
                .time_increment
                .map(|s| (s, pixels.time_increment_unit.clone().unwrap_or_else(|| "s".into()))),
        },
        channels,
        files,
        planes,
        series_count: count,
    })
}

/// The order of the T, C and Z axes in a `DimensionOrder`, fastest first, as indices into
/// [t, c, z].
fn plane_order(order: &str) -> Result<[usize; 3], String> {
    let bytes = order.as_bytes();
    let valid = bytes.len() == 5 && bytes.starts_with(b"XY") && {
        let mut rest = [bytes[2], bytes[3], bytes[4]];
        rest.sort_unstable();
        rest == *b"CTZ"
    };
    if !valid {
        return Err(format!(
            "DimensionOrder `{order}` is not one of XYZCT, XYZTC, XYCTZ, XYCZT, XYTCZ, XYTZC"
        ));
    }
    let slot = |axis: u8| match axis {
        b'T' => 0,
        b'C' => 1,
        _ => 2,
    };
    Ok([slot(bytes[2]), slot(bytes[3]), slot(bytes[4])])
}

/// An OME colour (RGBA in a signed 32-bit integer) as `RRGGBB`.
fn rgba_to_hex(color: i64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rgba = color as u32;
    format!("{:06X}", rgba >> 8)
}

fn to_usize(n: u64) -> Result<usize, String> {
    usize::try_from(n).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_FILES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="urn:uuid:a">
<Image ID="Image:0" Name="cells"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16"
 SizeX="8" SizeY="4" SizeZ="2" SizeC="2" SizeT="2" PhysicalSizeX="0.5" PhysicalSizeZ="2" PhysicalSizeZUnit="nm">
<Channel ID="Channel:0:0" Name="DAPI" Color="65535"/><Channel ID="Channel:0:1" Name="GFP" Color="-16776961"/>
<TiffData FirstT="0" IFD="0" PlaneCount="4"><UUID FileName="a.ome.tif">urn:uuid:a</UUID></TiffData>
<TiffData FirstT="1" IFD="0" PlaneCount="4"><UUID FileName="b.ome.tif">urn:uuid:b</UUID></TiffData>
</Pixels></Image></OME>"#;

    #[test]
    fn tiff_data_maps_planes_across_files_in_dimension_order() {
        let ome = parse(TWO_FILES).unwrap();
        let series = resolve(&ome, Path::new("/data/a.ome.tif"), 0, 1).unwrap();
        assert_eq!(
            series.files,
            [PathBuf::from("/data/a.ome.tif"), PathBuf::from("/data/b.ome.tif")]
        );
        assert_eq!(series.dims, Dims { t: 2, c: 2, z: 2 });
        // XYCZT: c fastest, then z, then t. Plane (t=1, c=0, z=1) is page 2 of file b.
        let at = |t, c, z| series.planes[usize::try_from(series.dims.index(t, c, z)).unwrap()].unwrap();
        assert_eq!(at(1, 0, 1), PlaneRef { file: 1, page: 2 });
        assert_eq!(at(0, 1, 0), PlaneRef { file: 0, page: 1 });
        assert_eq!(series.physical.z, Some((2.0, "nm".into())));
        assert_eq!(series.physical.x, Some((0.5, "µm".into())));
        let channels = series.channels.unwrap();
        assert_eq!(channels[0].color.as_deref(), Some("0000FF"));
        assert_eq!(channels[1].color.as_deref(), Some("FF0000"));
        assert_eq!(channels[1].label.as_deref(), Some("GFP"));
    }

    #[test]
    fn a_missing_series_and_a_bad_order_are_named() {
        let ome = parse(TWO_FILES).unwrap();
        let e = resolve(&ome, Path::new("a.ome.tif"), 3, 1).unwrap_err();
        assert!(e.contains("--series 3") && e.contains("one series"), "{e}");
        let bad = TWO_FILES.replace("XYCZT", "XYZZT");
        let e = resolve(&parse(&bad).unwrap(), Path::new("a.ome.tif"), 0, 1).unwrap_err();
        assert!(e.contains("DimensionOrder"), "{e}");
    }
}
