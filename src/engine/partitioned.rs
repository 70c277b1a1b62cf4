//! Partitioned builds, for volumes that outgrow one host: `plan` splits the first pass
//! into parts ([`super::split`]), each part runs as a stateless task of any scheduler (a
//! SLURM or LSF array task, a Kubernetes indexed job, a Dask task) on any host that sees
//! the same file system, and `finalize` computes the small levels above the parts and
//! writes the metadata last.
//!
//! - Each part writes whole files of its own (no file is written by two parts), keeps its
//!   own journal and lock inside OUTPUT ([`crate::journal::partition`]), and is idempotent:
//!   run again, it redoes only what its journal does not show finished.
//! - `finalize` holds every part's lock, refuses while any part is unfinished (naming it
//!   and why), merges the parts' journals into the build's, and then runs as a resumed
//!   build: the same passes, checks and metadata as `build`, so the output equals a single
//!   build's byte for byte.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;

use super::output::{absolute, create_output, is_complete};
use super::pass::{BuildContext, PassLayout, run_passes};
use super::prepare::{BackendNeeds, build_record, prepare, select_backend};
use super::split::{SplitRequest, split_first_pass};
use super::{
    BuildError, BuildReport, NoProgress, Progress, PyramidBuilder, build_context, level_sinks, output_sink, run_build,
};
use crate::backend::BackendChoice;
use crate::journal::partition::{self, PartFile, PartRange, PartitionPlan, part_file};
use crate::journal::{self, Journal, JournalEntries, JournalError, OutputLock};

/// What `plan` decided.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// The output.
    pub output: PathBuf,
    /// The plan stored inside it.
    pub plan: PartitionPlan,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// What one part did.
