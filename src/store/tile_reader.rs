//! Reading regions of a level: [`TileReader`] reads any region of a [`ChunkSource`]
//! through a bounded cache of decoded chunks that keeps a chunk exactly until the last tile
//! that needs it has read it, so each chunk is decoded once per pass whenever the memory
//! budget allows (SPEC §5). When whole chunks do not fit, it keeps the bands of them that
//! neighbouring tiles' halos read, so a chunk is decoded at most twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use super::{ChunkSource, StoreElement, StoreError};
use crate::tile::{Region, RowTarget, RowWrite, copy_into_rows, copy_overlap, split_rows};

/// The voxels of `chunk` inside an array of `shape` on `axis`, `[lo, hi)` (edge chunks
/// extend past the array).
fn span_inside(chunk: &Region, shape: &[u64], axis: usize) -> (u64, u64) {
    (chunk.start[axis], chunk.end(axis).min(shape[axis]))
}

/// Whether a read of `read` needs all of `chunk`: every voxel of it inside an array of
/// `shape`.
#[must_use]
pub fn reads_whole_chunk(read: &Region, chunk: &Region, shape: &[u64]) -> bool {
    (0..chunk.ndim()).all(|a| {
        let (lo, hi) = span_inside(chunk, shape, a);
        read.start[a] <= lo && hi <= read.end(a)
    })
}

/// How many of the reads whose spans are `read_spans` (as for [`halo_bands`]) need all of
/// `chunk` ([`reads_whole_chunk`]): on each axis, the tile columns whose span covers the
/// chunk's voxels inside the array.
#[must_use]
pub fn whole_reads(chunk: &Region, read_spans: &[Vec<(u64, u64)>], shape: &[u64]) -> u64 {
    read_spans
        .iter()
        .enumerate()
        .map(|(a, spans)| {
            let (lo, hi) = span_inside(chunk, shape, a);
            spans.iter().filter(|&&(s, e)| s <= lo && hi <= e).count() as u64
        })
        .product()
}

/// The bands of `chunk` that reads covering only part of it need: on each axis, each
/// distinct partial overlap of a read span (`read_spans[axis]` holds the `[start, end)` of
/// every tile column) with the chunk's voxels inside an array of `shape`, spanning the
/// chunk's whole extent on the other axes. A read that covers the chunk's voxels on every
/// axis needs the whole chunk; any other read lies inside one of these bands.
#[must_use]
pub fn halo_bands(chunk: &Region, read_spans: &[Vec<(u64, u64)>], shape: &[u64]) -> Vec<Region> {
    let mut bands = Vec::new();
    for (a, spans) in read_spans.iter().enumerate() {
        let (lo, hi) = span_inside(chunk, shape, a);
        let mut partial: Vec<(u64, u64)> = spans
            .iter()
            .map(|&(s, e)| (s.max(lo), e.min(hi)))
            .filter(|&(s, e)| s < e && (s, e) != (lo, hi))
            .collect();
        partial.sort_unstable();
        partial.dedup();
        for (s, e) in partial {
            let mut band = chunk.clone();
            band.start[a] = s;
            band.shape[a] = e - s;
            bands.push(band);
        }
    }
    bands
}

/// One chunk's share of a tile read: the chunk, its part of the tile, and that part's rows
/// of the memory the tile is read into.
struct ChunkJob<'r, R> {
    idx: &'r [u64],
    chunk_region: &'r Region,
    wanted: &'r Region,
    rows: Vec<R>,
}

/// Counters of a [`TileReader`].
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Chunks decoded.
    pub decoded: AtomicU64,
    /// Chunks decoded a second time or more because the cache could not keep them.
    pub redecoded: AtomicU64,
    /// Decoded bytes.
    pub decoded_bytes: AtomicU64,
}

/// Decoded elements: the decoder's own bytes viewed as `T` when their address is aligned
/// for it (always, in practice: large allocations are), else a typed copy.
enum Elements<T> {
    Bytes(Vec<u8>),
    Typed(Vec<T>),
}

