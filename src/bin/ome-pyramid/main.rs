//! The `ome-pyramid` command line (SPEC §1): `build`, `plan`/`part`/`finalize` (a build split
//! into array tasks), `labels`, `thumbnail`, `info`, `bench`, `demo`, `synth`.
//!
//! Exit codes: 0 success; 2 usage or invalid input; 1 any other failure. Errors are one
//! `error:` line with their cause chain.

mod bench;
mod info;
mod kernel_bench;
mod labels;
mod partition;
mod thumbnail;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use ome_pyramid::engine::LevelReport;
use ome_pyramid::ngff::NgffVersion;
use ome_pyramid::plan::ShardChoice;
use ome_pyramid::store;
use ome_pyramid::synthetic::{self, ArrayFormat, ArraySpec, Codec};
use ome_pyramid::units::{format_bytes, parse_size};
use ome_pyramid::{
    BackendChoice, BuildError, BuildOptions, BuildReport, Compression, DType, Method, Progress, PyramidBuilder,
};

/// Builds multiscale OME-Zarr pyramids (OME-NGFF 0.4, or 0.5 with sharding) from Zarr
/// volumes, on the GPU (WGSL compute shaders through wgpu) or on all CPU cores, with the same
/// results.
#[derive(Parser, Debug)]
#[command(name = "ome-pyramid", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success, 2 usage or invalid input, 1 any other failure.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More logging (-v: per-level timings, -vv: everything).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No progress bar and only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the pyramid of INPUT (a Zarr v2/v3 array, an OME-Zarr image, a TIFF/OME-TIFF/ImageJ file or a folder of TIFF slices) into OUTPUT.
    Build(BuildArgs),
    /// Plan a build split into parts for a cluster: check it, create OUTPUT with its level arrays, and store the plan.
    Plan(partition::PlanArgs),
    /// Run one part of a planned build (INDEX, or the scheduler's array task index).
    Part(partition::PartArgs),
    /// Finish a planned build once every part has: the levels above the parts, then the metadata.
    Finalize(partition::FinalizeArgs),
    /// Add a label image (a segmentation's pyramid with the image's own levels) to an OME-Zarr image.
    Labels(labels::LabelsArgs),
    /// Draw a PNG preview of an OME-Zarr image: its omero colours and windows, maximum over z.
    Thumbnail(thumbnail::ThumbnailArgs),
    /// Show the levels, shapes, chunks, dtype, codecs and transforms of a Zarr array or OME-Zarr image, and its label images; or what `build` will make of a TIFF input.
    Info(info::InfoArgs),
    /// Time CPU against GPU per method on INPUT or a synthetic volume (peak memory, stages, speedup).
    Bench(bench::BenchArgs),
    /// Make a synthetic 3-D volume (structure plus noise) and build its pyramid.
    Demo(DemoArgs),
    /// Write a synthetic Zarr array (camera-like data) to try things on.
    Synth(SynthArgs),
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// The new array's directory.
    output: PathBuf,
    /// Shape, e.g. 256,1024,1024 (2 to 5 axes).
    #[arg(long, default_value = "128,1024,1024", value_parser = parse_dims)]
    size: Dims,
    /// Chunk shape (inner chunks when sharded).
    #[arg(long, default_value = "64,256,256", value_parser = parse_dims)]
    chunks: Dims,
    /// Data type.
    #[arg(long, default_value = "uint16", value_parser = parse_dtype)]
    dtype: DType,
    /// Zarr format: v2, v3, or v3-sharded (see --shards).
    #[arg(long, default_value = "v2")]
    format: String,
    /// Shard shape for --format v3-sharded [default: 2× the chunks].
    #[arg(long, value_parser = parse_dims)]
    shards: Option<Dims>,
    /// Codec: zstd, blosc-lz4, gzip, none.
    #[arg(long, default_value = "zstd")]
    codec: String,
    /// Codec level.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    clevel: i32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// The engine options every command that builds a pyramid takes (`build`, `demo`, `labels`).
