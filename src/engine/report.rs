//! What a build reports: progress while it runs, and what it did when it is over.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::dtype::DType;
use crate::method::Method;

/// Receives progress of a build. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// The build starts; `total_chunks` output chunks will be written.
    fn start(&self, _total_chunks: u64) {}
    /// `chunks` more output chunks are written.
    fn advance(&self, _chunks: u64) {}
    /// A pass producing `levels` finished after `elapsed`.
    fn pass_done(&self, _levels: std::ops::RangeInclusive<usize>, _elapsed: Duration) {}
    /// The build is over (successfully or not).
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// One level of the result.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// Level index.
    pub level: usize,
    /// Shape.
    pub shape: Vec<u64>,
    /// Chunk shape.
    pub chunks: Vec<u64>,
    /// Factors of the step that made it.
    pub step_factors: Vec<u32>,
    /// Pixel size per axis, as the metadata's `scale` says.
    pub scale: Vec<f64>,
    /// Position of the first pixel's centre per axis, as the metadata's `translation` says.
    pub translation: Vec<f64>,
    /// Seconds of the pass that made it (shared by the levels of one pass).
    pub pass_seconds: f64,
}

/// Seconds spent in each stage, summed over tasks (so they add up to more than the wall
/// time when tasks run in parallel).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageSeconds {
    /// Reading and decoding.
    pub read: f64,
    /// Computing on the backend.
    pub compute: f64,
    /// Encoding and writing.
    pub write: f64,
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Input path.
    pub input: PathBuf,
    /// Output path.
    pub output: PathBuf,
    /// Method.
    pub method: Method,
    /// Data type.
    pub dtype: DType,
    /// Backend used, as recorded in the metadata.
    pub backend: String,
    /// The levels.
    pub levels: Vec<LevelReport>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Uncompressed bytes of level 0.
    pub input_bytes: u64,
    /// `input_bytes / seconds` in MB/s (10^6 bytes).
    pub input_mb_per_s: f64,
    /// Chunks decoded from the store over all passes.
    pub chunks_decoded: u64,
    /// Of those, chunks decoded again because the cache budget could not keep them.
    pub chunks_redecoded: u64,
    /// Level-0 chunks copied without decoding and re-encoding.
    pub chunks_copied_raw: u64,
    /// Source tiles read straight into the GPU's staging memory rather than into host
    /// tiles (0 on the CPU).
    pub tiles_staged: u64,
    /// Submissions those staged tiles were computed in: fewer than the tiles where small
    /// tiles queued for the GPU were computed together.
    pub staged_batches: u64,
    /// Time per stage, summed over tasks.
    pub stage_seconds: StageSeconds,
    /// Worker threads.
    pub threads: usize,
    /// Threads of the backend's own that computed the tiles (a GPU's submission threads),
    /// whose time is the `compute` stage's; 0 where the workers computed them.
    pub compute_threads: usize,
    /// Peak resident memory of the process so far, if the platform reports it (Linux).
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident memory of this process (`VmHWM` on Linux), or `None` elsewhere.
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
