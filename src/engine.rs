//! The streaming pyramid engine (SPEC §5): the only module that knows both the store and
//! the compute backends.
//!
//! The pyramid is built in *passes*. A pass reads level `k` (the input for `k = 0`, else the
//! output level `k` as stored) and produces levels `k+1 ..= k+m`. Its work is split into
//! *tasks*, one per output chunk of level `k+m`; a task reads the region of level `k` that
//! chunk depends on (windows plus the gaussian halo of every step), computes the levels in a
//! row with the backend, and writes the chunks of each level that lie under its chunk. The
//! task regions tile every level exactly, so each output chunk is written once; since all
//! levels share the chunk shape, task regions are aligned to the chunks of level `k` too.
//!
//! Tasks run on all worker threads, pulled in C order, so reading, computing and writing of
//! different tasks overlap. A [`TileReader`](crate::store::TileReader) keeps decoded chunks
//! that later tasks of the pass still need (halos, unaligned input chunks), within the
//! memory budget. `m` and the number of concurrent tasks are chosen so that the tasks'
//! working sets fit `--memory`; memory therefore does not grow with the volume.
//!
//! - `options`, `report`, `error`, `builder`: the library's facade, re-exported here.
//! - `prepare`: the decisions made before any output is written.
//! - `display`: the `omero` block of an output whose input has none, and a label image's
//!   default colours.
//! - `output`: output safety (where OUTPUT may be, `--overwrite`, the check before metadata).
//! - `pass`: one pass, its tiles and blocks; `blocks`: running them, each block the only
//!   writer of its files; `tile`: the work of one tile.
//! - here: [`run_build`], the orchestration of one build.

mod blocks;
mod builder;
mod display;
mod error;
mod options;
mod output;
mod partitioned;
mod pass;
mod prepare;
mod report;
mod split;
#[cfg(feature = "gpu")]
mod staged;
mod stages;
mod tile;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::info;

pub use builder::{PyramidBuilder, StoreLayers};
pub use error::BuildError;
pub use options::BuildOptions;
pub(crate) use options::LabelTarget;
pub use partitioned::{PartReport, PartStatus, PlanReport, RunSettings, finalize, parts_status, read_plan, run_part};
pub use report::{BuildReport, LevelReport, NoProgress, Progress, StageSeconds, peak_rss_bytes};

use crate::journal::{self, Journal, OutputLock};
use crate::ngff::{self, MultiscalesSpec, NgffVersion};
use crate::store::{LevelLayout, LevelSink, Sink, ZarrV2Sink, ZarrV3Sink};
use output::create_output;
use pass::{BuildContext, Counters, run_passes};
use prepare::{BackendNeeds, Level0, Prepared, build_record, prepare, select_backend};

