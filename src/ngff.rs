//! OME-NGFF v0.4 metadata (SPEC §4): the `multiscales` types, reading an input image's
//! metadata, and writing the output's. Pure: no I/O.
//!
//! Per axis, with cumulative factor `F(k)`, level-0 pixel size `s` and translation `t`:
//! `scale = s·F(k)`; `translation = t + s·(F(k) − 1)/2` for methods that represent the
//! window centre (mean, gaussian), `translation = t` for nearest.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::method::{Method, gaussian_sigma};
use crate::plan::{Axis, AxisKind, PyramidPlan};

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
    /// The `omero` block, carried over unchanged.
    pub omero: Option<Value>,
    /// Number of datasets the input lists.
    pub dataset_count: usize,
}

/// Reads the image metadata from a group's attributes (`.zattrs` of v0.4, or the `ome`
/// key of v0.5 `zarr.json` attributes). Returns `Ok(None)` when there is no `multiscales`.
///
/// # Errors
/// [`NgffError`] if `multiscales` exists but is malformed.
pub fn read_input_image(attributes: &Map<String, Value>) -> Result<Option<InputImage>, NgffError> {
    let root = match attributes.get("ome").and_then(Value::as_object) {
        Some(ome) if ome.contains_key("multiscales") => ome,
        _ => attributes,
    };
    let Some(multiscales) = root.get("multiscales") else {
        return Ok(None);
    };
    let list: Vec<Multiscale> =
        serde_json::from_value(multiscales.clone()).map_err(|e| NgffError::Malformed(e.to_string()))?;
    let first = list
        .into_iter()
        .next()
        .ok_or_else(|| NgffError::Malformed("empty list".into()))?;
    let dataset = first.datasets.first().ok_or(NgffError::NoDatasets)?;
    let ndim = first.axes.len();
    let mut scale = None;
    let mut translation = None;
    for t in &dataset.coordinate_transformations {
        let (values, slot) = match t {
            CoordinateTransformation::Scale { scale: s } => (s, &mut scale),
            CoordinateTransformation::Translation { translation: t } => (t, &mut translation),
            CoordinateTransformation::Identity => continue,
        };
        if ndim > 0 && values.len() != ndim {
            return Err(NgffError::TransformLength {
                path: dataset.path.clone(),
                got: values.len(),
                ndim,
            });
        }
        *slot = Some(values.clone());
    }
    let axes = first
        .axes
        .iter()
        .map(|a| Axis {
            name: a.name.clone(),
            kind: AxisKind::from_type_name(a.kind.as_deref()),
            unit: a.unit.clone(),
        })
        .collect();
    Ok(Some(InputImage {
        name: first.name.clone(),
        axes,
        level0_path: dataset.path.clone(),
        scale,
        translation,
        multiscale_transforms: first.coordinate_transformations.clone(),
        omero: root.get("omero").cloned(),
        dataset_count: first.datasets.len(),
    }))
}

/// Space units OME-NGFF v0.4 lists (UDUNITS-2 names).
pub const SPACE_UNITS: &[&str] = &[
    "angstrom",
    "attometer",
    "centimeter",
    "decimeter",
    "exameter",
    "femtometer",
    "foot",
    "gigameter",
    "hectometer",
    "inch",
    "kilometer",
    "megameter",
    "meter",
    "micrometer",
    "mile",
    "millimeter",
    "nanometer",
    "parsec",
    "petameter",
    "picometer",
    "terameter",
    "yard",
    "yoctometer",
    "yottameter",
    "zeptometer",
    "zettameter",
];

/// Time units OME-NGFF v0.4 lists.
pub const TIME_UNITS: &[&str] = &[
    "attosecond",
    "centisecond",
    "day",
    "decisecond",
    "exasecond",
    "femtosecond",
    "gigasecond",
    "hectosecond",
    "hour",
    "kilosecond",
    "megasecond",
    "microsecond",
    "millisecond",
    "minute",
    "nanosecond",
    "petasecond",
    "picosecond",
    "second",
    "terasecond",
    "yoctosecond",
    "yottasecond",
    "zeptosecond",
    "zettasecond",
];

/// Accepts a v0.4 space unit, or a common abbreviation (`um`, `µm`, `nm`, `mm`, `cm`, `m`, `Å`),
/// and returns the v0.4 name.
///
/// # Errors
/// [`NgffError::UnknownUnit`] listing the accepted names.
pub fn normalize_space_unit(unit: &str) -> Result<String, NgffError> {
    let canonical = match unit.trim() {
        "um" | "µm" | "μm" | "micron" | "microns" => "micrometer",
        "nm" => "nanometer",
        "mm" => "millimeter",
        "cm" => "centimeter",
        "m" => "meter",
        "Å" | "A" => "angstrom",
        "pm" => "picometer",
        other => other,
    };
    if SPACE_UNITS.contains(&canonical) {
        Ok(canonical.to_string())
    } else {
        Err(NgffError::UnknownUnit {
            kind: "space",
            unit: unit.to_string(),
            expected: SPACE_UNITS.join(", "),
        })
    }
}

/// Everything the output `multiscales` says.
#[derive(Debug, Clone)]
pub struct MultiscalesSpec<'a> {
    /// Image name.
    pub name: &'a str,
    /// Axes with units.
    pub axes: &'a [Axis],
    /// Level-0 pixel size per axis.
    pub pixel_size: &'a [f64],
    /// Level-0 translation per axis.
    pub translation: &'a [f64],
    /// The levels.
    pub plan: &'a PyramidPlan,
    /// The method.
    pub method: Method,
    /// True if the data type is an integer type (values are rounded).
    pub integer_dtype: bool,
    /// Backend description, e.g. `cpu (2 threads)`.
    pub backend: &'a str,
    /// Multiscale-level transformations to carry over.
    pub multiscale_transforms: Option<&'a [CoordinateTransformation]>,
}

