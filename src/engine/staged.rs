//! Tiles read into a GPU's staging memory, computed in batches: what such a tile leaves for
//! the compute stage ([`StagedCompute`]), and how the tiles a compute thread takes together
//! go to the backend at once ([`crate::Downsampler::downsample_staged`]), in one submission.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::BuildError;
use super::blocks::TileOutput;
use super::pass::Counters;
use super::stages::{Batch, WriteJob};
use super::tile::add_ns;
use crate::backend::gpu::StagedTile;
use crate::backend::{ComputedLevels, Downsampler};
use crate::tile::Region;

/// Writes a staged tile's levels once they are computed.
pub(super) type WriteLevels<'a> = Box<dyn FnOnce(ComputedLevels) -> WriteJob<'a, TileOutput> + Send + 'a>;

/// A staged tile's compute: `backend` computes the `regions` of its chain from `staged`,
/// and `then` writes them.
pub(super) struct StagedCompute<'a> {
    pub(super) backend: &'a dyn Downsampler,
    pub(super) counters: &'a Counters,
    pub(super) staged: StagedTile,
    pub(super) regions: Vec<Region>,
    pub(super) then: WriteLevels<'a>,
}

impl<'a> Batch<'a, TileOutput> for StagedCompute<'a> {
    fn bytes(&self) -> u64 {
        self.staged.source_bytes()
    }

    fn compute(batch: Vec<Self>) -> Result<Vec<WriteJob<'a, TileOutput>>, BuildError> {
        let computing = Instant::now();
        let (backend, counters) = (batch[0].backend, batch[0].counters);
        let (tiles, writes): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|tile| ((tile.staged, tile.regions), tile.then))
            .unzip();
        let levels = backend.downsample_staged(tiles)?;
        add_ns(&counters.compute_ns, computing.elapsed());
        counters.staged_batches.fetch_add(1, Ordering::Relaxed);
        Ok(levels
            .into_iter()
            .zip(writes)
            .map(|(levels, write)| write(levels))
            .collect())
    }
}
