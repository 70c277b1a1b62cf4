//! OUTPUT's lock: one build writes an output at a time.
//!
//! The lock is an advisory lock of the operating system (`flock` on Unix, `LockFileEx` on
//! Windows) on `.ome-pyramid.lock`, held for the whole build. The operating system drops
//! it when its holder ends in any way, SIGKILL included, and whatever PID namespace or
//! container the holder ran in, so a lock left behind by a dead build is always seen as
//! stale: a recycled PID (PID 1 in the next container) can no longer hold an output.
//!
//! The file also records who holds it (pid, host, boot id and the process's start time),
//! for messages, and for file systems that do not lock files, where that identity decides
//! whether the holder still runs.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{JournalError, io};

/// The lock file's name inside OUTPUT.
pub const LOCK_FILE: &str = ".ome-pyramid.lock";

/// Who holds (or held) a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// The kernel's boot id (Linux), which tells a reboot apart.
    #[serde(default)]
    pub boot_id: String,
    /// The process's start time in clock ticks since boot (Linux), which tells a recycled
    /// pid apart.
    #[serde(default)]
    pub started: u64,
}

impl LockHolder {
    /// This process.
    #[must_use]
    pub fn this_process() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            host: host_name(),
            boot_id: boot_id(),
            started: process_start_ticks(pid).unwrap_or(0),
        }
    }

    /// Whether the holder may still run, judged from its identity alone (for file systems
    /// without locks): a holder on another host is assumed alive, since nothing here can
    /// tell; one on this host lives if its pid runs and started when the lock says.
    #[must_use]
    pub fn may_be_alive(&self) -> bool {
        let me = Self::this_process();
        if self.host != me.host {
            return true;
        }
        if !self.boot_id.is_empty() && !me.boot_id.is_empty() && self.boot_id != me.boot_id {
            return false;
        }
        match process_start_ticks(self.pid) {
            Some(started) => self.started == 0 || started == self.started,
            // No such process here, or no /proc to ask: alive only where we cannot know.
            None => !Path::new("/proc/self/stat").exists(),
        }
    }

    /// `pid 42 on host h`, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("pid {} on host {}", self.pid, self.host)
    }
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`: the start time in clock ticks since boot.
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Holds OUTPUT's lock; removes the lock file when dropped.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    /// The locked file: closing it releases the lock.
    _file: File,
}

impl OutputLock {
    /// Takes the lock of `output` (an existing directory). A lock whose holder has ended is
    /// taken over.
    ///
    /// # Errors
    /// [`JournalError::Locked`] if a running process holds it; [`JournalError::Io`].
    pub fn acquire(output: &Path) -> Result<Self, JournalError> {
        Self::acquire_file(output.join(LOCK_FILE), |holder| locked(output, holder))
    }

    /// Takes the lock of part `part` of the partitioned build of `output`: each part has its
    /// own, so parts run at once on different hosts sharing only the file system.
    ///
    /// # Errors
    /// [`JournalError::PartLocked`] if a running process holds it; [`JournalError::Io`].
    pub fn acquire_part(output: &Path, part: usize) -> Result<Self, JournalError> {
        let path = super::partition::part_file(output, part, super::partition::PartFile::Lock);
        Self::acquire_file(path, |holder| JournalError::PartLocked {
            path: output.to_path_buf(),
            part,
            holder: holder.map_or_else(|| "unknown pid".into(), |h| h.describe()),
        })
    }

    fn acquire_file(path: PathBuf, locked: impl Fn(Option<LockHolder>) -> JournalError) -> Result<Self, JournalError> {
        // A holder that finishes removes the file: the one we locked may then be gone, and
        // another process may have made a new one. Try again on the new file.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io("cannot open the lock", &path))?;
            match file.try_lock() {
                Ok(()) => {
                    if !is_file_at(&file, &path) {
                        continue;
                    }
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(locked(read_holder(&mut file)));
                }
                Err(fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                    // No file locks here: the recorded identity decides.
                    if let Some(holder) = read_holder(&mut file).filter(LockHolder::may_be_alive) {
                        return Err(locked(Some(holder)));
                    }
                }
                Err(fs::TryLockError::Error(e)) => return Err(io("cannot take the lock", &path)(e)),
            }
            write_holder(&mut file, &path)?;
            return Ok(Self { path, _file: file });
        }
        Err(JournalError::Io {
            action: "cannot take the lock",
            path,
            source: std::io::Error::other("other processes keep replacing it"),
        })
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked, so no other process can lock this file and then
        // find it gone; the lock itself ends when the file is closed.
        let _ = fs::remove_file(&self.path);
    }
}

fn locked(output: &Path, holder: Option<LockHolder>) -> JournalError {
    JournalError::Locked {
        path: output.to_path_buf(),
        holder: holder.map_or_else(|| "unknown pid".into(), |h| h.describe()),
    }
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_holder(file: &mut File, path: &Path) -> Result<(), JournalError> {
    let text = serde_json::to_string(&LockHolder::this_process()).expect("the holder serialises");
    file.set_len(0).map_err(io("cannot write", path))?;
    file.rewind().map_err(io("cannot write", path))?;
    file.write_all(text.as_bytes()).map_err(io("cannot write", path))
}

/// True if `file` is the file now at `path` (not one removed or replaced since it was opened).
#[cfg(unix)]
fn is_file_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn is_file_at(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lock_blocks_and_a_released_one_is_taken() {
        let dir = tempfile::TempDir::new().unwrap();
        let lock = OutputLock::acquire(dir.path()).unwrap();
        let err = OutputLock::acquire(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(&format!("pid {} on host", std::process::id())),
            "{err}"
        );
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        OutputLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn stale_lock_with_a_recycled_pid_is_taken_over() {
        // A build killed as PID 1 in a container leaves a lock naming a pid that is alive
        // here (this very process), but nobody holds the file lock any more.
        let dir = tempfile::TempDir::new().unwrap();
        let left_behind = LockHolder::this_process();
        fs::write(dir.path().join(LOCK_FILE), serde_json::to_string(&left_behind).unwrap()).unwrap();
        let lock = OutputLock::acquire(dir.path()).unwrap();
        drop(lock);
        // The old one-line pid format is taken over too.
        fs::write(dir.path().join(LOCK_FILE), "1\n").unwrap();
        OutputLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn identity_tells_a_recycled_pid_from_its_holder() {
        let me = LockHolder::this_process();
        assert!(me.may_be_alive());
        if me.started != 0 {
            let recycled = LockHolder {
                started: me.started + 1,
                ..me.clone()
            };
            assert!(!recycled.may_be_alive(), "same pid, other start time: not the holder");
            let rebooted = LockHolder {
                boot_id: "another-boot".into(),
                ..me.clone()
            };
            assert!(!rebooted.may_be_alive());
        }
        let elsewhere = LockHolder {
            host: format!("{}-elsewhere", me.host),
            ..me
        };
        assert!(elsewhere.may_be_alive(), "another host's process cannot be checked");
    }
}
