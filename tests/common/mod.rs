//! Shared test helpers: golden vectors, a literal float64 reference of SPEC §2, the list of
//! backends every kernel test runs on, the built binary, and the OME-NGFF schemas.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use ome_pyramid::dtype::Sample;
use ome_pyramid::method::{Method, gaussian_kernel, gaussian_radius, reflect_index};
use ome_pyramid::tile::TileElement;
use ome_pyramid::{DType, Downsampler, TileData};
use serde_json::Value;

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Converts JSON numbers to typed tile data.
pub fn tile_data(dtype: DType, values: &[Value]) -> TileData {
    ome_pyramid::dispatch_dtype!(dtype, T => {
        T::wrap(values.iter().map(|v| T::from_f64(v.as_f64().expect("numeric golden value"))).collect())
    })
}

/// Every element as f64 (exact for the golden types).
pub fn as_f64(data: &TileData) -> Vec<f64> {
    ome_pyramid::dispatch_dtype!(data.dtype(), T => T::view(data).unwrap().iter().map(|v| v.to_f64()).collect())
}

#[derive(Debug, Clone)]
pub struct GoldenCase {
    pub index: usize,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub factors: Vec<u32>,
    pub input: TileData,
    pub expected_shape: Vec<u64>,
    pub expected: TileData,
}

pub fn golden_cases(method: Method) -> Vec<GoldenCase> {
    let path = data_dir().join("golden").join(format!("{}.json", method.name()));
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).expect("golden file")).expect("golden JSON");
    assert_eq!(doc["method"], method.name());
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(index, case)| {
            let dtype = DType::from_name(case["input"]["dtype"].as_str().unwrap()).unwrap();
            let shape: Vec<u64> = serde_json::from_value(case["input"]["shape"].clone()).unwrap();
            let expected_shape: Vec<u64> = serde_json::from_value(case["expected"]["shape"].clone()).unwrap();
            GoldenCase {
                index,
                dtype,
                factors: serde_json::from_value(case["factors"].clone()).unwrap(),
                input: tile_data(dtype, case["input"]["data"].as_array().unwrap()),
                expected: tile_data(dtype, case["expected"]["data"].as_array().unwrap()),
                shape,
                expected_shape,
            }
        })
        .collect()
}

/// How close a backend must be to the float64 reference (SPEC §2 "Agreement").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Exact,
    /// Integers within this many units.
    Units(f64),
    /// Floats within this relative error.
    Relative(f64),
}

pub fn tolerance(method: Method, dtype: DType, backend_is_gpu: bool) -> Tolerance {
    match (method, dtype.is_float()) {
        (Method::Nearest, _) => Tolerance::Exact,
        (Method::Mean, false) => Tolerance::Exact,
        (Method::Mean, true) => Tolerance::Relative(1e-6),
        (Method::Gaussian, false) => {
            if backend_is_gpu {
                Tolerance::Units(1.0)
            } else {
                Tolerance::Exact
            }
        }
        (Method::Gaussian, true) => Tolerance::Relative(1e-5),
        // Values of the window, selected: exact on every backend and dtype.
        (Method::Mode | Method::Min | Method::Max, _) => Tolerance::Exact,
    }
}

/// Compares `got` with `expected`; returns a description of the first mismatch.
pub fn compare(got: &TileData, expected: &TileData, tol: Tolerance) -> Result<(), String> {
    if got.dtype() != expected.dtype() {
        return Err(format!("dtype {} instead of {}", got.dtype(), expected.dtype()));
    }
    if got.len() != expected.len() {
        return Err(format!("{} elements instead of {}", got.len(), expected.len()));
    }
    let (g, e) = (as_f64(got), as_f64(expected));
    let scale = e.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&e).enumerate() {
        let ok = match tol {
            Tolerance::Exact => a == b || (a.is_nan() && b.is_nan()),
            Tolerance::Units(u) => (a - b).abs() <= u,
            Tolerance::Relative(r) => (a.is_nan() && b.is_nan()) || (a - b).abs() <= r * b.abs().max(1e-3 * scale),
        };
        if !ok {
            return Err(format!("element {i}: got {a}, expected {b} (tolerance {tol:?})"));
        }
    }
    Ok(())
}

