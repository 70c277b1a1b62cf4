//! The codec of the output arrays, typed: what `--compression` resolves to, what an
//! input's chunks are stored with (so level 0 can be copied without re-encoding), and how
//! each renders as a Zarr v2 `compressor`.

use serde_json::{Value, json};

use crate::dtype::DType;

/// The codec every output array is written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputCodec {
    /// Uncompressed.
    None,
    /// Zstandard.
    Zstd {
        /// Level.
        level: i64,
        /// Whether frames carry a checksum.
        checksum: bool,
    },
    /// Gzip.
    Gzip {
        /// Level.
        level: i64,
    },
    /// Zlib.
    Zlib {
        /// Level.
        level: i64,
    },
    /// Bzip2.
    Bz2 {
        /// Level.
        level: i64,
    },
    /// Blosc.
    Blosc {
        /// Inner compressor (`lz4`, `zstd`, …).
        cname: String,
        /// Level.
        clevel: i64,
        /// 0 none, 1 byte shuffle, 2 bit shuffle.
        shuffle: i64,
        /// Block size (0: automatic).
        blocksize: i64,
    },
    /// A Zarr v2 compressor of a v2 input with settings not modelled here, carried over as
    /// it was written.
    V2Verbatim(Value),
}

/// The fields of a v2 compressor object other than `id`, if they are exactly `keys`
/// (`optional` ones may be missing).
fn exact_fields<'a>(
    object: &'a serde_json::Map<String, Value>,
    keys: &[&str],
    optional: &[&str],
) -> Option<Vec<Option<&'a Value>>> {
    let known = |k: &str| k == "id" || keys.contains(&k) || optional.contains(&k);
    if !object.keys().all(|k| known(k)) {
        return None;
    }
    let required: Option<Vec<Option<&Value>>> = keys.iter().map(|k| object.get(*k).map(Some)).collect();
    let mut fields = required?;
    fields.extend(optional.iter().map(|k| object.get(*k)));
    Some(fields)
}

impl OutputCodec {
    /// The codec of a Zarr v2 `compressor` (`null` for none).
    #[must_use]
    pub fn from_v2(compressor: &Value) -> Self {
        Self::model_v2(compressor).unwrap_or_else(|| OutputCodec::V2Verbatim(compressor.clone()))
    }

    fn model_v2(compressor: &Value) -> Option<Self> {
        if compressor.is_null() {
            return Some(OutputCodec::None);
        }
        let object = compressor.as_object()?;
        let int = |v: Option<&Value>| v.and_then(Value::as_i64);
        Some(match object.get("id")?.as_str()? {
            "zstd" => {
                let f = exact_fields(object, &["level"], &["checksum"])?;
                let checksum = match f[1] {
                    None => false,
                    Some(v) => v.as_bool()?,
                };
                OutputCodec::Zstd {
                    level: int(f[0])?,
                    checksum,
                }
            }
            "gzip" => OutputCodec::Gzip {
                level: int(exact_fields(object, &["level"], &[])?[0])?,
            },
            "zlib" => OutputCodec::Zlib {
                level: int(exact_fields(object, &["level"], &[])?[0])?,
            },
            "bz2" => OutputCodec::Bz2 {
                level: int(exact_fields(object, &["level"], &[])?[0])?,
            },
            "blosc" => {
                let f = exact_fields(object, &["cname", "clevel", "shuffle", "blocksize"], &[])?;
                OutputCodec::Blosc {
                    cname: f[0]?.as_str()?.to_string(),
                    clevel: int(f[1])?,
                    shuffle: int(f[2])?,
                    blocksize: int(f[3])?,
                }
            }
            _ => return None,
        })
    }

    /// The Zarr v2 `compressor` (`null` for none).
    #[must_use]
    pub fn to_v2(&self) -> Value {
        match self {
            OutputCodec::None => Value::Null,
            OutputCodec::Zstd { level, checksum } => {
                let mut c = json!({"id": "zstd", "level": level});
                if *checksum {
                    c["checksum"] = json!(true);
                }
                c
            }
            OutputCodec::Gzip { level } => json!({"id": "gzip", "level": level}),
            OutputCodec::Zlib { level } => json!({"id": "zlib", "level": level}),
            OutputCodec::Bz2 { level } => json!({"id": "bz2", "level": level}),
            OutputCodec::Blosc {
                cname,
                clevel,
                shuffle,
                blocksize,
            } => json!({"id": "blosc", "cname": cname, "clevel": clevel, "shuffle": shuffle, "blocksize": blocksize}),
            OutputCodec::V2Verbatim(value) => value.clone(),
        }
    }

