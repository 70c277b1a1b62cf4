//! Writing one shard of a sharded array (Zarr v3 `sharding_indexed`, index at the end)
//! without holding it in memory, and without ever showing a torn one.
//!
//! Inner chunks are appended to a temporary file as they are given; then the index (per
//! inner chunk in C order its offset and length as little-endian `u64`s, `u64::MAX` twice
//! for one not stored) and the index's CRC32C are appended, the file is flushed and renamed
//! into place. A reader sees the shard whole or not at all; a leftover temporary file (a
//! killed build) is never taken for a shard, since its name is no chunk key. A shard with
//! no stored inner chunk is not written at all.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use zarrs::storage::StoreKey;

use super::WriteStorage;
use super::tree::TEMPORARY_SUFFIX;

/// Where a shard goes.
enum Target {
    /// A file, written through a temporary file renamed into place.
    File {
        path: PathBuf,
        temp: PathBuf,
        file: BufWriter<File>,
    },
    /// A store key, set once the shard is whole (for outputs read through a store layer).
    Store {
        storage: WriteStorage,
        key: StoreKey,
        bytes: Vec<u8>,
    },
}

/// One shard being written.
pub(crate) struct ShardWriter {
    /// Taken by [`ShardWriter::finish`]; a writer dropped with it still set was abandoned.
    target: Option<Target>,
    /// Inner chunks along each axis of the shard (the index's shape).
    chunks_per_shard: Vec<u64>,
    index: Vec<u64>,
    offset: u64,
    /// Inner chunks that belong to the shard (inside the array), stored or not.
    expected: u64,
    received: u64,
}

impl ShardWriter {
    fn new(target: Target, chunks_per_shard: &[u64], expected: u64) -> Self {
        let slots: u64 = chunks_per_shard.iter().product();
        Self {
            target: Some(target),
            chunks_per_shard: chunks_per_shard.to_vec(),
            index: vec![u64::MAX; usize::try_from(2 * slots).expect("a shard index fits in memory")],
            offset: 0,
            expected,
            received: 0,
        }
    }

    /// A shard written to the file `path` (through `path` + `.tmp-ome-pyramid`).
    ///
    /// # Errors
    /// The error of creating the temporary file or its directory.
    pub(crate) fn to_file(path: PathBuf, chunks_per_shard: &[u64], expected: u64) -> std::io::Result<Self> {
        let mut temp = path.clone().into_os_string();
        temp.push(TEMPORARY_SUFFIX);
        let temp = PathBuf::from(temp);
        if let Some(dir) = temp.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = BufWriter::with_capacity(1 << 20, File::create(&temp)?);
        Ok(Self::new(Target::File { path, temp, file }, chunks_per_shard, expected))
    }

    /// A shard set as a whole under `key` of `storage` once complete.
    pub(crate) fn to_store(storage: WriteStorage, key: StoreKey, chunks_per_shard: &[u64], expected: u64) -> Self {
        Self::new(
            Target::Store {
                storage,
                key,
                bytes: Vec::new(),
            },
            chunks_per_shard,
            expected,
        )
    }

    /// Adds inner chunk `local` (its indices within the shard): its encoded bytes, or
    /// `None` for one that holds only the fill value (not stored).
    ///
    /// # Errors
    /// The error of writing the temporary file.
    pub(crate) fn put(&mut self, local: &[u64], encoded: Option<&[u8]>) -> std::io::Result<()> {
        self.received += 1;
        let Some(bytes) = encoded else { return Ok(()) };
        let slot = local
            .iter()
            .zip(&self.chunks_per_shard)
            .fold(0u64, |flat, (&i, &n)| flat * n + i);
        let slot = usize::try_from(slot).expect("a shard index fits in memory");
        self.index[2 * slot] = self.offset;
        self.index[2 * slot + 1] = bytes.len() as u64;
        self.offset += bytes.len() as u64;
        match &mut self.target {
            Some(Target::File { file, .. }) => file.write_all(bytes),
            Some(Target::Store { bytes: buffer, .. }) => {
                buffer.extend_from_slice(bytes);
                Ok(())
            }
            None => unreachable!("a finished shard takes no more chunks"),
        }
    }

    /// True once every inner chunk of the shard has been given.
    pub(crate) fn is_complete(&self) -> bool {
        self.received >= self.expected
    }

