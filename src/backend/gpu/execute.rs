//! Running programs on a ring slot: the slot's buffers sized for the largest, every
//! program's inputs through the slot's mapped upload buffer, each program's copies and
//! dispatches after the last's in one command encoder, one submission, and each program's
//! levels read back into a mapped buffer of its own ([`MappedLevels`]).
//!
//! The programs share the slot's device buffers: one copies its source, parameters and
//! tables in after the one before had its levels copied out (wgpu orders the commands). A
//! batch of small tiles so pays one submission, wait and error check, and takes no more
//! device memory than its largest tile.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::context::{GpuContext, PhaseTimes, gpu_error};
use super::program::{Dispatch, Grid, Kernel, PARAM_WORDS, Program, Slot, WORKGROUP, elem_code};
use super::readback::MappedLevels;
use super::ring::{RingSlot, SizedBuffer, SlotBuffers, ensure};
use super::upload::{Part, UploadBuffer};
use crate::backend::BackendError;
use crate::dtype::DType;
use crate::tile::TileData;

impl GpuContext {
    pub(super) fn run_job(
        &self,
        dtype: DType,
        source: JobSource<'_>,
        program: &Program,
        separate_phases: bool,
    ) -> Result<(MappedLevels, PhaseTimes), BackendError> {
        let (mut levels, times) = self.run_jobs(vec![(dtype, source, program)], separate_phases)?;
        Ok((levels.pop().expect("one job, one set of levels"), times))
    }

    /// Runs `jobs` (the dtype, source and program of each) on one ring slot, in one
    /// submission (`separate_phases`: one job, its phases submitted one by one).
    pub(super) fn run_jobs(
        &self,
        jobs: Vec<(DType, JobSource<'_>, &Program)>,
        separate_phases: bool,
    ) -> Result<(Vec<MappedLevels>, PhaseTimes), BackendError> {
        self.check_alive()?;
        let mut prepared = Vec::with_capacity(jobs.len());
        for (dtype, source, program) in jobs {
            let elem = elem_code(dtype).ok_or(BackendError::UnsupportedDType { backend: "gpu", dtype })?;
            let (level_bytes, scratch_bytes) = self.buffer_bytes(dtype, program).ok_or_else(|| {
                BackendError::Gpu("tile larger than the adapter's limits or a ring slot's share of its memory".into())
            })?;
            prepared.push(Job {
                elem,
                dtype,
                source,
                program,
                level_bytes,
                scratch_bytes,
            });
        }
        let mut slot = self.ring.acquire();
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let result = self.execute(&mut prepared, separate_phases, &mut slot);
        let oom = pollster::block_on(out_of_memory.pop());
        let invalid = pollster::block_on(validation.pop());
        if let Some(e) = oom.or(invalid) {
            return Err(gpu_error(e));
        }
        result
    }

    /// Sizes the slot's buffers for the largest of `jobs`, uploads, encodes each job's
    /// copies and dispatches after the last's, submits, and reads each job's levels back
    /// into a readback buffer of its own.
    fn execute(
        &self,
        jobs: &mut [Job<'_>],
        separate_phases: bool,
        slot: &mut RingSlot<'_>,
    ) -> Result<(Vec<MappedLevels>, PhaseTimes), BackendError> {
        debug_assert!(!separate_phases || jobs.len() == 1, "phases are timed for one job");
        let started = Instant::now();
        let mut times = PhaseTimes::default();
        let device = &self.device;
        let max = self.limits.max_buffer_size;
        let buffers: &mut SlotBuffers = slot;
        self.size_slot(buffers, jobs);

        // Upload, job after job: the source words (8/16-bit elements packed, padded to whole
        // words), unless they are staged already, the parameter blocks at aligned offsets,
        // and the stencil tables, through the slot's mapped upload buffer.
        let layouts = UploadLayout::of(self, jobs);
        let params: Vec<Vec<u8>> = jobs
            .iter()
            .zip(&layouts)
            .map(|(job, layout)| layout.params(job.program))
            .collect();
        let mut parts = Vec::with_capacity(3 * jobs.len());
        for ((job, layout), params) in jobs.iter().zip(&layouts).zip(&params) {
            if let JobSource::Host(data) = &job.source {
                let source = data.as_bytes();
                debug_assert_eq!(job.level_bytes[0], (source.len() as u64).next_multiple_of(4));
                parts.push(Part {
                    at: layout.source_at,
                    bytes: source,
                });
            }
            parts.push(Part {
                at: layout.params_at,
                bytes: params,
            });
            parts.push(Part {
                at: layout.aux_at,
                bytes: bytemuck::cast_slice(&job.program.aux),
            });
        }
        let upload_bytes = layouts.last().map_or(0, |l| l.aux_at + l.aux_bytes);
        let upload = UploadBuffer::ready(&mut buffers.upload, device, upload_bytes, max, self.poll_timeout, |s| {
            self.wait(s)
        })?;
        upload.write_and_unmap(&parts)?;
        drop(parts);

        let level0 = &buffers.levels[0].as_ref().expect("ensured").buffer;
        let params_buffer = &buffers.params.as_ref().expect("ensured").buffer;
        let aux_buffer = &buffers.aux.as_ref().expect("ensured").buffer;
        let slot_buffer = |s: Slot| -> &wgpu::Buffer {
            match s {
                Slot::Level(i) => &buffers.levels[i].as_ref().expect("ensured").buffer,
                Slot::Scratch(i) => &buffers.scratch[i].as_ref().expect("ensured").buffer,
            }
        };
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("pyramid chain"),
        });
        let mut uploaded = started;
        let mut computed = None;
        let mut readbacks = Vec::with_capacity(jobs.len());
        // The jobs share the slot's buffers: each copies its source, parameters and tables
        // in after the previous job's levels were copied out (wgpu orders the commands).
        for (job, layout) in jobs.iter_mut().zip(&layouts) {
            let source_buffer = match &job.source {
                JobSource::Host(_) => upload.buffer(),
                JobSource::Staged(staged) => {
                    debug_assert!(staged.bytes() >= job.level_bytes[0]);
                    staged.buffer()
                }
            };
            encoder.copy_buffer_to_buffer(source_buffer, layout.source_at, level0, 0, job.level_bytes[0]);
            encoder.copy_buffer_to_buffer(upload.buffer(), layout.params_at, params_buffer, 0, layout.params_bytes);
            if layout.aux_bytes > 0 {
                encoder.copy_buffer_to_buffer(upload.buffer(), layout.aux_at, aux_buffer, 0, layout.aux_bytes);
            }
            if separate_phases {
                let submission = self.queue.submit([encoder.finish()]);
                upload.remap_after(submission.clone());
                job.source.remap_after(&submission);
                self.wait(submission)?;
                encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("pyramid chain"),
                });
            }
            uploaded = Instant::now();
            times.upload = uploaded - started;

