//! The work of one tile: read its source region through the tile reader, compute its
//! levels on the backend, and write what it owns at each level: chunks of unsharded levels
//! stored at once, chunks of sharded levels encoded for their shards (which the block
//! runner appends). A tile whose source holds no stored chunk, with a zero fill value,
//! writes nothing and is not computed. An array held in memory is not read into a tile:
//! the CPU computes from it in place and level 0 is encoded from it, and a GPU's staging
//! memory is filled from it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::BuildError;
use super::blocks::{ShardPiece, TileOutput};
use super::pass::{BuildContext, Pass, TileSpans};
use super::prepare::Level0;
use super::stages::{Started, WriteJob};
use crate::backend::{BackendKind, ComputedLevels, Step};
use crate::journal::StoredChunk;
use crate::store::{LevelSink, Source, StoreElement, StoreError, TileReader};
use crate::tile::{Region, Tile, TileRef, copy_overlap, extract_within};

/// What a tile whose compute may be batched leaves ([`Started::Batched`]): on a GPU, a
/// staged tile's compute.
#[cfg(feature = "gpu")]
pub(super) type TileBatch<'a> = super::staged::StagedCompute<'a>;
/// What a tile whose compute may be batched leaves: none without a GPU.
#[cfg(not(feature = "gpu"))]
pub(super) type TileBatch<'a> = super::stages::NoBatch;

/// What writing one chunk gave.
enum Written {
    /// A file of an unsharded level (`None`: fill value only, not stored).
    Stored(Option<StoredChunk>),
    /// A chunk for a shard.
    Piece(ShardPiece),
}

impl TileOutput {
    fn add(&mut self, written: Written) {
        match written {
            Written::Stored(stored) => self.stored.extend(stored),
            Written::Piece(piece) => self.pieces.push(piece),
        }
    }
}

fn fill_of<T: StoreElement>(source: &dyn Source) -> T {
    bytemuck::pod_read_unaligned(source.fill_bytes())
}

/// Writes chunk `chunk` of `level` from `tile` (its data and the region it holds), or
/// copies it as the source stores it when there is no tile.
fn write_chunk<T: StoreElement>(
    context: &BuildContext<'_>,
    level: usize,
    chunk: &[u64],
    tile: Option<(&[T], &Region)>,
) -> Result<Written, BuildError> {
    let sink: &dyn LevelSink = context.levels[level].as_ref();
    let stored = |bytes: Option<u64>| {
        Written::Stored(bytes.map(|bytes| StoredChunk {
            level,
            index: sink.units().flat_index(chunk),
            bytes,
        }))
    };
    let piece = |encoded: Option<Vec<u8>>| {
        Written::Piece(ShardPiece {
            level,
            chunk: chunk.to_vec(),
            encoded,
        })
    };
    let Some((data, region)) = tile else {
        context.counters.raw_copied.fetch_add(1, Ordering::Relaxed);
        return Ok(if sink.is_sharded() {
            piece(context.source.stored_chunk(chunk)?)
        } else {
            stored(sink.copy_stored_chunk(context.source.as_ref(), chunk)?)
        });
    };
    let chunk_region = sink.chunks().region(chunk);
    let buffer = if region.contains(&chunk_region) {
        extract_within(data, region, &chunk_region)
    } else {
        // A chunk over the level's edge: the part past it holds the fill value.
        let mut buffer = vec![fill_of::<T>(context.source.as_ref()); chunk_region.len()];
        copy_overlap(data, region, &mut buffer, &chunk_region);
        buffer
    };
    let bytes: &[u8] = bytemuck::cast_slice(&buffer);
    Ok(if sink.is_sharded() {
        piece(sink.encode_chunk(chunk, bytes)?)
    } else {
        stored(sink.write_chunk(chunk, bytes)?)
    })
}