impl<T: bytemuck::Pod> Elements<T> {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        if bytemuck::try_cast_slice::<u8, T>(&bytes).is_ok() {
            Self::Bytes(bytes)
        } else {
            Self::Typed(bytemuck::pod_collect_to_vec(&bytes))
        }
    }

    fn as_slice(&self) -> &[T] {
        match self {
            Self::Bytes(bytes) => bytemuck::cast_slice(bytes),
            Self::Typed(elements) => elements,
        }
    }
}

impl<T> Elements<T> {
    fn len(&self) -> usize {
        match self {
            Self::Bytes(bytes) => bytes.len() / size_of::<T>(),
            Self::Typed(elements) => elements.len(),
        }
    }
}

struct CacheSlot<T> {
    /// The whole decoded chunk, while the budget keeps it.
    data: Option<Arc<Elements<T>>>,
    /// Parts of the chunk kept for the reads that need only a part (a neighbour's halo),
    /// when the whole chunk does not fit the budget.
    bands: Vec<(Region, Arc<Elements<T>>)>,
    reads_left: u64,
    /// Reads left that need the whole chunk (the others need only a band of it).
    whole_left: u64,
    decoded_before: bool,
}

impl<T> CacheSlot<T> {
    fn cached_bytes(&self) -> u64 {
        let whole = self.data.as_ref().map_or(0, |d| d.len());
        let bands: usize = self.bands.iter().map(|(_, b)| b.len()).sum();
        ((whole + bands) * size_of::<T>()) as u64
    }
}

type SharedSlot<T> = Arc<Mutex<CacheSlot<T>>>;

/// A decoded chunk, or a cached band of it, and the region it covers.
type Chunk<T> = (Arc<Elements<T>>, Region);

/// How many reads of a pass will touch the chunk covering a region.
pub type ReadCounter = Arc<dyn Fn(&Region) -> u64 + Send + Sync>;

/// The bands of the chunk covering a region: sub-regions such that every read of the pass
/// that needs only part of the chunk (a neighbouring tile's halo) lies inside one of them.
pub type ChunkBands = Arc<dyn Fn(&Region) -> Vec<Region> + Send + Sync>;

/// Reads regions of one array, decoding each chunk once while the cache budget allows.
pub struct TileReader<'s, T> {
    source: Arc<dyn ChunkSource + 's>,
    /// Set to stop reading between chunks (the build was cancelled).
    cancel: Option<Arc<AtomicBool>>,
    fill: T,
    reads_of: ReadCounter,
    /// How many reads need a chunk whole; `None`: every read may.
    whole_reads_of: Option<ReadCounter>,
    bands_of: Option<ChunkBands>,
    slots: Mutex<HashMap<Vec<u64>, SharedSlot<T>>>,
    cached_bytes: AtomicU64,
    budget_bytes: u64,
    /// Whole chunks are kept only while the cache holds less than this, so that the bands
    /// of a chunk layer (kept longest) always find room.
    whole_budget_bytes: u64,
    /// Counters.
    pub stats: ReadStats,
}

impl<'s, T: StoreElement> TileReader<'s, T> {
    /// A reader of `source` (whose chunks are the read units), keeping decoded chunks
    /// while future reads need them, within `budget_bytes`. `reads_of` says how many reads
    /// will touch a chunk's region over the pass.
    #[must_use]
    pub fn new(source: Arc<dyn ChunkSource + 's>, budget_bytes: u64, reads_of: ReadCounter) -> Self {
        let fill: T = bytemuck::pod_read_unaligned(source.fill_bytes());
        Self {
            source,
            cancel: None,
            fill,
            reads_of,
            whole_reads_of: None,
            bands_of: None,
            slots: Mutex::new(HashMap::new()),
            cached_bytes: AtomicU64::new(0),
            budget_bytes,
            whole_budget_bytes: budget_bytes,
            stats: ReadStats::default(),
        }
    }

    /// The source's elements and the array's region, where it holds them in memory
    /// ([`ChunkSource::resident_bytes`]): what a region's reads copy from.
    #[must_use]
    pub fn resident(&self) -> Option<(&[T], Region)> {
        let data = bytemuck::try_cast_slice(self.source.resident_bytes()?).ok()?;
        Some((data, Region::whole(self.source.shape())))
    }