    /// The Zarr v3 codec chain of a chunk: `bytes` (little endian), then the compressor;
    /// `None` where v3 has no codec for it (zlib, bz2, unmodelled v2 settings).
    #[must_use]
    pub fn to_v3(&self, dtype: DType) -> Option<Vec<Value>> {
        let compressor = match self {
            OutputCodec::None => None,
            OutputCodec::Zstd { level, checksum } => {
                Some(json!({"name": "zstd", "configuration": {"level": level, "checksum": checksum}}))
            }
            OutputCodec::Gzip { level } => Some(json!({"name": "gzip", "configuration": {"level": level}})),
            OutputCodec::Blosc {
                cname,
                clevel,
                shuffle,
                blocksize,
            } => {
                let shuffle = match shuffle {
                    0 => "noshuffle",
                    1 => "shuffle",
                    2 => "bitshuffle",
                    _ => return None,
                };
                Some(
                    json!({"name": "blosc", "configuration": {"cname": cname, "clevel": clevel,
                    "shuffle": shuffle, "typesize": dtype.size(), "blocksize": blocksize}}),
                )
            }
            OutputCodec::Zlib { .. } | OutputCodec::Bz2 { .. } | OutputCodec::V2Verbatim(_) => return None,
        };
        let bytes = json!({"name": "bytes", "configuration": {"endian": "little"}});
        Some(std::iter::once(bytes).chain(compressor).collect())
    }

    /// This codec at compression level `level`.
    fn with_level(&self, level: i32) -> Self {
        let level = i64::from(level);
        match self.clone() {
            OutputCodec::None => OutputCodec::None,
            OutputCodec::Zstd { checksum, .. } => OutputCodec::Zstd { level, checksum },
            OutputCodec::Gzip { .. } => OutputCodec::Gzip { level },
            OutputCodec::Zlib { .. } => OutputCodec::Zlib { level },
            OutputCodec::Bz2 { .. } => OutputCodec::Bz2 { level },
            OutputCodec::Blosc {
                cname,
                shuffle,
                blocksize,
                ..
            } => OutputCodec::Blosc {
                cname,
                clevel: level,
                shuffle,
                blocksize,
            },
            OutputCodec::V2Verbatim(mut value) => {
                let key = if value.get("id").and_then(Value::as_str) == Some("blosc") {
                    "clevel"
                } else {
                    "level"
                };
                value[key] = json!(level);
                OutputCodec::V2Verbatim(value)
            }
        }
    }

    /// The codec an input array's chunks are stored with, from its metadata (`.zarray` or
    /// v3 `zarr.json`), if each stored chunk is, as it is, a valid chunk of a C-order
    /// little-endian Zarr v2 array of `dtype` with that codec and no filters.
    #[must_use]
    pub fn of_stored_chunks(meta: &Value, dtype: DType) -> Option<Self> {
        if meta.get("zarr_format").and_then(Value::as_u64) == Some(2) {
            let filters_empty = match meta.get("filters") {
                None | Some(Value::Null) => true,
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            let dtype_ok = meta.get("dtype").and_then(Value::as_str) == Some(dtype.zarr_v2_name())
                || (dtype.size() == 1
                    && meta
                        .get("dtype")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.ends_with(&dtype.zarr_v2_name()[1..])));
            let order_c = meta.get("order").and_then(Value::as_str).unwrap_or("C") == "C";
            if !(filters_empty && dtype_ok && order_c) {
                return None;
            }
            return Some(Self::from_v2(&normalise_v2(
                meta.get("compressor").cloned().unwrap_or(Value::Null),
            )));
        }
        let codecs = meta.get("codecs")?.as_array()?;
        let name = |c: &Value| c.get("name").and_then(Value::as_str).map(str::to_string);
        let config = |c: &Value| c.get("configuration").cloned().unwrap_or(json!({}));
        let first = codecs.first()?;
        if name(first)?.as_str() != "bytes" {
            return None;
        }
        let endian = config(first).get("endian").and_then(Value::as_str).map(str::to_string);
        if dtype.size() > 1 && endian.as_deref() != Some("little") {
            return None;
        }
        let v2 = match codecs.len() {
            1 => Value::Null,
            2 => {
                let c = &codecs[1];
                let cfg = config(c);
                match name(c)?.as_str() {
                    "zstd" if cfg.get("checksum").and_then(Value::as_bool) != Some(true) => {
                        json!({"id": "zstd", "level": cfg.get("level")?.clone()})
                    }
                    "gzip" => json!({"id": "gzip", "level": cfg.get("level")?.clone()}),
                    "blosc" => {
                        let shuffle = match cfg.get("shuffle").and_then(Value::as_str)? {
                            "noshuffle" => 0,
                            "shuffle" => 1,
                            "bitshuffle" => 2,
                            _ => return None,
                        };
                        json!({
                            "id": "blosc",
                            "cname": cfg.get("cname")?.clone(),
                            "clevel": cfg.get("clevel")?.clone(),
                            "shuffle": shuffle,
                            "blocksize": cfg.get("blocksize").cloned().unwrap_or(json!(0)),
                        })
                    }
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(Self::from_v2(&v2))
    }
}

/// Drops fields of a v2 compressor that do not change the encoded bytes, so two codecs
/// compare equal exactly when their chunks are interchangeable.
fn normalise_v2(mut compressor: Value) -> Value {
    if let Some(map) = compressor.as_object_mut() {
        if map.get("checksum") == Some(&Value::Bool(false)) {
            map.remove("checksum");
        }
        map.remove("typesize");
        if map.get("id").and_then(Value::as_str) == Some("blosc") {
            map.entry("blocksize").or_insert(json!(0));
        }
    }
    compressor
}

/// The codec of every output array (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// The input's codec where Zarr v2 can express it, else blosc-lz4 level 5 with byte shuffle.
    #[default]
    Input,
    /// Blosc with LZ4 and byte shuffle.
    BloscLz4,
    /// Blosc with Zstandard and byte shuffle.
    BloscZstd,
    /// Zstandard.
    Zstd,
    /// Gzip.
    Gzip,
    /// Uncompressed.
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "input" => Compression::Input,
            "blosc-lz4" | "blosc" => Compression::BloscLz4,
            "blosc-zstd" => Compression::BloscZstd,
            "zstd" => Compression::Zstd,
            "gzip" => Compression::Gzip,
            "none" | "raw" => Compression::None,
            _ => {
                return Err(format!(
                    "unknown compression `{s}` (expected input, blosc-lz4, blosc-zstd, zstd, gzip or none)"
                ));
            }
        })
    }
}

