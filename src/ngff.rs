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
    for d in &first.datasets {
        check_dataset_path(&d.path)?;
    }
    let ndim = first.axes.len();
    let ScaleTranslation { scale, translation } = scale_and_translation(
        &dataset.coordinate_transformations,
        ndim,
        &format!("dataset `{}`", dataset.path),
    )?;
    if let Some(transforms) = &first.coordinate_transformations {
        scale_and_translation(transforms, ndim, "the multiscale")?;
    }
    let omero = root.get("omero").cloned();
    let omero_dropped = omero.as_ref().and_then(omero_problem);
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
        omero: omero.filter(|_| omero_dropped.is_none()),
        omero_dropped,
        dataset_count: first.datasets.len(),
    }))
}

/// Checks that a dataset path names something inside the image: relative, with `/`
/// separated parts that are neither empty, `.` nor `..`. `build` and `info` both read
/// datasets only through paths that pass.
///
/// # Errors
/// [`NgffError::UnsafePath`].
pub fn check_dataset_path(path: &str) -> Result<(), NgffError> {
    let trimmed = path.trim_end_matches('/');
    let safe = !trimmed.is_empty()
        && !trimmed.starts_with('/')
        && !trimmed.contains('\\')
        && !trimmed.contains(':')
        && trimmed
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if safe {
        Ok(())
    } else {
        Err(NgffError::UnsafePath(path.to_string()))
    }
}

/// What a v0.4 transformation list says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleTranslation {
    /// The scale, one value per axis.
    pub scale: Option<Vec<f64>>,
    /// The translation, one value per axis.
    pub translation: Option<Vec<f64>>,
}

/// The scale and translation of a v0.4 transformation list: exactly one `scale`, then at
/// most one `translation`, nothing else, each with one finite value per axis (scales
/// positive). An empty list (images older than v0.4 have none) gives neither.
///
/// # Errors
/// [`NgffError::InvalidTransforms`] or [`NgffError::TransformLength`].
pub fn scale_and_translation(
    transforms: &[CoordinateTransformation],
    ndim: usize,
    place: &str,
) -> Result<ScaleTranslation, NgffError> {
    let invalid = |reason: String| NgffError::InvalidTransforms {
        place: place.to_string(),
        reason,
    };
    let check_length = |values: &[f64]| {
        if ndim > 0 && values.len() != ndim {
            return Err(NgffError::TransformLength {
                path: place.to_string(),
                got: values.len(),
                ndim,
            });
        }
        Ok(())
    };
    let (scale, translation) = match transforms {
        [] => return Ok(ScaleTranslation::default()),
        [CoordinateTransformation::Scale { scale }] => (scale, None),
        [
            CoordinateTransformation::Scale { scale },
            CoordinateTransformation::Translation { translation },
        ] => (scale, Some(translation)),
        _ => {
            let kinds: Vec<&str> = transforms
                .iter()
                .map(|t| match t {
                    CoordinateTransformation::Scale { .. } => "scale",
                    CoordinateTransformation::Translation { .. } => "translation",
                    CoordinateTransformation::Identity => "identity",
                })
                .collect();
            return Err(invalid(format!(
                "found [{}]; OME-NGFF v0.4 requires [scale] or [scale, translation]",
                kinds.join(", ")
            )));
        }
    };
    check_length(scale)?;
    if let Some(&bad) = scale.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(invalid(format!("scale {bad} is not a positive finite number")));
    }
    if let Some(translation) = translation {
        check_length(translation)?;
        if let Some(&bad) = translation.iter().find(|v| !v.is_finite()) {
            return Err(invalid(format!("translation {bad} is not a finite number")));
        }
    }
    Ok(ScaleTranslation {
        scale: Some(scale.clone()),
        translation: translation.cloned(),
    })
}

