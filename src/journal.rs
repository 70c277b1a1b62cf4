//! Safe and resumable output: the lock file, the build record and the task journal that a
//! build keeps inside OUTPUT while it runs (SPEC §4's "a run that dies never leaves
//! metadata that lies", and `--resume`).
//!
//! - `.ome-pyramid.lock` holds the pid of the build writing OUTPUT; a second build refuses
//!   to write there while that process lives. A lock left by a killed process is stale and
//!   is taken over.
//! - `.ome-pyramid-build.json` records every setting that decides the output's bytes; a
//!   resumed build must match it.
//! - `.ome-pyramid-journal` lists, one line each, the passes planned (`pass FIRST LAST`)
//!   and the tasks finished (`done FIRST TASK`). A task is journaled only after all its
//!   chunks are written, so a resumed build redoes exactly the unfinished tasks and ends
//!   byte-identical to an uninterrupted one. A torn last line is ignored.
//!
//! All three are removed when the build completes, after `.zattrs` is in place.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

/// The lock file's name inside OUTPUT.
pub const LOCK_FILE: &str = ".ome-pyramid.lock";
/// The build record's name inside OUTPUT.
pub const RECORD_FILE: &str = ".ome-pyramid-build.json";
/// The journal's name inside OUTPUT.
pub const JOURNAL_FILE: &str = ".ome-pyramid-journal";

/// Problems with the lock, record or journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Another live process holds the lock.
    #[error("`{path}` is being written by another ome-pyramid process (pid {pid}); wait for it, or stop it first")]
    Locked {
        /// The output.
        path: PathBuf,
        /// The other process.
        pid: u32,
    },
    /// `--resume` on an output without a build record.
    #[error("`{0}` cannot be resumed: it holds no record of an interrupted ome-pyramid build")]
    NothingToResume(PathBuf),
    /// `--resume` on an output that a build already completed.
    #[error("`{0}` is complete: there is no interrupted build to resume (use --overwrite to build it again)")]
    AlreadyComplete(PathBuf),
    /// `--resume` with settings that differ from the interrupted build's.
    #[error(
        "`{path}` cannot be resumed with these settings: {key} was {before}, now {now} (resume with the original options, or use --overwrite)"
    )]
    SettingsDiffer {
        /// The output.
        path: PathBuf,
        /// The first differing setting.
        key: String,
        /// Its recorded value.
        before: String,
        /// Its value now.
        now: String,
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

/// True if a process with this pid is running (Linux: `/proc/PID`; elsewhere, assumed).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if Path::new("/proc/self").exists() {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// The pid recorded in OUTPUT's lock, if a live process holds it.
#[must_use]
pub fn live_lock_holder(output: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(output.join(LOCK_FILE)).ok()?.trim().parse().ok()?;
    process_alive(pid).then_some(pid)
}

/// Holds OUTPUT's lock; removes the lock file when dropped.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
}

impl OutputLock {
    /// Takes the lock of `output` (an existing directory), taking over a stale one.
    ///
    /// # Errors
    /// [`JournalError::Locked`] if a live process holds it; [`JournalError::Io`].
    pub fn acquire(output: &Path) -> Result<Self, JournalError> {
        let path = output.join(LOCK_FILE);
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    writeln!(file, "{}", std::process::id()).map_err(io("cannot write", &path))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if let Some(pid) = live_lock_holder(output) {
                        return Err(JournalError::Locked {
                            path: output.to_path_buf(),
                            pid,
                        });
                    }
                    tracing::info!("taking over the stale lock `{}`", path.display());
                    fs::remove_file(&path).map_err(io("cannot remove the stale lock", &path))?;
                }
                Err(e) => return Err(io("cannot create the lock", &path)(e)),
            }
        }
        Err(JournalError::Io {
            action: "cannot take the lock",
            path,
            source: std::io::Error::other("another process raced for it"),
        })
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes the build record (the settings that decide the output's bytes).
///
/// # Errors
/// [`JournalError::Io`].
pub fn write_record(output: &Path, record: &Value) -> Result<(), JournalError> {
    let path = output.join(RECORD_FILE);
    let text = serde_json::to_string_pretty(record).expect("JSON values serialise");
    fs::write(&path, text).map_err(io("cannot write", &path))
}

/// Checks that a resumed build's settings equal the interrupted one's.
///
/// # Errors
/// [`JournalError::NothingToResume`] without a record; [`JournalError::SettingsDiffer`]
/// naming the first difference.
pub fn check_record(output: &Path, record: &Value) -> Result<(), JournalError> {
    let path = output.join(RECORD_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return Err(if output.join(".zattrs").is_file() {
            JournalError::AlreadyComplete(output.to_path_buf())
        } else {
            JournalError::NothingToResume(output.to_path_buf())
        });
    };
    let before: Value = serde_json::from_str(&text).map_err(|_| JournalError::NothingToResume(output.to_path_buf()))?;
    let (Some(old), Some(new)) = (before.as_object(), record.as_object()) else {
        return Err(JournalError::NothingToResume(output.to_path_buf()));
    };
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (a, b) = (old.get(key.as_str()), new.get(key.as_str()));
        if a != b {
            let show = |v: Option<&Value>| v.map_or_else(|| "unset".to_string(), Value::to_string);
            return Err(JournalError::SettingsDiffer {
                path: output.to_path_buf(),
                key: key.clone(),
                before: show(a),
                now: show(b),
            });
        }
    }
    Ok(())
}

