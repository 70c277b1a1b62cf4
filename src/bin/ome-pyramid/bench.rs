//! `ome-pyramid bench`: CPU against GPU, per method, on the user's data or a synthetic
//! volume. Every configuration runs as a child `ome-pyramid build --json` process, so its
//! peak memory is measured alone; a decode-only pass of the same input is the floor.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use ome_pyramid::backend::list_adapters;
use ome_pyramid::store::{self, DecodeReport};
use ome_pyramid::synthetic::{self, ArrayFormat, ArraySpec, Codec};
use ome_pyramid::units::format_bytes;
use ome_pyramid::{DType, Method};

use crate::{Dims, UsageError, parse_dims, parse_dtype};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Zarr array, OME-Zarr image or TIFF input to build [default: a synthetic volume, see --size].
    input: Option<PathBuf>,
    /// Methods to time, comma separated.
    #[arg(long, default_value = "nearest,mean,gaussian", value_parser = parse_methods)]
    pub(crate) methods: MethodList,
    /// Backends, comma separated: cpu, gpu, auto [default: cpu, and gpu when a hardware
    /// adapter exists]. Naming gpu includes a software adapter (lavapipe) when that is all
    /// there is; auto times what `build` would choose (its reason is in the backend column).
    #[arg(long, value_parser = parse_backends)]
    pub(crate) backends: Option<BackendList>,
    /// CPU thread counts to sweep, e.g. 1,2,4 [default: all cores].
    #[arg(long, value_parser = parse_dims)]
    threads: Option<Dims>,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 1)]
    pub(crate) repeat: usize,
    /// Working-set budget passed to each build.
    #[arg(long, default_value = "2GiB")]
    memory: String,
    /// Output codec passed to each build (input, blosc-lz4, blosc-zstd, zstd, gzip, none).
    #[arg(long, default_value = "input")]
    compression: String,
    /// Output codec level passed to each build.
    #[arg(long, allow_hyphen_values = true)]
    clevel: Option<i32>,
    /// Shape of the synthetic volume when no INPUT is given.
    #[arg(long, default_value = "128,1024,1024", value_parser = parse_dims)]
    size: Dims,
    /// Data type of the synthetic volume.
    #[arg(long, default_value = "uint16", value_parser = parse_dtype)]
    dtype: DType,
    /// Where the outputs (and the synthetic input) go while timing [default: beside the input].
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also draw the comparison as an SVG bar chart.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Only time the decode-only pass (every input chunk read and decoded once).
    #[arg(long)]
    decode_only: bool,
    /// Only time the decode-only pass and an encode-only pass: every chunk of INPUT decoded
    /// (not timed) and encoded again with its own codec (timed). Run on a level of a
    /// pyramid, it gives the codec floor of writing that level.
    #[arg(long)]
    encode_only: bool,
    /// Only time the kernels, in memory on one synthetic tile (see --tile, --dtypes): GB/s
    /// on the CPU, and on the GPU the upload, kernel (timestamp queries where the adapter
    /// has them), readback and end-to-end rates, next to the device's copy bandwidth; for
    /// gaussian, also its kernel with the y and x passes unfused (one dispatch per axis);
    /// and 64 small staged tiles, one submission each against all in one.
    #[arg(long, conflicts_with_all = ["input", "decode_only", "encode_only", "plot"])]
    pub(crate) kernels: bool,
    /// With --kernels: the tile's shape (factors 2 on every axis).
    #[arg(long, default_value = "64,512,512", value_parser = parse_dims)]
    pub(crate) tile: Dims,
    /// With --kernels: the data types, comma separated.
    #[arg(long, default_value = "uint8,uint16,float32", value_parser = parse_dtypes)]
    pub(crate) dtypes: DTypeList,
}

#[derive(Debug, Clone)]
pub struct DTypeList(pub(crate) Vec<DType>);

fn parse_dtypes(s: &str) -> Result<DTypeList, String> {
    s.split(',')
        .map(|d| parse_dtype(d.trim()))
        .collect::<Result<_, _>>()
        .map(DTypeList)
}

#[derive(Debug, Clone)]
pub struct MethodList(pub(crate) Vec<Method>);

#[derive(Debug, Clone)]
pub struct BackendList(Vec<String>);

impl BackendList {
    /// True if the list names `backend`.
    #[cfg(feature = "gpu")]
    pub(crate) fn names(&self, backend: &str) -> bool {
        self.0.iter().any(|b| b == backend)
    }
}