#[derive(Args, Debug, Clone)]
pub(crate) struct EngineArgs {
    /// Compute backend: auto (a hardware GPU where found and measured faster than the CPU on
    /// this build's method and dtype, else CPU; a build the CPU computes in under 0.5 s stays
    /// on it without opening the GPU; the reason goes to the metadata), gpu (any adapter,
    /// software ones included; error if none), cpu.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: BackendChoice,
    /// Output chunk shape, e.g. 64,256,256 (clipped to each level) [default: the input's;
    /// for `labels`, the image's].
    #[arg(long, value_parser = parse_dims)]
    chunks: Option<Dims>,
    /// Working-set budget; peak memory stays near it whatever the volume size.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    memory: u64,
    /// CPU threads for decode, encode and CPU kernels [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Codec of every output array: input (the input's codec where the output's Zarr
    /// version can express it, else blosc-lz4), blosc-lz4, blosc-zstd, zstd, gzip, none.
    #[arg(long, default_value = "input")]
    compression: Compression,
    /// Compression level of the chosen codec.
    #[arg(long, allow_hyphen_values = true)]
    clevel: Option<i32>,
}

impl EngineArgs {
    /// These options over `options`.
    pub(crate) fn apply(&self, options: BuildOptions) -> BuildOptions {
        BuildOptions {
            backend: self.backend,
            chunks: self.chunks.clone().map(|d| d.0),
            compression: self.compression,
            clevel: self.clevel,
            memory_bytes: self.memory,
            threads: self.threads,
            ..options
        }
    }
}

