//! TIFF input (issue 12). The fixtures in `tests/data/tiff` were written by tifffile
//! (`make_fixtures.py`), and `manifest.json` says what each holds: shape, axes, scale,
//! units, channels and its pixels as raw bytes (tifffile's own reading). Every layout and
//! codec reads back exactly (JPEG within the decoders' rounding); every bad file gets one
//! clear error; builds carry level 0 and the metadata into the pyramid.

mod common;

use std::path::{Path, PathBuf};

use ome_pyramid::store::{ChunkSource, open_input, open_source, open_tiff};
use serde_json::Value;

use common::{json_stdout, multiscale, read_whole, run, stderr, stdout};

fn fixtures() -> PathBuf {
    common::data_dir().join("tiff")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    serde_json::from_str::<Vec<Value>>(&text).unwrap()
}

fn expected_pixels(entry: &Value) -> Vec<u8> {
    std::fs::read(fixtures().join(entry["pixels"].as_str().unwrap())).unwrap()
}

/// Pixels equal, or for JPEG within `tolerance` (8-bit data only).
fn assert_pixels(what: &str, got: &[u8], expected: &[u8], tolerance: u64) {
    assert_eq!(got.len(), expected.len(), "{what}: byte count");
    if tolerance == 0 {
        assert!(got == expected, "{what}: the pixels differ from the file's");
        return;
    }
    let worst = got
        .iter()
        .zip(expected)
        .map(|(&a, &b)| u64::from(a.abs_diff(b)))
        .max()
        .unwrap();
    assert!(worst <= tolerance, "{what}: a pixel differs by {worst} (> {tolerance})");
}

fn axes_of(source: &dyn ome_pyramid::store::Source) -> String {
    source.image().axes.iter().map(|a| a.name.as_str()).collect()
}

#[test]
fn every_layout_codec_and_kind_reads_back_the_files_pixels_and_metadata() {
    let entries: Vec<Value> = manifest().into_iter().filter(|e| e.get("error").is_none()).collect();
    assert!(
        entries.len() >= 35,
        "the manifest lists {} readable fixtures",
        entries.len()
    );
    for entry in &entries {
        let input = fixtures().join(entry["input"].as_str().unwrap());
        let what = entry["input"].as_str().unwrap();
        let series = usize::try_from(entry["series"].as_u64().unwrap_or(0)).unwrap();
        let source = open_input(&input, Some(series), None).unwrap_or_else(|e| panic!("{what}: {e}"));
        let shape: Vec<u64> = serde_json::from_value(entry["shape"].clone()).unwrap();
        assert_eq!(source.shape(), shape.as_slice(), "{what}: shape");
        assert_eq!(
            serde_json::to_value(source.dtype()).unwrap(),
            entry["dtype"],
            "{what}: dtype"
        );
        assert_eq!(
            axes_of(source.as_ref()),
            entry["axes"].as_str().unwrap(),
            "{what}: axes"
        );
        let image = source.image();
        match entry["scale"].as_array() {
            None => assert_eq!(image.scale, None, "{what}: no physical size"),
            Some(scale) => {
                let want: Vec<f64> = scale.iter().map(|s| s.as_f64().unwrap()).collect();
                let got = image.scale.clone().unwrap_or_else(|| panic!("{what}: no scale"));
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-9 * w.abs(),
                        "{what}: scale {got:?}, expected {want:?}"
                    );
                }
                let units: Vec<Option<String>> = serde_json::from_value(entry["units"].clone()).unwrap();
                let got: Vec<Option<String>> = image.axes.iter().map(|a| a.unit.clone()).collect();
                assert_eq!(got, units, "{what}: units");
            }
        }
        if let Some(channels) = entry["channels"].as_array() {
            let labels = image
                .channel_labels
                .clone()
                .unwrap_or_else(|| panic!("{what}: no channels"));
            for (got, want) in labels.iter().zip(channels) {
                assert_eq!(got.0.as_deref(), want["label"].as_str(), "{what}: channel name");
                assert_eq!(got.1.as_deref(), want["color"].as_str(), "{what}: channel colour");
            }
        }
        let tolerance = entry["tolerance"].as_u64().unwrap();
        assert_pixels(what, &read_whole(source.as_ref()), &expected_pixels(entry), tolerance);
    }
}