/// SPEC §2 taken literally, in float64: for gaussian, blur the whole array along every
/// axis with f > 1 (reflect border), then the window mean over in-bounds voxels; no
/// rounding in between. Returns unrounded values.
pub fn reference_f64(method: Method, input: &[f64], shape: &[u64], factors: &[u32]) -> (Vec<u64>, Vec<f64>) {
    let ndim = shape.len();
    let out_shape: Vec<u64> = shape
        .iter()
        .zip(factors)
        .map(|(&n, &f)| n.div_ceil(u64::from(f)))
        .collect();
    let strides = c_strides(shape);
    let mut data = input.to_vec();
    if method == Method::Gaussian {
        for a in 0..ndim {
            if factors[a] == 1 {
                continue;
            }
            let kernel = gaussian_kernel(factors[a]);
            let radius = i64::from(gaussian_radius(factors[a]));
            let mut blurred = vec![0f64; data.len()];
            for (flat, out) in blurred.iter_mut().enumerate() {
                let i = (flat / strides[a]) as u64 % shape[a];
                let base = flat - (i as usize) * strides[a];
                let mut sum = 0.0;
                for (k, w) in (-radius..=radius).zip(&kernel) {
                    let j = reflect_index(i as i64 + k, shape[a]);
                    sum += w * data[base + j as usize * strides[a]];
                }
                *out = sum;
            }
            data = blurred;
        }
    }
    let out = window_offsets(method, shape, factors)
        .iter()
        .map(|offsets| offsets.iter().map(|&i| data[i]).sum::<f64>() / offsets.len() as f64)
        .collect();
    (out_shape, out)
}

/// The flat input offsets of every output's window (C order), as SPEC §2 defines windows:
/// `[i·f, min((i+1)·f, n))` per axis, only the first voxel for nearest.
pub fn window_offsets(method: Method, shape: &[u64], factors: &[u32]) -> Vec<Vec<usize>> {
    let ndim = shape.len();
    let strides = c_strides(shape);
    let out_shape: Vec<u64> = shape
        .iter()
        .zip(factors)
        .map(|(&n, &f)| n.div_ceil(u64::from(f)))
        .collect();
    let total: u64 = out_shape.iter().product();
    let mut out = Vec::with_capacity(total as usize);
    for flat in 0..total {
        let mut rest = flat;
        let mut index = vec![0u64; ndim];
        for a in (0..ndim).rev() {
            index[a] = rest % out_shape[a];
            rest /= out_shape[a];
        }
        let windows: Vec<(u64, u64)> = (0..ndim)
            .map(|a| {
                let f = u64::from(factors[a]);
                let lo = index[a] * f;
                let hi = if method == Method::Nearest {
                    lo + 1
                } else {
                    ((index[a] + 1) * f).min(shape[a])
                };
                (lo, hi)
            })
            .collect();
        let mut offsets = Vec::new();
        let mut position: Vec<u64> = windows.iter().map(|w| w.0).collect();
        'window: loop {
            offsets.push(position.iter().zip(&strides).map(|(&p, &s)| p as usize * s).sum());
            let mut a = ndim;
            loop {
                if a == 0 {
                    break 'window;
                }
                a -= 1;
                position[a] += 1;
                if position[a] < windows[a].1 {
                    break;
                }
                position[a] = windows[a].0;
            }
        }
        out.push(offsets);
    }
    out
}

