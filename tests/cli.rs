//! End-to-end tests of the `ome-pyramid` binary on temporary Zarr inputs: levels, shapes,
//! transforms, values against the reference, the v0.4 schemas, and an untouched input.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{
    as_f64, compare, json_stdout, multiscale, ngff_validator, reference_step, run, snapshot, stderr, stdout, tolerance,
};
use ome_pyramid::synthetic::{self, ArrayFormat, ArraySpec, Codec};
use ome_pyramid::{DType, Method, TileData};
use serde_json::{Value, json};
use tempfile::TempDir;

fn spec(shape: &[u64], chunks: &[u64], dtype: DType, format: ArrayFormat, codec: Codec) -> ArraySpec {
    ArraySpec {
        shape: shape.to_vec(),
        chunks: chunks.to_vec(),
        dtype,
        format,
        codec,
    }
}

fn synthetic_input(dir: &Path, name: &str, spec: &ArraySpec) -> PathBuf {
    let path = dir.join(name);
    synthetic::write_synthetic(&path, spec, 7).expect("write input");
    path
}

fn attrs(output: &Path) -> Value {
    common::read_json(&output.join(".zattrs"))
}

fn level(output: &Path, k: usize) -> (Vec<u64>, TileData) {
    synthetic::read_array(output, &format!("/{k}")).expect("level readable")
}

fn build(args: &[&str]) -> std::process::Output {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "build {args:?} failed: {}", stderr(&out));
    out
}

/// Each level equals the method applied to the level below as stored (SPEC §2).
fn assert_levels_follow_the_reference(output: &Path, method: Method, gpu: bool) {
    let ms = multiscale(output);
    let datasets = ms["datasets"].as_array().unwrap().len();
    let factors: Vec<Vec<u32>> = serde_json::from_value(ms["metadata"]["factors"].clone()).unwrap();
    assert_eq!(factors.len(), datasets - 1);
    for k in 1..datasets {
        let (shape, below) = level(output, k - 1);
        let (_, got) = level(output, k);
        let expected_shape: Vec<u64> = shape
            .iter()
            .zip(&factors[k - 1])
            .map(|(&n, &f)| n.div_ceil(u64::from(f)))
            .collect();
        assert_eq!(level(output, k).0, expected_shape, "level {k} shape");
        let expected = reference_step(method, &below, &shape, &factors[k - 1]);
        compare(&got, &expected, tolerance(method, below.dtype(), gpu))
            .unwrap_or_else(|e| panic!("level {k} of {method}: {e}"));
    }
}

/// The attributes of a 0.5 output's group `zarr.json`.
fn zarr_json_attributes(output: &Path) -> Value {
    assert!(output.join("zarr.json").exists(), "{} is a 0.5 group", output.display());
    common::group_attributes(output)
}

/// Files under `dir` whose path relative to it starts with `prefix`.
fn files_under(dir: &Path, prefix: &str) -> usize {
    snapshot(dir)
        .keys()
        .filter(|p| p.to_string_lossy().starts_with(prefix))
        .count()
}

fn assert_valid_ngff(output: &Path) {
    let attributes = attrs(output);
    for strict in [false, true] {
        let validator = ngff_validator(strict);
        let errors: Vec<String> = validator.iter_errors(&attributes).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "strict={strict}: .zattrs does not validate: {errors:?}\n{attributes:#}"
        );
    }
}

#[test]
fn the_schemas_accept_their_own_valid_examples_and_reject_invalid_ones() {
    // The validator set-up itself is checked against the official test suites.
    for (version, suite, strict) in [
        ("0.4", "image_suite.json", false),
        ("0.4", "strict_image_suite.json", true),
        ("0.5", "image_suite.json", false),
        ("0.5", "strict_image_suite.json", true),
    ] {
        let path = common::data_dir().join("ngff").join(version).join("tests").join(suite);
        let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let validator = common::ngff_validator_for(version, strict);
        let tests = doc["tests"].as_array().unwrap();
        assert!(tests.len() > 3);
        for t in tests {
            assert_eq!(
                validator.is_valid(&t["data"]),
                t["valid"].as_bool().unwrap(),
                "{version} {suite}: {}",
                t["formerly"].as_str().or(t["description"].as_str()).unwrap_or("?")
            );
        }
    }
}

fn v2_uint16_volume_with_odd_shape(backend: &str, gpu: bool) {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(&[19, 45, 70], &[8, 16, 16], DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
    );
    let before = snapshot(&input);
    let output = dir.path().join("out.ome.zarr");
    build(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--json",
        "--backend",
        backend,
    ]);
    assert_eq!(before, snapshot(&input), "the input is unchanged, byte for byte");
    let ms = multiscale(&output);
    let shapes: Vec<Vec<u64>> = (0..ms["datasets"].as_array().unwrap().len())
        .map(|k| level(&output, k).0)
        .collect();
    // Stop rule: until every space axis fits one chunk (8, 16, 16); at level 2 only x
    // does not, so only x is reduced (SPEC §3: no level shrinks an axis that fits).
    assert_eq!(
        shapes,
        vec![vec![19, 45, 70], vec![10, 23, 35], vec![5, 12, 18], vec![5, 12, 9]]
    );
    assert_eq!(ms["type"], "mean");
    assert_eq!(
        ms["metadata"]["backend"].as_str().map(|b| b.starts_with(backend)),
        Some(true)
    );
    assert_eq!(
        ms["datasets"][2]["coordinateTransformations"],
        json!([
            {"type": "scale", "scale": [4.0, 4.0, 4.0]},
            {"type": "translation", "translation": [1.5, 1.5, 1.5]}
        ])
    );
    // Level 0 is the input.
    assert_eq!(level(&output, 0).1, synthetic::read_array(&input, "/").unwrap().1);
    assert_levels_follow_the_reference(&output, Method::Mean, gpu);
    assert_valid_ngff(&output);
    // The .zarray of each level is plain Zarr v2 as SPEC §4 describes.
    let zarray: Value = serde_json::from_slice(&std::fs::read(output.join("1/.zarray")).unwrap()).unwrap();
    assert_eq!(zarray["zarr_format"], 2);
    assert_eq!(zarray["order"], "C");
    assert_eq!(zarray["dimension_separator"], "/");
    assert_eq!(zarray["dtype"], "<u2");
    assert_eq!(zarray["filters"], Value::Null);
    assert_eq!(zarray["compressor"], json!({"id": "zstd", "level": 1}));
}

fn every_method_on_a_v3_input(backend: &str, gpu: bool) {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(
            &[13, 30, 41],
            &[7, 16, 16],
            DType::I16,
            ArrayFormat::V3,
            Codec::BloscLz4(5),
        ),
    );
    for method in Method::ALL {
        let output = dir.path().join(format!("{method}.ome.zarr"));
        build(&[
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--method",
            method.name(),
            "--backend",
            backend,
        ]);
        let ms = multiscale(&output);
        assert_eq!(ms["type"], method.name());
        assert_levels_follow_the_reference(&output, method, gpu);
        assert_valid_ngff(&output);
        let translation = &ms["datasets"][1]["coordinateTransformations"][1]["translation"];
        let expected = if method == Method::Nearest {
            json!([0.0, 0.0, 0.0])
        } else {
            json!([0.5, 0.5, 0.5])
        };
        assert_eq!(translation, &expected, "{method}");
        if method == Method::Gaussian {
            assert_eq!(ms["metadata"]["sigma"][0], json!([2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]));
        }
    }
}