fn parse_methods(s: &str) -> Result<MethodList, String> {
    s.split(',')
        .map(|m| m.trim().parse::<Method>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()
        .map(MethodList)
}

fn parse_backends(s: &str) -> Result<BackendList, String> {
    let list: Vec<String> = s.split(',').map(|b| b.trim().to_ascii_lowercase()).collect();
    if let Some(bad) = list.iter().find(|b| !matches!(b.as_str(), "cpu" | "gpu" | "auto")) {
        return Err(format!("unknown backend `{bad}` (expected cpu, gpu or auto)"));
    }
    Ok(BackendList(list))
}

/// The machine the numbers come from.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    cores: usize,
    memory_bytes: Option<u64>,
    gpus: Vec<String>,
}

pub(crate) fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024)
    });
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        memory_bytes,
        gpus: list_adapters()
            .into_iter()
            .map(|a| format!("{} ({}, {})", a.name, a.backend, a.device_type))
            .collect(),
    }
}

/// One timed configuration.
#[derive(Debug, Serialize)]
struct Row {
    method: Method,
    backend: String,
    threads: usize,
    runs: usize,
    seconds: f64,
    input_mb_per_s: f64,
    /// Shares of task time: read+decode, compute, encode+write.
    stage_shares: [f64; 3],
    /// Task time in seconds, summed over tasks: read+decode, compute, encode+write (of the
    /// last run).
    stage_seconds: [f64; 3],
    /// The backend's own compute threads (a GPU's submission threads; 0: the workers
    /// computed), whose time the compute stage is.
    compute_threads: usize,
    /// Source tiles read straight into the GPU's staging memory (of the last run).
    tiles_staged: u64,
    /// Submissions those tiles were computed in (of the last run): fewer than the tiles
    /// where small tiles queued for the device went in batches.
    staged_batches: u64,
    peak_rss_bytes: Option<u64>,
    levels: usize,
    /// Build time over the decode-only pass of the same input.
    times_decode_only: f64,
    /// CPU time / GPU time for the same method (GPU rows only).
    gpu_speedup: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    input: String,
    dtype: DType,
    shape: Vec<u64>,
    input_bytes: u64,
    codec: String,
    decode_only: DecodeReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    encode_only: Option<DecodeReport>,
    rows: Vec<Row>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs `ome-pyramid build --json` in a child process and returns its report.
fn timed_build(
    input: &Path,
    output: &Path,
    args: &BenchArgs,
    method: Method,
    backend: &str,
    threads: usize,
) -> Result<Value> {
    let exe = std::env::current_exe().context("cannot find the ome-pyramid executable")?;
    let mut command = Command::new(exe);
    command.args([
        "build",
        "-q",
        "--json",
        "--overwrite",
        "--method",
        method.name(),
        "--backend",
        backend,
    ]);
    command.args([
        "--threads",
        &threads.to_string(),
        "--memory",
        &args.memory,
        "--compression",
        &args.compression,
    ]);
    if let Some(level) = args.clevel {
        command.args(["--clevel", &level.to_string()]);
    }
    let out = command.arg(input).arg(output).output().context("cannot run a build")?;
    let _ = std::fs::remove_dir_all(output);
    if !out.status.success() {
        bail!(
            "{method} on {backend} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("unreadable build report")
}

pub fn run(args: &BenchArgs, quiet: bool) -> Result<()> {
    if args.kernels {
        return crate::kernel_bench::run(args, quiet);
    }
    let hardware_gpu = list_adapters().iter().any(|a| a.used_by_auto);
    let backends: Vec<String> = match &args.backends {
        Some(list) => list.0.clone(),
        None if hardware_gpu => vec!["cpu".into(), "gpu".into()],
        None => vec!["cpu".into()],
    };
    if args.repeat == 0 {
        return Err(anyhow!(UsageError("--repeat must be at least 1".into())));
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let sweep: Vec<usize> = match &args.threads {
        Some(list) => list
            .0
            .iter()
            .map(|&t| usize::try_from(t).unwrap_or(usize::MAX))
            .collect(),
        None => vec![cores],
    };

    let (input, workdir, synthetic_input) = match &args.input {
        Some(input) => {
            let parent = input
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let workdir = args
                .workdir
                .clone()
                .unwrap_or_else(|| parent.join(format!(".ome-pyramid-bench-{}", std::process::id())));
            (input.clone(), workdir, false)
        }
        None => {
            let workdir = args
                .workdir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!(".ome-pyramid-bench-{}", std::process::id())));
            (workdir.join("synthetic.zarr"), workdir, true)
        }
    };
    std::fs::create_dir_all(&workdir).with_context(|| format!("cannot create {}", workdir.display()))?;
    let result = (|| -> Result<Report> {
        if synthetic_input {
            let shape = args.size.0.clone();
            let chunks: Vec<u64> = shape
                .iter()
                .enumerate()
                .map(|(a, &n)| n.min(if a == 0 { 64 } else { 256 }))
                .collect();
            if !quiet {
                eprintln!("Writing a synthetic {} volume {shape:?} (zstd level 1) …", args.dtype);
            }
            let spec = ArraySpec {
                shape,
                chunks,
                dtype: args.dtype,
                format: ArrayFormat::V2,
                codec: Codec::Zstd(1),
            };
            synthetic::write_synthetic(&input, &spec, 42).context("cannot write the synthetic volume")?;
        }
        let source = store::open_input(&input, None, None)?;
        let input_bytes = source.shape().iter().product::<u64>() * source.dtype().size() as u64;
        let codec_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(*sweep.iter().max().unwrap_or(&cores))
            .build()?;
        let decode_only = codec_pool.install(|| store::decode_only(&input))?;
        let encode_only = if args.encode_only {
            Some(codec_pool.install(|| store::encode_only(&input))?)
        } else {
            None
        };
        let mut rows: Vec<Row> = Vec::new();
        let methods: &[Method] = if args.decode_only || args.encode_only {
            &[]
        } else {
            &args.methods.0
        };
        for &method in methods {
            for backend in &backends {
                let thread_counts = if backend == "cpu" { sweep.clone() } else { vec![cores] };
                for threads in thread_counts {
                    if !quiet {
                        eprintln!("timing {method} on {backend} with {threads} threads …");
                    }
                    let output = workdir.join("out.ome.zarr");
                    let mut seconds = Vec::new();
                    let mut last = Value::Null;
                    for _ in 0..args.repeat {
                        last = timed_build(&input, &output, args, method, backend, threads)?;
                        seconds.push(last["seconds"].as_f64().unwrap_or(f64::NAN));
                    }
                    let secs = median(&mut seconds);
                    let stages = &last["stage_seconds"];
                    let parts = [
                        stages["read"].as_f64(),
                        stages["compute"].as_f64(),
                        stages["write"].as_f64(),
                    ]
                    .map(|v| v.unwrap_or(0.0));
                    let total: f64 = parts.iter().sum::<f64>().max(1e-12);
                    #[allow(clippy::cast_precision_loss)]
                    let mb_per_s = input_bytes as f64 / 1e6 / secs;
                    rows.push(Row {
                        method,
                        backend: last["backend"].as_str().unwrap_or(backend).to_string(),
                        threads,
                        runs: args.repeat,
                        seconds: secs,
                        input_mb_per_s: mb_per_s,
                        stage_shares: parts.map(|p| p / total),
                        stage_seconds: parts,
                        compute_threads: last["compute_threads"]
                            .as_u64()
                            .and_then(|n| usize::try_from(n).ok())
                            .unwrap_or(0),
                        tiles_staged: last["tiles_staged"].as_u64().unwrap_or(0),
                        staged_batches: last["staged_batches"].as_u64().unwrap_or(0),
                        peak_rss_bytes: last["peak_rss_bytes"].as_u64(),
                        levels: last["levels"].as_array().map_or(0, Vec::len),
                        times_decode_only: secs / decode_only.seconds.max(1e-12),
                        gpu_speedup: None,
                    });
                }
            }
        }
        for i in 0..rows.len() {
            if rows[i].backend.starts_with("gpu") {
                let cpu_best = rows
                    .iter()
                    .filter(|r| r.method == rows[i].method && r.backend.starts_with("cpu"))
                    .map(|r| r.seconds)
                    .fold(f64::INFINITY, f64::min);
                if cpu_best.is_finite() {
                    rows[i].gpu_speedup = Some(cpu_best / rows[i].seconds);
                }
            }
        }
        Ok(Report {
            machine: machine(),
            input: input.display().to_string(),
            dtype: source.dtype(),
            shape: source.shape().to_vec(),
            input_bytes,
            codec: input_codec(&input)?,
            decode_only,
            encode_only,
            rows,
        })
    })();
    let _ = if synthetic_input || args.workdir.is_none() {
        std::fs::remove_dir_all(&workdir)
    } else {
        Ok(())
    };
    let report = result?;
    if let Some(path) = &args.plot {
        plot(&report, path)?;
    }
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(report: &Report) {
    let m = &report.machine;
    crate::outln!(
        "Machine: {} × {} ({}); GPUs: {}",
        m.cores,
        m.cpu,
        m.memory_bytes.map_or_else(|| "memory unknown".into(), format_bytes),
        if m.gpus.is_empty() {
            "none".into()
        } else {
            m.gpus.join("; ")
        }
    );
    crate::outln!(
        "Input: {} — {} {:?}, {}, codec {}",
        report.input,
        report.dtype,
        report.shape,
        format_bytes(report.input_bytes),
        report.codec
    );
    #[allow(clippy::cast_precision_loss)]
    let decode_rate = report.input_bytes as f64 / 1e6 / report.decode_only.seconds;
    crate::outln!(
        "Decode-only pass: {:.2} s ({decode_rate:.0} MB/s), the floor for any build of this input.\n",
        report.decode_only.seconds
    );
    if let Some(encode) = &report.encode_only {
        #[allow(clippy::cast_precision_loss)]
        let rate = encode.bytes as f64 / 1e6 / encode.seconds;
        crate::outln!(
            "Encode-only pass: {:.2} s ({rate:.0} MB/s of decoded data, {} chunks), the floor for writing this array.\n",
            encode.seconds,
            encode.chunks
        );
    }
    if report.rows.is_empty() {
        return;
    }
    crate::outln!(
        "{:<9} {:<28} {:>7} {:>8} {:>8} {:>22} {:>10} {:>8} {:>8}",
        "method",
        "backend",
        "threads",
        "time s",
        "MB/s",
        "read/compute/write %",
        "peak RSS",
        "÷decode",
        "GPU/CPU"
    );
    for r in &report.rows {
        let shares = format!(
            "{:.0}/{:.0}/{:.0}",
            100.0 * r.stage_shares[0],
            100.0 * r.stage_shares[1],
            100.0 * r.stage_shares[2]
        );
        crate::outln!(
            "{:<9} {:<28} {:>7} {:>8.2} {:>8.0} {:>22} {:>10} {:>7.1}× {:>8}",
            r.method.name(),
            short_backend(&r.backend),
            r.threads,
            r.seconds,
            r.input_mb_per_s,
            shares,
            r.peak_rss_bytes.map_or_else(|| "?".into(), format_bytes),
            r.times_decode_only,
            r.gpu_speedup.map_or_else(String::new, |s| format!("{s:.2}×")),
        );
    }
    crate::outln!("\nread/compute/write: shares of task time (decode+read, kernels, encode+write), summed over tasks.");
}

/// `cpu`, or `gpu <adapter's first word> (<kind>)`, from a backend description.
fn short_backend(description: &str) -> String {
    match description.strip_prefix("gpu: ") {
        Some(rest) => {
            let name = rest.split_whitespace().next().unwrap_or("?");
            let kind = rest.rsplit(", ").next().unwrap_or("").trim_end_matches(')');
            format!("gpu {name} ({kind})")
        }
        None => description.split([',', ';']).next().unwrap_or(description).to_string(),
    }
}

/// Draws input MB/s per configuration as an SVG bar chart.
fn plot(report: &Report, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let labels: Vec<String> = report
        .rows
        .iter()
        .map(|r| format!("{} {} ×{}", r.method.name(), short_backend(&r.backend), r.threads))
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let decode_rate = report.input_bytes as f64 / 1e6 / report.decode_only.seconds;
    let top = report.rows.iter().map(|r| r.input_mb_per_s).fold(decode_rate, f64::max) * 1.15;
    let width = 160 + 90 * u32::try_from(labels.len()).unwrap_or(1);
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))?;
    let title = format!("ome-pyramid: input MB/s, {} {:?}", report.dtype, report.shape);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(90)
        .y_label_area_size(60)
        .build_cartesian_2d((0..labels.len()).into_segmented(), 0.0..top)
        .map_err(|e| anyhow!("cannot draw: {e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("input MB/s")
        .x_labels(labels.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| anyhow!("cannot draw: {e}"))?;
    chart
        .draw_series(report.rows.iter().enumerate().map(|(i, r)| {
            let colour = if r.backend.starts_with("gpu") {
                RED.mix(0.7)
            } else {
                BLUE.mix(0.7)
            };
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), r.input_mb_per_s),
                ],
                colour.filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))
        .map_err(|e| anyhow!("cannot draw: {e}"))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![
                (SegmentValue::Exact(0), decode_rate),
                (SegmentValue::Exact(labels.len()), decode_rate),
            ],
            BLACK.stroke_width(2),
        )))
        .map_err(|e| anyhow!("cannot draw: {e}"))?
        .label("decode-only floor")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| anyhow!("cannot draw: {e}"))?;
    root.present()
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The input's codec, for the report: the Zarr codec chain, or a TIFF's compression.
fn input_codec(input: &Path) -> Result<String> {
    if store::is_tiff_input(input) {
        let described = store::describe_tiff(input)?;
        let compression = described["series"][0]["compression"].as_str().unwrap_or("?");
        return Ok(format!("TIFF, {compression}"));
    }
    Ok(store::describe_codecs(store::open_source(input)?.raw_metadata()))
}
