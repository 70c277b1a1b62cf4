//! Checks of an input image's metadata that both versions share: dataset paths that stay
//! inside the image, `[scale]` or `[scale, translation]` transformations with finite
//! values, and a valid `omero` block.

use serde_json::Value;

use super::{CoordinateTransformation, NgffError};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
