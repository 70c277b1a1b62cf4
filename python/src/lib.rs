//! `ome_pyramid._native`: the extension module under the Python package `ome_pyramid`.
//!
//! The package's Python layer (`ome_pyramid/__init__.py`) gives the documented, typed
//! functions; each calls one function here with its keyword arguments gathered in an
//! `options` dict, and turns the JSON report returned into a `BuildReport`.
//!
//! - [`options`]: the keywords into the library's `BuildOptions`, with the CLI's defaults;
//! - [`array`]: NumPy arrays read in place as `NdarraySource`s;
//! - [`run`]: a build on the engine's threads with the GIL released, progress, Ctrl-C and
//!   the exceptions.

mod array;
mod options;
mod run;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use ome_pyramid::{LabelsBuilder, PyramidBuilder};

pyo3::create_exception!(
    ome_pyramid,
    InvalidInputError,
    pyo3::exceptions::PyValueError,
    "The input or an option is invalid (the CLI's exit status 2); nothing was written."
);
pyo3::create_exception!(
    ome_pyramid,
    BuildError,
    pyo3::exceptions::PyRuntimeError,
    "The build failed while running (a read or write failure, a lost GPU); the finished work is kept and `resume=True` continues it."
);

/// `build(input, output, options, progress)`: a pyramid from a Zarr, OME-Zarr or TIFF input
/// on disk; returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (input, output, options, progress=None))]
fn build(
    py: Python<'_>,
    input: &Bound<'_, PyAny>,
    output: &Bound<'_, PyAny>,
    options: &Bound<'_, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let input = options::path(input, "input")?;
    let output = options::path(output, "output")?;
    let builder = PyramidBuilder::new(input, output).options(options::build_options(options)?);
    run::run_build(py, builder, progress)
}

/// `write_image(image, output, options, progress)`: a pyramid from a NumPy array, read in
/// place; returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (image, output, options, progress=None))]
fn write_image(
    py: Python<'_>,
    image: &Bound<'_, PyAny>,
    output: &Bound<'_, PyAny>,
    options: &Bound<'_, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let output = options::path(output, "output")?;
    let options = options::build_options(options)?;
    array::with_array_source!(image, |source| {
        let builder = PyramidBuilder::from_source(source, output).options(options);
        run::run_build(py, builder, progress)
    })
}

/// `labels(image, segmentation, name, options, colors, properties, progress)`: the label
/// image `name` of the OME-Zarr image `image`, from a segmentation on disk or a NumPy array;
/// `colors` and `properties` are JSON text. Returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (image, segmentation, name, options, colors=None, properties=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn labels(
    py: Python<'_>,
    image: &Bound<'_, PyAny>,
    segmentation: &Bound<'_, PyAny>,
    name: String,
    options: &Bound<'_, PyDict>,
    colors: Option<String>,
    properties: Option<String>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let image = options::path(image, "image")?;
    let options = options::build_options(options)?;
    let json = |what: &str, text: Option<String>| -> PyResult<Option<serde_json::Value>> {
        text.map(|t| serde_json::from_str(&t).map_err(|e| InvalidInputError::new_err(format!("invalid {what}: {e}"))))
            .transpose()
    };
    let (colors, properties) = (json("colors", colors)?, json("properties", properties)?);
    let finish = |builder| with_settings(builder, &options, colors.as_ref(), properties.as_ref());
    if segmentation.hasattr("__array_interface__")? {
        array::with_array_source!(segmentation, |source| {
            run::run_build(py, finish(LabelsBuilder::from_source(image, source, name)), progress)
        })
    } else {
        let segmentation = options::path(segmentation, "segmentation")?;
        run::run_build(py, finish(LabelsBuilder::new(image, segmentation, name)), progress)
    }
}

/// `builder` with the engine options and the `image-label` colours and properties.
fn with_settings<'a>(
    builder: LabelsBuilder<'a>,
    options: &ome_pyramid::BuildOptions,
    colors: Option<&serde_json::Value>,
    properties: Option<&serde_json::Value>,
) -> LabelsBuilder<'a> {
    let mut builder = builder.options(options.clone());
    if let Some(colors) = colors {
        builder = builder.colors(colors.clone());
    }
    if let Some(properties) = properties {
        builder = builder.properties(properties.clone());
    }
    builder
}

/// `info(path)`: what a Zarr array, an OME-Zarr image or a TIFF input holds, as JSON (the
/// CLI's `info --json`).
#[pyfunction]
fn info(py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<String> {
    let path = options::path(path, "path")?;
    let described = py.detach(|| ome_pyramid::info::describe(&path));
    described
        .map(|info| info.to_string())
        .map_err(|e| run::exception(e.is_invalid_input(), &e))
}

/// `plan(input, output, parts, options, progress)`: plans a partitioned build of `parts`
/// parts; returns the plan report as JSON.
#[pyfunction]
#[pyo3(signature = (input, output, parts, options, progress=None))]
fn plan(
    py: Python<'_>,
    input: &Bound<'_, PyAny>,
    output: &Bound<'_, PyAny>,
    parts: usize,
    options: &Bound<'_, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let input = options::path(input, "input")?;
    let output = options::path(output, "output")?;
    let builder = PyramidBuilder::new(input, output).options(options::build_options(options)?);
    run::run_build(py, run::Plan { builder, parts }, progress)
}

/// `part(output, index, settings, progress)`: runs one part of a planned build (`index`
/// `None`: the scheduler's array task index); returns its report as JSON.
#[pyfunction]
#[pyo3(signature = (output, index, settings, progress=None))]
fn part(
    py: Python<'_>,
    output: &Bound<'_, PyAny>,
    index: Option<usize>,
    settings: &Bound<'_, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let step = run::PartitionStep {
        output: options::path(output, "output")?,
        settings: options::run_settings(settings)?,
    };
    let index = match index {
        Some(index) => index,
        None => ome_pyramid::scheduler::task_index(|name| std::env::var(name).ok())
            .map_err(|e| InvalidInputError::new_err(e.to_string()))
            .and_then(|found| {
                usize::try_from(found.index).map_err(|_| InvalidInputError::new_err("the task index is too large"))
            })?,
    };
    run::run_build(py, run::Part(step, index), progress)
}

/// `finalize(output, settings, progress)`: finishes a planned build once every part has;
/// returns the build report as JSON.
#[pyfunction]
#[pyo3(signature = (output, settings, progress=None))]
fn finalize(
    py: Python<'_>,
    output: &Bound<'_, PyAny>,
    settings: &Bound<'_, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let step = run::PartitionStep {
        output: options::path(output, "output")?,
        settings: options::run_settings(settings)?,
    };
    run::run_build(py, run::Finalize(step), progress)
}

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("GPU_SUPPORT", ome_pyramid::backend::GPU_SUPPORT)?;
    m.add("InvalidInputError", m.py().get_type::<InvalidInputError>())?;
    m.add("BuildError", m.py().get_type::<BuildError>())?;
    m.add_function(wrap_pyfunction!(build, m)?)?;
    m.add_function(wrap_pyfunction!(write_image, m)?)?;
    m.add_function(wrap_pyfunction!(labels, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(part, m)?)?;
    m.add_function(wrap_pyfunction!(finalize, m)?)?;
    Ok(())
}
