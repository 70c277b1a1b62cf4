//! `ome-pyramid labels IMAGE SEG --name NAME` (issue 11, item 3): the label pyramid repeats
//! the image's levels, its metadata is valid against the OME-NGFF label schemas, the image's
//! own files never change, a killed run lists nothing and resumes byte-identically, and
//! mistakes are refused before anything is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    group_attributes, json_stdout, multiscale, ngff_schema_validator, read_json, reference_step, run, snapshot, stderr,
    stdout,
};
use ome_pyramid::synthetic::{self, ArrayFormat, ArraySpec, Codec, hash64};
use ome_pyramid::{DType, Method, TileData};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A segmentation of `shape` (z, y, x last): blocks of a few label values with 0 as
/// background, so windows hold ties and several labels, as real segmentations do.
fn segmentation(path: &Path, shape: &[u64], chunks: &[u64], dtype: DType) {
    let n = shape.len();
    let count: u64 = shape.iter().product();
    let values: Vec<u64> = (0..count)
        .map(|i| {
            let (x, y, z) = (
                i % shape[n - 1],
                (i / shape[n - 1]) % shape[n - 2],
                i / (shape[n - 1] * shape[n - 2]),
            );
            let cell = hash64((z / 3) * 1_000_003 + (y / 5) * 1_009 + x / 4);
            if cell.is_multiple_of(4) { 0 } else { cell % 9 }
        })
        .collect();
    let data = match dtype {
        DType::U8 => TileData::U8(values.iter().map(|&v| v as u8).collect()),
        DType::U32 => TileData::U32(values.iter().map(|&v| v as u32).collect()),
        DType::I16 => TileData::I16(values.iter().map(|&v| v as i16 - 1).collect()),
        other => panic!("no segmentation of {other} in these tests"),
    };
    let spec = ArraySpec {
        shape: shape.to_vec(),
        chunks: chunks.to_vec(),
        dtype,
        format: ArrayFormat::V2,
        codec: Codec::Zstd(1),
    };
    synthetic::write_array(path, &spec, &data).unwrap();
}

/// An OME-Zarr image of `shape` built by `ome-pyramid build` with `extra` options.
fn image(dir: &Path, name: &str, shape: &[u64], chunks: &[u64], extra: &[&str]) -> PathBuf {
    let input = dir.join(format!("{name}-input.zarr"));
    common::u16_input(&input, shape, chunks, 3);
    let output = dir.join(name);
    let mut args = vec!["build", input.to_str().unwrap(), output.to_str().unwrap(), "-q"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    output
}

fn labels(args: &[&str]) -> std::process::Output {
    let mut all = vec!["labels"];
    all.extend_from_slice(args);
    run(&all)
}

/// Every file of `image` except those of its `labels` group.
fn image_files(image: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = snapshot(image);
    files.retain(|path, _| !path.starts_with("labels"));
    files
}

/// Each label level has the image's shape (without `dropped` axes), the image's scale, and
/// equals `method` applied to the label level below.
fn assert_label_follows_the_image(image: &Path, label: &Path, method: Method, dropped: Option<usize>) {
    let keep = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(a, _)| Some(*a) != dropped)
            .map(|(_, x)| x.clone())
            .collect()
    };
    let (image_ms, label_ms) = (multiscale(image), multiscale(label));
    let image_sets = image_ms["datasets"].as_array().unwrap();
    let label_sets = label_ms["datasets"].as_array().unwrap();
    assert_eq!(label_sets.len(), image_sets.len(), "as many levels as the image");
    assert_eq!(keep(&image_ms["axes"]), *label_ms["axes"].as_array().unwrap());
    let factors: Vec<Vec<u32>> = serde_json::from_value(label_ms["metadata"]["factors"].clone()).unwrap();
    let mut below: Option<(Vec<u64>, TileData)> = None;
    for (k, (image_set, label_set)) in image_sets.iter().zip(label_sets).enumerate() {
        let image_scale = keep(&image_set["coordinateTransformations"][0]["scale"]);
        assert_eq!(
            label_set["coordinateTransformations"][0]["scale"].as_array().unwrap(),
            &image_scale,
            "scale of level {k}"
        );
        let image_path = image_set["path"].as_str().unwrap();
        let (image_shape, _) = synthetic::read_array(image, &format!("/{image_path}")).unwrap();
        let (shape, data) = synthetic::read_array(label, &format!("/{k}")).unwrap();
        let expected_shape: Vec<u64> = image_shape
            .iter()
            .enumerate()
            .filter(|(a, _)| Some(*a) != dropped)
            .map(|(_, &n)| n)
            .collect();
        assert_eq!(shape, expected_shape, "shape of label level {k}");
        if let Some((below_shape, below_data)) = &below {
            let expected = reference_step(method, below_data, below_shape, &factors[k - 1]);
            assert!(expected == data, "label level {k} is {method} of level {}", k - 1);
        }
        below = Some((shape, data));
    }
}