/// Runs one build on the current thread pool: prepares it, takes the output, runs the
/// passes, checks the output and writes its metadata last.
fn run_build(builder: &PyramidBuilder<'_>, threads: usize) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let prepared = prepare(builder)?;
    let output = &builder.output;
    let options = &builder.options;
    let (backend, backend_description) = select_backend(
        options.backend,
        &BackendNeeds {
            method: options.method,
            dtype: prepared.source.dtype(),
            plan: &prepared.plan,
            recorded: options
                .resume
                .then(|| journal::record::recorded_backend(output))
                .flatten(),
        },
    )?;
    if options.resume && options.overwrite {
        return Err(BuildError::InvalidOption {
            option: "resume",
            reason: "--resume continues a build and --overwrite starts over; choose one".into(),
        });
    }
    if options.resume && !prepared.source.resumable() {
        return Err(BuildError::InvalidOption {
            option: "resume",
            reason: format!(
                "an interrupted build cannot be checked against {} again; build it anew with overwrite",
                prepared.source.path().display()
            ),
        });
    }
    let resuming = options.resume && output.exists();
    if resuming && !builder.partitioned && output.join(journal::partition::PLAN_FILE).is_file() {
        return Err(BuildError::InvalidOption {
            option: "resume",
            reason: format!(
                "`{}` is a partitioned build made by `ome-pyramid plan`: run its parts with `ome-pyramid part`, then `ome-pyramid finalize`",
                output.display()
            ),
        });
    }
    if options.resume && !resuming {
        info!("`{}` does not exist yet: starting a new build", output.display());
    }
    if let Some(step) = &builder.before_writing {
        step()?;
    }
    if !resuming {
        create_output(output, options.overwrite)?;
    }
    let lock = OutputLock::acquire(output)?;
    let record = build_record(
        builder,
        &prepared,
        (!builder.partitioned).then_some((backend.as_ref(), backend_description.as_str())),
    )?;
    if resuming {
        journal::check_record(output, &record)?;
    } else {
        journal::write_record(output, &record)?;
    }
    let mut journal = Journal::open(output, resuming)?;
    let dtype = prepared.source.dtype();
    info!(
        "{} → {}: {} {:?} {}, {} levels, method {}, backend {}",
        builder.input.display(),
        builder.output.display(),
        dtype,
        prepared.source.shape(),
        match prepared.level0 {
            Level0::Encoded => "",
            Level0::CopiedChunks => "(level 0 chunks copied as stored)",
            Level0::CopiedShards => "(level 0 shards copied as stored)",
        },
        prepared.plan.len(),
        builder.options.method,
        backend_description
    );
    let sink = output_sink(builder, false)?;
    let levels = level_sinks(sink.as_ref(), &prepared)?;
    if resuming {
        let redone = journal.keep_intact(|c| levels.get(c.level).and_then(|l| l.stored_size(c.index)) == Some(c.bytes));
        if redone > 0 {
            tracing::warn!(
                "{redone} tasks journaled as finished have chunk files that are missing or changed since; they are done again"
            );
        }
    }

    let context = build_context(
        builder,
        &prepared,
        (sink.as_ref(), &levels),
        backend.as_ref(),
        threads,
        &journal,
    );
    let total_chunks: u64 = prepared
        .plan
        .levels
        .iter()
        .map(|l| l.chunk_grid().iter().product::<u64>())
        .sum();
    builder.progress.start(total_chunks);
    let pass_seconds = crate::dispatch_dtype!(dtype, T => run_passes::<T>(&context)?);
    context.verify(0..=levels.len() - 1)?;

    let spec = MultiscalesSpec {
        name: &prepared.name,
        axes: &prepared.axes,
        pixel_size: &prepared.pixel_size,
        translation: &prepared.translation,
        plan: &prepared.plan,
        method: builder.options.method,
        integer_dtype: !dtype.is_float(),
        backend: &backend_description,
        multiscale_transforms: prepared.source.image().multiscale_transforms.as_deref(),
    };
    let attributes = match &builder.label {
        Some(target) => {
            // A label image: its `image-label` block, with default colours for the values
            // of the top level unless colours were given; no display settings.
            let mut block = target.image_label.clone();
            if block.get("colors").is_none() {
                block["colors"] = crate::dispatch_dtype!(dtype, T => display::measured_label_colors::<T>(
                    sink.as_ref(),
                    &prepared.plan,
                    builder.options.memory_bytes,
                )?);
            }
            ngff::group_attributes(builder.options.ngff_version, &spec, None, Some(&block))
        }
        None => {
            // The input's display settings carry over; an image without any gets measured ones.
            let omero = match &prepared.source.image().omero {
                Some(omero) => omero.clone(),
                None => {
                    let mut measured = crate::dispatch_dtype!(dtype, T => display::measured_omero::<T>(
                        sink.as_ref(),
                        &prepared.plan,
                        &prepared.axes,
                        builder.options.memory_bytes,
                    )?);
                    if let Some(labels) = &prepared.source.image().channel_labels {
                        display::label_channels(&mut measured, labels);
                    }
                    measured
                }
            };
            ngff::group_attributes(builder.options.ngff_version, &spec, Some(&omero), None)
        }
    };
    sink.write_attributes(&attributes)?;
    // The metadata is in place: the journal, the record and the lock are no longer needed.
    journal.finish(output);
    drop(lock);

    let seconds = started.elapsed().as_secs_f64();
    let input_bytes = prepared.source.shape().iter().product::<u64>() * dtype.size() as u64;
    let counters = &context.counters;
    let ns = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed)).as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let input_mb_per_s = input_bytes as f64 / 1e6 / seconds.max(1e-9);
    let levels: Vec<LevelReport> = prepared
        .plan
        .levels
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let (scale, translation) = ngff::level_transforms(&spec, k);
            LevelReport {
                level: k,
                shape: l.shape.clone(),
                chunks: l.chunks.clone(),
                step_factors: l.step_factors.clone(),
                scale,
                translation,
                pass_seconds: pass_seconds.get(k).copied().unwrap_or(0.0),
            }
        })
        .collect();
    Ok(BuildReport {
        input: builder.input.clone(),
        output: builder.output.clone(),
        method: builder.options.method,
        dtype,
        backend: backend_description,
        levels,
        seconds,
        input_bytes,
        input_mb_per_s,
        chunks_decoded: counters.decoded.load(Ordering::Relaxed),
        chunks_redecoded: counters.redecoded.load(Ordering::Relaxed),
        chunks_copied_raw: counters.raw_copied.load(Ordering::Relaxed),
        tiles_staged: counters.staged.load(Ordering::Relaxed),
        staged_batches: counters.staged_batches.load(Ordering::Relaxed),
        stage_seconds: StageSeconds {
            read: ns(&counters.read_ns),
            compute: ns(&counters.compute_ns),
            write: ns(&counters.write_ns),
        },
        threads,
        compute_threads: backend.compute_threads(options.method, dtype),
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// What the passes of a build share: the prepared build, the output's levels, the backend,
/// the threads and the journal; a whole build's (`part` is `None`).
fn build_context<'a>(
    builder: &'a PyramidBuilder<'_>,
    prepared: &'a Prepared<'a>,
    (sink, levels): (&'a dyn Sink, &'a [Box<dyn LevelSink>]),
    backend: &'a dyn crate::backend::Downsampler,
    threads: usize,
    journal: &'a Journal,
) -> BuildContext<'a> {
    BuildContext {
        source: &prepared.source,
        plan: &prepared.plan,
        method: builder.options.method,
        levels,
        sink,
        backend,
        threads,
        memory_bytes: builder.options.memory_bytes,
        level0: prepared.level0,
        progress: builder.progress.as_ref(),
        cancel: builder.cancel.clone(),
        counters: Counters::new(prepared.plan.len()),
        journal,
        task_delay: test_task_delay(),
        part: None,
    }
}