fn sharded_v3_input(backend: &str, gpu: bool) {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(
            &[20, 40, 40],
            &[5, 10, 10],
            DType::F32,
            ArrayFormat::V3Sharded {
                shard_shape: vec![10, 20, 20],
            },
            Codec::Zstd(3),
        ),
    );
    let output = dir.path().join("out.ome.zarr");
    build(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--method",
        "gaussian",
        "--compression",
        "blosc-zstd",
        "--backend",
        backend,
    ]);
    assert_levels_follow_the_reference(&output, Method::Gaussian, gpu);
    // Output chunks default to the read granularity (the inner chunks).
    assert_eq!(level(&output, 0).0, vec![20, 40, 40]);
    let zarray: Value = serde_json::from_slice(&std::fs::read(output.join("0/.zarray")).unwrap()).unwrap();
    assert_eq!(zarray["chunks"], json!([5, 10, 10]));
    assert_eq!(zarray["compressor"]["cname"], "zstd");
    assert_valid_ngff(&output);
}

fn two_four_and_five_dimensional_arrays(backend: &str, gpu: bool) {
    let dir = TempDir::new().unwrap();
    // (shape, chunks, --axes, expected axes)
    type Case<'a> = (&'a [u64], &'a [u64], Option<&'a str>, &'a str);
    let cases: [Case; 4] = [
        (&[37, 50], &[16, 16], None, "yx"),
        (&[3, 9, 20, 21], &[1, 4, 8, 8], None, "czyx"),
        (&[2, 3, 6, 17, 18], &[1, 1, 4, 8, 8], Some("tczyx"), "tczyx"),
        (&[4, 2, 17, 18], &[1, 1, 8, 8], Some("tcyx"), "tcyx"),
    ];
    for (i, (shape, chunks, axes, expected_axes)) in cases.into_iter().enumerate() {
        let input = synthetic_input(
            dir.path(),
            &format!("in{i}.zarr"),
            &spec(shape, chunks, DType::U8, ArrayFormat::V2, Codec::Gzip(1)),
        );
        let output = dir.path().join(format!("out{i}.ome.zarr"));
        let mut args = vec![
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--backend",
            backend,
            "--method",
            "gaussian",
        ];
        if let Some(axes) = axes {
            args.extend(["--axes", axes]);
        }
        build(&args);
        let ms = multiscale(&output);
        let names: String = ms["axes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, expected_axes);
        // Time and channel axes are never reduced.
        for k in 1..ms["datasets"].as_array().unwrap().len() {
            let (shape_k, _) = level(&output, k);
            for (a, axis) in ms["axes"].as_array().unwrap().iter().enumerate() {
                if axis["type"] != "space" {
                    assert_eq!(shape_k[a], shape[a], "{expected_axes}: axis {a} kept at level {k}");
                }
            }
        }
        assert_levels_follow_the_reference(&output, Method::Gaussian, gpu);
        assert_valid_ngff(&output);
    }
}

fn anisotropic_scale_reduces_xy_first(backend: &str, gpu: bool) {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(&[16, 64, 64], &[4, 8, 8], DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
    );
    let output = dir.path().join("out.ome.zarr");
    build(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--scale",
        "z=2.0,y=0.5,x=0.5",
        "--unit",
        "um",
        "--levels",
        "5",
        "--backend",
        backend,
    ]);
    let ms = multiscale(&output);
    assert_eq!(
        ms["metadata"]["factors"],
        json!([[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]])
    );
    assert_eq!(ms["axes"][0]["unit"], "micrometer");
    let transforms = &ms["datasets"][3]["coordinateTransformations"];
    assert_eq!(transforms[0]["scale"], json!([4.0, 4.0, 4.0]));
    // translation = s·(F − 1)/2 = 2·(2−1)/2, 0.5·(8−1)/2
    assert_eq!(transforms[1]["translation"], json!([1.0, 1.75, 1.75]));
    assert_eq!(level(&output, 4).0, vec![4, 4, 4]);
    assert_levels_follow_the_reference(&output, Method::Mean, gpu);
    assert_valid_ngff(&output);
}

fn ome_zarr_input_carries_axes_units_transforms_and_omero(backend: &str, gpu: bool) {
    let dir = TempDir::new().unwrap();
    let group = dir.path().join("image.ome.zarr");
    std::fs::create_dir_all(&group).unwrap();
    std::fs::write(group.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
    synthetic::write_synthetic(
        &group.join("s0"),
        &spec(
            &[2, 10, 33, 34],
            &[1, 5, 16, 16],
            DType::U16,
            ArrayFormat::V2,
            Codec::Zstd(1),
        ),
        3,
    )
    .unwrap();
    let omero = json!({"channels": [
        {"color": "FF0000", "window": {"start": 0, "end": 1000, "min": 0, "max": 65535}, "label": "a"},
        {"color": "00FF00", "window": {"start": 0, "end": 2000, "min": 0, "max": 65535}, "label": "b"}]});
    let zattrs = json!({
        "multiscales": [{
            "version": "0.4",
            "name": "original",
            "axes": [{"name": "c", "type": "channel"}, {"name": "z", "type": "space", "unit": "micrometer"},
                     {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}],
            "datasets": [{"path": "s0", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, 3.0, 0.75, 0.75]}, {"type": "translation", "translation": [0.0, 10.0, 5.0, 6.0]}]}],
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0, 1.0]}]
        }],
        "omero": omero,
    });
    std::fs::write(group.join(".zattrs"), serde_json::to_vec(&zattrs).unwrap()).unwrap();
    let before = snapshot(&group);
    let output = dir.path().join("out.ome.zarr");
    build(&[
        group.to_str().unwrap(),
        output.to_str().unwrap(),
        "--method",
        "nearest",
        "--backend",
        backend,
    ]);
    assert_eq!(before, snapshot(&group));
    let attributes = attrs(&output);
    assert_eq!(attributes["omero"], omero);
    let ms = &attributes["multiscales"][0];
    assert_eq!(ms["name"], "original");
    assert_eq!(ms["axes"], zattrs["multiscales"][0]["axes"]);
    assert_eq!(
        ms["coordinateTransformations"],
        zattrs["multiscales"][0]["coordinateTransformations"]
    );
    // z=3.0 vs y=x=0.75: xy are reduced first (3.0 > 1.5 × 0.75).
    assert_eq!(ms["metadata"]["factors"][0], json!([1, 1, 2, 2]));
    assert_eq!(
        ms["datasets"][1]["coordinateTransformations"],
        json!([
            {"type": "scale", "scale": [1.0, 3.0, 1.5, 1.5]},
            {"type": "translation", "translation": [0.0, 10.0, 5.0, 6.0]}
        ])
    );
    assert_levels_follow_the_reference(&output, Method::Nearest, gpu);
    assert_valid_ngff(&output);

    // 0.4 → 0.5 → 0.4: the image's axes, units, transforms and channels carry over both ways.
    let v05 = dir.path().join("converted.ome.zarr");
    let v04 = dir.path().join("back.ome.zarr");
    for (from, to, version) in [(&group, &v05, "0.5"), (&v05, &v04, "0.4")] {
        build(&[
            from.to_str().unwrap(),
            to.to_str().unwrap(),
            "--method",
            "nearest",
            "--backend",
            backend,
            "--ngff-version",
            version,
            "--levels",
            "2",
        ]);
        let ms = multiscale(to);
        assert_eq!(ms["name"], "original", "{version}");
        assert_eq!(ms["axes"], zattrs["multiscales"][0]["axes"], "{version}");
        assert_eq!(
            ms["coordinateTransformations"], zattrs["multiscales"][0]["coordinateTransformations"],
            "{version}"
        );
        assert_eq!(
            ms["datasets"][0]["coordinateTransformations"],
            zattrs["multiscales"][0]["datasets"][0]["coordinateTransformations"],
            "{version}: level 0 keeps its pixel size and origin"
        );
        assert_eq!(level(to, 0), level(&output, 0), "{version}: the same voxels");
    }
    assert_eq!(zarr_json_attributes(&v05)["ome"]["omero"], omero);
    assert_eq!(attrs(&v04)["omero"], omero);
}

