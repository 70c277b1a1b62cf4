"""`ome_pyramid.write_image` from NumPy arrays (every dtype, any memory order, 2-D to 5-D)
against the reference methods, and `labels` and `info`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import REPO, level, tree_bytes, volume

import ome_pyramid

GOLDEN = REPO / "tests" / "data" / "golden"
DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}
# Relative error allowed on floats (of the largest expected magnitude), as the Rust suite's.
FLOAT_TOLERANCE = {"mean": 1e-6, "gaussian": 1e-5, "nearest": 0.0, "mode": 0.0}


def golden_cases() -> list:
    params = []
    for method in ("mean", "nearest", "gaussian", "mode"):
        cases = json.loads((GOLDEN / f"{method}.json").read_text())["cases"]
        for i, case in enumerate(cases):
            params.append(pytest.param(method, case, id=f"{method}-{i}-{case['input']['dtype']}"))
    return params


def array_of(block: dict) -> np.ndarray:
    return np.array(block["data"], dtype=block["dtype"]).reshape(block["shape"])


@pytest.mark.parametrize(("method", "case"), golden_cases())
def test_write_image_equals_the_reference_methods(method, case, fresh):
    image, expected = array_of(case["input"]), array_of(case["expected"])
    axes = DEFAULT_AXES[image.ndim]
    output = fresh("out.ome.zarr")
    ome_pyramid.write_image(
        image,
        output,
        method=method,
        levels=2,
        factors=dict(zip(axes, case["factors"], strict=True)),
        backend="cpu",
    )
    assert np.array_equal(level(output, 0), image)
    got = level(output, 1)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if image.dtype.kind == "f":
        scale = float(np.abs(expected).max()) or 1.0
        assert np.abs(got.astype(np.float64) - expected).max() <= FLOAT_TOLERANCE[method] * scale
    else:
        assert np.array_equal(got, expected)


def test_c_order_fortran_order_and_strided_views_give_the_same_pyramid(fresh):
    image = volume((20, 70, 90))
    outputs = []
    for name, variant in [
        ("c", image),
        ("f", np.asfortranarray(image)),
        ("strided", np.repeat(image, 2, axis=2)[:, :, ::2]),
        ("reversed", image[::-1][::-1]),
    ]:
        assert np.array_equal(variant, image)
        output = fresh(f"{name}.ome.zarr")
        ome_pyramid.write_image(variant, output, axes="zyx", chunks=[8, 32, 32], backend="cpu", threads=2)
        outputs.append(tree_bytes(output))
    assert all(o == outputs[0] for o in outputs[1:])


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64", ">u2"]
)
@pytest.mark.parametrize("shape", [(33, 47), (3, 17, 40, 50), (2, 2, 5, 30, 40)])
def test_every_dtype_and_dimensionality_round_trips_level_0(dtype, shape, fresh):
    image = volume(shape, np.dtype(dtype).newbyteorder("=").name).astype(dtype)
    output = fresh("out.ome.zarr")
    report = ome_pyramid.write_image(image, output, levels=2, backend="cpu")
    assert np.array_equal(level(output, 0), image)
    assert report.levels[0].shape == list(shape)
    axes = [a["name"] for a in ome_pyramid.info(output)["axes"]]
    assert "".join(axes) == DEFAULT_AXES[len(shape)]


def test_axes_scale_unit_and_name_reach_the_metadata(fresh):
    image = np.zeros((16, 256, 256), dtype=np.uint16)
    image[4:12, 100:200, 50:80] = 1000
    image.flags.writeable = False  # a read-only array is enough: nothing writes to it
    output = fresh("out.ome.zarr")
    ome_pyramid.write_image(image, output, axes="zyx", scale={"z": 2.0, "y": 0.5, "x": 0.5}, unit="micrometer")
    multiscales = json.loads((output / ".zattrs").read_text())["multiscales"][0]
    assert multiscales["name"] == "image"
    assert [a.get("unit") for a in multiscales["axes"]] == ["micrometer"] * 3
    first = multiscales["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert first == [2.0, 0.5, 0.5]


MEMORY_CHECK = """
import resource, sys
import numpy as np
import ome_pyramid

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