            let clock = (separate_phases && self.timestamps).then(|| DeviceClock::new(device));
            self.encode_dispatches(
                &mut encoder,
                job,
                (params_buffer, layout.block),
                aux_buffer,
                clock.as_ref(),
                &slot_buffer,
            );
            if separate_phases {
                if let Some(clock) = &clock {
                    clock.resolve(&mut encoder);
                }
                self.wait(self.queue.submit([encoder.finish()]))?;
                computed = Some(Instant::now());
                if let Some(clock) = &clock {
                    times.kernel = Some(self.read_clock(clock)?);
                }
                encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("readback"),
                });
            }
            let readback_bytes: u64 = job.level_bytes[1..].iter().sum();
            let readback = self.readbacks.take(device, readback_bytes, max);
            let mut offset = 0;
            for (i, &bytes) in job.level_bytes.iter().enumerate().skip(1) {
                encoder.copy_buffer_to_buffer(slot_buffer(Slot::Level(i)), 0, &readback.buffer, offset, bytes);
                offset += bytes;
            }
            readbacks.push((readback, readback_bytes));
        }
        let submission = self.queue.submit([encoder.finish()]);
        if !separate_phases {
            upload.remap_after(submission.clone());
            for job in jobs.iter_mut() {
                job.source.remap_after(&submission);
            }
        }
        let (outputs, waited) = self.read_back(jobs, readbacks, submission)?;
        let computed = computed.unwrap_or(waited);
        times.compute = computed - uploaded;
        times.readback = computed.elapsed();
        Ok((outputs, times))
    }

    /// Maps each job's readback buffer (the bytes given with it) once `submission`, which
    /// copies the levels there, is done; returns the levels, and when the wait for the
    /// submission ended.
    fn read_back(
        &self,
        jobs: &[Job<'_>],
        readbacks: Vec<(SizedBuffer, u64)>,
        submission: wgpu::SubmissionIndex,
    ) -> Result<(Vec<MappedLevels>, Instant), BackendError> {
        let receivers: Vec<_> = readbacks
            .iter()
            .map(|(readback, bytes)| {
                let (sender, receiver) = mpsc::channel();
                readback
                    .buffer
                    .slice(0..(*bytes).max(4))
                    .map_async(wgpu::MapMode::Read, move |r| {
                        let _ = sender.send(r);
                    });
                receiver
            })
            .collect();
        let mut failed = self.wait(submission).err();
        let waited = Instant::now();
        let mut outputs = Vec::with_capacity(jobs.len());
        for ((job, (readback, bytes)), receiver) in jobs.iter().zip(readbacks).zip(receivers) {
            if failed.is_none() {
                let mapped = receiver
                    .recv_timeout(self.poll_timeout)
                    .map_err(|_| BackendError::Gpu("the readback never completed".into()))
                    .and_then(|r| r.map_err(gpu_error))
                    .and_then(|()| self.check_alive())
                    .and_then(|()| {
                        readback
                            .buffer
                            .slice(0..bytes.max(4))
                            .get_mapped_range()
                            .map_err(gpu_error)
                    });
                match mapped {
                    Ok(view) => {
                        outputs.push(MappedLevels::new(
                            view,
                            readback,
                            self.readbacks.clone(),
                            job.dtype,
                            level_offsets(job),
                        ));
                        continue;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            // Not back to the pool: a buffer whose map failed or never completed.
            readback.buffer.unmap();
        }
        match failed {
            // The levels mapped already go back to the pool as they are dropped.
            Some(e) => Err(e),
            None => Ok((outputs, waited)),
        }
    }

    /// Makes the slot's buffers large enough for each of `jobs` (which run one after
    /// another on them).
    fn size_slot(&self, buffers: &mut SlotBuffers, jobs: &[Job<'_>]) {
        let device = &self.device;
        let max = self.limits.max_buffer_size;
        let largest = |bytes: &dyn Fn(&Job<'_>) -> u64| jobs.iter().map(bytes).max().unwrap_or(0);
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let levels = largest(&|job| job.level_bytes.len() as u64) as usize;
        if buffers.levels.len() < levels {
            buffers.levels.resize_with(levels, || None);
        }
        for i in 0..levels {
            let bytes = largest(&|job| job.level_bytes.get(i).copied().unwrap_or(0));
            ensure(device, &mut buffers.levels[i], bytes, storage, "level", max);
        }
        for i in 0..2 {
            let bytes = largest(&|job| job.scratch_bytes[i]);
            if bytes > 0 {
                ensure(
                    device,
                    &mut buffers.scratch[i],
                    bytes,
                    wgpu::BufferUsages::STORAGE,
                    "scratch",
                    max,
                );
            }
        }
        // The parameter blocks, one per dispatch, in a uniform buffer at offsets the adapter
        // accepts for uniform bindings.
        let uniform = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let params = largest(&|job| self.params_layout(job.program).1);
        ensure(device, &mut buffers.params, params, uniform, "params", max);
        let copy_dst = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let aux = largest(&|job| job.program.aux.len() as u64 * 4);
        ensure(device, &mut buffers.aux, aux, copy_dst, "aux", max);
    }

    /// Encodes `job`'s dispatches, each in a compute pass of its own, with its parameter
    /// blocks `block` bytes apart in `params`; `clock` times them.
    fn encode_dispatches<'b>(
        &'b self,
        encoder: &mut wgpu::CommandEncoder,
        job: &Job<'_>,
        (params, block): (&'b wgpu::Buffer, u64),
        aux: &'b wgpu::Buffer,
        clock: Option<&DeviceClock>,
        slot_buffer: &dyn Fn(Slot) -> &'b wgpu::Buffer,
    ) {
        let max_groups = self.limits.max_compute_workgroups_per_dimension.max(1);
        let passes = job.program.dispatches.len();
        for (i, dispatch) in job.program.dispatches.iter().enumerate() {
            let pipeline = self.pipeline(
                dispatch.kernel,
                job.elem,
                dispatch.grid.entry_point(),
                dispatch.overrides(),
            );
            let layout = pipeline.get_bind_group_layout(0);
            let params_binding = wgpu::BufferBinding {
                buffer: params,
                offset: block * i as u64,
                size: std::num::NonZeroU64::new(PARAM_WORDS as u64 * 4),
            };
            let entries = self.bind_entries(dispatch, params_binding, aux, slot_buffer);
            let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &entries,
            });
            let (x, y, z) = match dispatch.grid {
                Grid::Flat { invocations } => {
                    let groups = invocations.div_ceil(WORKGROUP).max(1);
                    let x = groups.min(max_groups);
                    (x, groups.div_ceil(x), 1)
                }
                Grid::Rows { groups: [x, y, z], .. }
                | Grid::Tiles { groups: [x, y, z] }
                | Grid::Volume { groups: [x, y, z] } => (x, y, z),
            };
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: clock.and_then(|c| c.writes(i == 0, i + 1 == passes)),
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// The time between the two timestamps `clock` resolved (after its submission finished).
    fn read_clock(&self, clock: &DeviceClock) -> Result<Duration, BackendError> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("clock") });
        encoder.copy_buffer_to_buffer(&clock.resolved, 0, &clock.readable, 0, DeviceClock::BYTES);
        let submission = self.queue.submit([encoder.finish()]);
        let (sender, receiver) = mpsc::channel();
        let slice = clock.readable.slice(..);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        self.wait(submission)?;
        receiver
            .recv_timeout(self.poll_timeout)
            .map_err(|_| BackendError::Gpu("the timestamps were never read back".into()))?
            .map_err(gpu_error)?;
        let ticks: [u64; 2] = {
            let view = slice.get_mapped_range().map_err(gpu_error)?;
            bytemuck::pod_read_unaligned(&view[..16])
        };
        clock.readable.unmap();
        let nanos = ticks[1].saturating_sub(ticks[0]) as f64 * f64::from(self.queue.get_timestamp_period());
        Ok(Duration::from_secs_f64(nanos / 1e9))
    }

    fn bind_entries<'b>(
        &'b self,
        dispatch: &Dispatch,
        params: wgpu::BufferBinding<'b>,
        aux: &'b wgpu::Buffer,
        slot_buffer: &dyn Fn(Slot) -> &'b wgpu::Buffer,
    ) -> Vec<wgpu::BindGroupEntry<'b>> {
        let entry = |binding: u32, buffer: &'b wgpu::Buffer| wgpu::BindGroupEntry {
            binding,
            resource: buffer.as_entire_binding(),
        };
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(params),
            },
            entry(1, aux),
        ];
        match dispatch.kernel {
            Kernel::Nearest | Kernel::Mean | Kernel::Mode | Kernel::Extremum => {
                entries.push(entry(2, slot_buffer(dispatch.input)));
                entries.push(entry(3, slot_buffer(dispatch.output)));
            }
            Kernel::GaussianPass => {
                let (words_in, floats_in) = match dispatch.input {
                    Slot::Level(_) => (slot_buffer(dispatch.input), &self.dummy_read),
                    Slot::Scratch(_) => (&self.dummy_read, slot_buffer(dispatch.input)),
                };
                let (words_out, floats_out) = match dispatch.output {
                    Slot::Level(_) => (slot_buffer(dispatch.output), &self.dummy_write),
                    Slot::Scratch(_) => (&self.dummy_write, slot_buffer(dispatch.output)),
                };
                entries.extend([entry(2, words_in), entry(3, floats_in), entry(4, words_out)]);
                // The fused passes (`main_tiles`, `main_volume`) write only packed outputs:
                // their pipelines' layouts, derived from what the entry point uses, have no
                // binding 5.
                if !matches!(dispatch.grid, Grid::Tiles { .. } | Grid::Volume { .. }) {
                    entries.push(entry(5, floats_out));
                }
            }
        }
        entries
    }
}

