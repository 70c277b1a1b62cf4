//! One pass of the engine: level `first` in, levels `first+1 ..= last` out. Plans the
//! pass from the memory budget, splits it into chunk-aligned tasks, and runs them on the
//! worker threads through the tile reader, the backend and the level writers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use zarrs::array::ArrayShardedExt;

use super::{BuildError, Progress};
use crate::backend::{Downsampler, Step};
use crate::journal::Journal;
use crate::method::Method;
use crate::plan::PyramidPlan;
use crate::store::{self, LevelArray, OutputGroup, ReadCounter, SourceImage, StoreElement, TileReader};
use crate::tile::{Region, Tile, copy_overlap};

/// Counters summed over the tasks of a build.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) decoded: AtomicU64,
    pub(super) redecoded: AtomicU64,
    pub(super) raw_copied: AtomicU64,
    pub(super) read_ns: AtomicU64,
    pub(super) compute_ns: AtomicU64,
    pub(super) write_ns: AtomicU64,
}

/// What every pass of one build shares.
pub(super) struct BuildContext<'a> {
    pub(super) source: &'a SourceImage,
    pub(super) plan: &'a PyramidPlan,
    pub(super) method: Method,
    pub(super) levels: &'a [LevelArray],
    pub(super) group: &'a OutputGroup,
    pub(super) backend: &'a dyn Downsampler,
    pub(super) threads: usize,
    pub(super) memory_bytes: u64,
    pub(super) raw_copy_level0: bool,
    pub(super) progress: &'a dyn Progress,
    pub(super) cancel: Option<Arc<AtomicBool>>,
    pub(super) counters: Counters,
    pub(super) journal: &'a Journal,
    pub(super) task_delay: Option<Duration>,
}

