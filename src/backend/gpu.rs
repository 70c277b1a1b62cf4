//! The GPU backend (SPEC §5): the SPEC §2 kernels as WGSL compute shaders
//! (`shaders/nearest.wgsl`, `mean.wgsl`, `gaussian.wgsl`), run through `wgpu` on Vulkan,
//! Metal or DX12.
//!
//! - One [`GpuContext`] per run: device, queue, and a pipeline per kernel and dtype.
//! - Tiles go through a [`ring`] of reusable buffers, so the upload, compute and readback of
//!   tasks on different engine threads overlap. Each slot uploads through host-visible
//!   memory that stays mapped between its tasks ([`upload`]), and reads back into another
//!   that it keeps.
//! - A worker reading a tile the GPU will compute reads it straight into a mapped buffer
//!   the device copies from ([`StagedTile`]), not into a host tile that the submission thread
//!   would copy there.
//! - Staged tiles waiting for a submission thread when it takes one go with it, up to
//!   [`BATCH_BYTES`] of sources: small tiles (an image chunked one plane per time point and
//!   channel) share one submission, wait and readback map instead of paying one each.
//! - The levels come back into mapped memory that the engine encodes their chunks from,
//!   before it is unmapped ([`MappedLevels`]).
//! - Several levels of a chain are computed in a row on the device: level `k + 2` reads
//!   level `k + 1` where the previous dispatch left it; only the results travel back.
//! - A dispatch runs as a 3-D grid over words, rows and planes, so no invocation divides
//!   its index out; where rows end inside a packed word, a row's words are those whose
//!   first output lies in it. Only thin tiles, which would idle most lanes, run flat
//!   ([`program::Grid`]).
//! - Gaussian's passes over z, y and x run as one dispatch where a workgroup's z and y
//!   values fit its workgroup memory, else those over y and x: the values between passes
//!   stay in the workgroup instead of travelling through device memory ([`program::Grid`]).
//! - u8/u16 (and i8/i16) travel packed in u32 words; integer means are exact (64-bit sums
//!   emulated in u32 pairs); gaussian runs in `f32`, within ±1 of the CPU for 8- and 16-bit
//!   integers. Gaussian on 32-bit integers, and u64/i64/f64 data, go to the CPU.
//! - Tiles larger than the adapter's storage binding limit, or whose buffers would not fit
//!   a ring slot's share of the device's memory ([`memory`]), are split.
//! - A software adapter (lavapipe) ends an invocation's loops after 65 535 iterations in
//!   all: steps whose windows would take more (mode over large windows) are left to the CPU
//!   there ([`loop_budget`]).
//!
//! Adapter choice: `auto` takes a hardware adapter (discrete, integrated or virtual); a
//! software adapter (Mesa lavapipe) is used only when asked for with `--backend gpu`.

mod context;
mod execute;
mod loop_budget;
mod memory;
mod pool;
pub mod program;
mod readback;
mod ring;
mod staged;
mod upload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use context::{GpuContext, PhaseTimes, shader_source};
pub use program::Kernel;
pub use readback::MappedLevels;
pub use staged::{StagedRows, StagedTile};

use crate::backend::cpu::CpuBackend;
use crate::backend::{AdapterSummary, BackendError, BackendKind, ComputedLevels, Downsampler, Step, required_source};
use crate::dtype::DType;
use crate::method::Method;
use crate::tile::{Region, Tile, TileElement, copy_overlap};

/// Source bytes of the staged tiles one submission computes at most
/// ([`Downsampler::staged_batch_bytes`]). A tile of this size or more goes alone. Chosen, not
/// tuned on a discrete GPU: a submission's fixed costs (submit, wait, map) are small next to
/// moving this many bytes to the device and back, and the batch's tiles reuse one ring
/// slot's buffers, so a batch takes no more device memory than its largest tile.
pub const BATCH_BYTES: u64 = 32 << 20;

fn is_hardware(kind: wgpu::DeviceType) -> bool {
    matches!(
        kind,
        wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu
    )
}

