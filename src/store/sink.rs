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
use super::grid::RegularGrid;
use super::shard::ShardWriter;
use super::{ChunkSource, Source, StoreError};
use crate::dtype::DType;

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
    /// Shard shape (a multiple of the chunk shape), or `None` for one file per chunk.
    pub shards: Option<Vec<u64>>,
    /// Axis names (Zarr v3 `dimension_names`).
    pub dimension_names: Vec<String>,
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

/// One level array of an output being written. Its chunks are written one file each, or,
/// when the level is sharded, gathered into shards that a [`ShardWriter`] streams.
pub trait LevelSink: Send + Sync {
    /// The level's directory.
    fn dir(&self) -> &Path;

    /// The chunk grid.
    fn chunks(&self) -> &RegularGrid;

    /// The grid of what is written as one file: the shards, or the chunks when the level
    /// is not sharded.
    fn units(&self) -> &RegularGrid;

    /// True if chunks are gathered into shards.
    fn is_sharded(&self) -> bool;

    /// Encodes and writes one chunk of an unsharded level (`data`: native-endian elements
    /// covering the whole chunk, padding included) and returns the bytes stored; a chunk of
    /// fill value only is not stored (`None`).
    ///
    /// # Errors
    /// [`StoreError::WriteChunk`] naming the chunk.
    fn write_chunk(&self, indices: &[u64], data: &[u8]) -> Result<Option<u64>, StoreError>;

    /// Copies chunk `indices` of `source` as it is stored into an unsharded level, without
    /// decoding (the caller has checked that codecs and chunk grids match); `None` where
    /// nothing is stored.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] or [`StoreError::WriteChunk`].
    fn copy_stored_chunk(&self, source: &dyn Source, indices: &[u64]) -> Result<Option<u64>, StoreError>;

    /// Encodes one chunk of a sharded level for its shard; `None` for a chunk of fill value
    /// only.
    ///
    /// # Errors
    /// [`StoreError::WriteChunk`] naming the chunk.
    fn encode_chunk(&self, indices: &[u64], data: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Starts writing shard `unit` of a sharded level.
    ///
    /// # Errors
    /// [`StoreError::WriteChunk`] naming the shard.
    fn open_shard(&self, unit: &[u64]) -> Result<ShardWriter, StoreError>;

    /// A name for write unit `unit` in messages (its store key).
    fn unit_name(&self, unit: &[u64]) -> String;

    /// Bytes stored for the write unit at flat index `flat`, if it is stored.
    fn stored_size(&self, flat: u64) -> Option<u64>;

    /// The write unit holding chunk `chunk`, and the chunk's indices within it.
    fn unit_of(&self, chunk: &[u64]) -> (Vec<u64>, Vec<u64>) {
        chunk
            .iter()
            .zip(self.units().chunk())
            .zip(self.chunks().chunk())
            .map(|((&i, &u), &c)| {
                let per_unit = u / c;
                (i / per_unit, i % per_unit)
            })
            .unzip()
    }
}
