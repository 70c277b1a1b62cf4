//! `ome-pyramid bench --kernels`: the kernels alone, per method and dtype, on one synthetic
//! tile in memory (no codec, no files). The CPU kernels on all threads; on the GPU the
//! upload, the dispatches and the readback each submitted and waited for on their own, the
//! dispatches timed on the device's clock (timestamp queries) where the adapter has them,
//! next to a device-to-device copy of the same bytes: the bandwidth ceiling of a kernel
//! that reads its input once. Rates are GB/s of input (source tile) bytes. Then small
//! staged tiles, one submission each against all in one, as a build submits the tiles
//! queued for the device ([`SmallTiles`]).

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use ome_pyramid::backend::cpu::CpuBackend;
use ome_pyramid::{DType, Downsampler, Method, Region, Step, Tile};

use crate::bench::{BenchArgs, Machine, machine};

/// GPU rates of one method on one dtype.
#[derive(Debug, Serialize)]
struct GpuRates {
    upload_gb_per_s: f64,
    kernel_gb_per_s: f64,
    /// GB/s of the bytes read back (the output level: an eighth of the input at 2×2×2).
    readback_gb_per_s: f64,
    /// Upload, dispatches and readback in one submission, as a build runs them.
    end_to_end_gb_per_s: f64,
    /// Kernel rate over the device-to-device copy rate.
    kernel_share_of_copy: Option<f64>,
    /// Gaussian: the passes fused in one dispatch, `"z–y–x"` or `"y–x"` (none where every
    /// axis has a dispatch of its own).
    fused: Option<&'static str>,
    /// Gaussian where passes are fused: the kernel rate with one dispatch per axis instead,
    /// what the fusion is measured against.
    per_axis_kernel_gb_per_s: Option<f64>,
    /// Gaussian where z, y and x are fused: the kernel rate with only y and x fused.
    yx_fused_kernel_gb_per_s: Option<f64>,
}

/// One method on one dtype.
#[derive(Debug, Serialize)]
struct KernelRow {
    method: Method,
    dtype: DType,
    input_bytes: u64,
    cpu_gb_per_s: f64,
    /// `None`: no adapter, or the GPU does not compute this method on this dtype.
    gpu: Option<GpuRates>,
}

/// [`SMALL_TILES`] staged tiles of [`SMALL_TILE`] computed one submission each, and all in
/// one: what a GPU build saves per tile where small tiles queue for the device.
#[derive(Debug, Serialize)]
struct SmallTiles {
    method: Method,
    dtype: DType,
    tile: Vec<u64>,
    tiles: usize,
    /// Microseconds per tile, each in a submission of its own (the best of the runs).
    alone_us_per_tile: f64,
    /// Microseconds per tile, all in one submission (the best of the runs).
    batched_us_per_tile: f64,
}

/// The small tiles' shape: a plane pair of a 128 × 128 image, 64 KiB of uint16.
#[cfg(feature = "gpu")]
const SMALL_TILE: [u64; 3] = [2, 128, 128];
/// How many small tiles are timed.
const SMALL_TILES: usize = 64;

#[derive(Debug, Serialize)]
struct KernelReport {
    machine: Machine,
    tile: Vec<u64>,
    factors: Vec<u32>,
    runs: usize,
    cpu_threads: usize,
    /// The adapter measured, `None` without one.
    device: Option<String>,
    /// `timestamps` (the device's clock) or `host` (wall time around the dispatches).
    kernel_clock: Option<&'static str>,
    /// Device-to-device copy of the largest tile's bytes: GB/s of bytes copied.
    copy_gb_per_s: Option<f64>,
    rows: Vec<KernelRow>,
    /// `None` without a GPU.
    small_tiles: Option<SmallTiles>,
}

/// The best of `runs` timings of `f`.
fn best_of(runs: usize, mut f: impl FnMut() -> Result<Duration>) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..runs.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

#[allow(clippy::cast_precision_loss)]
fn gb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / 1e9 / time.as_secs_f64().max(1e-12)
}