fn preference(kind: wgpu::DeviceType) -> u8 {
    match kind {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn all_adapters() -> Vec<wgpu::Adapter> {
    tracing::debug!("looking for GPU adapters");
    driver_chatter_to_log(|| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
    })
}

/// The adapter a backend opens among `adapters`: the most preferred kind (discrete first),
/// hardware only unless `allow_software`.
fn choose_adapter(mut adapters: Vec<wgpu::Adapter>, allow_software: bool) -> Result<wgpu::Adapter, BackendError> {
    adapters.sort_by_key(|a| preference(a.get_info().device_type));
    let found: Vec<String> = adapters
        .iter()
        .map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().device_type))
        .collect();
    adapters
        .into_iter()
        .find(|a| allow_software || is_hardware(a.get_info().device_type))
        .ok_or_else(|| {
            BackendError::NoAdapter(if found.is_empty() {
                "wgpu found no Vulkan, Metal or DX12 adapter".to_string()
            } else {
                format!(
                    "only software adapters were found ({}); use --backend gpu to use them",
                    found.join(", ")
                )
            })
        })
}

/// Whether adapter probing may send the process's stderr to a file for its duration.
static CAPTURE_DRIVER_OUTPUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets adapter probing route what GPU drivers print on stderr into the debug log (Mesa's
/// Vulkan drivers print `error: XDG_RUNTIME_DIR is invalid or not set` on headless
/// machines, which is not an error of ours and must not look like one).
///
/// This swaps file descriptor 2 of the whole process while adapters are enumerated, so
/// only a program that owns its process (the command-line tool) turns it on. Off by
/// default: a host process (Python, Jupyter, a server) keeps its stderr untouched and sees
/// the drivers' lines as they are.
pub fn capture_driver_output(enabled: bool) {
    CAPTURE_DRIVER_OUTPUT.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `probe`, with the process's stderr sent to a temporary file if
/// [`capture_driver_output`] turned that on, and then logs what the drivers wrote there
/// at debug level.
fn driver_chatter_to_log<R>(probe: impl FnOnce() -> R) -> R {
    with_stderr_captured(CAPTURE_DRIVER_OUTPUT.load(std::sync::atomic::Ordering::Relaxed), probe)
}

/// Runs `probe`, with the process's stderr sent to a temporary file if `capture`, and then
/// logs what was written there at debug level. One capture at a time: two threads probing at
/// once would otherwise each save the other's capture file as the stderr to restore.
#[cfg(unix)]
fn with_stderr_captured<R>(capture: bool, probe: impl FnOnce() -> R) -> R {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;
    static CAPTURING: Mutex<()> = Mutex::new(());
    if !capture {
        return probe();
    }
    let _one_at_a_time = CAPTURING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = std::io::stderr().flush();
    let saved = std::io::stderr().as_fd().try_clone_to_owned();
    let (Ok(saved), Some(mut file)) = (saved, tempfile_in_tmp()) else {
        return probe();
    };
    if nix::unistd::dup2_stderr(&file).is_err() {
        return probe();
    }
    let result = probe();
    let _ = std::io::stderr().flush();
    let _ = nix::unistd::dup2_stderr(&saved);
    let mut text = String::new();
    if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::debug!("GPU driver: {line}");
        }
    }
    result
}

#[cfg(not(unix))]
fn with_stderr_captured<R>(_capture: bool, probe: impl FnOnce() -> R) -> R {
    probe()
}

