//! The streaming pyramid engine (SPEC §5): the only module that knows both the store and
//! the compute backends.
//!
//! The pyramid is built in *passes*. A pass reads level `k` (the input for `k = 0`, else the
//! output level `k` as stored) and produces levels `k+1 ..= k+m`. Its work is split into
//! *tasks*, one per output chunk of level `k+m`; a task reads the region of level `k` that
//! chunk depends on (windows plus the gaussian halo of every step), computes the levels in a
//! row with the backend, and writes the chunks of each level that lie under its chunk. The
//! task regions tile every level exactly, so each output chunk is written once; since all
//! levels share the chunk shape, task regions are aligned to the chunks of level `k` too.
//!
//! Tasks run on all worker threads, pulled in C order, so reading, computing and writing of
//! different tasks overlap. A [`TileReader`] keeps decoded chunks that later tasks of the
//! pass still need (halos, unaligned input chunks), within the memory budget. `m` and the
//! number of concurrent tasks are chosen so that the tasks' working sets fit `--memory`;
//! memory therefore does not grow with the volume.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tracing::info;

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::GpuBackend;
use crate::backend::{BackendChoice, BackendError, Downsampler};
use crate::dtype::DType;
use crate::journal::{self, Journal, JournalError, OutputLock};
use crate::method::Method;
use crate::ngff::{self, MultiscalesSpec, NgffError};
use crate::plan::{self, Axis, AxisKind, FactorRule, PlanError, PlanRequest, PyramidPlan};
use crate::store::{self, Compression, LevelArray, OutputGroup, SourceImage, StoreError};

mod output;
mod pass;

use output::{absolute, check_output_location, prepare_output};
use pass::{BuildContext, Counters, run_passes};

/// Everything `build` can be asked (SPEC §1). `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    /// Downsampling method.
    pub method: Method,
    /// Compute backend.
    pub backend: BackendChoice,
    /// Total number of levels including level 0; `None` for the stop rule.
    pub levels: Option<usize>,
    /// Per-axis factors by axis name (`None` for the anisotropy rule).
    pub factors: Option<Vec<(String, u32)>>,
    /// Axis names for a plain array (e.g. `tczyx`); `None` for the default by dimensionality.
    pub axes: Option<String>,
    /// Level-0 pixel size per axis name; unnamed axes keep the input's value, else 1.
    pub scale: Vec<(String, f64)>,
    /// Unit of the space axes.
    pub unit: Option<String>,
    /// Output chunk shape; `None` for the input's chunk shape.
    pub chunks: Option<Vec<u64>>,
    /// Output codec.
    pub compression: Compression,
    /// Codec level.
    pub clevel: Option<i32>,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Working-set budget in bytes.
    pub memory_bytes: u64,
    /// CPU threads; `None` for all cores.
    pub threads: Option<usize>,
    /// Image name in the metadata; `None` for the input's name or file name.
    pub name: Option<String>,
    /// Continue an interrupted build of the same output with the same settings.
    pub resume: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            method: Method::Mean,
            backend: BackendChoice::Auto,
            levels: None,
            factors: None,
            axes: None,
            scale: Vec::new(),
            unit: None,
            chunks: None,
            compression: Compression::Input,
            clevel: None,
            overwrite: false,
            memory_bytes: 2 << 30,
            threads: None,
            name: None,
            resume: false,
        }
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Axes, factors or level count.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Reading the input or writing the output.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The compute backend.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An option value that cannot be used with this input.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option, e.g. `chunks`.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The output exists and `overwrite` is off.
    #[error("output `{0}` already exists (pass --overwrite to replace it)")]
    OutputExists(PathBuf),
    /// The output would overwrite or sit inside the input.
    #[error("output `{output}` {relation} input `{input}`; the input is never modified")]
    UnsafeOutput {
        /// The output path.
        output: PathBuf,
        /// The input path.
        input: PathBuf,
        /// How they relate.
        relation: &'static str,
    },
    /// `overwrite` on something that is not an ome-pyramid output.
    #[error("refusing to replace `{path}`: {reason} (remove it yourself if you mean it)")]
    RefuseOverwrite {
        /// The output.
        path: PathBuf,
        /// Why it is not replaced, naming the first foreign entry where there is one.
        reason: String,
    },
    /// The output changed under the build (files deleted or added by someone else): no
    /// metadata is written.
    #[error(
        "the output `{path}` changed during the build: {detail}; no image metadata was written (build again with --resume to redo what is missing, or with --overwrite)"
    )]
    OutputDamaged {
        /// The output.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The worker threads cannot be started.
    #[error(
        "cannot start {threads} worker threads ({reason}); the process's thread limit (ulimit -u) may be too low: pass --threads with a smaller number"
    )]
    ThreadsUnavailable {
        /// Threads asked for.
        threads: usize,
        /// The system's reason.
        reason: String,
    },
    /// The output directory cannot be created.
    #[error("cannot create the output `{path}`")]
    OutputNotCreatable {
        /// The output.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The lock, the build record or the journal.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The build was cancelled; `--resume` continues it.
    #[error("the build was interrupted ({tasks_done} of {tasks} tasks of this run finished)")]
    Interrupted {
        /// Tasks finished in this run (they are kept for `--resume`).
        tasks_done: u64,
        /// Tasks of the pass that was running.
        tasks: u64,
    },
}

