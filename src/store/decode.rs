//! Decoding one chunk so that it never expands past the size its shape declares.
//!
//! zarrs decompresses without a bound: a 1 MiB gzip chunk that expands to 1 GiB is held
//! whole in memory before any size check (a decompression bomb), and zstd and blosc
//! allocate whatever their frame headers claim. Here the compressors of a chunk's codec
//! chain are run with a cap instead: gzip, zlib and bz2 stream into a buffer that stops one
//! byte past the size the next codec expects, zstd decompresses into a buffer of exactly
//! that size, which it refuses to write past; blosc's header states its size and is checked
//! before zarrs decodes it. The rest of the chain (the `bytes` codec, the
//! array-to-array codecs) is zarrs', which checks sizes exactly. Inner chunks of a sharded
//! array are decoded the same way, with the inner codec chain, and a chunk file larger
//! than any encoding of its data can be is refused before it is read.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Read;
use std::num::NonZeroU64;
use std::sync::Arc;

use serde_json::Value;
use zarrs::array::codec::api::{ArrayToBytesCodecTraits, BytesRepresentation, BytesToBytesCodecTraits, CodecError};
use zarrs::array::codec::{BloscCodec, Bz2Codec, CodecChain, GzipCodec, ZlibCodec, ZstdCodec};
use zarrs::array::{
    Array, ArrayError, ArrayShardedExt, ArrayShardedReadableExt, ArrayShardedReadableExtCache, CodecOptions,
};
use zarrs::metadata::v3::MetadataV3;
use zarrs::storage::ReadableStorageTraits;

/// Why a chunk could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The data expands past its declared size.
    #[error(
        "it decompresses to more than the {limit} bytes its chunk shape allows (a corrupt chunk or a decompression bomb)"
    )]
    TooLarge {
        /// The declared size.
        limit: u64,
    },
    /// The file is larger than any encoding of the chunk's data.
    #[error("it holds {size} bytes, more than any encoding of the {decoded} bytes of its chunk shape")]
    FileTooLarge {
        /// Bytes stored.
        size: u64,
        /// The chunk's decoded bytes.
        decoded: u64,
    },
    /// The chunk shape's bytes do not fit in memory's address space.
    #[error("its chunk shape holds more bytes than this machine can address")]
    Unaddressable,
    /// A codec failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// zarrs failed otherwise.
    #[error(transparent)]
    Array(#[from] ArrayError),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] zarrs::storage::StorageError),
    /// A decompressor failed.
    #[error("decompression failed")]
    Decompress(#[from] std::io::Error),
}

/// How the chunks of an array are decoded.
enum Mode {
    /// Plain chunks, with the array's own chain.
    Plain,
    /// Inner chunks of shards, with the inner chain.
    Sharded(ArrayShardedReadableExtCache),
    /// A layout whose stages cannot be run one by one (e.g. array-to-array codecs before
    /// the sharding codec): zarrs decodes it, with the sizes it checks itself.
    Zarrs(ArrayShardedReadableExtCache),
}

/// Decodes the chunks (inner chunks, for a sharded array) of one array with bounded memory.
pub struct ChunkDecoder {
    array: Arc<Array<dyn ReadableStorageTraits>>,
    mode: Mode,
    /// The chain the chunks were encoded with.
    chain: Arc<CodecChain>,
    /// `chain` without its bytes-to-bytes codecs, which are run here.
    tail: CodecChain,
    options: CodecOptions,
}

/// The inner codec chain of an exclusively sharded array.
fn inner_chain(array: &Array<dyn ReadableStorageTraits>) -> Option<CodecChain> {
    if !array.is_exclusively_sharded() {
        return None;
    }
    let metadata = serde_json::to_value(array.metadata()).ok()?;
    let sharding = metadata
        .get("codecs")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("sharding_indexed"))?;
    let codecs: Vec<MetadataV3> = serde_json::from_value(sharding.get("configuration")?.get("codecs")?.clone()).ok()?;
    CodecChain::from_metadata(&codecs).ok()
}

impl ChunkDecoder {
    /// A decoder of `array`'s read units (its chunks, or inner chunks when sharded).
    #[must_use]
    pub fn new(array: Arc<Array<dyn ReadableStorageTraits>>) -> Self {
        let cache = ArrayShardedReadableExtCache::new(&array);
        let (mode, chain) = if !array.is_sharded() {
            (Mode::Plain, array.codecs())
        } else if let Some(inner) = inner_chain(&array) {
            (Mode::Sharded(cache), Arc::new(inner))
        } else {
            (Mode::Zarrs(cache), array.codecs())
        };
        let tail = CodecChain::new(
            chain.array_to_array_codecs().to_vec(),
            chain.array_to_bytes_codec().clone(),
            Vec::new(),
        );
        Self {
            array,
            mode,
            chain,
            tail,
            options: CodecOptions::default().with_concurrent_target(1),
        }
    }