/// An anonymous temporary file (unlinked at once), or `None` if none can be made.
#[cfg(unix)]
fn tempfile_in_tmp() -> Option<std::fs::File> {
    let path = std::env::temp_dir().join(format!(
        ".ome-pyramid-driver-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .ok()?;
    let _ = std::fs::remove_file(&path);
    Some(file)
}

/// Every adapter wgpu finds, best first.
#[must_use]
pub fn list_adapters() -> Vec<AdapterSummary> {
    let mut adapters: Vec<(wgpu::AdapterInfo, wgpu::Limits, Option<u64>)> = all_adapters()
        .iter()
        .map(|a| (a.get_info(), a.limits(), memory::device_local_bytes(a)))
        .collect();
    adapters.sort_by_key(|(info, _, _)| preference(info.device_type));
    let limit_mib = memory::limit_mib_from_env();
    adapters
        .into_iter()
        .map(|(info, limits, device_memory)| AdapterSummary {
            software: info.device_type == wgpu::DeviceType::Cpu,
            used_by_auto: is_hardware(info.device_type),
            name: info.name,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            device_memory,
            buffer_memory: memory::usable_bytes(device_memory, limit_mib),
            buffer_memory_from_env: limit_mib.is_some(),
        })
        .collect()
}

/// The device contexts this process has opened, by whether software adapters were allowed
/// (index 1) or not (index 0): later builds in the same process (a notebook's next cell, a
/// server's next request) share the device instead of opening one per call. A context whose
/// device was lost is replaced.
static CONTEXTS: Mutex<[Option<Arc<GpuContext>>; 2]> = Mutex::new([None, None]);

/// The GPU backend.
pub struct GpuBackend {
    context: Arc<GpuContext>,
    cpu: CpuBackend,
    told_cpu_fallback: AtomicBool,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("adapter", &self.context.info.name)
            .finish_non_exhaustive()
    }
}

impl GpuBackend {
    /// Opens the best adapter: hardware only, or software ones too when `allow_software`.
    ///
    /// # Errors
    /// [`BackendError::NoAdapter`] naming what was found instead.
    pub fn new(allow_software: bool) -> Result<Self, BackendError> {
        let mut contexts = CONTEXTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = &mut contexts[usize::from(allow_software)];
        let context = match slot.as_ref().filter(|c| c.is_alive()) {
            Some(context) => context.clone(),
            None => {
                let context = Arc::new(Self::open_context(allow_software)?);
                *slot = Some(context.clone());
                context
            }
        };
        Ok(Self::using(context))
    }

    /// A backend on `context`, counted among its users until it is dropped.
    fn using(context: Arc<GpuContext>) -> Self {
        context.users.fetch_add(1, Ordering::AcqRel);
        Self {
            context,
            cpu: CpuBackend::new(),
            told_cpu_fallback: AtomicBool::new(false),
        }
    }

    /// Whether [`GpuBackend::new`] would find an adapter (a hardware one, unless
    /// `allow_software`), without opening a device: `Ok` where one is already open or
    /// enumerated, else the error `new` would give.
    ///
    /// # Errors
    /// [`BackendError::NoAdapter`], as [`GpuBackend::new`].
    pub fn probe(allow_software: bool) -> Result<(), BackendError> {
        let open = CONTEXTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[usize::from(allow_software)]
            .as_ref()
            .is_some_and(|c| c.is_alive());
        if open {
            return Ok(());
        }
        choose_adapter(all_adapters(), allow_software).map(|_| ())
    }

    /// True if this backend and `other` run on the same device context.
    #[must_use]
    pub fn shares_context_with(&self, other: &GpuBackend) -> bool {
        Arc::ptr_eq(&self.context, &other.context)
    }

    fn open_context(allow_software: bool) -> Result<GpuContext, BackendError> {
        let adapter = choose_adapter(all_adapters(), allow_software)?;
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        GpuContext::new(&adapter, slots)
    }

    /// The context (device, queue, limits).
    #[must_use]
    pub fn context(&self) -> &GpuContext {
        &self.context
    }

    /// True if the adapter is a software one (lavapipe).
    #[must_use]
    pub fn is_software(&self) -> bool {
        self.context.info.device_type == wgpu::DeviceType::Cpu
    }

    /// True if the device's buffers live in host memory (a software or integrated
    /// adapter), where they count against `--memory`.
    #[must_use]
    pub fn shares_host_memory(&self) -> bool {
        matches!(
            self.context.info.device_type,
            wgpu::DeviceType::Cpu | wgpu::DeviceType::IntegratedGpu
        )
    }

    /// True if the device computes `step` on `dtype`: its kernel takes them, and on a
    /// software adapter, whose shaders end their loops after
    /// [`loop_budget::SOFTWARE_LOOP_BUDGET`] iterations, an invocation's loops stay under
    /// that. Else the step runs on the CPU, with the same results.
    #[must_use]
    pub fn computes(&self, step: &Step, dtype: DType) -> bool {
        self.supports(step.method, dtype)
            && (!self.is_software() || loop_budget::per_invocation(step, dtype) < loop_budget::SOFTWARE_LOOP_BUDGET)
    }

    /// Runs a chain on the device in one submission.
    fn run_chain(&self, src: &Tile, chain: &[(Step, Region)]) -> Result<Option<Vec<Tile>>, BackendError> {
        let dtype = src.data.dtype();
        let Some(program) = program::build(dtype, &src.region, chain).filter(|p| self.context.fits(dtype, p)) else {
            return Ok(None);
        };
        let outputs = self.context.run(dtype, &src.data, &program)?;
        Ok(Some(
            chain
                .iter()
                .zip(outputs)
                .map(|((_, region), data)| Tile::new(region.clone(), data))
                .collect(),
        ))
    }

    /// One step on a destination too large for one program: halves along the longest axis.
    fn downsample_split(&self, step: &Step, src: &Tile, dst: &Region) -> Result<Tile, BackendError> {
        let chain = [(step.clone(), dst.clone())];
        if let Some(mut tiles) = self.run_chain(src, &chain)? {
            return Ok(tiles.remove(0));
        }
        let axis = (0..dst.ndim())
            .max_by_key(|&a| dst.shape[a])
            .expect("at least one axis");
        if dst.shape[axis] < 2 {
            return Err(BackendError::Gpu(
                "a single row exceeds what one program may hold (the adapter's storage binding limit, or a ring slot's share of the device's memory)".into(),
            ));
        }
        let half = dst.shape[axis] / 2;
        let mut first = dst.clone();
        first.shape[axis] = half;
        let mut second = dst.clone();
        second.start[axis] += half;
        second.shape[axis] -= half;
        let dtype = src.data.dtype();
        let mut out = crate::tile::TileData::zeros(dtype, dst.len());
        for part in [first, second] {
            let part_src = src.extract(&required_source(step, &part));
            let tile = self.downsample_split(step, &part_src, &part)?;
            crate::dispatch_dtype!(dtype, T => {
                let mut buffer = T::unwrap(std::mem::replace(&mut out, crate::tile::TileData::U8(Vec::new()))).expect("dtype");
                copy_overlap(T::view(&tile.data).expect("dtype"), &tile.region, &mut buffer, dst);
                out = T::wrap(buffer);
            });
        }
        Ok(Tile::new(dst.clone(), out))
    }

    /// Says once per backend that a step is computed on the CPU, and why.
    fn note_cpu_fallback(&self, step: &Step, dtype: DType) {
        if self.told_cpu_fallback.swap(true, Ordering::Relaxed) {
            return;
        }
        let method = step.method;
        if self.supports(method, dtype) {
            tracing::info!(
                "{method} on {dtype} with factors {:?} is computed on the CPU: {} ends a shader invocation's loops after {} iterations, fewer than its windows take",
                step.factors,
                self.context.info.name,
                loop_budget::SOFTWARE_LOOP_BUDGET
            );
        } else {
            tracing::info!(
                "{method} on {dtype} is computed on the CPU (the GPU cannot hold it within SPEC §2's agreement)"
            );
        }
    }
}

/// The last backend on a context gives its idle buffers back: the pools keep the largest
/// tiles' buffers for the next tiles of a build, not for the rest of the process (a Python
/// session's later work, a server between requests). The device and its pipelines stay
/// open for the next build.
impl Drop for GpuBackend {
    fn drop(&mut self) {
        if self.context.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            let bytes = self.context.release_idle_buffers();
            if bytes > 0 {
                tracing::debug!(
                    "{}: {:.1} MiB of buffers released, no build uses the device now",
                    self.context.info.name,
                    bytes as f64 / f64::from(1 << 20)
                );
            }
        }
    }
}