/// The output's store: a new one, or (`existing`) one whose level metadata a partitioned
/// build's plan wrote, which is checked rather than written again.
fn output_sink(builder: &PyramidBuilder<'_>, existing: bool) -> Result<Box<dyn Sink>, BuildError> {
    let (output, layer) = (&builder.output, builder.layers.output.as_deref());
    Ok(match (builder.options.ngff_version, existing) {
        (NgffVersion::V04, false) => Box::new(ZarrV2Sink::create(output, layer)?),
        (NgffVersion::V04, true) => Box::new(ZarrV2Sink::open_existing(output, layer)?),
        (NgffVersion::V05, false) => Box::new(ZarrV3Sink::create(output, layer)?),
        (NgffVersion::V05, true) => Box::new(ZarrV3Sink::open_existing(output, layer)?),
    })
}

/// Every level array of the output, as `prepared` plans them.
fn level_sinks(sink: &dyn Sink, prepared: &Prepared<'_>) -> Result<Vec<Box<dyn LevelSink>>, BuildError> {
    let dtype = prepared.source.dtype();
    let fill = prepared.source.fill_bytes().to_vec();
    let dimension_names: Vec<String> = prepared.axes.iter().map(|a| a.name.clone()).collect();
    let levels = prepared
        .plan
        .levels
        .iter()
        .zip(&prepared.shards)
        .enumerate()
        .map(|(k, (level, shards))| {
            sink.create_level(
                k,
                &LevelLayout {
                    shape: level.shape.clone(),
                    chunks: level.chunks.clone(),
                    dtype,
                    codec: prepared.codec.clone(),
                    fill: fill.clone(),
                    shards: shards.clone(),
                    dimension_names: dimension_names.clone(),
                },
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(levels)
}

/// A pause before each task, for tests that interrupt builds (`OME_PYRAMID_TEST_TASK_DELAY_MS`).
/// Read only by debug builds (the test suite's): a release binary or a host process never
/// looks at it.
fn test_task_delay() -> Option<Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var("OME_PYRAMID_TEST_TASK_DELAY_MS")
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::builder::worker_threads;
    use super::*;

    #[test]
    fn a_read_only_output_location_is_a_run_time_failure() {
        let not_creatable = |kind: std::io::ErrorKind| BuildError::OutputNotCreatable {
            path: "out".into(),
            source: kind.into(),
        };
        // Issue 16 item 18: exit 1 for a read-only or full file system, 2 for a path that
        // cannot be a directory.
        assert!(!not_creatable(std::io::ErrorKind::PermissionDenied).is_invalid_input());
        assert!(!not_creatable(std::io::ErrorKind::ReadOnlyFilesystem).is_invalid_input());
        assert!(!not_creatable(std::io::ErrorKind::StorageFull).is_invalid_input());
        assert!(not_creatable(std::io::ErrorKind::NotADirectory).is_invalid_input());
    }

    #[test]
    fn a_thread_limit_is_not_reported_as_an_invalid_option() {
        // Issue 16 item 18: a `ulimit` thread limit said "invalid threads" though --threads
        // was not given.
        let err = BuildError::ThreadsUnavailable {
            threads: 16,
            reason: "Resource temporarily unavailable (os error 11)".into(),
        };
        assert!(!err.is_invalid_input());
        assert!(err.to_string().starts_with("cannot start 16 worker threads"), "{err}");
        assert!(!err.to_string().contains("invalid threads"));
        assert_eq!(
            worker_threads(None).unwrap(),
            std::thread::available_parallelism().unwrap().get()
        );
        assert!(worker_threads(Some(0)).is_err());
        assert_eq!(
            worker_threads(Some(1_000_000)).unwrap(),
            4 * worker_threads(None).unwrap()
        );
    }
}
