//! Buffers that outlive the task that used them, kept for the next: the staging buffers
//! tiles are read into and the readback buffers levels are written out from. Each is taken
//! by one task (a tile being read, levels being written) and given back after.

use std::sync::{Mutex, MutexGuard};

/// Buffers no task holds.
pub struct BufferPool<B> {
    buffers: Mutex<Vec<B>>,
}

impl<B> Default for BufferPool<B> {
    fn default() -> Self {
        Self {
            buffers: Mutex::new(Vec::new()),
        }
    }
}

impl<B> BufferPool<B> {
    fn lock(&self) -> MutexGuard<'_, Vec<B>> {
        self.buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The largest buffer by `bytes`, if there is one and `usable` accepts it: the largest,
    /// so that a few buffers serve tiles of every size.
    pub fn take_largest(&self, bytes: impl Fn(&B) -> u64, usable: impl FnOnce(&B) -> bool) -> Option<B> {
        let mut buffers = self.lock();
        let largest = (0..buffers.len()).max_by_key(|&i| bytes(&buffers[i]))?;
        usable(&buffers[largest]).then(|| buffers.swap_remove(largest))
    }

    /// Puts `buffer` back for the next task.
    pub fn give(&self, buffer: B) {
        self.lock().push(buffer);
    }

    /// Drops every buffer no task holds; returns their bytes (by `bytes`). The buffers
    /// tasks hold now still come back to the pool when given.
    pub fn release(&self, bytes: impl Fn(&B) -> u64) -> u64 {
        let released = std::mem::take(&mut *self.lock());
        released.iter().map(bytes).sum()
    }

    /// Bytes of the buffers held now (by `bytes`).
    #[cfg(test)]
    pub fn bytes(&self, bytes: impl Fn(&B) -> u64) -> u64 {
        self.lock().iter().map(bytes).sum()
    }

    /// Buffers held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}