    /// The decoded bytes (native endian, C order) of the chunk at `indices` of the read
    /// grid of shape `shape`; the fill value where nothing is stored.
    ///
    /// # Errors
    /// [`DecodeError`] naming why.
    pub fn decode(&self, indices: &[u64], shape: &[u64]) -> Result<Vec<u8>, DecodeError> {
        let shape: Vec<NonZeroU64> = shape
            .iter()
            .map(|&n| NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN))
            .collect();
        let decoded = decoded_bytes(&shape, self.array.data_type().fixed_size().unwrap_or(1))?;
        let encoded = match &self.mode {
            Mode::Zarrs(cache) => {
                let bytes = self.array.retrieve_subchunk_opt::<zarrs::array::ArrayBytes<'static>>(
                    cache,
                    indices,
                    &self.options,
                )?;
                return Ok(bytes.into_fixed().map_err(CodecError::from)?.into_owned());
            }
            Mode::Plain => {
                let key = self.array.chunk_key(indices);
                if let Some(size) = self.array.storage().size_key(&key)? {
                    self.check_file_size(size, decoded)?;
                }
                self.array.retrieve_encoded_chunk(indices)?
            }
            Mode::Sharded(cache) => {
                if let Some(range) = self.array.subchunk_byte_range(cache, indices)? {
                    self.check_file_size(range.length(u64::MAX), decoded)?;
                }
                self.array.retrieve_encoded_subchunk(cache, indices)?
            }
        };
        let Some(encoded) = encoded else {
            let fill = self.array.fill_value().as_ne_bytes();
            return Ok(
                fill.repeat(usize::try_from(decoded).map_err(|_| DecodeError::Unaddressable)? / fill.len().max(1))
            );
        };
        let raw = self.run_compressors(encoded, &shape, decoded)?;
        let bytes = self.tail.decode(
            raw,
            &shape,
            self.array.data_type(),
            self.array.fill_value(),
            &self.options,
        )?;
        Ok(bytes.into_fixed().map_err(CodecError::from)?.into_owned())
    }

    /// A stored chunk may be somewhat larger than its data (incompressible data plus
    /// headers), never many times larger.
    fn check_file_size(&self, size: u64, decoded: u64) -> Result<(), DecodeError> {
        let allowed = decoded.saturating_mul(2).saturating_add(1 << 20);
        if size > allowed {
            return Err(DecodeError::FileTooLarge { size, decoded });
        }
        Ok(())
    }

    /// Runs the bytes-to-bytes codecs from the outermost in, each capped at the size the
    /// stage below it expects.
    fn run_compressors(
        &self,
        encoded: Vec<u8>,
        shape: &[NonZeroU64],
        decoded: u64,
    ) -> Result<Cow<'static, [u8]>, DecodeError> {
        let data_type = self.array.data_type();
        let fill_value = self.array.fill_value();
        let (mut s, mut d, mut f) = (shape.to_vec(), data_type.clone(), fill_value.clone());
        for codec in self.chain.array_to_array_codecs() {
            (s, d, f) = codec.encoded_representation(&s, &d, &f)?;
        }
        let mut representations = vec![self.chain.array_to_bytes_codec().encoded_representation(&s, &d, &f)?];
        for codec in self.chain.bytes_to_bytes_codecs() {
            let next = codec.encoded_representation(representations.last().expect("one pushed above"));
            representations.push(next);
        }
        let mut raw: Cow<'static, [u8]> = Cow::Owned(encoded);
        for (codec, representation) in self.chain.bytes_to_bytes_codecs().iter().zip(&representations).rev() {
            let limit = match representation {
                BytesRepresentation::FixedSize(n) | BytesRepresentation::BoundedSize(n) => *n,
                BytesRepresentation::UnboundedSize => decoded.saturating_mul(2).saturating_add(1 << 20),
            };
            raw = Cow::Owned(decode_stage(codec.as_ref(), raw, representation, limit, &self.options)?);
        }
        Ok(raw)
    }
}

/// Bytes of a chunk of `shape` with elements of `element_size` bytes.
fn decoded_bytes(shape: &[NonZeroU64], element_size: usize) -> Result<u64, DecodeError> {
    let elements = shape
        .iter()
        .try_fold(1u64, |n, d| n.checked_mul(d.get()))
        .ok_or(DecodeError::Unaddressable)?;
    let bytes = elements
        .checked_mul(element_size as u64)
        .ok_or(DecodeError::Unaddressable)?;
    usize::try_from(bytes).map_err(|_| DecodeError::Unaddressable)?;
    Ok(bytes)
}

