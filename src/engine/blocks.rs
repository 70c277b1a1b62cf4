//! Running a pass's work: blocks of tiles, each block the only writer of its files.
//!
//! A *tile* is the unit of memory: what one worker reads, computes and encodes at a time.
//! A *block* is the unit of ownership: a run of tiles whose regions together cover whole
//! write units (shards, or chunks when there are no shards) at every level the pass
//! writes, so no file is ever written by two blocks. A block is journaled when all its
//! files are in place, and redone whole when a build resumes.
//!
//! Tiles are handed out block by block, in order, to all workers. Chunks of unsharded
//! levels are stored by the worker that computed them. Chunks of sharded levels go to
//! their block's sequencer, which appends them to the shards in tile order, so a shard's
//! bytes never depend on which worker finished first; a shard is finished (index written,
//! renamed into place) as soon as it holds all its chunks. A worker may run ahead of the
//! oldest tile not yet appended by at most a window of tiles, which bounds what waits.
//! How a tile's read, compute and writes share the threads is [`super::stages`]' concern.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::BuildError;
use super::output::output_changed;
use super::pass::BuildContext;
use super::stages::{self, Next, Shape, Started, TileFlow};
use super::tile::TileBatch;
use crate::journal::StoredChunk;
use crate::store::StoreError;
use crate::store::shard::ShardWriter;

/// One chunk of a sharded level, encoded (or `None`: fill value only, not stored).
pub(super) struct ShardPiece {
    /// The level.
    pub(super) level: usize,
    /// The chunk's indices in the level's chunk grid.
    pub(super) chunk: Vec<u64>,
    /// Its encoded bytes.
    pub(super) encoded: Option<Vec<u8>>,
}

/// What a tile produced.
#[derive(Default)]
pub(super) struct TileOutput {
    /// Files of unsharded levels already stored.
    pub(super) stored: Vec<StoredChunk>,
    /// Chunks of sharded levels, for the block's shards.
    pub(super) pieces: Vec<ShardPiece>,
    /// Output chunks the tile accounts for (progress).
    pub(super) chunks: u64,
}

/// The work of one pass (or of a one-level copy).
pub(super) struct BlockWork<'a> {
    /// The key of the pass in the journal (its first level).
    pub(super) journal_key: usize,
    /// The blocks to run (all of the pass's, or a part's range of them).
    pub(super) blocks: std::ops::Range<u64>,
    /// The tiles of a block, in the order their chunks are appended.
    pub(super) tiles_of: &'a (dyn Fn(u64) -> Vec<u64> + Sync),
    /// Output chunks of a block (progress, for blocks an earlier run finished).
    pub(super) chunks_of: &'a (dyn Fn(u64) -> u64 + Sync),
    /// Starts one tile: reads it, and says what is left of it.
    pub(super) run_tile: &'a (dyn Fn(u64) -> Result<Started<'a, TileOutput, TileBatch<'a>>, BuildError> + Sync),
    /// Threads of the backend's own that compute the tiles, or 0 when the workers do
    /// ([`crate::backend::Downsampler::compute_threads`]).
    pub(super) compute_threads: usize,
    /// Bytes of staged tiles a compute thread takes at once at most (0: one tile).
    pub(super) batch_bytes: u64,
}

/// A shard of the output: its level and its indices in the level's shard grid.
type ShardKey = (usize, Vec<u64>);

/// A block with tiles in flight or waiting to be appended.
struct OpenBlock {
    tiles: usize,
    /// The next tile (by position in the block) to append.
    next: usize,
    /// Outputs of later tiles, by position, with their sequence numbers.
    waiting: BTreeMap<usize, (u64, TileOutput)>,
    /// Shards being written, by level and shard indices.
    shards: BTreeMap<ShardKey, ShardWriter>,
    /// Complete shards being flushed and renamed by a worker, outside the block's lock.
    finishing: usize,
    stored: Vec<StoredChunk>,
    /// Set once the block is journaled.
    journaled: bool,
}

/// Where handing out tiles has got to.
struct Cursor {
    block: u64,
    tiles: Vec<u64>,
    position: usize,
    started: bool,
    /// The next sequence number: tiles in the order they are handed out.
    sequence: u64,
    /// Tiles handed out but not yet appended.
    unappended: BTreeSet<u64>,
}

