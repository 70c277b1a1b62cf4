//! The decisions made before any output is written: the input opened and checked against
//! the memory budget, axes, pixel sizes, the level plan, the output codec, whether level 0
//! can be copied as stored, the backend, and the record a resumed build must match.

use std::sync::Arc;

use serde_json::Value;
use tracing::info;

use super::output::{absolute, check_output_location};
use super::{BuildError, BuildOptions, PyramidBuilder};
#[cfg(feature = "gpu")]
use crate::backend::calibrate::{CpuRate, GPU_WORTH_SECONDS};
use crate::backend::cpu::CpuBackend;
#[cfg(feature = "gpu")]
use crate::backend::gpu::GpuBackend;
use crate::backend::{BackendChoice, Downsampler};
use crate::dtype::DType;
use crate::journal;
use crate::method::Method;
use crate::ngff::{self, NgffError, NgffVersion};
use crate::plan::{self, Axis, AxisKind, FactorRule, PlanError, PlanRequest, PyramidPlan, ShardChoice};
use crate::store::{self, OutputCodec, Source};

/// Refuses a chunk whose decoded bytes exceed half the memory budget: a task holds at
/// least one such chunk and its tile, and a lying input must not make the build allocate
/// past `--memory`.
fn check_chunk_fits(
    option: &'static str,
    what: &str,
    chunk: &[u64],
    dtype: DType,
    memory_bytes: u64,
) -> Result<(), BuildError> {
    let bytes = dtype.bytes_of(chunk).unwrap_or(u64::MAX);
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

/// The axes of a build with their level-0 pixel size and translation.
struct Geometry {
    axes: Vec<Axis>,
    pixel_size: Vec<f64>,
    translation: Vec<f64>,
}

/// The decisions made before any output is written.
pub(super) struct Prepared<'a> {
    pub(super) source: Arc<dyn Source + 'a>,
    pub(super) axes: Vec<Axis>,
    pub(super) pixel_size: Vec<f64>,
    pub(super) translation: Vec<f64>,
    pub(super) plan: PyramidPlan,
    pub(super) codec: OutputCodec,
    /// Shard shape of every level (`None` where a level is not sharded).
    pub(super) shards: Vec<Option<Vec<u64>>>,
    pub(super) level0: Level0,
    pub(super) name: String,
}

/// How level 0 of the output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Level0 {
    /// Decoded and encoded again.
    Encoded,
    /// Chunks copied as the input stores them, into chunk files or into shards.
    CopiedChunks,
    /// Shard files copied whole: the input's shards are the output's.
    CopiedShards,
}

impl Level0 {
    /// True when level 0 is copied as stored, not decoded for itself.
    pub(super) fn is_copied(self) -> bool {
        self != Level0::Encoded
    }
}

/// Largest uncompressed shard of `--shards auto` unless `--shard-size` says otherwise.
const DEFAULT_SHARD_SIZE: u64 = 1 << 30;