impl BuildError {
    /// True when a read or write stopped because the build was cancelled.
    pub(crate) fn is_cancellation(&self) -> bool {
        matches!(self, BuildError::Store(StoreError::Cancelled))
    }

    /// True for mistakes in what the user gave (exit code 2); false for failures while
    /// running (exit code 1).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        match self {
            BuildError::Plan(_)
            | BuildError::InvalidOption { .. }
            | BuildError::OutputExists(_)
            | BuildError::UnsafeOutput { .. }
            | BuildError::RefuseOverwrite { .. } => true,
            // A path that cannot be a directory is a mistake; a read-only or full disk is not.
            BuildError::OutputNotCreatable { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::AlreadyExists
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidFilename
            ),
            BuildError::Store(e) => e.is_invalid_input(),
            BuildError::Journal(e) => e.is_invalid_input(),
            BuildError::Backend(_)
            | BuildError::Interrupted { .. }
            | BuildError::OutputDamaged { .. }
            | BuildError::ThreadsUnavailable { .. } => false,
        }
    }
}

/// Receives progress of a build. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// The build starts; `total_chunks` output chunks will be written.
    fn start(&self, _total_chunks: u64) {}
    /// `chunks` more output chunks are written.
    fn advance(&self, _chunks: u64) {}
    /// A pass producing `levels` finished after `elapsed`.
    fn pass_done(&self, _levels: std::ops::RangeInclusive<usize>, _elapsed: Duration) {}
    /// The build is over (successfully or not).
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// One level of the result.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// Level index.
    pub level: usize,
    /// Shape.
    pub shape: Vec<u64>,
    /// Chunk shape.
    pub chunks: Vec<u64>,
    /// Factors of the step that made it.
    pub step_factors: Vec<u32>,
    /// Seconds of the pass that made it (shared by the levels of one pass).
    pub pass_seconds: f64,
}

