//! The bookkeeping of a partitioned build inside OUTPUT: the plan that `plan` writes, and
//! each part's journal, lock and failure note.
//!
//! - `.ome-pyramid-plan.json`: the build's options (everything but the memory budget,
//!   threads and backend may differ between hosts), the levels the parts write, and each
//!   part's range of blocks of the first pass.
//! - `.ome-pyramid-part-INDEX.journal`: the part's journal (same format as a build's).
//! - `.ome-pyramid-part-INDEX.lock`: held while the part runs.
//! - `.ome-pyramid-part-INDEX.failed`: the error of the part's last run, if it failed.
//!
//! `finalize` removes them all once the image metadata is in place.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{JournalError, io};
use crate::engine::BuildOptions;

/// The plan's name inside OUTPUT.
pub const PLAN_FILE: &str = ".ome-pyramid-plan.json";

/// The start of every part file's name inside OUTPUT.
const PART_PREFIX: &str = ".ome-pyramid-part-";

/// The version of the plan's format this build reads and writes.
const PLAN_FORMAT: u32 = 1;

/// The files a part keeps inside OUTPUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartFile {
    /// Its journal.
    Journal,
    /// Its lock.
    Lock,
    /// Why its last run failed.
    Failed,
}

impl PartFile {
    fn extension(self) -> &'static str {
        match self {
            PartFile::Journal => "journal",
            PartFile::Lock => "lock",
            PartFile::Failed => "failed",
        }
    }
}

/// The path of one of part `part`'s files inside `output`.
#[must_use]
pub fn part_file(output: &Path, part: usize, file: PartFile) -> PathBuf {
    output.join(format!("{PART_PREFIX}{part}.{}", file.extension()))
}

/// True for the names of the plan and the part files.
#[must_use]
pub fn is_partition_file(name: &str) -> bool {
    if name == PLAN_FILE {
        return true;
    }
    let Some(rest) = name.strip_prefix(PART_PREFIX) else {
        return false;
    };
    let Some((index, extension)) = rest.split_once('.') else {
        return false;
    };
    !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && [PartFile::Journal, PartFile::Lock, PartFile::Failed]
            .iter()
            .any(|f| f.extension() == extension)
}

/// One part: a contiguous range of the first pass's blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRange {
    /// First block.
    pub first_block: u64,
    /// One past the last block.
    pub end_block: u64,
    /// Uncompressed bytes of level 0 the part covers (what it reads, halos aside).
    pub input_bytes: u64,
}

/// What `plan` decided, stored inside OUTPUT for the parts and `finalize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionPlan {
    /// The plan's format version.
    pub format: u32,
    /// The software that wrote it.
    pub software: String,
    /// The input, as an absolute path every host must see the same way.
    pub input: PathBuf,
    /// The build's options (a part may change the memory budget, threads and backend).
    pub options: BuildOptions,
    /// Levels of the whole pyramid.
    pub levels: usize,
    /// The last level the parts write (they write levels `0..=part_last_level`);
    /// `finalize` computes the levels above it.
    pub part_last_level: usize,
    /// Blocks of the first pass.
    pub blocks: u64,
    /// The parts, in order.
    pub parts: Vec<PartRange>,
}

impl PartitionPlan {
    /// A plan of `parts` for a build of `input` with `options`.
    #[must_use]
    pub fn new(
        input: PathBuf,
        options: BuildOptions,
        levels: usize,
        part_last_level: usize,
        blocks: u64,
        parts: Vec<PartRange>,
    ) -> Self {
        Self {
            format: PLAN_FORMAT,
            software: format!("ome-pyramid {}", env!("CARGO_PKG_VERSION")),
            input,
            options,
            levels,
            part_last_level,
            blocks,
            parts,
        }
    }

    /// The plan stored in `output`, or `None` when there is none.
    ///
    /// # Errors
    /// [`JournalError::Io`] when it cannot be read; [`JournalError::PlanUnreadable`] when
    /// it is not a plan this version understands.
    pub fn read(output: &Path) -> Result<Option<Self>, JournalError> {
        let path = output.join(PLAN_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot read", &path)(e)),
        };
        let unreadable = |reason: String| JournalError::PlanUnreadable {
            path: path.clone(),
            reason,
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        if format != Some(u64::from(PLAN_FORMAT)) {
            return Err(unreadable(format!(
                "its format is {}, this ome-pyramid reads format {PLAN_FORMAT}",
                format.map_or_else(|| "missing".into(), |f| f.to_string())
            )));
        }
        let plan: Self = serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?;
        Ok(Some(plan))
    }

    /// Writes the plan into `output`, atomically.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn write(&self, output: &Path) -> Result<(), JournalError> {
        let path = output.join(PLAN_FILE);
        let value = serde_json::to_value(self).expect("the plan serialises");
        crate::store::write_json_atomically(&path, &value).map_err(|e| JournalError::Io {
            action: "cannot write",
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// Records why part `part`'s run failed, for `finalize` to report (best effort: the
/// failure itself is what the caller returns).
pub fn record_failure(output: &Path, part: usize, reason: &str) {
    let _ = fs::write(part_file(output, part, PartFile::Failed), format!("{reason}\n"));
}

/// Why part `part`'s last run failed, if it did.
#[must_use]
pub fn recorded_failure(output: &Path, part: usize) -> Option<String> {
    fs::read_to_string(part_file(output, part, PartFile::Failed))
        .ok()
        .map(|text| text.trim().to_string())
}

/// Removes the plan and every part's journal and failure note (the lock files go with
/// their locks).
pub fn remove_partition_files(output: &Path, parts: usize) {
    for part in 0..parts {
        let _ = fs::remove_file(part_file(output, part, PartFile::Journal));
        let _ = fs::remove_file(part_file(output, part, PartFile::Failed));
    }
    let _ = fs::remove_file(output.join(PLAN_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_files_are_told_by_name() {
        let out = Path::new("out");
        for file in [PartFile::Journal, PartFile::Lock, PartFile::Failed] {
            let path = part_file(out, 12, file);
            assert!(
                is_partition_file(path.file_name().unwrap().to_str().unwrap()),
                "{path:?}"
            );
        }
        assert!(is_partition_file(PLAN_FILE));
        for name in [
            ".ome-pyramid-part-.journal",
            ".ome-pyramid-part-1x.lock",
            ".ome-pyramid-part-1.txt",
            "part-1.journal",
        ] {
            assert!(!is_partition_file(name), "{name}");
        }
    }

    #[test]
    fn a_plan_round_trips_and_a_foreign_format_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        assert_eq!(PartitionPlan::read(dir.path()).unwrap(), None);
        let plan = PartitionPlan::new(
            "/data/in.zarr".into(),
            BuildOptions::default(),
            4,
            2,
            10,
            vec![PartRange {
                first_block: 0,
                end_block: 10,
                input_bytes: 1 << 20,
            }],
        );
        plan.write(dir.path()).unwrap();
        assert_eq!(PartitionPlan::read(dir.path()).unwrap(), Some(plan));
        fs::write(dir.path().join(PLAN_FILE), r#"{"format": 99}"#).unwrap();
        let err = PartitionPlan::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("format is 99"), "{err}");
    }
}