/// The journal of passes planned and tasks finished.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    passes: HashMap<usize, usize>,
    done: HashSet<(usize, u64)>,
}

impl Journal {
    /// Opens the journal of `output`: a new, empty one, or (when `resume`) the existing one
    /// with what it records.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn open(output: &Path, resume: bool) -> Result<Self, JournalError> {
        let path = output.join(JOURNAL_FILE);
        let mut passes = HashMap::new();
        let mut done = HashSet::new();
        if resume && let Ok(text) = fs::read_to_string(&path) {
            for line in text.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let numbers: Option<Vec<u64>> = fields.iter().skip(1).map(|f| f.parse().ok()).collect();
                match (fields.first(), numbers.as_deref()) {
                    (Some(&"pass"), Some(&[first, last])) => {
                        passes.insert(
                            usize::try_from(first).unwrap_or(usize::MAX),
                            usize::try_from(last).unwrap_or(0),
                        );
                    }
                    (Some(&"done"), Some(&[first, task])) => {
                        done.insert((usize::try_from(first).unwrap_or(usize::MAX), task));
                    }
                    // A line torn by a kill, or from a future version: ignored.
                    _ => {}
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&path)
            .map_err(io("cannot open the journal", &path))?;
        if !resume {
            file.set_len(0).map_err(io("cannot reset the journal", &path))?;
        }
        Ok(Self {
            path,
            file: Mutex::new(file),
            passes,
            done,
        })
    }

    fn append(&self, line: &str) -> Result<(), JournalError> {
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
        self.append(&format!("pass {first} {last}\n"))
    }

    /// True if task `task` of the pass starting at `first` finished in an earlier run.
    #[must_use]
    pub fn is_done(&self, first: usize, task: u64) -> bool {
        self.done.contains(&(first, task))
    }

    /// Tasks of the pass starting at `first` that finished in an earlier run.
    #[must_use]
    pub fn done_in_pass(&self, first: usize) -> usize {
        self.done.iter().filter(|(f, _)| *f == first).count()
    }

    /// Records that a task finished (after all its chunks were written).
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn task_done(&self, first: usize, task: u64) -> Result<(), JournalError> {
        self.append(&format!("done {first} {task}\n"))
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

    #[test]
    fn journal_survives_a_torn_last_line() {
        let dir = tempfile::TempDir::new().unwrap();
        let journal = Journal::open(dir.path(), false).unwrap();
        journal.pass_started(0, 2).unwrap();
        journal.task_done(0, 3).unwrap();
        journal.task_done(0, 5).unwrap();
        drop(journal);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        f.write_all(b"done 0 ").unwrap();
        let journal = Journal::open(dir.path(), true).unwrap();
        assert_eq!(journal.planned_pass(0), Some(2));
        assert!(journal.is_done(0, 3) && journal.is_done(0, 5) && !journal.is_done(0, 4));
        assert_eq!(journal.done_in_pass(0), 2);
        let fresh = Journal::open(dir.path(), false).unwrap();
        assert_eq!(fresh.done_in_pass(0), 0);
    }

    #[test]
    fn a_live_lock_blocks_and_a_stale_one_is_taken_over() {
        let dir = tempfile::TempDir::new().unwrap();
        let lock = OutputLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            OutputLock::acquire(dir.path()),
            Err(JournalError::Locked { .. })
        ));
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        // A pid that cannot be running.
        fs::write(dir.path().join(LOCK_FILE), "4294967290\n").unwrap();
        let lock = OutputLock::acquire(dir.path()).unwrap();
        drop(lock);
    }

    #[test]
    fn records_must_match() {
        let dir = tempfile::TempDir::new().unwrap();
        let record = serde_json::json!({"method": "mean", "levels": 3});
        assert!(matches!(
            check_record(dir.path(), &record),
            Err(JournalError::NothingToResume(_))
        ));
        write_record(dir.path(), &record).unwrap();
        check_record(dir.path(), &record).unwrap();
        let other = serde_json::json!({"method": "gaussian", "levels": 3});
        let err = check_record(dir.path(), &other).unwrap_err();
        assert!(
            err.to_string().contains("method was \"mean\", now \"gaussian\""),
            "{err}"
        );
    }
}
