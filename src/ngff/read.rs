//! Reading an input image's metadata from its `multiscales` (the first one) and `omero`,
//! checked as [`validate`](super::validate) says. The same in v0.4 and v0.5; only where
//! the `multiscales` live differs ([`v04`](super::v04), [`v05`](super::v05)).

use serde_json::{Map, Value};

use super::validate::{ScaleTranslation, check_dataset_path, omero_problem, scale_and_translation};
use super::{AxisMetadata, InputImage, Multiscale, NgffError};

/// The first entry of `multiscales` in the object holding it (`None` when there is none),
/// with at least one dataset.
///
/// # Errors
/// [`NgffError::Malformed`] or [`NgffError::NoDatasets`].
pub fn first_multiscale(root: &Map<String, Value>) -> Result<Option<Multiscale>, NgffError> {
    let Some(list) = root.get("multiscales") else {
        return Ok(None);
    };
    let list: Vec<Multiscale> =
        serde_json::from_value(list.clone()).map_err(|e| NgffError::Malformed(e.to_string()))?;
    let first = list
        .into_iter()
        .next()
        .ok_or_else(|| NgffError::Malformed("empty list".into()))?;
    if first.datasets.is_empty() {
        return Err(NgffError::NoDatasets);
    }
    Ok(Some(first))
}

/// Reads the image metadata from the object holding `multiscales` (and `omero`): the
/// group attributes in v0.4, their `ome` key in v0.5. Returns `Ok(None)` when there is no
/// `multiscales`.
///
/// # Errors
/// [`NgffError`] if `multiscales` exists but is malformed or invalid.
pub fn read_image(root: &Map<String, Value>) -> Result<Option<InputImage>, NgffError> {
    let Some(first) = first_multiscale(root)? else {
        return Ok(None);
    };
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
    let axes = first.axes.iter().map(AxisMetadata::to_axis).collect();
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