/// Where a job's source tile is.
pub(super) enum JobSource<'a> {
    /// In host memory: the job copies it into the slot's upload buffer.
    Host(&'a TileData),
    /// Staged (unmapped, ready to copy from): the job copies from it, and asks for it to be
    /// mapped again after.
    Staged(&'a mut UploadBuffer),
}

impl JobSource<'_> {
    /// Asks for a staged source to be mapped again once `submission`, which copies from it,
    /// is done; nothing for a source in host memory.
    fn remap_after(&mut self, submission: &wgpu::SubmissionIndex) {
        if let JobSource::Staged(staged) = self {
            staged.remap_after(submission.clone());
        }
    }
}

/// One program to run on a slot.
struct Job<'a> {
    elem: u32,
    dtype: DType,
    source: JobSource<'a>,
    program: &'a Program,
    /// Bytes of each level's buffer (index 0: the source tile, whole words).
    level_bytes: Vec<u64>,
    /// Bytes of gaussian's two intermediates (0: none).
    scratch_bytes: [u64; 2],
}

/// Per level after the source, its byte offset in `job`'s readback and its element count.
fn level_offsets(job: &Job<'_>) -> Vec<(usize, usize)> {
    let mut at = 0usize;
    let mut levels = Vec::with_capacity(job.level_bytes.len() - 1);
    for (i, &bytes) in job.level_bytes.iter().enumerate().skip(1) {
        levels.push((at, usize::try_from(job.program.level_elements[i]).expect("fits")));
        at += usize::try_from(bytes).expect("fits");
    }
    levels
}