impl Downsampler for GpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }

    fn task_memory_bytes(&self, method: Method, source_bytes: u64, output_bytes: u64) -> u64 {
        // In host memory on every adapter: the slot's mapped upload buffer (the source) and
        // its mapped readback (the outputs); ring buffers grow with a quarter of headroom.
        let headroom = |bytes: u64| bytes.saturating_add(bytes / 4);
        let staging = headroom(source_bytes).saturating_add(headroom(output_bytes));
        if !self.shares_host_memory() {
            return staging;
        }
        // A software or integrated adapter's device buffers are host memory too: the ring
        // slot's source and level buffers, and gaussian's two f32 intermediates (each at
        // most twice the source's bytes, for 8- and 16-bit sources).
        let mut device = headroom(source_bytes.saturating_add(output_bytes));
        if method == Method::Gaussian {
            device = device.saturating_add(headroom(source_bytes.saturating_mul(4)));
        }
        staging.saturating_add(device)
    }

    fn holds_tile(&self, method: Method, dtype: DType, source_elements: u64, output_elements: u64) -> bool {
        !self.supports(method, dtype) || self.context.holds_tile(method, dtype, source_elements, output_elements)
    }

    /// One per ring slot, where the GPU computes `method` on `dtype`: each holds a slot
    /// through a tile's upload, kernels and readback, waiting on the device, so the
    /// device has as many tiles in flight as it has slots, and no worker of the engine's
    /// waits for it. 0 (the workers compute) where the CPU computes it instead.
    fn compute_threads(&self, method: Method, dtype: DType) -> usize {
        if self.supports(method, dtype) {
            self.context.ring_slots()
        } else {
            0
        }
    }

    fn description(&self) -> String {
        let info = &self.context.info;
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete",
            wgpu::DeviceType::IntegratedGpu => "integrated",
            wgpu::DeviceType::VirtualGpu => "virtual",
            wgpu::DeviceType::Cpu => "software",
            wgpu::DeviceType::Other => "other",
        };
        format!("gpu: {} ({:?}, {kind})", info.name, info.backend)
    }

    fn supports(&self, method: Method, dtype: DType) -> bool {
        program::gpu_computes(method, dtype)
    }

    fn downsample(&self, step: &Step, src: &Tile, dst: &Region) -> Result<Tile, BackendError> {
        let dtype = src.data.dtype();
        if !self.computes(step, dtype) {
            self.note_cpu_fallback(step, dtype);
            return self.cpu.downsample(step, src, dst);
        }
        self.downsample_split(step, src, dst)
    }

    fn downsample_chain(&self, src: &Tile, chain: &[(Step, Region)]) -> Result<Vec<Tile>, BackendError> {
        let dtype = src.data.dtype();
        let on_gpu = chain.iter().all(|(step, _)| self.computes(step, dtype));
        if on_gpu && let Some(tiles) = self.run_chain(src, chain)? {
            return Ok(tiles);
        }
        // Too large for one program, or not for the GPU: step by step.
        let mut outputs: Vec<Tile> = Vec::with_capacity(chain.len());
        for (step, dst) in chain {
            let tile = self.downsample(step, outputs.last().unwrap_or(src), dst)?;
            outputs.push(tile);
        }
        Ok(outputs)
    }

    fn stage_source(&self, dtype: DType, region: &Region, chain: &[(Step, Region)]) -> Option<StagedTile> {
        if !chain.iter().all(|(step, _)| self.computes(step, dtype)) {
            return None;
        }
        let program = program::build(dtype, region, chain).filter(|p| self.context.fits(dtype, p))?;
        match self.context.stage(dtype, region, program) {
            Ok(staged) => Some(staged),
            Err(e) => {
                tracing::debug!("no staging buffer ({e}): the tile is read into host memory");
                None
            }
        }
    }

    fn downsample_staged(&self, tiles: Vec<(StagedTile, Vec<Region>)>) -> Result<Vec<ComputedLevels>, BackendError> {
        let (staged, regions): (Vec<_>, Vec<_>) = tiles.into_iter().unzip();
        let levels = self.context.run_staged(staged)?;
        Ok(levels
            .into_iter()
            .zip(regions)
            .map(|(levels, regions)| ComputedLevels::Mapped { regions, levels })
            .collect())
    }

    /// [`BATCH_BYTES`].
    fn staged_batch_bytes(&self) -> u64 {
        BATCH_BYTES
    }
}

