//! The file-system store every input and output is read through: zarrs' `FilesystemStore`,
//! reading regular files only. zarrs opens whatever is at a key's path, so a FIFO named like
//! a chunk or a metadata file would block the build forever; here such a key is an error
//! naming it. Symbolic links to regular files are followed, as a file system user expects.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits, StorageError, StoreKey, StorePrefix,
    WritableStorageTraits,
};

use super::tree::not_regular;
use super::whole_file::WholeFiles;
use super::{StoreError, WriteStorage};

/// A wrapper of an output's store (instrumentation, fault injection).
pub(crate) type OutputLayer = dyn Fn(WriteStorage) -> WriteStorage + Send + Sync;

/// The root of an output being written, as both output layouts (v0.4 and v0.5) hold it.
pub(crate) struct OutputRoot {
    /// The output directory.
    pub(crate) path: PathBuf,
    /// Its store, through the layer if one was given.
    pub(crate) storage: WriteStorage,
    /// Whether chunks are plain files under `path` (no layer in between, so they can be
    /// copied and renamed as files).
    pub(crate) plain_files: bool,
    /// True for an output created earlier (by a partitioned build's plan): its metadata is
    /// checked, never written again.
    pub(crate) existing: bool,
}

impl OutputRoot {
    /// The output at `path`, written through `layer` if given; `existing` as the field says.
    ///
    /// # Errors
    /// [`StoreError::Io`] if `path` cannot be a store.
    pub(crate) fn open(path: &Path, layer: Option<&OutputLayer>, existing: bool) -> Result<Self, StoreError> {
        let storage: WriteStorage = RegularFileStore::new(path).map_err(|e| StoreError::Io {
            action: "cannot open the output store",
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let (storage, plain_files) = match layer {
            Some(layer) => (layer(storage), false),
            None => (storage, true),
        };
        Ok(Self {
            path: path.to_path_buf(),
            storage,
            plain_files,
            existing,
        })
    }
}

/// A [`FilesystemStore`] that refuses to read anything but regular files.
#[derive(Debug)]
pub struct RegularFileStore {
    inner: FilesystemStore,
    root: PathBuf,
    /// How files are written under `root`.
    files: WholeFiles,
}

impl RegularFileStore {
    /// The store rooted at `root`.
    ///
    /// # Errors
    /// The store's error, as text, if `root` cannot be a store.
    pub fn new(root: &Path) -> Result<Arc<Self>, String> {
        let inner = FilesystemStore::new(root).map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            inner,
            root: root.to_path_buf(),
            files: WholeFiles::under(root),
        }))
    }

    /// Fails for a key whose path exists but is not a regular file.
    fn check(&self, key: &StoreKey) -> Result<(), StorageError> {
        match std::fs::metadata(self.root.join(key.as_str())) {
            Ok(meta) if !meta.is_file() => Err(StorageError::Other(format!(
                "`{}` cannot be read: {}",
                key.as_str(),
                not_regular(&meta)
            ))),
            _ => Ok(()),
        }
    }
}

impl ReadableStorageTraits for RegularFileStore {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.check(key)?;
        self.inner.get_partial_many(key, byte_ranges)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.check(key)?;
        self.inner.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

impl WritableStorageTraits for RegularFileStore {
    /// Writes the file whole, as zarrs does, but without zarrs' `fsync` of every file: a
    /// build writes thousands of chunk files, and waiting for each to reach the disk left
    /// cores idle (measured on ext4 with 2 cores: a 512 MiB y/x-only nearest build took
    /// 1.18× as long with it). A killed build loses nothing written (the page cache
    /// survives the process); durability against a power loss is not promised for chunk
    /// files (README, "What does not hold yet").
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.check(key)?;
        let path = self.inner.key_to_fspath(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        self.files.write(&path, &value)?;
        Ok(())
    }

    fn set_partial_many(&self, key: &StoreKey, offset_values: OffsetBytesIterator) -> Result<(), StorageError> {
        self.check(key)?;
        self.inner.set_partial_many(key, offset_values)
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.inner.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.inner.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        self.inner.supports_set_partial()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_chunk_is_an_error_not_a_hang() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::create_dir(dir.path().join("0")).unwrap();
        let fifo = dir.path().join("0/0");
        crate::synthetic::make_fifo(&fifo);
        let store = RegularFileStore::new(dir.path()).unwrap();
        let key = StoreKey::new("0/0").unwrap();
        let err = store.get(&key).unwrap_err();
        assert!(
            err.to_string()
                .contains("`0/0` cannot be read: it is not a regular file"),
            "{err}"
        );
        std::fs::write(dir.path().join("0/1"), b"data").unwrap();
        assert_eq!(store.size_key(&StoreKey::new("0/1").unwrap()).unwrap(), Some(4));
        let err = store.set(&key, Bytes::from_static(b"x")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn set_makes_the_directories_and_replaces_the_whole_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = RegularFileStore::new(dir.path()).unwrap();
        let key = StoreKey::new("1/0/2").unwrap();
        store.set(&key, Bytes::from_static(b"longer contents")).unwrap();
        store.set(&key, Bytes::from_static(b"short")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("1/0/2")).unwrap(), b"short");
        assert_eq!(store.get(&key).unwrap().as_deref(), Some(&b"short"[..]));
    }
}