/// Seconds spent in each stage, summed over tasks (so they add up to more than the wall
/// time when tasks run in parallel).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageSeconds {
    /// Reading and decoding.
    pub read: f64,
    /// Computing on the backend.
    pub compute: f64,
    /// Encoding and writing.
    pub write: f64,
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Input path.
    pub input: PathBuf,
    /// Output path.
    pub output: PathBuf,
    /// Method.
    pub method: Method,
    /// Data type.
    pub dtype: DType,
    /// Backend used, as recorded in the metadata.
    pub backend: String,
    /// The levels.
    pub levels: Vec<LevelReport>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Uncompressed bytes of level 0.
    pub input_bytes: u64,
    /// `input_bytes / seconds` in MB/s (10^6 bytes).
    pub input_mb_per_s: f64,
    /// Chunks decoded from the store over all passes.
    pub chunks_decoded: u64,
    /// Of those, chunks decoded again because the cache budget could not keep them.
    pub chunks_redecoded: u64,
    /// Level-0 chunks copied without decoding and re-encoding.
    pub chunks_copied_raw: u64,
    /// Time per stage, summed over tasks.
    pub stage_seconds: StageSeconds,
    /// Worker threads.
    pub threads: usize,
    /// Peak resident memory of the process so far, if the platform reports it (Linux).
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident memory of this process (`VmHWM` on Linux), or `None` elsewhere.
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Builds a pyramid: `PyramidBuilder::new(input, output).method(Method::Mean).build()`.
#[derive(Clone)]
pub struct PyramidBuilder {
    input: PathBuf,
    output: PathBuf,
    options: BuildOptions,
    progress: Arc<dyn Progress>,
    cancel: Option<Arc<AtomicBool>>,
    layers: StoreLayers,
}

/// Wrappers around the stores a build reads and writes (instrumentation, fault injection).
#[derive(Clone, Default)]
pub struct StoreLayers {
    /// Wraps the input store.
    pub input: Option<Arc<dyn Fn(store::ReadStorage) -> store::ReadStorage + Send + Sync>>,
    /// Wraps the output store.
    pub output: Option<Arc<dyn Fn(store::WriteStorage) -> store::WriteStorage + Send + Sync>>,
}

impl std::fmt::Debug for PyramidBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyramidBuilder")
            .field("input", &self.input)
            .field("output", &self.output)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PyramidBuilder {
    /// A build of `input` into the new OME-Zarr group `output`, with default options.
    #[must_use]
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            options: BuildOptions::default(),
            progress: Arc::new(NoProgress),
            cancel: None,
            layers: StoreLayers::default(),
        }
    }

    /// Replaces all options.
    #[must_use]
    pub fn options(mut self, options: BuildOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the method.
    #[must_use]
    pub fn method(mut self, method: Method) -> Self {
        self.options.method = method;
        self
    }

    /// Sets the backend.
    #[must_use]
    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.options.backend = backend;
        self
    }

    /// Asks for exactly `levels` levels.
    #[must_use]
    pub fn levels(mut self, levels: usize) -> Self {
        self.options.levels = Some(levels);
        self
    }

    /// Sets the output chunk shape.
    #[must_use]
    pub fn chunks(mut self, chunks: Vec<u64>) -> Self {
        self.options.chunks = Some(chunks);
        self
    }

    /// Sets the output codec and its level.
    #[must_use]
    pub fn compression(mut self, compression: Compression, level: i32) -> Self {
        self.options.compression = compression;
        self.options.clevel = Some(level);
        self
    }

    /// Sets the memory budget in bytes.
    #[must_use]
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.options.memory_bytes = bytes;
        self
    }

    /// Sets the number of CPU threads.
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.options.threads = Some(threads);
        self
    }

    /// Replaces an existing output.
    #[must_use]
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.options.overwrite = overwrite;
        self
    }

    /// Reports progress to `progress`.
    #[must_use]
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Wraps the input store with `layer` (e.g. to inject read failures in tests).
    #[must_use]
    pub fn input_store_layer(
        mut self,
        layer: impl Fn(store::ReadStorage) -> store::ReadStorage + Send + Sync + 'static,
    ) -> Self {
        self.layers.input = Some(Arc::new(layer));
        self
    }

    /// Wraps the output store with `layer` (e.g. to inject write failures in tests).
    #[must_use]
    pub fn output_store_layer(
        mut self,
        layer: impl Fn(store::WriteStorage) -> store::WriteStorage + Send + Sync + 'static,
    ) -> Self {
        self.layers.output = Some(Arc::new(layer));
        self
    }

    /// Continues an interrupted build of the same output with the same settings.
    #[must_use]
    pub fn resume(mut self, resume: bool) -> Self {
        self.options.resume = resume;
        self
    }

    /// Stops the build (with [`BuildError::Interrupted`]) when `flag` becomes true.
    #[must_use]
    pub fn cancel_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Runs the build.
    ///
    /// # Errors
    /// [`BuildError`]; [`BuildError::is_invalid_input`] tells mistakes in the request
    /// from failures while running. On error no `.zattrs` is written, so the output never
    /// claims levels it does not have.
    pub fn build(self) -> Result<BuildReport, BuildError> {
        let threads = worker_threads(self.options.threads)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ome-pyramid-{i}"))
            .build()
            .map_err(|e| BuildError::ThreadsUnavailable {
                threads,
                reason: e.to_string(),
            })?;
        let progress = self.progress.clone();
        let result = pool.install(|| run_build(&self, threads));
        progress.finish();
        result
    }
}