/// SPEC §2's mode, min and max taken literally on typed values (exact for 64-bit integers):
/// mode counts every distinct value of the window and takes the most frequent, the smallest
/// on a tie; min and max give NaN if the window holds one, else the smallest / largest value,
/// −0.0 where both zeros are.
pub fn reference_select<T: Sample>(method: Method, input: &[T], shape: &[u64], factors: &[u32]) -> Vec<T> {
    window_offsets(method, shape, factors)
        .iter()
        .map(|offsets| {
            let window: Vec<T> = offsets.iter().map(|&i| input[i]).collect();
            let is_nan = |v: T| v.to_f64().is_nan();
            match method {
                Method::Mode => {
                    let mut counts: Vec<(T, usize)> = Vec::new();
                    for &v in &window {
                        match counts.iter_mut().find(|(w, _)| *w == v) {
                            Some((_, n)) => *n += 1,
                            None => counts.push((v, 1)),
                        }
                    }
                    let most = counts.iter().map(|&(_, n)| n).max().unwrap();
                    counts
                        .iter()
                        .filter(|&&(_, n)| n == most)
                        .map(|&(v, _)| v)
                        .reduce(|a, b| if b < a { b } else { a })
                        .unwrap()
                }
                Method::Min | Method::Max => {
                    if let Some(&nan) = window.iter().find(|&&v| is_nan(v)) {
                        return nan;
                    }
                    let wanted_zero_negative = method == Method::Min;
                    window
                        .iter()
                        .copied()
                        .reduce(|a, b| {
                            let b_wins = if method == Method::Min { b < a } else { b > a };
                            let zero_tie = a == b && b.to_f64().is_sign_negative() == wanted_zero_negative;
                            if b_wins || zero_tie { b } else { a }
                        })
                        .unwrap()
                }
                _ => panic!("{method} computes values; use reference_f64"),
            }
        })
        .collect()
}

/// The literal reference of one step on typed data: [`reference_select`] for the methods
/// that select a window value (exact on every dtype), else [`reference_f64`] rounded.
pub fn reference_step(method: Method, input: &TileData, shape: &[u64], factors: &[u32]) -> TileData {
    if method.selects_input_values() && method != Method::Nearest {
        return ome_pyramid::dispatch_dtype!(input.dtype(), T => {
            T::wrap(reference_select(method, T::view(input).unwrap(), shape, factors))
        });
    }
    let values = as_f64(input);
    let (_, reference) = reference_f64(method, &values, shape, factors);
    round_to(input.dtype(), &reference, &values)
}

fn c_strides(shape: &[u64]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1] as usize;
    }
    strides
}

/// Rounds reference values computed from `inputs` to a dtype as SPEC §2 says (integers half
/// to even, clamped; values within float error of a half-integer, at the inputs' scale, are
/// that tie).
pub fn round_to(dtype: DType, values: &[f64], inputs: &[f64]) -> TileData {
    let magnitude = inputs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    ome_pyramid::dispatch_dtype!(dtype, T => T::wrap(values.iter().map(|&v| T::from_filtered(v, magnitude)).collect()))
}

/// The backends every kernel test runs on: the CPU, and the GPU where an adapter exists.
/// Under `CI=true` a missing GPU adapter is a failure, not a skip.
pub fn backends() -> Vec<(&'static str, Arc<dyn Downsampler>)> {
    let mut list: Vec<(&'static str, Arc<dyn Downsampler>)> =
        vec![("cpu", Arc::new(ome_pyramid::backend::cpu::CpuBackend::new()))];
    if let Some(gpu) = gpu_backend() {
        list.push(("gpu", gpu));
    }
    list
}

/// Says, where the reader of `cargo test` sees it, that `test` checked nothing and why.
///
/// Written to the process's stderr itself: the test harness captures `eprintln!` and shows
/// it only for failing tests, so a skipped test would otherwise read as a plain `ok`.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// The GPU backend for `test`, or `None` after saying the test is skipped (outside CI; under
/// `CI=true` a missing adapter fails in [`gpu_backend`]).
pub fn gpu_or_skip(test: &str) -> Option<Arc<dyn Downsampler>> {
    let gpu = gpu_backend();
    if gpu.is_none() {
        skip(
            test,
            "no GPU adapter (Debian's mesa-vulkan-drivers gives the software one, lavapipe)",
        );
    }
    gpu
}

/// The GPU backend on any adapter (lavapipe included), shared by the tests of one binary.
#[cfg(not(feature = "gpu"))]
pub fn gpu_backend() -> Option<Arc<dyn Downsampler>> {
    skip("GPU tests", "built without the `gpu` feature");
    None
}

/// The GPU backend on any adapter (lavapipe included), shared by the tests of one binary.
#[cfg(feature = "gpu")]
pub fn gpu_backend() -> Option<Arc<dyn Downsampler>> {
    use std::sync::OnceLock;
    static GPU: OnceLock<Option<Arc<dyn Downsampler>>> = OnceLock::new();
    GPU.get_or_init(|| match ome_pyramid::backend::gpu::GpuBackend::new(true) {
        Ok(gpu) => Some(Arc::new(gpu) as Arc<dyn Downsampler>),
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no GPU adapter: {e}");
            }
            skip("GPU tests", &format!("no adapter: {e}"));
            None
        }
    })
    .clone()
}

