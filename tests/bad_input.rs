//! Every mistake a user can make ends in exit code 2 (or 1 for run-time failures), one
//! `error:` line saying what and where, no panic, no metadata left behind, and an input
//! that is byte-for-byte unchanged.

mod common;

use common::snapshot;

use std::path::Path;

use ome_pyramid::DType;
use ome_pyramid::synthetic::{self, ArrayFormat, ArraySpec, Codec};
use serde_json::json;
use tempfile::TempDir;

fn array(path: &Path, shape: &[u64], dtype: DType) {
    let chunks: Vec<u64> = shape.iter().map(|&n| n.clamp(1, 8)).collect();
    let spec = ArraySpec {
        shape: shape.to_vec(),
        chunks,
        dtype,
        format: ArrayFormat::V2,
        codec: Codec::Zstd(1),
    };
    synthetic::write_synthetic(path, &spec, 3).unwrap();
}

/// A plain v2 `.zarray` with any dtype and shape, for inputs `synth` would refuse to make.
fn raw_zarray(path: &Path, dtype: &str, shape: &[u64]) {
    std::fs::create_dir_all(path).unwrap();
    let meta = json!({"zarr_format": 2, "shape": shape, "chunks": shape.iter().map(|&n| n.max(1)).collect::<Vec<_>>(),
        "dtype": dtype, "compressor": null, "fill_value": 0, "order": "C", "filters": null});
    std::fs::write(path.join(".zarray"), meta.to_string()).unwrap();
}

/// A plain uncompressed v2 uint16 `.zarray` with any shape and chunk shape (no chunks).
fn raw_zarray_chunked(path: &Path, shape: &[u64], chunks: &[u64]) {
    std::fs::create_dir_all(path).unwrap();
    let meta = json!({"zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": "<u2",
        "compressor": null, "fill_value": 0, "order": "C", "filters": null});
    std::fs::write(path.join(".zarray"), meta.to_string()).unwrap();
}

/// An OME-Zarr group whose level 0 is `s0`, with the given multiscales entry.
fn ome_group(path: &Path, multiscale: &serde_json::Value, level0: bool) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::write(path.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
    std::fs::write(path.join(".zattrs"), json!({"multiscales": [multiscale]}).to_string()).unwrap();
    if level0 {
        array(&path.join("s0"), &[4, 16, 16], DType::U8);
    }
}

struct Case {
    name: &'static str,
    /// Arguments after `build`; `{in}` is the good input, `{out}` a fresh output path,
    /// `{dir}` the temporary directory.
    args: Vec<&'static str>,
    /// Makes the input(s) the case needs under `{dir}`.
    setup: fn(&Path),
    code: i32,
    message: &'static str,
}

fn case(name: &'static str, args: &[&'static str], code: i32, message: &'static str) -> Case {
    Case {
        name,
        args: args.to_vec(),
        setup: |_| {},
        code,
        message,
    }
}

fn with_setup(name: &'static str, args: &[&'static str], setup: fn(&Path), message: &'static str) -> Case {
    Case {
        name,
        args: args.to_vec(),
        setup,
        code: 2,
        message,
    }
}

