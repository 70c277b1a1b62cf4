//! Why a build failed, and which failures are the user's mistakes (exit code 2) rather than
//! failures while running (exit code 1).

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::journal::JournalError;
use crate::plan::PlanError;
use crate::store::StoreError;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Axes, factors or level count.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Reading the input or writing the output.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The compute backend.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An option value that cannot be used with this input.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option, e.g. `chunks`.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The output exists and `overwrite` is off.
    #[error("output `{0}` already exists (pass --overwrite to replace it)")]
    OutputExists(PathBuf),
    /// The output would overwrite or sit inside the input.
    #[error("output `{output}` {relation} input `{input}`; the input is never modified")]
    UnsafeOutput {
        /// The output path.
        output: PathBuf,
        /// The input path.
        input: PathBuf,
        /// How they relate.
        relation: &'static str,
    },
    /// `overwrite` on something that is not an ome-pyramid output.
    #[error("refusing to replace `{path}`: {reason} (remove it yourself if you mean it)")]
    RefuseOverwrite {
        /// The output.
        path: PathBuf,
        /// Why it is not replaced, naming the first foreign entry where there is one.
        reason: String,
    },
    /// The output changed under the build (files deleted or added by someone else): no
    /// metadata is written.
    #[error(
        "the output `{path}` changed during the build: {detail}; no image metadata was written (build again with --resume to redo what is missing, or with --overwrite)"
    )]
    OutputDamaged {
        /// The output.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The worker threads cannot be started.
    #[error(
        "cannot start {threads} worker threads ({reason}); the process's thread limit (ulimit -u) may be too low: pass --threads with a smaller number"
    )]
    ThreadsUnavailable {
        /// Threads asked for.
        threads: usize,
        /// The system's reason.
        reason: String,
    },
    /// The output directory cannot be created.
    #[error("cannot create the output `{path}`")]
    OutputNotCreatable {
        /// The output.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The lock, the build record or the journal.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// `part` or `finalize` on an output that holds no partition plan.
    #[error("`{0}` holds no plan of a partitioned build; make one with `ome-pyramid plan INPUT {0} --parts N`")]
    NotPlanned(PathBuf),
    /// `part` or `finalize` on an output whose partitioned build was finalized.
    #[error("`{0}` is complete: its partitioned build was finalized")]
    AlreadyFinalized(PathBuf),
    /// `finalize` before every part finished.
    #[error(
        "cannot finalize `{path}`: {} of {parts} parts have not finished ({}); no image metadata was written",
        .unfinished.len(),
        .unfinished.join("; ")
    )]
    PartsUnfinished {
        /// The output.
        path: PathBuf,
        /// Parts in the plan.
        parts: usize,
        /// One line per unfinished part, naming it and why.
        unfinished: Vec<String>,
    },
    /// The build was cancelled; `--resume` continues it.
    #[error("the build was interrupted ({tasks_done} of {tasks} tasks of this run finished)")]
    Interrupted {
        /// Tasks finished in this run (they are kept for `--resume`).
        tasks_done: u64,
        /// Tasks of the pass that was running.
        tasks: u64,
    },
}

impl BuildError {
    /// True when a read or write stopped because the build was cancelled.
    pub(crate) fn is_cancellation(&self) -> bool {
        matches!(self, BuildError::Store(StoreError::Cancelled))
    }

    /// True for mistakes in what the user gave (exit code 2); false for failures while
    /// running (exit code 1).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        match self {
            BuildError::Plan(_)
            | BuildError::InvalidOption { .. }
            | BuildError::OutputExists(_)
            | BuildError::UnsafeOutput { .. }
            | BuildError::RefuseOverwrite { .. }
            | BuildError::NotPlanned(_)
            | BuildError::AlreadyFinalized(_) => true,
            // A path that cannot be a directory is a mistake; a read-only or full disk is not.
            BuildError::OutputNotCreatable { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::AlreadyExists
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidFilename
            ),
            BuildError::Store(e) => e.is_invalid_input(),
            BuildError::Journal(e) => e.is_invalid_input(),
            BuildError::Backend(_)
            | BuildError::Interrupted { .. }
            | BuildError::OutputDamaged { .. }
            | BuildError::PartsUnfinished { .. }
            | BuildError::ThreadsUnavailable { .. } => false,
        }
    }
}