#[derive(Args, Debug, Clone)]
struct PyramidArgs {
    /// Downsampling method: nearest (first voxel of each window), mean (window average,
    /// rounded half to even), gaussian (reflect-border blur with σ = f/3, then the mean),
    /// mode (most frequent value, ties to the smallest; integer label images), min, max
    /// (smallest / largest value; max keeps thin bright structures visible).
    #[arg(long, default_value = "mean", value_parser = parse_method)]
    method: Method,
    /// Total number of levels including level 0 [default: until every space axis fits its
    /// chunk; an axis that fits, or is held at factor 1, is not reduced further].
    #[arg(long)]
    levels: Option<usize>,
    /// Per-axis factor of every step, e.g. z=1,y=2,x=2; `auto` halves the space axes whose
    /// pixel size is within 1.5× of the finest; `xy` halves y and x only and keeps z, which
    /// viewers that index every level with the level-0 z need (vizarr, viv); neuroglancer
    /// and napari read 3-D pyramids, which `auto` makes.
    #[arg(long, default_value = "auto", value_parser = parse_factors)]
    factors: FactorsArg,
    #[command(flatten)]
    engine: EngineArgs,
    /// Replace OUTPUT if it exists (only if it is a Zarr store or empty).
    #[arg(long)]
    overwrite: bool,
    /// Print the result as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// OME-NGFF version of the output: 0.4 (a Zarr v2 group) or 0.5 (a Zarr v3 group,
    /// sharded unless --shards none).
    #[arg(long = "ngff-version", default_value = "0.4")]
    ngff_version: NgffVersion,
    /// Sharding of 0.5 output: auto (per level, the largest power-of-two multiple of the
    /// chunk within --shard-size, so small levels get small shards), none (one file per
    /// chunk), or a shard shape such as 128,1024,1024, a multiple of the chunk shape
    /// [default: auto with --ngff-version 0.5].
    #[arg(long)]
    shards: Option<ShardChoice>,
    /// Largest uncompressed shard --shards auto makes [default: 1GiB].
    #[arg(long = "shard-size", value_parser = parse_size)]
    shard_size: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct BuildArgs {
    /// Zarr v2/v3 array, or OME-Zarr image group (its first dataset is level 0); or TIFF
    /// input, told by its content: a TIFF or BigTIFF file (pages stack along z), an
    /// OME-TIFF (axes, sizes, units and channels from its OME-XML; a multi-file set through
    /// its first file), an ImageJ hyperstack, or a folder or quoted glob pattern
    /// ('slices/*.tif') of 2-D TIFFs, one per z plane, in natural order.
    input: PathBuf,
    /// The new OME-Zarr group to create.
    output: PathBuf,
    #[command(flatten)]
    pyramid: PyramidArgs,
    /// Series of an OME-TIFF holding several images (`info` lists them) [default: 0].
    #[arg(long)]
    series: Option<usize>,
    /// Axis names of a plain array or a TIFF without metadata, e.g. tczyx or tyx [default by
    /// dimensionality: yx, zyx, czyx, tczyx].
    #[arg(long)]
    axes: Option<String>,
    /// Level-0 pixel size per axis, e.g. z=2.0,y=0.5,x=0.5 [default: the input's OME metadata, else 1].
    #[arg(long, value_parser = parse_scale)]
    scale: Option<NamedScale>,
    /// Unit of the space axes, e.g. micrometer (um), nanometer (nm).
    #[arg(long)]
    unit: Option<String>,
    /// Image name in the metadata [default: the input's name, else its file name].
    #[arg(long)]
    name: Option<String>,
    /// Continue an interrupted build of OUTPUT with the same options: chunks already written
    /// are kept, the rest is built, and the result equals an uninterrupted build.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Where to write the pyramid.
    #[arg(default_value = "demo.ome.zarr")]
    output: PathBuf,
    /// Shape of the synthetic volume (z,y,x).
    #[arg(long, default_value = "128,1024,1024", value_parser = parse_dims)]
    size: Dims,
    /// Data type of the synthetic volume.
    #[arg(long, default_value = "uint16", value_parser = parse_dtype)]
    dtype: DType,
    /// Chunk shape of the synthetic volume.
    #[arg(long = "input-chunks", default_value = "64,256,256", value_parser = parse_dims)]
    input_chunks: Dims,
    /// Keep the synthetic input volume at this path instead of deleting it.
    #[arg(long)]
    keep_input: Option<PathBuf>,
    #[command(flatten)]
    pyramid: PyramidArgs,
}

/// A comma-separated list of sizes, e.g. `64,256,256`.
#[derive(Debug, Clone)]
pub(crate) struct Dims(pub(crate) Vec<u64>);

/// Pixel sizes by axis name, e.g. `z=2.0,y=0.5,x=0.5`.
#[derive(Debug, Clone)]
struct NamedScale(Vec<(String, f64)>);

#[derive(Debug, Clone)]
enum FactorsArg {
    Auto,
    Named(Vec<(String, u32)>),
}

pub(crate) fn parse_method(s: &str) -> Result<Method, String> {
    s.parse().map_err(|e: ome_pyramid::method::UnknownMethod| e.to_string())
}

pub(crate) fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse()
        .map_err(|e: ome_pyramid::backend::UnknownBackend| e.to_string())
}

pub(crate) fn parse_dtype(s: &str) -> Result<DType, String> {
    DType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
        format!("unknown dtype `{s}` (expected one of {})", names.join(", "))
    })
}