/// Refuses a chunk whose decoded bytes exceed half the memory budget: a task holds at
/// least one such chunk and its tile, and a lying input must not make the build allocate
/// past `--memory`.
fn check_chunk_fits(
    option: &'static str,
    what: &str,
    chunk: &[u64],
    element_size: u64,
    memory_bytes: u64,
) -> Result<(), BuildError> {
    let bytes = chunk
        .iter()
        .try_fold(element_size, |n, &c| n.checked_mul(c))
        .unwrap_or(u64::MAX);
    if bytes > memory_bytes / 2 {
        let needed = bytes.saturating_mul(2);
        return Err(BuildError::InvalidOption {
            option,
            reason: format!(
                "{what} ({chunk:?}) holds {} decoded, more than half of the --memory budget of {}; raise --memory to at least {} or use smaller chunks",
                crate::units::format_bytes(bytes),
                crate::units::format_bytes(memory_bytes),
                crate::units::format_bytes(needed),
            ),
        });
    }
    Ok(())
}

/// Threads per core beyond which more threads only add overhead (the work is decoding,
/// computing and encoding; a few extra cover waits on slow storage).
const MAX_THREADS_PER_CORE: usize = 4;

/// The worker thread count: `requested`, capped at what is useful, or every core.
fn worker_threads(requested: Option<usize>) -> Result<usize, BuildError> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    match requested {
        None => Ok(cores),
        Some(0) => Err(BuildError::InvalidOption {
            option: "threads",
            reason: "must be at least 1".into(),
        }),
        Some(n) if n > MAX_THREADS_PER_CORE * cores => {
            let cap = MAX_THREADS_PER_CORE * cores;
            tracing::warn!(
                "--threads {n} is more than {MAX_THREADS_PER_CORE} per core on these {cores} cores; using {cap}"
            );
            Ok(cap)
        }
        Some(n) => Ok(n),
    }
}

/// Looks up per-axis-name values, refusing names that are not axes.
fn by_axis_name<V: Copy>(
    option: &'static str,
    axes: &[Axis],
    values: &[(String, V)],
) -> Result<Vec<Option<V>>, BuildError> {
    let mut out = vec![None; axes.len()];
    for (name, v) in values {
        let a = axes
            .iter()
            .position(|ax| &ax.name == name)
            .ok_or_else(|| BuildError::InvalidOption {
                option,
                reason: format!(
                    "`{name}` is not an axis of this image (axes: {})",
                    plan::axis_names(axes)
                ),
            })?;
        if out[a].is_some() {
            return Err(BuildError::InvalidOption {
                option,
                reason: format!("axis `{name}` is given twice"),
            });
        }
        out[a] = Some(*v);
    }
    Ok(out)
}