#[test]
fn bad_tiffs_get_one_clear_error_each() {
    let bad: Vec<Value> = manifest().into_iter().filter(|e| e.get("error").is_some()).collect();
    assert!(bad.len() >= 8, "the manifest lists {} bad fixtures", bad.len());
    for entry in &bad {
        let what = entry["input"].as_str().unwrap();
        let input = fixtures().join(what);
        let error = match open_input(&input, None, None) {
            Ok(_) => panic!("{what} opened; {}", entry["why"]),
            Err(e) => e,
        };
        assert!(error.is_invalid_input(), "{what}: {error} is not an input error");
        let message = error.to_string().to_lowercase();
        let want = entry["error"].as_str().unwrap().to_lowercase();
        assert!(message.contains(&want), "{what}: `{message}` does not mention `{want}`");
    }
}

/// Builds `input` with `args` into a fresh folder on the CPU; returns it.
fn build(dir: &Path, input: &Path, args: &[&str]) -> PathBuf {
    build_on(dir, input, "cpu", args).0
}

/// Builds `input` with `args` and `--json` into a fresh folder on `backend`; returns it and
/// the report.
fn build_on(dir: &Path, input: &Path, backend: &str, args: &[&str]) -> (PathBuf, Value) {
    let output = dir.join(format!("out-{backend}.ome.zarr"));
    let mut all = vec![
        "build",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--backend",
        backend,
        "--json",
    ];
    all.extend_from_slice(args);
    let run = run(&all);
    assert!(run.status.success(), "build {input:?} {args:?}: {}", stderr(&run));
    (output, json_stdout(&run))
}

/// Asserts that level 0 of pyramid `output` holds the pixels of manifest entry (`input`,
/// `series`).
fn assert_level0(output: &Path, input: &str, series: Option<u64>) {
    let level0 = open_source(&output.join("0")).unwrap();
    assert!(
        read_whole(&level0) == expected_pixels(&entry(input, series)),
        "{input}: level 0 is not the file's pixels"
    );
}

fn entry(input: &str, series: Option<u64>) -> Value {
    manifest()
        .into_iter()
        .find(|e| e["input"] == input && e["series"].as_u64() == series)
        .unwrap_or_else(|| panic!("{input} is in the manifest"))
}

#[test]
fn an_ome_tiff_builds_a_pyramid_with_its_axes_scales_units_and_channel_names() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("ome_tczyx.ome.tif");
    let output = build(dir.path(), &input, &["--ngff-version", "0.5"]);
    assert_level0(&output, "ome_tczyx.ome.tif", None);
    let fixture = entry("ome_tczyx.ome.tif", None);
    let ms = multiscale(&output);
    let axes: Vec<(&str, Option<&str>)> = ms["axes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["unit"].as_str()))
        .collect();
    assert_eq!(
        axes,
        [
            ("t", Some("second")),
            ("c", None),
            ("z", Some("micrometer")),
            ("y", Some("micrometer")),
            ("x", Some("micrometer"))
        ]
    );
    let scale = &ms["datasets"][0]["coordinateTransformations"][0]["scale"];
    assert_eq!(scale, &fixture["scale"]);
    let attributes = common::group_attributes(&output);
    let omero = attributes.get("ome").map_or(&attributes, |ome| ome)["omero"].clone();
    let names: Vec<&str> = omero["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DAPI", "GFP", "RFP"]);
    assert_eq!(omero["channels"][2]["color"], "FF0000");
}

