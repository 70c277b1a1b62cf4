//! Chunk files written or copied whole ([`WholeFiles`]).
//!
//! A copy (of a stored chunk file, for a level 0 kept in the input's encoding) is, on Linux,
//! in order of preference:
//! - a clone (`FICLONE`): on file systems with reflinks (XFS, Btrfs) the new file shares
//!   the input's blocks and nothing is copied;
//! - one copy in the kernel (`copy_file_range`);
//! - a copy through user space, where the kernel cannot copy between the two files.
//!
//! On ext4 the new file's blocks are reserved in one call (`fallocate`) before it is
//! written or copied, if it is 256 KiB or more: that took less kernel time than letting the
//! write or the copy reserve them page by page (BENCHMARKS.md). Other file systems are
//! written plainly; on a network file system, reserving would be one more round trip per
//! chunk.
//!
//! Unlike [`std::fs::copy`], a copy gets the permissions of any file the build writes,
//! not the input's: a read-only input (an archive) must not make the output's chunks
//! read-only. Elsewhere than Linux the two are [`std::fs::write`] and `std::fs::copy`.

use std::fs::File;
use std::io;
use std::path::Path;

/// The smallest file whose blocks are reserved. Writing files one by one on ext4, the
/// reservation saved 90 µs per 2.6 MB file and 10–20 µs per 400 KB one, and cost up to 7
/// µs per 40 KB one, the price of the call itself (BENCHMARKS.md).
const RESERVE_FROM: u64 = 256 << 10;

/// How chunk files under one directory are written and copied whole.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WholeFiles {
    /// Reserve a file's blocks before writing it (see the module's documentation).
    reserve: bool,
}

impl WholeFiles {
    /// For files under `dir` (or under its nearest existing ancestor, for a directory not
    /// made yet): reserving blocks where that is on ext4.
    pub(crate) fn under(dir: &Path) -> Self {
        Self { reserve: is_ext4(dir) }
    }

    /// Writes `bytes` to a new file at `path` (replacing one there).
    ///
    /// # Errors
    /// Any I/O error creating or writing the file.
    pub(crate) fn write(self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let file = File::create(path)?;
        self.reserve(&file, bytes.len() as u64);
        io::Write::write_all(&mut &file, bytes)
    }

    /// Copies the file at `from` to a new file at `to` (replacing one there); returns the
    /// bytes copied.
    ///
    /// # Errors
    /// Any I/O error opening, creating or copying.
    #[cfg(target_os = "linux")]
    pub(crate) fn copy(self, from: &Path, to: &Path) -> io::Result<u64> {
        use std::io::Seek;

        let source = File::open(from)?;
        let target = File::create(to)?;
        if rustix::fs::ioctl_ficlone(&target, &source).is_ok() {
            return Ok(source.metadata()?.len());
        }
        let len = source.metadata()?.len();
        let reserved = self.reserve(&target, len);
        let copied = match copy_in_kernel(&source, &target, len) {
            Ok(copied) => copied,
            Err(e) if kernel_cannot_copy(&e) => {
                // From the start of both: a reservation made the file `len` long already.
                (&source).rewind()?;
                (&target).rewind()?;
                io::copy(&mut &source, &mut &target)?
            }
            Err(e) => return Err(e),
        };
        // A source that shrank while it was copied: the reserved tail must not stay as zeros.
        if reserved && copied < len {
            target.set_len(copied)?;
        }
        Ok(copied)
    }

    /// Copies the file at `from` to a new file at `to` (replacing one there); returns the
    /// bytes copied.
    ///
    /// # Errors
    /// Any I/O error opening, creating or copying.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn copy(self, from: &Path, to: &Path) -> io::Result<u64> {
        std::fs::copy(from, to)
    }

    /// Reserves the blocks of the first `len` bytes of a new, empty `file`, making it `len`
    /// long, where this store reserves, the file is large enough to gain from it, and the
    /// file system can; returns whether it did.
    #[cfg(target_os = "linux")]
    fn reserve(self, file: &File, len: u64) -> bool {
        self.reserve
            && len >= RESERVE_FROM
            && rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len).is_ok()
    }

    #[cfg(not(target_os = "linux"))]
    fn reserve(self, _: &File, _: u64) -> bool {
        false
    }
}

