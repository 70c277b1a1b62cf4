//! The levels a program computed, read back into host-visible memory that stays mapped
//! until they are written out: the engine encodes its chunks straight from there
//! ([`MappedLevels`]), rather than from host tiles the levels would first be copied into.
//!
//! The buffers come from the context's pool, not from a ring slot, because they outlive the
//! task: a slot takes the next tile while the workers still encode the last one's levels.
//! Dropping the levels unmaps their buffer and gives it back to the pool.

use std::sync::Arc;

use super::pool::BufferPool;
use super::ring::{SizedBuffer, ensure};
use crate::dtype::{DType, Sample};
use crate::tile::TileData;

/// Readback buffers no task holds.
pub type ReadbackPool = BufferPool<SizedBuffer>;

impl ReadbackPool {
    /// An unmapped buffer of at least `bytes` (a multiple of 4): the pool's largest, if
    /// large enough, else a new one with headroom (at most `max_bytes`).
    pub(super) fn take(&self, device: &wgpu::Device, bytes: u64, max_bytes: u64) -> SizedBuffer {
        let mut buffer = self.take_largest(|b| b.bytes, |b| b.bytes >= bytes.max(4).next_multiple_of(4));
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        ensure(device, &mut buffer, bytes, usage, "readback", max_bytes);
        buffer.expect("ensured")
    }
}

/// The levels of one program, in a mapped readback buffer: level `i` is `elements[i]`
/// elements of the program's dtype at byte `offsets[i]`.
pub struct MappedLevels {
    held: Option<Held>,
    buffer: Option<SizedBuffer>,
    pool: Arc<ReadbackPool>,
    dtype: DType,
    /// Per level, its byte offset and element count.
    levels: Vec<(usize, usize)>,
}

impl std::fmt::Debug for MappedLevels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedLevels")
            .field("dtype", &self.dtype)
            .field("levels", &self.levels)
            .finish_non_exhaustive()
    }
}

/// Where the levels' bytes are.
enum Held {
    /// In the mapped buffer.
    Mapped(wgpu::BufferView),
    /// Copied out of a mapping whose address would not align 32-bit elements (no driver
    /// seen does that; Vulkan maps at 64-byte boundaries at least).
    Copied(Vec<u32>),
}

impl Held {
    fn bytes(&self) -> &[u8] {
        match self {
            Held::Mapped(view) => view,
            Held::Copied(words) => bytemuck::cast_slice(words),
        }
    }
}

impl MappedLevels {
    /// Levels at `levels` (byte offset, elements) in `buffer`, mapped as `view` (whole
    /// words); `buffer` goes back to `pool` when they are dropped.
    pub(super) fn new(
        view: wgpu::BufferView,
        buffer: SizedBuffer,
        pool: Arc<ReadbackPool>,
        dtype: DType,
        levels: Vec<(usize, usize)>,
    ) -> Self {
        let held = if view.as_ptr().align_offset(align_of::<u32>()) == 0 {
            Held::Mapped(view)
        } else {
            let words = bytemuck::pod_collect_to_vec(&view);
            // No view may be left when `release` unmaps the buffer below.
            drop(view);
            Held::Copied(words)
        };
        let mut levels = Self {
            held: Some(held),
            buffer: Some(buffer),
            pool,
            dtype,
            levels,
        };
        if matches!(levels.held, Some(Held::Copied(_))) {
            levels.release();
        }
        levels
    }

    /// Unmaps the buffer (once no view of it is left) and gives it back to the pool.
    fn release(&mut self) {
        // The view first: a buffer is unmapped only once no view of it is left.
        if matches!(self.held, Some(Held::Mapped(_))) {
            self.held = None;
        }
        if let Some(buffer) = self.buffer.take() {
            buffer.buffer.unmap();
            self.pool.give(buffer);
        }
    }

    /// How many levels.
    #[must_use]
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// True if there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Level `i`'s elements, in place.
    ///
    /// # Panics
    /// If `T` is not the levels' data type.
    #[must_use]
    pub fn level<T: Sample>(&self, i: usize) -> &[T] {
        assert_eq!(T::DTYPE, self.dtype, "mapped levels are read as their own dtype");
        let (at, elements) = self.levels[i];
        let bytes = self.held.as_ref().expect("held until dropped").bytes();
        // Every level starts at a multiple of 4 bytes of word-aligned memory, which aligns
        // every type a GPU computes.
        bytemuck::cast_slice(&bytes[at..at + elements * size_of::<T>()])
    }

    /// Every level copied into host tiles (the buffer is released).
    #[must_use]
    pub fn to_host(self) -> Vec<TileData> {
        (0..self.len())
            .map(|i| {
                crate::dispatch_dtype!(self.dtype, T => {
                    use crate::tile::TileElement;
                    T::wrap(self.level::<T>(i).to_vec())
                })
            })
            .collect()
    }
}

impl Drop for MappedLevels {
    fn drop(&mut self) {
        self.release();
    }
}