pub(super) fn prepare<'a>(builder: &PyramidBuilder<'a>) -> Result<Prepared<'a>, BuildError> {
    let options = &builder.options;
    if options.ngff_version == NgffVersion::V04 && (options.shards.is_some() || options.shard_size.is_some()) {
        return Err(BuildError::InvalidOption {
            option: "shards",
            reason: "sharding needs --ngff-version 0.5 (OME-NGFF 0.4 is Zarr v2, which has no shards)".into(),
        });
    }
    if options.shard_size == Some(0) {
        return Err(BuildError::InvalidOption {
            option: "shard-size",
            reason: "must be at least one byte".into(),
        });
    }
    if options.memory_bytes < (16 << 20) {
        return Err(BuildError::InvalidOption {
            option: "memory",
            reason: "the budget must be at least 16 MiB".into(),
        });
    }
    let source = match &builder.source {
        Some(source) => {
            // A source on disk (a path, not an array's name) must not lie where the output goes.
            if source.path().exists() {
                check_output_location(source.path(), &builder.output)?;
            }
            source.clone()
        }
        None => {
            check_output_location(&builder.input, &builder.output)?;
            store::open_input(&builder.input, options.series, builder.layers.input.as_deref())?
        }
    };
    if !options.method.accepts(source.dtype()) {
        return Err(BuildError::InvalidOption {
            option: "method",
            reason: format!(
                "{} is defined for integer data (label images), and the input is {}; use nearest, min or max for {} data",
                options.method,
                source.dtype(),
                source.dtype()
            ),
        });
    }
    let ndim = source.shape().len();
    let element_size = source.dtype().size() as u64;
    check_chunk_fits(
        "memory",
        "a chunk of the input",
        source.chunk_shape(),
        source.dtype(),
        options.memory_bytes,
    )?;
    if let Some(reason) = &source.image().omero_dropped {
        tracing::warn!(
            "the input's `omero` block is not valid OME-NGFF ({reason}); it is not copied; the output gets display windows measured from the data"
        );
    }

    let Geometry {
        axes,
        pixel_size,
        translation,
    } = match &builder.label {
        Some(target) => {
            // The parent image decides the geometry; `labels` checked the shapes agree.
            if target.axes.len() != ndim {
                return Err(PlanError::AxisCountMismatch {
                    axes: plan::axis_names(&target.axes),
                    given: target.axes.len(),
                    ndim,
                }
                .into());
            }
            Geometry {
                axes: target.axes.clone(),
                pixel_size: target.pixel_size.clone(),
                translation: target.translation.clone(),
            }
        }
        None => input_geometry(options, source.as_ref())?,
    };

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
            let clipped: Vec<u64> = chunks.iter().zip(source.shape()).map(|(&c, &n)| c.min(n)).collect();
            check_chunk_fits(
                "chunks",
                "one output chunk",
                &clipped,
                source.dtype(),
                options.memory_bytes,
            )?;
            chunks.clone()
        }
        None => source.preferred_chunks(),
    };
    let (factors, levels) = match (&builder.label, &options.factors) {
        (Some(target), _) => (FactorRule::PerStep(target.steps.clone()), Some(target.steps.len() + 1)),
        (None, None) => (FactorRule::Auto, options.levels),
        (None, Some(named)) => {
            let given = by_axis_name("factors", &axes, named)?;
            (
                FactorRule::Fixed(given.into_iter().map(|f| f.unwrap_or(1)).collect()),
                options.levels,
            )
        }
    };
    let plan = plan::plan_pyramid(&PlanRequest {
        shape: source.shape().to_vec(),
        chunks,
        axes: axes.clone(),
        pixel_size: pixel_size.clone(),
        factors,
        levels,
    })?;

    // The input's codec carries over where the output's Zarr version can express it.
    // (A sharded input's codec is that of its inner chunks.)
    let input_codec = source
        .stored_codec()
        .or_else(|| source.stored_shards().map(|(_, codec)| codec))
        .filter(|c| options.ngff_version == NgffVersion::V04 || c.to_v3(source.dtype()).is_some());
    let codec = options
        .compression
        .resolve(options.clevel, input_codec)
        .map_err(|reason| BuildError::InvalidOption {
            option: "compression",
            reason,
        })?;
    let shard_choice = match (options.ngff_version, &options.shards) {
        (NgffVersion::V04, _) => ShardChoice::None,
        (NgffVersion::V05, choice) => choice.clone().unwrap_or_default(),
    };
    let shards = plan::shard_shapes(
        &plan,
        &axes,
        &shard_choice,
        element_size,
        options.shard_size.unwrap_or(DEFAULT_SHARD_SIZE),
    )?;
    let same_chunks = plan.levels[0].chunks == source.chunk_shape()
        && source
            .grid_shape()
            .iter()
            .zip(source.shape())
            .zip(source.chunk_shape())
            .all(|((&g, &n), &c)| g == n.div_ceil(c));
    let level0 = match source.stored_shards() {
        Some((shard, inner)) if same_chunks && inner == &codec && shards[0].as_deref() == Some(shard) => {
            Level0::CopiedShards
        }
        _ if same_chunks && source.stored_codec() == Some(&codec) => Level0::CopiedChunks,
        _ => Level0::Encoded,
    };
    let name = options
        .name
        .clone()
        .or_else(|| source.image().name.clone())
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
        codec,
        shards,
        level0,
        name,
    })
}