#[cfg(test)]
/// A backend on a context of its own (not the process's shared one), after `configure`
/// has set the context up; `None` (said by [`no_adapter`] for `test`) where there is no
/// adapter.
pub(crate) fn backend_on_own_context(test: &str, configure: impl FnOnce(&mut GpuContext)) -> Option<GpuBackend> {
    let adapter = match choose_adapter(all_adapters(), true) {
        Ok(adapter) => adapter,
        Err(e) => {
            no_adapter(test, &e);
            return None;
        }
    };
    let mut context = GpuContext::new(&adapter, 2).expect("device");
    configure(&mut context);
    Some(GpuBackend::using(Arc::new(context)))
}

/// For a GPU test on a machine without an adapter: fails under `CI=true` (CI runs the GPU
/// path on lavapipe), else says on the process's stderr, where the reader of `cargo test`
/// sees it (the harness captures `eprintln!`), that `test` checked nothing.
#[cfg(test)]
pub(crate) fn no_adapter(test: &str, why: &dyn std::fmt::Display) {
    use std::io::Write;
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs the GPU path on lavapipe: an adapter must be found ({why})"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Device and inode of what file descriptor 2 is now.
    fn stderr_identity() -> (u64, u64) {
        use std::os::fd::AsFd;
        let stat = nix::sys::stat::fstat(std::io::stderr().as_fd()).expect("fstat of stderr");
        (stat.st_dev, stat.st_ino)
    }

    #[test]
    fn probing_leaves_stderr_alone_unless_the_program_asks() {
        // The process-wide switch stays off here: turning it on would make the other tests'
        // probes, running beside this one, swap stderr too.
        let before = stderr_identity();
        assert!(!CAPTURE_DRIVER_OUTPUT.load(Ordering::Relaxed), "off by default");
        assert_eq!(driver_chatter_to_log(stderr_identity), before, "off by default");
        let during = with_stderr_captured(true, stderr_identity);
        assert_ne!(
            during, before,
            "when asked, stderr is a capture file while adapters are probed"
        );
        assert_eq!(stderr_identity(), before, "and it is restored after");
    }

    /// A backend on a context of its own (not the process's shared one) whose ring slots
    /// may each hold `slot_bytes` of device buffers; `None` (said by [`no_adapter`]) where
    /// there is no adapter.
    fn backend_with_slot_share(test: &str, slot_bytes: u64) -> Option<GpuBackend> {
        backend_on_own_context(test, |context| {
            assert!(context.slot_device_bytes >= 1 << 20, "the device's own share");
            context.slot_device_bytes = slot_bytes;
        })
    }

    #[test]
    fn a_tile_too_large_for_a_slots_share_of_device_memory_is_split_with_the_same_result() {
        use crate::backend::Step;
        let Some(gpu) = backend_with_slot_share(
            "a_tile_too_large_for_a_slots_share_of_device_memory_is_split_with_the_same_result",
            256 << 10,
        ) else {
            return;
        };
        // The process's shared context, with its own share of the device, holds it whole.
        let shared = GpuBackend::new(true).expect("the shared context");
        let shape = [16u64, 96, 96];
        let src = crate::synthetic::random_tile(DType::U16, &shape, 7);
        for method in [Method::Mean, Method::Gaussian] {
            let step = Step {
                method,
                factors: vec![2, 2, 2],
                src_shape: shape.to_vec(),
            };
            let dst = Region::new(vec![0; 3], vec![8, 48, 48]);
            let program = program::build(DType::U16, &src.region, &[(step.clone(), dst.clone())]).expect("program");
            assert!(
                !gpu.context.fits(DType::U16, &program),
                "{method}: the tile's buffers exceed 256 KiB"
            );
            assert!(shared.context.fits(DType::U16, &program), "{method}: one program");
            let expected = shared.downsample(&step, &src, &dst).expect("in one program");
            let got = gpu.downsample(&step, &src, &dst).expect("split on the GPU");
            assert_eq!(got.data, expected.data, "{method}: the same as in one program");
        }
    }

    #[test]
    fn the_planners_estimate_admits_only_tiles_whose_programs_fit() {
        let Some(gpu) = backend_with_slot_share("the_planners_estimate_admits_only_tiles_whose_programs_fit", 1 << 20)
        else {
            return;
        };
        let mut admitted = 0;
        for dtype in [DType::U8, DType::U16, DType::F32] {
            for method in [Method::Mean, Method::Gaussian] {
                // Tiles of one and two levels, from well within a slot's megabyte to beyond it.
                for side in [16u64, 32, 48, 64, 96, 128, 192] {
                    for depth in 1..=2 {
                        let src_shape = vec![side / 2, side, side];
                        let src = Region::new(vec![0; 3], src_shape.clone());
                        let mut chain = Vec::new();
                        let mut shape = src_shape.clone();
                        for _ in 0..depth {
                            let step = Step {
                                method,
                                factors: vec![2, 2, 2],
                                src_shape: shape.clone(),
                            };
                            shape = step.dst_shape();
                            chain.push((step, Region::new(vec![0; 3], shape.clone())));
                        }
                        let outputs: u64 = chain.iter().map(|(_, r)| r.num_elements()).sum();
                        let program = program::build(dtype, &src, &chain).expect("program");
                        let holds = gpu.holds_tile(method, dtype, src.num_elements(), outputs);
                        let fits = gpu.context.fits(dtype, &program);
                        assert!(
                            !holds || fits,
                            "{method} {dtype} {src_shape:?} ×{depth}: admitted but split"
                        );
                        admitted += usize::from(holds);
                        if side == 16 {
                            assert!(holds, "{method} {dtype} {src_shape:?}: far within a megabyte");
                        }
                        if side == 192 {
                            assert!(!holds, "{method} {dtype} {src_shape:?}: beyond a megabyte");
                        }
                    }
                }
            }
        }
        assert!(
            admitted > 12,
            "the estimate admits more than the smallest tiles: {admitted}"
        );
    }

    /// Fused dispatches of a program: y–x passes, then z–y–x passes.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    struct Fused {
        yx: usize,
        zyx: usize,
    }

    /// `chain` built as a program with gaussian's passes fused where they can be, and as
    /// one with a pass per axis; where the first has fused dispatches, both run on a random
    /// source tile (`seed`). Its fused dispatches, or where the two programs' levels differ.
    fn fused_against_per_axis(
        gpu: &GpuBackend,
        dtype: DType,
        chain: &[(Step, Region)],
        seed: u64,
    ) -> Result<Fused, String> {
        use program::{GaussianPasses, Grid};
        let src_region = required_source(&chain[0].0, &chain[0].1);
        let tiles = program::build(dtype, &src_region, chain).expect("program");
        let count = |grid: fn(&Grid) -> bool| tiles.dispatches.iter().filter(|d| grid(&d.grid)).count();
        let fused = Fused {
            yx: count(|g| matches!(g, Grid::Tiles { .. })),
            zyx: count(|g| matches!(g, Grid::Volume { .. })),
        };
        if fused == Fused::default() {
            return Ok(fused);
        }
        let passes = program::build_with(dtype, &src_region, chain, GaussianPasses::PerAxis).expect("program");
        let src = crate::synthetic::random_tile(dtype, &src_region.shape, seed);
        let a = gpu.context.run(dtype, &src.data, &tiles).expect("fused");
        let b = gpu.context.run(dtype, &src.data, &passes).expect("per axis");
        if a == b {
            Ok(fused)
        } else {
            Err(format!(
                "{dtype} {:?} {src_region:?}: the fused pass differs",
                chain[0].0.factors
            ))
        }
    }

    #[test]
    fn the_fused_passes_give_the_per_axis_passes_results_bit_for_bit() {
        let Ok(gpu) = GpuBackend::new(true) else {
            no_adapter(
                "the_fused_passes_give_the_per_axis_passes_results_bit_for_bit",
                &"no GPU adapter opened",
            );
            return;
        };
        let mut fused = Fused::default();
        for dtype in [DType::U8, DType::U16, DType::I8, DType::I16, DType::F32] {
            // y/x only and 3-D; factors 2 and 3; whole levels, regions inside a level (halos
            // on both sides, identity axes cropped), edges (reflection); two levels at once.
            for (factors, level, dsts) in [
                (
                    vec![2, 2],
                    vec![70u64, 512],
                    vec![Region::new(vec![0, 0], vec![35, 256])],
                ),
                (
                    vec![1, 2, 2],
                    vec![5, 64, 600],
                    vec![Region::new(vec![2, 4, 20], vec![2, 24, 256])],
                ),
                (
                    vec![2, 3, 3],
                    vec![12, 90, 768],
                    vec![Region::new(vec![0, 0, 0], vec![6, 30, 256])],
                ),
                (
                    vec![2, 2, 2],
                    vec![16, 96, 1024],
                    vec![Region::whole(&[8, 48, 512]), Region::whole(&[4, 24, 256])],
                ),
                // Several channels in one tile: their planes flattened into z.
                (
                    vec![1, 2, 2, 2],
                    vec![3, 8, 64, 512],
                    vec![Region::whole(&[3, 4, 32, 256])],
                ),
            ] {
                let mut chain = Vec::new();
                let mut shape = level.clone();
                for dst in dsts {
                    let step = Step {
                        method: Method::Gaussian,
                        factors: factors.clone(),
                        src_shape: shape.clone(),
                    };
                    shape = step.dst_shape();
                    chain.push((step, dst));
                }
                let steps = fused_against_per_axis(&gpu, dtype, &chain, 11).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    steps.yx + steps.zyx,
                    chain.len(),
                    "{dtype} {factors:?}: every step fused"
                );
                fused.yx += steps.yx;
                fused.zyx += steps.zyx;
            }
        }
        // z–y–x where z is reduced and the tiles' values fit: the 2- and 4-byte elements'
        // with factor 2 (3 steps each), and float32's with factor 3; y–x for the rest.
        assert_eq!(fused, Fused { yx: 20, zyx: 10 });
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 96, ..Default::default() })]

        /// Random shapes, factors, element kinds and regions of a level: wherever a fused
        /// pass is taken, its results equal the per-axis passes' bit for bit.
        #[test]
        fn the_fused_passes_equal_the_per_axis_passes_on_random_regions(
            lead in proptest::collection::vec((1u64..=3, 1u32..=2), 0..=2),
            (ny, fy) in (2u64..=48, 2u32..=4),
            (nx, fx) in (8u64..=700, 2u32..=4),
            dtype in proptest::sample::select(vec![DType::U8, DType::U16, DType::I8, DType::I16, DType::F32]),
            cut in proptest::collection::vec((0u64..100, 1u64..=100), 4),
            seed in 0u64..1000,
        ) {
            let Ok(gpu) = GpuBackend::new(true) else {
                no_adapter("the_fused_passes_equal_the_per_axis_passes_on_random_regions", &"no GPU adapter opened");
                return Ok(());
            };
            let mut level: Vec<u64> = lead.iter().map(|&(n, _)| n).collect();
            level.extend([ny, nx]);
            let mut factors: Vec<u32> = lead.iter().map(|&(_, f)| f).collect();
            factors.extend([fy, fx]);
            let step = Step { method: Method::Gaussian, factors, src_shape: level.clone() };
            let full = step.dst_shape();
            // A region of the level's destination: per axis, its start and then its length
            // at these percentages of what is left, at least one output.
            let (start, shape): (Vec<u64>, Vec<u64>) = full
                .iter()
                .zip(&cut)
                .map(|(&n, &(at, length))| {
                    let first = at * n / 100;
                    (first, (length * (n - first) / 100).max(1))
                })
                .unzip();
            // Cases with thin or ragged rows, or columns beyond workgroup memory, fuse nothing
            // and compare nothing.
            let compared = fused_against_per_axis(&gpu, dtype, &[(step, Region::new(start, shape))], seed);
            proptest::prop_assert!(compared.is_ok(), "level {level:?}: {}", compared.unwrap_err());
        }
    }

    #[test]
    fn backends_of_one_process_share_one_device_context() {
        let (Ok(first), Ok(second)) = (GpuBackend::new(true), GpuBackend::new(true)) else {
            no_adapter(
                "backends_of_one_process_share_one_device_context",
                &"no GPU adapter opened",
            );
            return;
        };
        assert!(first.shares_context_with(&second));
    }
}
