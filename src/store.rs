//! Storage: where pyramids are read from and written to (SPEC §1 inputs, §4 layout, §5
//! streaming). Built on `zarrs`.
//!
//! - [`source`]: the [`ChunkSource`] and [`Source`] traits; [`zarr_source`] implements them
//!   for Zarr v2/v3 arrays and OME-Zarr images ([`open_source`]), and for levels of the
//!   output read back; [`tiff`] for TIFF files and stacks ([`open_tiff`]). [`open_input`]
//!   opens either, by content.
//! - [`sink`]: the [`Sink`] and [`LevelSink`] traits; [`zarr_v2_sink`] writes the v0.4
//!   layout and [`zarr_v3_sink`] the 0.5 one, both through [`zarr_level`], which writes a
//!   level's chunks one file each or gathered into shards by [`shard`].
//! - [`in_memory`]: an `ndarray` view (a NumPy array from Python) read in place as input.
//! - [`codec`]: the typed [`OutputCodec`] and the `--compression` choice.
//! - [`tile_reader`]: any region of a chunk source through a bounded cache of decoded chunks.
//! - [`decode`]: decoding a chunk that never expands past its declared size.
//! - [`whole_file`]: chunk files written or copied whole, their blocks reserved first.
//! - [`floor`]: the decode-only and encode-only passes of `bench`.
//! - [`node`], [`tree`], [`files`]: Zarr nodes and trees on disk, and the file store that
//!   reads regular files only.

pub mod codec;
pub(crate) mod decode;
pub mod error;
pub(crate) mod files;
pub mod floor;
pub(crate) mod grid;
pub mod in_memory;
pub mod node;
pub(crate) mod shard;
pub(crate) mod sink;
pub mod source;
pub mod tiff;
pub(crate) mod tile_reader;
pub(crate) mod tree;
pub(crate) mod whole_file;
pub(crate) mod zarr_level;
pub mod zarr_source;
pub(crate) mod zarr_v2_sink;
pub(crate) mod zarr_v3_sink;

use std::sync::Arc;

use zarrs::array::{Element, ElementOwned};
use zarrs::storage::{ReadableStorageTraits, ReadableWritableStorageTraits};

pub use codec::{Compression, OutputCodec};
pub use error::StoreError;
pub use floor::{DecodeReport, decode_only, encode_only};
pub use in_memory::NdarraySource;
pub use node::{NodeKind, describe_codecs, probe_node, write_json_atomically};
pub(crate) use sink::{LevelLayout, LevelSink, Sink};
pub use source::{ChunkSource, ImageMetadata, Source};
pub use tiff::{TiffSource, describe_tiff, is_tiff_input, open_tiff};
pub(crate) use tile_reader::{ChunkBands, ReadCounter, TileReader, halo_bands, reads_whole_chunk, whole_reads};
pub use zarr_source::{ZarrSource, open_source, open_source_with};
pub(crate) use zarr_v2_sink::ZarrV2Sink;
pub(crate) use zarr_v3_sink::ZarrV3Sink;

use crate::tile::TileElement;

/// Opens the input of a build by its content: TIFF input (a TIFF file, a folder of TIFF
/// slices, a glob pattern) as series `series` (0 when `None`), anything else as Zarr,
/// reading Zarr chunks through `layer` where given.
///
/// # Errors
/// As [`open_tiff`] or [`open_source_with`]; [`StoreError::InvalidOption`] for a series
/// asked of a Zarr input.
pub fn open_input(
    path: &std::path::Path,
    series: Option<usize>,
    layer: Option<&(dyn Fn(ReadStorage) -> ReadStorage + Send + Sync)>,
) -> Result<Arc<dyn Source>, StoreError> {
    if is_tiff_input(path) {
        return Ok(Arc::new(open_tiff(path, series.unwrap_or(0))?));
    }
    if let Some(series) = series {
        return Err(StoreError::SeriesOfZarr {
            path: path.to_path_buf(),
            series,
        });
    }
    Ok(Arc::new(open_source_with(path, layer)?))
}

/// A readable store.
pub type ReadStorage = Arc<dyn ReadableStorageTraits>;
/// A readable and writable store.
pub type WriteStorage = Arc<dyn ReadableWritableStorageTraits>;

/// Every element type the store reads and writes.
pub trait StoreElement: TileElement + Element + ElementOwned {}
impl<T: TileElement + Element + ElementOwned> StoreElement for T {}