/// The decisions made before any output is written.
struct Prepared {
    source: SourceImage,
    axes: Vec<Axis>,
    pixel_size: Vec<f64>,
    translation: Vec<f64>,
    plan: PyramidPlan,
    compressor: Value,
    raw_copy_level0: bool,
    name: String,
}

fn prepare(builder: &PyramidBuilder) -> Result<Prepared, BuildError> {
    let options = &builder.options;
    if options.memory_bytes < (16 << 20) {
        return Err(BuildError::InvalidOption {
            option: "memory",
            reason: "the budget must be at least 16 MiB".into(),
        });
    }
    check_output_location(&builder.input, &builder.output)?;
    let source = store::open_source_with(&builder.input, builder.layers.input.as_deref())?;
    let ndim = source.shape.len();
    let element_size = source.dtype.size() as u64;
    check_chunk_fits(
        "memory",
        "a chunk of the input",
        &source.chunk_shape,
        element_size,
        options.memory_bytes,
    )?;
    if let Some(reason) = source.image.as_ref().and_then(|i| i.omero_dropped.as_ref()) {
        tracing::warn!("the input's `omero` block is not valid OME-NGFF ({reason}); it is not copied to the output");
    }

    // Axes: the input's OME axes, or --axes, or the default for the dimensionality.
    let image_axes = source.image.as_ref().map(|i| i.axes.clone()).filter(|a| !a.is_empty());
    let mut axes = match (&options.axes, image_axes) {
        (Some(_), Some(_)) => {
            return Err(BuildError::InvalidOption {
                option: "axes",
                reason: "the input is an OME-Zarr image that already names its axes".into(),
            });
        }
        (Some(spec), None) => plan::parse_axes(spec)?,
        (None, Some(axes)) => {
            plan::validate_axes(&axes)?;
            axes
        }
        (None, None) => plan::default_axes(ndim)?,
    };
    if axes.len() != ndim {
        return Err(PlanError::AxisCountMismatch {
            axes: plan::axis_names(&axes),
            given: axes.len(),
            ndim,
        }
        .into());
    }
    if let Some(unit) = &options.unit {
        let unit = ngff::normalize_space_unit(unit).map_err(|e: NgffError| BuildError::InvalidOption {
            option: "unit",
            reason: e.to_string(),
        })?;
        for axis in axes.iter_mut().filter(|a| a.kind == AxisKind::Space) {
            axis.unit = Some(unit.clone());
        }
    }

    // Pixel size and translation: --scale, else the input's metadata, else 1 and 0.
    let image_scale = source.image.as_ref().and_then(|i| i.scale.clone());
    let scale_given = by_axis_name("scale", &axes, &options.scale)?;
    let pixel_size: Vec<f64> = (0..ndim)
        .map(|a| {
            scale_given[a]
                .or_else(|| image_scale.as_ref().map(|s| s[a]))
                .unwrap_or(1.0)
        })
        .collect();
    let translation = source
        .image
        .as_ref()
        .and_then(|i| i.translation.clone())
        .unwrap_or_else(|| vec![0.0; ndim]);

    let chunks = match &options.chunks {
        Some(chunks) => {
            if chunks.len() != ndim {
                return Err(BuildError::InvalidOption {
                    option: "chunks",
                    reason: format!("{} values given but the array has {ndim} dimensions", chunks.len()),
                });
            }
            if chunks.contains(&0) {
                return Err(BuildError::InvalidOption {
                    option: "chunks",
                    reason: "chunk sizes must be at least 1".into(),
                });
            }
            // Clipped to the array as every level's chunks are, then held to the budget.
            let clipped: Vec<u64> = chunks.iter().zip(&source.shape).map(|(&c, &n)| c.min(n)).collect();
            check_chunk_fits(
                "chunks",
                "one output chunk",
                &clipped,
                element_size,
                options.memory_bytes,
            )?;
            chunks.clone()
        }
        None => source.chunk_shape.clone(),
    };
    let factors = match &options.factors {
        None => FactorRule::Auto,
        Some(named) => {
            let given = by_axis_name("factors", &axes, named)?;
            FactorRule::Fixed(given.into_iter().map(|f| f.unwrap_or(1)).collect())
        }
    };
    let plan = plan::plan_pyramid(&PlanRequest {
        shape: source.shape.clone(),
        chunks,
        axes: axes.clone(),
        pixel_size: pixel_size.clone(),
        factors,
        levels: options.levels,
    })?;

    let compressor = options
        .compression
        .compressor_json(options.clevel, &source)
        .map_err(|reason| BuildError::InvalidOption {
            option: "compression",
            reason,
        })?;
    let raw_copy_level0 = source.v2_compressor.as_ref() == Some(&compressor)
        && plan.levels[0].chunks == source.chunk_shape
        && source
            .array
            .chunk_grid_shape()
            .iter()
            .zip(&source.shape)
            .zip(&source.chunk_shape)
            .all(|((&g, &n), &c)| g == n.div_ceil(c));
    let name = options
        .name
        .clone()
        .or_else(|| source.image.as_ref().and_then(|i| i.name.clone()))
        .unwrap_or_else(|| {
            builder
                .input
                .file_name()
                .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned())
        });
    Ok(Prepared {
        source,
        axes,
        pixel_size,
        translation,
        plan,
        compressor,
        raw_copy_level0,
        name,
    })
}

