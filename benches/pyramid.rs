//! End-to-end pyramid builds in MB/s of input: read, decode, compute, encode, write.
//!
//! `cargo bench --bench pyramid` builds a 64×512×512 uint16 volume (chunks 32×128×128, zstd
//! level 1) on disk (under `target/`) and in memory (a tmpfs, `/dev/shm`, where there is
//! one), per method, on the CPU and on a hardware GPU when there is one. Under `cargo test`
//! (no `--bench`) each case runs once on a tiny volume: the smoke mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ome_pyramid::synthetic::{self, ArrayFormat, ArraySpec, Codec};
use ome_pyramid::{BackendChoice, Compression, DType, Method, PyramidBuilder};

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Where volumes go: on disk, and in memory where a tmpfs exists.
fn places() -> Vec<(&'static str, PathBuf)> {
    let disk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-pyramid");
    let mut places = vec![("disk", disk)];
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        places.push(("tmpfs", shm.join(format!("ome-pyramid-bench-{}", std::process::id()))));
    }
    places
}

fn pyramid(c: &mut Criterion) {
    let (shape, chunks) = if full_run() {
        (vec![64, 512, 512], vec![32, 128, 128])
    } else {
        (vec![8, 32, 32], vec![8, 16, 16])
    };
    let bytes: u64 = shape.iter().product::<u64>() * 2;
    let hardware_gpu = ome_pyramid::backend::list_adapters().iter().any(|a| a.used_by_auto);
    let mut group = c.benchmark_group("pyramid");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(bytes));
    for (place, dir) in places() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        let input = dir.join("input.zarr");
        let spec = ArraySpec {
            shape: shape.clone(),
            chunks: chunks.clone(),
            dtype: DType::U16,
            format: ArrayFormat::V2,
            codec: Codec::Zstd(1),
        };
        synthetic::write_synthetic(&input, &spec, 7).expect("input");
        let output = dir.join("output.zarr");
        let mut backends = vec![BackendChoice::Cpu];
        if hardware_gpu {
            backends.push(BackendChoice::Gpu);
        }
        for backend in backends {
            for method in Method::ALL {
                let id = BenchmarkId::new(format!("{place}/{method}"), format!("{backend:?}").to_lowercase());
                group.bench_function(id, |b| {
                    b.iter(|| {
                        PyramidBuilder::new(&input, &output)
                            .method(method)
                            .backend(backend)
                            .compression(Compression::Zstd, 1)
                            .overwrite(true)
                            .build()
                            .expect("build")
                    });
                });
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    group.finish();
}

criterion_group!(benches, pyramid);
criterion_main!(benches);