fn assert_valid(version: &str, schema: &str, attributes: &Value) {
    let validator = ngff_schema_validator(version, schema);
    let errors: Vec<String> = validator.iter_errors(attributes).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{version} {schema}: {errors:?}");
}

#[test]
fn a_label_pyramid_repeats_the_image_levels_and_leaves_the_image_untouched() {
    let dir = TempDir::new().unwrap();
    // Two channels, anisotropic: the image's auto factors differ between steps.
    let image = image(
        dir.path(),
        "img.ome.zarr",
        &[2, 20, 70, 66],
        &[1, 8, 32, 32],
        &["--axes", "czyx", "--scale", "z=2,y=0.5,x=0.5", "--unit", "um"],
    );
    let seg = dir.path().join("seg.zarr");
    segmentation(&seg, &[20, 70, 66], &[8, 32, 32], DType::U32);
    let colors = json!([{"label-value": 0, "rgba": [0, 0, 0, 0]}, {"label-value": 3, "rgba": [255, 0, 0, 255]}]);
    let properties = json!([{"label-value": 3, "class": "nucleus", "area": 12.5}]);
    std::fs::write(dir.path().join("colors.json"), colors.to_string()).unwrap();
    std::fs::write(dir.path().join("properties.json"), properties.to_string()).unwrap();
    let before = image_files(&image);
    let (img, seg_arg) = (image.to_str().unwrap(), seg.to_str().unwrap());
    let colors_arg = dir.path().join("colors.json");
    let properties_arg = dir.path().join("properties.json");
    let out = labels(&[
        img,
        seg_arg,
        "--name",
        "cells",
        "--colors",
        colors_arg.to_str().unwrap(),
        "--properties",
        properties_arg.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Listed `cells`"), "{}", stdout(&out));
    assert_eq!(before, image_files(&image), "the image's own files are byte-identical");

    let label = image.join("labels/cells");
    assert_label_follows_the_image(&image, &label, Method::Mode, Some(0));
    let attributes = group_attributes(&label);
    for schema in ["label.schema", "strict_label.schema", "image.schema"] {
        assert_valid("0.4", schema, &attributes);
    }
    let block = &attributes["image-label"];
    assert_eq!(block["version"], "0.4");
    assert_eq!(block["source"]["image"], "../../");
    assert_eq!(block["colors"], colors);
    assert_eq!(block["properties"], properties);
    assert!(
        attributes.get("omero").is_none(),
        "label images carry no display windows"
    );
    assert_eq!(read_json(&image.join("labels/.zattrs")), json!({"labels": ["cells"]}));
    assert_eq!(read_json(&image.join("labels/.zgroup")), json!({"zarr_format": 2}));

    // A second label image with nearest and default colours is appended to the list.
    let out = labels(&[img, seg_arg, "--name", "nuclei", "--method", "nearest", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        read_json(&image.join("labels/.zattrs")),
        json!({"labels": ["cells", "nuclei"]})
    );
    let nuclei = image.join("labels/nuclei");
    assert_label_follows_the_image(&image, &nuclei, Method::Nearest, Some(0));
    let nuclei_ms = multiscale(&nuclei);
    let last = nuclei_ms["datasets"].as_array().unwrap().len() - 1;
    assert_eq!(
        nuclei_ms["datasets"][last]["coordinateTransformations"][1]["translation"],
        json!([0.0, 0.0, 0.0]),
        "nearest keeps the level-0 origin (SPEC §4)"
    );
    // Default colours: every value of the top level, 0 transparent.
    let attributes = group_attributes(&nuclei);
    assert_valid("0.4", "strict_label.schema", &attributes);
    let (_, top) = synthetic::read_array(&nuclei, &format!("/{last}")).unwrap();
    let TileData::U32(top) = top else {
        panic!("uint32 labels")
    };
    let colors = attributes["image-label"]["colors"].as_array().unwrap();
    for value in &top {
        let entry = colors
            .iter()
            .find(|c| c["label-value"] == json!(value))
            .unwrap_or_else(|| panic!("no colour for label {value}"));
        let alpha = &entry["rgba"][3];
        assert_eq!(*alpha == json!(0), *value == 0, "only the background is transparent");
    }

    // `info` lists both label images.
    let out = run(&["info", img, "--json"]);
    let info = json_stdout(&out);
    let names: Vec<&str> = info["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cells", "nuclei"]);
    assert_eq!(info["labels"][0]["dtype"], "uint32");
    assert_eq!(info["labels"][0]["levels"], json!(last + 1));
    assert!(stdout(&run(&["info", img])).contains("label image `nuclei`: uint32 [20,70,66]"));

    // The same name again is refused and changes nothing; --overwrite replaces it.
    let whole = snapshot(&image);
    let out = labels(&[img, seg_arg, "--name", "cells", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("already lists a label image `cells` (pass --overwrite"));
    assert_eq!(whole, snapshot(&image));
    // --overwrite with an option the build refuses changes nothing either, the list included.
    let out = labels(&[img, seg_arg, "--name", "cells", "--overwrite", "--chunks", "4,4", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(whole, snapshot(&image));
    let out = labels(&[
        img,
        seg_arg,
        "--name",
        "cells",
        "--method",
        "nearest",
        "--overwrite",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_label_follows_the_image(&image, &label, Method::Nearest, Some(0));
    let listed = read_json(&image.join("labels/.zattrs"))["labels"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(before, image_files(&image));
}

#[test]
fn labels_of_a_05_image_are_listed_in_its_zarr_json() {
    let dir = TempDir::new().unwrap();
    let image = image(
        dir.path(),
        "img.ome.zarr",
        &[24, 80, 72],
        &[8, 16, 16],
        &["--ngff-version", "0.5", "--shard-size", "16KiB"],
    );
    // A label image given as a segmentation is read through its level 0.
    let seg = dir.path().join("seg.zarr");
    segmentation(&seg, &[24, 80, 72], &[8, 40, 40], DType::I16);
    let before = image_files(&image);
    let out = labels(&[
        image.to_str().unwrap(),
        seg.to_str().unwrap(),
        "--name",
        "organelles",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(before, image_files(&image));
    let group = read_json(&image.join("labels/zarr.json"));
    assert_eq!(
        group,
        json!({"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"version": "0.5", "labels": ["organelles"]}}})
    );
    let label = image.join("labels/organelles");
    let attributes = group_attributes(&label);
    for schema in ["label.schema", "strict_label.schema", "image.schema"] {
        assert_valid("0.5", schema, &attributes);
    }
    assert!(attributes["ome"]["image-label"].get("version").is_none());
    assert_label_follows_the_image(&image, &label, Method::Mode, None);
    let level0 = read_json(&label.join("0/zarr.json"));
    assert_eq!(
        level0["codecs"][0]["name"], "sharding_indexed",
        "sharded as the image is"
    );
}

#[test]
fn mistakes_are_refused_before_anything_is_written() {
    let dir = TempDir::new().unwrap();
    let image = image(dir.path(), "img.ome.zarr", &[12, 40, 36], &[6, 16, 16], &[]);
    let img = image.to_str().unwrap();
    let wrong = dir.path().join("wrong.zarr");
    segmentation(&wrong, &[12, 40, 35], &[6, 16, 16], DType::U8);
    let seg = dir.path().join("seg.zarr");
    segmentation(&seg, &[12, 40, 36], &[6, 16, 16], DType::U8);
    let floats = dir.path().join("floats.zarr");
    synthetic::write_synthetic(
        &floats,
        &ArraySpec {
            shape: vec![12, 40, 36],
            chunks: vec![6, 16, 16],
            dtype: DType::F32,
            format: ArrayFormat::V2,
            codec: Codec::None,
        },
        1,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad-colors.json"),
        r#"[{"label-value": 1, "rgba": [1, 2, 300, 4]}]"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("not-json.json"), "{").unwrap();
    let bad_colors = dir.path().join("bad-colors.json");
    let not_json = dir.path().join("not-json.json");
    let missing = dir.path().join("missing");
    let before = snapshot(dir.path());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![img, wrong.to_str().unwrap(), "--name", "a"],
            "has shape [12, 40, 35] but the image's level 0 has shape [12, 40, 36]",
        ),
        (
            vec![img, floats.to_str().unwrap(), "--name", "a"],
            "holds float32 values",
        ),
        (
            vec![img, seg.to_str().unwrap(), "--name", "a", "--method", "mean"],
            "label images take mode or nearest",
        ),
        (
            vec![img, seg.to_str().unwrap(), "--name", "a/b"],
            "must be one path component",
        ),
        (
            vec![
                img,
                seg.to_str().unwrap(),
                "--name",
                "a",
                "--colors",
                bad_colors.to_str().unwrap(),
            ],
            "invalid colors: entry 0 has `rgba` [1,2,300,4]",
        ),
        (
            vec![
                img,
                seg.to_str().unwrap(),
                "--name",
                "a",
                "--colors",
                not_json.to_str().unwrap(),
            ],
            "is not JSON",
        ),
        (
            vec![seg.to_str().unwrap(), seg.to_str().unwrap(), "--name", "a"],
            "is a Zarr array",
        ),
        (vec![img, missing.to_str().unwrap(), "--name", "a"], "missing"),
    ];
    for (args, message) in cases {
        let out = labels(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(message), "{args:?}: expected `{message}` in {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    }
    assert_eq!(before, snapshot(dir.path()), "nothing was written");
    assert!(!image.join("labels").exists());
}

#[test]
fn a_killed_labels_run_lists_nothing_and_resumes_byte_identically() {
    let dir = TempDir::new().unwrap();
    let image = image(dir.path(), "img.ome.zarr", &[16, 96, 96], &[8, 16, 16], &[]);
    let seg = dir.path().join("seg.zarr");
    segmentation(&seg, &[16, 96, 96], &[8, 16, 16], DType::U8);
    // The same image copied, labelled without interruption, for the comparison.
    let reference = dir.path().join("reference.ome.zarr");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&image)
        .arg(&reference)
        .status()
        .unwrap();
    assert!(status.success());
    // Small label chunks: many tasks, so the kill lands in the middle of the run.
    let options = [
        "--name",
        "cells",
        "--backend",
        "cpu",
        "--chunks",
        "4,8,8",
        "--threads",
        "1",
        "-q",
    ];
    let mut reference_args = vec![reference.to_str().unwrap(), seg.to_str().unwrap()];
    reference_args.extend_from_slice(&options);
    let out = labels(&reference_args);
    assert!(out.status.success(), "{}", stderr(&out));

    let before = image_files(&image);
    let mut args = vec![image.to_str().unwrap(), seg.to_str().unwrap()];
    args.extend_from_slice(&options);
    let (interrupted, out) = common::interrupt(
        common::subcommand("labels", &args),
        100,
        Duration::from_millis(800),
        "-KILL",
    );
    assert!(interrupted, "the run ended before the kill: {}", stderr(&out));
    assert!(image.join("labels/cells").exists(), "the run had started writing");
    let listed = image.join("labels/.zattrs").exists()
        && read_json(&image.join("labels/.zattrs"))["labels"]
            .as_array()
            .is_some_and(|l| !l.is_empty());
    assert!(!listed, "a killed run lists no label image");
    assert_eq!(before, image_files(&image));

    let mut resumed = args.clone();
    resumed.push("--resume");
    let out = labels(&resumed);
    assert!(out.status.success(), "{}", stderr(&out));
    let (resumed, uninterrupted) = (snapshot(&image.join("labels")), snapshot(&reference.join("labels")));
    let differing: Vec<_> = uninterrupted
        .keys()
        .chain(resumed.keys())
        .filter(|path| resumed.get(*path) != uninterrupted.get(*path))
        .collect();
    assert!(
        differing.is_empty(),
        "the resumed label image equals an uninterrupted one, byte for byte; these differ: {differing:?}"
    );
    assert_eq!(before, image_files(&image));
}