/// Why an `omero` block is not valid OME-NGFF (v0.4 and v0.5 `image.schema` agree on it),
/// or `None` if it is.
#[must_use]
pub fn omero_problem(omero: &Value) -> Option<String> {
    let Some(omero) = omero.as_object() else {
        return Some("it is not a JSON object".into());
    };
    let Some(channels) = omero.get("channels").and_then(Value::as_array) else {
        return Some("`channels` must be a list".into());
    };
    for (i, channel) in channels.iter().enumerate() {
        let Some(channel) = channel.as_object() else {
            return Some(format!("channels[{i}] is not an object"));
        };
        match channel.get("color") {
            Some(Value::String(_)) => {}
            Some(other) => return Some(format!("channels[{i}].color must be a string, not {other}")),
            None => return Some(format!("channels[{i}] has no `color`")),
        }
        let Some(window) = channel.get("window").and_then(Value::as_object) else {
            return Some(format!("channels[{i}] has no `window` object"));
        };
        for key in ["start", "min", "end", "max"] {
            match window.get(key) {
                Some(Value::Number(_)) => {}
                Some(other) => return Some(format!("channels[{i}].window.{key} must be a number, not {other}")),
                None => return Some(format!("channels[{i}].window has no `{key}`")),
            }
        }
        for key in ["label", "family"] {
            if channel.get(key).is_some_and(|v| !v.is_string()) {
                return Some(format!("channels[{i}].{key} must be a string"));
            }
        }
        if channel.get("active").is_some_and(|v| !v.is_boolean()) {
            return Some(format!("channels[{i}].active must be true or false"));
        }
    }
    None
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

    #[test]
    fn dataset_paths_stay_inside_the_image() {
        for good in ["0", "s0", "scale0/image", "0/"] {
            check_dataset_path(good).unwrap();
        }
        for bad in [
            "",
            "..",
            "../x.zarr",
            "/abs/x.zarr",
            "a/../../b",
            "a//b",
            "./a",
            "C:\\x",
            "a\\..\\b",
        ] {
            assert!(check_dataset_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn transforms_follow_v04_exactly() {
        let scale = |v: Vec<f64>| CoordinateTransformation::Scale { scale: v };
        let translation = |v: Vec<f64>| CoordinateTransformation::Translation { translation: v };
        let ok = scale_and_translation(&[scale(vec![2.0, 1.0]), translation(vec![5.0, 0.0])], 2, "d").unwrap();
        assert_eq!(ok.scale, Some(vec![2.0, 1.0]));
        assert_eq!(ok.translation, Some(vec![5.0, 0.0]));
        assert_eq!(scale_and_translation(&[], 2, "d").unwrap(), ScaleTranslation::default());
        let refused = [
            vec![translation(vec![5.0, 0.0]), scale(vec![2.0, 1.0])],
            vec![scale(vec![2.0, 1.0]), scale(vec![4.0, 1.0])],
            vec![CoordinateTransformation::Identity],
            vec![scale(vec![0.0, 1.0])],
            vec![scale(vec![f64::INFINITY, 1.0])],
            vec![scale(vec![1.0, 1.0]), translation(vec![f64::NAN, 0.0])],
        ];
        for transforms in refused {
            assert!(scale_and_translation(&transforms, 2, "d").is_err(), "{transforms:?}");
        }
    }

    #[test]
    fn omero_problems_are_named() {
        let channel = json!({"color": "FF0000", "window": {"start": 0, "end": 1, "min": 0, "max": 1}});
        assert_eq!(omero_problem(&json!({"channels": [channel]})), None);
        assert_eq!(
            omero_problem(&json!({"channels": [{"color": 255, "window": {}}]})).as_deref(),
            Some("channels[0].color must be a string, not 255")
        );
        assert!(omero_problem(&json!({"channels": [{"color": "FF0000", "window": {"start": "a"}}]})).is_some());
        assert!(omero_problem(&json!({"channels": [{"color": "FF0000", "window": {"start": 0, "end": 1, "min": 0, "max": 1}, "active": 1}]})).is_some());
        assert!(omero_problem(&json!([])).is_some());
    }
}
