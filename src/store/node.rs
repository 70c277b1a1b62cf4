//! Zarr nodes on disk: what kind of node a directory holds, its metadata as JSON, the fill
//! value and codecs as Zarr writes them, and metadata files written atomically.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::error::{StoreError, io_error};
use super::tree;
use crate::dtype::DType;

pub(crate) fn read_json(path: &Path) -> Result<Option<Value>, StoreError> {
    match tree::read_regular(path) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::InvalidMetadata {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Ok(None) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(StoreError::InvalidMetadata {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) => Err(StoreError::Io {
            action: "cannot read",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The kind of Zarr node found at a directory.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A v2 array (`.zarray`).
    ArrayV2(Value),
    /// A v3 array (`zarr.json`, `node_type: array`).
    ArrayV3(Value),
    /// A group, with its attributes.
    Group(Map<String, Value>),
}

/// Identifies the Zarr node at `dir`.
///
/// # Errors
/// [`StoreError::NotZarr`] if there is none, [`StoreError::InvalidMetadata`] if its JSON is bad.
pub fn probe_node(dir: &Path) -> Result<NodeKind, StoreError> {
    if let Some(meta) = read_json(&dir.join("zarr.json"))? {
        let attributes = meta
            .get("attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        return match meta.get("node_type").and_then(Value::as_str) {
            Some("array") => Ok(NodeKind::ArrayV3(meta)),
            Some("group") => Ok(NodeKind::Group(attributes)),
            _ => Err(StoreError::InvalidMetadata {
                path: dir.join("zarr.json"),
                reason: "`node_type` must be `array` or `group`".into(),
            }),
        };
    }
    if let Some(meta) = read_json(&dir.join(".zarray"))? {
        return Ok(NodeKind::ArrayV2(meta));
    }
    if dir.join(".zgroup").is_file() {
        let attributes = match read_json(&dir.join(".zattrs"))? {
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(StoreError::InvalidMetadata {
                    path: dir.join(".zattrs"),
                    reason: "attributes must be a JSON object".into(),
                });
            }
            None => Map::new(),
        };
        return Ok(NodeKind::Group(attributes));
    }
    Err(StoreError::NotZarr(dir.to_path_buf()))
}

/// The fill value (`bytes`, native endian, one element of `dtype`) as Zarr v2 JSON: a
/// number, or `"NaN"` / `"Infinity"` / `"-Infinity"`.
#[must_use]
pub fn fill_value_json(bytes: &[u8], dtype: DType) -> Value {
    crate::dispatch_dtype!(dtype, T => {
        let value: T = bytemuck::pod_read_unaligned(bytes);
        value.to_f64_json()
    })
}

trait JsonNumber {
    fn to_f64_json(self) -> Value;
}
macro_rules! json_number {
    ($($t:ty),*) => {$(
        impl JsonNumber for $t {
            fn to_f64_json(self) -> Value { json!(self) }
        }
    )*};
}
json_number!(u8, u16, u32, u64, i8, i16, i32, i64);
impl JsonNumber for f32 {
    fn to_f64_json(self) -> Value {
        f64::from(self).to_f64_json()
    }
}
impl JsonNumber for f64 {
    fn to_f64_json(self) -> Value {
        if self.is_nan() {
            json!("NaN")
        } else if self.is_infinite() {
            json!(if self > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            json!(self)
        }
    }
}

/// A short description of a Zarr array's codecs from its raw metadata, for `info`.
#[must_use]
pub fn describe_codecs(meta: &Value) -> String {
    if meta.get("zarr_format").and_then(Value::as_u64) == Some(2) {
        let compressor = meta.get("compressor").cloned().unwrap_or(Value::Null);
        let filters = meta.get("filters").cloned().unwrap_or(Value::Null);
        let mut s = if compressor.is_null() {
            "uncompressed".to_string()
        } else {
            compressor.to_string()
        };
        if !(filters.is_null() || filters.as_array().is_some_and(Vec::is_empty)) {
            s = format!("filters {filters}, {s}");
        }
        s
    } else {
        meta.get("codecs")
            .and_then(Value::as_array)
            .map_or_else(|| "?".into(), |codecs| describe_v3_chain(codecs))
    }
}

/// A v3 codec chain in a few words: `zstd level 1`, `sharded, zstd level 1`.
fn describe_v3_chain(codecs: &[Value]) -> String {
    let config = |c: &Value, key: &str| c.get("configuration").and_then(|v| v.get(key)).cloned();
    let parts: Vec<String> = codecs
        .iter()
        .filter_map(|c| {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
            match name {
                "bytes" => (config(c, "endian")
                    .and_then(|e| e.as_str().map(str::to_string))
                    .as_deref()
                    == Some("big"))
                .then(|| "big-endian".to_string()),
                "sharding_indexed" => {
                    let inner = config(c, "codecs")
                        .and_then(|v| v.as_array().cloned())
                        .unwrap_or_default();
                    Some(format!("sharded, {}", describe_v3_chain(&inner)))
                }
                "zstd" | "gzip" => Some(match config(c, "level") {
                    Some(level) => format!("{name} level {level}"),
                    None => name.to_string(),
                }),
                "blosc" => Some(format!(
                    "blosc {} level {}",
                    config(c, "cname")
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    config(c, "clevel").map_or_else(|| "?".into(), |v| v.to_string())
                )),
                other => Some(other.to_string()),
            }
        })
        .collect();
    if parts.is_empty() {
        "uncompressed".into()
    } else {
        parts.join(", ")
    }
}

/// Writes JSON to `path` through a temporary file and a rename, so readers see either the
/// old file or the whole new one.
///
/// # Errors
/// [`StoreError::Io`].
pub fn write_json_atomically(path: &Path, value: &Value) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp-ome-pyramid");
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    let mut file = fs::File::create(&tmp).map_err(io_error("cannot create", &tmp))?;
    file.write_all(text.as_bytes())
        .map_err(io_error("cannot write", &tmp))?;
    file.write_all(b"\n").map_err(io_error("cannot write", &tmp))?;
    file.sync_all().map_err(io_error("cannot flush", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error("cannot rename into place", path))?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable; not all platforms allow syncing a directory.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Writes a level's metadata into a new output (`write`), or checks that an output made
/// earlier (by a partitioned build's plan) holds exactly `value` at `path`.
///
/// # Errors
/// [`StoreError::Io`] if it cannot be written; [`StoreError::InvalidMetadata`] if the file
/// found differs.
pub(crate) fn write_or_check_json(path: &Path, value: &Value, write: bool) -> Result<(), StoreError> {
    if write {
        return write_json_atomically(path, value);
    }
    let found: Option<Value> = fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    if found.as_ref() == Some(value) {
        Ok(())
    } else {
        Err(StoreError::InvalidMetadata {
            path: path.to_path_buf(),
            reason: "it is missing or differs from what the plan wrote (was the output changed since?)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_chains_read_in_a_few_words() {
        let chain = json!([{"name": "sharding_indexed", "configuration": {"chunk_shape": [2],
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 3, "checksum": false}}],
            "index_codecs": [{"name": "bytes"}, {"name": "crc32c"}]}}]);
        assert_eq!(
            describe_codecs(&json!({"zarr_format": 3, "codecs": chain})),
            "sharded, zstd level 3"
        );
        assert_eq!(
            describe_codecs(&json!({"zarr_format": 3, "codecs": [{"name": "bytes"}]})),
            "uncompressed"
        );
    }
}