    /// [`StoreError::Cancelled`] once the build was cancelled.
    fn check_cancel(&self) -> Result<(), StoreError> {
        if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(StoreError::Cancelled);
        }
        Ok(())
    }

    fn decode(&self, indices: &[u64]) -> Result<Elements<T>, StoreError> {
        self.check_cancel()?;
        let data = Elements::from_bytes(self.source.read_chunk(indices)?);
        self.stats.decoded.fetch_add(1, Ordering::Relaxed);
        self.stats
            .decoded_bytes
            .fetch_add((data.len() * size_of::<T>()) as u64, Ordering::Relaxed);
        Ok(data)
    }

    /// Stops reads between chunks with [`StoreError::Cancelled`] once `cancel` is set.
    #[must_use]
    pub fn with_cancel(mut self, cancel: Option<Arc<AtomicBool>>) -> Self {
        self.cancel = cancel;
        self
    }

    /// Keeps, when a chunk is too large for the cache budget, the bands that `bands_of`
    /// names: the parts of the chunk that reads needing only part of it (tile halos) use.
    /// Without it such reads decode the whole chunk again.
    #[must_use]
    pub fn with_bands(mut self, bands_of: ChunkBands) -> Self {
        // A neighbour's halo may be read a whole layer of tiles (along the first axis)
        // before the chunk's own tile: room for the bands of one such layer of chunks.
        let layer_chunks: u64 = self.source.grid_shape().iter().skip(1).product();
        // The largest bands among the chunks at index 0 or 1 on each axis (edge and inner).
        let shape = self.source.grid_shape();
        let band_bytes = (0..1u64 << shape.len())
            .map(|corner| {
                let indices: Vec<u64> = (0..shape.len())
                    .map(|a| ((corner >> a) & 1).min(shape[a].saturating_sub(1)))
                    .collect();
                bands_of(&self.source.chunk_region(&indices))
                    .iter()
                    .map(|band| band.num_elements() * size_of::<T>() as u64)
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        self.whole_budget_bytes = self.budget_bytes.saturating_sub(layer_chunks * band_bytes);
        self.bands_of = Some(bands_of);
        self
    }

    /// Keeps a chunk whole only while a read that needs it whole is still to come: with
    /// `whole_reads_of` (how many of a chunk's reads cover all of its voxels), a chunk
    /// whose whole reads are made is cut down to its bands ([`TileReader::with_bands`])
    /// for the neighbours' halo reads left. Without it, a chunk is kept whole while the
    /// budget allows, so that it is decoded once, and the cache can grow to hold most of
    /// a pass's input when every chunk is some tile's halo.
    #[must_use]
    pub fn with_whole_reads(mut self, whole_reads_of: ReadCounter) -> Self {
        self.whole_reads_of = Some(whole_reads_of);
        self
    }

    /// The part of chunk `indices` (covering `chunk_region`) that `wanted` (a sub-region
    /// of it) needs, from the cache or the store: the data and the region it holds, the
    /// whole chunk or a cached band containing `wanted`.
    fn chunk(&self, indices: &[u64], chunk_region: &Region, wanted: &Region) -> Result<Chunk<T>, StoreError> {
        let slot = self.slot(indices, chunk_region);
        let guard = slot.lock().expect("slot lock");
        self.serve(guard, indices, chunk_region, wanted)
    }

    /// As [`TileReader::chunk`], but `None` instead of waiting when another thread holds
    /// the chunk (decoding it, as a rule).
    fn chunk_if_free(
        &self,
        indices: &[u64],
        chunk_region: &Region,
        wanted: &Region,
    ) -> Result<Option<Chunk<T>>, StoreError> {
        let slot = self.slot(indices, chunk_region);
        let guard = match slot.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Poisoned(_)) => panic!("slot lock poisoned"),
        };
        self.serve(guard, indices, chunk_region, wanted).map(Some)
    }

    /// What [`TileReader::chunk`] returns, with the chunk's slot locked.
    fn serve(
        &self,
        mut guard: std::sync::MutexGuard<'_, CacheSlot<T>>,
        indices: &[u64],
        chunk_region: &Region,
        wanted: &Region,
    ) -> Result<Chunk<T>, StoreError> {
        if reads_whole_chunk(wanted, chunk_region, self.source.shape()) {
            guard.whole_left = guard.whole_left.saturating_sub(1);
        }
        let band = guard.bands.iter().find(|(band, _)| band.contains(wanted)).cloned();
        let found = if let Some(data) = &guard.data {
            let data = data.clone();
            if guard.whole_left == 0 && guard.reads_left > 1 {
                // No read left needs the whole chunk: keep the bands the others read.
                guard.data = None;
                self.cached_bytes.fetch_sub(Self::bytes_of(&data), Ordering::Relaxed);
                self.keep(&mut guard, &data, chunk_region);
            }
            (data, chunk_region.clone())
        } else if let Some((band, data)) = band {
            (data, band)
        } else {
            // Decoding under the slot lock is sequential (no nested parallelism), so a reader
            // waiting for this chunk always gets it.
            let data = Arc::new(self.decode(indices)?);
            if guard.decoded_before {
                self.stats.redecoded.fetch_add(1, Ordering::Relaxed);
            }
            guard.decoded_before = true;
            if guard.reads_left > 1 {
                self.keep(&mut guard, &data, chunk_region);
            }
            (data, chunk_region.clone())
        };
        self.release_read(guard, indices);
        Ok(found)
    }

    /// The cache slot of chunk `indices`, made on first use with the number of reads the
    /// pass will make of it.
    fn slot(&self, indices: &[u64], chunk_region: &Region) -> SharedSlot<T> {
        let mut slots = self.slots.lock().expect("cache lock");
        slots
            .entry(indices.to_vec())
            .or_insert_with(|| {
                let reads_left = (self.reads_of)(chunk_region);
                Arc::new(Mutex::new(CacheSlot {
                    data: None,
                    bands: Vec::new(),
                    reads_left,
                    whole_left: self.whole_reads_of.as_ref().map_or(reads_left, |of| of(chunk_region)),
                    decoded_before: false,
                }))
            })
            .clone()
    }

    /// Counts one read of chunk `indices` as made; after the last, its data is released.
    fn release_read(&self, mut guard: std::sync::MutexGuard<'_, CacheSlot<T>>, indices: &[u64]) {
        guard.reads_left = guard.reads_left.saturating_sub(1);
        if guard.reads_left == 0 {
            self.cached_bytes.fetch_sub(guard.cached_bytes(), Ordering::Relaxed);
            guard.data = None;
            guard.bands.clear();
            drop(guard);
            self.slots.lock().expect("cache lock").remove(indices);
        }
    }

    /// True if nothing is stored under `region`, so it reads as the fill value only.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] if the store cannot be asked.
    pub fn nothing_stored_in(&self, region: &Region) -> Result<bool, StoreError> {
        self.source.nothing_stored_in(region)
    }

    /// Counts a read of `region` as made without reading it (a task that found nothing
    /// stored there), so that the cache still releases its chunks on time.
    pub fn skip(&self, region: &Region) {
        for idx in self.source.chunks_in(region) {
            let chunk_region = self.source.chunk_region(&idx);
            let slot = self.slot(&idx, &chunk_region);
            let mut guard = slot.lock().expect("slot lock");
            if reads_whole_chunk(region, &chunk_region, self.source.shape()) {
                guard.whole_left = guard.whole_left.saturating_sub(1);
            }
            self.release_read(guard, &idx);
        }
    }

    fn bytes_of(data: &Elements<T>) -> u64 {
        (data.len() * size_of::<T>()) as u64
    }

    /// Caches a decoded chunk that later reads need: whole if one of them needs it whole
    /// and the budget allows, else its bands (once per chunk; a later whole-chunk read then
    /// decodes it again).
    fn keep(&self, slot: &mut CacheSlot<T>, data: &Arc<Elements<T>>, chunk_region: &Region) {
        let whole = Self::bytes_of(data);
        let cached_band_bytes = slot.cached_bytes();
        if slot.whole_left > 0 && self.reserve(whole, self.whole_budget_bytes) {
            // The whole chunk serves every read: the bands are no longer needed.
            self.cached_bytes.fetch_sub(cached_band_bytes, Ordering::Relaxed);
            slot.bands.clear();
            slot.data = Some(data.clone());
            return;
        }
        let Some(bands_of) = &self.bands_of else { return };
        if !slot.bands.is_empty() {
            return;
        }
        for band in bands_of(chunk_region) {
            let Some(band) = band.intersect(chunk_region) else {
                continue;
            };
            let bytes = (band.len() * size_of::<T>()) as u64;
            if !self.reserve(bytes, self.budget_bytes) {
                break;
            }
            let mut part = vec![self.fill; band.len()];
            copy_overlap(data.as_slice(), chunk_region, &mut part, &band);
            slot.bands.push((band, Arc::new(Elements::Typed(part))));
        }
    }

    /// Adds `bytes` to the cache if it then holds at most `limit`.
    fn reserve(&self, bytes: u64, limit: u64) -> bool {
        let mut current = self.cached_bytes.load(Ordering::Relaxed);
        loop {
            if current + bytes > limit {
                return false;
            }
            match self.cached_bytes.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Reads `region` (inside the array) into a C-order buffer. Chunks are decoded in
    /// parallel when the region spans several.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] naming the first chunk that failed.
    pub fn read(&self, region: &Region) -> Result<Vec<T>, StoreError> {
        self.read_into(region, Vec::new())
    }

    /// As [`TileReader::read`], reusing `buffer`'s allocation (large tiles would otherwise
    /// be fresh, page-faulting memory for every task).
    ///
    /// # Errors
    /// As [`TileReader::read`].
    pub fn read_into(&self, region: &Region, buffer: Vec<T>) -> Result<Vec<T>, StoreError> {
        let mut buffer = self.sized(buffer, region.len());
        self.read_rows(region, buffer.as_mut_slice())?;
        Ok(buffer)
    }

    /// As [`TileReader::read_into`], writing every row into `also` (which spans `region` in
    /// C order) too, while it is in cache: a tile that is both kept in host memory and
    /// staged for a GPU.
    ///
    /// # Errors
    /// As [`TileReader::read`].
    #[cfg(feature = "gpu")]
    pub fn read_into_both<R>(&self, region: &Region, buffer: Vec<T>, also: R) -> Result<Vec<T>, StoreError>
    where
        R: RowTarget + RowWrite<T> + Send,
    {
        let mut buffer = self.sized(buffer, region.len());
        self.read_rows(region, crate::tile::Both(buffer.as_mut_slice(), also))?;
        Ok(buffer)
    }

    /// `buffer` made `len` long, its allocation reused where it is large enough.
    fn sized(&self, mut buffer: Vec<T>, len: usize) -> Vec<T> {
        if buffer.capacity() < len {
            // Too small: a fresh allocation, rather than growing one whose contents would be
            // copied over only to be overwritten.
            buffer = Vec::with_capacity(len);
        }
        buffer.truncate(len);
        buffer.resize(len, self.fill);
        buffer
    }

    /// Reads `region` into `target`, which spans it in C order, writing every element once:
    /// the chunks' elements, and the fill value where no chunk lies (outside the array).
    /// The chunks are decoded in parallel when the region spans several, and each is
    /// copied into its own rows of `target` ([`split_rows`]), so threads copy at once.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] naming the first chunk that failed.
    pub fn read_rows<R>(&self, region: &Region, target: R) -> Result<(), StoreError>
    where
        R: RowTarget + RowWrite<T> + Send,
    {
        use rayon::prelude::*;
        let resident = self.resident();
        let indices = self.source.chunks_in(region);
        let chunks: Vec<(&Vec<u64>, Region, Region)> = indices
            .iter()
            .filter_map(|idx| {
                let chunk_region = self.source.chunk_region(idx);
                let mut wanted = chunk_region.intersect(region)?;
                if let Some((_, array)) = &resident {
                    // An edge chunk's part past the array is the fill value, as uncovered.
                    wanted = wanted.intersect(array)?;
                }
                Some((idx, chunk_region, wanted))
            })
            .collect();
        let parts: Vec<Region> = chunks.iter().map(|(_, _, wanted)| wanted.clone()).collect();
        let dealt = split_rows(target, region, &parts);
        for mut row in dealt.uncovered {
            row.fill(self.fill);
        }
        if let Some((data, array)) = resident {
            // Each chunk's part straight from the array, on as many threads as there are.
            return dealt
                .blocks
                .into_par_iter()
                .zip(&chunks)
                .try_for_each(|(mut rows, (_, _, wanted))| {
                    self.check_cancel()?;
                    copy_into_rows(data, &array, &mut rows, wanted);
                    Ok(())
                });
        }
        // Each decoded chunk is copied in as soon as it is ready and then dropped (unless
        // the cache keeps it), so a read holds the tile plus a few chunks, not two tiles.
        let jobs: Vec<ChunkJob<'_, R>> = dealt
            .blocks
            .into_iter()
            .zip(&chunks)
            .map(|(rows, (idx, chunk_region, wanted))| ChunkJob {
                idx,
                chunk_region,
                wanted,
                rows,
            })
            .collect();
        // A chunk another thread is decoding (a halo this tile shares with one being read
        // beside it) is left for last instead of waited on: meanwhile this thread decodes
        // the tile's other chunks, and by then the busy one is usually in the cache.
        let busy: Vec<ChunkJob<'_, R>> = jobs
            .into_par_iter()
            .filter_map(|job| self.copy_chunk(job, false).transpose())
            .collect::<Result<_, _>>()?;
        busy.into_par_iter()
            .try_for_each(|job| self.copy_chunk(job, true).map(drop))
    }

    /// Copies `job`'s chunk into its rows; the job back, with nothing done, if the chunk is
    /// busy (another thread holds it) and `wait` is false.
    fn copy_chunk<'r, R: RowWrite<T>>(
        &self,
        mut job: ChunkJob<'r, R>,
        wait: bool,
    ) -> Result<Option<ChunkJob<'r, R>>, StoreError> {
        let found = if wait {
            Some(self.chunk(job.idx, job.chunk_region, job.wanted)?)
        } else {
            self.chunk_if_free(job.idx, job.chunk_region, job.wanted)?
        };
        let Some((data, data_region)) = found else {
            return Ok(Some(job));
        };
        copy_into_rows(data.as_slice(), &data_region, &mut job.rows, job.wanted);
        Ok(None)
    }

    /// Calls `visit(data, data_region, part)` for every chunk that `region` (inside the
    /// array) reads, in parallel, and collects what it returns: `data` is the decoded chunk
    /// (or a cached band of it) covering `data_region`, and `part` the part of `region` it
    /// serves. Nothing is copied into a tile: what needs no neighbouring chunk is computed
    /// straight from the decoder's buffer.
    ///
    /// # Errors
    /// The first error of a read or of `visit`.
    pub fn map_chunks<R, E>(
        &self,
        region: &Region,
        visit: impl Fn(&[T], &Region, &Region) -> Result<R, E> + Sync,
    ) -> Result<Vec<R>, E>
    where
        R: Send,
        E: From<StoreError> + Send,
    {
        use rayon::prelude::*;
        self.source
            .chunks_in(region)
            .par_iter()
            .map(|idx| {
                let chunk_region = self.source.chunk_region(idx);
                let part = chunk_region.intersect(region).unwrap_or_else(|| chunk_region.clone());
                let (data, data_region) = self.chunk(idx, &chunk_region, &part)?;
                visit(data.as_slice(), &data_region, &part)
            })
            .collect()
    }

    /// Bytes held by the cache now.
    #[cfg(test)]
    #[must_use]
    pub fn cached_bytes(&self) -> u64 {
        self.cached_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::store::{ZarrSource, open_source};
    use crate::synthetic::small_test_array;

    /// The read spans, on both axes, of 32-voxel tiles of a 64×64 array with a 3-voxel
    /// halo, as a gaussian pass reads them.
    const SPANS: [(u64, u64); 2] = [(0, 35), (29, 64)];

    fn halo_tiles() -> Vec<Region> {
        let mut tiles = Vec::new();
        for &(y0, y1) in &SPANS {
            for &(x0, x1) in &SPANS {
                tiles.push(Region::from_bounds(&[y0, x0], &[y1, x1]));
            }
        }
        tiles
    }

    fn reader(source: &Arc<ZarrSource>, budget: u64, bands: bool) -> TileReader<'static, u16> {
        let tiles = halo_tiles();
        let reads_of: ReadCounter =
            Arc::new(move |chunk: &Region| tiles.iter().filter(|t| t.intersect(chunk).is_some()).count() as u64);
        let reader = TileReader::new(source.clone(), budget, reads_of);
        if !bands {
            return reader;
        }
        let spans = vec![SPANS.to_vec(), SPANS.to_vec()];
        reader.with_bands(Arc::new(move |chunk: &Region| halo_bands(chunk, &spans, &[64, 64])))
    }

    /// A 64×64 uint16 array of 16×16 zstd chunks (v2) in `dir`.
    fn small_input(dir: &Path) -> Arc<ZarrSource> {
        Arc::new(open_source(&small_test_array(dir)).unwrap())
    }

    #[test]
    fn a_reused_buffer_leaves_no_stale_values_in_a_read() {
        let dir = tempfile::TempDir::new().unwrap();
        let source = small_input(dir.path());
        let reader = TileReader::<u16>::new(source.clone(), 0, Arc::new(|_: &Region| 1));
        let region = Region::new(vec![5, 7], vec![40, 33]);
        let expected = reader.read(&region).unwrap();
        // Longer and shorter buffers full of a value the data never holds.
        for stale in [vec![u16::MAX; 4096], vec![u16::MAX; 100]] {
            assert_eq!(reader.read_into(&region, stale).unwrap(), expected);
        }
        assert!(!expected.contains(&u16::MAX));
        // Each element is the one stored at its place: compare with whole-array reads.
        let whole = reader.read(&Region::whole(&[64, 64])).unwrap();
        for (i, &v) in expected.iter().enumerate() {
            let (y, x) = (5 + i / 33, 7 + i % 33);
            assert_eq!(v, whole[y * 64 + x], "element ({y}, {x})");
        }
    }

    #[test]
    fn a_chunk_another_thread_holds_is_read_last_instead_of_waited_on() {
        use std::time::{Duration, Instant};
        let dir = tempfile::TempDir::new().unwrap();
        let source = small_input(dir.path());
        let reader = TileReader::<u16>::new(source.clone(), 0, Arc::new(|_: &Region| 1));
        // Chunks [0, 0] and [0, 1], in that order.
        let region = Region::new(vec![0, 0], vec![16, 32]);
        let expected = TileReader::<u16>::new(source.clone(), 0, Arc::new(|_: &Region| 1))
            .read(&region)
            .unwrap();
        let first = reader.slot(&[0, 0], &source.chunk_region(&[0, 0]));
        let decoded = || reader.stats.decoded.load(Ordering::Relaxed);
        // One thread takes the chunks in order: waiting on [0, 0] it would never reach
        // [0, 1].
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        std::thread::scope(|s| {
            // As while another thread decodes it (released if an assertion below fails).
            let held = first.lock().unwrap();
            let read = s.spawn(|| pool.install(|| reader.read(&region)));
            let started = Instant::now();
            while decoded() < 1 {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "the read waited on the held chunk"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(held);
            assert_eq!(read.join().unwrap().unwrap(), expected);
        });
        assert_eq!(decoded(), 2);
    }

    #[test]
    fn halo_bands_cover_every_partial_read() {
        let spans = vec![SPANS.to_vec(), SPANS.to_vec()];
        // Chunk [16, 32) × [32, 48): partial overlaps [29, 32) on y and [32, 35) on x.
        let chunk = Region::new(vec![16, 32], vec![16, 16]);
        assert_eq!(
            halo_bands(&chunk, &spans, &[64, 64]),
            vec![
                Region::new(vec![29, 32], vec![3, 16]),
                Region::new(vec![16, 32], vec![16, 3]),
            ]
        );
        // A corner chunk read whole by its only tile has no band; an edge chunk past the
        // array's end is read whole by a span ending at the array's end.
        assert!(halo_bands(&Region::new(vec![0, 0], vec![16, 16]), &spans, &[64, 64]).is_empty());
        assert!(halo_bands(&Region::new(vec![48, 48], vec![16, 16]), &spans, &[60, 60]).is_empty());
    }

    #[test]
    fn whole_reads_count_the_reads_that_need_a_chunk_whole() {
        let spans = vec![SPANS.to_vec(), SPANS.to_vec()];
        let counts: Vec<u64> = (0..4u64)
            .flat_map(|y| (0..4u64).map(move |x| Region::new(vec![16 * y, 16 * x], vec![16, 16])))
            .map(|chunk| {
                let counted = halo_tiles()
                    .iter()
                    .filter(|tile| reads_whole_chunk(tile, &chunk, &[64, 64]))
                    .count() as u64;
                assert_eq!(whole_reads(&chunk, &spans, &[64, 64]), counted, "{chunk:?}");
                counted
            })
            .collect();
        // Every chunk is read whole by its own tile only; a chunk past the array's end is
        // read whole by a span ending at the array's end.
        assert!(counts.iter().all(|&c| c == 1), "{counts:?}");
        let edge = Region::new(vec![48, 48], vec![16, 16]);
        assert!(reads_whole_chunk(
            &Region::from_bounds(&[29, 29], &[60, 60]),
            &edge,
            &[60, 60]
        ));
        assert_eq!(whole_reads(&edge, &spans, &[60, 60]), 1);
    }

    #[test]
    fn a_chunk_no_later_read_needs_whole_is_cut_to_its_bands() {
        let dir = tempfile::TempDir::new().unwrap();
        let source = small_input(dir.path());
        let uncached = reader(&source, 0, false);
        let whole_only = reader(&source, 1 << 20, true);
        let tiles = halo_tiles();
        let whole_reads: ReadCounter =
            Arc::new(move |chunk: &Region| tiles.iter().filter(|t| t.contains(chunk)).count() as u64);
        let cut = reader(&source, 1 << 20, true).with_whole_reads(whole_reads);
        let mut after_first = Vec::new();
        for tile in halo_tiles() {
            let expected = uncached.read(&tile).unwrap();
            for r in [&whole_only, &cut] {
                assert_eq!(r.read(&tile).unwrap(), expected, "{tile:?}");
                if after_first.len() < 2 {
                    after_first.push(r.cached_bytes());
                }
            }
        }
        // The first tile, [0, 35)², reads 9 chunks of 512 bytes: it owns 4 and reads 5 of
        // its neighbours' for its halo, which stay whole until their own tiles read them.
        // Of its own chunks, 3 are in neighbours' halos: kept whole (1536 bytes), or cut
        // to the 3-voxel bands those halos read (2 × 96 bytes for the one in both, 96 for
        // the two others).
        assert_eq!(after_first, [5 * 512 + 3 * 512, 5 * 512 + 4 * 96]);
        // Each chunk is still decoded once, and everything is released at the end.
        let decoded = |r: &TileReader<'_, u16>| r.stats.decoded.load(Ordering::Relaxed);
        assert_eq!((decoded(&whole_only), decoded(&cut)), (16, 16));
        assert_eq!((whole_only.cached_bytes(), cut.cached_bytes()), (0, 0));
    }

    #[test]
    fn halo_reads_are_served_from_bands_when_whole_chunks_do_not_fit() {
        let dir = tempfile::TempDir::new().unwrap();
        let source = small_input(dir.path());
        let uncached = reader(&source, 0, false);
        // A whole chunk is 512 bytes; the bands of a chunk at most 2 × 96. A budget of
        // 1000 bytes leaves no room for whole chunks once a layer of bands is reserved.
        let banded = reader(&source, 1000, true);
        let plain = reader(&source, 1000, false);
        for tile in halo_tiles() {
            let expected = uncached.read(&tile).unwrap();
            assert_eq!(banded.read(&tile).unwrap(), expected, "{tile:?} through bands");
            assert_eq!(plain.read(&tile).unwrap(), expected, "{tile:?} through whole chunks");
        }
        let decoded = |r: &TileReader<'_, u16>| r.stats.decoded.load(Ordering::Relaxed);
        // 16 chunks; the tiles touch 36 chunk-times (9 each).
        assert_eq!(decoded(&uncached), 36);
        // With bands a chunk is decoded at most twice: once for a neighbour's halo read
        // that comes first, once for its own tile.
        assert!(decoded(&banded) <= 32, "banded decodes: {}", decoded(&banded));
        assert!(
            decoded(&banded) < decoded(&plain),
            "bands {} vs whole chunks only {}",
            decoded(&banded),
            decoded(&plain)
        );
        // Everything is released once the last read of every chunk has happened.
        assert_eq!(banded.cached_bytes(), 0);
        assert_eq!(plain.cached_bytes(), 0);
    }
}
