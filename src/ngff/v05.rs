//! OME-NGFF v0.5: the image metadata is the `ome` key of the Zarr v3 group's attributes
//! (in `zarr.json`), holding `version`, `multiscales` and `omero`.

use serde_json::{Map, Value, json};

use super::{MultiscalesSpec, build_multiscale};

/// The object holding `multiscales` in v0.5 group attributes: their `ome` key, if it holds
/// `multiscales`.
#[must_use]
pub fn image_root(attributes: &Map<String, Value>) -> Option<&Map<String, Value>> {
    attributes
        .get("ome")
        .and_then(Value::as_object)
        .filter(|ome| ome.contains_key("multiscales"))
}

/// The attributes of a v0.5 output group: `ome` with `version`, `multiscales` (whose
/// entries carry no version of their own in 0.5) and `omero`.
#[must_use]
pub fn group_attributes(spec: &MultiscalesSpec<'_>, omero: Option<&Value>) -> Value {
    let mut multiscale = build_multiscale(spec);
    multiscale.version = None;
    let mut ome = Map::new();
    ome.insert("version".into(), json!("0.5"));
    ome.insert("multiscales".into(), json!([multiscale]));
    if let Some(omero) = omero {
        ome.insert("omero".into(), omero.clone());
    }
    json!({"ome": ome})
}
