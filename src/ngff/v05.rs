//! OME-NGFF v0.5: the image metadata is the `ome` key of the Zarr v3 group's attributes
//! (in `zarr.json`), holding `version`, `multiscales` and `omero`.

use serde_json::{Map, Value};

/// The object holding `multiscales` in v0.5 group attributes: their `ome` key, if it holds
/// `multiscales`.
#[must_use]
pub fn image_root(attributes: &Map<String, Value>) -> Option<&Map<String, Value>> {
    attributes
        .get("ome")
        .and_then(Value::as_object)
        .filter(|ome| ome.contains_key("multiscales"))
}