fn results_do_not_depend_on_chunks_memory_or_threads(backend: &str, _gpu: bool) {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(&[21, 70, 90], &[7, 30, 20], DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
    );
    for method in [Method::Mean, Method::Gaussian] {
        let reference = dir.path().join(format!("ref-{method}.ome.zarr"));
        build(&[
            input.to_str().unwrap(),
            reference.to_str().unwrap(),
            "--method",
            method.name(),
            "--chunks",
            "32,64,64",
            "--levels",
            "4",
            "--backend",
            backend,
        ]);
        let variants: [&[&str]; 3] = [
            &["--chunks", "8,16,24", "--threads", "1"],
            &["--chunks", "5,11,13", "--memory", "16MiB", "--threads", "3"],
            &["--chunks", "64,128,128"],
        ];
        for (i, extra) in variants.iter().enumerate() {
            let output = dir.path().join(format!("{method}-{i}.ome.zarr"));
            let mut args = vec![
                input.to_str().unwrap(),
                output.to_str().unwrap(),
                "--method",
                method.name(),
                "--levels",
                "4",
                "--backend",
                backend,
            ];
            args.extend_from_slice(extra);
            build(&args);
            for k in 0..4 {
                assert_eq!(
                    level(&output, k),
                    level(&reference, k),
                    "{method} level {k} with {extra:?}"
                );
            }
        }
    }
}

#[test]
fn each_input_chunk_is_decoded_once_per_pass() {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(&[32, 96, 96], &[8, 16, 16], DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
    );
    for method in Method::ALL {
        let output = dir.path().join(format!("{method}.ome.zarr"));
        let out = build(&[
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--method",
            method.name(),
            "--levels",
            "2",
            "--json",
            "--compression",
            "gzip",
        ]);
        let report = json_stdout(&out);
        // One pass over 4×6×6 input chunks.
        assert_eq!(report["chunks_decoded"], 144, "{method}: {report:#}");
        assert_eq!(report["chunks_redecoded"], 0);
    }
}

/// A 16×64×64 array of `dtype` in 8×32×32 chunks, `name` in `dir`.
fn small_input(dir: &Path, name: &str, dtype: DType) -> PathBuf {
    synthetic_input(
        dir,
        name,
        &spec(&[16, 64, 64], &[8, 32, 32], dtype, ArrayFormat::V2, Codec::Zstd(1)),
    )
}

/// [`build_with`]'s report, and the output's files but its `.zattrs` (which names the
/// backend).
fn build_files(
    dir: &Path,
    input: &Path,
    method: &str,
    backend: &str,
    extra: &[&str],
) -> (Value, BTreeMap<PathBuf, Vec<u8>>) {
    let (report, output) = build_with(dir, input, method, backend, extra);
    (report, common::snapshot_but_attributes(&output))
}

/// Checks that `got` holds the files of `expected`, byte for byte, and no others.
fn assert_same_files(got: &BTreeMap<PathBuf, Vec<u8>>, expected: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: files");
    for (file, bytes) in expected {
        assert!(got.get(file) == Some(bytes), "{what}: {file:?} differs");
    }
}

/// The `--json` report of a build of `input` with `method` on `backend`, into `dir`.
fn build_report(dir: &Path, input: &Path, method: &str, backend: &str) -> serde_json::Value {
    build_with(dir, input, method, backend, &[]).0
}

/// The `--json` report of a build of `input` with `method` on `backend` and the `extra`
/// options, into a new output in `dir`; and that output.
fn build_with(dir: &Path, input: &Path, method: &str, backend: &str, extra: &[&str]) -> (serde_json::Value, PathBuf) {
    let name = input.file_stem().unwrap().to_string_lossy();
    let output = dir.join(format!("{name}-{method}-{backend}{}.ome.zarr", extra.join("")));
    let mut args = vec![
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--method",
        method,
        "--backend",
        backend,
        "--json",
    ];
    args.extend_from_slice(extra);
    (json_stdout(&build(&args)), output)
}

/// The report names the threads of the backend's own that computed the tiles (whose time
/// is the compute stage's): none on the CPU; a GPU's submission threads, except where it
/// leaves the method and dtype to the CPU.
#[test]
fn the_report_counts_the_backends_compute_threads() {
    let dir = TempDir::new().unwrap();
    let compute_threads = |input: &Path, method: &str, backend: &str| {
        build_report(dir.path(), input, method, backend)["compute_threads"]
            .as_u64()
            .expect("the report counts compute threads")
    };
    let words = small_input(dir.path(), "u16.zarr", DType::U16);
    assert_eq!(compute_threads(&words, "mean", "cpu"), 0);
    if common::gpu_or_skip("the_report_counts_the_backends_compute_threads").is_none() {
        return;
    }
    assert!(compute_threads(&words, "mean", "gpu") >= 1);
    let wide = small_input(dir.path(), "u32.zarr", DType::U32);
    assert_eq!(
        compute_threads(&wide, "gaussian", "gpu"),
        0,
        "gaussian on uint32 is computed on the CPU"
    );
}

/// A GPU build reads the tiles it computes straight into the GPU's staging memory (and
/// `--json` counts them); a CPU build, and a GPU build of a method the GPU leaves to the
/// CPU, read host tiles.
#[test]
fn gpu_builds_read_their_tiles_into_staging_memory() {
    let dir = TempDir::new().unwrap();
    let staged = |input: &Path, method: &str, backend: &str| {
        build_report(dir.path(), input, method, backend)["tiles_staged"]
            .as_u64()
            .expect("the report counts staged tiles")
    };
    let words = small_input(dir.path(), "u16.zarr", DType::U16);
    assert_eq!(staged(&words, "mean", "cpu"), 0);
    if common::gpu_or_skip("gpu_builds_read_their_tiles_into_staging_memory").is_none() {
        return;
    }
    for method in ["mean", "nearest", "gaussian"] {
        assert!(staged(&words, method, "gpu") >= 1, "{method}");
    }
    let wide = small_input(dir.path(), "u32.zarr", DType::U32);
    assert_eq!(
        staged(&wide, "gaussian", "gpu"),
        0,
        "gaussian on uint32 is computed on the CPU"
    );
}