/// Copies whole the level-0 shards whose first chunk lies in `owned` (a chunk-aligned
/// region), so each shard is copied by exactly one tile.
fn copy_shards_starting_in(
    context: &BuildContext<'_>,
    owned: &Region,
    output: &mut TileOutput,
) -> Result<(), BuildError> {
    let sink = context.levels[0].as_ref();
    let units = sink.units();
    for unit in units.chunks_in(owned) {
        let first = units.region(&unit).start;
        if !(0..first.len()).all(|a| first[a] >= owned.start[a] && first[a] < owned.end(a)) {
            continue;
        }
        context.counters.raw_copied.fetch_add(1, Ordering::Relaxed);
        if let Some(bytes) = sink.copy_stored_chunk(context.source.as_ref(), &unit)? {
            output.stored.push(StoredChunk {
                level: 0,
                index: units.flat_index(&unit),
                bytes,
            });
        }
    }
    Ok(())
}

/// Runs the tiles of one pass.
pub(super) struct TileWorker<'a, 'c, T> {
    pub(super) context: &'a BuildContext<'c>,
    pub(super) pass: &'a Pass,
    pub(super) reader: &'a TileReader<'a, T>,
    pub(super) buffers: &'a BufferPool<T>,
    /// True when the fill value's bytes are all zero: every method maps an all-zero region
    /// to zeros, which are not stored, so a tile whose source holds no stored chunk writes
    /// nothing and need not be computed.
    pub(super) zero_fill: bool,
    /// True when the first step is computed from each source chunk in place
    /// ([`Pass::first_step_per_chunk`]), without assembling the source tile.
    pub(super) per_chunk: bool,
}

impl<T: StoreElement> TileWorker<'_, '_, T> {
    /// Starts tile `tile`: reads it (and copies level 0 as stored where it is copied), and
    /// returns what is left: its compute and then its writes, or its writes alone when its
    /// first step was computed chunk by chunk as it was read, or nothing when its source
    /// holds no stored chunk.
    pub(super) fn start(&self, tile: u64) -> Result<Started<'_, TileOutput, TileBatch<'_>>, BuildError> {
        let (context, pass) = (self.context, self.pass);
        let spans = pass.tile_spans(tile);
        let written = if pass.writes_first {
            pass.first..=pass.last
        } else {
            pass.first + 1..=pass.last
        };
        let read_region = spans.region(pass, pass.first, false);
        if self.zero_fill && self.reader.nothing_stored_in(&read_region)? {
            self.reader.skip(&read_region);
            // Every chunk the tile owns is fill value; a shard still counts it as given.
            let mut output = TileOutput::default();
            for level in written {
                let sink = context.levels[level].as_ref();
                let chunks = sink.chunks().chunks_in(&spans.region(pass, level, true));
                output.chunks += chunks.len() as u64;
                if sink.is_sharded() {
                    output.pieces.extend(chunks.into_iter().map(|chunk| ShardPiece {
                        level,
                        chunk,
                        encoded: None,
                    }));
                }
            }
            return Ok(Started::Done(output));
        }
        let chain: Vec<(Step, Region)> = (pass.first..pass.last)
            .map(|level| (context.step(level), spans.region(pass, level + 1, false)))
            .collect();
        // Level 0 copied as stored needs nothing computed. (Copying it on one thread while
        // the others decode and compute, with `rayon::join`, measured no faster: the copy
        // is work for the same cores.)
        let output = if pass.writes_first && context.level0.is_copied() {
            self.copy_level0(&spans.region(pass, pass.first, true))?
        } else {
            TileOutput::default()
        };
        let started = Instant::now();
        if self.per_chunk {
            let outputs = ComputedLevels::Tiles(self.compute_per_chunk(&read_region, &chain, started)?);
            return Ok(Started::Write(Box::new(move || {
                self.write(&spans, output, None, &outputs)
            })));
        }
        #[cfg(feature = "gpu")]
        if let Some(staged) = self.stage(&read_region, &chain) {
            return self.start_staged(staged, &read_region, chain, spans, output, started);
        }
        if context.backend.kind() == BackendKind::Cpu
            && self
                .reader
                .resident()
                .is_some_and(|(_, array)| array.contains(&read_region))
        {
            return Ok(self.start_in_place(chain, spans, output));
        }
        let data = self.reader.read_into(&read_region, self.buffers.take())?;
        let source_tile = Tile::new(read_region, T::wrap(data));
        add_ns(&context.counters.read_ns, started.elapsed());
        Ok(Started::Compute(Box::new(move || {
            let computing = Instant::now();
            let outputs = ComputedLevels::Tiles(context.backend.downsample_chain(&source_tile, &chain)?);
            add_ns(&context.counters.compute_ns, computing.elapsed());
            let write: WriteJob<'_, TileOutput> =
                Box::new(move || self.write(&spans, output, Some(source_tile), &outputs));
            Ok(write)
        })))
    }