thread_local! {
    /// This thread's zstd decompression context, made at its first zstd chunk and kept:
    /// making one per chunk took 2% of a build's CPU time where chunks are small (40 KB).
    static ZSTD_CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `zstd::bulk::decompress` through this thread's kept context (dropped after an error, so
/// that no state of a bad frame reaches the next).
fn zstd_decompress(raw: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_CONTEXT.with_borrow_mut(|kept| {
        let context = match kept {
            Some(context) => context,
            None => kept.insert(zstd::bulk::Decompressor::new()?),
        };
        let decoded = context.decompress(raw, capacity);
        if decoded.is_err() {
            *kept = None;
        }
        decoded
    })
}

/// Decodes one bytes-to-bytes stage, never producing more than `limit` bytes.
fn decode_stage(
    codec: &dyn BytesToBytesCodecTraits,
    raw: Cow<'static, [u8]>,
    representation: &BytesRepresentation,
    limit: u64,
    options: &CodecOptions,
) -> Result<Vec<u8>, DecodeError> {
    let any = codec.as_any();
    if any.is::<GzipCodec>() {
        return capped(flate2::read::GzDecoder::new(&raw[..]), limit);
    }
    if any.is::<ZlibCodec>() {
        return capped(flate2::read::ZlibDecoder::new(&raw[..]), limit);
    }
    if any.is::<Bz2Codec>() {
        return capped(bzip2::read::BzDecoder::new(&raw[..]), limit);
    }
    if any.is::<ZstdCodec>() {
        // One shot into a buffer of the declared size (as fast as zarrs' own path), which
        // zstd refuses to write past.
        let capacity = usize::try_from(limit).map_err(|_| DecodeError::Unaddressable)?;
        return zstd_decompress(&raw, capacity).map_err(|e| {
            let declared = zstd::zstd_safe::get_frame_content_size(&raw).ok().flatten();
            if declared.is_some_and(|n| n > limit) || e.to_string().contains("too small") {
                DecodeError::TooLarge { limit }
            } else {
                DecodeError::Decompress(e)
            }
        });
    }
    if any.is::<BloscCodec>() && blosc_declared_size(&raw).is_some_and(|n| n > limit) {
        return Err(DecodeError::TooLarge { limit });
    }
    // Checksums and the like: they do not expand their input.
    let out = codec.decode(raw, representation, options)?.into_owned();
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

/// Reads `reader` to its end, failing as soon as it yields more than `limit` bytes.
fn capped(reader: impl Read, limit: u64) -> Result<Vec<u8>, DecodeError> {
    let capacity = usize::try_from(limit.saturating_add(1)).map_err(|_| DecodeError::Unaddressable)?;
    let mut out = Vec::with_capacity(capacity);
    reader.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

/// The uncompressed size a blosc (v1) header states: bytes 4..8, little endian.
fn blosc_declared_size(raw: &[u8]) -> Option<u64> {
    let bytes: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
    Some(u64::from(u32::from_le_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zstd_stops_at_the_declared_size() {
        let codec = ZstdCodec::new(3, false);
        let bomb = zstd::bulk::compress(&vec![7u8; 1 << 20], 3).unwrap();
        let representation = BytesRepresentation::FixedSize(4096);
        let options = CodecOptions::default();
        let err = decode_stage(&codec, Cow::Owned(bomb.clone()), &representation, 4096, &options).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { limit: 4096 }), "{err}");
        let whole = decode_stage(&codec, Cow::Owned(bomb), &representation, 1 << 20, &options).unwrap();
        assert_eq!(whole, vec![7u8; 1 << 20]);
        let garbage = decode_stage(&codec, Cow::Owned(vec![1, 2, 3]), &representation, 4096, &options).unwrap_err();
        assert!(matches!(garbage, DecodeError::Decompress(_)), "{garbage}");
    }

    #[test]
    fn the_kept_zstd_context_decodes_frame_after_frame_and_is_dropped_after_a_bad_one() {
        for i in 0..5u8 {
            let frame: Vec<u8> = (0..10_000u32).map(|j| (j as u8).wrapping_mul(i | 1)).collect();
            let compressed = zstd::bulk::compress(&frame, 1).unwrap();
            if i == 2 {
                assert!(zstd_decompress(&compressed[..compressed.len() / 2], frame.len()).is_err());
                assert!(ZSTD_CONTEXT.with_borrow(Option::is_none), "dropped after the error");
            }
            assert_eq!(zstd_decompress(&compressed, frame.len()).unwrap(), frame, "frame {i}");
            assert!(ZSTD_CONTEXT.with_borrow(Option::is_some), "kept after frame {i}");
        }
    }

    #[test]
    fn capped_readers_stop_past_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 1 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 4096);
        let err = capped(flate2::read::GzDecoder::new(&bomb[..]), 1000).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { limit: 1000 }), "{err}");
        assert_eq!(
            capped(flate2::read::GzDecoder::new(&bomb[..]), 1 << 20).unwrap().len(),
            1 << 20
        );
        let zstd_bomb = zstd::bulk::compress(&vec![7u8; 1 << 20], 3).unwrap();
        let err = capped(zstd::stream::read::Decoder::with_buffer(&zstd_bomb[..]).unwrap(), 4096).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { .. }), "{err}");
    }
}