#[derive(Debug, Clone, Serialize)]
pub struct PartReport {
    /// The output.
    pub output: PathBuf,
    /// The part (0-based).
    pub part: usize,
    /// Parts in the plan.
    pub parts: usize,
    /// Its blocks of the first pass and the bytes of level 0 they cover.
    pub range: PartRange,
    /// The levels it wrote (`0..=last_level`).
    pub last_level: usize,
    /// Of its blocks, those an earlier run of the part had finished.
    pub blocks_done_before: u64,
    /// Chunk or shard files this run stored, and their bytes.
    pub files_stored: u64,
    /// Their bytes.
    pub bytes_stored: u64,
    /// Backend used.
    pub backend: String,
    /// Worker threads.
    pub threads: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Peak resident memory of the process, where the platform reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// What may differ between the hosts that run the steps of one partitioned build: the
/// plan's values are used where these are `None`.
#[derive(Clone, Default)]
pub struct RunSettings {
    /// Working-set budget in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU threads.
    pub threads: Option<usize>,
    /// Compute backend.
    pub backend: Option<BackendChoice>,
    /// Receives progress.
    pub progress: Option<Arc<dyn Progress>>,
    /// Stops the run (with [`BuildError::Interrupted`]) when it becomes true.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for RunSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSettings")
            .field("memory_bytes", &self.memory_bytes)
            .field("threads", &self.threads)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The plan stored in `output`.
///
/// # Errors
/// [`BuildError::NotPlanned`], [`BuildError::AlreadyFinalized`], or the plan unreadable.
pub fn read_plan(output: &Path) -> Result<PartitionPlan, BuildError> {
    match PartitionPlan::read(output)? {
        Some(plan) => Ok(plan),
        None if is_complete(output) => Err(BuildError::AlreadyFinalized(output.to_path_buf())),
        None => Err(BuildError::NotPlanned(output.to_path_buf())),
    }
}

/// The builder of the plan's build, with this host's settings.
fn builder_of(plan: &PartitionPlan, output: &Path, settings: &RunSettings) -> PyramidBuilder<'static> {
    let mut options = plan.options.clone();
    options.memory_bytes = settings.memory_bytes.unwrap_or(options.memory_bytes);
    options.threads = settings.threads.or(options.threads);
    options.backend = settings.backend.unwrap_or(options.backend);
    let mut builder = PyramidBuilder::new(plan.input.clone(), output)
        .options(options)
        .progress(settings.progress.clone().unwrap_or_else(|| Arc::new(NoProgress)))
        .partitioned();
    if let Some(cancel) = &settings.cancel {
        builder = builder.cancel_flag(cancel.clone());
    }
    builder
}

/// `plan`: checks the build, creates the output with its level arrays and stores the plan.
pub(super) fn run_plan(builder: &PyramidBuilder<'_>, threads: usize, parts: usize) -> Result<PlanReport, BuildError> {
    let started = Instant::now();
    let options = &builder.options;
    if options.resume {
        return Err(BuildError::InvalidOption {
            option: "resume",
            reason: "plan starts a partitioned build; to go on with one, run its unfinished parts, then finalize"
                .into(),
        });
    }
    let prepared = prepare(builder)?;
    if !prepared.source.resumable() {
        return Err(BuildError::InvalidOption {
            option: "input",
            reason: "the parts of a partitioned build read the input from their own processes: it must be a file or directory on disk".into(),
        });
    }
    let layout = PassLayout::new(&prepared.plan, options.method, prepared.level0, &prepared.shards);
    let split = split_first_pass(
        &layout,
        &SplitRequest {
            parts,
            element_size: prepared.source.dtype().size() as u64,
            memory_bytes: options.memory_bytes,
            threads,
        },
    )?;
    let output = &builder.output;
    create_output(output, options.overwrite)?;
    let lock = OutputLock::acquire(output)?;
    journal::write_record(output, &build_record(builder, &prepared, None)?)?;
    let sink = output_sink(builder, false)?;
    level_sinks(sink.as_ref(), &prepared)?;
    let plan = PartitionPlan::new(
        absolute(&builder.input),
        super::BuildOptions {
            overwrite: false,
            resume: false,
            ..options.clone()
        },
        prepared.plan.len(),
        split.last,
        split.blocks,
        split.parts,
    );
    plan.write(output)?;
    drop(lock);
    Ok(PlanReport {
        output: output.clone(),
        plan,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs part `part` of the partitioned build planned in `output`: its blocks of the first
/// pass, those an earlier run finished left alone. Parts run at once on any hosts that
/// share the file system; each holds only its own lock.
///
/// # Errors
/// [`BuildError::InvalidOption`] for an index outside the plan; [`BuildError::NotPlanned`];
/// [`JournalError::PartLocked`] while another process runs the part; the errors of a build.
/// A failure is also noted inside OUTPUT for `finalize` to report.
pub fn run_part(output: &Path, part: usize, settings: &RunSettings) -> Result<PartReport, BuildError> {
    let plan = read_plan(output)?;
    let Some(range) = plan.parts.get(part).cloned() else {
        return Err(BuildError::InvalidOption {
            option: "index",
            reason: format!(
                "part {part} is not in the plan of `{}`, which has {} parts (0 to {})",
                output.display(),
                plan.parts.len(),
                plan.parts.len() - 1
            ),
        });
    };
    let builder = builder_of(&plan, output, settings);
    let result = builder.run_in_pool(|builder, threads| run_part_locked(builder, threads, part, &plan, range));
    match &result {
        Err(BuildError::Journal(JournalError::PartLocked { .. })) => {}
        Err(e) => partition::record_failure(output, part, &error_chain(e)),
        Ok(_) => {}
    }
    result
}

/// An error and its causes, joined as the CLI prints them.
fn error_chain(error: &BuildError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

fn run_part_locked(
    builder: &PyramidBuilder<'_>,
    threads: usize,
    part: usize,
    plan: &PartitionPlan,
    range: PartRange,
) -> Result<PartReport, BuildError> {
    let started = Instant::now();
    let output = &builder.output;
    let prepared = prepare(builder)?;
    let (backend, backend_description) = select_backend(
        builder.options.backend,
        &BackendNeeds {
            method: builder.options.method,
            dtype: prepared.source.dtype(),
            plan: &prepared.plan,
            recorded: None,
        },
    )?;
    let lock = OutputLock::acquire_part(output, part)?;
    let _ = std::fs::remove_file(part_file(output, part, PartFile::Failed));
    journal::check_record(output, &build_record(builder, &prepared, None)?)?;
    let layout = PassLayout::new(
        &prepared.plan,
        builder.options.method,
        prepared.level0,
        &prepared.shards,
    );
    let blocks = if plan.levels == 1 {
        layout.units[0]
            .iter()
            .zip(&prepared.plan.levels[0].shape)
            .map(|(&u, &n)| n.div_ceil(u))
            .product()
    } else {
        super::pass::Pass::new(&layout, 0, plan.part_last_level).block_count()
    };
    if prepared.plan.len() != plan.levels || blocks != plan.blocks {
        return Err(BuildError::InvalidOption {
            option: "plan",
            reason: format!(
                "this ome-pyramid splits the build into {blocks} blocks of {} levels, the plan into {} of {}; run every step with the version that made the plan",
                prepared.plan.len(),
                plan.blocks,
                plan.levels
            ),
        });
    }
    let mut journal = Journal::open_file(part_file(output, part, PartFile::Journal), true)?;
    journal.fix_pass(0, plan.part_last_level)?;
    let sink = output_sink(builder, true)?;
    let levels = level_sinks(sink.as_ref(), &prepared)?;
    journal.keep_intact(|c| levels.get(c.level).and_then(|l| l.stored_size(c.index)) == Some(c.bytes));
    let blocks_done_before = (range.first_block..range.end_block)
        .filter(|&b| journal.is_done(0, b))
        .count() as u64;
    tracing::info!(
        "part {part} of {}: blocks {}..{} of {} (levels 0..={}), backend {backend_description}",
        plan.parts.len(),
        range.first_block,
        range.end_block,
        plan.blocks,
        plan.part_last_level
    );
    let context = BuildContext {
        part: Some(range.first_block..range.end_block),
        ..build_context(
            builder,
            &prepared,
            (sink.as_ref(), &levels),
            backend.as_ref(),
            threads,
            &journal,
        )
    };
    crate::dispatch_dtype!(prepared.source.dtype(), T => run_passes::<T>(&context)?);
    let (files_stored, bytes_stored) = (0..levels.len())
        .map(|level| context.counters.stored_in(level))
        .fold((0, 0), |(f, b), (files, bytes)| (f + files, b + bytes));
    drop(lock);
    Ok(PartReport {
        output: output.clone(),
        part,
        parts: plan.parts.len(),
        range,
        last_level: plan.part_last_level,
        blocks_done_before,
        files_stored,
        bytes_stored,
        backend: backend_description,
        threads,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: super::peak_rss_bytes(),
    })
}

/// Where one part of a partitioned build stands, as its journal and failure note say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum PartStatus {
    /// Every block of the part is finished.
    Done,
    /// Its last run failed, with this error.
    Failed {
        /// The error.
        error: String,
    },
    /// Some of its blocks are finished.
    Unfinished {
        /// Blocks finished.
        done: u64,
        /// Blocks of the part.
        blocks: u64,
    },
    /// No block is finished, and no run failed.
    NotRun,
}

impl PartStatus {
    /// `has not run`, `failed: …`, `is unfinished (2 of 5 blocks)`, `is done`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            PartStatus::Done => "is done".into(),
            PartStatus::Failed { error } => format!("failed: {error}"),
            PartStatus::Unfinished { done, blocks } => format!("is unfinished ({done} of {blocks} blocks)"),
            PartStatus::NotRun => "has not run".into(),
        }
    }
}

/// Where part `part` (its blocks `range` of a first pass ending at `last_level`) stands,
/// with what its journal records.
fn part_status(output: &Path, last_level: usize, part: usize, range: &PartRange) -> (PartStatus, JournalEntries) {
    let entries = JournalEntries::read(&part_file(output, part, PartFile::Journal))
        .filter(|e| e.passes.get(&0) == Some(&last_level))
        .unwrap_or_default();
    let blocks = range.end_block - range.first_block;
    let done = (range.first_block..range.end_block)
        .filter(|&b| entries.done.contains_key(&(0, b)))
        .count() as u64;
    let status = if done == blocks {
        PartStatus::Done
    } else if let Some(error) = partition::recorded_failure(output, part) {
        PartStatus::Failed { error }
    } else if done == 0 {
        PartStatus::NotRun
    } else {
        PartStatus::Unfinished { done, blocks }
    };
    (status, entries)
}

/// Where every part of the partitioned build planned in `output` stands (without taking
/// any lock: a part shown unfinished may be running), or `None` when there is no plan.
#[must_use]
pub fn parts_status(output: &Path) -> Option<(PartitionPlan, Vec<PartStatus>)> {
    let plan = PartitionPlan::read(output).ok()??;
    let statuses = plan
        .parts
        .iter()
        .enumerate()
        .map(|(part, range)| part_status(output, plan.part_last_level, part, range).0)
        .collect();
    Some((plan, statuses))
}

/// Finishes the partitioned build planned in `output` once every part has: computes the
/// levels above the parts and writes the image metadata last, then removes the plan and
/// the parts' files. The output equals a single build's with the same options.
///
/// # Errors
/// [`BuildError::PartsUnfinished`] naming every part that is running, failed, unfinished
/// or never ran (no image metadata is written); [`BuildError::NotPlanned`]; the errors of
/// a build.
pub fn finalize(output: &Path, settings: &RunSettings) -> Result<BuildReport, BuildError> {
    let plan = read_plan(output)?;
    // No part may run while the output is finished: hold every part's lock.
    let mut locks = Vec::with_capacity(plan.parts.len());
    let mut unfinished = Vec::new();
    let mut finished: Vec<JournalEntries> = Vec::with_capacity(plan.parts.len());
    for (part, range) in plan.parts.iter().enumerate() {
        match OutputLock::acquire_part(output, part) {
            Ok(lock) => locks.push(lock),
            Err(JournalError::PartLocked { holder, .. }) => {
                unfinished.push(format!("part {part} is running ({holder})"));
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let (status, entries) = part_status(output, plan.part_last_level, part, range);
        if status != PartStatus::Done {
            unfinished.push(format!("part {part} {}", status.describe()));
        }
        finished.push(entries);
    }
    if !unfinished.is_empty() {
        return Err(BuildError::PartsUnfinished {
            path: output.to_path_buf(),
            parts: plan.parts.len(),
            unfinished,
        });
    }
    // The parts' journals become the build's (after what an earlier finalize finished).
    let mut journal = Journal::open(output, true)?;
    journal.fix_pass(0, plan.part_last_level)?;
    for (entries, range) in finished.iter().zip(&plan.parts) {
        for block in range.first_block..range.end_block {
            if !journal.is_done(0, block) {
                journal.task_done(0, block, &entries.done[&(0, block)])?;
            }
        }
    }
    drop(journal);
    let builder = builder_of(&plan, output, settings).resume(true);
    let report = builder.run_in_pool(run_build)?;
    partition::remove_partition_files(output, plan.parts.len());
    drop(locks);
    Ok(report)
}