#[test]
fn every_bad_option_input_and_output_is_refused_clearly() {
    let cases = vec![
        // Option values.
        case(
            "unknown method",
            &["{in}", "{out}", "--method", "median"],
            2,
            "unknown method `median`",
        ),
        case(
            "unknown backend",
            &["{in}", "{out}", "--backend", "tpu"],
            2,
            "unknown backend `tpu`",
        ),
        case("zero levels", &["{in}", "{out}", "--levels", "0"], 2, "at least 1"),
        case(
            "too many levels",
            &["{in}", "{out}", "--levels", "12"],
            2,
            "12 levels requested, but only",
        ),
        case(
            "levels not a number",
            &["{in}", "{out}", "--levels", "three"],
            2,
            "invalid value 'three'",
        ),
        case(
            "factor zero",
            &["{in}", "{out}", "--factors", "z=0"],
            2,
            "must be at least 1",
        ),
        case(
            "factor not a number",
            &["{in}", "{out}", "--factors", "x=two"],
            2,
            "`two` is not a valid factor for axis `x`",
        ),
        case(
            "factor without axis",
            &["{in}", "{out}", "--factors", "2,2,2"],
            2,
            "is not of the form axis=value",
        ),
        case(
            "factor on unknown axis",
            &["{in}", "{out}", "--factors", "q=2"],
            2,
            "`q` is not an axis",
        ),
        case(
            "factor on channel axis",
            &["{in}", "{out}", "--axes", "cyx", "--factors", "c=2"],
            2,
            "only space axes",
        ),
        case(
            "chunks wrong length",
            &["{in}", "{out}", "--chunks", "4,4"],
            2,
            "2 values given but the array has 3",
        ),
        case("chunks zero", &["{in}", "{out}", "--chunks", "0,4,4"], 2, "at least 1"),
        case(
            "chunks not numbers",
            &["{in}", "{out}", "--chunks", "a,b,c"],
            2,
            "`a` is not a positive integer",
        ),
        case(
            "axes wrong count",
            &["{in}", "{out}", "--axes", "tczyx"],
            2,
            "5 axes given (tczyx) but the array has 3",
        ),
        case("axes repeated", &["{in}", "{out}", "--axes", "zyz"], 2, "appears twice"),
        case(
            "axes out of order",
            &["{in}", "{out}", "--axes", "zyc"],
            2,
            "ordered time, then channel",
        ),
        case(
            "scale negative",
            &["{in}", "{out}", "--scale", "z=-1"],
            2,
            "must be a positive number",
        ),
        case(
            "scale not a number",
            &["{in}", "{out}", "--scale", "z=wide"],
            2,
            "not a valid pixel size",
        ),
        case(
            "scale unknown axis",
            &["{in}", "{out}", "--scale", "t=2"],
            2,
            "`t` is not an axis",
        ),
        case(
            "unknown unit",
            &["{in}", "{out}", "--unit", "furlong"],
            2,
            "unknown space unit `furlong`",
        ),
        case(
            "memory not a size",
            &["{in}", "{out}", "--memory", "lots"],
            2,
            "not a size",
        ),
        case(
            "memory too small",
            &["{in}", "{out}", "--memory", "1MiB"],
            2,
            "at least 16 MiB",
        ),
        case(
            "zero threads",
            &["{in}", "{out}", "--threads", "0"],
            2,
            "invalid threads: must be at least 1",
        ),
        case(
            "unknown compression",
            &["{in}", "{out}", "--compression", "lzma"],
            2,
            "unknown compression `lzma`",
        ),
        case(
            "level out of range",
            &["{in}", "{out}", "--compression", "zstd", "--clevel", "99"],
            2,
            "outside",
        ),
        case(
            "level without codec",
            &["{in}", "{out}", "--compression", "none", "--clevel", "3"],
            2,
            "no meaning",
        ),
        case(
            "shards with OME-NGFF 0.4",
            &["{in}", "{out}", "--shards", "auto"],
            2,
            "invalid shards: sharding needs --ngff-version 0.5",
        ),
        case(
            "shard size with OME-NGFF 0.4",
            &["{in}", "{out}", "--shard-size", "1GiB"],
            2,
            "sharding needs --ngff-version 0.5",
        ),
        case(
            "shard shape not a multiple of the chunks",
            &["{in}", "{out}", "--ngff-version", "0.5", "--shards", "8,12,16"],
            2,
            "on axis `y` the shard size 12 is not a multiple of the chunk size 8 (nearest valid: 8 or 16)",
        ),
        case(
            "shard shape of the wrong length",
            &["{in}", "{out}", "--ngff-version", "0.5", "--shards", "8,16"],
            2,
            "invalid shards: 2 values given but the array has 3 dimensions",
        ),
        case(
            "shards not a shape",
            &["{in}", "{out}", "--ngff-version", "0.5", "--shards", "big"],
            2,
            "`big` is not a positive integer",
        ),
        case(
            "unknown OME-NGFF version",
            &["{in}", "{out}", "--ngff-version", "0.6"],
            2,
            "unknown OME-NGFF version `0.6` (expected 0.4 or 0.5)",
        ),
        case(
            "resume and overwrite",
            &["{in}", "{out}", "--resume", "--overwrite"],
            2,
            "cannot be used with",
        ),
        case(
            "missing output argument",
            &["{in}"],
            2,
            "required arguments were not provided",
        ),
        with_setup(
            "mode on float data",
            &["{dir}/float.zarr", "{out}", "--method", "mode"],
            |d| array(&d.join("float.zarr"), &[6, 10, 12], DType::F32),
            "invalid method: mode is defined for integer data (label images), and the input is float32",
        ),
        // Inputs.
        case("input missing", &["{dir}/nothing.zarr", "{out}"], 2, "does not exist"),
        with_setup(
            "input is a plain directory",
            &["{dir}/plain", "{out}"],
            |d| std::fs::create_dir(d.join("plain")).unwrap(),
            "is not a Zarr array",
        ),
        with_setup(
            "input is a file",
            &["{dir}/file.txt", "{out}"],
            |d| std::fs::write(d.join("file.txt"), "x").unwrap(),
            "is not a Zarr array",
        ),
        with_setup(
            "malformed .zarray",
            &["{dir}/bad.zarr", "{out}"],
            |d| {
                std::fs::create_dir(d.join("bad.zarr")).unwrap();
                std::fs::write(d.join("bad.zarr/.zarray"), "{ not json").unwrap();
            },
            "invalid metadata in",
        ),
        with_setup(
            "unsupported dtype",
            &["{dir}/bool.zarr", "{out}"],
            |d| raw_zarray(&d.join("bool.zarr"), "|b1", &[4, 8, 8]),
            "holds bool data",
        ),
        with_setup(
            "float16",
            &["{dir}/f16.zarr", "{out}"],
            |d| raw_zarray(&d.join("f16.zarr"), "<f2", &[4, 8, 8]),
            "holds float16 data",
        ),
        with_setup(
            "one dimension",
            &["{dir}/line.zarr", "{out}"],
            |d| array(&d.join("line.zarr"), &[64], DType::U8),
            "1-dimensional array is not supported",
        ),
        with_setup(
            "six dimensions",
            &["{dir}/6d.zarr", "{out}"],
            |d| array(&d.join("6d.zarr"), &[1, 1, 2, 2, 4, 4], DType::U8),
            "6-dimensional array is not supported",
        ),
        with_setup(
            "zero-sized axis",
            &["{dir}/empty.zarr", "{out}"],
            |d| raw_zarray(&d.join("empty.zarr"), "<u2", &[0, 8, 8]),
            "every axis must have at least one element",
        ),
        with_setup(
            "group without multiscales",
            &["{dir}/group.zarr", "{out}"],
            |d| {
                std::fs::create_dir(d.join("group.zarr")).unwrap();
                std::fs::write(d.join("group.zarr/.zgroup"), r#"{"zarr_format": 2}"#).unwrap();
            },
            "without OME `multiscales`",
        ),
        with_setup(
            "OME dataset missing",
            &["{dir}/ome.zarr", "{out}"],
            |d| {
                ome_group(
                    &d.join("ome.zarr"),
                    &json!({"version": "0.4",
            "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "missing", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}),
                    false,
                )
            },
            "names dataset `missing`",
        ),
        with_setup(
            "OME axes disagree with the array",
            &["{dir}/ome.zarr", "{out}"],
            |d| {
                ome_group(
                    &d.join("ome.zarr"),
                    &json!({"version": "0.4",
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}),
                    true,
                )
            },
            "2 axes are listed but dataset `s0` has 3 dimensions",
        ),
        with_setup(
            "OME scale of the wrong length",
            &["{dir}/ome.zarr", "{out}"],
            |d| {
                ome_group(
                    &d.join("ome.zarr"),
                    &json!({"version": "0.4",
            "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}),
                    true,
                )
            },
            "has 2 values but the image has 3 axes",
        ),
        with_setup(
            "OME multiscales malformed",
            &["{dir}/ome.zarr", "{out}"],
            |d| {
                std::fs::create_dir(d.join("ome.zarr")).unwrap();
                std::fs::write(d.join("ome.zarr/.zgroup"), r#"{"zarr_format": 2}"#).unwrap();
                std::fs::write(d.join("ome.zarr/.zattrs"), r#"{"multiscales": {"datasets": 3}}"#).unwrap();
            },
            "malformed OME `multiscales`",
        ),
        with_setup(
            "axes for an OME input",
            &["{dir}/ome.zarr", "{out}", "--axes", "zyx"],
            |d| {
                ome_group(
                    &d.join("ome.zarr"),
                    &json!({"version": "0.4",
            "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}),
                    true,
                )
            },
            "already names its axes",
        ),
        // Issue 16: hostile metadata and paths.
        with_setup(
            "OME dataset path outside the image",
            &["{dir}/ome.zarr", "{out}"],
            |d| {
                array(&d.join("elsewhere.zarr"), &[4, 16, 16], DType::U8);
                ome_group(
                    &d.join("ome.zarr"),
                    &json!({"version": "0.4",
            "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "../elsewhere.zarr", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}),
                    false,
                )
            },
            "is not a relative path inside the image",
        ),
        with_setup(
            "OME translation before scale",
            &["{dir}/ome.zarr", "{out}"],
            |d| {
                ome_group(
                    &d.join("ome.zarr"),
                    &json!({"version": "0.4",
            "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "s0", "coordinateTransformations": [
                {"type": "translation", "translation": [5, 0, 0]}, {"type": "scale", "scale": [2, 1, 1]}]}]}),
                    true,
                )
            },
            "found [translation, scale]; OME-NGFF v0.4 requires [scale] or [scale, translation]",
        ),
        with_setup(
            "OME two scales",
            &["{dir}/ome.zarr", "{out}"],
            |d| {
                ome_group(
                    &d.join("ome.zarr"),
                    &json!({"version": "0.4",
            "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "s0", "coordinateTransformations": [
                {"type": "scale", "scale": [2, 1, 1]}, {"type": "scale", "scale": [4, 1, 1]}]}]}),
                    true,
                )
            },
            "found [scale, scale]",
        ),
        with_setup(
            "OME scale of zero",
            &["{dir}/ome.zarr", "{out}"],
            |d| {
                ome_group(
                    &d.join("ome.zarr"),
                    &json!({"version": "0.4",
            "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [0, 1, 1]}]}]}),
                    true,
                )
            },
            "scale 0 is not a positive finite number",
        ),
        with_setup(
            "chunk far larger than the array",
            &["{dir}/big-chunk.zarr", "{out}", "--memory", "64MiB"],
            |d| raw_zarray_chunked(&d.join("big-chunk.zarr"), &[10, 13, 17], &[1024, 1024, 1024]),
            "a chunk of the input ([1024, 1024, 1024]) holds 2.0 GiB decoded, more than half of the --memory budget of 64.0 MiB",
        ),
        with_setup(
            "chunk of 65536³",
            &["{dir}/huge-chunk.zarr", "{out}"],
            |d| raw_zarray_chunked(&d.join("huge-chunk.zarr"), &[10, 13, 17], &[65536, 65536, 65536]),
            "more than half of the --memory budget",
        ),
        with_setup(
            "shape beyond 64 bits",
            &["{dir}/huge.zarr", "{out}"],
            |d| raw_zarray_chunked(&d.join("huge.zarr"), &[1 << 62, 1 << 62, 1 << 62], &[64, 64, 64]),
            "its shape [4611686018427387904, 4611686018427387904, 4611686018427387904] of uint16 holds more bytes than a 64-bit machine can address",
        ),
        with_setup(
            "shape of u64::MAX",
            &["{dir}/max.zarr", "{out}"],
            |d| raw_zarray_chunked(&d.join("max.zarr"), &[u64::MAX, 4, 4], &[64, 4, 4]),
            "more bytes than a 64-bit machine can address",
        ),
        with_setup(
            "chunk shape beyond 64 bits",
            &["{dir}/chunky.zarr", "{out}"],
            |d| raw_zarray_chunked(&d.join("chunky.zarr"), &[64, 64, 64], &[1 << 21, 1 << 21, 1 << 21]),
            "its chunk shape [2097152, 2097152, 2097152] of uint16 holds more bytes",
        ),
        with_setup(
            "chunk shape of 2^40",
            &["{dir}/chunky.zarr", "{out}"],
            |d| raw_zarray_chunked(&d.join("chunky.zarr"), &[64, 64, 64], &[1 << 40, 1 << 40, 1 << 40]),
            "holds more bytes than a 64-bit machine can address",
        ),
        with_setup(
            "FIFO as .zarray",
            &["{dir}/fifo.zarr", "{out}"],
            |d| {
                std::fs::create_dir(d.join("fifo.zarr")).unwrap();
                common::make_fifo(&d.join("fifo.zarr/.zarray"));
            },
            "it is not a regular file",
        ),
        with_setup(
            "input is a symbolic link loop",
            &["{dir}/loop.zarr", "{out}"],
            |d| std::os::unix::fs::symlink(d.join("loop.zarr"), d.join("loop.zarr")).unwrap(),
            "cannot access the input",
        ),
        with_setup(
            "output chunks beyond the budget",
            &[
                "{dir}/sparse.zarr",
                "{out}",
                "--chunks",
                "1024,1024,1024",
                "--memory",
                "64MiB",
            ],
            |d| raw_zarray_chunked(&d.join("sparse.zarr"), &[1024, 1024, 1024], &[64, 64, 64]),
            "invalid chunks: one output chunk ([1024, 1024, 1024]) holds 2.0 GiB decoded",
        ),
        // Outputs.
        with_setup(
            "output exists",
            &["{in}", "{dir}/taken"],
            |d| std::fs::create_dir(d.join("taken")).unwrap(),
            "already exists",
        ),
        with_setup(
            "overwrite a non-Zarr directory",
            &["{in}", "{dir}/notes", "--overwrite"],
            |d| {
                std::fs::create_dir(d.join("notes")).unwrap();
                std::fs::write(d.join("notes/keep.txt"), "keep").unwrap();
            },
            "refusing to replace",
        ),
        with_setup(
            "overwrite a directory holding a .zarray and user files",
            &["{in}", "{dir}/ud", "--overwrite"],
            |d| {
                std::fs::create_dir_all(d.join("ud/docs")).unwrap();
                std::fs::write(d.join("ud/precious.txt"), "t").unwrap();
                std::fs::write(d.join("ud/.zarray"), "{}").unwrap();
            },
            "ud/docs` is not part of a Zarr store",
        ),
        with_setup(
            "overwrite a Zarr array with a stray file among its chunks",
            &["{in}", "{dir}/arr.zarr", "--overwrite"],
            |d| {
                array(&d.join("arr.zarr"), &[4, 16, 16], DType::U8);
                std::fs::write(d.join("arr.zarr/0/notes.txt"), "mine").unwrap();
            },
            "arr.zarr/0/notes.txt` is not part of a Zarr store",
        ),
        with_setup(
            "overwrite a Zarr store another tool wrote",
            &["{in}", "{dir}/raw.zarr", "--overwrite"],
            |d| array(&d.join("raw.zarr"), &[4, 16, 16], DType::U8),
            "it is a Zarr store that ome-pyramid did not write",
        ),
        case("output equals input", &["{in}", "{in}"], 2, "is the same path as"),
        case("output inside input", &["{in}", "{in}/pyramid"], 2, "lies inside"),
        case(
            "output contains input (overwrite)",
            &["{in}", "{dir}", "--overwrite"],
            2,
            "contains",
        ),
        with_setup(
            "output cannot be created",
            &["{in}", "{dir}/file.txt/out"],
            |d| std::fs::write(d.join("file.txt"), "x").unwrap(),
            "cannot create the output",
        ),
        with_setup(
            "resume with nothing to resume",
            &["{in}", "{dir}/other", "--resume"],
            |d| {
                std::fs::create_dir(d.join("other")).unwrap();
                std::fs::write(d.join("other/.zgroup"), "{}").unwrap();
            },
            "holds no record of an interrupted",
        ),
    ];
    assert!(cases.len() >= 70, "{} cases", cases.len());
    for case in cases {
        let dir = TempDir::new().unwrap();
        let good = dir.path().join("in.zarr");
        array(&good, &[8, 16, 16], DType::U16);
        (case.setup)(dir.path());
        let out = dir.path().join("out.zarr");
        let subst = |a: &str| {
            a.replace("{in}", good.to_str().unwrap())
                .replace("{out}", out.to_str().unwrap())
                .replace("{dir}", dir.path().to_str().unwrap())
        };
        let mut args = vec!["build".to_string()];
        args.extend(case.args.iter().map(|a| subst(a)));
        let before = snapshot(dir.path());
        let result = std::process::Command::new(common::binary())
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = common::stderr(&result);
        assert_eq!(result.status.code(), Some(case.code), "{}: {err}", case.name);
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{}: one error line, got: {err}", case.name);
        assert!(
            err.contains(case.message),
            "{}: expected `{}` in: {err}",
            case.name,
            case.message
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{}: {err}",
            case.name
        );
        // Nothing the user had is modified, and no pyramid metadata appears anywhere.
        let after = snapshot(dir.path());
        for (path, bytes) in &before {
            assert_eq!(
                after.get(path),
                Some(bytes),
                "{}: {} changed",
                case.name,
                path.display()
            );
        }
        assert!(
            !after.keys().any(|p| p.ends_with(".zattrs") && !before.contains_key(p)),
            "{}: metadata written",
            case.name
        );
    }
}
