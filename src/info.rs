//! What a Zarr array, an OME-Zarr image or a TIFF input holds, as JSON: levels, shapes,
//! chunks, dtype, codecs, transforms and label images of Zarr, and what `build` makes of a
//! TIFF input (series, axes, scales, layout, codec). `ome-pyramid info` prints it, as text
//! or with `--json` as it is; the Python package returns it as a dict.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::ngff::NgffVersion;
use crate::store::{self, ChunkSource, NodeKind, StoreError};

/// The description of `path` (the JSON of `ome-pyramid info --json`).
///
/// # Errors
/// [`StoreError`] if `path` does not exist or is neither Zarr nor TIFF input, or its
/// metadata cannot be read.
pub fn describe(path: &Path) -> Result<Value, StoreError> {
    if store::is_tiff_input(path) {
        let mut info = store::describe_tiff(path)?;
        info["path"] = json!(path);
        return Ok(info);
    }
    if !path.exists() {
        return Err(StoreError::NotFound(path.to_path_buf()));
    }
    if !path.is_dir() {
        // A Zarr node is a folder; a file that is not TIFF is neither.
        return Err(StoreError::NotZarr(path.to_path_buf()));
    }
    let node = store::probe_node(path)?;
    let info = match node {
        NodeKind::ArrayV2(_) | NodeKind::ArrayV3(_) => json!({
            "path": path,
            "kind": "array",
            "arrays": [array_info(path, "")?],
        }),
        NodeKind::Group(attributes) => {
            let image = crate::ngff::read_input_image(&attributes).map_err(|source| StoreError::Ngff {
                path: path.to_path_buf(),
                source,
            })?;
            let first = first_multiscale(&attributes).cloned().unwrap_or_default();
            let mut arrays = Vec::new();
            for d in datasets_of(&first) {
                let p = d.get("path").and_then(|p| p.as_str()).unwrap_or_default();
                let mut entry = array_info(&path.join(p), p)?;
                entry["coordinateTransformations"] = d.get("coordinateTransformations").cloned().unwrap_or_default();
                arrays.push(entry);
            }
            let root = attributes.get("ome").and_then(|o| o.as_object()).unwrap_or(&attributes);
            let partitioned = crate::engine::parts_status(path);
            let kind = match (&image, root.get("image-label")) {
                (None, _) if partitioned.is_some() => "partitioned build in progress",
                (None, _) => "group",
                (Some(_), None) => "ome-zarr image",
                (Some(_), Some(_)) => "ome-zarr label image",
            };
            json!({
                "path": path,
                "kind": kind,
                "image-label": root.get("image-label"),
                "labels": labels_info(path, &attributes)?,
                "version": first
                    .get("version")
                    .or_else(|| attributes.get("ome").and_then(|o| o.get("version"))),
                "name": first.get("name"),
                "axes": first.get("axes"),
                "type": first.get("type"),
                "metadata": first.get("metadata"),
                "arrays": arrays,
                "partitioned": partitioned.map(|(plan, parts)| json!({
                    "levels": plan.levels,
                    "part_last_level": plan.part_last_level,
                    "parts": parts.iter().enumerate().map(|(i, status)| {
                        let mut entry = json!(status);
                        entry["part"] = json!(i);
                        entry["description"] = json!(format!("part {i} {}", status.describe()));
                        entry
                    }).collect::<Vec<_>>(),
                })),
            })
        }
    };
    Ok(info)
}

/// The first `multiscales` entry of a group's attributes as written (0.4 at the top, 0.5
/// under `ome`), unchecked: `info` shows what is there.
fn first_multiscale(attributes: &Map<String, Value>) -> Option<&Value> {
    attributes
        .get("multiscales")
        .or_else(|| attributes.get("ome").and_then(|o| o.get("multiscales")))
        .and_then(|m| m.get(0))
}

/// The `datasets` a `multiscales` entry lists (none when it lists none).
fn datasets_of(multiscale: &Value) -> &[Value] {
    multiscale
        .get("datasets")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// How many datasets the first `multiscales` entry of a group lists.
fn dataset_count(node: &NodeKind) -> usize {
    match node {
        NodeKind::Group(attributes) => first_multiscale(attributes).map_or(0, |m| datasets_of(m).len()),
        _ => 0,
    }
}

/// The label images an image's `labels` group lists: name, dtype, level-0 shape, levels.
fn labels_info(image: &Path, attributes: &serde_json::Map<String, Value>) -> Result<Vec<Value>, StoreError> {
    let version = if attributes.contains_key("ome") {
        NgffVersion::V05
    } else {
        NgffVersion::V04
    };
    let mut labels = Vec::new();
    for name in crate::labels::list_labels(image, version)? {
        let dir = image.join("labels").join(&name);
        let entry = match store::open_source(&dir).and_then(|source| Ok((source, store::probe_node(&dir)?))) {
            Ok((source, node)) => json!({
                "name": name,
                "dtype": source.dtype().name(),
                "shape": source.shape(),
                "levels": dataset_count(&node),
            }),
            Err(e) => {
                tracing::warn!("label image `{name}` cannot be read: {e}");
                json!({"name": name, "error": e.to_string()})
            }
        };
        labels.push(entry);
    }
    Ok(labels)
}

fn array_info(dir: &Path, label: &str) -> Result<Value, StoreError> {
    let source = store::open_source(dir)?;
    let files = source.stored_files()?;
    Ok(json!({
        "path": label,
        "zarr_format": source.zarr_format(),
        "dtype": source.dtype().name(),
        "shape": source.shape(),
        "chunks": source.chunk_shape(),
        "shards": source.shard_shape(),
        "codecs": store::describe_codecs(source.raw_metadata()),
        "fill_value": source.fill_value_json(),
        "files": files.chunks,
        "bytes_on_disk": files.bytes,
    }))
}
