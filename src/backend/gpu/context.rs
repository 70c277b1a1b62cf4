//! The GPU context: device, queue, shader modules and pipelines (built once per run and
//! dtype), and the execution of a [`Program`] on a ring slot: upload, dispatch, readback.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::program::{Dispatch, Grid, Kernel, PARAM_WORDS, Program, Slot, WORKGROUP, elem_code, elements_per_word};
use super::readback::{MappedLevels, ReadbackPool};
use super::ring::{BufferRing, RingSlot, SlotBuffers, ensure};
use super::staged::{StagedTile, StagingPool, source_bytes};
use super::upload::{Part, UploadBuffer};
use crate::backend::BackendError;
use crate::dtype::DType;
use crate::method::Method;
use crate::tile::{Region, TileData};

/// WGSL sources, one per kernel, each prefixed with the shared helpers.
const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const NEAREST: &str = include_str!("../../../shaders/nearest.wgsl");
const MEAN: &str = include_str!("../../../shaders/mean.wgsl");
const GAUSSIAN: &str = include_str!("../../../shaders/gaussian.wgsl");
const MODE: &str = include_str!("../../../shaders/mode.wgsl");
const EXTREMUM: &str = include_str!("../../../shaders/extremum.wgsl");
const WINDOWED_MAIN: &str = include_str!("../../../shaders/windowed_main.wgsl");

/// The full WGSL source of a kernel: the shared helpers, the kernel, and for the windowed
/// kernels (all but gaussian, which has its own passes) their shared entry point.
#[must_use]
pub fn shader_source(kernel: Kernel) -> String {
    let body = match kernel {
        Kernel::Nearest => NEAREST,
        Kernel::Mean => MEAN,
        Kernel::GaussianPass => return format!("{COMMON}\n{GAUSSIAN}"),
        Kernel::Mode => MODE,
        Kernel::Extremum => EXTREMUM,
    };
    format!("{COMMON}\n{body}\n{WINDOWED_MAIN}")
}

/// Time spent in each phase of one program, measured on the host around device waits.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseTimes {
    /// Writing the source tile and tables.
    pub upload: Duration,
    /// The dispatches.
    pub compute: Duration,
    /// Copying results back and mapping them.
    pub readback: Duration,
    /// The dispatches as the device's own clock measured them (timestamp queries), from the
    /// start of the first to the end of the last; `None` where the adapter has no timestamp
    /// queries or the phases were not measured separately.
    pub kernel: Option<Duration>,
}

/// A pipeline's kernel, element kind (`ELEM`), entry point and `NESTED_PLANES`.
type PipelineKey = (Kernel, u32, &'static str, u32);

/// Device, queue and pipelines.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    modules: HashMap<Kernel, wgpu::ShaderModule>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    lost: Arc<Mutex<Option<String>>>,
    dummy_read: wgpu::Buffer,
    dummy_write: wgpu::Buffer,
    ring: BufferRing,
    /// Mapped buffers that workers read source tiles into ([`StagedTile`]).
    staging: StagingPool,
    /// Mapped buffers the levels are read back into and written out from ([`MappedLevels`]).
    readbacks: Arc<ReadbackPool>,
    /// Bytes of device buffers one ring slot may hold ([`super::memory::slot_share`]).
    pub(super) slot_device_bytes: u64,
    poll_timeout: Duration,
    /// Whether the device was opened with timestamp queries.
    timestamps: bool,
    /// The backends using the context now ([`super::GpuBackend`]); the last to go releases
    /// its idle buffers.
    pub(super) users: AtomicUsize,
}

fn gpu_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::Gpu(e.to_string())
}

