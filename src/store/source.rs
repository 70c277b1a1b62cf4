//! Where pyramids read from.
//!
//! - A [`ChunkSource`] is voxels read one chunk at a time on a chunk grid: an input
//!   image's level 0, or a level of the output as stored, which the next pass reads. The
//!   [`TileReader`](super::TileReader) reads any region of one through its chunk cache.
//! - A [`Source`] is an input image: level 0 as a chunk source, the image metadata the
//!   output carries over (axes, units, scales, channels), what identifies its data for a
//!   resumed build, and its stored chunks where they can be copied without decoding.
//!
//! Zarr v2/v3 arrays and OME-Zarr images are [`ZarrSource`](super::ZarrSource)s, TIFF
//! files and stacks [`TiffSource`](super::TiffSource)s; another kind of input (an object
//! store) is one more implementation of these traits.

use std::path::Path;

use serde_json::Value;

use super::StoreError;
use super::codec::OutputCodec;
use crate::dtype::DType;
use crate::journal::InputFingerprint;
use crate::ngff::{CoordinateTransformation, InputImage};
use crate::plan::Axis;
use crate::tile::Region;

/// Output chunk length of y and x when `--chunks` is not given and the input has no chunks
/// worth keeping (TIFF strips, an array in memory); TIFF tiles this large or larger are kept.
pub(crate) const DEFAULT_PLANE_CHUNK: u64 = 256;
/// Output chunk length of z in the same case.
pub(crate) const DEFAULT_Z_CHUNK: u64 = 64;

/// Voxels read chunk by chunk.
pub trait ChunkSource: Send + Sync {
    /// Where the data is, for messages.
    fn path(&self) -> &Path;

    /// Element type.
    fn dtype(&self) -> DType;

    /// Shape.
    fn shape(&self) -> &[u64];

    /// The read granularity: the shape of the chunk at the grid's origin (the inner chunk
    /// of a sharded array).
    fn chunk_shape(&self) -> &[u64];

    /// Number of read chunks along each axis.
    fn grid_shape(&self) -> Vec<u64>;

    /// Indices of the read chunks that intersect `region`.
    fn chunks_in(&self, region: &Region) -> Vec<Vec<u64>>;

    /// The region of read chunk `indices` (not clipped to the array).
    fn chunk_region(&self, indices: &[u64]) -> Region;

    /// A name for read chunk `indices` in messages (a store key).
    fn chunk_name(&self, indices: &[u64]) -> String;

    /// The fill value's bytes (native endian): what a missing chunk reads as.
    fn fill_bytes(&self) -> &[u8];

    /// The decoded bytes (native endian, C order) of read chunk `indices`, its padding past
    /// the array's edge included; the fill value where nothing is stored.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] naming the chunk.
    fn read_chunk(&self, indices: &[u64]) -> Result<Vec<u8>, StoreError>;

    /// The whole array's elements (native endian, C order), where the source holds them in
    /// memory as one block: reads copy from there straight into their tiles, with no chunk
    /// copied out first. `None` (the default) for sources that decode their chunks.
    fn resident_bytes(&self) -> Option<&[u8]> {
        None
    }

    /// True if nothing is stored under `region`, which then reads as the fill value only;
    /// `false` where the source cannot tell cheaply.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] if the storage cannot be asked.
    fn nothing_stored_in(&self, region: &Region) -> Result<bool, StoreError>;
}

/// What an input image says about itself, whatever its format: the output carries it over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageMetadata {
    /// Image name.
    pub name: Option<String>,
    /// Axes with kinds and units (empty when the input does not name them).
    pub axes: Vec<Axis>,
    /// Level-0 pixel size per axis.
    pub scale: Option<Vec<f64>>,
    /// Level-0 translation per axis.
    pub translation: Option<Vec<f64>>,
    /// Transformations of the whole multiscale image, carried over unchanged.
    pub multiscale_transforms: Option<Vec<CoordinateTransformation>>,
    /// Channel names, colours and display windows (an OME-NGFF `omero` block), when valid.
    pub omero: Option<Value>,
    /// Why the input's `omero` block was left out, if it was invalid.
    pub omero_dropped: Option<String>,
    /// Channel names and colours (`RRGGBB`) of an input without an `omero` block (OME-TIFF):
    /// they label the display windows measured from the data.
    pub channel_labels: Option<Vec<(Option<String>, Option<String>)>>,
    /// The axes are a default, not named by the input's metadata: `--axes` may rename them.
    pub axes_replaceable: bool,
}

impl From<InputImage> for ImageMetadata {
    fn from(image: InputImage) -> Self {
        Self {
            name: image.name,
            axes: image.axes,
            scale: image.scale,
            translation: image.translation,
            multiscale_transforms: image.multiscale_transforms,
            omero: image.omero,
            omero_dropped: image.omero_dropped,
            channel_labels: None,
            axes_replaceable: false,
        }
    }
}

/// An input image: level 0 and what the output carries over.
pub trait Source: ChunkSource {
    /// The image metadata (empty for a plain array).
    fn image(&self) -> &ImageMetadata;

    /// What identifies the input in a build record: a resumed build must find it again.
    fn identity(&self) -> Value;

    /// A fingerprint of the input's stored data, which changes when any of it is rewritten.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the data cannot be listed.
    fn fingerprint(&self) -> Result<InputFingerprint, StoreError>;

    /// The output chunk shape when `--chunks` is not given: the read chunk shape, unless
    /// that is a poor chunk for an output (a TIFF strip).
    fn preferred_chunks(&self) -> Vec<u64> {
        self.chunk_shape().to_vec()
    }

    /// False where an interrupted build cannot be checked against this input again (an
    /// array in memory, gone with its process): `resume` is then refused.
    fn resumable(&self) -> bool {
        true
    }

    /// The codec level 0's chunks are stored with, if each stored chunk is, as it is, a
    /// valid chunk of an output array with that codec and the same chunk grid. The
    /// defaults of this and the next three methods describe a source with nothing to copy
    /// as stored (TIFF, an array in memory).
    fn stored_codec(&self) -> Option<&OutputCodec> {
        None
    }

    /// The shard shape and inner codec of a sharded level 0 whose shard files are, as they
    /// are, valid shards of an output with that shape and codec (inner chunks as the read
    /// grid, index at the end with a CRC32C): they can be copied whole.
    fn stored_shards(&self) -> Option<(&[u64], &OutputCodec)> {
        None
    }

    /// The stored (encoded) bytes of chunk `indices` of the stored grid (a shard of a
    /// sharded array), `None` where nothing is stored.
    ///
    /// # Errors
    /// [`StoreError::ReadChunk`] naming the chunk.
    fn stored_chunk(&self, _indices: &[u64]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    /// The local file holding chunk `indices` of the stored grid as stored (a shard of a
    /// sharded array), where there is one (so it can be copied file to file).
    fn stored_chunk_file(&self, _indices: &[u64]) -> Option<std::path::PathBuf> {
        None
    }
}