/// Where level 0 is encoded again (here in other chunks than the input's), a GPU build
/// still reads its tiles into staging memory, each chunk copied into a host tile for level
/// 0 at the same time, and writes the CPU's pyramid.
#[test]
fn a_gpu_build_that_encodes_level_0_again_stages_its_tiles_and_writes_the_cpus_pyramid() {
    let test = "a_gpu_build_that_encodes_level_0_again_stages_its_tiles_and_writes_the_cpus_pyramid";
    if common::gpu_or_skip(test).is_none() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let input = small_input(dir.path(), "u16.zarr", DType::U16);
    for method in ["mean", "nearest"] {
        let rechunked = ["--chunks", "8,16,16"];
        let (cpu, expected) = build_files(dir.path(), &input, method, "cpu", &rechunked);
        let (gpu, got) = build_files(dir.path(), &input, method, "gpu", &rechunked);
        assert_eq!(cpu["chunks_copied_raw"], 0, "level 0 is encoded again");
        assert_eq!(gpu["chunks_copied_raw"], 0, "level 0 is encoded again");
        assert!(gpu["tiles_staged"].as_u64().unwrap() >= 1, "{method}: {gpu}");
        assert_same_files(&got, &expected, method);
    }
}

/// Tiles of one plane each (a time series chunked one plane per time point and channel)
/// are small: a GPU build computes those waiting for a submission thread together, in one
/// submission, and writes the CPU's pyramid. Whether tiles wait depends on how far the
/// device is behind, so this checks the pyramid and that no tile took more than one
/// submission; how batches form is tested in the engine's stages, and the levels of a
/// batch's tiles in the GPU backend.
#[test]
fn a_gpu_build_of_plane_tiles_writes_the_cpus_pyramid_in_at_most_a_submission_per_tile() {
    let test = "a_gpu_build_of_plane_tiles_writes_the_cpus_pyramid_in_at_most_a_submission_per_tile";
    if common::gpu_or_skip(test).is_none() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "planes.zarr",
        &spec(
            &[6, 2, 1, 64, 64],
            &[1, 1, 1, 32, 32],
            DType::U16,
            ArrayFormat::V2,
            Codec::Zstd(1),
        ),
    );
    for method in ["mean", "gaussian"] {
        let (_, expected) = build_files(dir.path(), &input, method, "cpu", &[]);
        let (gpu, got) = build_files(dir.path(), &input, method, "gpu", &[]);
        let tiles = gpu["tiles_staged"].as_u64().unwrap();
        let submissions = gpu["staged_batches"].as_u64().unwrap();
        assert!(tiles >= 12, "{method}: a tile per plane at least: {gpu}");
        assert!(
            (1..=tiles).contains(&submissions),
            "{method}: {tiles} tiles in {submissions} submissions"
        );
        assert_same_files(&got, &expected, method);
    }
}

/// A GPU whose memory holds only small tiles (here capped with `OME_PYRAMID_GPU_MEMORY_MIB`)
/// gets passes of one level each, whose tiles it holds whole, instead of one pass of every
/// level, whose tiles it would split; the pyramid is the same, byte for byte.
#[test]
fn a_gpu_with_little_memory_gets_shallower_passes_and_the_same_pyramid() {
    if common::gpu_or_skip("a_gpu_with_little_memory_gets_shallower_passes_and_the_same_pyramid").is_none() {
        return;
    }
    let dir = TempDir::new().unwrap();
    // Level-1 chunks of 8×32×32 need 16×64×64 uint16 sources (128 KiB); the two-level tiles
    // 1 MiB, more than a slot's share of 1 MiB (256 or 512 KiB with 4 or 2 slots).
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(
            &[64, 256, 256],
            &[8, 32, 32],
            DType::U16,
            ArrayFormat::V2,
            Codec::Zstd(1),
        ),
    );
    // The levels (first, last) of each pass the build logged.
    let passes_of = |name: &str, limit_mib: &str| -> (PathBuf, Vec<(usize, usize)>) {
        let output = dir.path().join(name);
        let out = common::build_command(&[
            "-v",
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--backend",
            "gpu",
            "--method",
            "mean",
        ])
        .env("OME_PYRAMID_GPU_MEMORY_MIB", limit_mib)
        .output()
        .expect("run the build");
        assert!(out.status.success(), "{}", stderr(&out));
        let passes = stderr(&out)
            .lines()
            .filter_map(|line| line.split_once("→ levels ")?.1.split(',').next())
            .map(|levels| {
                let (first, last) = levels.split_once("..=").expect("a range of levels");
                (first.parse().unwrap(), last.parse().unwrap())
            })
            .collect();
        (output, passes)
    };
    let (whole, deep) = passes_of("whole.ome.zarr", "");
    assert_eq!(deep, [(1, 3)], "the device's own memory holds every level's tiles");
    let (small, shallow) = passes_of("small.ome.zarr", "1");
    assert_eq!(shallow, [(1, 1), (2, 2), (3, 3)], "a pass per level");
    assert_eq!(snapshot(&whole), snapshot(&small));
}

/// `info --gpu` gives each Vulkan adapter's memory, and what the tiles' buffers may fill of
/// it: half, or what `OME_PYRAMID_GPU_MEMORY_MIB` sets.
#[test]
fn info_gpu_reports_the_device_memory_the_tiles_may_fill() {
    if common::gpu_or_skip("info_gpu_reports_the_device_memory_the_tiles_may_fill").is_none() {
        return;
    }
    let adapters = |limit_mib: &str| -> Vec<Value> {
        let out = common::subcommand("info", &["--gpu", "--json"])
            .env("OME_PYRAMID_GPU_MEMORY_MIB", limit_mib)
            .output()
            .expect("run info");
        assert!(out.status.success(), "{}", stderr(&out));
        json_stdout(&out).as_array().expect("a list of adapters").clone()
    };
    let vulkan = |list: Vec<Value>| -> Vec<Value> { list.into_iter().filter(|a| a["backend"] == "Vulkan").collect() };
    let default = vulkan(adapters(""));
    assert!(!default.is_empty(), "CI's lavapipe is a Vulkan adapter");
    for adapter in &default {
        let device = adapter["device_memory"].as_u64().expect("Vulkan reports its memory");
        assert_eq!(adapter["buffer_memory"].as_u64(), Some(device / 2), "{adapter}");
        assert_eq!(adapter["buffer_memory_from_env"], false, "{adapter}");
    }
    for adapter in vulkan(adapters("64")) {
        assert_eq!(adapter["buffer_memory"].as_u64(), Some(64 << 20), "{adapter}");
        assert_eq!(adapter["buffer_memory_from_env"], true, "{adapter}");
    }
    let text = |limit_mib: &str| {
        stdout(
            &common::subcommand("info", &["--gpu"])
                .env("OME_PYRAMID_GPU_MEMORY_MIB", limit_mib)
                .output()
                .unwrap(),
        )
    };
    let default_text = text("");
    assert!(
        default_text.contains("buffers of the tiles on the device: up to"),
        "{default_text}"
    );
    assert!(default_text.contains("half the device's"), "{default_text}");
    // A limit that happens to equal the default is still the variable's, and said so.
    let half_mib = default[0]["buffer_memory"].as_u64().unwrap() >> 20;
    let set_text = text(&half_mib.to_string());
    assert!(set_text.contains("as OME_PYRAMID_GPU_MEMORY_MIB sets"), "{set_text}");
}

