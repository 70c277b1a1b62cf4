//! What a Zarr tree on disk holds: node metadata files, the chunk files of each array
//! (named by its chunk key encoding), and ome-pyramid's own bookkeeping files.
//!
//! This is what decides that `--overwrite` may remove a directory (every entry is one of
//! those, nothing else), what the check at the end of a build counts (the chunk files of
//! each level), and what the fingerprint of an input covers. Only regular files and
//! directories count: a symbolic link, FIFO or device is never followed, read or removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::Value;

use crate::digest::Fnv64;
use crate::journal::{InputFingerprint, JOURNAL_FILE, LOCK_FILE, RECORD_FILE, StoredTotals};

/// Suffix of the temporary files ome-pyramid writes before renaming them into place.
pub const TEMPORARY_SUFFIX: &str = ".tmp-ome-pyramid";

/// Metadata files of Zarr nodes (v2 and v3, consolidated v2 metadata included).
const METADATA_FILES: &[&str] = &[".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"];

/// True for the files ome-pyramid keeps inside an output while it writes it.
#[must_use]
pub fn is_bookkeeping(name: &str) -> bool {
    [LOCK_FILE, RECORD_FILE, JOURNAL_FILE].contains(&name)
        || crate::journal::partition::is_partition_file(name)
        || name.ends_with(TEMPORARY_SUFFIX)
}

fn is_metadata(name: &str) -> bool {
    METADATA_FILES.contains(&name)
}

/// How an array names its chunk files, relative to the array's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkKeys {
    /// Dimensions of the array.
    pub ndim: usize,
    /// `/` (nested directories) or `.`.
    pub separator: char,
    /// `true` for v3's default encoding (`c/0/1`), `false` for the v2 one (`0/1`).
    pub prefixed: bool,
}

impl ChunkKeys {
    /// The chunk key encoding of an array from its metadata (`.zarray` or v3 `zarr.json`).
    #[must_use]
    pub fn of(meta: &Value) -> Option<Self> {
        let ndim = meta.get("shape")?.as_array()?.len();
        let separator_of = |v: Option<&Value>, default: char| match v.and_then(Value::as_str) {
            None => Some(default),
            Some("/") => Some('/'),
            Some(".") => Some('.'),
            Some(_) => None,
        };
        if meta.get("zarr_format").and_then(Value::as_u64) == Some(3) {
            let encoding = meta.get("chunk_key_encoding");
            let name = encoding
                .and_then(|e| e.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            let separator = encoding
                .and_then(|e| e.get("configuration"))
                .and_then(|c| c.get("separator"));
            return match name {
                "default" => Some(Self {
                    ndim,
                    separator: separator_of(separator, '/')?,
                    prefixed: true,
                }),
                "v2" => Some(Self {
                    ndim,
                    separator: separator_of(separator, '.')?,
                    prefixed: false,
                }),
                _ => None,
            };
        }
        Some(Self {
            ndim,
            separator: separator_of(meta.get("dimension_separator"), '.')?,
            prefixed: false,
        })
    }

    /// The components of a full key: `c` (v3 default) then one index per dimension, or
    /// `0` for a 0-dimensional v2 array.
    fn components(&self) -> usize {
        usize::from(self.prefixed) + self.ndim.max(usize::from(!self.prefixed))
    }

    fn component_ok(&self, position: usize, part: &str) -> bool {
        if self.prefixed && position == 0 {
            part == "c"
        } else {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())
        }
    }

    /// True if `parts` (a path relative to the array, split at `/`) is a chunk file
    /// (`file`) or a directory on the way to chunk files.
    fn accepts(&self, parts: &[&str], file: bool) -> bool {
        let keys: Vec<&str> = if self.separator == '/' {
            parts.to_vec()
        } else if parts.len() == 1 && file {
            parts[0].split('.').collect()
        } else {
            return false;
        };
        let full = self.components();
        let positions_ok = keys.iter().enumerate().all(|(i, k)| self.component_ok(i, k));
        positions_ok && if file { keys.len() == full } else { keys.len() < full }
    }
}

