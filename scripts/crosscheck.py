#!/usr/bin/env python3
"""Cross-check an ome-pyramid output with the Python tools people use.

Usage: crosscheck.py OUTPUT.ome.zarr

- zarr-python (3.x) opens every level, of an OME-NGFF 0.4 (Zarr v2) or 0.5 (Zarr v3,
  sharded or not) output;
- each level k+1 equals SPEC §2 applied with numpy/scipy (float64) to level k as stored:
  integers exactly (nearest, mean, gaussian on the CPU backend), floats within 1e-6/1e-5;
  mode, min and max exactly, computed window by window on the stored values;
- ome-zarr-py's Reader finds the image and all its levels.
Exits non-zero with a message on the first disagreement.
"""
import json
import sys

import numpy as np
import zarr
from scipy import ndimage


def reference(x, factors, method):
    x = x.astype(np.float64)
    if method == "nearest":
        return x[tuple(slice(None, None, f) for f in factors)]
    if method == "gaussian":
        for axis, f in enumerate(factors):
            if f > 1:
                x = ndimage.gaussian_filter1d(x, f / 3.0, axis=axis, mode="reflect", truncate=4.0)
    # Window mean over in-bounds voxels: pad each axis to a multiple of f with NaN, nanmean.
    pad = [(0, (-n) % f) for n, f in zip(x.shape, factors)]
    padded = np.pad(x, pad, constant_values=np.nan)
    shape = []
    for n, f in zip(padded.shape, factors):
        shape += [n // f, f]
    blocks = padded.reshape(shape)
    return np.nanmean(blocks, axis=tuple(range(1, 2 * len(factors), 2)))


def select_reference(x, factors, method):
    """Mode, min and max on the stored values themselves (no float64, so exact for every
    dtype), window by window over the in-bounds voxels. Mode: np.unique sorts, and argmax
    takes the first most frequent, so ties go to the smallest value. min/max propagate NaN."""
    out_shape = tuple(-(-n // f) for n, f in zip(x.shape, factors))
    out = np.empty(out_shape, dtype=x.dtype)
    for index in np.ndindex(*out_shape):
        window = x[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors))]
        if method == "mode":
            values, counts = np.unique(window, return_counts=True)
            out[index] = values[np.argmax(counts)]
        else:
            out[index] = window.min() if method == "min" else window.max()
    return out


def to_dtype(values, dtype, magnitude):
    """SPEC §2 rounding: integers half to even and clamped; a value within float error of a
    half-integer (64 ulps of the largest input magnitude, the scale of the error of a
    weighted sum) is that exact tie."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        half = np.floor(values) + 0.5
        tolerance = 64 * np.finfo(np.float64).eps * np.maximum(np.maximum(np.abs(values), magnitude), 1.0)
        values = np.where(np.abs(values - half) <= tolerance, half, values)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def main(path):
    group = zarr.open_group(path, mode="r")
    attrs = group.attrs.asdict()
    root = attrs["ome"] if "ome" in attrs else attrs
    ms = root["multiscales"][0]
    method = ms["type"]
    factors = ms["metadata"]["factors"]
    gpu = str(ms["metadata"].get("backend", "")).startswith("gpu")
    levels = [group[d["path"]][:] for d in ms["datasets"]]
    for k in range(1, len(levels)):
        below = levels[k - 1]
        if method in ("mode", "min", "max"):
            expected = select_reference(below, factors[k - 1], method)
        else:
            magnitude = float(np.abs(below.astype(np.float64)).max(initial=0))
            expected = to_dtype(reference(below, factors[k - 1], method), below.dtype, magnitude)
        got = levels[k]
        if got.shape != expected.shape:
            sys.exit(f"level {k}: shape {got.shape} != {expected.shape}")
        if np.issubdtype(got.dtype, np.integer):
            diff = np.abs(got.astype(np.int64) - expected.astype(np.int64)).max(initial=0)
            allowed = 1 if (gpu and method == "gaussian") else 0
            if diff > allowed:
                sys.exit(f"level {k} ({method}): max difference {diff} > {allowed}")
        else:
            rtol = {"gaussian": 1e-5, "mean": 1e-6}.get(method, 0.0)
            if not np.allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max(), equal_nan=True):
                sys.exit(f"level {k} ({method}): float values differ beyond rtol {rtol}")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(path))())
    shapes = [tuple(d.shape) for d in nodes[0].data]
    if shapes != [lv.shape for lv in levels]:
        sys.exit(f"ome-zarr-py sees levels {shapes}")
    for k, data in enumerate(nodes[0].data):
        if not np.array_equal(np.asarray(data), levels[k], equal_nan=True):
            sys.exit(f"ome-zarr-py reads other values at level {k}")
    print(json.dumps({"levels": len(levels), "method": method, "version": root.get("version", ms.get("version")), "ok": True}))


if __name__ == "__main__":
    main(sys.argv[1])
