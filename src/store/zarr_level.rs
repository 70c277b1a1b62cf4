//! Writing one level array of a Zarr output, whichever its layout: chunks encoded with the
//! array's codecs and stored one file each (Zarr v2, or v3 without sharding), or encoded
//! with the inner codecs and gathered into shards written whole by a [`ShardWriter`].
//! The layouts differ only in their metadata, which the sinks write.

use std::fs;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use zarrs::array::codec::CodecChain;
use zarrs::array::{Array, ArrayBytes, CodecOptions};
use zarrs::storage::ReadableWritableStorageTraits;

use super::error::{StoreError, boxed};
use super::grid::RegularGrid;
use super::shard::ShardWriter;
use super::sink::LevelSink;
use super::whole_file::WholeFiles;
use super::{Source, WriteStorage, tree};

/// The inner chunks of a sharded level.
pub(crate) struct InnerChunks {
    /// Their codecs.
    pub(crate) chain: CodecChain,
}

/// One level array being written.
pub(crate) struct ZarrLevel {
    /// The array as zarrs sees it: chunk (shard) keys, codecs, fill value.
    array: Array<dyn ReadableWritableStorageTraits>,
    storage: WriteStorage,
    dir: PathBuf,
    /// The output's directory, when chunks are plain files under it.
    root: Option<PathBuf>,
    /// How chunk files under the output's directory are written and copied.
    files: WholeFiles,
    chunks: RegularGrid,
    units: RegularGrid,
    inner: Option<InnerChunks>,
}

impl ZarrLevel {
    /// A level over `array` of `shape` with `chunks`, gathered into `shards` when given.
    pub(crate) fn new(
        array: Array<dyn ReadableWritableStorageTraits>,
        storage: WriteStorage,
        dir: PathBuf,
        root: Option<PathBuf>,
        (shape, chunks, shards): (&[u64], &[u64], Option<&[u64]>),
        inner: Option<InnerChunks>,
    ) -> Self {
        Self {
            files: WholeFiles::under(root.as_deref().unwrap_or(&dir)),
            array,
            storage,
            dir,
            root,
            chunks: RegularGrid::new(shape, chunks),
            units: RegularGrid::new(shape, shards.unwrap_or(chunks)),
            inner,
        }
    }

    fn codec_options() -> CodecOptions {
        CodecOptions::default().with_concurrent_target(1)
    }

    fn write_error(&self, key: String) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> StoreError + '_ {
        move |source| StoreError::WriteChunk {
            path: self.dir.clone(),
            key: key.clone(),
            source,
        }
    }

    /// `data` (a whole chunk of `shape`) encoded with `chain`; `None` if it holds only the
    /// fill value (it is then not stored).
    fn encode(
        &self,
        chain: &CodecChain,
        shape: &[NonZeroU64],
        data: &[u8],
        error: &dyn Fn(Box<dyn std::error::Error + Send + Sync>) -> StoreError,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        use zarrs::array::codec::api::ArrayToBytesCodecTraits;
        let bytes = ArrayBytes::new_flen(data);
        if bytes.is_fill_value(self.array.fill_value()) {
            return Ok(None);
        }
        let encoded = chain
            .encode(
                bytes,
                shape,
                self.array.data_type(),
                self.array.fill_value(),
                &Self::codec_options(),
            )
            .map_err(|e| error(boxed(e)))?;
        Ok(Some(encoded.into_owned()))
    }

    /// Chunks per shard along each axis.
    fn chunks_per_shard(&self) -> Vec<u64> {
        self.units
            .chunk()
            .iter()
            .zip(self.chunks.chunk())
            .map(|(&s, &c)| s / c)
            .collect()
    }
}

impl LevelSink for ZarrLevel {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn chunks(&self) -> &RegularGrid {
        &self.chunks
    }

    fn units(&self) -> &RegularGrid {
        &self.units
    }

    fn is_sharded(&self) -> bool {
        self.inner.is_some()
    }

    fn write_chunk(&self, indices: &[u64], data: &[u8]) -> Result<Option<u64>, StoreError> {
        let key = self.array.chunk_key(indices);
        let write_error = self.write_error(key.to_string());
        let shape = self.array.chunk_shape(indices).map_err(|e| write_error(boxed(e)))?;
        let Some(encoded) = self.encode(&self.array.codecs(), &shape, data, &write_error)? else {
            // As zarrs does: a chunk of fill value is absent, whatever was there before.
            self.storage.erase(&key).map_err(|e| write_error(boxed(e)))?;
            return Ok(None);
        };
        let len = encoded.len() as u64;
        self.storage
            .set(&key, encoded.into())
            .map_err(|e| write_error(boxed(e)))?;
        Ok(Some(len))
    }

    fn copy_stored_chunk(&self, source: &dyn Source, indices: &[u64]) -> Result<Option<u64>, StoreError> {
        let key = self.array.chunk_key(indices);
        let write_error = self.write_error(key.to_string());
        if let (Some(root), Some(from)) = (&self.root, source.stored_chunk_file(indices)) {
            // File to file: one copy in the kernel (a reflink where the file system has them).
            let to = root.join(key.as_str());
            match fs::metadata(&from) {
                // A missing chunk is the fill value: it stays missing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Ok(meta) if !meta.is_file() => {
                    return Err(StoreError::ReadChunk {
                        path: source.path().to_path_buf(),
                        key: source.chunk_name(indices),
                        source: boxed(tree::not_regular(&meta)),
                    });
                }
                _ => {}
            }
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir).map_err(|e| write_error(boxed(e)))?;
            }
            return self.files.copy(&from, &to).map(Some).map_err(|e| write_error(boxed(e)));
        }
        let Some(bytes) = source.stored_chunk(indices)? else {
            return Ok(None);
        };
        let len = bytes.len() as u64;
        self.storage
            .set(&key, bytes.into())
            .map_err(|e| write_error(boxed(e)))?;
        Ok(Some(len))
    }

    fn encode_chunk(&self, indices: &[u64], data: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = self.inner.as_ref().expect("encode_chunk is for sharded levels");
        let name = format!("{} (inner chunk {indices:?})", self.unit_name(&self.unit_of(indices).0));
        let shape: Vec<NonZeroU64> = self
            .chunks
            .chunk()
            .iter()
            .map(|&c| NonZeroU64::new(c).expect("chunk sizes are at least 1"))
            .collect();
        self.encode(&inner.chain, &shape, data, &self.write_error(name))
    }

    fn open_shard(&self, unit: &[u64]) -> Result<ShardWriter, StoreError> {
        let key = self.array.chunk_key(unit);
        let per_shard = self.chunks_per_shard();
        // Inner chunks of the shard inside the array: the last shard along an axis may hold fewer.
        let grid = self.chunks.grid_shape();
        let expected = unit
            .iter()
            .zip(&per_shard)
            .zip(&grid)
            .map(|((&u, &p), &g)| p.min(g - u * p))
            .product();
        match &self.root {
            Some(root) => ShardWriter::to_file(root.join(key.as_str()), &per_shard, expected)
                .map_err(|e| self.write_error(key.to_string())(boxed(e))),
            None => Ok(ShardWriter::to_store(self.storage.clone(), key, &per_shard, expected)),
        }
    }

    fn unit_name(&self, unit: &[u64]) -> String {
        self.array.chunk_key(unit).to_string()
    }

    fn stored_size(&self, flat: u64) -> Option<u64> {
        let key = self.array.chunk_key(&self.units.indices(flat));
        self.storage.size_key(&key).ok().flatten()
    }
}