/// Every voxel of a chunk source (native-endian bytes, C order), chunk by chunk, padding cut
/// off.
pub fn read_whole(source: &dyn ome_pyramid::store::ChunkSource) -> Vec<u8> {
    let shape = source.shape().to_vec();
    let element = source.dtype().size();
    let total: u64 = shape.iter().product();
    let mut out = vec![0u8; usize::try_from(total).unwrap() * element];
    let whole = ome_pyramid::Region::new(vec![0; shape.len()], shape.clone());
    for indices in source.chunks_in(&whole) {
        let region = source.chunk_region(&indices);
        let bytes = source
            .read_chunk(&indices)
            .unwrap_or_else(|e| panic!("chunk {indices:?}: {e}"));
        let chunk = &region.shape;
        let count: u64 = chunk.iter().product();
        for flat in 0..count {
            // The position of element `flat` of the chunk, in the array.
            let mut rest = flat;
            let mut at = vec![0u64; chunk.len()];
            for a in (0..chunk.len()).rev() {
                at[a] = region.start[a] + rest % chunk[a];
                rest /= chunk[a];
            }
            if at.iter().zip(&shape).any(|(&i, &n)| i >= n) {
                continue;
            }
            let target = at.iter().zip(&shape).fold(0u64, |f, (&i, &n)| f * n + i);
            let (from, to) = (
                usize::try_from(flat).unwrap() * element,
                usize::try_from(target).unwrap() * element,
            );
            out[to..to + element].copy_from_slice(&bytes[from..from + element]);
        }
    }
    out
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ome-pyramid"))
}

pub fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("binary runs")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a command printed on stdout, parsed as JSON (the `--json` reports).
pub fn json_stdout(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(output)))
}

/// A validator of the v0.4 `strict_image.schema` or `image.schema` (see [`ngff_validator_for`]).
pub fn ngff_validator(strict: bool) -> jsonschema::Validator {
    ngff_validator_for("0.4", strict)
}

/// A validator of OME-NGFF `version`'s `strict_image.schema` (which references
/// `image.schema`) or `image.schema`. In 0.5 it applies to a group's `zarr.json` attributes.
pub fn ngff_validator_for(version: &str, strict: bool) -> jsonschema::Validator {
    ngff_schema_validator(version, if strict { "strict_image.schema" } else { "image.schema" })
}

/// A validator of the OME-NGFF schema `file` (e.g. `strict_label.schema`) of `version`,
/// resolved offline from `tests/data/ngff/VERSION/schemas` with the schemas it references.
pub fn ngff_schema_validator(version: &str, file: &str) -> jsonschema::Validator {
    let dir = data_dir().join("ngff").join(version).join("schemas");
    let load = |name: &str| -> Value { serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap() };
    let base = format!("https://ngff.openmicroscopy.org/{version}/schemas");
    let mut registry = jsonschema::Registry::new();
    for referenced in ["image.schema", "label.schema", "_version.schema"] {
        if dir.join(referenced).exists() {
            registry = registry.add(format!("{base}/{referenced}"), load(referenced)).unwrap();
        }
    }
    let registry = registry.prepare().unwrap();
    jsonschema::options()
        .with_registry(&registry)
        .build(&load(file))
        .expect("schema compiles")
}