pub fn run(args: &BenchArgs, quiet: bool) -> Result<()> {
    let shape = args.tile.0.clone();
    let factors = vec![2u32; shape.len()];
    let runs = args.repeat.max(3);
    let cpu = CpuBackend::new();
    let gpu = open_gpu(args);
    let mut rows = Vec::new();
    let mut largest = 0u64;
    for &dtype in &args.dtypes.0 {
        let src = ome_pyramid::synthetic::random_tile(dtype, &shape, 7);
        let input_bytes = shape.iter().product::<u64>() * dtype.size() as u64;
        largest = largest.max(input_bytes);
        for &method in args.methods.0.iter().filter(|m| m.accepts(dtype)) {
            if !quiet {
                eprintln!("timing the {method} kernel on {dtype} …");
            }
            let step = Step {
                method,
                factors: factors.clone(),
                src_shape: shape.clone(),
            };
            let dst = Region::whole(&step.dst_shape());
            cpu.downsample(&step, &src, &dst)?;
            let cpu_time = best_of(runs, || {
                let started = Instant::now();
                std::hint::black_box(cpu.downsample(&step, &src, &dst)?);
                Ok(started.elapsed())
            })?;
            rows.push(KernelRow {
                method,
                dtype,
                input_bytes,
                cpu_gb_per_s: gb_per_s(input_bytes, cpu_time),
                gpu: gpu
                    .as_ref()
                    .map(|g| g.rates(&step, &src, &dst, input_bytes, runs))
                    .transpose()?
                    .flatten(),
            });
        }
    }
    let copy_gb_per_s = gpu.as_ref().map(|g| g.copy_rate(largest, runs)).transpose()?;
    if gpu.is_some() && !quiet {
        eprintln!("timing {SMALL_TILES} small tiles, one submission each and all in one …");
    }
    let small_tiles = gpu.as_ref().map(|g| g.small_tiles(runs)).transpose()?;
    for row in &mut rows {
        if let (Some(gpu), Some(copy)) = (&mut row.gpu, copy_gb_per_s) {
            gpu.kernel_share_of_copy = Some(gpu.kernel_gb_per_s / copy);
        }
    }
    let report = KernelReport {
        machine: machine(),
        tile: shape,
        factors,
        runs,
        cpu_threads: rayon::current_num_threads(),
        device: gpu.as_ref().map(GpuUnderTest::name),
        kernel_clock: gpu.as_ref().map(GpuUnderTest::clock),
        copy_gb_per_s,
        rows,
        small_tiles,
    };
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_kernel_table(&report);
    }
    Ok(())
}

fn print_kernel_table(report: &KernelReport) {
    crate::outln!(
        "Kernels on a {:?} tile (factors {:?}), best of {} runs; CPU: {} × {} threads.",
        report.tile,
        report.factors,
        report.runs,
        report.machine.cpu,
        report.cpu_threads
    );
    match (&report.device, report.kernel_clock, report.copy_gb_per_s) {
        (Some(device), Some(clock), Some(copy)) => crate::outln!(
            "GPU: {device}; kernels timed by {}; device-to-device copy {copy:.1} GB/s (the ceiling).\n",
            if clock == "timestamps" {
                "timestamp queries"
            } else {
                "the host around the dispatches"
            }
        ),
        _ => crate::outln!("GPU: none (no adapter; `--backends gpu` also takes a software one).\n"),
    }
    crate::outln!(
        "{:<9} {:<8} {:>9} {:>11} {:>11} {:>13} {:>12} {:>14}",
        "method",
        "dtype",
        "CPU GB/s",
        "upload GB/s",
        "kernel GB/s",
        "readback GB/s",
        "GPU e2e GB/s",
        "kernel ÷ copy"
    );
    for row in &report.rows {
        let gpu = row.gpu.as_ref().map_or_else(
            || format!("{:>11} {:>11} {:>13} {:>12} {:>14}", "-", "-", "-", "-", "-"),
            |g| {
                format!(
                    "{:>11.2} {:>11.2} {:>13.2} {:>12.2} {:>13.0}%",
                    g.upload_gb_per_s,
                    g.kernel_gb_per_s,
                    g.readback_gb_per_s,
                    g.end_to_end_gb_per_s,
                    g.kernel_share_of_copy.unwrap_or(0.0) * 100.0
                )
            },
        );
        crate::outln!(
            "{:<9} {:<8} {:>9.2} {gpu}",
            row.method.name(),
            row.dtype.to_string(),
            row.cpu_gb_per_s
        );
    }
    for row in &report.rows {
        let Some(gpu) = &row.gpu else { continue };
        if let (Some(fused), Some(per_axis)) = (gpu.fused, gpu.per_axis_kernel_gb_per_s) {
            let yx = gpu
                .yx_fused_kernel_gb_per_s
                .map(|yx| format!(", y–x fused only: {yx:.2} GB/s"))
                .unwrap_or_default();
            crate::outln!(
                "{} {}: {fused} fused in one dispatch; one dispatch per axis instead: kernel {per_axis:.2} GB/s{yx}.",
                row.method.name(),
                row.dtype
            );
        }
    }
    if let Some(small) = &report.small_tiles {
        crate::outln!(
            "{} small {} {} tiles {:?}: {:.0} µs per tile in a submission each, {:.0} µs in one submission.",
            small.tiles,
            small.method.name(),
            small.dtype,
            small.tile,
            small.alone_us_per_tile,
            small.batched_us_per_tile
        );
    }
}