fn parse_named<V: std::str::FromStr>(s: &str, what: &str, example: &str) -> Result<Vec<(String, V)>, String> {
    s.split(',')
        .map(|item| {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}` is not of the form axis=value (example: {example})"))?;
            let value = value
                .trim()
                .parse::<V>()
                .map_err(|_| format!("`{value}` is not a valid {what} for axis `{name}`"))?;
            Ok((name.trim().to_string(), value))
        })
        .collect()
}

fn parse_factors(s: &str) -> Result<FactorsArg, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(FactorsArg::Auto);
    }
    if s.eq_ignore_ascii_case("xy") {
        return Ok(FactorsArg::Named(vec![("y".into(), 2), ("x".into(), 2)]));
    }
    let named: Vec<(String, u32)> = parse_named(s, "factor", "z=1,y=2,x=2")?;
    if let Some((name, _)) = named.iter().find(|(_, f)| *f == 0) {
        return Err(format!("the factor of axis `{name}` must be at least 1"));
    }
    Ok(FactorsArg::Named(named))
}

fn parse_scale(s: &str) -> Result<NamedScale, String> {
    let named: Vec<(String, f64)> = parse_named(s, "pixel size", "z=2.0,y=0.5,x=0.5")?;
    if let Some((name, v)) = named.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
        return Err(format!(
            "the pixel size of axis `{name}` must be a positive number, not {v}"
        ));
    }
    Ok(NamedScale(named))
}

pub(crate) fn parse_dims(s: &str) -> Result<Dims, String> {
    let values: Vec<u64> = s
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{v}` is not a positive integer (example: 64,256,256)"))
        })
        .collect::<Result<_, _>>()?;
    if values.contains(&0) {
        return Err("sizes must be at least 1".into());
    }
    Ok(Dims(values))
}

/// Set once stdout is found closed (`ome-pyramid info x | head -1`): later output is
/// dropped and the command ends as it would have, without a panic, as command-line tools do.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line on stdout; a closed stdout is not an error.
pub(crate) fn emit_line(text: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(text)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::warn!("cannot write to stdout: {e}");
        }
    }
}

