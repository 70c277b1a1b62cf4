//! TIFF decoders shared by the threads that read chunks: each thread takes a decoder of its
//! own (over its own file handle, so no two share a file position), preferably one already
//! on the page it needs, and gives it back after the read. A bounded number stay open.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tiff::decoder::{Decoder, Limits};

/// The reader a decoder reads through: buffered, because directories are parsed a few
/// bytes at a time.
pub(crate) type TiffFile = BufReader<File>;

/// Opens `path` as a TIFF or BigTIFF file, on its first page.
///
/// # Errors
/// A one-line reason.
pub(crate) fn open_decoder(path: &Path) -> Result<Decoder<TiffFile>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut limits = Limits::default();
    // Strips and tiles are bounded by `--memory` when the source is opened; tag arrays
    // (strip offsets of a large BigTIFF) may be larger than the default allows.
    limits.decoding_buffer_size = 1 << 31;
    limits.intermediate_buffer_size = 1 << 31;
    guarded(|| Decoder::new(BufReader::with_capacity(64 << 10, file)).map(|d| d.with_limits(limits)))
        .map_err(|e| e.to_string())
}

/// Runs `read`, turning a panic inside the TIFF decoder (a malformed file it did not
/// expect) into an error.
pub(crate) fn guarded<T>(read: impl FnOnce() -> tiff::TiffResult<T>) -> Result<T, GuardedError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(GuardedError::Tiff(e)),
        Err(_) => Err(GuardedError::Panicked),
    }
}

/// The error of a [`guarded`] decoder call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardedError {
    /// The decoder's own error.
    #[error(transparent)]
    Tiff(#[from] tiff::TiffError),
    /// The decoder panicked.
    #[error("the TIFF decoder failed on malformed data")]
    Panicked,
}

struct Idle {
    file: usize,
    page: usize,
    decoder: Decoder<TiffFile>,
}

/// Decoders for the files of a series, handed out one per reading thread.
pub(crate) struct DecoderPool {
    files: Vec<PathBuf>,
    idle: Mutex<Vec<Idle>>,
    capacity: usize,
}

impl DecoderPool {
    /// A pool over `files` keeping at most `capacity` idle decoders open.
    pub(crate) fn new(files: Vec<PathBuf>, capacity: usize) -> Self {
        Self {
            files,
            idle: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
        }
    }

    /// The files of the series.
    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Runs `read` with a decoder on page `page` of file `file`.
    ///
    /// # Errors
    /// A one-line reason: the file cannot be opened, the page not found, or `read`'s error.
    pub(crate) fn with_page<T>(
        &self,
        file: usize,
        page: usize,
        read: impl FnOnce(&mut Decoder<TiffFile>) -> Result<T, String>,
    ) -> Result<T, String> {
        let taken = {
            let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = idle
                .iter()
                .rposition(|d| d.file == file && d.page == page)
                .or_else(|| idle.iter().rposition(|d| d.file == file));
            at.map(|i| idle.swap_remove(i))
        };
        let mut entry = match taken {
            Some(entry) => entry,
            None => Idle {
                file,
                page: 0,
                decoder: open_decoder(&self.files[file])?,
            },
        };
        if entry.page != page {
            guarded(|| entry.decoder.seek_to_image(page)).map_err(|e| format!("cannot find page {page}: {e}"))?;
            entry.page = page;
        }
        let result = read(&mut entry.decoder);
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() >= self.capacity {
                idle.remove(0);
            }
            idle.push(entry);
        }
        result
    }
}
