//! A build from an array in memory (`NdarraySource` through `PyramidBuilder::from_source`)
//! writes what a build of the same array stored as Zarr writes, whatever the array's memory
//! order; a label image takes its segmentation from memory; a source opened from disk is
//! kept out of the output's way; `resume` is refused for an array, which cannot be checked
//! against the interrupted build.

mod common;

use std::sync::Arc;

use ndarray::{Array3, ArrayD, IxDyn, ShapeBuilder};
use ome_pyramid::synthetic::read_array;
use ome_pyramid::tile::TileElement;
use ome_pyramid::{BackendChoice, BuildReport, Compression, LabelsBuilder, Method, NdarraySource, PyramidBuilder};
use tempfile::TempDir;

/// The uint16 array of a synthetic Zarr input, read whole into memory.
fn stored_array(dir: &TempDir, shape: &[u64]) -> (std::path::PathBuf, ArrayD<u16>) {
    let path = dir.path().join("input.zarr");
    common::u16_input(&path, shape, &[8, 32, 32], 3);
    let (shape, data) = read_array(&path, "/").unwrap();
    let values = u16::unwrap(data).unwrap();
    let shape: Vec<usize> = shape.iter().map(|&n| n as usize).collect();
    (path, ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap())
}

/// `builder` run with `method` on `backend` with 2 threads, writing zstd level 5: one codec
/// for a stored input and an array alike (a stored input's own would otherwise be copied
/// over).
fn build_on(builder: PyramidBuilder<'_>, method: Method, backend: BackendChoice) -> BuildReport {
    builder
        .method(method)
        .compression(Compression::Zstd, 5)
        .backend(backend)
        .threads(2)
        .build()
        .unwrap()
}

#[test]
fn an_array_in_memory_gives_the_pyramid_of_the_same_array_stored_as_zarr() {
    let dir = TempDir::new().unwrap();
    let (stored, array) = stored_array(&dir, &[20, 70, 90]);
    let mut fortran = ArrayD::<u16>::zeros(IxDyn(array.shape()).f());
    fortran.assign(&array);
    // Gaussian's tiles read halos across the chunks' and the array's edges.
    for method in [Method::Mean, Method::Gaussian] {
        let from_disk = dir.path().join(format!("disk-{method}.ome.zarr"));
        build_on(PyramidBuilder::new(&stored, &from_disk), method, BackendChoice::Cpu);
        let expected = common::snapshot(&from_disk);
        // Standard order is read in place; Fortran order chunk by chunk.
        for (name, view) in [("c", array.view()), ("f", fortran.view())] {
            let output = dir.path().join(format!("{name}-{method}.ome.zarr"));
            let source = NdarraySource::new(view)
                .unwrap()
                .with_chunks(&[8, 32, 32])
                .unwrap()
                .with_name("input.zarr");
            let report = build_on(
                PyramidBuilder::from_source(Arc::new(source), &output),
                method,
                BackendChoice::Cpu,
            );
            assert_eq!(report.levels[0].shape, vec![20, 70, 90]);
            assert_eq!(common::snapshot(&output), expected, "{method}, {name} order");
        }
    }
}

#[test]
fn a_label_image_takes_its_segmentation_from_memory_a_stored_source_is_protected_and_resume_is_refused() {
    let dir = TempDir::new().unwrap();
    let (stored, _) = stored_array(&dir, &[12, 40, 48]);
    let image = dir.path().join("image.ome.zarr");
    PyramidBuilder::new(&stored, &image).levels(2).build().unwrap();

    let mut mask = Array3::<u8>::zeros((12, 40, 48));
    mask.slice_mut(ndarray::s![2..10, 4..30, 10..40]).fill(5);
    let mask = mask.into_dyn();
    let source = NdarraySource::new(mask.view()).unwrap();
    let report = LabelsBuilder::from_source(&image, Arc::new(source), "cells")
        .build()
        .unwrap();
    assert_eq!(report.levels.len(), 2);
    let (_, level0) = read_array(&image.join("labels/cells"), "/0").unwrap();
    assert_eq!(u8::unwrap(level0).unwrap(), mask.iter().copied().collect::<Vec<u8>>());

    // A source opened from disk is still kept out of the output's way.
    let opened = ome_pyramid::store::open_input(&stored, None, None).unwrap();
    let err = PyramidBuilder::from_source(opened, dir.path())
        .overwrite(true)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("contains"), "{err}");
    assert!(stored.join(".zarray").exists(), "the input is left alone");

    let source = NdarraySource::new(mask.view()).unwrap();
    let err = PyramidBuilder::from_source(Arc::new(source), dir.path().join("again.ome.zarr"))
        .resume(true)
        .build()
        .unwrap_err();
    assert!(err.is_invalid_input());
    assert!(err.to_string().contains("cannot be checked against"), "{err}");
}

#[test]
fn an_array_in_memory_in_standard_order_is_read_into_gpu_staging_memory_with_the_cpus_results() {
    let test = "an_array_in_memory_in_standard_order_is_read_into_gpu_staging_memory_with_the_cpus_results";
    if common::gpu_or_skip(test).is_none() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let (_, array) = stored_array(&dir, &[20, 70, 90]);
    let mut fortran = ArrayD::<u16>::zeros(IxDyn(array.shape()).f());
    fortran.assign(&array);
    let build = |view, backend: BackendChoice, name: &str| {
        let output = dir.path().join(format!("{name}.ome.zarr"));
        let source = NdarraySource::new(view).unwrap().with_chunks(&[8, 32, 32]).unwrap();
        let report = build_on(
            PyramidBuilder::from_source(Arc::new(source), &output),
            Method::Mean,
            backend,
        );
        (report.tiles_staged, common::snapshot_but_attributes(&output))
    };
    let (_, expected) = build(array.view(), BackendChoice::Cpu, "cpu");
    let (staged, got) = build(array.view(), BackendChoice::Gpu, "gpu-c");
    assert!(staged > 0, "level 0 is written from the array, so its tiles are staged");
    assert_eq!(got, expected, "the GPU's levels are the CPU's");
    // Level 0 of an array in another order is written from a host tile, read with the
    // staged one.
    let (staged, got) = build(fortran.view(), BackendChoice::Gpu, "gpu-f");
    assert!(staged > 0);
    assert_eq!(got, expected);
}
