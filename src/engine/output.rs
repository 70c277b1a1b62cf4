//! Output safety: where OUTPUT may be, what `--overwrite` may remove, and the check that
//! the output is whole before its metadata says so.
//!
//! - OUTPUT never equals, lies inside or contains INPUT.
//! - `--overwrite` removes only an ome-pyramid output: a directory whose every entry is
//!   part of a Zarr store (node metadata, chunk files named by their array's chunk key
//!   encoding, ome-pyramid's bookkeeping files) and that ome-pyramid wrote (its metadata
//!   says so, or a build's record, journal or lock is there). Anything else is refused,
//!   naming the first foreign entry. It removes children before their parents' metadata
//!   and the lock last, so an output half removed by a killed run is still recognised and
//!   can be replaced.
//! - Before the image metadata is written, the output is checked: its group and level
//!   metadata are in place and every level holds exactly the chunk files the build stored
//!   (this run's and, when resumed, those of earlier runs).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::BuildError;
use super::pass::BuildContext;
use crate::journal::{self, LOCK_FILE, OutputLock, StoredTotals};
use crate::store::tree::{self, ChunkKeys};
use crate::store::{self, NodeKind, StoreError};

/// Resolves the absolute form of a path that may not exist yet.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => absolute(parent).join(name),
        _ => abs,
    }
}

/// Refuses outputs that equal, lie inside or contain the input.
pub(crate) fn check_output_location(input: &Path, output: &Path) -> Result<(), BuildError> {
    let input_abs = absolute(input);
    let output_abs = absolute(output);
    let relation = if input_abs == output_abs {
        Some("is the same path as")
    } else if output_abs.starts_with(&input_abs) {
        Some("lies inside")
    } else if input_abs.starts_with(&output_abs) {
        Some("contains")
    } else {
        None
    };
    match relation {
        Some(relation) => Err(BuildError::UnsafeOutput {
            output: output.to_path_buf(),
            input: input.to_path_buf(),
            relation,
        }),
        None => Ok(()),
    }
}

fn refuse(output: &Path, reason: String) -> BuildError {
    BuildError::RefuseOverwrite {
        path: output.to_path_buf(),
        reason,
    }
}

fn io_failure<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| {
        BuildError::Store(StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// True if ome-pyramid wrote the store at `output`: a build's bookkeeping is there, or
/// the image metadata names ome-pyramid as its software.
fn written_by_ome_pyramid(output: &Path) -> bool {
    if [
        LOCK_FILE,
        journal::RECORD_FILE,
        journal::JOURNAL_FILE,
        journal::partition::PLAN_FILE,
    ]
    .iter()
    .any(|f| output.join(f).is_file())
    {
        return true;
    }
    multiscales_of(output)
        .and_then(|m| m.get(0).cloned())
        .and_then(|m| m.get("metadata").cloned())
        .and_then(|m| m.get("software").cloned())
        .and_then(|s| s.as_str().map(str::to_owned))
        .as_deref()
        == Some("ome-pyramid")
}

/// The `multiscales` list of the image metadata at `output` (0.4 or 0.5), if there is one.
fn multiscales_of(output: &Path) -> Option<Value> {
    match store::probe_node(output) {
        Ok(NodeKind::Group(attributes)) => {
            let root = attributes.get("ome").unwrap_or(&Value::Null);
            attributes
                .get("multiscales")
                .or_else(|| root.get("multiscales"))
                .cloned()
        }
        _ => None,
    }
}

/// True if `output` holds image metadata: a build of it completed.
pub(crate) fn is_complete(output: &Path) -> bool {
    multiscales_of(output).is_some()
}

/// Creates the output's directory, after handling an existing output: refused, or removed
/// when `overwrite` is set and it is an ome-pyramid output that no running build holds.
pub(crate) fn create_output(output: &Path, overwrite: bool) -> Result<(), BuildError> {
    remove_existing_output(output, overwrite)?;
    std::fs::create_dir_all(output).map_err(|source| BuildError::OutputNotCreatable {
        path: output.to_path_buf(),
        source,
    })
}

/// Handles an existing output: refuse it, or remove it when `overwrite` is set and it is
/// an ome-pyramid output that no running build holds.
fn remove_existing_output(output: &Path, overwrite: bool) -> Result<(), BuildError> {
    let meta = match std::fs::symlink_metadata(output) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BuildError::OutputNotCreatable {
                path: output.to_path_buf(),
                source,
            });
        }
    };
    if !overwrite {
        return Err(BuildError::OutputExists(output.to_path_buf()));
    }
    if !meta.is_dir() {
        return Err(refuse(output, "it is not a directory".into()));
    }
    if let Some(entry) = tree::first_foreign_entry(output).map_err(io_failure("cannot read", output))? {
        return Err(refuse(
            output,
            format!("`{}` is not part of a Zarr store", entry.display()),
        ));
    }
    let empty = std::fs::read_dir(output)
        .map_err(io_failure("cannot read", output))?
        .next()
        .is_none();
    if !empty && !written_by_ome_pyramid(output) {
        return Err(refuse(
            output,
            "it is a Zarr store that ome-pyramid did not write".into(),
        ));
    }
    let lock = OutputLock::acquire(output)?;
    tree::remove_tree(output, LOCK_FILE).map_err(io_failure("cannot remove the old output", output))?;
    drop(lock);
    std::fs::remove_dir(output).map_err(io_failure("cannot remove the old output", output))?;
    Ok(())
}

