//! OME-NGFF v0.4: the image metadata is the Zarr v2 group's attributes (`.zattrs`), with
//! `multiscales` (and `omero`) at the top level.

use serde_json::{Map, Value, json};

use super::{MultiscalesSpec, build_multiscale};

/// The object holding `multiscales` in v0.4 group attributes: the attributes themselves.
#[must_use]
pub fn image_root(attributes: &Map<String, Value>) -> &Map<String, Value> {
    attributes
}

/// The whole `.zattrs` of a v0.4 output group.
#[must_use]
pub fn group_attributes(spec: &MultiscalesSpec<'_>, omero: Option<&Value>) -> Value {
    let mut root = Map::new();
    root.insert("multiscales".into(), json!([build_multiscale(spec)]));
    if let Some(omero) = omero {
        root.insert("omero".into(), omero.clone());
    }
    Value::Object(root)
}
