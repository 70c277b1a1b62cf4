//! The output, OME-NGFF 0.4 and 0.5 (sharded), opens in the Python tools people use and
//! holds the values SPEC §2 defines, computed independently with numpy/scipy
//! (`scripts/crosscheck.py`). Needs python3 with numpy, scipy, zarr 3 and ome-zarr
//! (`.ci/run` installs them); under `CI=true` their absence is a failure.

mod common;

use std::path::Path;
use std::process::Command;

use ome_pyramid::DType;
use ome_pyramid::synthetic::{self, ArrayFormat, ArraySpec, Codec};
use tempfile::TempDir;

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import numpy, scipy, zarr, ome_zarr; assert int(zarr.__version__.split('.')[0]) >= 3",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but python3 with numpy, scipy, zarr 3 and ome-zarr is missing"
        );
        common::skip(
            "zarr_python_scipy_and_ome_zarr_agree_with_the_output",
            "python3 with numpy, scipy, zarr 3 and ome-zarr not found (pip install -r scripts/requirements.txt)",
        );
    }
    ok
}

fn crosscheck(output: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/crosscheck.py");
    let out = Command::new("python3").arg(script).arg(output).output().unwrap();
    assert!(
        out.status.success(),
        "crosscheck of {} failed:\n{}{}",
        output.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zarr_python_scipy_and_ome_zarr_agree_with_the_output() {
    if !python_ready() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let cases = [
        (DType::U16, &[23u64, 61, 50][..], &[8u64, 16, 16][..], None),
        (DType::F32, &[9, 40, 33], &[4, 16, 16], Some("z=4.0,y=1.0,x=1.0")),
        (DType::I8, &[2, 5, 30, 31], &[1, 2, 8, 8], None),
    ];
    for (i, (dtype, shape, chunks, scale)) in cases.into_iter().enumerate() {
        let input = dir.path().join(format!("in{i}.zarr"));
        let spec = ArraySpec {
            shape: shape.to_vec(),
            chunks: chunks.to_vec(),
            dtype,
            format: if i % 2 == 0 { ArrayFormat::V2 } else { ArrayFormat::V3 },
            codec: Codec::Zstd(1),
        };
        synthetic::write_synthetic(&input, &spec, 11).unwrap();
        let methods = ["nearest", "mean", "gaussian", "mode", "min", "max"];
        // Mode is defined for integer (label) data only.
        for method in methods.into_iter().filter(|&m| m != "mode" || !dtype.is_float()) {
            for (version, extra) in [("0.4", &[][..]), ("0.5", &["--shard-size", "64KiB"][..])] {
                let output = dir.path().join(format!("out{i}-{method}-{version}.ome.zarr"));
                let mut args = vec![
                    "build",
                    input.to_str().unwrap(),
                    output.to_str().unwrap(),
                    "--method",
                    method,
                    "--ngff-version",
                    version,
                    "-q",
                ];
                args.extend_from_slice(extra);
                if let Some(scale) = scale {
                    args.extend(["--scale", scale]);
                }
                let out = common::run(&args);
                assert!(out.status.success(), "{}", common::stderr(&out));
                crosscheck(&output);
            }
        }
    }
}

/// ome-zarr-py's reader (the one napari-ome-zarr uses) finds label images that `labels`
/// added, in 0.4 and 0.5, with the image's levels and their colours
/// (`scripts/read_labels.py`).
#[test]
fn ome_zarr_py_finds_the_label_images() {
    if !python_ready() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("in.zarr");
    common::u16_input(&input, &[2, 12, 70, 66], &[1, 6, 32, 32], 5);
    // Labels without the channel axis, as segmentations of multi-channel images are.
    let seg = dir.path().join("seg.zarr");
    let spec = ArraySpec {
        shape: vec![12, 70, 66],
        chunks: vec![6, 32, 32],
        dtype: DType::U16,
        format: ArrayFormat::V2,
        codec: Codec::Zstd(1),
    };
    synthetic::write_synthetic(&seg, &spec, 8).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_labels.py");
    for version in ["0.4", "0.5"] {
        let image = dir.path().join(format!("img-{version}.ome.zarr"));
        let (img, seg) = (image.to_str().unwrap(), seg.to_str().unwrap());
        let out = common::run(&[
            "build",
            input.to_str().unwrap(),
            img,
            "--axes",
            "czyx",
            "--ngff-version",
            version,
            "-q",
        ]);
        assert!(out.status.success(), "{}", common::stderr(&out));
        let out = common::run(&["labels", img, seg, "--name", "cells", "-q"]);
        assert!(out.status.success(), "{}", common::stderr(&out));
        let out = Command::new("python3")
            .arg(&script)
            .args([img, "cells"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{version}: {}{}",
            common::stdout(&out),
            common::stderr(&out)
        );
        // The check can fail: a name the image does not list is not found.
        let out = Command::new("python3")
            .arg(&script)
            .args([img, "nuclei"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{version}: a missing label image was reported found"
        );
    }
}

/// A skipped test says so where `cargo test`'s reader sees it, though the harness captures
/// the output of passing tests: this test runs itself again in a child process, as a probe
/// that skips, and looks for the line in what the child printed.
#[test]
fn skipped_tests_say_so_on_the_terminal() {
    const PROBE: &str = "OME_PYRAMID_SKIP_PROBE";
    if std::env::var_os(PROBE).is_some() {
        common::skip("probe", "it only shows that skips are visible");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["skipped_tests_say_so_on_the_terminal", "--exact"])
        .env(PROBE, "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = common::stderr(&out);
    assert!(
        stderr.contains("SKIPPED probe: it only shows that skips are visible"),
        "{stderr}"
    );
}
