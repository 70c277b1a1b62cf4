//! Label images (OME-NGFF "labels"): the `image-label` block of a label image, the list of
//! label images in an image's `labels` group, and default colours. Pure: no I/O.
//!
//! - `image-label` holds `version` (0.4; in 0.5 the `ome` block's version stands for it),
//!   `source.image = "../../"` (the parent image, two groups up), `colors` and, if given,
//!   `properties`. The strict label schemas require `colors`.
//! - Default colours: label 0 (background) transparent, every other value an opaque colour
//!   that depends only on the value (golden-ratio hues), so a label keeps its colour
//!   whichever tool or run wrote it.
//! - The `labels` group lists the label images by name: `.zattrs` `{"labels": [...]}` in
//!   0.4, `zarr.json` attributes `{"ome": {"version": "0.5", "labels": [...]}}` in 0.5.

use serde_json::{Map, Value, json};

use super::NgffVersion;

/// Most label values given a default colour each; above it only the background has one.
pub const MAX_DEFAULT_COLORS: usize = 4096;

/// Why a `--colors` or `--properties` list, or a label name, is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LabelMetadataError(pub String);

/// Checks a label image name: one non-empty path component that Zarr stores and every file
/// system can hold.
///
/// # Errors
/// [`LabelMetadataError`] naming what is wrong.
pub fn check_label_name(name: &str) -> Result<(), LabelMetadataError> {
    let bad = |why: &str| Err(LabelMetadataError(format!("label name `{name}` {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return bad("starts with `.` (names starting with a dot are reserved by Zarr)");
    }
    if name.contains(['/', '\\', ':']) || name.chars().any(char::is_control) {
        return bad("holds `/`, `\\`, `:` or a control character; it must be one path component");
    }
    Ok(())
}

/// Checks a `colors` list: a non-empty array of distinct objects with a numeric
/// `label-value` and an optional `rgba` of four integers 0 to 255 (the label schema).
///
/// # Errors
/// [`LabelMetadataError`] naming the first offending entry.
pub fn check_colors(colors: &Value) -> Result<(), LabelMetadataError> {
    check_entries(colors, |i, entry| {
        if !entry.get("label-value").is_some_and(Value::is_number) {
            return Err(format!("entry {i} needs a numeric `label-value`"));
        }
        match entry.get("rgba") {
            None => Ok(()),
            Some(Value::Array(rgba))
                if rgba.len() == 4 && rgba.iter().all(|c| c.as_u64().is_some_and(|c| c <= 255)) =>
            {
                Ok(())
            }
            Some(other) => Err(format!(
                "entry {i} has `rgba` {other}; it must be four integers from 0 to 255"
            )),
        }
    })
}

/// Checks a `properties` list: a non-empty array of distinct objects with an integer
/// `label-value` (the label schema); other keys are free.
///
/// # Errors
/// [`LabelMetadataError`] naming the first offending entry.
pub fn check_properties(properties: &Value) -> Result<(), LabelMetadataError> {
    check_entries(properties, |i, entry| match entry.get("label-value") {
        Some(v) if v.is_i64() || v.is_u64() => Ok(()),
        _ => Err(format!("entry {i} needs an integer `label-value`")),
    })
}

fn check_entries(
    list: &Value,
    check: impl Fn(usize, &Map<String, Value>) -> Result<(), String>,
) -> Result<(), LabelMetadataError> {
    let fail = |reason: String| Err(LabelMetadataError(reason));
    let Some(entries) = list.as_array() else {
        return fail(format!(
            "expected a JSON list of objects with a `label-value`, found {}",
            kind_of(list)
        ));
    };
    if entries.is_empty() {
        return fail("the list is empty".into());
    }
    for (i, entry) in entries.iter().enumerate() {
        let Some(object) = entry.as_object() else {
            return fail(format!("entry {i} is {}, not an object", kind_of(entry)));
        };
        if let Err(reason) = check(i, object) {
            return fail(reason);
        }
        if entries[..i].contains(entry) {
            return fail(format!("entry {i} repeats an earlier entry"));
        }
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The `image-label` block: `colors` (or `None` to have default colours measured),
/// `properties` if given, and the source image two groups up.
#[must_use]
pub fn image_label(colors: Option<&Value>, properties: Option<&Value>) -> Value {
    let mut block = Map::new();
    block.insert("source".into(), json!({"image": "../../"}));
    if let Some(colors) = colors {
        block.insert("colors".into(), colors.clone());
    }
    if let Some(properties) = properties {
        block.insert("properties".into(), properties.clone());
    }
    Value::Object(block)
}

/// The `image-label` block as `version` writes it: 0.4 names its version inside the block.
#[must_use]
pub fn versioned_image_label(version: NgffVersion, block: &Value) -> Value {
    let mut block = block.clone();
    if let (NgffVersion::V04, Some(map)) = (version, block.as_object_mut()) {
        map.insert("version".into(), json!("0.4"));
    }
    block
}

/// The default colour of a label value: transparent for 0 (background), else an opaque
/// colour from a golden-ratio hue, so neighbouring values differ.
#[must_use]
pub fn default_rgba(value: i128) -> [u8; 4] {
    if value == 0 {
        return [0, 0, 0, 0];
    }
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    #[allow(clippy::cast_precision_loss)]
    let hue = (value as f64 * GOLDEN).rem_euclid(1.0);
    let [r, g, b] = hsv_to_rgb(hue, 0.7, 0.95);
    [r, g, b, 255]
}

/// `colors` for the given label values (ascending, distinct): one entry each, or only the
/// background's when there are more than [`MAX_DEFAULT_COLORS`].
#[must_use]
pub fn default_colors(values: &[i128]) -> Value {
    let entry = |v: i128| {
        let number = i64::try_from(v).map_or_else(|_| json!(u64::try_from(v).unwrap_or(u64::MAX)), |v| json!(v));
        json!({"label-value": number, "rgba": default_rgba(v)})
    };
    if values.len() > MAX_DEFAULT_COLORS || values.is_empty() {
        return json!([entry(0)]);
    }
    Value::Array(values.iter().map(|&v| entry(v)).collect())
}

fn hsv_to_rgb(hue: f64, saturation: f64, value: f64) -> [u8; 3] {
    let sector = hue * 6.0;
    let f = sector.fract();
    let (p, q, t) = (
        value * (1.0 - saturation),
        value * (1.0 - saturation * f),
        value * (1.0 - saturation * (1.0 - f)),
    );
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (r, g, b) = match sector as u32 % 6 {
        0 => (value, t, p),
        1 => (q, value, p),
        2 => (p, value, t),
        3 => (p, q, value),
        4 => (t, p, value),
        _ => (value, p, q),
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let byte = |c: f64| (c * 255.0).round().clamp(0.0, 255.0) as u8;
    [byte(r), byte(g), byte(b)]
}

/// The label image names a `labels` group's attributes list (empty when there are none).
#[must_use]
pub fn label_names(attributes: &Map<String, Value>) -> Vec<String> {
    let list = attributes
        .get("labels")
        .or_else(|| attributes.get("ome").and_then(|ome| ome.get("labels")));
    list.and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The attributes of a `labels` group listing `names`, keeping any other attributes it had.
#[must_use]
pub fn labels_group_attributes(version: NgffVersion, previous: &Map<String, Value>, names: &[String]) -> Value {
    let mut attributes = previous.clone();
    match version {
        NgffVersion::V04 => {
            attributes.insert("labels".into(), json!(names));
        }
        NgffVersion::V05 => {
            let ome = attributes.entry("ome").or_insert_with(|| json!({}));
            if let Some(ome) = ome.as_object_mut() {
                ome.insert("version".into(), json!("0.5"));
                ome.insert("labels".into(), json!(names));
            }
        }
    }
    Value::Object(attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_safe_path_component() {
        assert!(check_label_name("cells").is_ok());
        assert!(check_label_name("nuclei 2").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "c:", "a\nb"] {
            assert!(check_label_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn colors_and_properties_follow_the_label_schema() {
        assert!(check_colors(&json!([{"label-value": 1, "rgba": [255, 0, 0, 255]}, {"label-value": 2.5}])).is_ok());
        let refused = [
            json!({"label-value": 1}),
            json!([]),
            json!([{"rgba": [1, 2, 3, 4]}]),
            json!([{"label-value": "1"}]),
            json!([{"label-value": 1, "rgba": [256, 0, 0, 0]}]),
            json!([{"label-value": 1, "rgba": [1, 2, 3]}]),
            json!([{"label-value": 1}, {"label-value": 1}]),
            json!([3]),
        ];
        for colors in refused {
            assert!(check_colors(&colors).is_err(), "{colors}");
        }
        assert!(check_properties(&json!([{"label-value": 1, "class": "nucleus"}])).is_ok());
        let message = check_properties(&json!([{"label-value": 1.5}]))
            .unwrap_err()
            .to_string();
        assert_eq!(message, "entry 0 needs an integer `label-value`");
    }

    #[test]
    fn default_colors_hide_the_background_and_tell_labels_apart() {
        assert_eq!(default_rgba(0), [0, 0, 0, 0]);
        let (a, b) = (default_rgba(1), default_rgba(2));
        assert_eq!(a[3], 255);
        assert_ne!(a, b);
        assert_eq!(default_rgba(1), a, "a value's colour does not change");
        let colors = default_colors(&[0, 1, i128::from(u64::MAX)]);
        assert_eq!(colors[2]["label-value"], json!(u64::MAX), "exact for 64-bit labels");
        assert_eq!(colors.as_array().unwrap().len(), 3);
        let many: Vec<i128> = (0..=4096).collect();
        assert_eq!(default_colors(&many), json!([{"label-value": 0, "rgba": [0, 0, 0, 0]}]));
    }

    #[test]
    fn the_labels_list_is_kept_in_the_place_each_version_reads() {
        let names = vec!["cells".to_string(), "nuclei".to_string()];
        let v04 = labels_group_attributes(NgffVersion::V04, &Map::new(), &names);
        assert_eq!(v04, json!({"labels": ["cells", "nuclei"]}));
        assert_eq!(label_names(v04.as_object().unwrap()), names);
        let previous = json!({"note": 1}).as_object().unwrap().clone();
        let v05 = labels_group_attributes(NgffVersion::V05, &previous, &names[..1]);
        assert_eq!(v05, json!({"note": 1, "ome": {"version": "0.5", "labels": ["cells"]}}));
        assert_eq!(label_names(v05.as_object().unwrap()), &names[..1]);
        let block = image_label(None, None);
        assert_eq!(versioned_image_label(NgffVersion::V04, &block)["version"], "0.4");
        assert!(versioned_image_label(NgffVersion::V05, &block).get("version").is_none());
    }
}