    /// A staged source tile for `chain` from the backend, where it computes the chain whole.
    #[cfg(feature = "gpu")]
    fn stage(&self, read_region: &Region, chain: &[(Step, Region)]) -> Option<crate::backend::gpu::StagedTile> {
        self.context.backend.stage_source(T::DTYPE, read_region, chain)
    }

    /// True if this pass writes level `first` encoded from its data (not copied as stored).
    fn encodes_first(&self) -> bool {
        self.pass.writes_first && self.context.level0 == Level0::Encoded
    }

    /// For a source held in memory ([`TileReader::resident`]), on the CPU: returns the
    /// tile's compute, which computes `chain`'s first step straight from the array, and
    /// then its writes, which encode level `first` (where it is encoded) from there too. No
    /// source tile is read.
    fn start_in_place(
        &self,
        chain: Vec<(Step, Region)>,
        spans: TileSpans,
        output: TileOutput,
    ) -> Started<'_, TileOutput, TileBatch<'_>> {
        let context = self.context;
        Started::Compute(Box::new(move || {
            let computing = Instant::now();
            let (array_data, array) = self.reader.resident().expect("a source held in memory");
            let (step, first_region) = &chain[0];
            let first = context
                .backend
                .downsample_ref(step, TileRef::new(&array, array_data), first_region)?;
            let rest = context.backend.downsample_chain(&first, &chain[1..])?;
            let outputs = ComputedLevels::Tiles(std::iter::once(first).chain(rest).collect());
            add_ns(&context.counters.compute_ns, computing.elapsed());
            let write: WriteJob<'_, TileOutput> =
                Box::new(move || self.write_levels_of(&spans, output, Some((array_data, &array)), &outputs));
            Ok(write)
        }))
    }

