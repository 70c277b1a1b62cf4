//! One pass of the engine: level `first` in, levels `first+1 ..= last` out. Plans the
//! pass from the memory budget, splits it into chunk-aligned tasks, and runs them on the
//! worker threads through the tile reader, the backend and the level writers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::{BuildError, Progress};
use crate::backend::{Downsampler, Step};
use crate::journal::{Journal, StoredChunk};
use crate::method::Method;
use crate::plan::PyramidPlan;
use crate::store::{self, ChunkSource, LevelSink, ReadCounter, Sink, Source, StoreElement, StoreError, TileReader};
use crate::tile::{Region, Tile, copy_overlap};

/// Counters summed over the tasks of a build.
pub(super) struct Counters {
    pub(super) decoded: AtomicU64,
    pub(super) redecoded: AtomicU64,
    pub(super) raw_copied: AtomicU64,
    pub(super) read_ns: AtomicU64,
    pub(super) compute_ns: AtomicU64,
    pub(super) write_ns: AtomicU64,
    /// Per level: chunk files stored by this run, and their bytes.
    stored: Vec<(AtomicU64, AtomicU64)>,
}

impl Counters {
    pub(super) fn new(levels: usize) -> Self {
        Self {
            decoded: AtomicU64::new(0),
            redecoded: AtomicU64::new(0),
            raw_copied: AtomicU64::new(0),
            read_ns: AtomicU64::new(0),
            compute_ns: AtomicU64::new(0),
            write_ns: AtomicU64::new(0),
            stored: (0..levels).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect(),
        }
    }

    fn count_stored(&self, chunks: &[StoredChunk]) {
        for c in chunks {
            let (count, bytes) = &self.stored[c.level];
            count.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(c.bytes, Ordering::Relaxed);
        }
    }

    /// Chunk files stored in `level` by this run, and their bytes.
    pub(super) fn stored_in(&self, level: usize) -> (u64, u64) {
        let (count, bytes) = &self.stored[level];
        (count.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed))
    }
}

/// What every pass of one build shares.
pub(super) struct BuildContext<'a> {
    pub(super) source: &'a Arc<dyn Source>,
    pub(super) plan: &'a PyramidPlan,
    pub(super) method: Method,
    pub(super) levels: &'a [Box<dyn LevelSink>],
    pub(super) sink: &'a dyn Sink,
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

/// A pass: source level `first`, produced levels `first+1 ..= last`. A task's regions are
/// computed when it runs, never stored for the whole task grid, so planning costs the same
/// for a volume of a million tasks as for one of ten.
struct Pass {
    first: usize,
    last: usize,
    /// Task grid shape (output chunks of level `last`).
    grid: Vec<u64>,
    /// Chunk shape of level `last`.
    top_chunks: Vec<u64>,
    /// Shape of every level `first..=last`.
    shapes: Vec<Vec<u64>>,
    /// The steps `first → first+1`, …, `last-1 → last`.
    steps: Vec<Step>,
    /// Whether level `first` is written by this pass (level 0 only).
    writes_first: bool,
    /// Whether level `first` is written from decoded data (not copied as encoded bytes).
    decodes_first_owned: bool,
}

/// The regions of one task: `spans[axis][level - first]`.
struct TaskSpans(Vec<Vec<AxisSpan>>);

impl TaskSpans {
    fn region(&self, pass: &Pass, level: usize, owned: bool) -> Region {
        let (start, end): (Vec<u64>, Vec<u64>) = self
            .0
            .iter()
            .map(|axis| {
                let span = axis[level - pass.first];
                if owned { span.owned } else { span.computed }
            })
            .unzip();
        Region::from_bounds(&start, &end)
    }
}

impl Pass {
    fn new(context: &BuildContext<'_>, first: usize, last: usize) -> Self {
        let plan = context.plan;
        let writes_first = first == 0;
        Self {
            first,
            last,
            grid: plan.levels[last].chunk_grid(),
            top_chunks: plan.levels[last].chunks.clone(),
            shapes: (first..=last).map(|k| plan.levels[k].shape.clone()).collect(),
            steps: (first..last).map(|k| context.step(k)).collect(),
            writes_first,
            // Level 0 copied as encoded bytes needs no decoded data of its own.
            decodes_first_owned: writes_first && !context.raw_copy_level0,
        }
    }