impl GpuContext {
    /// Opens a device on `adapter` with the adapter's own (higher) limits.
    ///
    /// # Errors
    /// [`BackendError::NoAdapter`] if the device cannot be created.
    pub fn new(adapter: &wgpu::Adapter, ring_slots: usize) -> Result<Self, BackendError> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Timestamp queries, where the adapter has them, time the kernels on the device's
        // own clock (benchmarks only; a build never asks for them).
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let features = if timestamps {
            wgpu::Features::TIMESTAMP_QUERY
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ome-pyramid"),
            required_features: features,
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .map_err(|e| BackendError::NoAdapter(format!("cannot open {}: {e}", info.name)))?;
        let device_bytes = super::memory::device_local_bytes(adapter);
        let usable = super::memory::usable_bytes(device_bytes, super::memory::limit_mib_from_env());
        let slot_device_bytes = super::memory::slot_share(usable, ring_slots);
        if let Some(bytes) = usable {
            tracing::debug!(
                "{}: {} MiB of device memory, {} MiB of it for buffers, up to {:.1} MiB per ring slot ({ring_slots} slots)",
                info.name,
                device_bytes.map_or_else(|| "unknown".to_string(), |b| (b >> 20).to_string()),
                bytes >> 20,
                slot_device_bytes as f64 / f64::from(1 << 20)
            );
        }
        let lost = Arc::new(Mutex::new(None));
        let lost_flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost_flag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(format!("{reason:?}: {message}"));
        });
        device.on_uncaptured_error(Arc::new(|e| tracing::error!("GPU error outside a task: {e}")));
        let modules = Kernel::ALL
            .into_iter()
            .map(|k| {
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(k.file_name()),
                    source: wgpu::ShaderSource::Wgsl(Cow::Owned(shader_source(k))),
                });
                (k, module)
            })
            .collect();
        let dummy = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        let dummy_read = dummy("unused input", wgpu::BufferUsages::STORAGE);
        let dummy_write = dummy("unused output", wgpu::BufferUsages::STORAGE);
        Ok(Self {
            device,
            queue,
            info,
            limits,
            modules,
            pipelines: Mutex::new(HashMap::new()),
            lost,
            dummy_read,
            dummy_write,
            ring: BufferRing::new(ring_slots),
            staging: StagingPool::default(),
            readbacks: Arc::default(),
            slot_device_bytes,
            poll_timeout: Duration::from_secs(
                std::env::var("OME_PYRAMID_GPU_TIMEOUT_S")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(600),
            ),
            timestamps,
            users: AtomicUsize::new(0),
        })
    }

    /// True if kernels are timed on the device's clock ([`PhaseTimes::kernel`]).
    #[must_use]
    pub fn has_timestamps(&self) -> bool {
        self.timestamps
    }

    /// Largest storage binding, in bytes.
    #[must_use]
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// False once the device was lost.
    pub(crate) fn is_alive(&self) -> bool {
        self.check_alive().is_ok()
    }

    fn check_alive(&self) -> Result<(), BackendError> {
        match self
            .lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            Some(reason) => Err(BackendError::Gpu(format!("the GPU device was lost ({reason})"))),
            None => Ok(()),
        }
    }

    /// The pipeline of `kernel`'s `entry_point` specialised for `elem` and `nested_planes`
    /// (built on first use).
    fn pipeline(
        &self,
        kernel: Kernel,
        elem: u32,
        entry_point: &'static str,
        nested_planes: u32,
    ) -> Arc<wgpu::ComputePipeline> {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pipelines
            .entry((kernel, elem, entry_point, nested_planes))
            .or_insert_with(|| {
                Arc::new(self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some("ome-pyramid kernel"),
                    layout: None,
                    module: &self.modules[&kernel],
                    entry_point: Some(entry_point),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[("ELEM", f64::from(elem)), ("NESTED_PLANES", f64::from(nested_planes))],
                        ..Default::default()
                    },
                    cache: None,
                }))
            })
            .clone()
    }

    /// Bytes of each buffer the program binds; `None` if one exceeds the adapter's limits.
    fn buffer_bytes(&self, dtype: DType, program: &Program) -> Option<(Vec<u64>, [u64; 2])> {
        let per_word = elements_per_word(dtype);
        let levels: Vec<u64> = program
            .level_elements
            .iter()
            .map(|&n| n.div_ceil(per_word) * 4)
            .collect();
        let scratch = program.scratch_elements.map(|n| n * 4);
        let aux = program.aux.len() as u64 * 4;
        let bindings: Vec<u64> = levels.iter().chain(&scratch).copied().chain([aux]).collect();
        // The upload buffer holds the source, the parameter blocks and the tables in a row.
        let params = self.params_layout(program).1;
        let upload = levels[0] + params + aux;
        let device: u64 = bindings.iter().sum::<u64>() + params;
        self.within_limits(&bindings, upload, device)
            .then_some((levels, scratch))
    }

    /// Whether a program fits: each of its `bindings` within the adapter's binding limit, its
    /// `upload` within the buffer limit, and its `device` buffers, with the quarter of
    /// headroom a slot's buffers grow by, within a ring slot's share of device memory.
    fn within_limits(&self, bindings: &[u64], upload: u64, device: u64) -> bool {
        let max = self.max_binding_bytes();
        bindings.iter().all(|&b| b <= max)
            && upload <= self.limits.max_buffer_size
            && device.saturating_add(device / 4) <= self.slot_device_bytes
    }

    /// Whether a tile of `source_elements`, from which `method` computes `output_elements`
    /// of levels in all, fits one program ([`GpuContext::fits`]), estimated before its
    /// program is built (the planner asks, to keep a pass's tiles within a ring slot's share
    /// of device memory; a program that does not fit is split, one upload and readback per
    /// piece and step). The estimate leaves out the parameter blocks and stencil tables (a
    /// few words per output row); a tile it admits that turns out not to fit is split all
    /// the same.
    #[must_use]
    pub fn holds_tile(&self, method: Method, dtype: DType, source_elements: u64, output_elements: u64) -> bool {
        let packed = |elements: u64| elements.div_ceil(elements_per_word(dtype)).saturating_mul(4);
        let source = packed(source_elements);
        // Each level, at most half the one before on some axis, is smaller than the source.
        let outputs = packed(output_elements);
        // Gaussian's two `f32` intermediates: each pass reduces an axis by 2 or more, so the
        // first holds at most half the source's elements, the second a quarter.
        let scratch = if method == Method::Gaussian {
            source_elements.saturating_mul(4) / 2
        } else {
            0
        };
        let device = source
            .saturating_add(outputs)
            .saturating_add(scratch.saturating_add(scratch / 2));
        self.within_limits(&[source, scratch], source, device)
    }

    /// The bytes of one parameter block (a multiple of the adapter's uniform offset
    /// alignment) and of all of `program`'s.
    fn params_layout(&self, program: &Program) -> (u64, u64) {
        let align = u64::from(self.limits.min_uniform_buffer_offset_alignment).max(16);
        let block = (PARAM_WORDS as u64 * 4).next_multiple_of(align);
        (block, block * program.dispatches.len() as u64)
    }

    /// True if every buffer of `program` fits the adapter's binding limit, and all of them
    /// a ring slot's share of the device's memory.
    #[must_use]
    pub fn fits(&self, dtype: DType, program: &Program) -> bool {
        self.buffer_bytes(dtype, program).is_some()
    }

    /// Runs a program: uploads `source` (the packed source tile), dispatches, and reads every
    /// level after the source back.
    ///
    /// # Errors
    /// [`BackendError::Gpu`] on a device loss, a validation or out-of-memory error, a
    /// timeout, or a program larger than the adapter's limits.
    pub fn run(&self, dtype: DType, source: &TileData, program: &Program) -> Result<Vec<TileData>, BackendError> {
        self.run_with(dtype, source, program, false).map(|(data, _)| data)
    }

    /// As [`GpuContext::run`], also returning the time of each phase. With
    /// `separate_phases`, upload, compute and readback are submitted and waited for one
    /// after another, so each is measured on its own (for benchmarks; a normal run submits
    /// once and lets the phases of different tasks overlap).
    ///
    /// # Errors
    /// As [`GpuContext::run`].
    pub fn run_with(
        &self,
        dtype: DType,
        source: &TileData,
        program: &Program,
        separate_phases: bool,
    ) -> Result<(Vec<TileData>, PhaseTimes), BackendError> {
        let (levels, mut times) = self.run_job(dtype, JobSource::Host(source), program, separate_phases)?;
        // Copying the levels out of the mapped buffer is part of reading them back.
        let copying = Instant::now();
        let data = levels.to_host();
        times.readback += copying.elapsed();
        Ok((data, times))
    }

    /// A mapped buffer for a source tile of `region` and `dtype` that `program` will
    /// compute, for the tile reader to fill ([`StagedTile::write_with`]) and
    /// [`GpuContext::run_staged`] to compute.
    ///
    /// # Errors
    /// [`BackendError::Gpu`] if waiting for a buffer's previous submission fails.
    pub fn stage(&self, dtype: DType, region: &Region, program: Program) -> Result<StagedTile, BackendError> {
        let mut buffer = self.staging.take_largest(UploadBuffer::bytes, |_| true);
        UploadBuffer::ready(
            &mut buffer,
            &self.device,
            source_bytes(dtype, region),
            self.limits.max_buffer_size,
            self.poll_timeout,
            |s| self.wait(s),
        )?;
        Ok(StagedTile {
            upload: buffer.expect("made ready"),
            program,
            region: region.clone(),
            dtype,
        })
    }

    /// Runs the program of a staged tile, copying its source from the staged buffer; the
    /// buffer goes back to the pool, to be mapped again once that copy is done. The levels
    /// stay in the mapped readback buffer until they are dropped.
    ///
    /// # Errors
    /// As [`GpuContext::run`].
    pub fn run_staged(&self, staged: StagedTile) -> Result<MappedLevels, BackendError> {
        let StagedTile {
            mut upload,
            program,
            dtype,
            ..
        } = staged;
        upload.unmap();
        let result = self.run_job(dtype, JobSource::Staged(&mut upload), &program, false);
        self.staging.give(upload);
        result.map(|(data, _)| data)
    }

    /// Drops the buffers no task holds: the idle ring slots' device and upload buffers,
    /// and the staging and readback pools; returns their bytes. The pools keep the largest
    /// buffers a build needed, for its next tiles; once no build uses the context, this
    /// gives that memory back (a Python session's or a server's next build makes its own).
    pub fn release_idle_buffers(&self) -> u64 {
        let bytes =
            self.ring.release_idle() + self.staging.release(UploadBuffer::bytes) + self.readbacks.release(|b| b.bytes);
        // wgpu frees dropped buffers when it next maintains the device.
        if let Err(e) = self.device.poll(wgpu::PollType::Poll) {
            tracing::debug!("polling the device after releasing its buffers: {e}");
        }
        bytes
    }

    /// Bytes of the buffers kept for the next tasks: the idle ring slots' and the pools'.
    #[cfg(test)]
    pub(crate) fn idle_buffer_bytes(&self) -> u64 {
        self.ring.idle_bytes() + self.staging.bytes(UploadBuffer::bytes) + self.readbacks.bytes(|b| b.bytes)
    }

    /// Buffers in the staging pool now.
    #[cfg(test)]
    pub(crate) fn staged_buffers(&self) -> usize {
        self.staging.len()
    }

    /// Readback buffers in the pool now (none held by levels not yet dropped).
    #[cfg(test)]
    pub(crate) fn readback_buffers(&self) -> usize {
        self.readbacks.len()
    }

    fn run_job(
        &self,
        dtype: DType,
        source: JobSource<'_>,
        program: &Program,
        separate_phases: bool,
    ) -> Result<(MappedLevels, PhaseTimes), BackendError> {
        self.check_alive()?;
        let elem = elem_code(dtype).ok_or(BackendError::UnsupportedDType { backend: "gpu", dtype })?;
        let (level_bytes, scratch_bytes) = self.buffer_bytes(dtype, program).ok_or_else(|| {
            BackendError::Gpu("tile larger than the adapter's limits or a ring slot's share of its memory".into())
        })?;
        let mut slot = self.ring.acquire();
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut job = Job {
            elem,
            dtype,
            source,
            program,
            level_bytes: &level_bytes,
            scratch_bytes: &scratch_bytes,
            separate_phases,
        };
        let result = self.execute(&mut job, &mut slot);
        let oom = pollster::block_on(out_of_memory.pop());
        let invalid = pollster::block_on(validation.pop());
        if let Some(e) = oom.or(invalid) {
            return Err(gpu_error(e));
        }
        result
    }

    pub(super) fn wait(&self, submission: wgpu::SubmissionIndex) -> Result<(), BackendError> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: Some(self.poll_timeout),
            })
            .map(|_| ())
            .map_err(|e| BackendError::Gpu(format!("waiting for the GPU: {e}")))
    }

    /// Sizes the slot's buffers, uploads, encodes the dispatches, submits, and reads back.
    fn execute(&self, job: &mut Job<'_>, slot: &mut RingSlot<'_>) -> Result<(MappedLevels, PhaseTimes), BackendError> {
        let started = Instant::now();
        let mut times = PhaseTimes::default();
        let device = &self.device;
        let program = job.program;
        let max = self.limits.max_buffer_size;
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let buffers: &mut SlotBuffers = slot;
        if buffers.levels.len() < job.level_bytes.len() {
            buffers.levels.resize_with(job.level_bytes.len(), || None);
        }
        for (i, &bytes) in job.level_bytes.iter().enumerate() {
            ensure(device, &mut buffers.levels[i], bytes, storage, "level", max);
        }
        for (i, &bytes) in job.scratch_bytes.iter().enumerate() {
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
        let (block, params_bytes) = self.params_layout(program);
        let uniform = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        ensure(device, &mut buffers.params, params_bytes, uniform, "params", max);
        let copy_dst = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        ensure(
            device,
            &mut buffers.aux,
            program.aux.len() as u64 * 4,
            copy_dst,
            "aux",
            max,
        );
        let readback_bytes: u64 = job.level_bytes[1..].iter().sum();

        // Upload: the source words (8/16-bit elements packed, padded to whole words), unless
        // they are staged already, the parameter blocks at aligned offsets, and the stencil
        // tables, through the slot's mapped upload buffer.
        // Whole words: the level-0 buffer's size.
        let source_bytes = job.level_bytes[0];
        let (source, params_at): (&[u8], u64) = match &job.source {
            JobSource::Host(data) => {
                let source = data.as_bytes();
                debug_assert_eq!(source_bytes, (source.len() as u64).next_multiple_of(4));
                (source, source_bytes)
            }
            JobSource::Staged(staged) => {
                debug_assert!(staged.bytes() >= source_bytes);
                (&[], 0)
            }
        };
        let mut params = vec![0u8; usize::try_from(params_bytes).expect("fits")];
        for (i, d) in program.dispatches.iter().enumerate() {
            let at = usize::try_from(block).expect("fits") * i;
            params[at..at + PARAM_WORDS * 4].copy_from_slice(bytemuck::cast_slice(&d.params));
        }
        let aux: &[u8] = bytemuck::cast_slice(&program.aux);
        let aux_at = params_at + params_bytes;
        let upload_bytes = aux_at + aux.len() as u64;
        let upload = UploadBuffer::ready(&mut buffers.upload, device, upload_bytes, max, self.poll_timeout, |s| {
            self.wait(s)
        })?;
        upload.write_and_unmap(&[
            Part { at: 0, bytes: source },
            Part {
                at: params_at,
                bytes: &params,
            },
            Part { at: aux_at, bytes: aux },
        ])?;
        let source_buffer = match &job.source {
            JobSource::Host(_) => upload.buffer(),
            JobSource::Staged(staged) => staged.buffer(),
        };
        let level0 = &buffers.levels[0].as_ref().expect("ensured").buffer;
        let params_buffer = &buffers.params.as_ref().expect("ensured").buffer;
        let aux_buffer = &buffers.aux.as_ref().expect("ensured").buffer;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("pyramid chain"),
        });
        encoder.copy_buffer_to_buffer(source_buffer, 0, level0, 0, source_bytes);
        encoder.copy_buffer_to_buffer(upload.buffer(), params_at, params_buffer, 0, params_bytes);
        if !aux.is_empty() {
            encoder.copy_buffer_to_buffer(upload.buffer(), aux_at, aux_buffer, 0, aux.len() as u64);
        }
        if job.separate_phases {
            let submission = self.queue.submit([encoder.finish()]);
            upload.remap_after(submission.clone());
            job.source.remap_after(&submission);
            self.wait(submission)?;
            encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("pyramid chain"),
            });
        }
        let uploaded = Instant::now();
        times.upload = uploaded - started;

        let slot_buffer = |s: Slot| -> &wgpu::Buffer {
            match s {
                Slot::Level(i) => &buffers.levels[i].as_ref().expect("ensured").buffer,
                Slot::Scratch(i) => &buffers.scratch[i].as_ref().expect("ensured").buffer,
            }
        };
        let max_groups = self.limits.max_compute_workgroups_per_dimension.max(1);
        let clock = (job.separate_phases && self.timestamps).then(|| DeviceClock::new(device));
        let passes = program.dispatches.len();
        for (i, dispatch) in program.dispatches.iter().enumerate() {
            let pipeline = self.pipeline(
                dispatch.kernel,
                job.elem,
                dispatch.grid.entry_point(),
                dispatch.nested_planes(),
            );
            let layout = pipeline.get_bind_group_layout(0);
            let params_binding = wgpu::BufferBinding {
                buffer: params_buffer,
                offset: block * i as u64,
                size: std::num::NonZeroU64::new(PARAM_WORDS as u64 * 4),
            };
            let entries = self.bind_entries(dispatch, params_binding, aux_buffer, &slot_buffer);
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
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
                Grid::Rows { groups: [x, y, z] } | Grid::Tiles { groups: [x, y, z] } => (x, y, z),
            };
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: clock.as_ref().and_then(|c| c.writes(i == 0, i + 1 == passes)),
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(x, y, z);
        }
        let mut computed = None;
        if job.separate_phases {
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
        let readback = self.readbacks.take(device, readback_bytes, max);
        let mut offset = 0;
        for (i, &bytes) in job.level_bytes.iter().enumerate().skip(1) {
            encoder.copy_buffer_to_buffer(slot_buffer(Slot::Level(i)), 0, &readback.buffer, offset, bytes);
            offset += bytes;
        }
        let submission = self.queue.submit([encoder.finish()]);
        if !job.separate_phases {
            upload.remap_after(submission.clone());
            job.source.remap_after(&submission);
        }
        let (sender, receiver) = mpsc::channel();
        let slice = readback.buffer.slice(0..readback_bytes.max(4));
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        let mapped = (|| {
            self.wait(submission)?;
            let computed = computed.unwrap_or_else(Instant::now);
            receiver
                .recv_timeout(self.poll_timeout)
                .map_err(|_| BackendError::Gpu("the readback never completed".into()))?
                .map_err(gpu_error)?;
            self.check_alive()?;
            let view = slice.get_mapped_range().map_err(gpu_error)?;
            Ok((computed, view))
        })();
        let (computed, view) = match mapped {
            Ok(mapped) => mapped,
            Err(e) => {
                // Not back to the pool: a buffer whose map failed or never completed.
                readback.buffer.unmap();
                return Err(e);
            }
        };
        let mut at = 0usize;
        let mut levels = Vec::with_capacity(job.level_bytes.len() - 1);
        for (i, &bytes) in job.level_bytes.iter().enumerate().skip(1) {
            levels.push((at, usize::try_from(program.level_elements[i]).expect("fits")));
            at += usize::try_from(bytes).expect("fits");
        }
        let outputs = MappedLevels::new(view, readback, self.readbacks.clone(), job.dtype, levels);
        times.compute = computed - uploaded;
        times.readback = computed.elapsed();
        Ok((outputs, times))
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

    /// Measures a device-to-device copy of `bytes` (the memory-bandwidth ceiling of the
    /// kernels): the time of one copy, the best of `repeats`.
    ///
    /// # Errors
    /// [`BackendError::Gpu`] if the device fails.
    pub fn copy_time(&self, bytes: u64, repeats: usize) -> Result<Duration, BackendError> {
        let bytes = bytes.next_multiple_of(4).min(self.limits.max_buffer_size / 4 * 4);
        let make = |label| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (a, b) = (make("copy source"), make("copy target"));
        let mut best = Duration::MAX;
        for _ in 0..repeats.max(1) {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("copy") });
            encoder.copy_buffer_to_buffer(&a, 0, &b, 0, bytes);
            let started = Instant::now();
            self.wait(self.queue.submit([encoder.finish()]))?;
            best = best.min(started.elapsed());
        }
        Ok(best)
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
                // The fused y–x pass (`main_tiles`) writes only packed outputs: its
                // pipeline's layout, derived from what the entry point uses, has no binding 5.
                if !matches!(dispatch.grid, Grid::Tiles { .. }) {
                    entries.push(entry(5, floats_out));
                }
            }
        }
        entries
    }

    /// Ring slots (tasks in flight on the device at once).
    #[must_use]
    pub fn ring_slots(&self) -> usize {
        self.ring.capacity()
    }
}

/// Where a job's source tile is.
enum JobSource<'a> {
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
    level_bytes: &'a [u64],
    scratch_bytes: &'a [u64; 2],
    separate_phases: bool,
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

#[cfg(target_endian = "big")]
compile_error!("the GPU backend assumes a little-endian host (as every wgpu target is)");