/// `println!` that survives a closed stdout.
macro_rules! outln {
    () => {
        $crate::emit_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::emit_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// The progress bar, if one is shown; logging goes around it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A log writer that suspends the progress bar while a line is written.
struct LogWriter(Vec<u8>);
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Drop for LogWriter {
    fn drop(&mut self) {
        let text = std::mem::take(&mut self.0);
        let write = || {
            let _ = std::io::stderr().write_all(&text);
        };
        match BAR.lock().ok().and_then(|b| b.clone()) {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::WARN,
        (false, 0) => tracing::Level::INFO,
        (false, 1) => tracing::Level::DEBUG,
        (false, _) => tracing::Level::TRACE,
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("ome_pyramid", level)
        .with_default(if verbose >= 3 { level } else { tracing::Level::WARN });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .without_time()
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(|| LogWriter(Vec::new())),
        )
        .with(filter)
        .try_init();
}

/// Shows build progress as a bar on a terminal.
struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    fn new(visible: bool) -> Self {
        let bar = if visible {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} chunks ({eta} left)")
                .expect("valid template"),
        );
        if visible {
            bar.enable_steady_tick(Duration::from_millis(200));
            *BAR.lock().expect("bar lock") = Some(bar.clone());
        }
        Self { bar }
    }
}

impl Progress for BarProgress {
    fn start(&self, total_chunks: u64) {
        self.bar.set_length(total_chunks);
    }
    fn advance(&self, chunks: u64) {
        self.bar.inc(chunks);
    }
    fn pass_done(&self, levels: std::ops::RangeInclusive<usize>, elapsed: Duration) {
        tracing::debug!(
            "levels {}..={} written in {:.2} s",
            levels.start(),
            levels.end(),
            elapsed.as_secs_f64()
        );
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
        *BAR.lock().expect("bar lock") = None;
    }
}

fn build_options(args: &PyramidArgs) -> BuildOptions {
    args.engine.apply(BuildOptions {
        method: args.method,
        levels: args.levels,
        factors: match &args.factors {
            FactorsArg::Auto => None,
            FactorsArg::Named(named) => Some(named.clone()),
        },
        overwrite: args.overwrite,
        ngff_version: args.ngff_version,
        shards: args.shards.clone(),
        shard_size: args.shard_size,
        ..BuildOptions::default()
    })
}

pub(crate) fn print_summary(report: &BuildReport) {
    let shapes: Vec<String> = report
        .levels
        .iter()
        .map(|l: &LevelReport| format!("{:?}", l.shape))
        .collect();
    outln!(
        "Built {} levels of `{}` from `{}` ({} {:?}, {}) in {:.2} s: {:.0} MB/s of input, method {}, backend {}.",
        report.levels.len(),
        report.output.display(),
        report.input.display(),
        report.dtype,
        report.levels[0].shape,
        format_bytes(report.input_bytes),
        report.seconds,
        report.input_mb_per_s,
        report.method,
        report.backend,
    );
    outln!("  levels: {}", shapes.join(" → "));
    if report.chunks_copied_raw > 0 {
        outln!(
            "  level 0 copied without re-encoding ({} chunks or shards)",
            report.chunks_copied_raw
        );
    }
    if report.tiles_staged > 0 {
        tracing::debug!(
            "{} source tiles read straight into GPU staging memory, computed in {} submissions",
            report.tiles_staged,
            report.staged_batches
        );
    }
    tracing::debug!(
        "chunks decoded {} (re-decoded {}), stage seconds summed over tasks: read {:.2}, compute {:.2}, write {:.2}",
        report.chunks_decoded,
        report.chunks_redecoded,
        report.stage_seconds.read,
        report.stage_seconds.compute,
        report.stage_seconds.write
    );
}

fn run_builder(builder: PyramidBuilder<'_>, json_output: bool, quiet: bool) -> Result<BuildReport, BuildError> {
    run_with_progress(|progress| builder.progress(progress).build(), json_output, quiet)
}

/// Runs a build with a progress bar on a terminal, then prints its report: a summary, or
/// JSON with `--json`.
pub(crate) fn run_with_progress(
    build: impl FnOnce(Arc<dyn Progress>) -> Result<BuildReport, BuildError>,
    json_output: bool,
    quiet: bool,
) -> Result<BuildReport, BuildError> {
    let show_bar = !quiet && !json_output && std::io::stderr().is_terminal();
    let report = build(Arc::new(BarProgress::new(show_bar)))?;
    if json_output {
        outln!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
    } else if !quiet {
        print_summary(&report);
    }
    Ok(report)
}

/// The options `build` (and `plan`) are given.
pub(crate) fn build_args_options(args: &BuildArgs) -> BuildOptions {
    let mut options = build_options(&args.pyramid);
    options.axes.clone_from(&args.axes);
    options.series = args.series;
    options.scale = args.scale.clone().map(|s| s.0).unwrap_or_default();
    options.unit.clone_from(&args.unit);
    options.name.clone_from(&args.name);
    options.resume = args.resume;
    options
}

fn cmd_build(args: &BuildArgs, quiet: bool) -> Result<(), BuildError> {
    let options = build_args_options(args);
    let builder = PyramidBuilder::new(&args.input, &args.output)
        .options(options)
        .cancel_flag(cancel_flag());
    run_builder(builder, args.pyramid.json, quiet).map(|_| ())
}

fn cmd_demo(args: &DemoArgs, quiet: bool) -> Result<()> {
    let (size, input_chunks) = (&args.size.0, &args.input_chunks.0);
    if size.len() != 3 || input_chunks.len() != 3 {
        return Err(anyhow!(UsageError(
            "--size and --input-chunks take three values (z,y,x)".into()
        )));
    }
    if args.pyramid.overwrite {
        // Checked again by the build; refusing early avoids writing the input for nothing.
    } else if args.output.exists() {
        return Err(anyhow!(BuildError::OutputExists(args.output.clone())));
    }
    let (input, temporary) = match &args.keep_input {
        Some(path) => {
            if path.exists() {
                return Err(anyhow!(UsageError(format!(
                    "--keep-input `{}` already exists",
                    path.display()
                ))));
            }
            (path.clone(), false)
        }
        None => {
            let parent = args
                .output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = format!(".ome-pyramid-demo-input-{}.zarr", std::process::id());
            (parent.join(name), true)
        }
    };
    let spec = ArraySpec {
        shape: size.clone(),
        chunks: input_chunks.clone(),
        dtype: args.dtype,
        format: ArrayFormat::V2,
        codec: Codec::Zstd(1),
    };
    let bytes = size.iter().product::<u64>() * args.dtype.size() as u64;
    if !quiet {
        eprintln!(
            "Writing a synthetic {} volume {:?} ({}, zstd level 1) to `{}` …",
            args.dtype,
            size,
            format_bytes(bytes),
            input.display()
        );
    }
    let result = (|| -> Result<()> {
        synthetic::write_synthetic(&input, &spec, 42).context("cannot write the synthetic volume")?;
        let mut options = build_options(&args.pyramid);
        options.unit = Some("micrometer".into());
        options.name = Some("ome-pyramid demo".into());
        let builder = PyramidBuilder::new(&input, &args.output).options(options);
        run_builder(builder, args.pyramid.json, quiet)?;
        if !quiet && !args.pyramid.json {
            outln!("Look inside with: ome-pyramid info {}", args.output.display());
        }
        Ok(())
    })();
    if temporary {
        let _ = std::fs::remove_dir_all(&input);
    }
    result
}

fn cmd_synth(args: &SynthArgs, quiet: bool) -> Result<()> {
    let (size, chunks) = (&args.size.0, &args.chunks.0);
    if !(2..=5).contains(&size.len()) || chunks.len() != size.len() {
        return Err(anyhow!(UsageError(
            "--size needs 2 to 5 values and --chunks as many".into()
        )));
    }
    if args.output.exists() {
        return Err(anyhow!(BuildError::OutputExists(args.output.clone())));
    }
    let format = match args.format.as_str() {
        "v2" => ArrayFormat::V2,
        "v3" => ArrayFormat::V3,
        "v3-sharded" => ArrayFormat::V3Sharded {
            shard_shape: match &args.shards {
                Some(shards) if shards.0.len() == size.len() => shards.0.clone(),
                Some(_) => return Err(anyhow!(UsageError("--shards needs as many values as --size".into()))),
                None => chunks.iter().map(|c| 2 * c).collect(),
            },
        },
        other => {
            return Err(anyhow!(UsageError(format!(
                "unknown format `{other}` (expected v2, v3, v3-sharded)"
            ))));
        }
    };
    let codec = match args.codec.as_str() {
        "zstd" => Codec::Zstd(args.clevel),
        "blosc-lz4" | "blosc" => Codec::BloscLz4(args.clevel),
        "gzip" => Codec::Gzip(args.clevel),
        "none" => Codec::None,
        other => {
            return Err(anyhow!(UsageError(format!(
                "unknown codec `{other}` (expected zstd, blosc-lz4, gzip, none)"
            ))));
        }
    };
    let spec = ArraySpec {
        shape: size.clone(),
        chunks: chunks.clone(),
        dtype: args.dtype,
        format,
        codec,
    };
    synthetic::write_synthetic(&args.output, &spec, args.seed).context("cannot write the synthetic array")?;
    if !quiet {
        let bytes = size.iter().product::<u64>() * args.dtype.size() as u64;
        outln!(
            "Wrote {} {} {size:?} ({}) to `{}`.",
            args.format,
            args.dtype,
            format_bytes(bytes),
            args.output.display()
        );
    }
    Ok(())
}

/// A usage mistake found after argument parsing (exit code 2).
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);
impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// 2 for mistakes in what the user gave, 1 for failures while running.
fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<BuildError>() {
            return if e.is_invalid_input() { 2 } else { 1 };
        }
        if let Some(e) = cause.downcast_ref::<store::StoreError>() {
            return if e.is_invalid_input() { 2 } else { 1 };
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
    }
    1
}

