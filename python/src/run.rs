//! Running a build from Python: the engine works on its own threads with the GIL released,
//! while the calling thread wakes every [`POLL`] to look for Ctrl-C (`check_signals`) and
//! to call the progress callback with `(done, total)` at most every [`PROGRESS_INTERVAL`].
//! A signal or an exception raised by the callback cancels the build (the engine stops
//! between tasks) and is raised once the engine has stopped; the output then resumes with
//! `resume=True`. Errors of the engine become `InvalidInputError` or `BuildError` with the
//! CLI's one-line message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ome_pyramid::engine::RunSettings;
use ome_pyramid::{BuildReport, Progress};
use pyo3::prelude::*;

use crate::{BuildError, InvalidInputError};

/// How often the calling thread looks for Ctrl-C while the engine works.
const POLL: Duration = Duration::from_millis(50);
/// The shortest time between two calls of the progress callback.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Output chunks written so far, out of how many: what the callback is told.
#[derive(Default)]
struct ChunkCount {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress for ChunkCount {
    fn start(&self, total_chunks: u64) {
        self.total.store(total_chunks, Ordering::Relaxed);
    }

    fn advance(&self, chunks: u64) {
        self.done.fetch_add(chunks, Ordering::Relaxed);
    }
}

impl ChunkCount {
    fn get(&self) -> (u64, u64) {
        (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }
}

/// What a build is asked to do once it runs (the library's two builders, a plan, a part,
/// a finalize), with the hooks this module sets; its report becomes JSON.
pub(crate) trait Run: Send {
    /// What it reports.
    type Report: serde::Serialize + Send;
    /// Runs with these progress receiver and cancel flag.
    fn run(self, progress: Arc<dyn Progress>, cancel: Arc<AtomicBool>)
    -> Result<Self::Report, ome_pyramid::BuildError>;
}

impl Run for ome_pyramid::PyramidBuilder<'_> {
    type Report = BuildReport;
    fn run(self, progress: Arc<dyn Progress>, cancel: Arc<AtomicBool>) -> Result<BuildReport, ome_pyramid::BuildError> {
        self.progress(progress).cancel_flag(cancel).build()
    }
}

impl Run for ome_pyramid::LabelsBuilder<'_> {
    type Report = BuildReport;
    fn run(self, progress: Arc<dyn Progress>, cancel: Arc<AtomicBool>) -> Result<BuildReport, ome_pyramid::BuildError> {
        self.progress(progress).cancel_flag(cancel).build()
    }
}

/// `plan`: a partitioned build of `builder` in `parts` parts.
pub(crate) struct Plan {
    pub(crate) builder: ome_pyramid::PyramidBuilder<'static>,
    pub(crate) parts: usize,
}

impl Run for Plan {
    type Report = ome_pyramid::engine::PlanReport;
    fn run(
        self,
        progress: Arc<dyn Progress>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self::Report, ome_pyramid::BuildError> {
        self.builder.progress(progress).cancel_flag(cancel).plan(self.parts)
    }
}

/// One step run on a host of a partitioned build: a part (`Some(index)`) or `finalize`.
pub(crate) struct PartitionStep {
    pub(crate) output: std::path::PathBuf,
    pub(crate) settings: RunSettings,
}

impl PartitionStep {
    fn settings(self, progress: Arc<dyn Progress>, cancel: Arc<AtomicBool>) -> (std::path::PathBuf, RunSettings) {
        let settings = RunSettings {
            progress: Some(progress),
            cancel: Some(cancel),
            ..self.settings
        };
        (self.output, settings)
    }
}

/// Part `index` of a partitioned build.
pub(crate) struct Part(pub(crate) PartitionStep, pub(crate) usize);

impl Run for Part {
    type Report = ome_pyramid::engine::PartReport;
    fn run(
        self,
        progress: Arc<dyn Progress>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self::Report, ome_pyramid::BuildError> {
        let (output, settings) = self.0.settings(progress, cancel);
        ome_pyramid::engine::run_part(&output, self.1, &settings)
    }
}

/// `finalize` of a partitioned build.
pub(crate) struct Finalize(pub(crate) PartitionStep);

impl Run for Finalize {
    type Report = BuildReport;
    fn run(self, progress: Arc<dyn Progress>, cancel: Arc<AtomicBool>) -> Result<BuildReport, ome_pyramid::BuildError> {
        let (output, settings) = self.0.settings(progress, cancel);
        ome_pyramid::engine::finalize(&output, &settings)
    }
}

/// Runs `build` with the GIL released, calling `callback` with progress, and returns the
/// report as JSON (the CLI's `--json`).
pub(crate) fn run_build<R: Run>(py: Python<'_>, build: R, callback: Option<Py<PyAny>>) -> PyResult<String> {
    let count = Arc::new(ChunkCount::default());
    let cancel = Arc::new(AtomicBool::new(false));
    let (outcome, python_error) = py.detach(|| {
        std::thread::scope(|scope| {
            let (finished, wait) = mpsc::channel::<()>();
            let engine = {
                let (count, cancel) = (count.clone(), cancel.clone());
                scope.spawn(move || {
                    let result = build.run(count, cancel);
                    // The receiver may be gone; the join below still sees the result.
                    let _ = finished.send(());
                    result
                })
            };
            let mut python_error: Option<PyErr> = None;
            let mut reported: Option<((u64, u64), Instant)> = None;
            while let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(POLL) {
                if python_error.is_some() {
                    continue;
                }
                let polled = Python::attach(|py| -> PyResult<()> {
                    py.check_signals()?;
                    report_progress(py, callback.as_ref(), &count, &mut reported, false)
                });
                if let Err(e) = polled {
                    cancel.store(true, Ordering::Relaxed);
                    python_error = Some(e);
                }
            }
            (engine.join(), python_error)
        })
    });
    if let Some(e) = python_error {
        return Err(e);
    }
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => return Err(exception(e.is_invalid_input(), &e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            return Err(BuildError::new_err(format!("internal error in ome-pyramid: {what}")));
        }
    };
    report_progress(py, callback.as_ref(), &count, &mut None, true)?;
    serde_json::to_string(&report).map_err(|e| BuildError::new_err(e.to_string()))
}

/// Calls `callback` with `(done, total)` if the count moved and the last call is at least
/// [`PROGRESS_INTERVAL`] old, or if `last` (the build is over).
fn report_progress(
    py: Python<'_>,
    callback: Option<&Py<PyAny>>,
    count: &ChunkCount,
    reported: &mut Option<((u64, u64), Instant)>,
    last: bool,
) -> PyResult<()> {
    let Some(callback) = callback else {
        return Ok(());
    };
    let now = count.get();
    let due = match reported {
        None => now.1 > 0 || last,
        Some((before, at)) => last || (*before != now && at.elapsed() >= PROGRESS_INTERVAL),
    };
    if due {
        callback.call1(py, now)?;
        *reported = Some((now, Instant::now()));
    }
    Ok(())
}

/// `InvalidInputError` for a mistake in the request (`invalid_input`), else `BuildError`,
/// with the CLI's one-line message: the error and its causes, joined by `: `.
pub(crate) fn exception(invalid_input: bool, error: &dyn std::error::Error) -> PyErr {
    let message = one_line(error);
    if invalid_input {
        InvalidInputError::new_err(message)
    } else {
        BuildError::new_err(message)
    }
}

/// An error and its causes on one line, as the CLI prints them.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        line.push_str(": ");
        line.push_str(&e.to_string());
        cause = e.source();
    }
    line
}
