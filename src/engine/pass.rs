//! One pass of the engine: level `first` in, levels `first+1 ..= last` out. Plans the
//! pass from the memory budget: its *tiles* (one per output chunk of level `last`, each
//! with the regions it reads, computes and owns at every level) and its *blocks* (runs of
//! tiles covering whole shards at every level the pass writes), and runs them through the
//! block runner ([`super::blocks`]) and the tile worker ([`super::tile`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::blocks::{BlockWork, run_blocks};
use super::stages::Started;
use super::tile::{BufferPool, ChunkCopier, TileWorker};
use super::{BuildError, Progress};
use crate::backend::{Downsampler, Step};
use crate::journal::{Journal, StoredChunk};
use crate::method::Method;
use crate::plan::PyramidPlan;
use crate::store::{self, ChunkSource, LevelSink, ReadCounter, Sink, Source, StoreElement, TileReader};
use crate::tile::{Region, c_order};

/// Counters summed over the tasks of a build.
pub(super) struct Counters {
    pub(super) decoded: AtomicU64,
    pub(super) redecoded: AtomicU64,
    pub(super) raw_copied: AtomicU64,
    /// Source tiles read into the backend's staging memory.
    pub(super) staged: AtomicU64,
    /// Batches those were computed in (one submission each).
    pub(super) staged_batches: AtomicU64,
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
            staged: AtomicU64::new(0),
            staged_batches: AtomicU64::new(0),
            read_ns: AtomicU64::new(0),
            compute_ns: AtomicU64::new(0),
            write_ns: AtomicU64::new(0),
            stored: (0..levels).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect(),
        }
    }

    pub(super) fn count_stored(&self, chunks: &[StoredChunk]) {
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
    pub(super) source: &'a Arc<dyn Source + 'a>,
    pub(super) plan: &'a PyramidPlan,
    pub(super) method: Method,
    pub(super) levels: &'a [Box<dyn LevelSink>],
    pub(super) sink: &'a dyn Sink,
    pub(super) backend: &'a dyn Downsampler,
    pub(super) threads: usize,
    pub(super) memory_bytes: u64,
    pub(super) level0: super::prepare::Level0,
    pub(super) progress: &'a dyn Progress,
    pub(super) cancel: Option<Arc<AtomicBool>>,
    pub(super) counters: Counters,
    pub(super) journal: &'a Journal,
    pub(super) task_delay: Option<Duration>,
    /// The first pass's blocks this run does, when it is one part of a partitioned build
    /// (it then runs only the first pass); `None` for a whole build.
    pub(super) part: Option<std::ops::Range<u64>>,
}

impl BuildContext<'_> {
    /// What decides the passes' tiles and blocks.
    pub(super) fn layout(&self) -> PassLayout<'_> {
        PassLayout {
            plan: self.plan,
            method: self.method,
            level0: self.level0,
            units: self.levels.iter().map(|l| l.units().chunk().to_vec()).collect(),
            sharded: self.levels.iter().map(|l| l.is_sharded()).collect(),
        }
    }

    /// The blocks of pass `first` (of `count`) this run does: a part's range of the first
    /// pass, else all.
    fn blocks_to_run(&self, first: usize, count: u64) -> std::ops::Range<u64> {
        match &self.part {
            Some(range) if first == 0 => range.start.min(count)..range.end.min(count),
            _ => 0..count,
        }
    }

    pub(super) fn step(&self, level: usize) -> Step {
        Step {
            method: self.method,
            factors: self.plan.levels[level + 1].step_factors.clone(),
            src_shape: self.plan.levels[level].shape.clone(),
        }
    }

    pub(super) fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// The regions one tile handles, per level of its pass, on one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AxisSpan {
    /// What the tile computes at this level (`[lo, hi)`).
    pub(super) computed: (u64, u64),
    /// What the tile writes at this level (chunk-aligned).
    pub(super) owned: (u64, u64),
}

