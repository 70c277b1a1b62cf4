//! The codec floor: decoding every chunk of an input, and encoding every chunk of an array
//! again with its own codec, with nothing else done. Any tool that builds a pyramid pays at
//! least the first plus the second over the levels above 0 (`ome-pyramid bench`).

use std::path::Path;

use zarrs::array::{ArrayBytes, ArraySubset, CodecOptions};

use super::decode::ChunkDecoder;
use super::error::boxed;
use super::{ChunkSource, StoreError, open_source};

/// What a decode-only or encode-only pass did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DecodeReport {
    /// Chunks decoded (or encoded).
    pub chunks: u64,
    /// Decoded bytes (the bytes given to the encoder, for an encode-only pass).
    pub bytes: u64,
    /// Wall time (of the encoding alone, for an encode-only pass).
    pub seconds: f64,
}

/// Reads and decodes every chunk of the input's level 0 once, in parallel on the current
/// rayon pool, and discards the data: the floor under any pyramid build of that input.
///
/// # Errors
/// [`StoreError`] if the input cannot be opened or a chunk cannot be read.
pub fn decode_only(path: &Path) -> Result<DecodeReport, StoreError> {
    use rayon::prelude::*;
    let source = super::open_input(path, None, None)?;
    let started = std::time::Instant::now();
    let grid = source.grid_shape();
    let total: u64 = grid.iter().product();
    let bytes = (0..total)
        .into_par_iter()
        .map(|i| {
            let mut rest = i;
            let mut idx = vec![0u64; grid.len()];
            for a in (0..grid.len()).rev() {
                idx[a] = rest % grid[a];
                rest /= grid[a];
            }
            source.read_chunk(&idx).map(|data| data.len() as u64)
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    Ok(DecodeReport {
        chunks: total,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Decoded bytes an encode-only pass holds at once.
const ENCODE_ONLY_BATCH_BYTES: u64 = 1 << 30;

/// Encodes every chunk of the array (or OME-Zarr level 0) at `path` again with its own
/// codecs, in parallel on the current rayon pool, and discards the result. Chunks are
/// decoded first, in batches of at most 1 GiB, and only the encoding is timed (together
/// with the all-fill check a writer makes before encoding). A chunk that is all fill
/// value is not encoded, as a writer would not store it.
///
/// With [`decode_only`] of a pyramid's level 0, this over its other levels gives the codec
/// floor of building them: any tool must decode the input and encode those levels.
///
/// # Errors
/// [`StoreError`] if the array cannot be opened or a chunk cannot be read or encoded.
pub fn encode_only(path: &Path) -> Result<DecodeReport, StoreError> {
    use rayon::prelude::*;
    use zarrs::array::ArrayToBytesCodecTraits;
    let source = open_source(path)?;
    let array = source.array();
    let array_dir = source.array_dir().to_path_buf();
    let codec_error = |indices: &[u64], e: Box<dyn std::error::Error + Send + Sync>| StoreError::ReadChunk {
        path: array_dir.clone(),
        key: array.chunk_key(indices).to_string(),
        source: e,
    };
    let grid_shape = array.chunk_grid_shape().to_vec();
    let all: Vec<Vec<u64>> = ArraySubset::new_with_shape(grid_shape)
        .indices()
        .into_iter()
        .map(|i| i.to_vec())
        .collect();
    let array_bytes = source.shape().iter().product::<u64>() * source.dtype().size() as u64;
    let chunk_bytes = array_bytes.div_ceil(all.len().max(1) as u64);
    let per_batch = usize::try_from((ENCODE_ONLY_BATCH_BYTES / chunk_bytes.max(1)).max(1)).unwrap_or(1);
    let options = CodecOptions::default().with_concurrent_target(1);
    let decoder = ChunkDecoder::new(array.clone());
    let (mut chunks, mut bytes, mut seconds) = (0u64, 0u64, 0.0f64);
    for batch in all.chunks(per_batch) {
        let decoded = batch
            .par_iter()
            .map(|indices| {
                let shape = array.chunk_shape(indices).map_err(|e| codec_error(indices, boxed(e)))?;
                let shape_u64: Vec<u64> = shape.iter().map(|n| n.get()).collect();
                let data = decoder
                    .decode(indices, &shape_u64)
                    .map_err(|e| codec_error(indices, boxed(e)))?;
                Ok((indices, ArrayBytes::new_flen(data), shape))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let started = std::time::Instant::now();
        let counts = decoded
            .into_par_iter()
            .map(|(indices, data, shape)| {
                if data.is_fill_value(array.fill_value()) {
                    return Ok((0, 0));
                }
                let size = data.size() as u64;
                array
                    .codecs()
                    .encode(data, &shape, array.data_type(), array.fill_value(), &options)
                    .map_err(|e| codec_error(indices, boxed(e)))?;
                Ok((1, size))
            })
            .collect::<Result<Vec<(u64, u64)>, StoreError>>()?;
        seconds += started.elapsed().as_secs_f64();
        chunks += counts.iter().map(|c| c.0).sum::<u64>();
        bytes += counts.iter().map(|c| c.1).sum::<u64>();
    }
    Ok(DecodeReport { chunks, bytes, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::small_test_array;

    #[test]
    fn encode_only_encodes_every_stored_chunk_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = small_test_array(dir.path());
        let source = open_source(&path).unwrap();
        let report = encode_only(&path).unwrap();
        assert_eq!((report.chunks, report.bytes), (16, 64 * 64 * 2));
        assert!(report.seconds > 0.0);
        // A missing chunk reads as fill value, which a writer does not store: not encoded.
        std::fs::remove_file(path.join(source.chunk_key(&[1, 2]))).unwrap();
        let report = encode_only(&path).unwrap();
        assert_eq!((report.chunks, report.bytes), (15, 15 * 16 * 16 * 2));
        // Decoding only sees every chunk, stored or not.
        assert_eq!(decode_only(&path).unwrap().chunks, 16);
    }
}
