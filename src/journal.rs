//! Safe and resumable output: the lock, the build record and the task journal that a build
//! keeps inside OUTPUT while it runs (SPEC §4's "a run that dies never leaves metadata that
//! lies", and `--resume`).
//!
//! - [`lock`]: `.ome-pyramid.lock`, held by the build writing OUTPUT.
//! - [`record`]: `.ome-pyramid-build.json`, the settings that decide the output's bytes and
//!   a fingerprint of the input; a resumed build must match it.
//! - `.ome-pyramid-journal` (here) lists, one line each, the passes planned
//!   (`pass FIRST LAST`) and the tasks finished (`done FIRST TASK` followed by every chunk
//!   file the task stored, as `LEVEL:CHUNK:BYTES`). A task is journaled only after all its
//!   chunks are written. Each line ends with a checksum; a torn or altered line is ignored,
//!   and a resumed build checks that the chunk files a finished task lists still exist with
//!   their sizes, redoing the task where they do not. So a resumed build redoes exactly the
//!   unfinished work and ends byte-identical to an uninterrupted one.
//!
//! All three are removed when the build completes, after the image metadata is in place.

pub mod lock;
pub mod partition;
pub mod record;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use lock::{LOCK_FILE, LockHolder, OutputLock};
pub use record::{InputFingerprint, RECORD_FILE, check_record, write_record};

use crate::digest::fnv64;

/// The journal's name inside OUTPUT.
pub const JOURNAL_FILE: &str = ".ome-pyramid-journal";

/// The journal's first line; a journal without it is not trusted.
const HEADER: &str = "ome-pyramid journal 2";

/// Problems with the lock, record or journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Another running process holds the lock.
    #[error("`{path}` is being written by another ome-pyramid process ({holder}); wait for it, or stop it first")]
    Locked {
        /// The output.
        path: PathBuf,
        /// Who holds it, e.g. `pid 42 on host h`.
        holder: String,
    },
    /// Another running process holds the lock of a part of a partitioned build.
    #[error(
        "part {part} of `{path}` is being run by another ome-pyramid process ({holder}); wait for it, or stop it first"
    )]
    PartLocked {
        /// The output.
        path: PathBuf,
        /// The part.
        part: usize,
        /// Who holds it, e.g. `pid 42 on host h`.
        holder: String,
    },
    /// A partitioned build's plan that cannot be read.
    #[error("the plan `{path}` cannot be read: {reason}")]
    PlanUnreadable {
        /// The plan file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `--resume` on an output without a build record.
    #[error("`{0}` cannot be resumed: it holds no record of an interrupted ome-pyramid build")]
    NothingToResume(PathBuf),
    /// `--resume` on an output that a build already completed.
    #[error("`{0}` is complete: there is no interrupted build to resume (use --overwrite to build it again)")]
    AlreadyComplete(PathBuf),
    /// `--resume` with settings that differ from the interrupted build's.
    #[error(
        "`{path}` cannot be resumed with these settings: {} (resume with the original options, or use --overwrite)",
        record::describe_differences(.differences)
    )]
    SettingsDiffer {
        /// The output.
        path: PathBuf,
        /// The differing settings, most telling first: name, recorded value, value now.
        differences: Vec<(String, String, String)>,
    },
    /// `--resume` over an input whose data changed since the interrupted build.
    #[error(
        "`{path}` cannot be resumed: its input `{input}` changed since the interrupted build ({detail}); use --overwrite to build it again"
    )]
    InputChanged {
        /// The output.
        path: PathBuf,
        /// The input.
        input: String,
        /// What changed.
        detail: String,
    },
    /// A file-system failure.
    #[error("{action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl JournalError {
    /// True for conflicts the user can fix by changing the request (exit code 2).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, JournalError::Io { .. })
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One chunk file that a task stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoredChunk {
    /// Level.
    pub level: usize,
    /// Flat (C-order) index of the chunk in its level's chunk grid.
    pub index: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Chunk files stored in one level and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredTotals {
    /// Chunk files.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl StoredTotals {
    /// Counts one more chunk file of `bytes`.
    pub fn add(&mut self, bytes: u64) {
        self.chunks += 1;
        self.bytes += bytes;
    }
}

/// The journal of passes planned and tasks finished.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    passes: HashMap<usize, usize>,
    done: HashMap<(usize, u64), Vec<StoredChunk>>,
}

/// `text #checksum`.
fn sealed(text: &str) -> String {
    format!("{text} #{:016x}\n", fnv64(text.as_bytes()))
}

