//! A ring slot's upload buffer: host-visible memory that stays allocated and mapped between
//! the slot's tasks. A task copies its source tile (unless the tile was read into a staging
//! buffer, [`super::staged`], which is an upload buffer of the context's pool), parameter
//! blocks and stencil tables into it, unmaps it, and records copies from it to the device
//! buffers at the head of its commands; once that submission is done, the buffer is mapped
//! again for the next task.
//!
//! `Queue::write_buffer` would instead allocate (and, on a first touch, fault in) a staging
//! buffer the size of every tile, and free it after the submission.

use std::sync::mpsc;
use std::time::Duration;

use wgpu::WriteOnly;

use crate::backend::BackendError;

type MapResult = Result<(), wgpu::BufferAsyncError>;

/// Bytes to copy into the buffer at an offset.
pub struct Part<'a> {
    /// Where in the buffer.
    pub at: u64,
    /// What to write there.
    pub bytes: &'a [u8],
}

/// Host-visible memory a slot's tasks write their inputs into.
pub struct UploadBuffer {
    buffer: wgpu::Buffer,
    bytes: u64,
    state: MapState,
}

enum MapState {
    /// Mapped: the next task may write.
    Mapped,
    /// Mapped again once `after` (the submission that copied out of it) is done.
    Pending {
        after: wgpu::SubmissionIndex,
        done: mpsc::Receiver<MapResult>,
    },
    /// Neither (its task stopped after the unmap, or the map failed): replaced on next use.
    Unusable,
}