    /// Per level, what task column `i` computes and owns on `axis`.
    fn axis_spans(&self, axis: usize, i: u64) -> Vec<AxisSpan> {
        let top = self.shapes[self.last - self.first][axis];
        let lo = i * self.top_chunks[axis];
        let hi = (lo + self.top_chunks[axis]).min(top);
        let mut per_level = vec![
            AxisSpan {
                computed: (lo, hi),
                owned: (lo, hi)
            };
            self.last - self.first + 1
        ];
        for level in (self.first..self.last).rev() {
            let offset = level - self.first;
            let above = per_level[offset + 1];
            let step = &self.steps[offset];
            let f = u64::from(step.factors[axis]);
            let n = self.shapes[offset][axis];
            let owned = (above.owned.0 * f, (above.owned.1 * f).min(n));
            let needed =
                crate::method::source_range(step.method, step.factors[axis], n, above.computed.0, above.computed.1);
            let writes = level > self.first || self.decodes_first_owned;
            let computed = if writes {
                (needed.0.min(owned.0), needed.1.max(owned.1))
            } else {
                needed
            };
            per_level[offset] = AxisSpan { computed, owned };
        }
        per_level
    }

    fn task_count(&self) -> u64 {
        self.grid.iter().product()
    }

    fn task_coordinates(&self, task: u64) -> Vec<u64> {
        let mut rest = task;
        let mut coordinates = vec![0u64; self.grid.len()];
        for a in (0..self.grid.len()).rev() {
            coordinates[a] = rest % self.grid[a];
            rest /= self.grid[a];
        }
        coordinates
    }

    fn task_spans(&self, task: u64) -> TaskSpans {
        TaskSpans(
            self.task_coordinates(task)
                .iter()
                .enumerate()
                .map(|(a, &i)| self.axis_spans(a, i))
                .collect(),
        )
    }

    /// Task columns that may differ in extent on an axis: all of them on a short axis;
    /// else those near either end (where clipping and reflection reach) and one inside,
    /// which stands for every inner column.
    fn sample_columns(&self, axis: usize) -> Vec<u64> {
        const EDGE: u64 = 32;
        let g = self.grid[axis];
        if g <= 2 * EDGE + 1 {
            (0..g).collect()
        } else {
            (0..EDGE).chain(std::iter::once(g / 2)).chain(g - EDGE..g).collect()
        }
    }

    /// The task columns on `axis` whose read span at level `first` overlaps `[lo, hi)`
    /// (the read spans grow with the column index, so this is a range).
    fn columns_reading(&self, axis: usize, lo: u64, hi: u64) -> std::ops::Range<u64> {
        let read = |i: u64| self.axis_spans(axis, i)[0].computed;
        let partition = |pred: &dyn Fn(u64) -> bool| {
            let (mut a, mut b) = (0, self.grid[axis]);
            while a < b {
                let mid = a + (b - a) / 2;
                if pred(mid) { a = mid + 1 } else { b = mid }
            }
            a
        };
        let start = partition(&|i| read(i).1 <= lo);
        let end = partition(&|i| read(i).0 < hi);
        start..end.max(start)
    }