/// Set by the first Ctrl-C, SIGTERM (what schedulers and `docker stop` send) or SIGHUP;
/// builds stop after the chunk reads and writes in progress, keeping finished tasks for
/// `--resume`, release the lock and say how to resume. A second signal stops at once.
pub(crate) fn cancel_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        let installed = ctrlc::set_handler(move || {
            if seen.swap(true, Ordering::SeqCst) {
                eprintln!("\nstopped at once; --resume redoes the tasks that were in progress");
                std::process::exit(1);
            }
            eprintln!("\nstopping after the chunk reads and writes in progress (signal again to stop at once) …");
        });
        if let Err(e) = installed {
            tracing::warn!("Ctrl-C and SIGTERM will stop the build at once ({e})");
        }
        flag
    })
    .clone()
}

/// The command line to continue an interrupted build: the same arguments plus `--resume`.
fn resume_command() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--resume") {
        args.push("--resume".into());
    }
    args.iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:@".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses the command line; a usage mistake becomes one `error:` line and exit code 2.
fn parse_cli() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return Err(ExitCode::SUCCESS);
            }
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("error: {message} (see --help)");
            Err(ExitCode::from(2))
        }
    }
}

/// Keeps freed chunk buffers in the heap for reuse.
///
/// By default glibc serves every allocation over 128 KiB-32 MiB with its own `mmap` and
/// unmaps it on `free`, and trims the heap top eagerly, so each multi-MiB chunk buffer that
/// zarrs and the codecs allocate is page-faulted in afresh: about 2.7 faults per decoded
/// 4 KiB page, and almost half of a decode pass's time in the kernel. Raising the mmap and
/// trim thresholds lets the heap reuse those buffers. Peak memory stays bounded because
/// the engine bounds how many buffers are alive at once (measured: the same peak RSS).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() -> bool {
    const MMAP_THRESHOLD: libc::c_int = 256 << 20;
    const TRIM_THRESHOLD: libc::c_int = 1 << 30;
    // SAFETY: `mallopt` only changes glibc's allocator parameters; it is called first thing
    // in `main`, before any other thread exists, with options and values glibc accepts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() -> bool {
    false
}