image = np.full((192, 1024, 1024), 7, dtype=np.uint16)  # 384 MiB, resident
image[::3, ::5, ::7] = 900
before = peak_mib()
ome_pyramid.write_image(image, sys.argv[1], axes="zyx", memory="64MiB", compression="none", backend="cpu")
print(before, peak_mib())
"""


def test_the_array_is_read_in_place_not_copied_whole(fresh):
    import subprocess
    import sys

    output = fresh("big.ome.zarr")
    run = subprocess.run([sys.executable, "-c", MEMORY_CHECK, str(output)], capture_output=True, text=True, check=True)
    before, after = map(float, run.stdout.split())
    # A copy of the array would add 384 MiB; the engine's working set is about --memory.
    assert after - before < 200, f"peak grew from {before:.0f} MiB to {after:.0f} MiB"
    assert zarr.open_array(str(output / "0"), mode="r")[::3, ::5, ::7].max() == 900


def test_bad_arrays_raise_invalid_input_error(fresh):
    with pytest.raises(ome_pyramid.InvalidInputError, match="2 to 5 dimensions"):
        ome_pyramid.write_image(np.zeros(10, np.uint8), fresh("a"))
    with pytest.raises(ome_pyramid.InvalidInputError, match="dtype bool"):
        ome_pyramid.write_image(np.zeros((4, 4), bool), fresh("b"))
    with pytest.raises(ome_pyramid.InvalidInputError, match="dtype complex64"):
        ome_pyramid.write_image(np.zeros((4, 4), np.complex64), fresh("c"))
    with pytest.raises(ome_pyramid.InvalidInputError, match="empty"):
        ome_pyramid.write_image(np.zeros((0, 4), np.uint8), fresh("d"))
    with pytest.raises(ome_pyramid.InvalidInputError, match="integer data"):
        ome_pyramid.write_image(np.zeros((4, 4), np.float32), fresh("e"), method="mode")
    with pytest.raises(ome_pyramid.InvalidInputError, match="axes"):
        ome_pyramid.write_image(np.zeros((4, 4, 4), np.uint8), fresh("f"), axes="yx")
    with pytest.raises(ome_pyramid.InvalidInputError, match="keyword"):
        ome_pyramid._native.write_image(np.zeros((4, 4), np.uint8), str(fresh("g")), {"colour": 1})
    for name in "abcdefg":
        assert not (fresh(name)).exists(), "nothing is written for a refused request"


def test_labels_from_a_numpy_mask_and_info_lists_them(fresh):
    image = volume((12, 64, 80))
    output = fresh("image.ome.zarr")
    ome_pyramid.write_image(image, output, axes="zyx", chunks=[8, 32, 32], levels=3, backend="cpu")
    mask = np.zeros(image.shape, dtype=np.uint32)
    mask[2:10, 10:40, 20:60] = 7
    mask[5:8, 45:60, 5:15] = 3
    report = ome_pyramid.labels(output, mask, "cells", properties=[{"label-value": 7, "class": "nucleus"}])
    assert [lv.shape for lv in report.levels] == [[12, 64, 80], [6, 32, 40], [3, 16, 20]]
    label_dir = output / "labels" / "cells"
    assert np.array_equal(zarr.open_array(str(label_dir / "0"), mode="r")[...], mask)
    assert set(np.unique(zarr.open_array(str(label_dir / "2"), mode="r")[...])) <= {0, 3, 7}
    described = ome_pyramid.info(output)
    assert [entry["name"] for entry in described["labels"]] == ["cells"]
    label = ome_pyramid.info(label_dir)
    assert label["kind"] == "ome-zarr label image"
    assert label["image-label"]["properties"] == [{"label-value": 7, "class": "nucleus"}]
    with pytest.raises(ome_pyramid.InvalidInputError, match="already lists"):
        ome_pyramid.labels(output, mask, "cells")
    with pytest.raises(ome_pyramid.InvalidInputError, match="shape"):
        ome_pyramid.labels(output, mask[:, :10], "small")


def test_info_of_a_path_that_is_no_image_raises_invalid_input_error(tmp_path: Path):
    with pytest.raises(ome_pyramid.InvalidInputError, match="does not exist"):
        ome_pyramid.info(tmp_path / "missing.zarr")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ome_pyramid.InvalidInputError):
        ome_pyramid.info(tmp_path / "notes.txt")
