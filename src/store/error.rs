//! Errors of the storage layer: one enum naming the path and, where there is one, the chunk.

use std::path::{Path, PathBuf};

use crate::ngff::NgffError;

/// Errors of the storage layer. Each names the path and, where there is one, the chunk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The input path does not exist.
    #[error("input `{0}` does not exist")]
    NotFound(PathBuf),
    /// The input path exists but cannot be looked at (permissions, a symbolic link loop).
    #[error("cannot access the input `{path}`")]
    Inaccessible {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Sizes that no machine can hold.
    #[error("`{path}` cannot be processed: {what} holds more bytes than a 64-bit machine can address")]
    TooLarge {
        /// The array.
        path: PathBuf,
        /// What is too large.
        what: String,
    },
    /// The input path is not a Zarr array or group.
    #[error(
        "`{0}` is not a Zarr array or OME-Zarr image (no .zarray, .zgroup or zarr.json found), nor a TIFF file or folder of TIFF slices"
    )]
    NotZarr(PathBuf),
    /// A group without `multiscales`.
    #[error("`{0}` is a Zarr group without OME `multiscales` metadata; point at an array or an OME-Zarr image")]
    NotAnImage(PathBuf),
    /// A TIFF input that cannot be read as one: malformed, truncated, or using what the
    /// reader does not support.
    #[error("cannot read `{path}` as TIFF: {reason}")]
    Tiff {
        /// The file (or folder, or pattern).
        path: PathBuf,
        /// What is wrong, in one line.
        reason: String,
    },
    /// `--series` given for a Zarr input.
    #[error("--series {series} applies to TIFF input, and `{path}` is Zarr")]
    SeriesOfZarr {
        /// The input.
        path: PathBuf,
        /// The series asked for.
        series: usize,
    },
    /// An array in memory that cannot be an image, or read chunks that do not fit it.
    #[error("the array in memory cannot be read as an image: {reason}")]
    InvalidArray {
        /// What is wrong, in one line.
        reason: String,
    },
    /// Malformed metadata.
    #[error("invalid metadata in `{path}`: {reason}")]
    InvalidMetadata {
        /// Where.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// OME metadata problems.
    #[error("invalid OME metadata in `{path}`")]
    Ngff {
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: NgffError,
    },
    /// `multiscales` names a dataset that is not there or cannot be opened.
    #[error("OME metadata in `{path}` names dataset `{dataset}`, which cannot be opened")]
    MissingDataset {
        /// The group.
        path: PathBuf,
        /// The dataset path.
        dataset: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The array cannot be opened.
    #[error("cannot open the Zarr array at `{path}`")]
    OpenArray {
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A data type outside SPEC §5.
    #[error("`{path}` holds {dtype} data; supported are uint8/16/32/64, int8/16/32/64, float32/64")]
    UnsupportedDType {
        /// Where.
        path: PathBuf,
        /// The data type.
        dtype: String,
    },
    /// An axis of length zero.
    #[error("`{path}` has shape {shape:?}: every axis must have at least one element")]
    EmptyAxis {
        /// Where.
        path: PathBuf,
        /// The shape.
        shape: Vec<u64>,
    },
    /// Reading or decoding a chunk failed.
    #[error("cannot read chunk `{key}` of `{path}`")]
    ReadChunk {
        /// The array.
        path: PathBuf,
        /// The chunk's store key.
        key: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Encoding or writing a chunk failed.
    #[error("cannot write chunk `{key}` of `{path}`")]
    WriteChunk {
        /// The array.
        path: PathBuf,
        /// The chunk's store key.
        key: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The build was cancelled while reading or writing.
    #[error("stopped on request")]
    Cancelled,
    /// Any other file-system failure.
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

impl StoreError {
    /// True for problems with what the user gave (exit code 2), false for failures
    /// while running (exit code 1).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        !matches!(
            self,
            StoreError::ReadChunk { .. }
                | StoreError::WriteChunk { .. }
                | StoreError::Io { .. }
                | StoreError::Cancelled
        )
    }
}

pub(crate) fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}