/// The GPU measured: a hardware adapter, or any adapter when `--backends` names gpu.
#[cfg(feature = "gpu")]
struct GpuUnderTest(ome_pyramid::backend::gpu::GpuBackend);

#[cfg(feature = "gpu")]
fn open_gpu(args: &BenchArgs) -> Option<GpuUnderTest> {
    let allow_software = args.backends.as_ref().is_some_and(|b| b.names("gpu"));
    ome_pyramid::backend::gpu::GpuBackend::new(allow_software)
        .ok()
        .map(GpuUnderTest)
}

#[cfg(feature = "gpu")]
impl GpuUnderTest {
    fn name(&self) -> String {
        self.0.description()
    }

    fn clock(&self) -> &'static str {
        if self.0.context().has_timestamps() {
            "timestamps"
        } else {
            "host"
        }
    }

    /// Rates of one step, or `None` where the GPU does not compute it or the tile does not
    /// fit one program.
    fn rates(&self, step: &Step, src: &Tile, dst: &Region, bytes: u64, runs: usize) -> Result<Option<GpuRates>> {
        use ome_pyramid::backend::gpu::program::{self, GaussianPasses, Grid};
        let dtype = src.data.dtype();
        let context = self.0.context();
        if !self.0.supports(step.method, dtype) {
            return Ok(None);
        }
        let chain = [(step.clone(), dst.clone())];
        let Some(prog) = program::build(dtype, &src.region, &chain).filter(|p| context.fits(dtype, p)) else {
            return Ok(None);
        };
        let phases = self.phases(dtype, src, &prog, runs)?;
        let best = |f: &dyn Fn(&ome_pyramid::backend::gpu::PhaseTimes) -> Duration| {
            phases.iter().map(f).min().unwrap_or(Duration::MAX)
        };
        let kernel = best(&|p| p.kernel.unwrap_or(p.compute));
        let fused = prog.dispatches.iter().find_map(|d| match d.grid {
            Grid::Volume { .. } => Some("z–y–x"),
            Grid::Tiles { .. } => Some("y–x"),
            Grid::Flat { .. } | Grid::Rows { .. } => None,
        });
        // The kernel time of the same step with fewer passes fused, where that differs.
        let kernel_with = |passes: GaussianPasses| -> Result<Option<Duration>> {
            let Some(p) = program::build_with(dtype, &src.region, &chain, passes)
                .filter(|p| *p != prog && context.fits(dtype, p))
            else {
                return Ok(None);
            };
            let phases = self.phases(dtype, src, &p, runs)?;
            Ok(phases.iter().map(|p| p.kernel.unwrap_or(p.compute)).min())
        };
        let per_axis_kernel = kernel_with(GaussianPasses::PerAxis)?;
        let yx_kernel = kernel_with(GaussianPasses::FuseYx)?;
        let end_to_end = best_of(runs, || {
            let started = Instant::now();
            std::hint::black_box(context.run(dtype, &src.data, &prog)?);
            Ok(started.elapsed())
        })?;
        Ok(Some(GpuRates {
            upload_gb_per_s: gb_per_s(bytes, best(&|p| p.upload)),
            kernel_gb_per_s: gb_per_s(bytes, kernel),
            readback_gb_per_s: gb_per_s(dst.num_elements() * dtype.size() as u64, best(&|p| p.readback)),
            end_to_end_gb_per_s: gb_per_s(bytes, end_to_end),
            kernel_share_of_copy: None,
            fused,
            per_axis_kernel_gb_per_s: per_axis_kernel.map(|t| gb_per_s(bytes, t)),
            yx_fused_kernel_gb_per_s: yx_kernel.map(|t| gb_per_s(bytes, t)),
        }))
    }

    /// The phases of `runs` runs of `program` (after one to warm up), each phase submitted
    /// and waited for on its own.
    fn phases(
        &self,
        dtype: ome_pyramid::DType,
        src: &Tile,
        program: &ome_pyramid::backend::gpu::program::Program,
        runs: usize,
    ) -> Result<Vec<ome_pyramid::backend::gpu::PhaseTimes>> {
        let context = self.0.context();
        context.run_with(dtype, &src.data, program, true)?;
        (0..runs.max(1))
            .map(|_| Ok(context.run_with(dtype, &src.data, program, true)?.1))
            .collect()
    }

    fn copy_rate(&self, bytes: u64, runs: usize) -> Result<f64> {
        Ok(gb_per_s(bytes, self.0.context().copy_time(bytes, runs)?))
    }

    /// [`SMALL_TILES`] mean tiles of uint16 staged as a build stages them, computed one
    /// submission each and then all in one; each the best of `runs`. Staging is not timed.
    fn small_tiles(&self, runs: usize) -> Result<SmallTiles> {
        use ome_pyramid::tile::RowWrite;
        let (method, dtype) = (Method::Mean, DType::U16);
        let src = ome_pyramid::synthetic::random_tile(dtype, &SMALL_TILE, 7);
        let ome_pyramid::TileData::U16(values) = &src.data else {
            unreachable!("a uint16 tile")
        };
        let step = Step {
            method,
            factors: vec![2; SMALL_TILE.len()],
            src_shape: SMALL_TILE.to_vec(),
        };
        let dst = Region::whole(&step.dst_shape());
        let chain = [(step, dst.clone())];
        let staged = || -> Result<(ome_pyramid::backend::gpu::StagedTile, Vec<Region>)> {
            let mut tile = self
                .0
                .stage_source(dtype, &src.region, &chain)
                .ok_or_else(|| anyhow::anyhow!("the GPU stages no {SMALL_TILE:?} tile"))?;
            tile.write_with::<u16, _>(|mut rows| rows.write(values))?;
            Ok((tile, vec![dst.clone()]))
        };
        // Warm up: the pipeline, the slot's and the pools' buffers.
        let warm_up: Vec<_> = (0..SMALL_TILES).map(|_| staged()).collect::<Result<_>>()?;
        drop(self.0.downsample_staged(warm_up)?);
        let alone = best_of(runs, || {
            let mut computing = Duration::ZERO;
            for _ in 0..SMALL_TILES {
                let tile = staged()?;
                let started = Instant::now();
                drop(std::hint::black_box(self.0.downsample_staged(vec![tile])?));
                computing += started.elapsed();
            }
            Ok(computing)
        })?;
        let batched = best_of(runs, || {
            let tiles: Vec<_> = (0..SMALL_TILES).map(|_| staged()).collect::<Result<_>>()?;
            let started = Instant::now();
            drop(std::hint::black_box(self.0.downsample_staged(tiles)?));
            Ok(started.elapsed())
        })?;
        #[allow(clippy::cast_precision_loss)]
        let per_tile = |time: Duration| time.as_secs_f64() * 1e6 / SMALL_TILES as f64;
        Ok(SmallTiles {
            method,
            dtype,
            tile: SMALL_TILE.to_vec(),
            tiles: SMALL_TILES,
            alone_us_per_tile: per_tile(alone),
            batched_us_per_tile: per_tile(batched),
        })
    }
}

#[cfg(not(feature = "gpu"))]
struct GpuUnderTest;

#[cfg(not(feature = "gpu"))]
fn open_gpu(_: &BenchArgs) -> Option<GpuUnderTest> {
    None
}

#[cfg(not(feature = "gpu"))]
impl GpuUnderTest {
    fn name(&self) -> String {
        String::new()
    }

    fn clock(&self) -> &'static str {
        "host"
    }

    fn rates(&self, _: &Step, _: &Tile, _: &Region, _: u64, _: usize) -> Result<Option<GpuRates>> {
        Ok(None)
    }

    fn copy_rate(&self, _: u64, _: usize) -> Result<f64> {
        Ok(0.0)
    }

    fn small_tiles(&self, _: usize) -> Result<SmallTiles> {
        anyhow::bail!("no GPU in this build")
    }
}