    /// Writes the index and puts the shard in place; returns its bytes, or `None` if no
    /// inner chunk was stored (then nothing is, and a shard left there before is removed).
    ///
    /// # Errors
    /// The error of writing, flushing or renaming.
    pub(crate) fn finish(mut self) -> std::io::Result<Option<u64>> {
        let target = self.target.take().expect("finished once");
        let stored = self.index.iter().any(|&v| v != u64::MAX);
        let index: Vec<u8> = self.index.iter().flat_map(|v| v.to_le_bytes()).collect();
        let checksum = crc32c::crc32c(&index).to_le_bytes();
        let size = self.offset + index.len() as u64 + checksum.len() as u64;
        match target {
            Target::File { path, temp, file } => {
                if !stored {
                    drop(file);
                    fs::remove_file(&temp)?;
                    return match fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(None),
                    };
                }
                let mut file = file;
                file.write_all(&index)?;
                file.write_all(&checksum)?;
                let file = file.into_inner().map_err(std::io::IntoInnerError::into_error)?;
                file.sync_all()?;
                drop(file);
                fs::rename(&temp, &path)?;
                if let Some(dir) = path.parent()
                    && let Ok(d) = File::open(dir)
                {
                    // Make the rename durable where directories can be synced.
                    let _ = d.sync_all();
                }
            }
            Target::Store {
                storage,
                key,
                mut bytes,
            } => {
                if !stored {
                    storage.erase(&key).map_err(std::io::Error::other)?;
                    return Ok(None);
                }
                bytes.extend_from_slice(&index);
                bytes.extend_from_slice(&checksum);
                storage.set(&key, bytes.into()).map_err(std::io::Error::other)?;
            }
        }
        Ok(Some(size))
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if let Some(Target::File { temp, .. }) = &self.target {
            // An abandoned shard (the build failed or stopped): no half file stays behind.
            let _ = fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use zarrs::array::{Array, ArrayMetadataV3};
    use zarrs::filesystem::FilesystemStore;

    /// A 4×6 uint16 array of 2×3 shards holding 1×3 inner chunks, no compression.
    fn sharded_array(dir: &std::path::Path) {
        let meta = serde_json::json!({
            "zarr_format": 3, "node_type": "array", "shape": [4, 6], "data_type": "uint16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 3]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0,
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [1, 3],
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                "index_location": "end"}}],
        });
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("zarr.json"), meta.to_string()).unwrap();
    }

    fn u16_bytes(values: &[u16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn shards_read_back_with_zarrs_and_empty_ones_are_not_written() {
        let dir = tempfile::TempDir::new().unwrap();
        sharded_array(dir.path());
        // Shard (0, 0): inner chunk (1, 0) given first, (0, 0) second.
        let mut shard = ShardWriter::to_file(dir.path().join("c/0/0"), &[2, 1], 2).unwrap();
        shard.put(&[1, 0], Some(&u16_bytes(&[4, 5, 6]))).unwrap();
        assert!(!shard.is_complete());
        assert!(!dir.path().join("c/0/0").exists(), "nothing under the final name yet");
        shard.put(&[0, 0], Some(&u16_bytes(&[1, 2, 3]))).unwrap();
        assert!(shard.is_complete());
        assert_eq!(shard.finish().unwrap(), Some(12 + 2 * 2 * 8 + 4));
        // Shard (0, 1): one inner chunk stored, one of fill value.
        let mut shard = ShardWriter::to_file(dir.path().join("c/0/1"), &[2, 1], 2).unwrap();
        shard.put(&[0, 0], None).unwrap();
        shard.put(&[1, 0], Some(&u16_bytes(&[7, 8, 9]))).unwrap();
        shard.finish().unwrap();
        // Shard (1, 0): nothing stored, nothing written.
        let mut shard = ShardWriter::to_file(dir.path().join("c/1/0"), &[2, 1], 2).unwrap();
        shard.put(&[0, 0], None).unwrap();
        shard.put(&[1, 0], None).unwrap();
        assert_eq!(shard.finish().unwrap(), None);
        assert!(!dir.path().join("c/1/0").exists());
        // An abandoned shard leaves no file.
        let mut shard = ShardWriter::to_file(dir.path().join("c/1/1"), &[2, 1], 2).unwrap();
        shard.put(&[0, 0], Some(&u16_bytes(&[1, 1, 1]))).unwrap();
        drop(shard);
        assert_eq!(fs::read_dir(dir.path().join("c/1")).unwrap().count(), 0);

        let store = Arc::new(FilesystemStore::new(dir.path()).unwrap());
        let meta: ArrayMetadataV3 = serde_json::from_slice(&fs::read(dir.path().join("zarr.json")).unwrap()).unwrap();
        let array = Array::new_with_metadata(store, "/", meta.into()).unwrap();
        let values: Vec<u16> = array.retrieve_array_subset(&array.subset_all()).unwrap();
        assert_eq!(
            values,
            vec![1, 2, 3, 0, 0, 0, 4, 5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