/// A pass: source level `first`, produced levels `first+1 ..= last`. A tile's regions are
/// computed when it runs, never stored for the whole tile grid, so planning costs the same
/// for a volume of a million tiles as for one of ten.
pub(super) struct Pass {
    pub(super) first: usize,
    pub(super) last: usize,
    /// Tile grid shape (output chunks of level `last`).
    grid: Vec<u64>,
    /// Chunk shape of level `last`.
    top_chunks: Vec<u64>,
    /// Tiles per block along each axis.
    block: Vec<u64>,
    /// Shape of every level `first..=last`.
    pub(super) shapes: Vec<Vec<u64>>,
    /// The steps `first → first+1`, …, `last-1 → last`.
    steps: Vec<Step>,
    /// Whether level `first` is written by this pass (level 0 only).
    pub(super) writes_first: bool,
    /// Whether level `first` is written from decoded data (not copied as encoded bytes).
    decodes_first_owned: bool,
    /// Whether a level the pass writes is sharded.
    pub(super) sharded: bool,
}

/// The regions of one tile: `spans[axis][level - first]`.
pub(super) struct TileSpans(Vec<Vec<AxisSpan>>);

impl TileSpans {
    pub(super) fn region(&self, pass: &Pass, level: usize, owned: bool) -> Region {
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

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

/// What decides a pass's tiles and blocks: the levels, the method, how level 0 is written
/// and every level's write unit. The same for a whole build and for a partitioned one's plan.
pub(super) struct PassLayout<'a> {
    pub(super) plan: &'a PyramidPlan,
    pub(super) method: Method,
    pub(super) level0: super::prepare::Level0,
    /// Per level: the shape of what is written as one file (a shard, or a chunk).
    pub(super) units: Vec<Vec<u64>>,
    /// Per level: whether it is sharded.
    pub(super) sharded: Vec<bool>,
}

impl<'a> PassLayout<'a> {
    /// The layout of levels about to be written with `shards` (`None`: unsharded).
    pub(super) fn new(
        plan: &'a PyramidPlan,
        method: Method,
        level0: super::prepare::Level0,
        shards: &[Option<Vec<u64>>],
    ) -> Self {
        Self {
            plan,
            method,
            level0,
            units: plan
                .levels
                .iter()
                .zip(shards)
                .map(|(level, shard)| shard.clone().unwrap_or_else(|| level.chunks.clone()))
                .collect(),
            sharded: shards.iter().map(Option::is_some).collect(),
        }
    }

    fn step(&self, level: usize) -> Step {
        Step {
            method: self.method,
            factors: self.plan.levels[level + 1].step_factors.clone(),
            src_shape: self.plan.levels[level].shape.clone(),
        }
    }
}

impl Pass {
    pub(super) fn new(layout: &PassLayout<'_>, first: usize, last: usize) -> Self {
        let plan = layout.plan;
        let writes_first = first == 0;
        let written = if writes_first { first..=last } else { first + 1..=last };
        let top = &plan.levels[last];
        let grid = top.chunk_grid();
        // A block's region at a written level must be whole write units: along each axis its
        // extent at level `last`, times the factor from there down, a multiple of the unit.
        let block = (0..grid.len())
            .map(|a| {
                let extent = written.clone().fold(top.chunks[a], |extent, level| {
                    let factor = top.cumulative_factors[a] / plan.levels[level].cumulative_factors[a];
                    let unit = layout.units[level][a];
                    lcm(extent, unit / gcd(unit, factor))
                });
                (extent / top.chunks[a]).clamp(1, grid[a].max(1))
            })
            .collect();
        Self {
            first,
            last,
            grid,
            top_chunks: top.chunks.clone(),
            block,
            shapes: (first..=last).map(|k| plan.levels[k].shape.clone()).collect(),
            steps: (first..last).map(|k| layout.step(k)).collect(),
            writes_first,
            // Level 0 copied as encoded bytes needs no decoded data of its own.
            decodes_first_owned: writes_first && !layout.level0.is_copied(),
            sharded: written.into_iter().any(|level| layout.sharded[level]),
        }
    }

    /// Per level, what tile column `i` computes and owns on `axis`.
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

    /// True if the first step can be computed from each chunk of level `first` (of
    /// `chunk_shape`) alone: a method without a halo (not gaussian), chunks of whole windows
    /// (their shape a multiple of the step's factors, so no window spans two chunks; the
    /// far edge's partial windows end with the level), and level `first` not written from
    /// decoded data (which needs the source tile).
    pub(super) fn first_step_per_chunk(&self, chunk_shape: &[u64]) -> bool {
        let step = &self.steps[0];
        step.method != Method::Gaussian
            && !self.decodes_first_owned
            && chunk_shape
                .iter()
                .zip(&step.factors)
                .all(|(&c, &f)| c > 0 && c % u64::from(f) == 0)
    }