/// A regular file's bytes; `Ok(None)` if there is nothing at `path`.
///
/// # Errors
/// An `InvalidInput` error for anything but a regular file (a FIFO would block a reader
/// forever), or the error of reading it.
pub fn read_regular(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => fs::read(path).map(Some),
        Ok(meta) => Err(not_regular(&meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The error for a path that is not a regular file.
#[must_use]
pub fn not_regular(meta: &fs::Metadata) -> std::io::Error {
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("it is {kind}"))
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(String, PathBuf, fs::FileType)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        entries.push((name, entry.path(), entry.file_type()?));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// The metadata of the Zarr node at `dir` (`zarr.json` or `.zarray`), if it is an array.
fn array_metadata(dir: &Path) -> Option<Value> {
    for name in ["zarr.json", ".zarray"] {
        if let Ok(Some(bytes)) = read_regular(&dir.join(name)) {
            let meta: Value = serde_json::from_slice(&bytes).ok()?;
            let is_array = name == ".zarray" || meta.get("node_type").and_then(Value::as_str) == Some("array");
            return is_array.then_some(meta);
        }
    }
    None
}

/// The first entry under `dir` (in name order, depth first) that is not part of a Zarr
/// store: anything but node metadata, chunk files of the arrays (as their chunk key
/// encoding names them), directories holding only such entries, and ome-pyramid's
/// bookkeeping files. `None` when there is none.
///
/// # Errors
/// The error of reading a directory.
pub fn first_foreign_entry(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    match array_metadata(dir) {
        Some(meta) => {
            let Some(keys) = ChunkKeys::of(&meta) else {
                // An array whose chunk files cannot be named: none of its entries is known.
                return Ok(sorted_entries(dir)?
                    .into_iter()
                    .find(|(name, _, kind)| !(kind.is_file() && is_metadata(name)))
                    .map(|(_, path, _)| path));
            };
            foreign_in_array(dir, &keys, &mut Vec::new())
        }
        None => {
            for (name, path, kind) in sorted_entries(dir)? {
                let known = if kind.is_dir() {
                    match first_foreign_entry(&path)? {
                        Some(found) => return Ok(Some(found)),
                        None => true,
                    }
                } else {
                    kind.is_file() && (is_metadata(&name) || is_bookkeeping(&name))
                };
                if !known {
                    return Ok(Some(path));
                }
            }
            Ok(None)
        }
    }
}

fn foreign_in_array(dir: &Path, keys: &ChunkKeys, parts: &mut Vec<String>) -> std::io::Result<Option<PathBuf>> {
    for (name, path, kind) in sorted_entries(dir)? {
        // Metadata at the array's top; bookkeeping (a shard's temporary file) anywhere.
        if kind.is_file() && (is_bookkeeping(&name) || (parts.is_empty() && is_metadata(&name))) {
            continue;
        }
        parts.push(name);
        let view: Vec<&str> = parts.iter().map(String::as_str).collect();
        let found = if kind.is_dir() && keys.accepts(&view, false) {
            foreign_in_array(&path, keys, parts)?
        } else if kind.is_file() && keys.accepts(&view, true) {
            None
        } else {
            Some(path)
        };
        parts.pop();
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Removes the Zarr tree at `dir` (checked with [`first_foreign_entry`]) in an order that
/// keeps a half-removed tree recognisable: children before their parent's metadata, the
/// metadata before the directory, and `keep_last` (the lock) until the caller drops it.
///
/// # Errors
/// The first removal that fails.
pub fn remove_tree(dir: &Path, keep_last: &str) -> std::io::Result<()> {
    let entries = sorted_entries(dir)?;
    for (_, path, kind) in &entries {
        if kind.is_dir() {
            remove_tree(path, keep_last)?;
            fs::remove_dir(path)?;
        }
    }
    let files = entries
        .iter()
        .filter(|(name, _, kind)| !kind.is_dir() && name != keep_last);
    let (metadata, data): (Vec<_>, Vec<_>) = files.partition(|(name, _, _)| is_metadata(name));
    for (_, path, _) in data.into_iter().chain(metadata) {
        fs::remove_file(path)?;
    }
    Ok(())
}

/// The chunk files under an array's directory and their bytes.
///
/// # Errors
/// The error of reading a directory.
pub fn count_chunk_files(array_dir: &Path, keys: &ChunkKeys) -> std::io::Result<StoredTotals> {
    fn walk(dir: &Path, keys: &ChunkKeys, parts: &mut Vec<String>, totals: &mut StoredTotals) -> std::io::Result<()> {
        for (name, path, kind) in sorted_entries(dir)? {
            parts.push(name);
            let view: Vec<&str> = parts.iter().map(String::as_str).collect();
            if kind.is_dir() && keys.accepts(&view, false) {
                walk(&path, keys, parts, totals)?;
            } else if kind.is_file() && keys.accepts(&view, true) {
                totals.add(fs::metadata(&path)?.len());
            }
            parts.pop();
        }
        Ok(())
    }
    let mut totals = StoredTotals::default();
    walk(array_dir, keys, &mut Vec::new(), &mut totals)?;
    Ok(totals)
}

/// A fingerprint of every regular file under `dir`: their count, bytes, and a digest of
/// each one's relative path, size and modification time (order-independent, so the
/// subdirectories are read in parallel).
///
/// # Errors
/// The error of reading a directory or a file's metadata.
pub fn fingerprint_files(dir: &Path) -> std::io::Result<InputFingerprint> {
    use rayon::prelude::*;
    fn walk(dir: &Path, relative: &str) -> std::io::Result<InputFingerprint> {
        let entries = sorted_entries(dir)?;
        let mut print = InputFingerprint {
            files: 0,
            bytes: 0,
            digest: 0,
        };
        for (name, path, kind) in entries.iter().filter(|e| e.2.is_file()) {
            let _ = kind;
            let (len, digest) = file_digest(&format!("{relative}/{name}"), path)?;
            print.files += 1;
            print.bytes += len;
            print.digest = print.digest.wrapping_add(digest);
        }
        let below = entries
            .par_iter()
            .filter(|e| e.2.is_dir())
            .map(|(name, path, _)| walk(path, &format!("{relative}/{name}")))
            .collect::<std::io::Result<Vec<_>>>()?;
        for b in below {
            print.files += b.files;
            print.bytes += b.bytes;
            print.digest = print.digest.wrapping_add(b.digest);
        }
        Ok(print)
    }
    walk(dir, "")
}

/// The fingerprint of the listed files (by name, size and modification time), as
/// [`fingerprint_files`] gives for a folder.
///
/// # Errors
/// The error of reading a file's metadata.
pub fn fingerprint_paths(files: &[std::path::PathBuf]) -> std::io::Result<InputFingerprint> {
    let mut print = InputFingerprint {
        files: 0,
        bytes: 0,
        digest: 0,
    };
    for path in files {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let (len, digest) = file_digest(&format!("/{name}"), path)?;
        print.files += 1;
        print.bytes += len;
        print.digest = print.digest.wrapping_add(digest);
    }
    Ok(print)
}

/// Size and digest (name, size, modification time) of one file.
fn file_digest(relative: &str, path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = fs::metadata(path)?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let digest = Fnv64::default()
        .bytes(relative.as_bytes())
        .number(meta.len())
        .number(modified)
        .finish();
    Ok((meta.len(), digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunk_keys_follow_each_encoding() {
        let v2_nested =
            ChunkKeys::of(&json!({"zarr_format": 2, "shape": [4, 4, 4], "dimension_separator": "/"})).unwrap();
        assert!(v2_nested.accepts(&["0", "1", "2"], true));
        assert!(v2_nested.accepts(&["0", "1"], false));
        assert!(!v2_nested.accepts(&["0", "1"], true));
        assert!(!v2_nested.accepts(&["0", "x", "2"], true));
        let v2_flat = ChunkKeys::of(&json!({"zarr_format": 2, "shape": [4, 4]})).unwrap();
        assert!(v2_flat.accepts(&["3.1"], true));
        assert!(!v2_flat.accepts(&["3"], true) && !v2_flat.accepts(&["3"], false));
        let v3 = ChunkKeys::of(&json!({"zarr_format": 3, "shape": [4, 4]})).unwrap();
        assert!(v3.accepts(&["c", "0", "1"], true) && v3.accepts(&["c"], false));
        assert!(!v3.accepts(&["0", "1"], true));
        let v3_dot = ChunkKeys::of(
            &json!({"zarr_format": 3, "shape": [4, 4], "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}}}),
        )
        .unwrap();
        assert!(v3_dot.accepts(&["c.0.1"], true));
    }

    fn zarr_v2_tree(dir: &Path) {
        fs::create_dir_all(dir.join("0/1")).unwrap();
        fs::write(dir.join(".zgroup"), "{}").unwrap();
        fs::write(dir.join(".zattrs"), "{}").unwrap();
        fs::write(
            dir.join("0/.zarray"),
            r#"{"zarr_format": 2, "shape": [4, 4], "dimension_separator": "/"}"#,
        )
        .unwrap();
        fs::write(dir.join("0/1/0"), "chunk").unwrap();
        fs::write(dir.join(LOCK_FILE), "").unwrap();
    }

    #[test]
    fn foreign_entries_are_found_and_zarr_trees_accepted() {
        let dir = tempfile::TempDir::new().unwrap();
        let root = dir.path().join("out");
        zarr_v2_tree(&root);
        assert_eq!(first_foreign_entry(&root).unwrap(), None);
        fs::write(root.join("0/notes.txt"), "mine").unwrap();
        assert_eq!(first_foreign_entry(&root).unwrap(), Some(root.join("0/notes.txt")));
        fs::remove_file(root.join("0/notes.txt")).unwrap();
        fs::create_dir(root.join("docs")).unwrap();
        fs::write(root.join("docs/precious.txt"), "mine").unwrap();
        assert_eq!(
            first_foreign_entry(&root).unwrap(),
            Some(root.join("docs/precious.txt"))
        );
    }

    #[test]
    fn removal_keeps_the_lock_and_counts_follow_the_keys() {
        let dir = tempfile::TempDir::new().unwrap();
        let root = dir.path().join("out");
        zarr_v2_tree(&root);
        let keys = ChunkKeys::of(&json!({"zarr_format": 2, "shape": [4, 4], "dimension_separator": "/"})).unwrap();
        assert_eq!(
            count_chunk_files(&root.join("0"), &keys).unwrap(),
            StoredTotals { chunks: 1, bytes: 5 }
        );
        remove_tree(&root, LOCK_FILE).unwrap();
        let left: Vec<_> = fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(LOCK_FILE)]);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_not_read() {
        let dir = tempfile::TempDir::new().unwrap();
        let fifo = dir.path().join(".zarray");
        crate::synthetic::make_fifo(&fifo);
        let err = read_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(first_foreign_entry(dir.path()).unwrap(), Some(fifo));
    }

    #[test]
    fn fingerprints_see_rewritten_files() {
        let dir = tempfile::TempDir::new().unwrap();
        fs::create_dir(dir.path().join("0")).unwrap();
        fs::write(dir.path().join("0/0"), "aaaa").unwrap();
        let before = fingerprint_files(dir.path()).unwrap();
        assert_eq!((before.files, before.bytes), (1, 4));
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.path().join("0/0"), "bbbb").unwrap();
        let after = fingerprint_files(dir.path()).unwrap();
        assert_eq!((after.files, after.bytes), (1, 4));
        assert_ne!(before.digest, after.digest);
    }
}
