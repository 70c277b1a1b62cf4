//! The library's entry point: [`PyramidBuilder`] collects the input (a path, or a
//! [`Source`] such as an in-memory array), the options, the progress receiver, a cancel flag
//! and store wrappers, and runs the build on its own thread pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::options::LabelTarget;
use super::{BuildError, BuildOptions, BuildReport, NoProgress, Progress, run_build};
use crate::backend::BackendChoice;
use crate::method::Method;
use crate::store::{self, Compression, Source};

/// Builds a pyramid: `PyramidBuilder::new(input, output).method(Method::Mean).build()`.
///
/// The lifetime is that of a [`Source`] given to [`PyramidBuilder::from_source`] (an
/// in-memory array borrowed for the build); a build from a path is `PyramidBuilder<'static>`.
#[derive(Clone)]
pub struct PyramidBuilder<'a> {
    /// The input's path, or the source's name for messages.
    pub(super) input: PathBuf,
    /// The input, when given as a source rather than a path to open.
    pub(super) source: Option<Arc<dyn Source + 'a>>,
    pub(super) output: PathBuf,
    pub(super) options: BuildOptions,
    pub(super) progress: Arc<dyn Progress>,
    pub(super) cancel: Option<Arc<AtomicBool>>,
    pub(super) layers: StoreLayers,
    pub(super) label: Option<LabelTarget>,
    pub(super) before_writing: Option<BeforeWriting>,
    /// Part of a partitioned build (`plan`, a part, `finalize`): no backend in the record.
    pub(super) partitioned: bool,
}

/// Run once the build is found valid, before it changes anything on disk.
pub(crate) type BeforeWriting = Arc<dyn Fn() -> Result<(), BuildError> + Send + Sync>;

/// Wrappers around the stores a build reads and writes (instrumentation, fault injection).
#[derive(Clone, Default)]
pub struct StoreLayers {
    /// Wraps the input store.
    pub input: Option<Arc<dyn Fn(store::ReadStorage) -> store::ReadStorage + Send + Sync>>,
    /// Wraps the output store.
    pub output: Option<Arc<dyn Fn(store::WriteStorage) -> store::WriteStorage + Send + Sync>>,
}

impl std::fmt::Debug for PyramidBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyramidBuilder")
            .field("input", &self.input)
            .field("output", &self.output)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PyramidBuilder<'static> {
    /// A build of `input` (a Zarr array, an OME-Zarr image or a TIFF, see
    /// [`store::open_input`]) into the new OME-Zarr group `output`, with default options.
    #[must_use]
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        PyramidBuilder::with_input(input.into(), None, output.into())
    }
}

impl<'a> PyramidBuilder<'a> {
    /// A build of an already opened `source` (for example an
    /// [`NdarraySource`](store::NdarraySource) over an array in memory) into the new
    /// OME-Zarr group `output`, with default options. The source is read in place.
    #[must_use]
    pub fn from_source(source: Arc<dyn Source + 'a>, output: impl Into<PathBuf>) -> Self {
        let input = source.path().to_path_buf();
        Self::with_input(input, Some(source), output.into())
    }

    fn with_input(input: PathBuf, source: Option<Arc<dyn Source + 'a>>, output: PathBuf) -> Self {
        Self {
            input,
            source,
            output,
            options: BuildOptions::default(),
            progress: Arc::new(NoProgress),
            cancel: None,
            layers: StoreLayers::default(),
            label: None,
            before_writing: None,
            partitioned: false,
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

    /// Makes the output a label image with the given geometry and `image-label` block.
    #[must_use]
    pub(crate) fn label_target(mut self, target: LabelTarget) -> Self {
        self.label = Some(target);
        self
    }

    /// Runs `step` once every option and the input are found valid, before the output is
    /// created or replaced (a failure stops the build there).
    #[must_use]
    pub(crate) fn before_writing(mut self, step: BeforeWriting) -> Self {
        self.before_writing = Some(step);
        self
    }

    /// Sets the axis names of an input that does not name its axes (`"zyx"`, `"tczyx"`).
    #[must_use]
    pub fn axes(mut self, axes: impl Into<String>) -> Self {
        self.options.axes = Some(axes.into());
        self
    }

    /// Runs the build.
    ///
    /// # Errors
    /// [`BuildError`]; [`BuildError::is_invalid_input`] tells mistakes in the request
    /// from failures while running. On error no `.zattrs` is written, so the output never
    /// claims levels it does not have.
    pub fn build(self) -> Result<BuildReport, BuildError> {
        self.run_in_pool(run_build)
    }

    /// Plans a partitioned build of this input and these options in `parts` parts: checks
    /// them, creates the output with every level array's metadata (no image metadata), and
    /// stores the plan inside it. Run each part with [`run_part`](super::run_part) (on any
    /// host that sees the same paths), then [`finalize`](super::finalize).
    ///
    /// # Errors
    /// [`BuildError`], as [`build`](Self::build); also when there are more parts than the
    /// first pass has blocks.
    pub fn plan(mut self, parts: usize) -> Result<super::PlanReport, BuildError> {
        self.partitioned = true;
        self.run_in_pool(|builder, threads| super::partitioned::run_plan(builder, threads, parts))
    }

    /// Marks the builder as one step of a partitioned build.
    pub(super) fn partitioned(mut self) -> Self {
        self.partitioned = true;
        self
    }

    /// Runs `run` on a thread pool of the requested threads; reports the end to the
    /// progress receiver however it ends.
    pub(super) fn run_in_pool<R: Send>(
        &self,
        run: impl FnOnce(&Self, usize) -> Result<R, BuildError> + Send,
    ) -> Result<R, BuildError> {
        let threads = worker_threads(self.options.threads)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ome-pyramid-{i}"))
            .build()
            .map_err(|e| BuildError::ThreadsUnavailable {
                threads,
                reason: e.to_string(),
            })?;
        let result = pool.install(|| run(self, threads));
        self.progress.finish();
        result
    }
}

/// Threads per core beyond which more threads only add overhead (the work is decoding,
/// computing and encoding; a few extra cover waits on slow storage).
const MAX_THREADS_PER_CORE: usize = 4;

/// The worker thread count: `requested`, capped at what is useful, or every core.
pub(super) fn worker_threads(requested: Option<usize>) -> Result<usize, BuildError> {
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