/// What a level of the output must hold.
struct ExpectedLevel {
    /// The level.
    level: usize,
    /// Its directory.
    dir: PathBuf,
    /// The chunk files the build stored there.
    stored: StoredTotals,
}

impl BuildContext<'_> {
    /// Checks that the output was not changed under the build: the group's metadata file
    /// exists and each of `levels` has its array metadata and exactly the chunk files the
    /// build stored (this run's and, when resumed, earlier runs'). Run before a pass reads
    /// a level it wrote, and before the image metadata is written.
    pub(super) fn verify(&self, levels: RangeInclusive<usize>) -> Result<(), BuildError> {
        let before = self.journal.stored_before(self.levels.len());
        let expected: Vec<ExpectedLevel> = levels
            .map(|level| {
                let (chunks, bytes) = self.counters.stored_in(level);
                ExpectedLevel {
                    level,
                    dir: self.levels[level].dir().to_path_buf(),
                    stored: StoredTotals {
                        chunks: before[level].chunks + chunks,
                        bytes: before[level].bytes + bytes,
                    },
                }
            })
            .collect();
        verify_output(self.sink.path(), self.sink.group_file(), &expected)
    }
}

/// `error` as the output changing under the build, where it is a write that found a
/// directory of the output gone (the build makes a chunk's directory before writing it,
/// so only someone removing the output, or part of it, meanwhile does that); other
/// errors as they are.
pub(super) fn output_changed(output: &Path, error: BuildError) -> BuildError {
    let BuildError::Store(write @ StoreError::WriteChunk { .. }) = &error else {
        return error;
    };
    let mut chain = vec![write.to_string()];
    let mut vanished = false;
    let mut cause = std::error::Error::source(write);
    while let Some(e) = cause {
        chain.push(e.to_string());
        vanished |= e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
        cause = e.source();
    }
    if !vanished {
        return error;
    }
    BuildError::OutputDamaged {
        path: output.to_path_buf(),
        detail: chain.join(": "),
    }
}

fn verify_output(output: &Path, group_file: &str, levels: &[ExpectedLevel]) -> Result<(), BuildError> {
    let damaged = |detail: String| BuildError::OutputDamaged {
        path: output.to_path_buf(),
        detail,
    };
    if !output.join(group_file).is_file() {
        return Err(damaged(format!("its `{group_file}` is missing")));
    }
    for level in levels {
        let k = level.level;
        let meta = match store::probe_node(&level.dir) {
            Ok(NodeKind::ArrayV2(meta) | NodeKind::ArrayV3(meta)) => meta,
            _ => return Err(damaged(format!("level {k} has no array metadata"))),
        };
        let keys = ChunkKeys::of(&meta).ok_or_else(|| damaged(format!("level {k}'s metadata is not readable")))?;
        let found = tree::count_chunk_files(&level.dir, &keys).map_err(io_failure("cannot read", &level.dir))?;
        if found != level.stored {
            return Err(damaged(format!(
                "level {k} holds {} chunk files ({} bytes) where the build stored {} ({} bytes)",
                found.chunks, found.bytes, level.stored.chunks, level.stored.bytes
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_failed(kind: std::io::ErrorKind) -> BuildError {
        StoreError::WriteChunk {
            path: PathBuf::from("out.zarr/1"),
            key: "0/0/3".into(),
            source: Box::new(std::io::Error::from(kind)),
        }
        .into()
    }

    #[test]
    fn a_write_into_a_vanished_directory_is_the_output_changing() {
        let error = output_changed(Path::new("out.zarr"), write_failed(std::io::ErrorKind::NotFound));
        let message = error.to_string();
        assert!(matches!(error, BuildError::OutputDamaged { .. }), "{message}");
        assert!(message.contains("changed during the build"), "{message}");
        assert!(message.contains("cannot write chunk `0/0/3`"), "{message}");
    }

    #[test]
    fn other_write_failures_are_left_as_they_are() {
        let error = output_changed(
            Path::new("out.zarr"),
            write_failed(std::io::ErrorKind::PermissionDenied),
        );
        assert!(
            matches!(error, BuildError::Store(StoreError::WriteChunk { .. })),
            "{error}"
        );
        let error = output_changed(Path::new("out.zarr"), StoreError::Cancelled.into());
        assert!(error.is_cancellation());
    }
}