/// Picks the backend for this build; logs and describes the choice.
fn select_backend(
    choice: BackendChoice,
    method: Method,
    dtype: DType,
) -> Result<(Arc<dyn Downsampler>, String), BuildError> {
    let cpu = || -> (Arc<dyn Downsampler>, String) {
        let backend = CpuBackend::new();
        let description = backend.description();
        (Arc::new(backend), description)
    };
    if choice == BackendChoice::Cpu {
        return Ok(cpu());
    }
    let allow_software = choice == BackendChoice::Gpu;
    match GpuBackend::new(allow_software) {
        Ok(gpu) if gpu.supports(method, dtype) => {
            let description = gpu.description();
            info!("using the GPU backend: {description}");
            Ok((Arc::new(gpu), description))
        }
        Ok(gpu) => {
            info!(
                "{method} on {dtype} data runs on the CPU: the GPU kernels cannot compute it within the spec's agreement ({})",
                gpu.description()
            );
            let (backend, description) = cpu();
            Ok((
                backend,
                format!("{description}; {method} on {dtype} is not computed on the GPU"),
            ))
        }
        Err(e) if choice == BackendChoice::Gpu => Err(e.into()),
        Err(e) => {
            info!("no hardware GPU adapter ({e}); using the CPU backend");
            let (backend, description) = cpu();
            Ok((backend, format!("{description}; auto: no hardware GPU adapter")))
        }
    }
}

