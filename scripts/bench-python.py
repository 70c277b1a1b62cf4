#!/usr/bin/env python3
"""Times ome_pyramid.write_image against ome-zarr-py's write_image on the same NumPy array.

Both run in the Python this script runs under, which needs the ome_pyramid package
(`pip install ./python`, a release build) and ome-zarr-py 0.18 with zarr 3. Every run is
its own process: the array is made (untimed), then one write_image call is timed; runs of
the two tools are interleaved. The same levels (y and x halved twice, z kept: ome-zarr-py
does not reduce z), chunks, codec and OME-NGFF version; ome-zarr-py with its local_mean
method (the window mean, truncated to integers), ours with mean (rounded half to even).

    python scripts/bench-python.py [--shape 128,1024,1024] [--repeat 3] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START, END = "<!-- python-bench:start -->", "<!-- python-bench:end -->"
SECTION = "## Python: write_image from NumPy"

# One run: make the array, time one call, print the seconds.
RUN = r'''
import sys, time
import numpy as np
tool, out, shape = sys.argv[1], sys.argv[2], tuple(int(n) for n in sys.argv[3].split(","))
rng = np.random.default_rng(0)
z = np.arange(shape[0], dtype=np.float32)[:, None, None]
y = np.arange(shape[1], dtype=np.float32)[None, :, None]
x = np.arange(shape[2], dtype=np.float32)[None, None, :]
image = (20000 + 8000 * np.sin(z / 7) * np.cos(y / 29) * np.sin(x / 31)).astype(np.uint16)
image += rng.integers(0, 2000, shape, dtype=np.uint16)
if tool == "ome-pyramid":
    import ome_pyramid
    started = time.perf_counter()
    ome_pyramid.write_image(image, out, axes="zyx", levels=3, factors={"z": 1, "y": 2, "x": 2},
                            chunks=[64, 256, 256], compression="zstd", clevel=1, backend="cpu")
else:
    import numcodecs, zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image
    started = time.perf_counter()
    group = zarr.open_group(out, mode="w", zarr_format=2)
    write_image(image, group, scale_factors=(2, 4), method=Methods.LOCAL_MEAN, axes="zyx", fmt=FormatV04(),
                storage_options=dict(chunks=(64, 256, 256), compressors=[numcodecs.Zstd(level=1)]))
print(time.perf_counter() - started)
'''

# Both outputs hold the same level 0 and the same level shapes.
CHECK = r'''
import json, sys, zarr, numpy as np
def levels(root):
    paths = [d["path"] for d in json.load(open(f"{root}/.zattrs"))["multiscales"][0]["datasets"]]
    return [zarr.open_array(f"{root}/{p}", mode="r") for p in paths]
a, b = levels(sys.argv[1]), levels(sys.argv[2])
assert [x.shape for x in a] == [y.shape for y in b], ([x.shape for x in a], [y.shape for y in b])
assert np.array_equal(a[0][...], b[0][...])
m = a[1][...].astype(np.int64) - b[1][...].astype(np.int64)
print(int(m.min()), int(m.max()))
'''


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {}
    for name in ("ome-pyramid", "ome-zarr", "zarr", "dask", "scikit-image", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unavailable"
    return found


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    return f"{os.cpu_count()} cores ({cpu}), {memory} GiB, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="128,1024,1024", help="z,y,x of the uint16 array")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", help="update this markdown file between the markers")
    args = parser.parse_args()
    shape = [int(n) for n in args.shape.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-python-"))
    tools = ["ome-pyramid", "ome-zarr-py"]
    seconds: dict[str, list[float]] = {tool: [] for tool in tools}
    try:
        for rep in range(args.repeat):
            for tool in tools:
                out = work / f"{tool}.ome.zarr"
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                run = subprocess.run([sys.executable, "-c", RUN, tool, str(out), args.shape],
                                     capture_output=True, text=True, check=True)
                seconds[tool].append(float(run.stdout.split()[-1]))
                print(f"run {rep + 1}: {tool:12} {seconds[tool][-1]:.2f} s", flush=True)
        check = subprocess.run([sys.executable, "-c", CHECK, str(work / "ome-pyramid.ome.zarr"),
                                str(work / "ome-zarr-py.ome.zarr")], capture_output=True, text=True, check=True)
        low, high = check.stdout.split()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {tool: statistics.median(values) for tool, values in seconds.items()}
    mib = shape[0] * shape[1] * shape[2] * 2 / 2**20
    found = versions()
    rows = [f"| {tool} | {median[tool]:.2f} | {', '.join(f'{s:.2f}' for s in seconds[tool])} | "
            f"{mib / median[tool]:.0f} | {median[tool] / median['ome-pyramid']:.1f}× |" for tool in tools]
    text = "\n".join([
        f"Machine: {machine()}. Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()) + ".",
        "",
        f"Input: a uint16 NumPy array {shape} ({mib:.0f} MiB) in memory, made in each run's own process "
        "(untimed). Output: 3 levels halving y and x (z kept), chunks 64×256×256, zstd level 1, OME-NGFF 0.4. "
        "`ome_pyramid.write_image(image, OUT, axes=\"zyx\", levels=3, factors={\"z\": 1, \"y\": 2, \"x\": 2}, "
        "chunks=[64, 256, 256], compression=\"zstd\", clevel=1, backend=\"cpu\")` against "
        "`ome_zarr.writer.write_image(image, group, scale_factors=(2, 4), method=Methods.LOCAL_MEAN, axes=\"zyx\", "
        "fmt=FormatV04(), storage_options=...)`. The runs alternate between the tools.",
        "",
        "| tool | median s | runs (s) | MiB/s | time vs ome-pyramid |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Both outputs hold the same level 0 and level shapes; level 1 differs by {low} to {high} "
        "(ome-zarr-py truncates the mean, ome-pyramid rounds it half to even).",
    ])
    print(text)
    if args.write:
        path = Path(args.write)
        doc = path.read_text()
        block = f"{START}\nProduced by `python scripts/bench-python.py --write {args.write}` on " \
                f"{time.strftime('%Y-%m-%d')}.\n\n{text}\n{END}"
        if START in doc:
            head, rest = doc.split(START, 1)
            doc = head + block + rest.split(END, 1)[1]
        else:
            doc = doc.rstrip() + f"\n\n{SECTION}\n\n{block}\n"
        path.write_text(doc)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