impl Compression {
    /// The output codec for this choice at `level`, given the codec the input's chunks are
    /// stored with (where a v2 array can use it).
    ///
    /// # Errors
    /// A message when `level` is outside the codec's range or has no meaning.
    pub fn resolve(self, level: Option<i32>, input: Option<&OutputCodec>) -> Result<OutputCodec, String> {
        let check = |lo: i32, hi: i32, default: i32, name: &str| {
            let l = level.unwrap_or(default);
            if (lo..=hi).contains(&l) {
                Ok(i64::from(l))
            } else {
                Err(format!("compression level {l} is outside {lo}..={hi} for {name}"))
            }
        };
        let blosc = |cname: &str, clevel: i64| OutputCodec::Blosc {
            cname: cname.into(),
            clevel,
            shuffle: 1,
            blocksize: 0,
        };
        Ok(match self {
            Compression::Input => match (input, level) {
                (Some(c), None) => c.clone(),
                (Some(OutputCodec::None), Some(_)) => {
                    return Err("--clevel needs a compressor, but the input is uncompressed".into());
                }
                (Some(c), Some(l)) => c.with_level(l),
                (None, _) => blosc("lz4", check(0, 9, 5, "blosc")?),
            },
            Compression::BloscLz4 => blosc("lz4", check(0, 9, 5, "blosc")?),
            Compression::BloscZstd => blosc("zstd", check(0, 9, 5, "blosc")?),
            Compression::Zstd => OutputCodec::Zstd {
                level: check(-131_072, 22, 1, "zstd")?,
                checksum: false,
            },
            Compression::Gzip => OutputCodec::Gzip {
                level: check(0, 9, 1, "gzip")?,
            },
            Compression::None => {
                if level.is_some() {
                    return Err("--clevel has no meaning with --compression none".into());
                }
                OutputCodec::None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_compressors_round_trip_exactly() {
        for c in [
            Value::Null,
            json!({"id": "zstd", "level": 3}),
            json!({"id": "zstd", "level": 3, "checksum": true}),
            json!({"id": "gzip", "level": 1}),
            json!({"id": "zlib", "level": 1}),
            json!({"id": "bz2", "level": 9}),
            json!({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0}),
            // Settings not modelled are carried over as written.
            json!({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0, "extra": 1}),
            json!({"id": "lz4", "acceleration": 1}),
            json!({"id": "zstd", "level": 1.5}),
        ] {
            assert_eq!(OutputCodec::from_v2(&c).to_v2(), c, "{c}");
        }
        assert!(matches!(
            OutputCodec::from_v2(&json!({"id": "lz4"})),
            OutputCodec::V2Verbatim(_)
        ));
    }

    #[test]
    fn v3_chains_have_bytes_then_the_compressor() {
        let blosc = OutputCodec::Blosc {
            cname: "lz4".into(),
            clevel: 5,
            shuffle: 1,
            blocksize: 0,
        };
        assert_eq!(
            blosc.to_v3(DType::U16).unwrap(),
            vec![
                json!({"name": "bytes", "configuration": {"endian": "little"}}),
                json!({"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 2, "blocksize": 0}}),
            ]
        );
        assert_eq!(OutputCodec::None.to_v3(DType::U8).unwrap().len(), 1);
        assert!(OutputCodec::Zlib { level: 1 }.to_v3(DType::U8).is_none());
    }

    #[test]
    fn levels_apply_to_the_input_codec() {
        let input =
            OutputCodec::from_v2(&json!({"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 2, "blocksize": 0}));
        let resolved = Compression::Input.resolve(Some(7), Some(&input)).unwrap();
        assert_eq!(
            resolved.to_v2(),
            json!({"id": "blosc", "cname": "zstd", "clevel": 7, "shuffle": 2, "blocksize": 0})
        );
        assert!(Compression::Input.resolve(Some(1), Some(&OutputCodec::None)).is_err());
        assert_eq!(
            Compression::Input.resolve(None, None).unwrap().to_v2(),
            json!({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0})
        );
        assert!(Compression::Zstd.resolve(Some(99), None).is_err());
    }
}
