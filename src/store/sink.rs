//! Where pyramids are written: a [`Sink`] creates the output's level arrays, hands out a
//! [`LevelSink`] per level to write its chunks, reads a finished level back for the next
//! pass, and writes the image metadata last, atomically, so an output never names levels
//! it does not hold.
//!
//! The v0.4 layout (Zarr v2) is [`ZarrV2Sink`](super::ZarrV2Sink); another layout is one
//! more implementation of these traits.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::codec::OutputCodec;
use super::{ChunkSource, Source, StoreError};
use crate::dtype::DType;
use crate::tile::Region;

/// What a level array holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelLayout {
    /// Shape.
    pub shape: Vec<u64>,
    /// Chunk shape.
    pub chunks: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Codec.
    pub codec: OutputCodec,
    /// Fill value bytes (native endian).
    pub fill: Vec<u8>,
}

/// An output being written.
pub trait Sink: Send + Sync {
    /// The output's directory.
    fn path(&self) -> &Path;

    /// The node metadata file a whole output holds at its root.
    fn group_file(&self) -> &'static str;

    /// Creates level `level`'s array (its metadata), before any of its chunks.
    ///
    /// # Errors
    /// [`StoreError`] if the metadata is refused or cannot be written.
    fn create_level(&self, level: usize, layout: &LevelLayout) -> Result<Box<dyn LevelSink>, StoreError>;

    /// Level `level` as stored so far, to be read by the next pass.
    ///
    /// # Errors
    /// [`StoreError::OpenArray`] if its metadata cannot be read.
    fn read_level(&self, level: usize) -> Result<Arc<dyn ChunkSource>, StoreError>;

    /// Writes the image metadata, last and atomically.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    fn write_attributes(&self, attributes: &Value) -> Result<(), StoreError>;
}

/// One level array of an output being written.
pub trait LevelSink: Send + Sync {
    /// The level's directory.
    fn dir(&self) -> &Path;

    /// Indices of the chunks that intersect `region` (for a chunk-aligned region, exactly
    /// the chunks it covers).
    fn chunks_in(&self, region: &Region) -> Vec<Vec<u64>>;

    /// The region of chunk `indices` (not clipped to the array).
    fn chunk_region(&self, indices: &[u64]) -> Region;

    /// The flat (C-order) index of chunk `indices`.
    fn flat_index(&self, indices: &[u64]) -> u64;

    /// The chunk indices of a flat (C-order) index.
    fn chunk_indices(&self, flat: u64) -> Vec<u64>;

    /// Encodes and writes one chunk (`data`: native-endian elements covering the whole
    /// chunk, padding included) and returns the bytes stored; a chunk of fill value only
    /// is not stored (`None`).
    ///
    /// # Errors
    /// [`StoreError::WriteChunk`] naming the chunk.
    fn write_chunk(&self, indices: &[u64], data: &[u8]) -> Result<Option<u64>, StoreError>;

    /// Copies chunk `indices` of `source` as it is stored, without decoding (the caller
    /// has checked that codecs and chunk grids match); `None` where nothing is stored.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] or [`StoreError::WriteChunk`].
    fn copy_stored_chunk(&self, source: &dyn Source, indices: &[u64]) -> Result<Option<u64>, StoreError>;

    /// Bytes stored for the chunk at flat index `flat`, if it is stored.
    fn stored_size(&self, flat: u64) -> Option<u64>;
}
