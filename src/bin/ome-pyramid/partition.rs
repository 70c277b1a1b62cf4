//! `plan`, `part` and `finalize`: a build split into parts that any scheduler runs as
//! array tasks (SLURM, LSF, SGE, PBS, Kubernetes indexed jobs, AWS Batch, Google Batch,
//! Dask), then finished by one `finalize`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use clap::Args;

use ome_pyramid::engine::{self, PartReport, PlanReport, RunSettings};
use ome_pyramid::scheduler;
use ome_pyramid::units::{format_bytes, parse_size};
use ome_pyramid::{BackendChoice, BuildError, Progress, PyramidBuilder};

use crate::{
    BarProgress, BuildArgs, UsageError, build_args_options, cancel_flag, outln, parse_backend, run_with_progress,
};

#[derive(Args, Debug)]
#[command(after_help = "\
The parts split the first pass of the build (level 0 and the levels computed with it) into \
ranges of whole chunks, or whole shards with --ngff-version 0.5, so that no file is written \
by two parts; `finalize` computes the smaller levels above them and writes the metadata last. \
The result equals `build` with the same options, byte for byte.

Example (SLURM; see examples/cluster/ for Kubernetes, AWS Batch and Dask):
  ome-pyramid plan /data/volume.zarr /data/volume.ome.zarr --parts 64
  sbatch --array=0-63 --wrap 'ome-pyramid part /data/volume.ome.zarr'
  sbatch --dependency=afterok:JOBID --wrap 'ome-pyramid finalize /data/volume.ome.zarr'")]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Number of parts (array tasks) to split the build into.
    #[arg(long)]
    parts: usize,
}

/// What may differ between the hosts that run the parts and `finalize`.
#[derive(Args, Debug)]
pub(crate) struct HostArgs {
    /// Working-set budget on this host [default: the plan's --memory].
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// CPU threads on this host [default: the plan's --threads, else all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Compute backend on this host: auto, gpu, cpu [default: the plan's].
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendChoice>,
    /// Print the result as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Without INDEX the part is the array task's index: SLURM_ARRAY_TASK_ID (minus \
SLURM_ARRAY_TASK_MIN), JOB_COMPLETION_INDEX (Kubernetes indexed jobs), \
AWS_BATCH_JOB_ARRAY_INDEX, BATCH_TASK_INDEX (Google Batch), LSB_JOBINDEX (LSF) or SGE_TASK_ID \
(both counted from 1), PBS_ARRAY_INDEX, the first found.

A part is idempotent: run again (a scheduler's retry), it does only what is missing. Parts run \
at once on any hosts that see OUTPUT on a shared file system, each with its own journal and \
lock inside OUTPUT.")]
pub(crate) struct PartArgs {
    /// The output a `plan` made.
    output: PathBuf,
    /// The part to run, from 0 [default: the scheduler's array task index].
    index: Option<usize>,
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Exits 1, naming every part that is running, failed, unfinished or never ran, until all have \
finished; the output gets its image metadata only when finalize succeeds.")]
pub(crate) struct FinalizeArgs {
    /// The output a `plan` made.
    output: PathBuf,
    #[command(flatten)]
    host: HostArgs,
}

fn settings(host: &HostArgs, progress: Option<Arc<dyn Progress>>) -> RunSettings {
    RunSettings {
        memory_bytes: host.memory,
        threads: host.threads,
        backend: host.backend,
        progress,
        cancel: Some(cancel_flag()),
    }
}

pub(crate) fn run_plan(args: &PlanArgs, quiet: bool) -> Result<()> {
    if args.build.resume {
        return Err(anyhow!(UsageError(
            "plan starts a partitioned build; --resume does not apply (run the unfinished parts again, then finalize)"
                .into()
        )));
    }
    let json = args.build.pyramid.json;
    let output = args.build.output.clone();
    let builder = PyramidBuilder::new(&args.build.input, &output).options(build_args_options(&args.build));
    let report = builder.plan(args.parts)?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the plan serialises")
        );
    } else if !quiet {
        print_plan(&report);
    }
    Ok(())
}

fn print_plan(report: &PlanReport) {
    let plan = &report.plan;
    let output = report.output.display();
    let n = plan.parts.len();
    let finalize_levels = match plan.levels - 1 - plan.part_last_level {
        0 => "finalize writes the metadata".to_string(),
        1 => format!("level {} by finalize", plan.levels - 1),
        _ => format!("levels {}..={} by finalize", plan.part_last_level + 1, plan.levels - 1),
    };
    outln!(
        "Planned `{output}` in {n} parts: levels 0..={} by the parts ({} blocks of whole files), {finalize_levels}.",
        plan.part_last_level,
        plan.blocks
    );
    const SHOWN: usize = 8;
    for (i, part) in plan.parts.iter().enumerate().take(SHOWN) {
        outln!(
            "  part {i}: blocks {}..{}, {} of level 0",
            part.first_block,
            part.end_block,
            format_bytes(part.input_bytes)
        );
    }
    if n > SHOWN {
        outln!("  … and {} more", n - SHOWN);
    }
    outln!("Next, run every part on hosts that see `{output}` (each as an array task needs no INDEX):");
    outln!("  ome-pyramid part {output} INDEX      # INDEX = 0 … {}", n - 1);
    outln!(
        "  e.g. sbatch --array=0-{} examples/cluster/slurm-part.sh {output}",
        n - 1
    );
    outln!("then, once all have finished:");
    outln!("  ome-pyramid finalize {output}");
}

pub(crate) fn run_part(args: &PartArgs, quiet: bool) -> Result<()> {
    let index = match args.index {
        Some(index) => index,
        None => {
            let found = scheduler::task_index(|name| std::env::var(name).ok())
                .map_err(|e| anyhow!(UsageError(e.to_string())))?;
            tracing::info!("part {} (from {})", found.index, found.variable);
            usize::try_from(found.index).map_err(|_| anyhow!(UsageError(format!("{} is too large", found.variable))))?
        }
    };
    let show_bar = !quiet && !args.host.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress: Arc<dyn Progress> = Arc::new(BarProgress::new(show_bar));
    let report = match engine::run_part(&args.output, index, &settings(&args.host, Some(progress.clone()))) {
        Err(BuildError::AlreadyFinalized(path)) => {
            // A scheduler's late retry: the work is done.
            if !quiet {
                outln!(
                    "`{}` is complete (finalized): part {index} has nothing to do.",
                    path.display()
                );
            }
            return Ok(());
        }
        other => other?,
    };
    if args.host.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        );
    } else if !quiet {
        print_part(&report);
    }
    Ok(())
}

fn print_part(report: &PartReport) {
    outln!(
        "Part {} of {} of `{}` done in {:.2} s: blocks {}..{} ({} of level 0), levels 0..={}, {} files ({}) written{}, backend {}.",
        report.part,
        report.parts,
        report.output.display(),
        report.seconds,
        report.range.first_block,
        report.range.end_block,
        format_bytes(report.range.input_bytes),
        report.last_level,
        report.files_stored,
        format_bytes(report.bytes_stored),
        if report.blocks_done_before > 0 {
            format!(" ({} blocks were already done)", report.blocks_done_before)
        } else {
            String::new()
        },
        report.backend
    );
}

pub(crate) fn run_finalize(args: &FinalizeArgs, quiet: bool) -> Result<()> {
    run_with_progress(
        |progress| engine::finalize(&args.output, &settings(&args.host, Some(progress))),
        args.host.json,
        quiet,
    )?;
    Ok(())
}