/// A tile handed to a worker.
struct Claim {
    block: u64,
    position: usize,
    tile: u64,
    sequence: u64,
}

struct Runner<'r, 'w, 'c> {
    context: &'r BuildContext<'c>,
    work: &'r BlockWork<'w>,
    window: u64,
    cursor: Mutex<Cursor>,
    open: Mutex<HashMap<u64, Arc<Mutex<OpenBlock>>>>,
    finished_blocks: AtomicU64,
}

/// Runs `work` with at most `in_flight` tiles between claim and delivery, on as many
/// workers (fewer where the build has fewer threads) and the work's compute threads; a
/// tile is claimed fewer than `window` tiles after the oldest tile not yet appended.
pub(super) fn run_blocks(
    context: &BuildContext<'_>,
    work: &BlockWork<'_>,
    in_flight: usize,
    window: usize,
) -> Result<(), BuildError> {
    let runner = Runner {
        context,
        work,
        window: window.max(1) as u64,
        cursor: Mutex::new(Cursor {
            block: work.blocks.start,
            tiles: Vec::new(),
            position: 0,
            started: false,
            sequence: 0,
            unappended: BTreeSet::new(),
        }),
        open: Mutex::new(HashMap::new()),
        finished_blocks: AtomicU64::new(0),
    };
    let shape = Shape {
        workers: in_flight.min(context.threads).max(1),
        compute_threads: work.compute_threads,
        in_flight,
        batch_bytes: work.batch_bytes,
    };
    tracing::debug!(
        "{} workers, {} compute threads of the backend's, {} tiles in flight at most",
        shape.workers,
        shape.compute_threads,
        shape.in_flight
    );
    match stages::run(&runner, shape) {
        Err(e) if e.is_cancellation() => Err(BuildError::Interrupted {
            tasks_done: runner.finished_blocks.load(Ordering::Relaxed),
            tasks: work.blocks.end - work.blocks.start,
        }),
        Err(e) => Err(output_changed(context.sink.path(), e)),
        Ok(()) => Ok(()),
    }
}