    pub(super) fn tile_count(&self) -> u64 {
        self.grid.iter().product()
    }

    fn tile_coordinates(&self, tile: u64) -> Vec<u64> {
        let mut rest = tile;
        let mut coordinates = vec![0u64; self.grid.len()];
        for a in (0..self.grid.len()).rev() {
            coordinates[a] = rest % self.grid[a];
            rest /= self.grid[a];
        }
        coordinates
    }

    pub(super) fn tile_spans(&self, tile: u64) -> TileSpans {
        TileSpans(
            self.tile_coordinates(tile)
                .iter()
                .enumerate()
                .map(|(a, &i)| self.axis_spans(a, i))
                .collect(),
        )
    }

    /// Per block column on `axis`, the extent of level `first` its blocks write or read.
    pub(super) fn block_extents(&self, axis: usize) -> Vec<u64> {
        let columns = self.grid[axis].div_ceil(self.block[axis]);
        (0..columns)
            .map(|b| {
                let first_tile = b * self.block[axis];
                let last_tile = ((b + 1) * self.block[axis]).min(self.grid[axis]) - 1;
                let lo = self.axis_spans(axis, first_tile)[0].owned.0;
                let hi = self.axis_spans(axis, last_tile)[0].owned.1;
                hi - lo
            })
            .collect()
    }

    /// Blocks along each axis.
    pub(super) fn block_grid(&self) -> Vec<u64> {
        self.grid
            .iter()
            .zip(&self.block)
            .map(|(&g, &b)| g.div_ceil(b))
            .collect()
    }

    pub(super) fn block_count(&self) -> u64 {
        self.block_grid().iter().product()
    }

    /// The tiles of block `block`, in C order.
    pub(super) fn block_tiles(&self, block: u64) -> Vec<u64> {
        let blocks = self.block_grid();
        let mut rest = block;
        let mut ranges = vec![(0u64, 0u64); blocks.len()];
        for a in (0..blocks.len()).rev() {
            let b = rest % blocks[a];
            rest /= blocks[a];
            ranges[a] = (b * self.block[a], ((b + 1) * self.block[a]).min(self.grid[a]));
        }
        c_order(&ranges)
            .map(|index| index.iter().zip(&self.grid).fold(0, |flat, (&i, &g)| flat * g + i))
            .collect()
    }

    /// Tile columns that may differ in extent on an axis: all of them on a short axis;
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