fn main() -> ExitCode {
    let allocator_tuned = tune_allocator();
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(cli.verbose, cli.quiet);
    // This process is ours: GPU drivers' stderr chatter during probing goes to the debug log.
    #[cfg(feature = "gpu")]
    ome_pyramid::backend::gpu::capture_driver_output(true);
    // Only a speed hint: builds are correct either way.
    tracing::debug!("glibc allocator tuned for chunk-sized buffers: {allocator_tuned}");
    let result: Result<()> = match cli.command {
        Command::Build(args) => cmd_build(&args, cli.quiet).map_err(anyhow::Error::from),
        Command::Plan(args) => partition::run_plan(&args, cli.quiet),
        Command::Part(args) => partition::run_part(&args, cli.quiet),
        Command::Finalize(args) => partition::run_finalize(&args, cli.quiet),
        Command::Labels(args) => labels::run(&args, cli.quiet),
        Command::Info(args) => info::run(&args),
        Command::Thumbnail(args) => thumbnail::run(&args, cli.quiet),
        Command::Demo(args) => cmd_demo(&args, cli.quiet),
        Command::Bench(args) => bench::run(&args, cli.quiet),
        Command::Synth(args) => cmd_synth(&args, cli.quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(bar) = BAR.lock().ok().and_then(|mut b| b.take()) {
                bar.finish_and_clear();
            }
            eprintln!("error: {error:#}");
            let interrupted = error
                .chain()
                .any(|c| matches!(c.downcast_ref::<BuildError>(), Some(BuildError::Interrupted { .. })));
            if interrupted {
                eprintln!("hint: the finished work is kept; continue with: {}", resume_command());
            }
            ExitCode::from(exit_code(&error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
