//! The keyword arguments of the Python functions, as the `options` dict the package's
//! wrappers pass, turned into the library's [`BuildOptions`] with the CLI's defaults and
//! checks. A value of the wrong type or out of range is an `InvalidInputError` naming the
//! keyword.

use std::path::PathBuf;
use std::str::FromStr;

use ome_pyramid::engine::RunSettings;
use ome_pyramid::plan::ShardChoice;
use ome_pyramid::{BuildOptions, Compression};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::InvalidInputError;

/// The keywords `options` may hold.
const KEYWORDS: &[&str] = &[
    "method",
    "backend",
    "levels",
    "factors",
    "axes",
    "scale",
    "unit",
    "chunks",
    "compression",
    "clevel",
    "memory",
    "threads",
    "name",
    "ngff_version",
    "shards",
    "shard_size",
    "overwrite",
    "resume",
    "series",
];

fn invalid(keyword: &str, reason: impl std::fmt::Display) -> PyErr {
    InvalidInputError::new_err(format!("invalid {keyword}: {reason}"))
}

/// The value given for `keyword`: `None` when it is absent or `None`.
fn present<'py>(options: &Bound<'py, PyDict>, keyword: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(options.get_item(keyword)?.filter(|value| !value.is_none()))
}

/// The value of `keyword`, `None` when absent or `None`; `expected` names the type in the
/// message for a value of another type.
fn get<'py, T: FromPyObjectOwned<'py>>(
    options: &Bound<'py, PyDict>,
    keyword: &str,
    expected: &str,
) -> PyResult<Option<T>> {
    let Some(value) = present(options, keyword)? else {
        return Ok(None);
    };
    value.extract().map(Some).map_err(|_| {
        let given = value
            .get_type()
            .name()
            .map_or_else(|_| "?".to_string(), |n| n.to_string());
        invalid(keyword, format!("expected {expected}, got {given}"))
    })
}

/// A textual choice parsed with the library's own parser (the CLI's messages).
fn parsed<T: FromStr>(options: &Bound<'_, PyDict>, keyword: &str) -> PyResult<Option<T>>
where
    T::Err: std::fmt::Display,
{
    get::<String>(options, keyword, "a str")?
        .map(|text| text.parse().map_err(|e| invalid(keyword, e)))
        .transpose()
}

/// A byte count given as a number or as text with a unit (`"4GiB"`).
fn size(options: &Bound<'_, PyDict>, keyword: &str) -> PyResult<Option<u64>> {
    let Some(value) = present(options, keyword)? else {
        return Ok(None);
    };
    if let Ok(text) = value.cast::<PyString>() {
        return ome_pyramid::units::parse_size(&text.to_cow()?)
            .map(Some)
            .map_err(|e| invalid(keyword, e));
    }
    value
        .extract::<u64>()
        .map(Some)
        .map_err(|_| invalid(keyword, "expected a number of bytes or a size such as \"4GiB\""))
}

/// Values by axis name, in the order given.
fn by_axis<'py, V: FromPyObjectOwned<'py>>(
    options: &Bound<'py, PyDict>,
    keyword: &str,
) -> PyResult<Option<Vec<(String, V)>>> {
    let Some(value) = present(options, keyword)? else {
        return Ok(None);
    };
    let dict = value
        .cast::<PyDict>()
        .map_err(|_| invalid(keyword, "expected a dict by axis name, such as {\"y\": 2, \"x\": 2}"))?;
    let values: PyResult<Vec<(String, V)>> = dict
        .iter()
        .map(|(axis, v)| {
            let axis: String = axis.extract().map_err(|_| invalid(keyword, "axis names are strings"))?;
            let v: V = v
                .extract()
                .map_err(|_| invalid(keyword, format!("the value of axis `{axis}` has the wrong type")))?;
            Ok((axis, v))
        })
        .collect();
    values.map(Some)
}

/// The build options of `options`, every absent keyword at the CLI's default.
pub(crate) fn build_options(options: &Bound<'_, PyDict>) -> PyResult<BuildOptions> {
    for key in options.keys() {
        let key: String = key.extract()?;
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(invalid("keyword", format!("`{key}` is not an option")));
        }
    }
    let defaults = BuildOptions::default();
    let factors = match present(options, "factors")? {
        Some(value) if value.is_instance_of::<PyString>() => {
            let text: String = value.extract()?;
            match text.to_ascii_lowercase().as_str() {
                "auto" => None,
                "xy" => Some(vec![("y".to_string(), 2), ("x".to_string(), 2)]),
                _ => {
                    return Err(invalid(
                        "factors",
                        format!("`{text}`: expected \"auto\", \"xy\" or a dict"),
                    ));
                }
            }
        }
        _ => by_axis::<u32>(options, "factors")?,
    };
    if let Some((axis, _)) = factors.iter().flatten().find(|(_, f)| *f == 0) {
        return Err(invalid(
            "factors",
            format!("the factor of axis `{axis}` must be at least 1"),
        ));
    }
    let scale = by_axis::<f64>(options, "scale")?.unwrap_or_default();
    if let Some((axis, v)) = scale.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
        return Err(invalid(
            "scale",
            format!("the pixel size of axis `{axis}` must be a positive number, not {v}"),
        ));
    }
    let chunks: Option<Vec<u64>> = get(options, "chunks", "a sequence of positive ints")?;
    if chunks.iter().flatten().any(|&c| c == 0) {
        return Err(invalid("chunks", "every chunk length must be at least 1"));
    }
    Ok(BuildOptions {
        method: parsed(options, "method")?.unwrap_or(defaults.method),
        backend: parsed(options, "backend")?.unwrap_or(defaults.backend),
        levels: get(options, "levels", "a positive int")?,
        factors,
        axes: get(options, "axes", "a str such as \"zyx\"")?,
        scale,
        unit: get(options, "unit", "a str such as \"micrometer\"")?,
        chunks,
        compression: parsed::<Compression>(options, "compression")?.unwrap_or(defaults.compression),
        clevel: get(options, "clevel", "an int")?,
        overwrite: get(options, "overwrite", "a bool")?.unwrap_or(false),
        memory_bytes: size(options, "memory")?.unwrap_or(defaults.memory_bytes),
        threads: get(options, "threads", "a positive int")?,
        name: get(options, "name", "a str")?,
        resume: get(options, "resume", "a bool")?.unwrap_or(false),
        ngff_version: parsed(options, "ngff_version")?.unwrap_or(defaults.ngff_version),
        shards: parsed::<ShardChoice>(options, "shards")?,
        shard_size: size(options, "shard_size")?,
        series: get(options, "series", "an int")?,
    })
}

/// What a part or `finalize` may set on its own host: `memory`, `threads`, `backend`.
pub(crate) fn run_settings(options: &Bound<'_, PyDict>) -> PyResult<RunSettings> {
    for key in options.keys() {
        let key: String = key.extract()?;
        if !["memory", "threads", "backend"].contains(&key.as_str()) {
            return Err(invalid(
                "keyword",
                format!("`{key}` is not an option of a part or finalize"),
            ));
        }
    }
    Ok(RunSettings {
        memory_bytes: size(options, "memory")?,
        threads: get(options, "threads", "a positive int")?,
        backend: parsed(options, "backend")?,
        ..RunSettings::default()
    })
}

/// A path argument: a `str` or an `os.PathLike`.
pub(crate) fn path(value: &Bound<'_, PyAny>, what: &str) -> PyResult<PathBuf> {
    value
        .extract()
        .map_err(|_| invalid(what, "expected a path (str or os.PathLike)"))
}