    /// The tile columns on `axis` whose read span at level `first` overlaps `[lo, hi)`
    /// (the read spans grow with the column index, so this is a range).
    pub(super) fn columns_reading(&self, axis: usize, lo: u64, hi: u64) -> std::ops::Range<u64> {
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

    /// Per axis, the read spans at level `first` of the tile columns that overlap `chunk`
    /// (what [`store::halo_bands`] and [`store::whole_reads`] take).
    fn chunk_read_spans(&self, chunk: &Region) -> Vec<Vec<(u64, u64)>> {
        (0..chunk.ndim())
            .map(|a| self.read_spans(a, chunk.start[a], chunk.end(a)))
            .collect()
    }

    /// The read spans at level `first` of the tile columns on `axis` that overlap `[lo, hi)`.
    pub(super) fn read_spans(&self, axis: usize, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        self.columns_reading(axis, lo, hi)
            .map(|i| self.axis_spans(axis, i)[0].computed)
            .collect()
    }

    /// Largest working set of one tile, in bytes: the source tile, every computed level
    /// (and the chunk buffers written from it), and the gaussian `f64` slabs. With
    /// `per_chunk` (the elements of one source chunk), the first step is computed chunk by
    /// chunk: no source tile, two decoded chunks instead.
    fn tile_bytes_with(&self, tile: &LargestTile, element_size: u64, method: Method, per_chunk: Option<u64>) -> u64 {
        let held = per_chunk.map_or(tile.source, |chunk| chunk.saturating_mul(2));
        let mut bytes = held.saturating_mul(element_size);
        bytes = bytes.saturating_add(2u64.saturating_mul(tile.outputs).saturating_mul(element_size));
        if method == Method::Gaussian {
            // At most one f64 slab of the outermost axis (and smaller ones) per thread: the
            // CPU kernel holds a ring of its rows where there are 3 axes or more.
            bytes = bytes.saturating_add(2 * 8 * tile.source / tile.outer.max(1));
        }
        bytes
    }

    /// The largest tile of the pass, over the sampled tile columns.
    fn largest_tile(&self) -> LargestTile {
        let extents = self.largest_extents();
        let volume = |level: usize| extents.iter().map(|axis| axis[level]).fold(1u64, u64::saturating_mul);
        LargestTile {
            source: volume(0),
            outputs: (1..=self.last - self.first).map(volume).fold(0, u64::saturating_add),
            outer: extents.first().map_or(1, |axis| axis[0]),
        }
    }

    /// Per axis, per level of the pass (from `first`), the largest extent a tile computes
    /// there, over the sampled tile columns.
    fn largest_extents(&self) -> Vec<Vec<u64>> {
        let levels = self.last - self.first + 1;
        (0..self.grid.len())
            .map(|axis| {
                let spans: Vec<Vec<AxisSpan>> = self
                    .sample_columns(axis)
                    .into_iter()
                    .map(|i| self.axis_spans(axis, i))
                    .collect();
                (0..levels)
                    .map(|l| {
                        spans
                            .iter()
                            .map(|s| s[l].computed.1 - s[l].computed.0)
                            .max()
                            .unwrap_or(1)
                    })
                    .collect()
            })
            .collect()
    }

    /// Memory one worker needs: a tile, and for sharded levels what waits to be appended
    /// (encoded output of at most one more tile).
    pub(super) fn worker_bytes(&self, element_size: u64, method: Method) -> u64 {
        self.worker_bytes_with(&self.largest_tile(), element_size, method, None)
    }

    /// As [`Pass::worker_bytes`], for `tile` (the pass's [`Pass::largest_tile`]) and a pass
    /// whose first step is computed per source chunk of `per_chunk` elements when that is
    /// `Some`.
    fn worker_bytes_with(&self, tile: &LargestTile, element_size: u64, method: Method, per_chunk: Option<u64>) -> u64 {
        let bytes = self.tile_bytes_with(tile, element_size, method, per_chunk);
        if self.sharded { bytes.saturating_mul(2) } else { bytes }
    }

    /// Source chunks one tile reads, at most (of `chunk_shape`).
    fn chunks_per_tile(&self, chunk_shape: &[u64]) -> u64 {
        (0..self.grid.len())
            .map(|a| {
                self.sample_columns(a)
                    .into_iter()
                    .map(|i| {
                        let (lo, hi) = self.axis_spans(a, i)[0].computed;
                        let c = chunk_shape[a].max(1);
                        (hi.saturating_sub(1) / c + 1).saturating_sub(lo / c)
                    })
                    .max()
                    .unwrap_or(1)
            })
            .fold(1u64, u64::saturating_mul)
    }
}

/// Elements of the largest tile of a pass ([`Pass::largest_tile`]).
struct LargestTile {
    /// Its source tile, at the pass's first level.
    source: u64,
    /// The levels it computes, together.
    outputs: u64,
    /// The source tile's extent along the outermost axis.
    outer: u64,
}

/// Chooses the levels of the next pass and its concurrency from the memory budget: how
/// many tiles it holds at once (one per thread, and one more per compute thread of the
/// backend's own, within the budget).
/// `planned_last` (from the journal of an interrupted build) fixes the levels, so a resumed
/// build replays the same blocks whatever its memory budget and thread count.
fn plan_pass(
    context: &BuildContext<'_>,
    first: usize,
    element_size: u64,
    planned_last: Option<usize>,
) -> (Pass, usize) {
    let last_level = context.plan.len() - 1;
    let budget = context.memory_bytes * 7 / 10;
    let source_bytes = context.plan.levels[first].shape.iter().product::<u64>() * element_size;
    let layout = context.layout();
    let chunk_shape = source_chunk_shape(context, first);
    let mut chosen: Option<(Pass, usize)> = None;
    let candidates = match planned_last {
        Some(last) => last..=last,
        None => first + 1..=last_level,
    };
    for last in candidates {
        let pass = Pass::new(&layout, first, last);
        let tiles = pass.tile_count();
        let at_once = usize::try_from(tiles)
            .unwrap_or(usize::MAX)
            .min(context.threads + compute_threads(context))
            .max(1);
        // A pass computed per chunk holds no source tile, and its tiles decode their chunks
        // in parallel: deeper passes (fewer, larger tiles) then fit, and need no re-read of
        // a level between passes.
        let per_chunk = per_chunk_elements(context, &pass);
        let tile = pass.largest_tile();
        let fits =
            (at_once as u64).saturating_mul(worker_bytes(context, &pass, &tile, element_size, per_chunk)) <= budget;
        let threads = context.threads as u64;
        let parallel_enough = tiles >= 2 * threads
            || source_bytes <= 32 << 20
            || (per_chunk.is_some() && tiles.saturating_mul(pass.chunks_per_tile(&chunk_shape)) >= 4 * threads);
        // A GPU chains a pass's levels on the device only for tiles its memory holds; a
        // deeper pass would split every tile, uploading and reading back each piece and step.
        let whole = context
            .backend
            .holds_tile(context.method, context.source.dtype(), tile.source, tile.outputs);
        if chosen.is_none() {
            if !whole {
                debug!("the tiles of a pass from level {first} exceed what the backend holds at once: each is split");
            }
            chosen = Some((pass, at_once));
        } else if fits && parallel_enough && whole {
            chosen = Some((pass, at_once));
        } else {
            if fits && parallel_enough {
                debug!(
                    "the pass from level {first} stops before level {last}: its tiles would exceed what the backend holds at once"
                );
            }
            break;
        }
    }
    let (pass, mut at_once) = chosen.expect("at least one level remains");
    let worker_bytes = pass_worker_bytes(context, &pass, element_size);
    let affordable = usize::try_from(budget / worker_bytes.max(1))
        .unwrap_or(usize::MAX)
        .max(1);
    if affordable < at_once {
        debug!("memory budget allows {affordable} concurrent tiles of {worker_bytes} bytes (instead of {at_once})");
        at_once = affordable;
    }
    if worker_bytes > budget {
        warn!(
            "one tile needs about {} MiB, more than the --memory budget allows; use smaller --chunks to stay within it",
            worker_bytes >> 20
        );
    }
    (pass, at_once)
}

/// Whether this build's backend computes first steps per chunk: the CPU's, which reads a
/// decoded chunk in place; a GPU keeps whole tiles (one upload, the levels chained on the
/// device).
fn per_chunk_here(context: &BuildContext<'_>) -> bool {
    context.backend.kind() == crate::backend::BackendKind::Cpu
}

/// Threads of the backend's own that compute this build's tiles (0: the workers do). A
/// pass holds that many tiles more than it has workers, so the workers read and write
/// while the backend computes.
fn compute_threads(context: &BuildContext<'_>) -> usize {
    context.backend.compute_threads(context.method, context.source.dtype())
}

/// The chunk shape the pass from level `first` reads: the input's, or the level's as written.
fn source_chunk_shape(context: &BuildContext<'_>, first: usize) -> Vec<u64> {
    if first == 0 {
        context.source.chunk_shape().to_vec()
    } else {
        context.levels[first].chunks().chunk().to_vec()
    }
}

/// The elements of one source chunk where `pass` is planned and run per chunk: the CPU
/// computes its first step so, and it is unsharded (a shard's chunk order follows the
/// tiles, so sharded passes keep their depth, workers and memory count). `None` otherwise.
fn per_chunk_elements(context: &BuildContext<'_>, pass: &Pass) -> Option<u64> {
    let chunk_shape = source_chunk_shape(context, pass.first);
    (per_chunk_here(context) && !pass.sharded && pass.first_step_per_chunk(&chunk_shape))
        .then(|| chunk_shape.iter().product())
}

/// Memory one worker of `pass` needs.
fn pass_worker_bytes(context: &BuildContext<'_>, pass: &Pass, element_size: u64) -> u64 {
    worker_bytes(
        context,
        pass,
        &pass.largest_tile(),
        element_size,
        per_chunk_elements(context, pass),
    )
}

/// Memory one worker of `pass` needs, `tile` its largest tile ([`Pass::largest_tile`]) and
/// its first step computed per chunk or not: its tiles, and what the backend holds for a
/// task besides (a GPU's staging and readback buffers).
fn worker_bytes(
    context: &BuildContext<'_>,
    pass: &Pass,
    tile: &LargestTile,
    element_size: u64,
    per_chunk: Option<u64>,
) -> u64 {
    let backend = context.backend.task_memory_bytes(
        context.method,
        tile.source.saturating_mul(element_size),
        tile.outputs.saturating_mul(element_size),
    );
    pass.worker_bytes_with(tile, element_size, context.method, per_chunk)
        .saturating_add(backend)
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
    // Shared by the passes: the next pass's tiles reuse the last one's mapped buffers.
    let buffers = BufferPool::<T>::new();
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
        let (pass, at_once) = plan_pass(context, first, element_size, planned);
        if planned.is_none() {
            context.journal.pass_started(pass.first, pass.last)?;
        }
        debug!(
            "pass: level {} → levels {}..={}, {} tiles in {} blocks, {} at once",
            pass.first,
            pass.first + 1,
            pass.last,
            pass.tile_count(),
            pass.block_count(),
            at_once
        );
        let (pass_first, pass_last, writes_first) = (pass.first, pass.last, pass.writes_first);
        run_pass::<T>(context, pass, at_once, &buffers)?;
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
        if context.part.is_some() {
            // A part runs its share of the first pass; `finalize` does the rest.
            break;
        }
        first = pass_last;
    }
    Ok(seconds)
}

/// A one-level "pyramid": level 0 copied unit by unit (a chunk, or a shard's chunks in
/// C order).
fn copy_level0_only<T: StoreElement>(context: &BuildContext<'_>) -> Result<(), BuildError> {
    let level = context.levels[0].as_ref();
    let source: Arc<dyn ChunkSource + '_> = context.source.clone();
    let reader = TileReader::<T>::new(source, context.memory_bytes / 2, Arc::new(|_: &Region| 1))
        .with_cancel(context.cancel.clone());
    let units = level.units();
    let chunks = level.chunks();
    let chunks_of_unit = |unit: u64| chunks.chunks_in(&units.region(&units.indices(unit)));
    let worker = ChunkCopier::<T> {
        context,
        reader: &reader,
    };
    let blocks = context.blocks_to_run(0, units.grid_shape().iter().product());
    if context.part.is_some() {
        context
            .progress
            .start(blocks.clone().map(|unit| chunks_of_unit(unit).len() as u64).sum());
    }
    let work = BlockWork {
        journal_key: 0,
        blocks,
        tiles_of: &|unit| chunks_of_unit(unit).iter().map(|idx| chunks.flat_index(idx)).collect(),
        chunks_of: &|unit| chunks_of_unit(unit).len() as u64,
        run_tile: &|chunk| worker.copy(&chunks.indices(chunk)).map(Started::Done),
        compute_threads: 0,
        batch_bytes: 0,
    };
    let workers = context.threads;
    let result = run_blocks(context, &work, workers, 2 * workers);
    context
        .counters
        .decoded
        .fetch_add(reader.stats.decoded.load(Ordering::Relaxed), Ordering::Relaxed);
    result
}

fn run_pass<T: StoreElement>(
    context: &BuildContext<'_>,
    pass: Pass,
    at_once: usize,
    buffers: &BufferPool<T>,
) -> Result<(), BuildError> {
    let element_size = T::DTYPE.size() as u64;
    let level: Arc<dyn ChunkSource + '_> = if pass.first == 0 {
        context.source.clone()
    } else {
        context.sink.read_level(pass.first)?
    };
    let worker_bytes = pass_worker_bytes(context, &pass, element_size);
    let cache_budget = context
        .memory_bytes
        .saturating_sub((at_once as u64).saturating_mul(worker_bytes));
    debug!(
        "cache budget {} MiB, tile {} MiB",
        cache_budget >> 20,
        worker_bytes >> 20
    );
    let pass = Arc::new(pass);
    let (reads_of, whole_reads_of) = read_counters(context, &pass, level.as_ref());
    let bands_of: store::ChunkBands = {
        let pass = pass.clone();
        Arc::new(move |chunk: &Region| store::halo_bands(chunk, &pass.chunk_read_spans(chunk), &pass.shapes[0]))
    };
    let zero_fill = level.fill_bytes().iter().all(|&b| b == 0);
    let per_chunk = per_chunk_here(context) && pass.first_step_per_chunk(level.chunk_shape());
    // The memory budget counts one source tile per worker of this pass, none when it is
    // computed chunk by chunk: the last pass's buffers are kept only within that.
    let tile_elements = if per_chunk { 0 } else { pass.largest_tile().source };
    buffers.keep_within(at_once, usize::try_from(tile_elements).unwrap_or(usize::MAX));
    let reader = TileReader::<T>::new(level, cache_budget, reads_of)
        .with_bands(bands_of)
        .with_whole_reads(whole_reads_of)
        .with_cancel(context.cancel.clone());
    let worker = TileWorker {
        context,
        pass: &pass,
        reader: &reader,
        buffers,
        zero_fill,
        per_chunk,
    };
    let chunks_of = |block: u64| -> u64 {
        pass.block_tiles(block)
            .into_iter()
            .map(|tile| tile_chunks(context, &pass, tile))
            .sum()
    };
    let blocks = context.blocks_to_run(pass.first, pass.block_count());
    if context.part.is_some() {
        context.progress.start(blocks.clone().map(chunks_of).sum());
    }
    let work = BlockWork {
        journal_key: pass.first,
        blocks,
        tiles_of: &|block| pass.block_tiles(block),
        chunks_of: &chunks_of,
        run_tile: &|tile| worker.start(tile),
        compute_threads: compute_threads(context),
        batch_bytes: context.backend.staged_batch_bytes(),
    };
    let result = run_blocks(context, &work, at_once, 2 * at_once);
    context
        .counters
        .decoded
        .fetch_add(reader.stats.decoded.load(Ordering::Relaxed), Ordering::Relaxed);
    context
        .counters
        .redecoded
        .fetch_add(reader.stats.redecoded.load(Ordering::Relaxed), Ordering::Relaxed);
    result
}