    /// Largest working set of one task, in bytes: the source tile, every computed level
    /// (and the chunk buffers written from it), and the gaussian `f64` slabs.
    fn task_bytes(&self, element_size: u64, method: Method) -> u64 {
        let samples: Vec<Vec<Vec<AxisSpan>>> = (0..self.grid.len())
            .map(|a| {
                self.sample_columns(a)
                    .into_iter()
                    .map(|i| self.axis_spans(a, i))
                    .collect()
            })
            .collect();
        let extent = |level: usize, axis: &Vec<Vec<AxisSpan>>| -> u64 {
            axis.iter()
                .map(|s| {
                    let c = s[level - self.first].computed;
                    c.1 - c.0
                })
                .max()
                .unwrap_or(1)
        };
        let largest = |level: usize| -> u64 {
            samples
                .iter()
                .map(|axis| extent(level, axis))
                .fold(1u64, u64::saturating_mul)
        };
        let source = largest(self.first);
        let mut bytes = source.saturating_mul(element_size);
        for level in self.first + 1..=self.last {
            bytes = bytes.saturating_add(2u64.saturating_mul(largest(level)).saturating_mul(element_size));
        }
        if method == Method::Gaussian {
            // One f64 slab of the outermost axis (and smaller ones) per thread.
            let outer = samples.first().map_or(1, |axis| extent(self.first, axis)).max(1);
            bytes = bytes.saturating_add(2 * 8 * source / outer);
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
        let fits = (workers as u64).saturating_mul(pass.task_bytes(element_size, context.method)) <= budget;
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
        if first > 0 {
            // The pass reads level `first` as this build stored it.
            context.verify(first..=first)?;
        }
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
        let (pass_first, pass_last, writes_first) = (pass.first, pass.last, pass.writes_first);
        run_pass::<T>(context, pass, workers)?;
        let elapsed = started.elapsed();
        let produced = if writes_first {
            pass_first..=pass_last
        } else {
            pass_first + 1..=pass_last
        };
        for level in produced.clone() {
            seconds[level] = elapsed.as_secs_f64();
        }
        debug!("levels {produced:?} done in {:.2} s", elapsed.as_secs_f64());
        context.progress.pass_done(produced, elapsed);
        first = pass_last;
    }
    Ok(seconds)
}

/// A one-level "pyramid": level 0 copied chunk by chunk.
fn copy_level0_only<T: StoreElement>(context: &BuildContext<'_>) -> Result<(), BuildError> {
    let level = &context.plan.levels[0];
    let grid = level.chunk_grid();
    let total: u64 = grid.iter().product();
    let level0: Arc<dyn ChunkSource> = context.source.clone();
    let reader = TileReader::<T>::new(level0, context.memory_bytes / 2, Arc::new(|_: &Region| 1))
        .with_cancel(context.cancel.clone());
    let finished = AtomicU64::new(0);
    let interrupted = || BuildError::Interrupted {
        tasks_done: finished.load(Ordering::Relaxed),
        tasks: total,
    };
    use rayon::prelude::*;
    let result = (0..total).into_par_iter().try_for_each(|i| -> Result<(), BuildError> {
        if context.journal.is_done(0, i) {
            context.progress.advance(1);
            return Ok(());
        }
        if context.cancelled() {
            return Err(interrupted());
        }
        if let Some(delay) = context.task_delay {
            std::thread::sleep(delay);
        }
        let idx = context.levels[0].chunk_indices(i);
        let chunk_region = context.levels[0].chunk_region(&idx);
        let started = Instant::now();
        let stored = if context.raw_copy_level0 {
            let stored = context.levels[0].copy_stored_chunk(context.source.as_ref(), &idx)?;
            context.counters.raw_copied.fetch_add(1, Ordering::Relaxed);
            add_ns(&context.counters.write_ns, started.elapsed());
            stored
        } else {
            let inside = chunk_region
                .intersect(&Region::whole(&level.shape))
                .expect("chunk inside the level");
            let data = reader.read(&inside)?;
            let read = Instant::now();
            add_ns(&context.counters.read_ns, read - started);
            let stored = write_chunk_from::<T>(
                context.levels[0].as_ref(),
                &idx,
                &chunk_region,
                &data,
                &inside,
                context.source.as_ref(),
            )?;
            add_ns(&context.counters.write_ns, read.elapsed());
            stored
        };
        let stored: Vec<StoredChunk> = stored
            .map(|bytes| StoredChunk {
                level: 0,
                index: i,
                bytes,
            })
            .into_iter()
            .collect();
        context.counters.count_stored(&stored);
        context.journal.task_done(0, i, &stored)?;
        finished.fetch_add(1, Ordering::Relaxed);
        context.progress.advance(1);
        Ok(())
    });
    context
        .counters
        .decoded
        .fetch_add(reader.stats.decoded.load(Ordering::Relaxed), Ordering::Relaxed);
    result.map_err(|e| if e.is_cancellation() { interrupted() } else { e })
}

fn fill_of<T: StoreElement>(source: &dyn Source) -> T {
    bytemuck::pod_read_unaligned(source.fill_bytes())
}

/// Writes chunk `idx` (grid region `chunk_region`) from `data` covering `data_region`;
/// returns the bytes stored, or `None` for a chunk of fill value only (not stored).
fn write_chunk_from<T: StoreElement>(
    level: &dyn LevelSink,
    idx: &[u64],
    chunk_region: &Region,
    data: &[T],
    data_region: &Region,
    source: &dyn Source,
) -> Result<Option<u64>, BuildError> {
    let mut buffer = vec![fill_of::<T>(source); chunk_region.len()];
    copy_overlap(data, data_region, &mut buffer, chunk_region);
    Ok(level.write_chunk(idx, bytemuck::cast_slice(&buffer))?)
}

/// Reads, computes and writes: the tasks' view of the store, the backend and the counters.
struct Worker<'a, 'c, T> {
    context: &'a BuildContext<'c>,
    pass: &'a Pass,
    reader: &'a TileReader<T>,
    buffers: &'a BufferPool<T>,
    /// True when the fill value's bytes are all zero: every method maps an all-zero
    /// region to zeros, which are not stored, so a task whose source holds no stored chunk
    /// writes nothing and can be skipped.
    zero_fill: bool,
}

fn run_pass<T: StoreElement>(context: &BuildContext<'_>, pass: Pass, workers: usize) -> Result<(), BuildError> {
    let element_size = T::DTYPE.size() as u64;
    let level: Arc<dyn ChunkSource> = if pass.first == 0 {
        context.source.clone()
    } else {
        context.sink.read_level(pass.first)?
    };
    let tasks = pass.task_count();
    let task_bytes = pass.task_bytes(element_size, context.method);
    let cache_budget = context
        .memory_bytes
        .saturating_sub((workers as u64).saturating_mul(task_bytes));
    debug!("cache budget {} MiB, task {} MiB", cache_budget >> 20, task_bytes >> 20);
    let pass = Arc::new(pass);
    let reads_of = read_counter(context, &pass, level.as_ref());
    let bands_of: store::ChunkBands = {
        let pass = pass.clone();
        let shape = pass.shapes[0].clone();
        Arc::new(move |chunk: &Region| {
            let read_spans: Vec<Vec<(u64, u64)>> = (0..chunk.ndim())
                .map(|a| {
                    pass.columns_reading(a, chunk.start[a], chunk.end(a))
                        .map(|i| pass.axis_spans(a, i)[0].computed)
                        .collect()
                })
                .collect();
            store::halo_bands(chunk, &read_spans, &shape)
        })
    };
    let zero_fill = level.fill_bytes().iter().all(|&b| b == 0);
    let reader = TileReader::<T>::new(level, cache_budget, reads_of)
        .with_bands(bands_of)
        .with_cancel(context.cancel.clone());
    let buffers = BufferPool::<T>::new();
    let worker = Worker {
        context,
        pass: &pass,
        reader: &reader,
        buffers: &buffers,
        zero_fill,
    };
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
                        context.progress.advance(task_chunks(context, &pass, task));
                        continue;
                    }
                    let result = if context.cancelled() {
                        Err(StoreError::Cancelled.into())
                    } else {
                        if let Some(delay) = context.task_delay {
                            std::thread::sleep(delay);
                        }
                        worker.run(task)
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
        Some(e) if e.is_cancellation() => Err(BuildError::Interrupted {
            tasks_done: finished.load(Ordering::Relaxed),
            tasks,
        }),
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How many tasks of the pass read each source chunk: from the read spans of the task
/// columns (a closed form), or, when resuming, by counting over the tasks still to run
/// where there are few enough of them to count.
fn read_counter(context: &BuildContext<'_>, pass: &Arc<Pass>, level: &dyn ChunkSource) -> ReadCounter {
    const COUNTED_TASKS: u64 = 1 << 20;
    let tasks = pass.task_count();
    if context.journal.done_in_pass(pass.first) > 0 && tasks <= COUNTED_TASKS {
        let mut counts: HashMap<Vec<u64>, u64> = HashMap::new();
        for task in (0..tasks).filter(|&t| !context.journal.is_done(pass.first, t)) {
            let region = pass.task_spans(task).region(pass, pass.first, false);
            for idx in level.chunks_in(&region) {
                let chunk_region = level.chunk_region(&idx);
                *counts.entry(chunk_region.start).or_default() += 1;
            }
        }
        return Arc::new(move |region: &Region| counts.get(&region.start).copied().unwrap_or(1));
    }
    let pass = pass.clone();
    Arc::new(move |region: &Region| {
        (0..region.ndim())
            .map(|a| {
                let columns = pass.columns_reading(a, region.start[a], region.end(a));
                columns.end - columns.start
            })
            .product()
    })
}

/// Output chunks a task writes (for progress when a resumed build skips it).
fn task_chunks(context: &BuildContext<'_>, pass: &Pass, task: u64) -> u64 {
    let spans = pass.task_spans(task);
    let first_written = if pass.writes_first { pass.first } else { pass.first + 1 };
    (first_written..=pass.last)
        .map(|level| context.levels[level].chunks_in(&spans.region(pass, level, true)).len() as u64)
        .sum()
}

impl<T: StoreElement> Worker<'_, '_, T> {
    fn run(&self, task: u64) -> Result<(), BuildError> {
        let (context, pass) = (self.context, self.pass);
        let spans = pass.task_spans(task);
        let timer = Instant::now();
        let read_region = spans.region(pass, pass.first, false);
        if self.zero_fill && self.reader.nothing_stored_in(&read_region)? {
            self.reader.skip(&read_region);
            context.progress.advance(task_chunks(context, pass, task));
            context.journal.task_done(pass.first, task, &[])?;
            return Ok(());
        }
        let data = self.reader.read_into(&read_region, self.buffers.take())?;
        let source_tile = Tile::new(read_region, T::wrap(data));
        let read_done = Instant::now();
        add_ns(&context.counters.read_ns, read_done - timer);

        let chain: Vec<(Step, Region)> = (pass.first..pass.last)
            .map(|level| (context.step(level), spans.region(pass, level + 1, false)))
            .collect();
        let outputs = context.backend.downsample_chain(&source_tile, &chain)?;
        let compute_done = Instant::now();
        add_ns(&context.counters.compute_ns, compute_done - read_done);

        let mut stored = Vec::new();
        let mut written = 0u64;
        if pass.writes_first {
            let owned = spans.region(pass, pass.first, true);
            let tile = (!context.raw_copy_level0).then(|| {
                let data = T::view(&source_tile.data).expect("typed tile");
                (data, &source_tile.region)
            });
            written += self.write_level(pass.first, &owned, tile, &mut stored)?;
        }
        for (offset, tile) in outputs.iter().enumerate() {
            let level = pass.first + 1 + offset;
            let owned = spans.region(pass, level, true);
            let data = T::view(&tile.data).expect("backend returns the source dtype");
            written += self.write_level(level, &owned, Some((data, &tile.region)), &mut stored)?;
        }
        add_ns(&context.counters.write_ns, compute_done.elapsed());
        context.counters.count_stored(&stored);
        context.journal.task_done(pass.first, task, &stored)?;
        context.progress.advance(written);
        if let Some(data) = T::unwrap(source_tile.data) {
            self.buffers.give(data);
        }
        Ok(())
    }

    /// Writes the chunks of `level` under `owned`, from `tile` (data and the region it
    /// holds) or, without one, as level 0's encoded bytes; adds what was stored to
    /// `stored` and returns how many chunks were written.
    fn write_level(
        &self,
        level: usize,
        owned: &Region,
        tile: Option<(&[T], &Region)>,
        stored: &mut Vec<StoredChunk>,
    ) -> Result<u64, BuildError> {
        use rayon::prelude::*;
        let context = self.context;
        let array = &context.levels[level];
        let indices = array.chunks_in(owned);
        let sizes = indices
            .par_iter()
            .map(|idx| -> Result<Option<StoredChunk>, BuildError> {
                if context.cancelled() {
                    return Err(StoreError::Cancelled.into());
                }
                let bytes = match tile {
                    Some((data, region)) => write_chunk_from::<T>(
                        array.as_ref(),
                        idx,
                        &array.chunk_region(idx),
                        data,
                        region,
                        context.source.as_ref(),
                    )?,
                    None => {
                        context.counters.raw_copied.fetch_add(1, Ordering::Relaxed);
                        array.copy_stored_chunk(context.source.as_ref(), idx)?
                    }
                };
                Ok(bytes.map(|bytes| StoredChunk {
                    level,
                    index: array.flat_index(idx),
                    bytes,
                }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        stored.extend(sizes.into_iter().flatten());
        Ok(indices.len() as u64)
    }
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
