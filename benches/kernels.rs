//! Kernel throughput in GB/s of input, per method × dtype × backend (SPEC §2 kernels).
//!
//! `cargo bench --bench kernels` measures 64×512×512 tiles. The GPU is measured on any
//! adapter (a software one is labelled so), with upload, compute and readback submitted
//! separately (`gpu-upload`, `gpu-compute`, `gpu-readback`), next to a device-to-device copy
//! of the same bytes (`gpu-copy`), which is the memory-bandwidth ceiling. Under
//! `cargo test` (no `--bench`), each benchmark runs once on a tiny tile: the smoke mode.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ome_pyramid::backend::cpu::CpuBackend;
use ome_pyramid::backend::gpu::{GpuBackend, program};
use ome_pyramid::{DType, Downsampler, Method, Region, Step};

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn kernels(c: &mut Criterion) {
    let shape: &[u64] = if full_run() { &[64, 512, 512] } else { &[4, 16, 16] };
    let cpu = CpuBackend::new();
    let gpu = GpuBackend::new(true).ok();
    let gpu_label = gpu
        .as_ref()
        .map(|g| if g.is_software() { "gpu(software)" } else { "gpu" });
    let mut group = c.benchmark_group("kernels");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for dtype in [DType::U8, DType::U16, DType::U32, DType::F32] {
        let src = ome_pyramid::synthetic::random_tile(dtype, shape, 5);
        let bytes = (src.data.len() * dtype.size()) as u64;
        group.throughput(Throughput::Bytes(bytes));
        for method in Method::ALL.into_iter().filter(|m| m.accepts(dtype)) {
            let step = Step {
                method,
                factors: vec![2, 2, 2],
                src_shape: shape.to_vec(),
            };
            let dst = Region::whole(&step.dst_shape());
            let id = |backend: &str| BenchmarkId::new(format!("{backend}/{method}"), dtype);
            group.bench_function(id("cpu"), |b| {
                b.iter(|| black_box(cpu.downsample(&step, &src, &dst).unwrap()))
            });
            let (Some(gpu), Some(label)) = (&gpu, gpu_label) else {
                continue;
            };
            if !gpu.supports(method, dtype) {
                continue;
            }
            let prog = program::build(dtype, &src.region, &[(step.clone(), dst.clone())])
                .expect("a bench tile fits u32 indices");
            for phase in ["upload", "compute", "readback"] {
                group.bench_function(id(&format!("{label}-{phase}")), |b| {
                    b.iter_custom(|iterations| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iterations {
                            let (_, times) = gpu.context().run_with(dtype, &src.data, &prog, true).unwrap();
                            total += match phase {
                                "upload" => times.upload,
                                "compute" => times.compute,
                                _ => times.readback,
                            };
                        }
                        total
                    });
                });
            }
            group.bench_function(id(&format!("{label}-total")), |b| {
                b.iter(|| black_box(gpu.downsample(&step, &src, &dst).unwrap()));
            });
        }
        if let (Some(gpu), Some(label)) = (&gpu, gpu_label) {
            // Reading and writing the same bytes once: the ceiling for a bandwidth-bound kernel.
            group.bench_function(BenchmarkId::new(format!("{label}-copy"), dtype), |b| {
                b.iter_custom(|iterations| {
                    (0..iterations)
                        .map(|_| gpu.context().copy_time(bytes, 1).unwrap())
                        .sum()
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