    /// Reads the tile straight into `staged` and returns its compute, which computes
    /// `chain` from there (in a batch with other staged tiles), and then its writes. Where
    /// level `first` is encoded from the decoded tile and no array in memory holds it, the
    /// tile is read into a host buffer too, each chunk's rows copied to both at once, and
    /// level `first` is written from there.
    #[cfg(feature = "gpu")]
    fn start_staged(
        &self,
        mut staged: crate::backend::gpu::StagedTile,
        read_region: &Region,
        chain: Vec<(Step, Region)>,
        spans: TileSpans,
        output: TileOutput,
        started: Instant,
    ) -> Result<Started<'_, TileOutput, TileBatch<'_>>, BuildError> {
        let context = self.context;
        let host_tile = if self.encodes_first() && self.reader.resident().is_none() {
            let buffer = self.buffers.take();
            let data = staged.write_with::<T, _>(|rows| self.reader.read_into_both(read_region, buffer, rows))??;
            Some(Tile::new(read_region.clone(), T::wrap(data)))
        } else {
            staged.write_with::<T, _>(|rows| self.reader.read_rows(read_region, rows))??;
            None
        };
        context.counters.staged.fetch_add(1, Ordering::Relaxed);
        add_ns(&context.counters.read_ns, started.elapsed());
        Ok(Started::Batched(super::staged::StagedCompute {
            backend: context.backend,
            counters: &context.counters,
            staged,
            regions: chain.into_iter().map(|(_, region)| region).collect(),
            then: Box::new(move |outputs| -> WriteJob<'_, TileOutput> {
                Box::new(move || {
                    if let Some(tile) = host_tile {
                        return self.write(&spans, output, Some(tile), &outputs);
                    }
                    let level0 = self.reader.resident().filter(|_| self.encodes_first());
                    let level0 = level0.as_ref().map(|(data, array)| (*data, array));
                    self.write_levels_of(&spans, output, level0, &outputs)
                })
            }),
        }))
    }

    /// Writes what the tile of `spans` owns of each level it writes: level `first` from
    /// `source_tile` where it is encoded from decoded data, the others from `outputs` (one
    /// per level above `first`); adds them to `output`, and gives the source tile's buffer
    /// back to the pool.
    fn write(
        &self,
        spans: &TileSpans,
        output: TileOutput,
        source_tile: Option<Tile>,
        outputs: &ComputedLevels,
    ) -> Result<TileOutput, BuildError> {
        let level0 = source_tile.as_ref().map(|tile| {
            (
                T::view(&tile.data).expect("the source tile holds the source dtype"),
                &tile.region,
            )
        });
        let written = self.write_levels_of(spans, output, level0, outputs);
        if let Some(data) = source_tile.and_then(|tile| T::unwrap(tile.data)) {
            self.buffers.give(data);
        }
        written
    }

    /// Writes what the tile of `spans` owns of each level it writes: level `first` from
    /// `level0` (data holding a region) where it is encoded from decoded data, the others
    /// from `outputs` (one per level above `first`); adds them to `output`.
    fn write_levels_of(
        &self,
        spans: &TileSpans,
        mut output: TileOutput,
        level0: Option<(&[T], &Region)>,
        outputs: &ComputedLevels,
    ) -> Result<TileOutput, BuildError> {
        let (context, pass) = (self.context, self.pass);
        let started = Instant::now();
        // Every level's chunks are encoded together, so a level of few chunks (the top
        // ones) does not leave threads idle waiting for the next.
        let mut levels: Vec<(usize, (&[T], &Region))> = Vec::with_capacity(outputs.len() + 1);
        if self.encodes_first() {
            levels.push((
                pass.first,
                level0.expect("level 0 written from decoded data has its data"),
            ));
        }
        levels.extend((0..outputs.len()).map(|offset| (pass.first + 1 + offset, outputs.level::<T>(offset))));
        let levels: Vec<LevelTile<'_, T>> = levels
            .into_iter()
            .map(|(level, data)| LevelTile {
                level,
                owned: spans.region(pass, level, true),
                data: Some(data),
            })
            .collect();
        self.write_levels(&levels, &mut output)?;
        add_ns(&context.counters.write_ns, started.elapsed());
        Ok(output)
    }

    /// Copies level 0 under `owned` as the source stores it (whole shards, or chunks).
    fn copy_level0(&self, owned: &Region) -> Result<TileOutput, BuildError> {
        let context = self.context;
        let started = Instant::now();
        let mut output = TileOutput::default();
        if context.level0 == Level0::CopiedShards {
            output.chunks += context.levels[0].chunks().chunks_in(owned).len() as u64;
            copy_shards_starting_in(context, owned, &mut output)?;
        } else {
            let level0 = LevelTile {
                level: 0,
                owned: owned.clone(),
                data: None,
            };
            self.write_levels(&[level0], &mut output)?;
        }
        add_ns(&context.counters.write_ns, started.elapsed());
        Ok(output)
    }

    /// The levels of `chain`, the first computed from each source chunk under `read_region`
    /// as it is decoded (each chunk holds whole windows, so no tile is assembled), the
    /// others from the first as usual. Decoding with the first step counts as reading.
    fn compute_per_chunk(
        &self,
        read_region: &Region,
        chain: &[(Step, Region)],
        started: Instant,
    ) -> Result<Vec<Tile>, BuildError> {
        let context = self.context;
        let (step, computed) = &chain[0];
        let pieces = self.reader.map_chunks(read_region, |data, data_region, part| {
            let Some(out) = windows_within(step, part).intersect(computed) else {
                return Ok(None);
            };
            let piece = context
                .backend
                .downsample_ref(step, TileRef::new(data_region, data), &out)?;
            Ok::<_, BuildError>(Some(piece))
        })?;
        let pieces: Vec<Tile> = pieces.into_iter().flatten().collect();
        let first = Tile::new(computed.clone(), T::wrap(gather::<T>(&pieces, computed)));
        let read_done = Instant::now();
        add_ns(&context.counters.read_ns, read_done - started);
        let rest = if chain.len() > 1 {
            context.backend.downsample_chain(&first, &chain[1..])?
        } else {
            Vec::new()
        };
        add_ns(&context.counters.compute_ns, read_done.elapsed());
        Ok(std::iter::once(first).chain(rest).collect())
    }

    /// Writes the chunks each of `levels` owns, all on the pool's threads at once, into
    /// `output`.
    fn write_levels(&self, levels: &[LevelTile<'_, T>], output: &mut TileOutput) -> Result<(), BuildError> {
        use rayon::prelude::*;
        let context = self.context;
        let chunks: Vec<(&LevelTile<'_, T>, Vec<u64>)> = levels
            .iter()
            .flat_map(|level| {
                let chunks = context.levels[level.level].chunks().chunks_in(&level.owned);
                chunks.into_iter().map(move |chunk| (level, chunk))
            })
            .collect();
        output.chunks += chunks.len() as u64;
        let written = chunks
            .par_iter()
            .map(|(level, chunk)| {
                if context.cancelled() {
                    return Err(StoreError::Cancelled.into());
                }
                write_chunk::<T>(context, level.level, chunk, level.data)
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        for w in written {
            output.add(w);
        }
        Ok(())
    }
}

/// A level a tile writes: the region it owns there, and its data (data and the region it
/// holds), or `None` for level 0's stored bytes.
struct LevelTile<'a, T> {
    level: usize,
    owned: Region,
    data: Option<(&'a [T], &'a Region)>,
}

/// A C-order buffer of `region` holding the tiles of `pieces` where they overlap it (zeros
/// elsewhere), filled on every thread: each takes a slab of the first axis and copies what
/// each piece holds of it.
fn gather<T: StoreElement>(pieces: &[Tile], region: &Region) -> Vec<T> {
    use rayon::prelude::*;
    let mut buffer: Vec<T> = bytemuck::zeroed_vec(region.len());
    if buffer.is_empty() {
        return buffer;
    }
    let plane = buffer.len() / usize::try_from(region.shape[0]).expect("tile axis fits usize");
    // Slabs of at least 1 MiB, so each task copies whole rows and is worth scheduling.
    let planes_per_slab = ((1 << 20) / (plane * size_of::<T>()).max(1)).max(1);
    buffer
        .par_chunks_mut(plane * planes_per_slab)
        .enumerate()
        .for_each(|(i, slab)| {
            let mut slab_region = region.clone();
            slab_region.start[0] += (i * planes_per_slab) as u64;
            slab_region.shape[0] = (slab.len() / plane) as u64;
            for piece in pieces {
                let data = T::view(&piece.data).expect("backend returns the source dtype");
                copy_overlap(data, &piece.region, slab, &slab_region);
            }
        });
    buffer
}

/// The outputs of `step` whose source lies in `part`: on each axis those whose first voxel
/// (window start, or the voxel nearest picks) is inside it, `[⌈start/f⌉, ⌈end/f⌉)`.
fn windows_within(step: &Step, part: &Region) -> Region {
    let (start, end): (Vec<u64>, Vec<u64>) = (0..part.ndim())
        .map(|a| {
            let f = u64::from(step.factors[a]);
            (part.start[a].div_ceil(f), part.end(a).div_ceil(f))
        })
        .unzip();
    Region::from_bounds(&start, &end)
}

/// Copies the chunks of level 0 of a one-level "pyramid".
pub(super) struct ChunkCopier<'a, 'c, T> {
    pub(super) context: &'a BuildContext<'c>,
    pub(super) reader: &'a TileReader<'a, T>,
}

impl<T: StoreElement> ChunkCopier<'_, '_, T> {
    /// Copies chunk `chunk` of level 0: as stored, or read and written again.
    pub(super) fn copy(&self, chunk: &[u64]) -> Result<TileOutput, BuildError> {
        let context = self.context;
        let started = Instant::now();
        if context.level0 == Level0::CopiedShards {
            let mut output = TileOutput {
                chunks: 1,
                ..TileOutput::default()
            };
            copy_shards_starting_in(context, &context.levels[0].chunks().region(chunk), &mut output)?;
            add_ns(&context.counters.write_ns, started.elapsed());
            return Ok(output);
        }
        let written = if context.level0.is_copied() {
            let written = write_chunk::<T>(context, 0, chunk, None)?;
            add_ns(&context.counters.write_ns, started.elapsed());
            written
        } else {
            let shape = &context.plan.levels[0].shape;
            let inside = context.levels[0]
                .chunks()
                .region(chunk)
                .intersect(&Region::whole(shape))
                .expect("chunk inside the level");
            let data = self.reader.read(&inside)?;
            let read = Instant::now();
            add_ns(&context.counters.read_ns, read - started);
            let written = write_chunk::<T>(context, 0, chunk, Some((&data, &inside)))?;
            add_ns(&context.counters.write_ns, read.elapsed());
            written
        };
        let mut output = TileOutput {
            chunks: 1,
            ..TileOutput::default()
        };
        output.add(written);
        Ok(output)
    }
}

/// Source-tile buffers handed from one tile to the next (and from one pass to the next), so
/// large tiles reuse memory that is already mapped instead of faulting in fresh pages
/// every time.
pub(super) struct BufferPool<T> {
    free: Mutex<Vec<Vec<T>>>,
}

impl<T> BufferPool<T> {
    pub(super) fn new() -> Self {
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

    /// Keeps the `count` largest buffers (none when `elements` is 0), shrunk in place to
    /// hold at most `elements` each, and frees the others. A shrunk buffer keeps the pages
    /// it has: the allocator shortens the mapping (or the heap chunk) without a copy.
    pub(super) fn keep_within(&self, count: usize, elements: usize) {
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        free.sort_unstable_by_key(|b| std::cmp::Reverse(b.capacity()));
        free.truncate(if elements == 0 { 0 } else { count });
        for buffer in free.iter_mut() {
            buffer.truncate(elements);
            buffer.shrink_to(elements);
        }
    }
}

pub(super) fn add_ns(counter: &AtomicU64, elapsed: Duration) {
    counter.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn a_pool_trimmed_for_a_pass_keeps_its_largest_buffers_within_the_tile() {
        let capacities = [10, 40, 30, 20];
        let pool = BufferPool::<u16>::new();
        for capacity in capacities {
            pool.give(vec![7; capacity]);
        }
        // Two workers, tiles of up to 35 elements: the two largest, the 40 shrunk to 35.
        pool.keep_within(2, 35);
        let mut kept = [pool.take(), pool.take()];
        kept.sort_unstable_by_key(Vec::capacity);
        assert!(
            kept[0].capacity() >= 30 && kept[0].capacity() < 35,
            "{}",
            kept[0].capacity()
        );
        assert!(
            kept[1].capacity() >= 35 && kept[1].capacity() < 40,
            "{}",
            kept[1].capacity()
        );
        assert!(kept.iter().all(|b| b.len() <= 35), "no more elements than a tile");
        // Empty now: a fresh buffer.
        assert_eq!(pool.take().capacity(), 0);
        // A pass computed chunk by chunk keeps none.
        for capacity in capacities {
            pool.give(vec![7; capacity]);
        }
        pool.keep_within(2, 0);
        assert_eq!(pool.take().capacity(), 0);
    }
}