/// Scale and translation of level `k`, per SPEC §4.
#[must_use]
pub fn level_transforms(spec: &MultiscalesSpec<'_>, level: usize) -> (Vec<f64>, Vec<f64>) {
    let factors = &spec.plan.levels[level].cumulative_factors;
    factors
        .iter()
        .zip(spec.pixel_size)
        .zip(spec.translation)
        .map(|((&factor, &pixel), &offset)| {
            #[allow(clippy::cast_precision_loss)]
            let f = factor as f64;
            let shift = if spec.method.samples_window_centre() {
                pixel * (f - 1.0) / 2.0
            } else {
                0.0
            };
            (pixel * f, offset + shift)
        })
        .unzip()
}

/// The output `multiscales` entry.
#[must_use]
pub fn build_multiscale(spec: &MultiscalesSpec<'_>) -> Multiscale {
    let datasets = (0..spec.plan.len())
        .map(|k| {
            let (scale, translation) = level_transforms(spec, k);
            Dataset {
                path: k.to_string(),
                coordinate_transformations: vec![
                    CoordinateTransformation::Scale { scale },
                    CoordinateTransformation::Translation { translation },
                ],
            }
        })
        .collect();
    let step_factors: Vec<&Vec<u32>> = spec.plan.levels[1..].iter().map(|l| &l.step_factors).collect();
    let mut metadata = json!({
        "method": spec.method.name(),
        "software": "ome-pyramid",
        "version": env!("CARGO_PKG_VERSION"),
        "factors": step_factors,
        "edges": "partial windows at the far edge; only in-bounds voxels are averaged",
        "rounding": if spec.integer_dtype { "nearest, ties to even, clamped to the dtype range" } else { "none (float)" },
        "backend": spec.backend,
    });
    if spec.method == Method::Gaussian {
        let sigma: Vec<Vec<f64>> = step_factors
            .iter()
            .map(|fs| {
                fs.iter()
                    .map(|&f| if f > 1 { gaussian_sigma(f) } else { 0.0 })
                    .collect()
            })
            .collect();
        metadata["sigma"] = json!(sigma);
        metadata["truncate"] = json!(4.0);
        metadata["border"] = json!("reflect (half-sample symmetric)");
        metadata["description"] =
            json!("gaussian blur along each reduced axis, then the window mean (scipy.ndimage.gaussian_filter + mean)");
    }
    Multiscale {
        version: Some("0.4".into()),
        name: Some(spec.name.to_string()),
        axes: spec
            .axes
            .iter()
            .map(|a| AxisMetadata {
                name: a.name.clone(),
                kind: a.kind.type_name().map(str::to_string),
                unit: a.unit.clone(),
            })
            .collect(),
        datasets,
        coordinate_transformations: spec.multiscale_transforms.map(<[_]>::to_vec),
        kind: Some(spec.method.name().into()),
        metadata: Some(metadata),
    }
}

/// The whole `.zattrs` of the output group.
#[must_use]
pub fn build_group_attributes(spec: &MultiscalesSpec<'_>, omero: Option<&Value>) -> Value {
    let mut root = Map::new();
    root.insert("multiscales".into(), json!([build_multiscale(spec)]));
    if let Some(omero) = omero {
        root.insert("omero".into(), omero.clone());
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FactorRule, PlanRequest, default_axes, plan_pyramid};

    #[test]
    fn transforms_follow_the_spec() {
        let axes = default_axes(3).unwrap();
        let plan = plan_pyramid(&PlanRequest {
            shape: vec![8, 64, 64],
            chunks: vec![8, 16, 16],
            axes: axes.clone(),
            pixel_size: vec![2.0, 0.5, 0.5],
            factors: FactorRule::Auto,
            levels: Some(3),
        })
        .unwrap();
        let mut spec = MultiscalesSpec {
            name: "x",
            axes: &axes,
            pixel_size: &[2.0, 0.5, 0.5],
            translation: &[10.0, 0.0, 0.0],
            plan: &plan,
            method: Method::Mean,
            integer_dtype: true,
            backend: "cpu",
            multiscale_transforms: None,
        };
        let (scale, translation) = level_transforms(&spec, 2);
        assert_eq!(scale, vec![2.0, 2.0, 2.0]);
        assert_eq!(translation, vec![10.0, 0.75, 0.75]);
        spec.method = Method::Nearest;
        assert_eq!(level_transforms(&spec, 2).1, vec![10.0, 0.0, 0.0]);
    }

    #[test]
    fn units_are_normalised() {
        assert_eq!(normalize_space_unit("um").unwrap(), "micrometer");
        assert_eq!(normalize_space_unit("nanometer").unwrap(), "nanometer");
        assert!(normalize_space_unit("furlong").is_err());
    }

    #[test]
    fn reads_v04_and_v05_layouts() {
        let v04 = json!({"multiscales": [{"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [0.5, 0.25]}]}]}],
            "omero": {"channels": []}});
        let image = read_input_image(v04.as_object().unwrap()).unwrap().unwrap();
        assert_eq!(image.level0_path, "s0");
        assert_eq!(image.scale, Some(vec![0.5, 0.25]));
        assert!(image.omero.is_some());
        let v05 = json!({"ome": v04});
        assert_eq!(
            read_input_image(v05.as_object().unwrap()).unwrap().unwrap().level0_path,
            "s0"
        );
        assert!(
            read_input_image(json!({"foo": 1}).as_object().unwrap())
                .unwrap()
                .is_none()
        );
        assert!(read_input_image(json!({"multiscales": 3}).as_object().unwrap()).is_err());
    }
}