/// Axes, level-0 pixel size and translation of a build: the input's OME metadata, else
/// `--axes`, `--scale` and `--unit`, else the defaults for the dimensionality.
fn input_geometry(options: &BuildOptions, source: &dyn Source) -> Result<Geometry, BuildError> {
    let ndim = source.shape().len();
    // Axes: the input's OME axes, or --axes, or the default for the dimensionality.
    let image_axes = Some(source.image().axes.clone()).filter(|a| !a.is_empty());
    let mut axes = match (&options.axes, image_axes) {
        (Some(spec), Some(default)) if source.image().axes_replaceable => {
            // Names replace a default; a space axis keeps the unit found for its position.
            let mut named = plan::parse_axes(spec)?;
            for (axis, found) in named.iter_mut().zip(&default) {
                if axis.kind == AxisKind::Space && found.kind == AxisKind::Space {
                    axis.unit.clone_from(&found.unit);
                }
            }
            named
        }
        (Some(_), Some(_)) => {
            return Err(BuildError::InvalidOption {
                option: "axes",
                reason: "the input's metadata already names its axes".into(),
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
    let image_scale = source.image().scale.clone();
    let scale_given = by_axis_name("scale", &axes, &options.scale)?;
    let pixel_size: Vec<f64> = (0..ndim)
        .map(|a| {
            scale_given[a]
                .or_else(|| image_scale.as_ref().map(|s| s[a]))
                .unwrap_or(1.0)
        })
        .collect();
    let translation = source.image().translation.clone().unwrap_or_else(|| vec![0.0; ndim]);
    Ok(Geometry {
        axes,
        pixel_size,
        translation,
    })
}

/// What decides the backend of a build besides `--backend`.
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
pub(super) struct BackendNeeds<'a> {
    pub(super) method: Method,
    pub(super) dtype: DType,
    /// The levels: `auto` measures the first step on a tile shaped after level 0.
    pub(super) plan: &'a PyramidPlan,
    /// The backend an interrupted build recorded: a resumed `auto` build keeps it, as the
    /// metadata described it then, rather than measuring again, so the record still
    /// matches and the metadata equals the uninterrupted build's.
    pub(super) recorded: Option<crate::journal::record::RecordedBackend>,
}

/// Picks the backend for this build; logs and describes the choice.
pub(super) fn select_backend(
    choice: BackendChoice,
    needs: &BackendNeeds<'_>,
) -> Result<(Arc<dyn Downsampler>, String), BuildError> {
    let cpu = || -> (Arc<dyn Downsampler>, String) {
        let backend = CpuBackend::new();
        let description = backend.description();
        (Arc::new(backend), description)
    };
    if choice == BackendChoice::Cpu {
        return Ok(cpu());
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = needs;
        if choice == BackendChoice::Gpu {
            return Err(crate::backend::BackendError::NoAdapter(
                "this build of ome-pyramid has no GPU support (built without the `gpu` feature)".into(),
            )
            .into());
        }
        info!("built without GPU support; using the CPU backend");
        let (backend, description) = cpu();
        Ok((backend, format!("{description}; auto: built without GPU support")))
    }
    #[cfg(feature = "gpu")]
    gpu_or_cpu(choice, needs, cpu)
}

/// Environment variable that lets `--backend auto` consider a software adapter (lavapipe):
/// for tests and the GPU report's smoke run, where no hardware GPU exists.
#[cfg(feature = "gpu")]
pub const AUTO_SOFTWARE_GPU_ENV: &str = "OME_PYRAMID_AUTO_SOFTWARE_GPU";

/// Environment variable that replaces [`GPU_WORTH_SECONDS`], the CPU kernel time below
/// which `--backend auto` does not open the GPU (`0`: always time it; for tests, and for
/// tuning on a machine whose GPU opens faster or slower).
#[cfg(feature = "gpu")]
pub const AUTO_MIN_SECONDS_ENV: &str = "OME_PYRAMID_AUTO_MIN_SECONDS";

#[cfg(feature = "gpu")]
fn gpu_worth_seconds() -> f64 {
    std::env::var(AUTO_MIN_SECONDS_ENV)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(GPU_WORTH_SECONDS)
}

/// The GPU backend where `choice` and the adapters allow it (for `auto`, where it is also
/// measured faster), else `cpu()`.
#[cfg(feature = "gpu")]
fn gpu_or_cpu(
    choice: BackendChoice,
    needs: &BackendNeeds<'_>,
    cpu: impl Fn() -> (Arc<dyn Downsampler>, String),
) -> Result<(Arc<dyn Downsampler>, String), BuildError> {
    let (method, dtype) = (needs.method, needs.dtype);
    let allow_software = choice == BackendChoice::Gpu || std::env::var_os(AUTO_SOFTWARE_GPU_ENV).is_some();
    let no_adapter = |e: crate::backend::BackendError| {
        info!("no hardware GPU adapter ({e}); using the CPU backend");
        let (backend, description) = cpu();
        (backend, format!("{description}; auto: no hardware GPU adapter"))
    };
    if choice == BackendChoice::Auto
        && let Some(recorded) = &needs.recorded
        && let Some(resumed) = as_recorded(recorded, needs, allow_software, &cpu)
    {
        info!(
            "resuming with the backend the interrupted build recorded: {}",
            resumed.1
        );
        return Ok(resumed);
    }
    // `auto` times the CPU first: a build it computes quickly never looks for a GPU (which
    // loads every installed Vulkan driver: lavapipe's alone costs about 0.03 s and 50 MiB).
    // Otherwise it looks for an adapter without opening it.
    let mut cpu_rate = None;
    if choice == BackendChoice::Auto {
        let threshold = gpu_worth_seconds();
        match first_step_cpu_rate(needs)? {
            Some((rate, seconds)) if seconds < threshold => {
                let reason = crate::backend::calibrate::too_short_record(threshold);
                info!("{reason} ({}); using the CPU backend", rate.estimate(seconds));
                let (backend, cpu_description) = cpu();
                return Ok((backend, format!("{cpu_description}; {reason}")));
            }
            Some((rate, _)) => cpu_rate = Some(rate),
            None => {}
        }
        if let Err(e) = GpuBackend::probe(allow_software) {
            return Ok(no_adapter(e));
        }
    }
    match GpuBackend::new(allow_software) {
        Ok(gpu) if gpu.supports(method, dtype) => {
            let mut description = gpu.description();
            if choice == BackendChoice::Auto {
                let (use_cpu, reason) = auto_choice(&gpu, cpu_rate.as_ref());
                if use_cpu {
                    info!("{reason}; using the CPU backend");
                    let (backend, cpu_description) = cpu();
                    return Ok((backend, format!("{cpu_description}; {reason}")));
                }
                info!("{reason}");
                description = format!("{description}; {reason}");
            }
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
        Err(e) => Ok(no_adapter(e)),
    }
}

/// A resumed `auto` build's backend: the one its record names, described as the
/// interrupted build's metadata would have, without timing anything again. `None` where
/// the recorded GPU cannot be opened or computes `needs`' method elsewhere now: the backend
/// is then chosen anew, and the record check names the difference.
#[cfg(feature = "gpu")]
fn as_recorded(
    recorded: &crate::journal::record::RecordedBackend,
    needs: &BackendNeeds<'_>,
    allow_software: bool,
    cpu: impl Fn() -> (Arc<dyn Downsampler>, String),
) -> Option<(Arc<dyn Downsampler>, String)> {
    if recorded.kind == "cpu" {
        return Some((cpu().0, recorded.description.clone()));
    }
    let gpu = GpuBackend::new(allow_software)
        .ok()
        .filter(|gpu| gpu.supports(needs.method, needs.dtype) && gpu.description() == recorded.kind)?;
    Some((Arc::new(gpu), recorded.description.clone()))
}

/// For a new `auto` build with levels to compute: the CPU's rate on the first step
/// ([`CpuRate`]) and the seconds its kernels would take over every level the build reads
/// (all but the last); `None` for a build of a single level.
#[cfg(feature = "gpu")]
fn first_step_cpu_rate(needs: &BackendNeeds<'_>) -> Result<Option<(CpuRate, f64)>, BuildError> {
    let levels = &needs.plan.levels;
    let Some(first_step) = levels.get(1) else {
        return Ok(None);
    };
    let rate = CpuRate::measure(
        &CpuBackend::new(),
        needs.method,
        needs.dtype,
        &first_step.step_factors,
        &levels[0].shape,
    )?;
    let source_bytes: u64 = levels[..levels.len() - 1]
        .iter()
        .map(|level| needs.dtype.bytes_of(&level.shape).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add);
    let seconds = rate.seconds_for(source_bytes);
    Ok(Some((rate, seconds)))
}

/// For `auto` with a GPU at hand: whether to use the CPU instead, and why: the GPU timed
/// against `cpu_rate` ([`crate::backend::calibrate`]).
#[cfg(feature = "gpu")]
fn auto_choice(gpu: &GpuBackend, cpu_rate: Option<&CpuRate>) -> (bool, String) {
    // The build was timed on the CPU before the GPU opened, unless it has nothing to
    // compute.
    let Some(cpu_rate) = cpu_rate else {
        return (false, "auto: the GPU (one level: nothing to compute)".into());
    };
    match cpu_rate.against(gpu) {
        Ok(measured) => (!measured.prefers_gpu(), measured.reason()),
        // A GPU that fails on a small tile would fail the build: the CPU does it instead.
        Err(e) => (true, format!("auto: the GPU failed its calibration ({e})")),
    }
}

/// Every setting that decides the output's bytes, and a fingerprint of the input's data:
/// a resumed build, and every part of a partitioned one, must match it. Keys are the names
/// a mismatch message shows. `backend` comes with its description in the metadata. A
/// partitioned build records no backend (`None`): its parts may run on hosts with different
/// GPUs, or none.
pub(super) fn build_record(
    builder: &PyramidBuilder<'_>,
    prepared: &Prepared<'_>,
    backend: Option<(&dyn Downsampler, &str)>,
) -> Result<Value, BuildError> {
    let backend = backend.map(|(backend, description)| {
        let kind = match backend.kind() {
            crate::backend::BackendKind::Cpu => "cpu".to_string(),
            crate::backend::BackendKind::Gpu => backend.description(),
        };
        (kind, description)
    });
    let input_data = prepared.source.fingerprint()?;
    let plan = &prepared.plan;
    let factors: Vec<&Vec<u32>> = plan.levels[1..].iter().map(|l| &l.step_factors).collect();
    let mut record = serde_json::json!({
        "software": format!("ome-pyramid {}", env!("CARGO_PKG_VERSION")),
        "input": match builder.source {
            Some(_) => builder.input.clone(),
            None => absolute(&builder.input),
        },
        journal::record::INPUT_DATA_KEY: input_data,
        "method": builder.options.method,
        "levels": plan.len(),
        "chunks": plan.levels[0].chunks,
        "factors": factors,
        "axes": prepared.axes,
        "scale": prepared.pixel_size,
        "translation": prepared.translation,
        "ngff_version": builder.options.ngff_version,
        "shards": prepared.shards,
        "compressor": prepared.codec.to_v2(),
        "fill_value": store::node::fill_value_json(prepared.source.fill_bytes(), prepared.source.dtype()),
        "level0": prepared.level0,
        "name": prepared.name,
    });
    if let (Some(map), Some((kind, description))) = (record.as_object_mut(), backend) {
        map.insert("backend".into(), kind.into());
        map.insert(journal::record::BACKEND_DESCRIPTION_KEY.into(), description.into());
    }
    if let (Some(map), Value::Object(identity)) = (record.as_object_mut(), prepared.source.identity()) {
        map.extend(identity);
    }
    if let (Some(map), Some(target)) = (record.as_object_mut(), &builder.label) {
        map.insert("image-label".into(), target.image_label.clone());
    }
    Ok(record)
}
