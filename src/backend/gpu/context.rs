//! The GPU context: device, queue, shader modules and pipelines (built once per run and
//! dtype), and the execution of [`Program`]s on a ring slot: upload, dispatch, readback. One
//! program (a host tile's) or several (a batch of staged tiles) go in one submission.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::execute::JobSource;
use super::program::{Kernel, PARAM_WORDS, Program, elements_per_word};
use super::readback::{MappedLevels, ReadbackPool};
use super::ring::BufferRing;
use super::staged::{StagedTile, StagingPool, source_bytes};
use super::upload::UploadBuffer;
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

/// A pipeline's kernel, element kind (`ELEM`), entry point and other overrides' values
/// ([`program::Dispatch::overrides`]).
type PipelineKey = (Kernel, u32, &'static str, [u32; 2]);

/// Device, queue and pipelines.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    modules: HashMap<Kernel, wgpu::ShaderModule>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    lost: Arc<Mutex<Option<String>>>,
    pub(super) dummy_read: wgpu::Buffer,
    pub(super) dummy_write: wgpu::Buffer,
    pub(super) ring: BufferRing,
    /// Mapped buffers that workers read source tiles into ([`StagedTile`]).
    pub(super) staging: StagingPool,
    /// Mapped buffers the levels are read back into and written out from ([`MappedLevels`]).
    pub(super) readbacks: Arc<ReadbackPool>,
    /// Bytes of device buffers one ring slot may hold ([`super::memory::slot_share`]).
    pub(super) slot_device_bytes: u64,
    pub(super) poll_timeout: Duration,
    /// Whether the device was opened with timestamp queries.
    pub(super) timestamps: bool,
    /// The backends using the context now ([`super::GpuBackend`]); the last to go releases
    /// its idle buffers.
    pub(super) users: AtomicUsize,
}

pub(super) fn gpu_error(e: impl std::fmt::Display) -> BackendError {
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

    pub(super) fn check_alive(&self) -> Result<(), BackendError> {
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

    /// The pipeline of `kernel`'s `entry_point` specialised for `elem` and `overrides`
    /// (built on first use).
    pub(super) fn pipeline(
        &self,
        kernel: Kernel,
        elem: u32,
        entry_point: &'static str,
        overrides: [(&'static str, u32); 2],
    ) -> Arc<wgpu::ComputePipeline> {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pipelines
            .entry((kernel, elem, entry_point, overrides.map(|(_, value)| value)))
            .or_insert_with(|| {
                let [(a, a_value), (b, b_value)] = overrides;
                Arc::new(self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some("ome-pyramid kernel"),
                    layout: None,
                    module: &self.modules[&kernel],
                    entry_point: Some(entry_point),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[
                            ("ELEM", f64::from(elem)),
                            (a, f64::from(a_value)),
                            (b, f64::from(b_value)),
                        ],
                        ..Default::default()
                    },
                    cache: None,
                }))
            })
            .clone()
    }

    /// Bytes of each buffer the program binds; `None` if one exceeds the adapter's limits.
    pub(super) fn buffer_bytes(&self, dtype: DType, program: &Program) -> Option<(Vec<u64>, [u64; 2])> {
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
    pub(super) fn params_layout(&self, program: &Program) -> (u64, u64) {
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

    /// Runs the programs of staged tiles in one submission, each copying its source from
    /// its staged buffer; the buffers go back to the pool, to be mapped again once those
    /// copies are done. Each tile's levels stay in a mapped readback buffer of their own
    /// until they are dropped.
    ///
    /// Small tiles computed one per submission would each pay a round trip to the device
    /// (submit, wait, map); a batch pays it once. The tiles run one after another on one
    /// ring slot, whose buffers hold the largest of them.
    ///
    /// # Errors
    /// As [`GpuContext::run`], for the batch as a whole.
    pub fn run_staged(&self, staged: Vec<StagedTile>) -> Result<Vec<MappedLevels>, BackendError> {
        let mut tiles: Vec<(UploadBuffer, Program, DType)> = staged
            .into_iter()
            .map(|tile| {
                let StagedTile {
                    mut upload,
                    program,
                    dtype,
                    ..
                } = tile;
                upload.unmap();
                (upload, program, dtype)
            })
            .collect();
        let jobs = tiles
            .iter_mut()
            .map(|(upload, program, dtype)| (*dtype, JobSource::Staged(upload), &*program))
            .collect();
        let result = self.run_jobs(jobs, false);
        for (upload, ..) in tiles {
            self.staging.give(upload);
        }
        result.map(|(levels, _)| levels)
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

    pub(super) fn wait(&self, submission: wgpu::SubmissionIndex) -> Result<(), BackendError> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: Some(self.poll_timeout),
            })
            .map(|_| ())
            .map_err(|e| BackendError::Gpu(format!("waiting for the GPU: {e}")))
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

    /// Ring slots (tasks in flight on the device at once).
    #[must_use]
    pub fn ring_slots(&self) -> usize {
        self.ring.capacity()
    }
}

#[cfg(target_endian = "big")]
compile_error!("the GPU backend assumes a little-endian host (as every wgpu target is)");