fn run_build(builder: &PyramidBuilder, threads: usize) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let prepared = prepare(builder)?;
    let (backend, backend_description) =
        select_backend(builder.options.backend, builder.options.method, prepared.source.dtype)?;
    let output = &builder.output;
    let options = &builder.options;
    if options.resume && options.overwrite {
        return Err(BuildError::InvalidOption {
            option: "resume",
            reason: "--resume continues a build and --overwrite starts over; choose one".into(),
        });
    }
    let resuming = options.resume && output.exists();
    if options.resume && !resuming {
        info!("`{}` does not exist yet: starting a new build", output.display());
    }
    if !resuming {
        prepare_output(output, options.overwrite)?;
        std::fs::create_dir_all(output).map_err(|source| BuildError::OutputNotCreatable {
            path: output.clone(),
            source,
        })?;
    }
    let lock = OutputLock::acquire(output)?;
    let record = build_record(builder, &prepared, backend.as_ref())?;
    if resuming {
        journal::check_record(output, &record)?;
    } else {
        journal::write_record(output, &record)?;
    }
    let mut journal = Journal::open(output, resuming)?;
    let dtype = prepared.source.dtype;
    info!(
        "{} → {}: {} {:?} {}, {} levels, method {}, backend {}",
        builder.input.display(),
        builder.output.display(),
        dtype,
        prepared.source.shape,
        if prepared.raw_copy_level0 {
            "(level 0 copied as encoded)"
        } else {
            ""
        },
        prepared.plan.len(),
        builder.options.method,
        backend_description
    );
    let group = OutputGroup::create_with(&builder.output, builder.layers.output.as_deref())?;
    let levels: Vec<LevelArray> = prepared
        .plan
        .levels
        .iter()
        .enumerate()
        .map(|(k, level)| {
            group.create_level(
                k,
                &level.shape,
                &level.chunks,
                dtype,
                &prepared.compressor,
                &prepared.source.fill_value,
            )
        })
        .collect::<Result<_, _>>()?;
    if resuming {
        let redone = journal.keep_intact(|c| levels.get(c.level).and_then(|l| l.stored_size(c.index)) == Some(c.bytes));
        if redone > 0 {
            tracing::warn!(
                "{redone} tasks journaled as finished have chunk files that are missing or changed since; they are done again"
            );
        }
    }

    let context = BuildContext {
        source: &prepared.source,
        plan: &prepared.plan,
        method: builder.options.method,
        levels: &levels,
        group: &group,
        backend: backend.as_ref(),
        threads,
        memory_bytes: builder.options.memory_bytes,
        raw_copy_level0: prepared.raw_copy_level0,
        progress: builder.progress.as_ref(),
        cancel: builder.cancel.clone(),
        counters: Counters::new(prepared.plan.len()),
        journal: &journal,
        task_delay: test_task_delay(),
    };
    let total_chunks: u64 = prepared
        .plan
        .levels
        .iter()
        .map(|l| l.chunk_grid().iter().product::<u64>())
        .sum();
    builder.progress.start(total_chunks);
    let pass_seconds = crate::dispatch_dtype!(dtype, T => run_passes::<T>(&context)?);
    context.verify(0..=levels.len() - 1)?;

    let spec = MultiscalesSpec {
        name: &prepared.name,
        axes: &prepared.axes,
        pixel_size: &prepared.pixel_size,
        translation: &prepared.translation,
        plan: &prepared.plan,
        method: builder.options.method,
        integer_dtype: !dtype.is_float(),
        backend: &backend_description,
        multiscale_transforms: prepared
            .source
            .image
            .as_ref()
            .and_then(|i| i.multiscale_transforms.as_deref()),
    };
    let omero = prepared.source.image.as_ref().and_then(|i| i.omero.as_ref());
    group.write_attributes(&ngff::build_group_attributes(&spec, omero))?;
    // The metadata is in place: the journal, the record and the lock are no longer needed.
    journal.finish(output);
    drop(lock);

    let seconds = started.elapsed().as_secs_f64();
    let input_bytes = prepared.source.shape.iter().product::<u64>() * dtype.size() as u64;
    let counters = &context.counters;
    let ns = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed)).as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let input_mb_per_s = input_bytes as f64 / 1e6 / seconds.max(1e-9);
    Ok(BuildReport {
        input: builder.input.clone(),
        output: builder.output.clone(),
        method: builder.options.method,
        dtype,
        backend: backend_description,
        levels: prepared
            .plan
            .levels
            .iter()
            .enumerate()
            .map(|(k, l)| LevelReport {
                level: k,
                shape: l.shape.clone(),
                chunks: l.chunks.clone(),
                step_factors: l.step_factors.clone(),
                pass_seconds: pass_seconds.get(k).copied().unwrap_or(0.0),
            })
            .collect(),
        seconds,
        input_bytes,
        input_mb_per_s,
        chunks_decoded: counters.decoded.load(Ordering::Relaxed),
        chunks_redecoded: counters.redecoded.load(Ordering::Relaxed),
        chunks_copied_raw: counters.raw_copied.load(Ordering::Relaxed),
        stage_seconds: StageSeconds {
            read: ns(&counters.read_ns),
            compute: ns(&counters.compute_ns),
            write: ns(&counters.write_ns),
        },
        threads,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Every setting that decides the output's bytes, and a fingerprint of the input's data:
/// a resumed build must match it. Keys are the names a mismatch message shows.
fn build_record(builder: &PyramidBuilder, prepared: &Prepared, backend: &dyn Downsampler) -> Result<Value, BuildError> {
    let backend = match backend.kind() {
        crate::backend::BackendKind::Cpu => "cpu".to_string(),
        crate::backend::BackendKind::Gpu => backend.description(),
    };
    let array_dir = prepared
        .source
        .path
        .join(prepared.source.array_path.trim_start_matches('/'));
    let input_data = store::tree::fingerprint_files(&array_dir).map_err(|source| StoreError::Io {
        action: "cannot read the input",
        path: array_dir.clone(),
        source,
    })?;
    let plan = &prepared.plan;
    let factors: Vec<&Vec<u32>> = plan.levels[1..].iter().map(|l| &l.step_factors).collect();
    Ok(serde_json::json!({
        "software": format!("ome-pyramid {}", env!("CARGO_PKG_VERSION")),
        "input": absolute(&builder.input),
        "input_array": prepared.source.array_path,
        "input_metadata": prepared.source.raw_metadata,
        journal::record::INPUT_DATA_KEY: input_data,
        "method": builder.options.method,
        "levels": plan.len(),
        "chunks": plan.levels[0].chunks,
        "factors": factors,
        "axes": prepared.axes,
        "scale": prepared.pixel_size,
        "translation": prepared.translation,
        "compressor": prepared.compressor,
        "fill_value": prepared.source.fill_value,
        "level0_copied_as_encoded": prepared.raw_copy_level0,
        "name": prepared.name,
        "backend": backend,
    }))
}

/// A pause before each task, for tests that interrupt builds (`OME_PYRAMID_TEST_TASK_DELAY_MS`).
/// Read only by debug builds (the test suite's): a release binary or a host process never
/// looks at it.
fn test_task_delay() -> Option<Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var("OME_PYRAMID_TEST_TASK_DELAY_MS")
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_output_location_is_a_run_time_failure() {
        let not_creatable = |kind: std::io::ErrorKind| BuildError::OutputNotCreatable {
            path: "out".into(),
            source: kind.into(),
        };
        // Issue 16 item 18: exit 1 for a read-only or full file system, 2 for a path that
        // cannot be a directory.
        assert!(!not_creatable(std::io::ErrorKind::PermissionDenied).is_invalid_input());
        assert!(!not_creatable(std::io::ErrorKind::ReadOnlyFilesystem).is_invalid_input());
        assert!(!not_creatable(std::io::ErrorKind::StorageFull).is_invalid_input());
        assert!(not_creatable(std::io::ErrorKind::NotADirectory).is_invalid_input());
    }

    #[test]
    fn a_thread_limit_is_not_reported_as_an_invalid_option() {
        // Issue 16 item 18: a `ulimit` thread limit said "invalid threads" though --threads
        // was not given.
        let err = BuildError::ThreadsUnavailable {
            threads: 16,
            reason: "Resource temporarily unavailable (os error 11)".into(),
        };
        assert!(!err.is_invalid_input());
        assert!(err.to_string().starts_with("cannot start 16 worker threads"), "{err}");
        assert!(!err.to_string().contains("invalid threads"));
        assert_eq!(
            worker_threads(None).unwrap(),
            std::thread::available_parallelism().unwrap().get()
        );
        assert!(worker_threads(Some(0)).is_err());
        assert_eq!(
            worker_threads(Some(1_000_000)).unwrap(),
            4 * worker_threads(None).unwrap()
        );
    }
}