/// How many tiles of the pass read each source chunk, and how many of those read all of
/// it (its voxels inside the array; the others read a band of it for their halo): from
/// the read spans of the tile columns (a closed form), or, when resuming or running one
/// part of the pass, by counting over the tiles of the blocks still to run where there are
/// few enough of them to count.
fn read_counters(context: &BuildContext<'_>, pass: &Arc<Pass>, level: &dyn ChunkSource) -> (ReadCounter, ReadCounter) {
    const COUNTED_TILES: u64 = 1 << 20;
    let blocks = context.blocks_to_run(pass.first, pass.block_count());
    let some_blocks = blocks.end - blocks.start < pass.block_count();
    if (some_blocks || context.journal.done_in_pass(pass.first) > 0) && pass.tile_count() <= COUNTED_TILES {
        let mut counts: HashMap<Vec<u64>, (u64, u64)> = HashMap::new();
        for block in blocks.filter(|&b| !context.journal.is_done(pass.first, b)) {
            for tile in pass.block_tiles(block) {
                let region = pass.tile_spans(tile).region(pass, pass.first, false);
                for idx in level.chunks_in(&region) {
                    let chunk_region = level.chunk_region(&idx);
                    let whole = u64::from(store::reads_whole_chunk(&region, &chunk_region, level.shape()));
                    let count = counts.entry(chunk_region.start).or_default();
                    *count = (count.0 + 1, count.1 + whole);
                }
            }
        }
        let counts = Arc::new(counts);
        let wholes = counts.clone();
        return (
            Arc::new(move |region: &Region| counts.get(&region.start).map_or(1, |c| c.0)),
            Arc::new(move |region: &Region| wholes.get(&region.start).map_or(1, |c| c.1)),
        );
    }
    let all = pass.clone();
    let whole = pass.clone();
    (
        Arc::new(move |region: &Region| {
            (0..region.ndim())
                .map(|a| {
                    let columns = all.columns_reading(a, region.start[a], region.end(a));
                    columns.end - columns.start
                })
                .product()
        }),
        Arc::new(move |chunk: &Region| store::whole_reads(chunk, &whole.chunk_read_spans(chunk), &whole.shapes[0])),
    )
}

/// Output chunks a tile writes (for progress).
pub(super) fn tile_chunks(context: &BuildContext<'_>, pass: &Pass, tile: u64) -> u64 {
    let spans = pass.tile_spans(tile);
    let first_written = if pass.writes_first { pass.first } else { pass.first + 1 };
    (first_written..=pass.last)
        .map(|level| {
            context.levels[level]
                .chunks()
                .chunks_in(&spans.region(pass, level, true))
                .len() as u64
        })
        .sum()
}