#[test]
fn imagej_slices_rgb_and_bigtiff_tiles_build_with_level_0_equal_to_the_file() {
    let cases = [
        ("imagej_hyperstack.tif", vec![]),
        ("slices/z*.tif", vec![]),
        ("slices", vec!["--chunks", "4,8,8"]),
        ("rgb_planar_tile.tif", vec![]),
        (
            "stack_zstd_tile_bigtiff.tif",
            vec!["--ngff-version", "0.5", "--memory", "16MiB"],
        ),
        ("stack_packbits_strip.tif", vec!["--chunks", "1,16,16"]),
    ];
    for (name, args) in cases {
        let dir = tempfile::tempdir().unwrap();
        let output = build(dir.path(), &fixtures().join(name), &args);
        assert_level0(&output, name, None);
        let names: String = multiscale(&output)["axes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, entry(name, None)["axes"].as_str().unwrap(), "{name}: axes");
    }
}

/// A TIFF's level 0 is encoded from its decoded strips or tiles. A GPU build still reads
/// its tiles into staging memory (and into a host tile for level 0 at the same time) and
/// writes the CPU's pyramid.
#[test]
fn a_gpu_build_of_a_tiff_stages_its_tiles_and_writes_the_cpus_pyramid() {
    if common::gpu_or_skip("a_gpu_build_of_a_tiff_stages_its_tiles_and_writes_the_cpus_pyramid").is_none() {
        return;
    }
    for name in ["ome_tczyx.ome.tif", "stack_zstd_tile_bigtiff.tif"] {
        let dir = tempfile::tempdir().unwrap();
        let input = fixtures().join(name);
        let (cpu, _) = build_on(dir.path(), &input, "cpu", &["--levels", "2"]);
        let (gpu, report) = build_on(dir.path(), &input, "gpu", &["--levels", "2"]);
        assert!(report["tiles_staged"].as_u64().unwrap() >= 1, "{name}: {report}");
        assert_level0(&gpu, name, None);
        let (expected, got) = (
            common::snapshot_but_attributes(&cpu),
            common::snapshot_but_attributes(&gpu),
        );
        assert!(got == expected, "{name}: the GPU's pyramid is not the CPU's");
    }
}

#[test]
fn a_series_is_chosen_with_series_and_a_plain_stack_takes_axes() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("ome_two_series.ome.tif");
    let output = build(dir.path(), &input, &["--series", "1"]);
    assert_level0(&output, "ome_two_series.ome.tif", Some(1));

    let missing = run(&[
        "build",
        input.to_str().unwrap(),
        dir.path().join("no.zarr").to_str().unwrap(),
        "--series",
        "2",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("2 series (0 to 1)"), "{}", stderr(&missing));
    assert!(!dir.path().join("no.zarr").exists());

    let dir = tempfile::tempdir().unwrap();
    let output = build(dir.path(), &fixtures().join("res_cm.tif"), &["--axes", "yx"]);
    let ms = multiscale(&output);
    assert_eq!(
        ms["axes"][1]["unit"], "micrometer",
        "the resolution's unit stays with x"
    );
    assert_eq!(
        ms["datasets"][0]["coordinateTransformations"][0]["scale"],
        serde_json::json!([0.5, 0.5])
    );
    let dir = tempfile::tempdir().unwrap();
    let output = build(dir.path(), &fixtures().join("stack_lzw_strip.tif"), &["--axes", "tyx"]);
    assert_eq!(multiscale(&output)["axes"][0]["name"], "t");
}

#[test]
fn a_tiff_segmentation_becomes_a_label_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path(), &fixtures().join("stack_none_strip.tif"), &[]);
    let seg = fixtures().join("stack_lzw_strip.tif");
    let run = run(&[
        "labels",
        image.to_str().unwrap(),
        seg.to_str().unwrap(),
        "--name",
        "cells",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_level0(&image.join("labels/cells"), "stack_lzw_strip.tif", None);
}

#[test]
fn info_shows_what_build_will_make_and_bad_files_exit_2_with_one_line() {
    let input = fixtures().join("ome_two_series.ome.tif");
    let text = run(&["info", input.to_str().unwrap()]);
    assert!(text.status.success(), "{}", stderr(&text));
    let out = stdout(&text);
    for want in ["OME-TIFF", "series 0", "series 1", "zyx", "uint8"] {
        assert!(out.contains(want), "info lacks `{want}`:\n{out}");
    }
    let json = run(&[
        "info",
        fixtures().join("stack_zstd_tile_bigtiff.tif").to_str().unwrap(),
        "--json",
    ]);
    assert!(json.status.success(), "{}", stderr(&json));
    let info: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(info["bigtiff"], true);
    assert_eq!(info["series"][0]["compression"], "zstd");
    assert_eq!(info["series"][0]["layout"], "48×32 tiles");
    assert_eq!(info["series"][0]["shape"], serde_json::json!([3, 40, 70]));

    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "cut_in_half.tif",
        "lzma.tif",
        "bilevel.tif",
        "zero_length.tif",
        "slices_bad",
    ] {
        let output = dir.path().join(format!("{bad}.zarr"));
        let run = run(&[
            "build",
            fixtures().join(bad).to_str().unwrap(),
            output.to_str().unwrap(),
        ]);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{bad}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{bad}: one line, got {err}");
        assert!(
            lines[0].starts_with("error: ") && !err.contains("panicked"),
            "{bad}: {err}"
        );
        assert!(!output.exists(), "{bad}: nothing is written");
        let info = run_info(&fixtures().join(bad));
        assert_eq!(info.status.code(), Some(2), "info {bad}: {}", stderr(&info));
    }
}

