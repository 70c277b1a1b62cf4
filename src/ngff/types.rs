//! The OME-NGFF metadata types shared by v0.4 and v0.5: `multiscales` entries, their
//! axes, datasets and coordinate transformations (plain serde structs), and what a build
//! takes from an input image. Pure: no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::Axis;

/// The OME-NGFF version of an output: 0.4 on Zarr v2, or 0.5 on Zarr v3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NgffVersion {
    /// OME-NGFF 0.4: a Zarr v2 group, metadata in `.zattrs`.
    #[default]
    #[serde(rename = "0.4")]
    V04,
    /// OME-NGFF 0.5: a Zarr v3 group, metadata under `ome` in `zarr.json`.
    #[serde(rename = "0.5")]
    V05,
}

impl std::str::FromStr for NgffVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "0.4" => Ok(NgffVersion::V04),
            "0.5" => Ok(NgffVersion::V05),
            other => Err(format!("unknown OME-NGFF version `{other}` (expected 0.4 or 0.5)")),
        }
    }
}

impl std::fmt::Display for NgffVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NgffVersion::V04 => "0.4",
            NgffVersion::V05 => "0.5",
        })
    }
}

/// A coordinate transformation of v0.4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CoordinateTransformation {
    /// Per-axis scale.
    Scale {
        /// One value per axis.
        scale: Vec<f64>,
    },
    /// Per-axis translation.
    Translation {
        /// One value per axis.
        translation: Vec<f64>,
    },
    /// The identity.
    Identity,
}

/// An axis as written in `multiscales.axes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AxisMetadata {
    /// Axis name.
    pub name: String,
    /// Axis type (`space`, `time`, `channel` or custom).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl AxisMetadata {
    /// The axis this metadata describes (its kind from the `type` string).
    #[must_use]
    pub fn to_axis(&self) -> Axis {
        Axis {
            name: self.name.clone(),
            kind: crate::plan::AxisKind::from_type_name(self.kind.as_deref()),
            unit: self.unit.clone(),
        }
    }
}

/// One entry of `multiscales.datasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Path of the level array, relative to the group.
    pub path: String,
    /// Transformations of this level.
    #[serde(rename = "coordinateTransformations", default)]
    pub coordinate_transformations: Vec<CoordinateTransformation>,
}

/// One entry of `multiscales`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Multiscale {
    /// `0.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Image name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Axes (absent in v0.3 and older).
    #[serde(default)]
    pub axes: Vec<AxisMetadata>,
    /// Levels, full resolution first.
    pub datasets: Vec<Dataset>,
    /// Transformations applied after each dataset's own.
    #[serde(
        rename = "coordinateTransformations",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub coordinate_transformations: Option<Vec<CoordinateTransformation>>,
    /// Downsampling method name.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Free-form method description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// What the build needs from an input OME-Zarr image.
#[derive(Debug, Clone, PartialEq)]
pub struct InputImage {
    /// Image name, if any.
    pub name: Option<String>,
    /// Axes with kinds and units (empty for v0.3 and older inputs).
    pub axes: Vec<Axis>,
    /// Path of level 0 inside the group.
    pub level0_path: String,
    /// Level-0 pixel size per axis (`None` if the metadata gives none).
    pub scale: Option<Vec<f64>>,
    /// Level-0 translation per axis (`None` if none).
    pub translation: Option<Vec<f64>>,
    /// Multiscale-level transformations, carried over unchanged.
    pub multiscale_transforms: Option<Vec<CoordinateTransformation>>,
    /// The `omero` block, carried over unchanged when it is valid.
    pub omero: Option<Value>,
    /// Why the input's `omero` block was left out, if it was invalid.
    pub omero_dropped: Option<String>,
    /// Number of datasets the input lists.
    pub dataset_count: usize,
}

/// Problems in an input's OME metadata.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NgffError {
    /// `multiscales` is missing or not an array of objects as v0.4 describes.
    #[error("malformed OME `multiscales` metadata: {0}")]
    Malformed(String),
    /// `multiscales` lists no dataset.
    #[error("OME `multiscales` lists no dataset")]
    NoDatasets,
    /// A transformation has the wrong number of values.
    #[error("coordinate transformation of dataset `{path}` has {got} values but the image has {ndim} axes")]
    TransformLength {
        /// Dataset path.
        path: String,
        /// Values found.
        got: usize,
        /// Axes.
        ndim: usize,
    },
    /// A dataset path that would lead outside the image.
    #[error("dataset path `{0}` is not a relative path inside the image (no `..`, no absolute path)")]
    UnsafePath(String),
    /// Transformations that OME-NGFF v0.4 does not allow.
    #[error("invalid coordinateTransformations of {place}: {reason}")]
    InvalidTransforms {
        /// `dataset `0`` or `the multiscale`.
        place: String,
        /// What is wrong.
        reason: String,
    },
    /// A unit that OME-NGFF v0.4 does not list.
    #[error("unknown {kind} unit `{unit}`; OME-NGFF v0.4 expects one of: {expected}")]
    UnknownUnit {
        /// `space` or `time`.
        kind: &'static str,
        /// The unit given.
        unit: String,
        /// The accepted names.
        expected: String,
    },
}
