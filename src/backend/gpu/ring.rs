//! A ring of reusable GPU buffer sets. Each task takes a slot, uploads, computes and reads
//! back, then returns it; with several slots, the upload, compute and readback of
//! different tasks overlap on the device. Buffers grow when a larger tile needs them and
//! are reused otherwise.

use std::sync::{Condvar, Mutex, MutexGuard};

use super::upload::UploadBuffer;

/// A buffer and the bytes it holds.
pub struct SizedBuffer {
    /// The buffer.
    pub buffer: wgpu::Buffer,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The buffers one task uses.
#[derive(Default)]
pub struct SlotBuffers {
    /// One per level of the chain (index 0: the source tile).
    pub levels: Vec<Option<SizedBuffer>>,
    /// Gaussian intermediates.
    pub scratch: [Option<SizedBuffer>; 2],
    /// Parameter blocks.
    pub params: Option<SizedBuffer>,
    /// Stencil tables.
    pub aux: Option<SizedBuffer>,
    /// What the slot's tasks upload through (mapped between them).
    pub upload: Option<UploadBuffer>,
}

/// Makes sure `slot` holds a buffer of at least `bytes`, reallocating with headroom.
pub fn ensure<'a>(
    device: &wgpu::Device,
    slot: &'a mut Option<SizedBuffer>,
    bytes: u64,
    usage: wgpu::BufferUsages,
    label: &str,
    max_bytes: u64,
) -> &'a wgpu::Buffer {
    let bytes = bytes.max(4).next_multiple_of(4);
    let too_small = slot.as_ref().is_none_or(|b| b.bytes < bytes);
    if too_small {
        // Headroom so slowly growing tiles do not reallocate each time.
        let size = (bytes + bytes / 4)
            .next_multiple_of(1 << 16)
            .min(max_bytes.max(bytes))
            .max(bytes);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        *slot = Some(SizedBuffer { buffer, bytes: size });
    }
    &slot.as_ref().expect("just ensured").buffer
}

impl SlotBuffers {
    /// Bytes of its buffers: device buffers, and the mapped upload buffer in host memory.
    fn bytes(&self) -> u64 {
        let sized = self
            .levels
            .iter()
            .chain(&self.scratch)
            .chain([&self.params, &self.aux])
            .flatten()
            .map(|b| b.bytes);
        sized.chain(self.upload.as_ref().map(UploadBuffer::bytes)).sum()
    }
}

/// A bounded set of [`SlotBuffers`].
pub struct BufferRing {
    free: Mutex<(Vec<SlotBuffers>, usize)>,
    returned: Condvar,
    capacity: usize,
}

/// A slot taken from the ring; goes back on drop.
pub struct RingSlot<'a> {
    ring: &'a BufferRing,
    buffers: Option<SlotBuffers>,
}

impl std::ops::Deref for RingSlot<'_> {
    type Target = SlotBuffers;
    fn deref(&self) -> &SlotBuffers {
        self.buffers.as_ref().expect("held until drop")
    }
}

impl std::ops::DerefMut for RingSlot<'_> {
    fn deref_mut(&mut self) -> &mut SlotBuffers {
        self.buffers.as_mut().expect("held until drop")
    }
}

impl Drop for RingSlot<'_> {
    fn drop(&mut self) {
        if let Some(buffers) = self.buffers.take() {
            self.ring.lock().0.push(buffers);
            self.ring.returned.notify_one();
        }
    }
}

impl BufferRing {
    /// A ring of at most `capacity` slots, created on demand.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            free: Mutex::new((Vec::new(), 0)),
            returned: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (Vec<SlotBuffers>, usize)> {
        self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a free slot, waiting while all are in use.
    pub fn acquire(&self) -> RingSlot<'_> {
        let mut state = self.lock();
        loop {
            if let Some(buffers) = state.0.pop() {
                return RingSlot {
                    ring: self,
                    buffers: Some(buffers),
                };
            }
            if state.1 < self.capacity {
                state.1 += 1;
                return RingSlot {
                    ring: self,
                    buffers: Some(SlotBuffers::default()),
                };
            }
            state = self
                .returned
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Drops the buffers of the slots no task holds (each is made anew by its next task);
    /// returns their bytes.
    pub fn release_idle(&self) -> u64 {
        let mut state = self.lock();
        state.0.iter_mut().map(|slot| std::mem::take(slot).bytes()).sum()
    }

    /// Bytes of the buffers that the slots no task holds keep.
    #[cfg(test)]
    pub fn idle_bytes(&self) -> u64 {
        self.lock().0.iter().map(SlotBuffers::bytes).sum()
    }

    /// Slots in the ring.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