/// The text of a sealed line whose checksum holds.
fn unsealed(line: &str) -> Option<&str> {
    let (text, sum) = line.rsplit_once(" #")?;
    (u64::from_str_radix(sum, 16).ok()? == fnv64(text.as_bytes())).then_some(text)
}

fn parse_chunk(field: &str) -> Option<StoredChunk> {
    let mut parts = field.split(':').map(str::parse::<u64>);
    let (Some(Ok(level)), Some(Ok(index)), Some(Ok(bytes)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(StoredChunk {
        level: usize::try_from(level).ok()?,
        index,
        bytes,
    })
}

/// What a journal file records: the passes planned and the tasks finished.
#[derive(Debug, Default, Clone)]
pub struct JournalEntries {
    /// The last level of each planned pass, by its first level.
    pub passes: HashMap<usize, usize>,
    /// The chunk files of each finished task, by pass (its first level) and task.
    pub done: HashMap<(usize, u64), Vec<StoredChunk>>,
}

impl JournalEntries {
    /// Reads the journal at `path` without changing it; `None` when it is missing or not
    /// trusted (no header). Torn or altered lines are left out.
    #[must_use]
    pub fn read(path: &Path) -> Option<Self> {
        let text = fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return None;
        }
        let mut entries = Self::default();
        for line in lines.filter_map(unsealed) {
            let mut fields = line.split_whitespace();
            let kind = fields.next();
            let (Some(Ok(first)), Some(Ok(second))) = (
                fields.next().map(str::parse::<usize>),
                fields.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            match kind {
                Some("pass") => {
                    entries.passes.insert(first, usize::try_from(second).unwrap_or(0));
                }
                Some("done") => {
                    let chunks: Option<Vec<StoredChunk>> = fields.map(parse_chunk).collect();
                    if let Some(chunks) = chunks {
                        entries.done.insert((first, second), chunks);
                    }
                }
                // From a future version: ignored.
                _ => {}
            }
        }
        Some(entries)
    }
}

impl Journal {
    /// Opens the journal of `output`: a new, empty one, or (when `resume`) the existing one
    /// with what it records.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn open(output: &Path, resume: bool) -> Result<Self, JournalError> {
        Self::open_file(output.join(JOURNAL_FILE), resume)
    }

    /// Opens the journal file at `path` (the journal of a whole build, or of one part of a
    /// partitioned one): a new, empty one, or (when `resume`) the existing one with what it
    /// records.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn open_file(path: PathBuf, resume: bool) -> Result<Self, JournalError> {
        let kept = if resume { JournalEntries::read(&path) } else { None };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("cannot open the journal", &path))?;
        if kept.is_none() {
            // New, or untrusted: its passes and tasks are redone from scratch.
            file.set_len(0).map_err(io("cannot reset the journal", &path))?;
            writeln!(file, "{HEADER}").map_err(io("cannot write the journal", &path))?;
        }
        let JournalEntries { passes, done } = kept.unwrap_or_default();
        Ok(Self {
            path,
            file: Mutex::new(file),
            passes,
            done,
        })
    }

    fn append(&self, text: &str) -> Result<(), JournalError> {
        let line = sealed(text);
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        file.write_all(line.as_bytes())
            .map_err(io("cannot write the journal", &self.path))
    }

    /// The last level of the pass starting at `first`, if an earlier run planned it.
    #[must_use]
    pub fn planned_pass(&self, first: usize) -> Option<usize> {
        self.passes.get(&first).copied()
    }

    /// Records the pass `first → last`.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn pass_started(&self, first: usize, last: usize) -> Result<(), JournalError> {
        self.append(&format!("pass {first} {last}"))
    }

    /// Fixes the pass starting at `first` to end at `last` (a partitioned build's first
    /// pass, decided by its plan), recording it unless the journal already does.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn fix_pass(&mut self, first: usize, last: usize) -> Result<(), JournalError> {
        if self.passes.get(&first) != Some(&last) {
            self.pass_started(first, last)?;
            self.passes.insert(first, last);
        }
        Ok(())
    }

    /// True if task `task` of the pass starting at `first` finished in an earlier run.
    #[must_use]
    pub fn is_done(&self, first: usize, task: u64) -> bool {
        self.done.contains_key(&(first, task))
    }

    /// Tasks of the pass starting at `first` that finished in an earlier run.
    #[must_use]
    pub fn done_in_pass(&self, first: usize) -> usize {
        self.done.keys().filter(|(f, _)| *f == first).count()
    }

    /// Records that a task finished, with every chunk file it stored (after all were written).
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn task_done(&self, first: usize, task: u64, stored: &[StoredChunk]) -> Result<(), JournalError> {
        use std::fmt::Write as _;
        let mut text = format!("done {first} {task}");
        for c in stored {
            let _ = write!(text, " {}:{}:{}", c.level, c.index, c.bytes);
        }
        self.append(&text)
    }

    /// Forgets the finished tasks whose stored chunks `intact` does not confirm (a chunk
    /// file deleted or changed since), so that they are done again. Returns how many.
    pub fn keep_intact(&mut self, intact: impl Fn(&StoredChunk) -> bool + Sync) -> usize {
        use rayon::prelude::*;
        let broken: Vec<(usize, u64)> = self
            .done
            .par_iter()
            .filter(|(_, chunks)| !chunks.iter().all(&intact))
            .map(|(task, _)| *task)
            .collect();
        for task in &broken {
            self.done.remove(task);
        }
        broken.len()
    }

    /// Chunk files stored per level by the tasks that finished in earlier runs.
    #[must_use]
    pub fn stored_before(&self, levels: usize) -> Vec<StoredTotals> {
        let mut totals = vec![StoredTotals::default(); levels];
        for chunk in self.done.values().flatten() {
            if let Some(t) = totals.get_mut(chunk.level) {
                t.add(chunk.bytes);
            }
        }
        totals
    }

    /// Removes the journal and the build record (the build is complete).
    pub fn finish(&self, output: &Path) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(output.join(RECORD_FILE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(level: usize, index: u64, bytes: u64) -> StoredChunk {
        StoredChunk { level, index, bytes }
    }

    #[test]
    fn journal_survives_a_torn_last_line() {
        let dir = tempfile::TempDir::new().unwrap();
        let journal = Journal::open(dir.path(), false).unwrap();
        journal.pass_started(0, 2).unwrap();
        journal.task_done(0, 3, &[chunk(0, 3, 100), chunk(1, 0, 40)]).unwrap();
        journal.task_done(0, 5, &[]).unwrap();
        drop(journal);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        f.write_all(b"done 0 4 0:4:1").unwrap();
        let journal = Journal::open(dir.path(), true).unwrap();
        assert_eq!(journal.planned_pass(0), Some(2));
        assert!(journal.is_done(0, 3) && journal.is_done(0, 5) && !journal.is_done(0, 4));
        assert_eq!(journal.done_in_pass(0), 2);
        assert_eq!(
            journal.stored_before(2),
            vec![
                StoredTotals { chunks: 1, bytes: 100 },
                StoredTotals { chunks: 1, bytes: 40 }
            ]
        );
        let fresh = Journal::open(dir.path(), false).unwrap();
        assert_eq!(fresh.done_in_pass(0), 0);
    }

    #[test]
    fn resume_ignores_forged_done_lines() {
        let dir = tempfile::TempDir::new().unwrap();
        let journal = Journal::open(dir.path(), false).unwrap();
        journal.pass_started(0, 1).unwrap();
        journal.task_done(0, 0, &[chunk(0, 0, 10)]).unwrap();
        drop(journal);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        // Appended by hand: in the old format, and with a checksum that does not hold.
        f.write_all(b"done 0 1\ndone 0 2 #0000000000000000\n").unwrap();
        let journal = Journal::open(dir.path(), true).unwrap();
        assert!(journal.is_done(0, 0));
        assert!(!journal.is_done(0, 1) && !journal.is_done(0, 2));
    }

    #[test]
    fn resume_redoes_tasks_whose_chunks_are_gone() {
        let dir = tempfile::TempDir::new().unwrap();
        let journal = Journal::open(dir.path(), false).unwrap();
        journal.task_done(0, 0, &[chunk(0, 0, 10), chunk(1, 0, 5)]).unwrap();
        journal.task_done(0, 1, &[chunk(0, 1, 10)]).unwrap();
        journal.task_done(0, 2, &[]).unwrap();
        drop(journal);
        let mut journal = Journal::open(dir.path(), true).unwrap();
        // Chunk 0/1 was deleted since.
        let redone = journal.keep_intact(|c| !(c.level == 0 && c.index == 1));
        assert_eq!(redone, 1);
        assert!(journal.is_done(0, 0) && !journal.is_done(0, 1) && journal.is_done(0, 2));
    }

    #[test]
    fn a_journal_without_its_header_is_not_trusted() {
        let dir = tempfile::TempDir::new().unwrap();
        fs::write(dir.path().join(JOURNAL_FILE), sealed("done 0 0")).unwrap();
        let journal = Journal::open(dir.path(), true).unwrap();
        assert!(!journal.is_done(0, 0));
    }
}