impl UploadBuffer {
    /// The slot's upload buffer, mapped and at least `bytes` large: the one it has, once its
    /// pending map completes (`wait` waits for a submission), or a new one.
    ///
    /// # Errors
    /// What `wait` returns.
    pub fn ready<'s>(
        slot: &'s mut Option<UploadBuffer>,
        device: &wgpu::Device,
        bytes: u64,
        max_bytes: u64,
        timeout: Duration,
        wait: impl FnOnce(wgpu::SubmissionIndex) -> Result<(), BackendError>,
    ) -> Result<&'s mut UploadBuffer, BackendError> {
        let bytes = bytes.max(4).next_multiple_of(4);
        if let Some(upload) = slot.as_mut()
            && upload.bytes >= bytes
        {
            upload.settle(timeout, wait)?;
        }
        let reusable = slot
            .as_ref()
            .is_some_and(|u| u.bytes >= bytes && matches!(u.state, MapState::Mapped));
        if !reusable {
            // Headroom so slowly growing tiles do not reallocate each time.
            let size = (bytes + bytes / 4)
                .next_multiple_of(1 << 16)
                .min(max_bytes.max(bytes))
                .max(bytes)
                .next_multiple_of(4);
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("upload"),
                size,
                usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            });
            *slot = Some(UploadBuffer {
                buffer,
                bytes: size,
                state: MapState::Mapped,
            });
        }
        Ok(slot.as_mut().expect("just made ready"))
    }

    /// Waits for a pending map; the state is `Mapped` or `Unusable` after.
    fn settle(
        &mut self,
        timeout: Duration,
        wait: impl FnOnce(wgpu::SubmissionIndex) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let MapState::Pending { after, done } = std::mem::replace(&mut self.state, MapState::Unusable) else {
            return Ok(());
        };
        let result = match done.try_recv() {
            Ok(result) => Some(result),
            Err(mpsc::TryRecvError::Disconnected) => None,
            Err(mpsc::TryRecvError::Empty) => {
                wait(after)?;
                done.recv_timeout(timeout).ok()
            }
        };
        if matches!(result, Some(Ok(()))) {
            self.state = MapState::Mapped;
        }
        Ok(())
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The buffer, to copy from.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Writes `parts` (and zeros from each part's end to the next 4-byte boundary), then
    /// unmaps the buffer for the device to copy from.
    ///
    /// # Errors
    /// [`BackendError::Gpu`] if the buffer cannot be viewed.
    pub fn write_and_unmap(&mut self, parts: &[Part<'_>]) -> Result<(), BackendError> {
        let end = parts
            .iter()
            .map(|p| p.at + (p.bytes.len() as u64).next_multiple_of(4))
            .max()
            .unwrap_or(0)
            .max(4);
        self.write_with(end, |mut view| {
            for part in parts {
                let at = usize::try_from(part.at).expect("within a mapped buffer");
                let len = part.bytes.len();
                view.slice(at..at + len).copy_from_slice(part.bytes);
                view.slice(at + len..at + len.next_multiple_of(4)).fill(0);
            }
        })?;
        self.unmap();
        Ok(())
    }

    /// Lets `write` write the buffer's first `bytes` (host memory that may be
    /// write-combined: written, never read), while it stays mapped.
    ///
    /// # Errors
    /// [`BackendError::Gpu`] if the buffer cannot be viewed.
    pub fn write_with<R>(
        &mut self,
        bytes: u64,
        write: impl FnOnce(WriteOnly<'_, [u8]>) -> R,
    ) -> Result<R, BackendError> {
        debug_assert!(matches!(self.state, MapState::Mapped));
        let mut view = self.buffer.get_mapped_range_mut(0..bytes.max(4)).map_err(|e| {
            // Not mapped after all: replaced on next use.
            self.state = MapState::Unusable;
            BackendError::Gpu(format!("the upload buffer cannot be written: {e}"))
        })?;
        Ok(write(view.slice(..)))
    }

    /// Unmaps the buffer for the device to copy from; until [`UploadBuffer::remap_after`],
    /// it cannot be written.
    pub fn unmap(&mut self) {
        self.state = MapState::Unusable;
        self.buffer.unmap();
    }

    /// Asks for the buffer to be mapped again once `submission`, which copies from it, is
    /// done (the wait for that submission completes the map).
    pub fn remap_after(&mut self, submission: wgpu::SubmissionIndex) {
        let (sender, done) = mpsc::channel();
        self.buffer.map_async(wgpu::MapMode::Write, .., move |r| {
            let _ = sender.send(r);
        });
        self.state = MapState::Pending {
            after: submission,
            done,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::{GpuBackend, GpuContext, no_adapter};

    /// What `upload` holds in `0..bytes`, copied out through the device.
    fn device_copy(gpu: &GpuContext, upload: &mut UploadBuffer, bytes: u64) -> Vec<u8> {
        let readback = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("test readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        encoder.copy_buffer_to_buffer(upload.buffer(), 0, &readback, 0, bytes);
        let submission = gpu.queue.submit([encoder.finish()]);
        upload.remap_after(submission.clone());
        readback.map_async(wgpu::MapMode::Read, .., |r| r.expect("readback maps"));
        gpu.wait(submission).expect("the copy completes");
        let copied = readback.get_mapped_range(..).expect("mapped").to_vec();
        readback.unmap();
        copied
    }

    #[test]
    fn a_slot_keeps_its_upload_buffer_and_the_device_reads_what_each_task_wrote() {
        let backend = match GpuBackend::new(true) {
            Ok(backend) => backend,
            Err(e) => {
                no_adapter(
                    "a_slot_keeps_its_upload_buffer_and_the_device_reads_what_each_task_wrote",
                    &e,
                );
                return;
            }
        };
        let gpu = backend.context();
        let timeout = Duration::from_secs(60);
        let mut slot = None;
        let mut first: Option<wgpu::Buffer> = None;
        // A task, a smaller one with a length that needs padding, and one as large again.
        for (task, len) in [(0u8, 3000usize), (1, 1001), (2, 3000)] {
            let upload = UploadBuffer::ready(&mut slot, &gpu.device, 4096 + 8, u64::MAX, timeout, |s| gpu.wait(s))
                .expect("ready");
            match &first {
                None => first = Some(upload.buffer().clone()),
                Some(buffer) => assert!(upload.buffer() == buffer, "task {task} reuses the slot's buffer"),
            }
            let source: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(task)).collect();
            let params = [task + 100; 8];
            upload
                .write_and_unmap(&[
                    Part { at: 0, bytes: &source },
                    Part {
                        at: 4096,
                        bytes: &params,
                    },
                ])
                .expect("written");
            let copied = device_copy(gpu, upload, 4096 + 8);
            assert_eq!(&copied[..len], &source[..], "task {task}: the source");
            assert!(
                copied[len..len.next_multiple_of(4)].iter().all(|&b| b == 0),
                "task {task}: padding is zero"
            );
            assert_eq!(&copied[4096..], &params, "task {task}: the parameters");
        }
    }

    #[test]
    fn a_buffer_left_unmapped_by_a_stopped_task_is_replaced() {
        let backend = match GpuBackend::new(true) {
            Ok(backend) => backend,
            Err(e) => {
                no_adapter("a_buffer_left_unmapped_by_a_stopped_task_is_replaced", &e);
                return;
            }
        };
        let gpu = backend.context();
        let timeout = Duration::from_secs(60);
        let mut slot = None;
        let upload =
            UploadBuffer::ready(&mut slot, &gpu.device, 64, u64::MAX, timeout, |s| gpu.wait(s)).expect("ready");
        let stopped = upload.buffer().clone();
        // The task fails after the unmap, before its submission: nothing maps it again.
        upload
            .write_and_unmap(&[Part { at: 0, bytes: &[1; 64] }])
            .expect("written");
        let upload =
            UploadBuffer::ready(&mut slot, &gpu.device, 64, u64::MAX, timeout, |s| gpu.wait(s)).expect("ready");
        assert!(upload.buffer() != &stopped, "a new buffer");
        let data = [9u8; 64];
        upload
            .write_and_unmap(&[Part { at: 0, bytes: &data }])
            .expect("the new one is mapped");
        assert_eq!(device_copy(gpu, upload, 64), data);
    }
}