#[test]
fn level0_is_copied_without_reencoding_when_codec_and_chunks_fit() {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(&[16, 40, 40], &[8, 16, 16], DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
    );
    // A read-only input (an archive's) still gives chunks the output's owner may replace.
    let chunk_files: Vec<_> = snapshot(&input)
        .into_iter()
        .filter(|(rel, _)| rel.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
        .collect();
    for (rel, _) in &chunk_files {
        let mut permissions = std::fs::metadata(input.join(rel)).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(input.join(rel), permissions).unwrap();
    }
    let output = dir.path().join("out.ome.zarr");
    let out = build(&[input.to_str().unwrap(), output.to_str().unwrap(), "--json"]);
    let report = json_stdout(&out);
    assert_eq!(report["chunks_copied_raw"], 2 * 3 * 3);
    for (rel, bytes) in &chunk_files {
        let copy = output.join("0").join(rel);
        assert_eq!(&std::fs::read(&copy).unwrap(), bytes, "{rel:?} copied as is");
        assert!(
            !std::fs::metadata(&copy).unwrap().permissions().readonly(),
            "{rel:?} copied without the input's read-only mode"
        );
    }
    assert_eq!(chunk_files.len(), 2 * 3 * 3);
    // Different chunks: decoded and re-encoded.
    let output = dir.path().join("rechunked.ome.zarr");
    let out = build(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--json",
        "--chunks",
        "16,16,16",
    ]);
    let report = json_stdout(&out);
    assert_eq!(report["chunks_copied_raw"], 0);
    assert_eq!(level(&output, 0).1, synthetic::read_array(&input, "/").unwrap().1);

    // OME-NGFF 0.5: chunk files copied to v3 keys, and chunks copied into shards.
    let expected = synthetic::read_array(&input, "/").unwrap().1;
    let v05 = dir.path().join("v05.ome.zarr");
    let args = [
        input.to_str().unwrap(),
        v05.to_str().unwrap(),
        "--json",
        "--ngff-version",
        "0.5",
    ];
    let report = json_stdout(&build(&[&args[..], &["--shards", "none"]].concat()));
    assert_eq!(report["chunks_copied_raw"], 2 * 3 * 3);
    assert_eq!(
        std::fs::read(v05.join("0/c/1/2/0")).unwrap(),
        std::fs::read(input.join("1/2/0")).unwrap()
    );
    assert_eq!(level(&v05, 0).1, expected);
    let report = json_stdout(&build(&[&args[..], &["--shards", "16,32,32", "--overwrite"]].concat()));
    assert_eq!(
        report["chunks_copied_raw"],
        2 * 3 * 3,
        "inner chunks copied into shards"
    );
    assert_eq!(level(&v05, 0).1, expected);

    // A sharded input written with the same shards: shard files copied whole.
    let sharded = synthetic_input(
        dir.path(),
        "sharded.zarr",
        &spec(
            &[16, 40, 40],
            &[8, 16, 16],
            DType::U16,
            ArrayFormat::V3Sharded {
                shard_shape: vec![16, 32, 32],
            },
            Codec::Zstd(1),
        ),
    );
    let copy = dir.path().join("shard-copy.ome.zarr");
    let out = build(&[
        sharded.to_str().unwrap(),
        copy.to_str().unwrap(),
        "--json",
        "--ngff-version",
        "0.5",
        "--shards",
        "16,32,32",
    ]);
    let report = json_stdout(&out);
    assert_eq!(report["chunks_copied_raw"], 2 * 2, "four shard files");
    for (rel, bytes) in snapshot(&sharded) {
        if rel.starts_with("c") {
            assert_eq!(
                std::fs::read(copy.join("0").join(&rel)).unwrap(),
                bytes,
                "{rel:?} copied as is"
            );
        }
    }
    assert_eq!(level(&copy, 0).1, synthetic::read_array(&sharded, "/").unwrap().1);
    assert_levels_follow_the_reference(&copy, Method::Mean, false);
}