impl<'w> TileFlow<'w> for Runner<'_, 'w, '_> {
    type Claim = Claim;
    type Output = TileOutput;
    type Batch = TileBatch<'w>;

    /// The next tile to run: `Wait` while the window is full.
    fn next(&self) -> Result<Next<Claim>, BuildError> {
        let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.context.cancelled() {
                return Err(StoreError::Cancelled.into());
            }
            if !cursor.started || cursor.position >= cursor.tiles.len() {
                if cursor.started {
                    cursor.block += 1;
                }
                cursor.started = true;
                // Blocks an earlier run finished are skipped whole.
                while cursor.block < self.work.blocks.end
                    && self.context.journal.is_done(self.work.journal_key, cursor.block)
                {
                    self.context.progress.advance((self.work.chunks_of)(cursor.block));
                    cursor.block += 1;
                }
                if cursor.block >= self.work.blocks.end {
                    return Ok(Next::End);
                }
                cursor.tiles = (self.work.tiles_of)(cursor.block);
                cursor.position = 0;
                self.open.lock().unwrap_or_else(PoisonError::into_inner).insert(
                    cursor.block,
                    Arc::new(Mutex::new(OpenBlock {
                        tiles: cursor.tiles.len(),
                        next: 0,
                        waiting: BTreeMap::new(),
                        shards: BTreeMap::new(),
                        finishing: 0,
                        stored: Vec::new(),
                        journaled: false,
                    })),
                );
                if cursor.tiles.is_empty() {
                    continue;
                }
            }
            if let Some(&oldest) = cursor.unappended.first()
                && cursor.sequence - oldest >= self.window
            {
                return Ok(Next::Wait);
            }
            let claim = Claim {
                block: cursor.block,
                position: cursor.position,
                tile: cursor.tiles[cursor.position],
                sequence: cursor.sequence,
            };
            cursor.position += 1;
            cursor.sequence += 1;
            cursor.unappended.insert(claim.sequence);
            return Ok(Next::Tile(claim));
        }
    }

    fn start(&self, claim: &Claim) -> Result<Started<'w, TileOutput, TileBatch<'w>>, BuildError> {
        if self.context.cancelled() {
            return Err(StoreError::Cancelled.into());
        }
        if let Some(delay) = self.context.task_delay {
            std::thread::sleep(delay);
        }
        (self.work.run_tile)(claim.tile)
    }

    /// Hands a tile's output to its block: appended in tile order; the block is journaled
    /// once whole.
    fn deliver(&self, claim: Claim, output: TileOutput) -> Result<(), BuildError> {
        self.context.progress.advance(output.chunks);
        let block = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&claim.block)
            .cloned()
            .expect("a claimed tile's block is open");
        let mut appended = Vec::new();
        // Shards this delivery completed: flushed and renamed once the block is unlocked,
        // so other workers keep appending meanwhile. The block is journaled by whichever
        // delivery finds it whole: every tile appended and no shard open or being finished.
        let mut complete = Vec::new();
        {
            let mut block = block.lock().unwrap_or_else(PoisonError::into_inner);
            block.waiting.insert(claim.position, (claim.sequence, output));
            while let Some((sequence, output)) = {
                let next = block.next;
                block.waiting.remove(&next)
            } {
                complete.extend(self.append(&mut block, output)?);
                block.next += 1;
                appended.push(sequence);
            }
            if block.next == block.tiles {
                // Shards left open hold their last chunks now.
                complete.extend(std::mem::take(&mut block.shards));
            }
            block.finishing += complete.len();
        }
        let finished = complete.len();
        let mut stored = Vec::new();
        for ((level, unit), writer) in complete {
            self.finish_shard(&mut stored, level, &unit, writer)?;
        }
        let whole = {
            let mut block = block.lock().unwrap_or_else(PoisonError::into_inner);
            block.finishing -= finished;
            block.stored.extend(stored);
            (block.next == block.tiles && block.finishing == 0 && block.shards.is_empty() && !block.journaled).then(
                || {
                    block.journaled = true;
                    std::mem::take(&mut block.stored)
                },
            )
        };
        if let Some(stored) = whole {
            self.context.counters.count_stored(&stored);
            self.context
                .journal
                .task_done(self.work.journal_key, claim.block, &stored)?;
            self.open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&claim.block);
            self.finished_blocks.fetch_add(1, Ordering::Relaxed);
        }
        let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        for sequence in appended {
            cursor.unappended.remove(&sequence);
        }
        Ok(())
    }
}

impl Runner<'_, '_, '_> {
    /// Appends a tile's output to its block: stored files counted, shard chunks written.
    /// Returns the shards that now hold all their chunks, taken out of the block.
    fn append(&self, block: &mut OpenBlock, output: TileOutput) -> Result<Vec<(ShardKey, ShardWriter)>, BuildError> {
        let mut complete = Vec::new();
        block.stored.extend(output.stored);
        for piece in output.pieces {
            let level = self.context.levels[piece.level].as_ref();
            let (unit, local) = level.unit_of(&piece.chunk);
            let key = (piece.level, unit);
            if !block.shards.contains_key(&key) {
                let writer = level.open_shard(&key.1)?;
                block.shards.insert(key.clone(), writer);
            }
            let writer = block.shards.get_mut(&key).expect("inserted above");
            writer
                .put(&local, piece.encoded.as_deref())
                .map_err(|e| write_error(level, &key.1, e))?;
            if writer.is_complete() {
                let writer = block.shards.remove(&key).expect("present");
                complete.push((key, writer));
            }
        }
        Ok(complete)
    }

    fn finish_shard(
        &self,
        stored: &mut Vec<StoredChunk>,
        level: usize,
        unit: &[u64],
        writer: ShardWriter,
    ) -> Result<(), BuildError> {
        let sink = self.context.levels[level].as_ref();
        if let Some(bytes) = writer.finish().map_err(|e| write_error(sink, unit, e))? {
            stored.push(StoredChunk {
                level,
                index: sink.units().flat_index(unit),
                bytes,
            });
        }
        Ok(())
    }
}

fn write_error(level: &dyn crate::store::LevelSink, unit: &[u64], error: std::io::Error) -> BuildError {
    StoreError::WriteChunk {
        path: level.dir().to_path_buf(),
        key: level.unit_name(unit),
        source: Box::new(error),
    }
    .into()
}
