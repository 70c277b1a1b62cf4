//! Inputs and environments a hostile or careless user makes (issue 16): metadata that
//! points outside the image, invalid transforms and display metadata, volumes and chunks
//! that lie about their size, absurd options and a closed stdout. Each ends in a clear
//! error or a correct result within the memory budget, never a hang, a panic or an output
//! that fails the schema.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

fn write_json(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, value.to_string()).unwrap();
}

/// An OME-Zarr v0.4 group at `path` whose single dataset is `dataset`, with `extra` merged
/// into the multiscale entry and the group attributes.
fn ome_group(path: &Path, dataset: &str, transforms: &Value, root_extra: &Value) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::write(path.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
    let mut attrs = json!({"multiscales": [{"version": "0.4",
        "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": dataset, "coordinateTransformations": transforms}]}]});
    if let (Some(map), Some(extra)) = (attrs.as_object_mut(), root_extra.as_object()) {
        map.extend(extra.clone());
    }
    write_json(&path.join(".zattrs"), &attrs);
}

#[test]
fn info_refuses_dataset_paths_outside_the_image() {
    // Issue 16 item 2: `info` followed `../x.zarr` and absolute dataset paths and printed
    // that array's shape, dtype and codec.
    let dir = TempDir::new().unwrap();
    let secret = dir.path().join("secret.zarr");
    common::u16_input(&secret, &[3, 17, 19], &[3, 17, 19], 1);
    let scale = json!([{"type": "scale", "scale": [1, 1, 1]}]);
    for dataset in ["../secret.zarr", secret.to_str().unwrap(), "s0/../../secret.zarr"] {
        let image = dir.path().join("image.zarr");
        let _ = std::fs::remove_dir_all(&image);
        ome_group(&image, dataset, &scale, &json!({}));
        for json_flag in [false, true] {
            let mut args = vec!["info", image.to_str().unwrap()];
            if json_flag {
                args.push("--json");
            }
            let out = common::run(&args);
            let err = common::stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{dataset}: {err}");
            assert!(
                err.contains("is not a relative path inside the image"),
                "{dataset}: {err}"
            );
            assert!(
                !common::stdout(&out).contains("17"),
                "{dataset}: nothing of the other array is shown"
            );
        }
        let out = common::run(&["build", image.to_str().unwrap(), dir.path().join("o").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        assert!(common::stderr(&out).contains("is not a relative path inside the image"));
    }
}

#[test]
fn an_invalid_omero_block_is_dropped_with_a_warning() {
    // Issue 16 item 6: an invalid `omero` was copied verbatim, so the output failed the
    // schema.
    let dir = TempDir::new().unwrap();
    let image = dir.path().join("image.zarr");
    ome_group(
        &image,
        "s0",
        &json!([{"type": "scale", "scale": [2, 0.5, 0.5]}]),
        &json!({"omero": {"channels": [{"color": 255, "window": {"start": "low", "end": 1, "min": 0, "max": 1}}]}}),
    );
    common::u16_input(&image.join("s0"), &[8, 32, 32], &[8, 16, 16], 1);
    let output = dir.path().join("out.zarr");
    let out = common::run(&["build", image.to_str().unwrap(), output.to_str().unwrap()]);
    let err = common::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("`omero` block is not valid OME-NGFF (channels[0].color must be a string"),
        "{err}"
    );
    let attrs: Value = serde_json::from_slice(&std::fs::read(output.join(".zattrs")).unwrap()).unwrap();
    // Replaced by the display block measured from the data, never copied.
    assert_eq!(attrs["omero"]["channels"][0]["color"], "FFFFFF", "{attrs}");
    assert!(attrs["omero"]["channels"][0]["window"]["start"].is_number());
    for strict in [false, true] {
        let validator = common::ngff_validator(strict);
        assert!(validator.is_valid(&attrs), "strict {strict}: {attrs}");
    }
}

/// Peak resident memory of a running process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_huge_sparse_array_streams_within_the_budget_and_stops_on_ctrl_c() {
    // Issue 16 item 7: an empty 2^40-long array grew past 5 GB in seconds at --memory
    // 256MiB (every task's regions were planned up front) and ignored Ctrl-C.
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("sparse.zarr");
    write_json(
        &input.join(".zarray"),
        &json!({"zarr_format": 2, "shape": [1u64 << 40, 1u64 << 20], "chunks": [16, 65536], "dtype": "|u1",
            "compressor": null, "fill_value": 0, "order": "C", "filters": null, "dimension_separator": "/"}),
    );
    let output = dir.path().join("out.zarr");
    let child = common::build_command(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--memory",
        "256MiB",
        "--backend",
        "cpu",
        "--threads",
        "2",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let peak = peak_rss(child.id());
    assert!(
        child_running(&child),
        "the build still streams through the empty volume"
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = common::wait_at_most(child, Duration::from_secs(30), "build after Ctrl-C");
    let err = common::stderr(&out);
    assert!(peak < 256 << 20, "peak RSS {} MiB at --memory 256MiB", peak >> 20);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the build was interrupted"), "{err}");
    assert!(!output.join(".zattrs").exists());
}

fn child_running(child: &std::process::Child) -> bool {
    Path::new(&format!("/proc/{}", child.id())).exists()
}

/// Writes `bytes` zero bytes through `encoder` in pieces (no large buffer).
fn zeros_into(mut encoder: impl std::io::Write, bytes: usize) {
    let block = vec![0u8; 1 << 20];
    for _ in 0..bytes / block.len() {
        encoder.write_all(&block).unwrap();
    }
}

#[test]
fn decompression_bombs_fail_naming_the_chunk_within_the_budget() {
    // Issue 16 item 8: four 1 MiB gzip chunks that expand to 1 GiB each peaked at 4.1 GB
    // with --memory 64MiB (zstd: 1.85 GB). The build now stops as soon as a chunk passes
    // its declared size; the address space is capped at 1 GiB to prove nothing close to a
    // whole bomb is ever allocated.
    const BOMB: usize = 1 << 30;
    for codec in ["gzip", "zstd"] {
        let dir = TempDir::new().unwrap();
        let input = dir.path().join("bomb.zarr");
        write_json(
            &input.join(".zarray"),
            &json!({"zarr_format": 2, "shape": [4, 64, 64], "chunks": [1, 64, 64], "dtype": "<u2",
                "compressor": {"id": codec, "level": 1}, "fill_value": 0, "order": "C", "filters": null,
                "dimension_separator": "/"}),
        );
        let bomb = dir.path().join("bomb");
        let file = std::fs::File::create(&bomb).unwrap();
        if codec == "gzip" {
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            zeros_into(&mut gz, BOMB);
            gz.finish().unwrap();
        } else {
            let mut z = zstd::stream::write::Encoder::new(file, 1).unwrap();
            zeros_into(&mut z, BOMB);
            z.finish().unwrap();
        }
        for z in 0..4 {
            let path = input.join(format!("{z}/0/0"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::copy(&bomb, &path).unwrap();
        }
        let output = dir.path().join("out.zarr");
        let out = Command::new("sh")
            .args(["-c", "ulimit -v 1048576 && exec \"$0\" \"$@\""])
            .arg(common::binary())
            .args(["build", input.to_str().unwrap(), output.to_str().unwrap()])
            .args(["--memory", "64MiB", "--backend", "cpu", "--threads", "2"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{codec}: {err}");
        assert!(err.contains("cannot read chunk `"), "{codec}: names the chunk: {err}");
        // Refused while decoding, or before, from the file's size alone (1 GiB of zeros is
        // about 1 MB of gzip, more than any encoding of 8 KiB can be).
        assert!(
            err.contains("decompresses to more than the 8192 bytes")
                || err.contains("more than any encoding of the 8192 bytes"),
            "{codec}: {err}"
        );
        assert!(!output.join(".zattrs").exists());
    }
}

#[test]
fn threads_beyond_what_is_useful_are_capped_and_said() {
    // Issue 16 item 10: --threads 100000 spawned threads for minutes and ignored Ctrl-C.
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("in.zarr");
    common::u16_input(&input, &[8, 32, 32], &[8, 16, 16], 1);
    let output = dir.path().join("out.zarr");
    let out = common::run(&[
        "build",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--threads",
        "100000",
        "--backend",
        "cpu",
    ]);
    let err = common::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("--threads 100000 is more than 4 per core"), "{err}");
    assert!(output.join(".zattrs").exists());
}

#[test]
fn synth_refuses_sizes_that_overflow() {
    // Issue 16 item 11: `synth --size 18446744073709551615,2,2` panicked.
    let dir = TempDir::new().unwrap();
    let output = dir.path().join("big.zarr");
    for (size, chunks) in [
        ("18446744073709551615,2,2", "1,2,2"),
        ("4,4,4", "4294967296,4294967296,4"),
    ] {
        let out = common::run(&["synth", output.to_str().unwrap(), "--size", size, "--chunks", chunks]);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{size}: {err}");
        assert!(
            err.contains("more bytes than a 64-bit machine can address"),
            "{size}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!output.exists(), "nothing is created");
    }
}

#[test]
fn a_closed_stdout_ends_quietly() {
    // Issue 16 item 12: `ome-pyramid info x | true` panicked with "failed printing to
    // stdout: Broken pipe".
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("in.zarr");
    common::u16_input(&input, &[8, 32, 32], &[8, 16, 16], 1);
    let output = dir.path().join("out.zarr");
    let commands: [Vec<&str>; 4] = [
        vec!["info", input.to_str().unwrap()],
        vec!["info", input.to_str().unwrap(), "--json"],
        vec!["info", "--gpu"],
        vec!["build", input.to_str().unwrap(), output.to_str().unwrap(), "--json"],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(common::binary())
            .args(&args)
            .env("NO_COLOR", "1")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
    assert!(output.join(".zattrs").exists(), "the build itself completed");
}