fn run_info(path: &Path) -> std::process::Output {
    run(&["info", path.to_str().unwrap()])
}

#[test]
fn each_strip_run_and_tile_is_decoded_once() {
    for (name, args, reads) in [
        ("stack_lzw_strip.tif", vec!["--chunks", "1,16,16"], 3),
        ("stack_lzw_tile_bigtiff.tif", vec![], 12),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.zarr");
        let mut all = vec!["build", "--json", "--backend", "cpu"];
        let input = fixtures().join(name);
        all.extend([input.to_str().unwrap(), output.to_str().unwrap()]);
        all.extend(args);
        let run = run(&all);
        assert!(run.status.success(), "{name}: {}", stderr(&run));
        let report: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(report["chunks_decoded"], reads, "{name}: {report}");
        assert_eq!(report["chunks_redecoded"], 0, "{name}: {report}");
    }
}

/// `bench TIFF --decode-only`: the decode floor of a TIFF input, measured by the reader the
/// builds use.
#[test]
fn bench_measures_the_decode_floor_of_a_tiff() {
    let input = fixtures().join("stack_lzw_tile_bigtiff.tif");
    let out = run(&["bench", input.to_str().unwrap(), "--decode-only", "--json", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["decode_only"]["chunks"], 12, "3 pages of 2×2 tiles: {report}");
    // Tiles of 32×48 decode whole, edge tiles with their padding.
    assert_eq!(report["decode_only"]["bytes"], 12 * 32 * 48 * 2);
    assert_eq!(report["codec"], "TIFF, lzw", "{report}");
    assert_eq!(report["rows"], serde_json::json!([]));
}

#[test]
fn a_tiff_source_reads_strips_in_runs_and_never_whole_planes_of_tiles() {
    // Strips of 16 rows are read in runs (up to 256 rows); tiles one at a time.
    let strips = open_tiff(&fixtures().join("stack_lzw_strip.tif"), 0).unwrap();
    assert_eq!(
        strips.chunk_shape(),
        [1, 48, 70],
        "three strips of 16 rows are one read"
    );
    let tiles = open_tiff(&fixtures().join("stack_lzw_tile_bigtiff.tif"), 0).unwrap();
    assert_eq!(tiles.chunk_shape(), [1, 32, 48]);
    assert_eq!(tiles.grid_shape(), [3, 2, 2]);
    let planar = open_tiff(&fixtures().join("rgb_planar_tile.tif"), 0).unwrap();
    assert_eq!(planar.chunk_shape()[0], 1, "planar samples are read one at a time");
}