/// Whether `dir`, or its nearest existing ancestor, is on ext4 (or ext2/3, which share its
/// magic number).
#[cfg(target_os = "linux")]
fn is_ext4(dir: &Path) -> bool {
    const EXT4_SUPER_MAGIC: rustix::fs::FsWord = 0xEF53;
    dir.ancestors()
        .find_map(|d| rustix::fs::statfs(d).ok())
        .is_some_and(|s| s.f_type == EXT4_SUPER_MAGIC)
}

#[cfg(not(target_os = "linux"))]
fn is_ext4(_: &Path) -> bool {
    false
}

/// `copy_file_range` until `len` bytes are copied or the source ends.
#[cfg(target_os = "linux")]
fn copy_in_kernel(source: &File, target: &File, len: u64) -> io::Result<u64> {
    let mut copied = 0;
    while copied < len {
        let chunk = usize::try_from(len - copied).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(source, None, target, None, chunk)? {
            0 => break,
            n => copied += n as u64,
        }
    }
    Ok(copied)
}

/// Errors that say the kernel cannot copy between these two files, not that copying failed.
#[cfg(target_os = "linux")]
fn kernel_cannot_copy(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let errno = Errno::from_io_error(e);
    [Errno::XDEV, Errno::NOSYS, Errno::OPNOTSUPP, Errno::INVAL, Errno::PERM]
        .into_iter()
        .any(|cannot| errno == Some(cannot))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of writing, whatever file system the tests run on.
    const BOTH: [WholeFiles; 2] = [WholeFiles { reserve: false }, WholeFiles { reserve: true }];

    fn sample(len: u32) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_written_file_holds_the_bytes_and_replaces_what_was_there() {
        for files in BOTH {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("chunk");
            std::fs::write(&path, vec![9u8; 600_000]).unwrap();
            files.write(&path, &sample(400_000)).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), sample(400_000), "{files:?}");
            files.write(&path, b"").unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"", "{files:?}");
        }
    }

    #[test]
    fn a_copy_holds_the_sources_bytes_and_replaces_what_was_there() {
        for files in BOTH {
            let dir = tempfile::tempdir().unwrap();
            let (from, to) = (dir.path().join("from"), dir.path().join("to"));
            std::fs::write(&from, sample(400_000)).unwrap();
            std::fs::write(&to, vec![9u8; 600_000]).unwrap();
            assert_eq!(files.copy(&from, &to).unwrap(), 400_000, "{files:?}");
            assert_eq!(std::fs::read(&to).unwrap(), sample(400_000), "{files:?}");
            assert_eq!(
                std::fs::read(&from).unwrap(),
                sample(400_000),
                "the source is left as it was"
            );
        }
    }

    #[test]
    fn an_empty_file_copies_as_an_empty_file() {
        for files in BOTH {
            let dir = tempfile::tempdir().unwrap();
            let (from, to) = (dir.path().join("from"), dir.path().join("to"));
            std::fs::write(&from, b"").unwrap();
            assert_eq!(files.copy(&from, &to).unwrap(), 0, "{files:?}");
            assert_eq!(std::fs::read(&to).unwrap(), b"", "{files:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_only_source_gives_a_writable_copy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        std::fs::write(&from, b"chunk").unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o444)).unwrap();
        let files = WholeFiles::under(dir.path());
        files.copy(&from, &to).unwrap();
        assert!(!std::fs::metadata(&to).unwrap().permissions().readonly());
    }

    /// The file system type `/proc/self/mounts` gives for `path`: that of the longest mount
    /// point above it.
    #[cfg(target_os = "linux")]
    fn mounted_type(path: &Path) -> String {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let path = path.canonicalize().unwrap();
        mounts
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                Some((Path::new(fields.get(1)?).to_path_buf(), fields.get(2)?.to_string()))
            })
            .filter(|(point, _)| path.starts_with(point))
            .max_by_key(|(point, _)| point.as_os_str().len())
            .unwrap()
            .1
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn blocks_are_reserved_on_ext4_only() {
        let dir = tempfile::tempdir().unwrap();
        let not_made = dir.path().join("out.zarr/0");
        for path in [Path::new("/proc"), dir.path(), &not_made] {
            let ext = ["ext2", "ext3", "ext4"]
                .contains(&mounted_type(path.ancestors().find(|p| p.exists()).unwrap()).as_str());
            assert_eq!(WholeFiles::under(path).reserve, ext, "{}", path.display());
        }
    }
}
