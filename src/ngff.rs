//! OME-NGFF metadata (SPEC §4): reading an input image's metadata and writing the output's.
//! Pure: no I/O.
//!
//! - [`types`]: the serde types shared by v0.4 and v0.5 (`multiscales`, axes, datasets,
//!   coordinate transformations) and what a build takes from an input.
//! - [`read`] and [`validate`]: reading an input's `multiscales` and `omero`, refusing what
//!   is invalid.
//! - [`multiscales`]: the output's `multiscales` entry, scale and translation per level.
//! - [`omero`]: the display block written for images that have none.
//! - [`label`]: the `image-label` block of label images and the `labels` group's list.
//! - [`v04`] and [`v05`]: where each version keeps the image metadata.
//! - [`units`]: the unit names OME-NGFF lists.

pub mod label;
pub mod multiscales;
pub mod omero;
pub mod read;
pub mod types;
pub mod units;
pub mod v04;
pub mod v05;
pub mod validate;

use serde_json::{Map, Value};

pub use multiscales::{MultiscalesSpec, build_multiscale, level_transforms};
pub use types::{AxisMetadata, CoordinateTransformation, Dataset, InputImage, Multiscale, NgffError, NgffVersion};
pub use units::{SPACE_UNITS, TIME_UNITS, normalize_space_unit};
pub use validate::{ScaleTranslation, check_dataset_path, omero_problem, scale_and_translation};

/// Reads the image metadata from a group's attributes: the `ome` key of v0.5, or the
/// attributes themselves in v0.4. Returns `Ok(None)` when there is no `multiscales`.
///
/// # Errors
/// [`NgffError`] if `multiscales` exists but is malformed or invalid.
pub fn read_input_image(attributes: &Map<String, Value>) -> Result<Option<InputImage>, NgffError> {
    let root = v05::image_root(attributes).unwrap_or_else(|| v04::image_root(attributes));
    read::read_image(root)
}

/// The group attributes of an output image: `.zattrs` of v0.4, or the attributes of the
/// group's `zarr.json` in v0.5. A label image has an `image-label` block (see
/// [`label::image_label`]) and usually no `omero`.
#[must_use]
pub fn group_attributes(
    version: NgffVersion,
    spec: &MultiscalesSpec<'_>,
    omero: Option<&Value>,
    image_label: Option<&Value>,
) -> Value {
    let mut attributes = match version {
        NgffVersion::V04 => v04::group_attributes(spec, omero),
        NgffVersion::V05 => v05::group_attributes(spec, omero),
    };
    if let Some(block) = image_label {
        let block = label::versioned_image_label(version, block);
        let root = match version {
            NgffVersion::V04 => Some(&mut attributes),
            NgffVersion::V05 => attributes.get_mut("ome"),
        };
        if let Some(Value::Object(root)) = root {
            root.insert("image-label".into(), block);
        }
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