/// A JSON file's contents.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The attributes of a 0.4 (`.zattrs`) or 0.5 (`zarr.json`, which must be a group) group.
pub fn group_attributes(group: &Path) -> Value {
    if group.join(".zattrs").exists() {
        return read_json(&group.join(".zattrs"));
    }
    let node = read_json(&group.join("zarr.json"));
    assert_eq!(node["node_type"], "group", "{}", group.display());
    node["attributes"].clone()
}

/// The first `multiscales` entry of a 0.4 or 0.5 image or label image.
pub fn multiscale(group: &Path) -> Value {
    let attributes = group_attributes(group);
    attributes
        .get("multiscales")
        .unwrap_or(&attributes["ome"]["multiscales"])[0]
        .clone()
}

/// Every file under `dir`, by path relative to `dir`, with its bytes. Symbolic links and
/// special files (FIFOs) are recorded by what they are, never followed or read.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            let content = if kind.is_dir() {
                stack.push(path);
                continue;
            } else if kind.is_symlink() {
                format!("symlink to {}", std::fs::read_link(&path).unwrap().display()).into_bytes()
            } else if kind.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                b"special file".to_vec()
            };
            files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), content);
        }
    }
    files
}

/// [`snapshot`] of a 0.4 image but its `.zattrs`, which must be there: the files that two
/// builds on different backends must write alike (the attributes name the backend).
pub fn snapshot_but_attributes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = snapshot(dir);
    assert!(
        files.remove(Path::new(".zattrs")).is_some(),
        "{} has no .zattrs",
        dir.display()
    );
    files
}

/// An `ome-pyramid NAME args` command (e.g. `labels`), not yet run.
pub fn subcommand(name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.arg(name).args(args).env("NO_COLOR", "1");
    command
}

/// A `build` command with the given arguments.
pub fn build_command(args: &[&str]) -> Command {
    subcommand("build", args)
}

/// Runs `build args` with a pause of `task_delay_ms` before each task (a test hook of debug
/// builds), sends `signal` (e.g. `-INT`) after `after`, and returns whether the signal
/// ended the build (rather than the build finishing first) with what it printed.
pub fn interrupt_build(args: &[&str], task_delay_ms: u64, after: std::time::Duration, signal: &str) -> (bool, Output) {
    interrupt(build_command(args), task_delay_ms, after, signal)
}

/// [`interrupt_build`] for any `ome-pyramid` command that runs a build (`labels`, `demo`).
pub fn interrupt(mut command: Command, task_delay_ms: u64, after: std::time::Duration, signal: &str) -> (bool, Output) {
    let child = command
        .env("OME_PYRAMID_TEST_TASK_DELAY_MS", task_delay_ms.to_string())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < after {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    let interrupted = out.status.signal().is_some() || out.status.code() == Some(1);
    (interrupted, out)
}

/// Waits for `child` at most `limit`; kills it and fails the test if it is still running.
pub fn wait_at_most(mut child: std::process::Child, limit: std::time::Duration, what: &str) -> Output {
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A synthetic uint16 Zarr v2 array (zstd level 1) at `path`.
pub fn u16_input(path: &Path, shape: &[u64], chunks: &[u64], seed: u64) {
    let spec = ome_pyramid::synthetic::ArraySpec {
        shape: shape.to_vec(),
        chunks: chunks.to_vec(),
        dtype: DType::U16,
        format: ome_pyramid::synthetic::ArrayFormat::V2,
        codec: ome_pyramid::synthetic::Codec::Zstd(1),
    };
    ome_pyramid::synthetic::write_synthetic(path, &spec, seed).unwrap();
}

/// A named pipe at `path`, for tests that an input FIFO fails instead of blocking.
#[cfg(unix)]
pub fn make_fifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}