/// Where one job's inputs are: its source (a host tile's in the upload buffer, a staged
/// one's at the start of its own), and in the upload buffer its parameter blocks and
/// stencil tables, in a row after the previous job's.
struct UploadLayout {
    source_at: u64,
    params_at: u64,
    params_bytes: u64,
    /// Bytes from one parameter block to the next.
    block: u64,
    aux_at: u64,
    aux_bytes: u64,
}

impl UploadLayout {
    /// `program`'s parameter blocks, each at its offset (`block` bytes apart) in the
    /// uniform buffer.
    fn params(&self, program: &Program) -> Vec<u8> {
        let block = usize::try_from(self.block).expect("a parameter block fits memory");
        let mut params = vec![0u8; usize::try_from(self.params_bytes).expect("parameter blocks fit memory")];
        for (i, d) in program.dispatches.iter().enumerate() {
            params[block * i..block * i + PARAM_WORDS * 4].copy_from_slice(bytemuck::cast_slice(&d.params));
        }
        params
    }

    fn of(context: &GpuContext, jobs: &[Job<'_>]) -> Vec<Self> {
        let mut at = 0;
        jobs.iter()
            .map(|job| {
                // A staged source starts its own buffer.
                let source_at = match job.source {
                    JobSource::Host(_) => {
                        at += job.level_bytes[0];
                        at - job.level_bytes[0]
                    }
                    JobSource::Staged(_) => 0,
                };
                let (block, params_bytes) = context.params_layout(job.program);
                let params_at = at;
                at += params_bytes;
                let aux_bytes = job.program.aux.len() as u64 * 4;
                let aux_at = at;
                at += aux_bytes;
                Self {
                    source_at,
                    params_at,
                    params_bytes,
                    block,
                    aux_at,
                    aux_bytes,
                }
            })
            .collect()
    }
}

/// Two timestamps on the device's clock: before the first dispatch and after the last.
struct DeviceClock {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readable: wgpu::Buffer,
}

impl DeviceClock {
    const BYTES: u64 = 16;

    fn new(device: &wgpu::Device) -> Self {
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: Self::BYTES,
                usage,
                mapped_at_creation: false,
            })
        };
        Self {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel clock"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolved: buffer(
                "resolved timestamps",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readable: buffer(
                "timestamps",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
        }
    }

    /// The timestamp writes of a compute pass: the start if it is the first, the end if it
    /// is the last, none for a pass between.
    fn writes(&self, first: bool, last: bool) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        (first || last).then_some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: first.then_some(0),
            end_of_pass_write_index: last.then_some(1),
        })
    }

    fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.queries, 0..2, &self.resolved, 0);
    }
}