#[test]
fn demo_and_info_work() {
    let dir = TempDir::new().unwrap();
    let output = dir.path().join("demo.ome.zarr");
    let out = run(&[
        "demo",
        output.to_str().unwrap(),
        "--size",
        "16,64,96",
        "--input-chunks",
        "8,32,32",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Built 3 levels"), "{}", stdout(&out));
    // Only the pyramid is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["demo.ome.zarr".to_string()]);
    assert_valid_ngff(&output);
    let (_, data) = level(&output, 0);
    let values = as_f64(&data);
    let distinct: std::collections::BTreeSet<u64> = values.iter().map(|&v| v as u64).collect();
    assert!(distinct.len() > 1000, "structure plus noise, not a constant");
    let info = run(&["info", output.to_str().unwrap(), "--json"]);
    assert!(info.status.success());
    let info = json_stdout(&info);
    assert_eq!(info["arrays"].as_array().unwrap().len(), 3);
    assert_eq!(info["arrays"][1]["shape"], json!([8, 32, 48]));
    let text = stdout(&run(&["info", output.to_str().unwrap()]));
    assert!(
        text.contains("ome-zarr image") && text.contains("scale [2.0,2.0,2.0]"),
        "{text}"
    );
}

/// `bench` on a user's array: a build row per method with its stages, and the decode-only
/// and encode-only passes over every chunk; the input is left as it was.
#[test]
fn bench_times_builds_and_the_codec_passes_of_an_input() {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(&[16, 64, 64], &[8, 32, 32], DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
    );
    let before = snapshot(&input);
    let input_bytes = 16 * 64 * 64 * 2;
    let workdir = dir.path().join("work");
    let out = run(&[
        "bench",
        input.to_str().unwrap(),
        "--methods",
        "mean",
        "--backends",
        "cpu",
        "--workdir",
        workdir.to_str().unwrap(),
        "--json",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["decode_only"]["chunks"], 8);
    assert_eq!(report["decode_only"]["bytes"], input_bytes);
    assert!(report.get("encode_only").is_none());
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["method"], "mean");
    assert!(rows[0]["seconds"].as_f64().unwrap() > 0.0);
    assert!(rows[0]["levels"].as_u64().unwrap() >= 2, "{}", rows[0]);
    let shares: f64 = rows[0]["stage_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "stage shares sum to one: {}", rows[0]);

    let out = run(&["bench", input.to_str().unwrap(), "--encode-only", "--json", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["encode_only"]["chunks"], 8);
    assert_eq!(report["encode_only"]["bytes"], input_bytes);
    assert!(report["encode_only"]["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(report["rows"], json!([]));
    let text = stdout(&run(&["bench", input.to_str().unwrap(), "--encode-only", "-q"]));
    assert!(
        text.contains("Encode-only pass:") && text.contains("8 chunks"),
        "{text}"
    );
    assert_eq!(snapshot(&input), before, "bench must not touch its input");
}

/// `build --backend gpu` gives exactly the CPU's pyramid for nearest and mean on every dtype
/// the GPU holds, and gaussian within ±1 (integers) or 1e-5 (f32): 2-D to 5-D, odd shapes,
/// anisotropic factors, several levels computed in a row on the device.
#[test]
fn gpu_pyramids_equal_cpu_pyramids() {
    if common::gpu_or_skip("gpu_pyramids_equal_cpu_pyramids").is_none() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let cases: [(&[u64], &[u64], &str); 4] = [
        (&[45, 67], &[16, 16], "y=2,x=3"),
        (&[11, 37, 29], &[4, 8, 8], "z=1,y=2,x=2"),
        (&[2, 9, 20, 23], &[1, 4, 8, 8], "auto"),
        (&[2, 2, 7, 19, 18], &[1, 1, 4, 8, 8], "z=2,y=3,x=2"),
    ];
    let dtypes = [
        DType::U8,
        DType::U16,
        DType::U32,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::F32,
    ];
    for (i, (shape, chunks, factors)) in cases.into_iter().enumerate() {
        for (j, dtype) in dtypes.into_iter().enumerate() {
            if (i + j) % 2 == 1 {
                continue; // every dtype on two shapes keeps the test quick on lavapipe
            }
            let input = synthetic_input(
                dir.path(),
                &format!("in-{i}-{dtype}.zarr"),
                &spec(shape, chunks, dtype, ArrayFormat::V2, Codec::Zstd(1)),
            );
            for method in Method::ALL.into_iter().filter(|m| m.accepts(dtype)) {
                let mut outputs = Vec::new();
                for backend in ["cpu", "gpu"] {
                    let output = dir.path().join(format!("out-{i}-{dtype}-{method}-{backend}.ome.zarr"));
                    let mut args = vec![
                        input.to_str().unwrap(),
                        output.to_str().unwrap(),
                        "--method",
                        method.name(),
                        "--backend",
                        backend,
                        "--factors",
                        factors,
                    ];
                    if factors == "auto" {
                        args.truncate(args.len() - 2);
                    }
                    build(&args);
                    outputs.push(output);
                }
                let levels = multiscale(&outputs[0])["datasets"].as_array().unwrap().len();
                assert!(levels >= 2);
                for k in 0..levels {
                    let (shape_cpu, cpu) = level(&outputs[0], k);
                    let (shape_gpu, gpu) = level(&outputs[1], k);
                    assert_eq!(shape_cpu, shape_gpu);
                    // Integer nearest and mean are bit-identical (SPEC §2); gaussian and
                    // float means agree within the spec's tolerance, which compounds over
                    // levels computed from slightly different data.
                    let tol = match (method, dtype.is_float()) {
                        (Method::Nearest | Method::Mode | Method::Min | Method::Max, _) | (Method::Mean, false) => {
                            common::Tolerance::Exact
                        }
                        (Method::Mean, true) => common::Tolerance::Relative(1e-6 * k as f64),
                        (Method::Gaussian, true) => common::Tolerance::Relative(1e-5 * k as f64),
                        (Method::Gaussian, false) => common::Tolerance::Units(k as f64),
                    };
                    compare(&gpu, &cpu, tol).unwrap_or_else(|e| panic!("{dtype} {shape:?} {method} level {k}: {e}"));
                }
                let backend = multiscale(&outputs[1])["metadata"]["backend"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let on_gpu = !(method == Method::Gaussian && matches!(dtype, DType::U32 | DType::I32));
                assert_eq!(backend.starts_with("gpu"), on_gpu, "{dtype} {method}: {backend}");
            }
        }
    }
}

/// `auto` with a GPU measures both backends on the build's method and dtype and records
/// the rates it compared; lavapipe (let in by the test variable) computes a mean tens of
/// times slower than the CPU kernels, so the CPU is chosen and the output is the CPU's.
#[test]
fn auto_chooses_by_measurement_and_records_why() {
    if common::gpu_or_skip("auto_chooses_by_measurement_and_records_why").is_none() {
        return;
    }
    if ome_pyramid::backend::list_adapters().iter().any(|a| a.used_by_auto) {
        common::skip(
            "auto_chooses_by_measurement_and_records_why",
            "a hardware GPU is here: auto measures it, not lavapipe (backend_choice_is_never_silent covers it)",
        );
        return;
    }
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(&[16, 64, 64], &[8, 32, 32], DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
    );
    // `--backend auto` with lavapipe let in; the backend it recorded, and whether it looked
    // for GPU adapters (its debug log).
    let build_auto = |output: &Path, min_seconds: Option<&str>| -> (String, bool) {
        let mut command = std::process::Command::new(common::binary());
        command
            .args([
                "build",
                input.to_str().unwrap(),
                output.to_str().unwrap(),
                "--backend",
                "auto",
                "-vv",
            ])
            .env("OME_PYRAMID_AUTO_SOFTWARE_GPU", "1");
        if let Some(seconds) = min_seconds {
            command.env("OME_PYRAMID_AUTO_MIN_SECONDS", seconds);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let looked = stderr(&out).contains("looking for GPU adapters");
        (
            multiscale(output)["metadata"]["backend"].as_str().unwrap().to_string(),
            looked,
        )
    };
    let auto = dir.path().join("auto.ome.zarr");
    // So small a build is not worth opening a GPU for (below): time it anyway.
    let (backend, looked) = build_auto(&auto, Some("0"));
    assert!(looked, "a build worth timing a GPU for looks for one");
    assert!(backend.starts_with("cpu"), "{backend}");
    assert!(
        backend.contains("auto: the CPU measured faster for mean on uint16"),
        "{backend}"
    );
    assert!(
        backend.contains("GB/s on the GPU with upload and readback"),
        "{backend}"
    );
    let cpu = dir.path().join("cpu.ome.zarr");
    build(&[input.to_str().unwrap(), cpu.to_str().unwrap(), "--backend", "cpu"]);
    for level in ["0", "1"] {
        assert_eq!(
            common::snapshot(&auto.join(level)),
            common::snapshot(&cpu.join(level)),
            "level {level}"
        );
    }

    // Without the override, the CPU's estimate for so small a build (well under the 0.5 s
    // a GPU is worth) keeps it on the CPU, and no GPU is looked for, opened or timed.
    let small = dir.path().join("small.ome.zarr");
    let (backend, looked) = build_auto(&small, None);
    assert!(
        backend.starts_with("cpu") && backend.contains("auto: the CPU, without timing the GPU"),
        "{backend}"
    );
    assert!(!backend.contains("on the GPU"), "{backend}");
    assert!(
        !backend.contains("GB/s"),
        "the measurement is logged, not recorded: the same build writes the same metadata: {backend}"
    );
    assert!(!looked, "so small a build does not even load the GPU drivers");
    assert_eq!(common::snapshot(&small.join("1")), common::snapshot(&cpu.join("1")));
}

/// `auto` never takes a software adapter on its own; `--backend gpu` without any adapter
/// is a clear error with exit code 1.
#[test]
fn backend_choice_is_never_silent() {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(&[8, 32, 32], &[8, 16, 16], DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
    );
    // `build INPUT OUTPUT --backend BACKEND` with one environment variable set.
    let build_with = |output: &Path, backend: &str, (key, value): (&str, &str)| {
        std::process::Command::new(common::binary())
            .args([
                "build",
                input.to_str().unwrap(),
                output.to_str().unwrap(),
                "--backend",
                backend,
            ])
            .env(key, value)
            .output()
            .unwrap()
    };
    let output = dir.path().join("auto.ome.zarr");
    // So small a build stays on the CPU without looking for a GPU (see
    // auto_chooses_by_measurement_and_records_why): look and time anyway.
    let out = build_with(&output, "auto", ("OME_PYRAMID_AUTO_MIN_SECONDS", "0"));
    assert!(out.status.success(), "{}", stderr(&out));
    let backend = multiscale(&output)["metadata"]["backend"].as_str().unwrap().to_string();
    let hardware = ome_pyramid::backend::list_adapters().iter().any(|a| a.used_by_auto);
    if hardware {
        // Measured against the CPU: either may win, and the reason says which and why.
        assert!(
            backend.contains("auto: the GPU measured faster") || backend.contains("auto: the CPU measured faster"),
            "{backend}"
        );
        assert!(!backend.contains("software"), "{backend}");
    } else {
        assert!(backend.contains("auto: no hardware GPU adapter"), "{backend}");
        assert!(
            stderr(&out).contains("using the CPU backend"),
            "the choice is logged: {}",
            stderr(&out)
        );
    }
    // No adapter at all (only a backend this build lacks is allowed).
    let output = dir.path().join("none.ome.zarr");
    let result = build_with(&output, "gpu", ("WGPU_BACKEND", "gl"));
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    assert!(stderr(&result).contains("no GPU adapter"), "{}", stderr(&result));
    assert!(!output.join(".zattrs").exists());
}

/// OME-NGFF 0.5 output, sharded (with shards small enough that levels hold several) and not,
/// holds exactly the voxels, shapes and multiscales of the 0.4 output, for every method on
/// 2-D to 5-D arrays of several dtypes, and validates against the 0.5 schemas.
fn ngff_05_outputs_equal_04_outputs(backend: &str, _gpu: bool) {
    let dir = TempDir::new().unwrap();
    type Case<'a> = (&'a [u64], &'a [u64], DType, &'a str, Option<&'a str>);
    let cases: [Case; 6] = [
        (&[37, 50], &[16, 16], DType::U16, "mean", None),
        (&[20, 45, 38], &[8, 16, 16], DType::F32, "gaussian", None),
        (&[3, 9, 20, 21], &[1, 4, 8, 8], DType::I16, "nearest", None),
        (&[2, 3, 6, 17, 18], &[1, 1, 4, 8, 8], DType::U8, "mean", Some("tczyx")),
        (&[9, 33, 35], &[4, 8, 8], DType::U64, "mean", None),
        (&[10, 30, 31], &[4, 8, 8], DType::I32, "gaussian", None),
    ];
    for (i, (shape, chunks, dtype, method, axes)) in cases.into_iter().enumerate() {
        let input = synthetic_input(
            dir.path(),
            &format!("in{i}.zarr"),
            &spec(shape, chunks, dtype, ArrayFormat::V2, Codec::Zstd(1)),
        );
        let build_with = |name: &str, extra: &[&str]| {
            let output = dir.path().join(format!("{name}{i}.ome.zarr"));
            let mut args = vec![
                input.to_str().unwrap(),
                output.to_str().unwrap(),
                "--backend",
                backend,
                "--method",
                method,
            ];
            if let Some(axes) = axes {
                args.extend(["--axes", axes]);
            }
            args.extend_from_slice(extra);
            build(&args);
            output
        };
        let v04 = build_with("v04-", &[]);
        let chunk_bytes = chunks.iter().product::<u64>() * dtype.size() as u64;
        let two_chunks = format!("{}B", 2 * chunk_bytes);
        let doubled: Vec<String> = chunks.iter().map(|c| (2 * c).to_string()).collect();
        let variants = [
            build_with("sharded-", &["--ngff-version", "0.5", "--shard-size", &two_chunks]),
            build_with("explicit-", &["--ngff-version", "0.5", "--shards", &doubled.join(",")]),
            build_with("unsharded-", &["--ngff-version", "0.5", "--shards", "none"]),
        ];
        let expected = multiscale(&v04);
        let levels = expected["datasets"].as_array().unwrap().len();
        for output in &variants {
            let what = output.file_name().unwrap().to_string_lossy().into_owned();
            let attributes = zarr_json_attributes(output);
            for strict in [false, true] {
                let errors: Vec<String> = common::ngff_validator_for("0.5", strict)
                    .iter_errors(&attributes)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{what} strict={strict}: {errors:?}\n{attributes:#}");
            }
            assert_eq!(attributes["ome"]["version"], "0.5");
            let mut multiscale = attributes["ome"]["multiscales"][0].clone();
            assert!(
                multiscale.get("version").is_none(),
                "{what}: 0.5 keeps the version under `ome`"
            );
            multiscale["version"] = json!("0.4");
            assert_eq!(multiscale, expected, "{what}: the same multiscales as 0.4");
            for k in 0..levels {
                assert_eq!(level(output, k), level(&v04, k), "{what}: level {k}");
                let array: Value =
                    serde_json::from_slice(&std::fs::read(output.join(format!("{k}/zarr.json"))).unwrap()).unwrap();
                let names: Vec<&str> = expected["axes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["name"].as_str().unwrap())
                    .collect();
                assert_eq!(array["dimension_names"], json!(names), "{what}: level {k}");
            }
            assert!(!output.join(".zattrs").exists() && !output.join(".zgroup").exists());
        }
        // Sharded level 0 holds several chunks per file.
        let (sharded, unsharded) = (&variants[0], &variants[2]);
        assert!(
            files_under(sharded, "0/c/") < files_under(unsharded, "0/c/"),
            "case {i}: {} shard files for {} chunk files",
            files_under(sharded, "0/c/"),
            files_under(unsharded, "0/c/")
        );
    }
}

/// Generates `cpu::name` and `gpu::name` for each end-to-end test. The GPU variant runs on
/// any adapter (lavapipe in CI); under `CI=true` a missing adapter fails the test.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $(
                #[test]
                fn $name() {
                    super::$name("cpu", false);
                }
            )*
        }
        mod gpu {
            $(
                #[test]
                fn $name() {
                    if super::common::gpu_or_skip(concat!("gpu::", stringify!($name))).is_some() {
                        super::$name("gpu", true);
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    v2_uint16_volume_with_odd_shape,
    every_method_on_a_v3_input,
    sharded_v3_input,
    two_four_and_five_dimensional_arrays,
    anisotropic_scale_reduces_xy_first,
    ome_zarr_input_carries_axes_units_transforms_and_omero,
    results_do_not_depend_on_chunks_memory_or_threads,
    ngff_05_outputs_equal_04_outputs,
);

/// `--factors xy` halves y and x only: every level keeps every z plane (for viewers that
/// index all levels with the level-0 z), and the pyramid ends when y and x fit their chunk.
#[test]
fn factors_xy_keeps_every_z_plane() {
    let dir = TempDir::new().unwrap();
    let input = synthetic_input(
        dir.path(),
        "in.zarr",
        &spec(&[12, 70, 90], &[4, 16, 16], DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
    );
    let output = dir.path().join("out.ome.zarr");
    build(&[input.to_str().unwrap(), output.to_str().unwrap(), "--factors", "xy"]);
    let ms = multiscale(&output);
    let shapes: Vec<Vec<u64>> = (0..ms["datasets"].as_array().unwrap().len())
        .map(|k| level(&output, k).0)
        .collect();
    assert_eq!(
        shapes,
        vec![vec![12, 70, 90], vec![12, 35, 45], vec![12, 18, 23], vec![12, 9, 12]]
    );
    assert_eq!(ms["metadata"]["factors"], json!([[1, 2, 2], [1, 2, 2], [1, 2, 2]]));
}

/// An image without display settings gets an `omero` block measured on its top level: per
/// channel a label, a colour (white alone, distinct ones for several), and a window whose
/// start and end are the 0.1% and 99.9% values (nearest rank), so viewers open it visible.
#[test]
fn outputs_without_display_settings_get_measured_windows() {
    let dir = TempDir::new().unwrap();
    for (name, shape, chunks, axes) in [
        ("zyx", &[20u64, 40, 50][..], &[8u64, 16, 16][..], "zyx"),
        ("czyx", &[3, 10, 40, 50], &[1, 8, 16, 16], "czyx"),
    ] {
        let input = synthetic_input(
            dir.path(),
            &format!("{name}.zarr"),
            &spec(shape, chunks, DType::U16, ArrayFormat::V2, Codec::Zstd(1)),
        );
        let output = dir.path().join(format!("{name}.ome.zarr"));
        build(&[input.to_str().unwrap(), output.to_str().unwrap(), "--axes", axes]);
        let attributes = attrs(&output);
        assert_valid_ngff(&output);
        let omero = &attributes["omero"];
        let channels = omero["channels"].as_array().unwrap();
        let top = multiscale(&output)["datasets"].as_array().unwrap().len() - 1;
        let (top_shape, data) = level(&output, top);
        let values = as_f64(&data);
        let count = if axes.starts_with('c') { shape[0] as usize } else { 1 };
        assert_eq!(channels.len(), count, "{omero}");
        let per_channel = values.len() / count;
        if count > 1 {
            assert_eq!(top_shape[0], count as u64, "channels are never reduced");
        }
        for (c, channel) in channels.iter().enumerate() {
            let mut mine: Vec<f64> = values[c * per_channel..(c + 1) * per_channel].to_vec();
            mine.sort_by(f64::total_cmp);
            let rank = |p: f64| mine[(p * (mine.len() - 1) as f64).round() as usize];
            let window = &channel["window"];
            assert_eq!(window["min"], json!(mine[0]), "{name} channel {c}");
            assert_eq!(window["max"], json!(mine[mine.len() - 1]));
            assert_eq!(window["start"], json!(rank(0.001)));
            assert_eq!(window["end"], json!(rank(0.999)));
            assert!(rank(0.999) > rank(0.001), "the window shows contrast");
            assert_eq!(channel["label"], format!("channel_{c}"));
        }
        let colors: Vec<&str> = channels.iter().map(|c| c["color"].as_str().unwrap()).collect();
        if count == 1 {
            assert_eq!(colors, ["FFFFFF"]);
        } else {
            assert_eq!(colors, ["00FF00", "FF00FF", "00FFFF"]);
        }
        let z = shape[shape.len() - 3];
        assert_eq!(omero["rdefs"]["defaultZ"], json!(z / 2));
    }
}

/// `bench --kernels`: a CPU rate for every method and dtype asked for, and on a GPU the
/// upload, kernel, readback and round-trip rates, the kernel clock and the copy ceiling,
/// gaussian's fused passes against fewer fused, and the small tiles' time per tile in
/// submissions of their own and in one.
#[test]
fn bench_kernels_reports_every_phase() {
    let out = run(&[
        "bench",
        "--kernels",
        "--tile",
        "8,64,64",
        "--backends",
        "cpu,gpu",
        "--methods",
        "mean,gaussian",
        "--dtypes",
        "uint8,uint16",
        "--json",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    let rows = report["rows"].as_array().unwrap();
    let cases: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().into(),
                r["dtype"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(cases.len(), 4, "{cases:?}");
    assert!(rows.iter().all(|r| r["cpu_gb_per_s"].as_f64().unwrap() > 0.0));
    if common::gpu_or_skip("bench_kernels_reports_every_phase").is_none() {
        return;
    }
    assert!(report["device"].as_str().unwrap().starts_with("gpu: "), "{report}");
    assert!(["timestamps", "host"].contains(&report["kernel_clock"].as_str().unwrap()));
    assert!(report["copy_gb_per_s"].as_f64().unwrap() > 0.0);
    for row in rows {
        let gpu = &row["gpu"];
        for key in [
            "upload_gb_per_s",
            "kernel_gb_per_s",
            "readback_gb_per_s",
            "end_to_end_gb_per_s",
        ] {
            assert!(gpu[key].as_f64().unwrap() > 0.0, "{key} in {row}");
        }
        assert!(gpu["kernel_share_of_copy"].as_f64().unwrap() > 0.0, "{row}");
        // Gaussian on uint16 fuses z, y and x (and is measured against y–x only and per
        // axis); uint8's tiles fit y–x only.
        let fused = match (row["method"].as_str().unwrap(), row["dtype"].as_str().unwrap()) {
            ("gaussian", "uint16") => Some(("z–y–x", true)),
            ("gaussian", "uint8") => Some(("y–x", false)),
            _ => None,
        };
        assert_eq!(gpu["fused"].as_str(), fused.map(|(f, _)| f), "{row}");
        assert_eq!(
            gpu["per_axis_kernel_gb_per_s"].as_f64().is_some_and(|r| r > 0.0),
            fused.is_some(),
            "{row}"
        );
        let yx = gpu["yx_fused_kernel_gb_per_s"].as_f64().is_some_and(|r| r > 0.0);
        assert_eq!(yx, fused.is_some_and(|(_, yx)| yx), "{row}");
    }
    let small = &report["small_tiles"];
    assert_eq!(small["tiles"], 64, "{small}");
    for key in ["alone_us_per_tile", "batched_us_per_tile"] {
        assert!(small[key].as_f64().unwrap() > 0.0, "{key} in {small}");
    }
}