impl BuildContext<'_> {
    fn step(&self, level: usize) -> Step {
        Step {
            method: self.method,
            factors: self.plan.levels[level + 1].step_factors.clone(),
            src_shape: self.plan.levels[level].shape.clone(),
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// The regions one task handles, per level of its pass, on one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AxisSpan {
    /// What the task computes at this level (`[lo, hi)`).
    computed: (u64, u64),
    /// What the task writes at this level (chunk-aligned).
    owned: (u64, u64),
}

/// A pass: source level `first`, produced levels `first+1 ..= last`.
struct Pass {
    first: usize,
    last: usize,
    /// Task grid shape (output chunks of level `last`).
    grid: Vec<u64>,
    /// `spans[axis][task coordinate][level - first]`.
    spans: Vec<Vec<Vec<AxisSpan>>>,
    /// Whether level `first` is written by this pass (level 0 only).
    writes_first: bool,
}

impl Pass {
    fn new(context: &BuildContext<'_>, first: usize, last: usize) -> Self {
        let plan = context.plan;
        let top = &plan.levels[last];
        let ndim = top.shape.len();
        let writes_first = first == 0;
        // Level 0 copied as encoded bytes needs no decoded data of its own.
        let decodes_first_owned = writes_first && !context.raw_copy_level0;
        let grid = top.chunk_grid();
        let spans = (0..ndim)
            .map(|a| {
                (0..grid[a])
                    .map(|i| {
                        let lo = i * top.chunks[a];
                        let hi = (lo + top.chunks[a]).min(top.shape[a]);
                        let mut per_level = vec![
                            AxisSpan {
                                computed: (lo, hi),
                                owned: (lo, hi)
                            };
                            last - first + 1
                        ];
                        for level in (first..last).rev() {
                            let above = per_level[level + 1 - first];
                            let step = context.step(level);
                            let f = u64::from(step.factors[a]);
                            let n = plan.levels[level].shape[a];
                            let owned = (above.owned.0 * f, (above.owned.1 * f).min(n));
                            let needed = crate::method::source_range(
                                step.method,
                                step.factors[a],
                                n,
                                above.computed.0,
                                above.computed.1,
                            );
                            let writes = level > first || decodes_first_owned;
                            let computed = if writes {
                                (needed.0.min(owned.0), needed.1.max(owned.1))
                            } else {
                                needed
                            };
                            per_level[level - first] = AxisSpan { computed, owned };
                        }
                        per_level
                    })
                    .collect()
            })
            .collect();
        Self {
            first,
            last,
            grid,
            spans,
            writes_first,
        }
    }

    fn task_count(&self) -> u64 {
        self.grid.iter().product()
    }

    fn task_coordinates(&self, task: u64) -> Vec<usize> {
        let mut rest = task;
        let mut coordinates = vec![0usize; self.grid.len()];
        for a in (0..self.grid.len()).rev() {
            coordinates[a] = usize::try_from(rest % self.grid[a]).expect("grid fits usize");
            rest /= self.grid[a];
        }
        coordinates
    }

    fn region(&self, coordinates: &[usize], level: usize, owned: bool) -> Region {
        let (start, end): (Vec<u64>, Vec<u64>) = coordinates
            .iter()
            .enumerate()
            .map(|(a, &i)| {
                let span = self.spans[a][i][level - self.first];
                if owned { span.owned } else { span.computed }
            })
            .unzip();
        Region::from_bounds(&start, &end)
    }

    /// Largest working set of one task, in bytes: the source tile, every computed level
    /// (and the chunk buffers written from it), and the gaussian `f64` slabs.
    fn task_bytes(&self, element_size: u64, method: Method) -> u64 {
        let extent = |level: usize, axis: &Vec<Vec<AxisSpan>>| -> u64 {
            axis.iter()
                .map(|s| {
                    let c = s[level - self.first].computed;
                    c.1 - c.0
                })
                .max()
                .unwrap_or(1)
        };
        let largest = |level: usize| -> u64 { self.spans.iter().map(|axis| extent(level, axis)).product() };
        let source = largest(self.first);
        let mut bytes = source * element_size;
        for level in self.first + 1..=self.last {
            bytes += 2 * largest(level) * element_size;
        }
        if method == Method::Gaussian {
            // One f64 slab of the outermost axis (and smaller ones) per thread.
            let outer = self.spans.first().map_or(1, |axis| extent(self.first, axis)).max(1);
            bytes += 2 * 8 * source / outer;
        }
        bytes
    }
}

/// Chooses the levels of the next pass and its concurrency from the memory budget.
/// `planned_last` (from the journal of an interrupted build) fixes the levels, so a resumed
/// build replays the same tasks whatever its memory budget and thread count.
fn plan_pass(
    context: &BuildContext<'_>,
    first: usize,
    element_size: u64,
    planned_last: Option<usize>,
) -> (Pass, usize) {
    let last_level = context.plan.len() - 1;
    let budget = context.memory_bytes * 7 / 10;
    let source_bytes = context.plan.levels[first].shape.iter().product::<u64>() * element_size;
    let mut chosen: Option<(Pass, usize)> = None;
    let candidates = match planned_last {
        Some(last) => last..=last,
        None => first + 1..=last_level,
    };
    for last in candidates {
        let pass = Pass::new(context, first, last);
        let tasks = pass.task_count();
        let workers = usize::try_from(tasks).unwrap_or(usize::MAX).min(context.threads).max(1);
        let fits = workers as u64 * pass.task_bytes(element_size, context.method) <= budget;
        let parallel_enough = tasks >= 2 * context.threads as u64 || source_bytes <= 32 << 20;
        if chosen.is_none() || (fits && parallel_enough) {
            chosen = Some((pass, workers));
        } else {
            break;
        }
    }
    let (pass, mut workers) = chosen.expect("at least one level remains");
    let task_bytes = pass.task_bytes(element_size, context.method);
    let affordable = usize::try_from(budget / task_bytes.max(1)).unwrap_or(usize::MAX).max(1);
    if affordable < workers {
        debug!("memory budget allows {affordable} concurrent tasks of {task_bytes} bytes (instead of {workers})");
        workers = affordable;
    }
    if task_bytes > budget {
        warn!(
            "one task needs about {} MiB, more than the --memory budget allows; use smaller --chunks to stay within it",
            task_bytes >> 20
        );
    }
    (pass, workers)
}

/// Runs every pass; returns the seconds of the pass that produced each level.
pub(super) fn run_passes<T: StoreElement>(context: &BuildContext<'_>) -> Result<Vec<f64>, BuildError> {
    let levels = context.plan.len();
    let mut seconds = vec![0.0; levels];
    if levels == 1 {
        // Only level 0: copy it.
        let started = Instant::now();
        copy_level0_only::<T>(context)?;
        seconds[0] = started.elapsed().as_secs_f64();
        context.progress.pass_done(0..=0, started.elapsed());
        return Ok(seconds);
    }
    let element_size = T::DTYPE.size() as u64;
    let mut first = 0;
    while first + 1 < levels {
        let started = Instant::now();
        let planned = context
            .journal
            .planned_pass(first)
            .filter(|&last| last > first && last < levels);
        let (pass, workers) = plan_pass(context, first, element_size, planned);
        if planned.is_none() {
            context.journal.pass_started(pass.first, pass.last)?;
        }
        debug!(
            "pass: level {} → levels {}..={}, {} tasks on {} workers",
            pass.first,
            pass.first + 1,
            pass.last,
            pass.task_count(),
            workers
        );
        run_pass::<T>(context, &pass, workers)?;
        let elapsed = started.elapsed();
        let produced = if pass.writes_first {
            pass.first..=pass.last
        } else {
            pass.first + 1..=pass.last
        };
        for level in produced.clone() {
            seconds[level] = elapsed.as_secs_f64();
        }
        debug!("levels {produced:?} done in {:.2} s", elapsed.as_secs_f64());
        context.progress.pass_done(produced, elapsed);
        first = pass.last;
    }
    Ok(seconds)
}

/// A one-level "pyramid": level 0 copied chunk by chunk.
fn copy_level0_only<T: StoreElement>(context: &BuildContext<'_>) -> Result<(), BuildError> {
    let level = &context.plan.levels[0];
    let grid = level.chunk_grid();
    let total: u64 = grid.iter().product();
    let reader = TileReader::<T>::new(
        context.source.array.clone(),
        context.source.path.clone(),
        context.memory_bytes / 2,
        Arc::new(|_: &Region| 1),
    );
    let finished = AtomicU64::new(0);
    use rayon::prelude::*;
    (0..total).into_par_iter().try_for_each(|i| -> Result<(), BuildError> {
        if context.journal.is_done(0, i) {
            context.progress.advance(1);
            return Ok(());
        }
        if context.cancelled() {
            return Err(BuildError::Interrupted {
                tasks_done: finished.load(Ordering::Relaxed),
                tasks: total,
            });
        }
        if let Some(delay) = context.task_delay {
            std::thread::sleep(delay);
        }
        let mut rest = i;
        let mut idx = vec![0u64; grid.len()];
        for a in (0..grid.len()).rev() {
            idx[a] = rest % grid[a];
            rest /= grid[a];
        }
        let chunk_region = context.levels[0].chunk_region(&idx);
        let started = Instant::now();
        if context.raw_copy_level0 {
            context.levels[0].copy_encoded_chunk(context.source, &idx)?;
            context.counters.raw_copied.fetch_add(1, Ordering::Relaxed);
            add_ns(&context.counters.write_ns, started.elapsed());
        } else {
            let inside = chunk_region
                .intersect(&Region::whole(&level.shape))
                .expect("chunk inside the level");
            let data = reader.read(&inside)?;
            let read = Instant::now();
            add_ns(&context.counters.read_ns, read - started);
            write_chunk_from::<T>(&context.levels[0], &idx, &chunk_region, &data, &inside, context.source)?;
            add_ns(&context.counters.write_ns, read.elapsed());
        }
        context.journal.task_done(0, i)?;
        finished.fetch_add(1, Ordering::Relaxed);
        context.progress.advance(1);
        Ok(())
    })?;
    context
        .counters
        .decoded
        .fetch_add(reader.stats.decoded.load(Ordering::Relaxed), Ordering::Relaxed);
    Ok(())
}

fn fill_of<T: StoreElement>(source: &SourceImage) -> T {
    bytemuck::pod_read_unaligned(source.array.fill_value().as_ne_bytes())
}

/// Writes chunk `idx` (grid region `chunk_region`) from `data` covering `data_region`.
fn write_chunk_from<T: StoreElement>(
    level: &LevelArray,
    idx: &[u64],
    chunk_region: &Region,
    data: &[T],
    data_region: &Region,
    source: &SourceImage,
) -> Result<(), BuildError> {
    let mut buffer = vec![fill_of::<T>(source); chunk_region.len()];
    copy_overlap(data, data_region, &mut buffer, chunk_region);
    level.write_chunk(idx, &buffer)?;
    Ok(())
}

/// The bands of a source chunk that tasks reading only part of it need (the halos of
/// neighbouring tiles), from the tasks' read spans on each axis.
fn chunk_bands(pass: &Pass, source_shape: Vec<u64>) -> store::ChunkBands {
    let read_spans: Vec<Vec<(u64, u64)>> = pass
        .spans
        .iter()
        .map(|axis| axis.iter().map(|s| s[0].computed).collect())
        .collect();
    Arc::new(move |chunk: &Region| store::halo_bands(chunk, &read_spans, &source_shape))
}

fn run_pass<T: StoreElement>(context: &BuildContext<'_>, pass: &Pass, workers: usize) -> Result<(), BuildError> {
    let element_size = T::DTYPE.size() as u64;
    let (array, path) = if pass.first == 0 {
        (context.source.array.clone(), context.source.path.clone())
    } else {
        (
            context.group.open_level(pass.first)?,
            context.group.path.join(pass.first.to_string()),
        )
    };
    let tasks = pass.task_count();
    let task_bytes = pass.task_bytes(element_size, context.method);
    let cache_budget = context.memory_bytes.saturating_sub(workers as u64 * task_bytes);
    debug!("cache budget {} MiB, task {} MiB", cache_budget >> 20, task_bytes >> 20);
    let resumed = context.journal.done_in_pass(pass.first) > 0;
    let reads_of: ReadCounter = if resumed {
        // Count reads over the tasks still to run, chunk by chunk.
        let grid = array.subchunk_grid();
        let mut counts: HashMap<Vec<u64>, u64> = HashMap::new();
        for task in (0..tasks).filter(|&t| !context.journal.is_done(pass.first, t)) {
            let region = pass.region(&pass.task_coordinates(task), pass.first, false);
            for idx in store::chunks_of_region(&grid, &region) {
                let chunk_region = store::grid_region(&grid, &idx);
                *counts.entry(chunk_region.start).or_default() += 1;
            }
        }
        Arc::new(move |region: &Region| counts.get(&region.start).copied().unwrap_or(1))
    } else {
        // Per axis, the task columns whose read span overlaps the chunk.
        let read_spans: Vec<Vec<(u64, u64)>> = pass
            .spans
            .iter()
            .map(|axis| axis.iter().map(|s| s[0].computed).collect())
            .collect();
        Arc::new(move |region: &Region| {
            (0..region.ndim())
                .map(|a| {
                    read_spans[a]
                        .iter()
                        .filter(|c| c.0 < region.end(a) && region.start[a] < c.1)
                        .count() as u64
                })
                .product()
        })
    };
    let source_shape = context.plan.levels[pass.first].shape.clone();
    let reader = TileReader::<T>::new(array, path, cache_budget, reads_of).with_bands(chunk_bands(pass, source_shape));
    let buffers = BufferPool::<T>::new();
    let next_task = AtomicU64::new(0);
    let finished = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<BuildError>> = Mutex::new(None);
    rayon::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|_| {
                loop {
                    let task = next_task.fetch_add(1, Ordering::Relaxed);
                    if task >= tasks || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    if context.journal.is_done(pass.first, task) {
                        context.progress.advance(task_chunks(context, pass, task));
                        continue;
                    }
                    let result = if context.cancelled() {
                        Err(BuildError::Interrupted {
                            tasks_done: finished.load(Ordering::Relaxed),
                            tasks,
                        })
                    } else {
                        if let Some(delay) = context.task_delay {
                            std::thread::sleep(delay);
                        }
                        run_task::<T>(context, pass, &reader, &buffers, task)
                            .and_then(|()| Ok(context.journal.task_done(pass.first, task)?))
                    };
                    match result {
                        Ok(()) => {
                            finished.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .get_or_insert(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    context
        .counters
        .decoded
        .fetch_add(reader.stats.decoded.load(Ordering::Relaxed), Ordering::Relaxed);
    context
        .counters
        .redecoded
        .fetch_add(reader.stats.redecoded.load(Ordering::Relaxed), Ordering::Relaxed);
    match first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Output chunks a task writes (for progress when a resumed build skips it).
fn task_chunks(context: &BuildContext<'_>, pass: &Pass, task: u64) -> u64 {
    let coordinates = pass.task_coordinates(task);
    let first_written = if pass.writes_first { pass.first } else { pass.first + 1 };
    (first_written..=pass.last)
        .map(|level| {
            context.levels[level]
                .chunks_in(&pass.region(&coordinates, level, true))
                .len() as u64
        })
        .sum()
}

fn run_task<T: StoreElement>(
    context: &BuildContext<'_>,
    pass: &Pass,
    reader: &TileReader<T>,
    buffers: &BufferPool<T>,
    task: u64,
) -> Result<(), BuildError> {
    use rayon::prelude::*;
    let coordinates = pass.task_coordinates(task);
    let timer = Instant::now();
    let raw_copy = pass.writes_first && context.raw_copy_level0;
    let read_region = pass.region(&coordinates, pass.first, false);
    let data = reader.read_into(&read_region, buffers.take())?;
    let source_tile = Tile::new(read_region, T::wrap(data));
    let read_done = Instant::now();
    add_ns(&context.counters.read_ns, read_done - timer);

    let chain: Vec<(Step, Region)> = (pass.first..pass.last)
        .map(|level| (context.step(level), pass.region(&coordinates, level + 1, false)))
        .collect();
    let outputs = context.backend.downsample_chain(&source_tile, &chain)?;
    let compute_done = Instant::now();
    add_ns(&context.counters.compute_ns, compute_done - read_done);

    let mut written = 0u64;
    if pass.writes_first {
        let owned = pass.region(&coordinates, pass.first, true);
        let level = &context.levels[pass.first];
        let indices = level.chunks_in(&owned);
        written += indices.len() as u64;
        indices.par_iter().try_for_each(|idx| -> Result<(), BuildError> {
            if raw_copy {
                level.copy_encoded_chunk(context.source, idx)?;
                context.counters.raw_copied.fetch_add(1, Ordering::Relaxed);
                Ok(())
            } else {
                let data = T::view(&source_tile.data).expect("typed tile");
                write_chunk_from::<T>(
                    level,
                    idx,
                    &level.chunk_region(idx),
                    data,
                    &source_tile.region,
                    context.source,
                )
            }
        })?;
    }
    for (offset, tile) in outputs.iter().enumerate() {
        let level_index = pass.first + 1 + offset;
        let owned = pass.region(&coordinates, level_index, true);
        let level = &context.levels[level_index];
        let indices = level.chunks_in(&owned);
        written += indices.len() as u64;
        let data = T::view(&tile.data).expect("backend returns the source dtype");
        indices.par_iter().try_for_each(|idx| {
            write_chunk_from::<T>(level, idx, &level.chunk_region(idx), data, &tile.region, context.source)
        })?;
    }
    add_ns(&context.counters.write_ns, compute_done.elapsed());
    context.progress.advance(written);
    if let Some(data) = T::unwrap(source_tile.data) {
        buffers.give(data);
    }
    Ok(())
}

/// Source-tile buffers handed from one task to the next, so large tiles reuse memory that
/// is already mapped instead of faulting in fresh pages every time.
struct BufferPool<T> {
    free: Mutex<Vec<Vec<T>>>,
}

impl<T> BufferPool<T> {
    fn new() -> Self {
        Self {
            free: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Vec<T> {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, buffer: Vec<T>) {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(buffer);
    }
}

pub(super) fn add_ns(counter: &AtomicU64, elapsed: Duration) {
    counter.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
}
