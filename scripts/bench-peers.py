#!/usr/bin/env python3
"""Times ome-pyramid against its peers on the same input, interleaved, in one run.

    python3 scripts/bench-peers.py [--repeat 3] [--write BENCHMARKS.md]
    python3 scripts/bench-peers.py --scaling [--write BENCHMARKS.md]
    python3 scripts/bench-peers.py --tiff [--tiff-gib 2] [--write BENCHMARKS.md]
    python3 scripts/bench-peers.py --tiff-memory-check [--write BENCHMARKS.md]

The standard input is 256×1024×1024 uint16 with 64×256×256 chunks and zstd level 1, written
as Zarr v2 and v3 by `ome-pyramid synth` (camera-like data: blobs, stripes, shot noise).
Every configuration runs as its own process; wall time is measured around it and peak RSS
comes from os.wait4 for that process alone. Runs are interleaved (all configurations, then
all again) and the median is reported.

Equal work: each comparison pairs configurations that produce the same levels (same shapes,
read back from each output's metadata and printed) with the same codec.
- zarrs_ome (`cargo install zarrs_tools --features ome`): isotropic factor 2, 3 levels
  (--max-levels 2), zstd level 1; gaussian with sigma 2/3 and kernel half-size 3, as ours.
- ome-zarr-py (pip, `write_image` with `method=local_mean|nearest`, on the array in memory and
  on `dask.array.from_zarr`, its streaming path): it reduces only y and x, so ome-pyramid runs
  with --factors z=1,y=2,x=2 --levels 3 for that comparison; OME-NGFF 0.4, zstd level 1.
- Sharded OME-NGFF 0.5: ome-pyramid `--ngff-version 0.5 --shards 128,512,512` against
  zarrs_ome `--shard-shape 128,512,512 --chunk-shape 64,256,256` (the same shards and inner
  chunks at every level), 3 levels, zstd level 1.

Codec floor: per comparison, the decode-only pass of the input plus an encode-only pass of the
levels ome-pyramid wrote above level 0 (`ome-pyramid bench LEVEL --encode-only`): what any tool
writing those levels with that codec must at least spend. It is measured around each run of
ome-pyramid's build (decode just before, encode just after), and each run is set against its
own floor.

--scaling builds 0.5, 2 and 8 GiB inputs with --memory 256MiB and reports time and peak RSS
(memory must stay flat while time grows linearly), for OME-NGFF 0.4 and for sharded 0.5 (with
the files of level 0 against its inner chunks).

--tiff reads a TIFF directly: the input is a tiled BigTIFF, uint16, a z stack of 2048×2048
pages (--tiff-gib N GiB, 128 pages per GiB) in 256×256 tiles, uncompressed (what light-sheet
acquisition and stitching software commonly writes), written page by page with tifffile
(blobs + shot noise, deterministic). It runs, interleaved, ome-pyramid (--factors z=1,y=2,x=2
--levels 3, mean, zstd level 1, chunks 64×256×256, OME-NGFF 0.4, --memory 256MiB) against
the Python routes: tifffile + ome-zarr-py (`write_image` with `local_mean` on the array read
into memory and on `dask.array.from_zarr(tifffile.imread(path, aszarr=True))`) and
ngff-zarr's command line (`-m itkwasm_bin_shrink`, its own levels; and the same command with
its scale factors set to ours). Each output's levels are printed and compared with ours, and
ours' level 0 (and level 1, against the 2×2 mean rounded half to even) is compared with the
TIFF's pixels on random tiles; a mismatch fails the run. Default --repeat is 1 here; a tool
running past --tiff-timeout is stopped and reported as not finished.

--tiff-memory-check builds a 4 GiB tiled BigTIFF the same way and runs ome-pyramid alone
with --memory 256MiB (full pyramid, default options otherwise); peak RSS must stay under
384 MiB.

With --write FILE, the results replace the section between the peer-bench markers of FILE
(the scaling, tiff-bench and tiff-memory markers for the other modes).
"""
import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- peer-bench:start -->", "<!-- peer-bench:end -->"
SCALE_START, SCALE_END = "<!-- scaling:start -->", "<!-- scaling:end -->"
TIFF_START, TIFF_END = "<!-- tiff-bench:start -->", "<!-- tiff-bench:end -->"
TIFF_MEM_START, TIFF_MEM_END = "<!-- tiff-memory:start -->", "<!-- tiff-memory:end -->"
TIFF_SECTION = "## TIFF → pyramid"

OME_ZARR_PY = r'''
import sys, zarr, numcodecs, dask.array as da
from ome_zarr.writer import write_image
from ome_zarr.scale import Methods
from ome_zarr.format import FormatV04
src, out, method, levels, path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
image = da.from_zarr(src) if path == "dask" else zarr.open_array(src, mode="r")[:]
group = zarr.open_group(out, mode="w", zarr_format=2)
write_image(image, group, scale_factors=tuple(2 ** k for k in range(1, levels)), method=Methods(method), axes="zyx",
            fmt=FormatV04(), storage_options=dict(chunks=(64, 256, 256), compressors=[numcodecs.Zstd(level=1)]))
'''

# A tiled BigTIFF z stack, uint16, uncompressed, written tile by tile from one plane at a time
# (generation memory stays at a few planes): smooth blobs from a coarse random field
# interpolated in z, y and x, plus shot noise; the same file for the same shape.
MAKE_TIFF = r'''
import sys, numpy as np, tifffile
from scipy import ndimage
path, z, y, x, tile = sys.argv[1], *map(int, sys.argv[2:6])
cz, cy, cx = z // 8 + 2, y // 32 + 1, x // 32 + 1
coarse = np.random.default_rng(7).random((cz, cy, cx), dtype=np.float32)
def plane(k):
    a, w = k // 8, np.float32(k % 8 / 8)
    c = (1 - w) * coarse[a] + w * coarse[a + 1]
    smooth = ndimage.zoom(c, (y / cy, x / cx), order=1, output=np.float32, grid_mode=True, mode="nearest")[:y, :x]
    signal = 100 + 12000 * np.clip(smooth - 0.55, 0, None) ** 2
    noise = np.random.default_rng(1000 + k).standard_normal((y, x), dtype=np.float32)
    return np.clip(signal + np.sqrt(signal) * noise, 0, 65535).astype(np.uint16)
def tiles():
    for k in range(z):
        p = plane(k)
        for i in range(0, y, tile):
            for j in range(0, x, tile):
                yield p[i:i + tile, j:j + tile]
tifffile.imwrite(path + ".part", tiles(), shape=(z, y, x), dtype=np.uint16, tile=(tile, tile), bigtiff=True,
                 compression=None, photometric="minisblack", metadata={"axes": "ZYX"})
'''

# The route Python users take today: tifffile reads, ome-zarr-py writes.
TIFF_OME_ZARR_PY = r'''
import sys, zarr, numcodecs, tifffile, dask.array as da
from ome_zarr.writer import write_image
from ome_zarr.scale import Methods
from ome_zarr.format import FormatV04
src, out, method, levels, path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
image = da.from_zarr(tifffile.imread(src, aszarr=True)) if path == "dask" else tifffile.imread(src)
group = zarr.open_group(out, mode="w", zarr_format=2)
write_image(image, group, scale_factors=tuple(2 ** k for k in range(1, levels)), method=Methods(method), axes="zyx",
            fmt=FormatV04(), storage_options=dict(chunks=(64, 256, 256), compressors=[numcodecs.Zstd(level=1)]))
'''

# ngff-zarr's command line (the `ngff-zarr` console script is ngff_zarr.cli:main). With a level
# count, its to_multiscales gets the scale factors z=1, y=x=2**k (absolute, per level), which
# its command line has no option for; everything else is the command line's own path.
NGFF_ZARR_CLI = r'''
import sys
import ngff_zarr.cli as cli
levels = sys.argv.pop(1)
if levels != "auto":
    factors = [{"z": 1, "y": 2 ** k, "x": 2 ** k} for k in range(1, int(levels))]
    plain = cli.to_multiscales
    cli.to_multiscales = lambda *a, **k: plain(*a, scale_factors=factors, **k)
sys.argv[0] = "ngff-zarr"
sys.exit(cli.main())
'''

# Ours' level 0 against the TIFF's pixels (read with tifffile) on random 256×256 tiles, and
# with "yx2" level 1 against the 2×2 mean of the same tiles rounded half to even.
VERIFY_TIFF = r'''
import sys, json, numpy as np, tifffile, zarr
src, out, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
paths = [d["path"] for d in json.load(open(out + "/.zattrs"))["multiscales"][0]["datasets"]]
level0 = zarr.open_array(f"{out}/{paths[0]}", mode="r")
level1 = zarr.open_array(f"{out}/{paths[1]}", mode="r") if mode == "yx2" and len(paths) > 1 else None
tif = zarr.open_array(tifffile.imread(src, aszarr=True), mode="r")
z, y, x = tif.shape
rng = np.random.default_rng(0)
picks = [(0, 0, 0), (z - 1, (y - 1) // 256, (x - 1) // 256)]
picks += [(int(rng.integers(z)), int(rng.integers(-(-y // 256))), int(rng.integers(-(-x // 256)))) for _ in range(n)]
bad0 = bad1 = 0
for k, ty, tx in picks:
    ys, xs = slice(ty * 256, min(y, ty * 256 + 256)), slice(tx * 256, min(x, tx * 256 + 256))
    want = tif[k, ys, xs]
    bad0 += not np.array_equal(level0[k, ys, xs], want)
    if level1 is not None:
        h, w = want.shape[0] // 2, want.shape[1] // 2
        mean = np.round(want[:2 * h, :2 * w].astype(np.float64).reshape(h, 2, w, 2).mean(axis=(1, 3)))
        got = level1[k, ty * 128:ty * 128 + h, tx * 128:tx * 128 + w]
        bad1 += not np.array_equal(got, mean.astype(got.dtype))
print(json.dumps({"tiles": len(picks), "level0_mismatched": bad0, "level1_mismatched": bad1 if level1 is not None else None}))
'''

# Floors for reading the TIFF: the file's bytes read once in 16 MiB blocks into one buffer (what
# any reader must at least do), and tifffile decoding every page (every tile) once.
TIFF_READ = r'''
import sys, time, tifffile
start = time.perf_counter()
buffer = bytearray(16 << 20)
with open(sys.argv[1], "rb", buffering=0) as f:
    while f.readinto(buffer):
        pass
raw = time.perf_counter() - start
start = time.perf_counter()
with tifffile.TiffFile(sys.argv[1]) as tif:
    for page in tif.pages:
        page.asarray()
print(raw, time.perf_counter() - start)
'''


def busy_cpu_seconds():
    """CPU-seconds the whole machine has spent busy (all cores, /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_measured(cmd, env=None, timeout=None, usage_out=None):
    """Runs cmd; returns (seconds, peak RSS bytes, returncode, stderr tail). With a timeout, the
    command runs in its own process group, which is killed when the time is up (returncode
    None then). With usage_out (a dict), also gives the command's CPU-seconds and the share of
    the machine that other processes used meanwhile (`others`: 0 on a quiet machine)."""
    busy = busy_cpu_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=timeout is not None)
    expired = []
    timer = None
    if timeout is not None:
        def stop():
            expired.append(True)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(timeout, stop)
        timer.start()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if timer is not None:
        timer.cancel()
    proc.returncode = None if expired else os.waitstatus_to_exitcode(status)
    if usage_out is not None:
        cpu = usage.ru_utime + usage.ru_stime
        usage_out["cpu_s"] = cpu
        after = busy_cpu_seconds()
        if busy is not None and after is not None:
            usage_out["others"] = max(0.0, after - busy - cpu) / (seconds * (os.cpu_count() or 1))
    return seconds, usage.ru_maxrss * 1024, proc.returncode, stderr.decode(errors="replace")[-600:]


def levels_of(path):
    """Shapes of the levels an OME-Zarr output lists (v0.4 .zattrs or v0.5 zarr.json)."""
    path = Path(path)
    if (path / ".zattrs").exists():
        attrs = json.loads((path / ".zattrs").read_text())
    elif (path / "zarr.json").exists():
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        attrs = attrs.get("ome", attrs)
    else:
        return None
    shapes = []
    for d in attrs["multiscales"][0]["datasets"]:
        level = path / d["path"]
        meta = level / ".zarray" if (level / ".zarray").exists() else level / "zarr.json"
        shapes.append(tuple(json.loads(meta.read_text())["shape"]))
    return shapes


def encode_seconds(binary, pyramid, first=1):
    """Seconds to encode again, with their own codec and all cores, the levels from `first` on
    (by default those above 0) of an OME-Zarr pyramid (`ome-pyramid bench LEVEL --encode-only`,
    which decodes first, untimed)."""
    attrs = json.loads((Path(pyramid) / ".zattrs").read_text())
    total = 0.0
    for d in attrs["multiscales"][0]["datasets"][first:]:
        out = subprocess.run([binary, "bench", str(Path(pyramid) / d["path"]), "--encode-only", "--json", "-q"],
                             capture_output=True, text=True, check=True)
        total += json.loads(out.stdout)["encode_only"]["seconds"]
    return total


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def file_count(path):
    return sum(len(files) for _, _, files in os.walk(path))


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} × {cpu}, {mem} RAM, {platform.system()} {platform.release()}"


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - a missing tool is reported, not fatal
        return "unavailable"


def find_tools(args):
    binary = ROOT / "target" / "release" / "ome-pyramid"
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    zarrs_ome = shutil.which("zarrs_ome") or str(Path.home() / ".cargo/bin/zarrs_ome")
    if not Path(zarrs_ome).exists():
        if args.install:
            subprocess.run(["cargo", "install", "zarrs_tools", "--features", "ome"], check=True)
        else:
            print("note: zarrs_ome not found (cargo install zarrs_tools --features ome); skipping it")
            zarrs_ome = None
    has_py = subprocess.run([sys.executable, "-c", "import ome_zarr, zarr, numcodecs"], capture_output=True).returncode == 0
    if not has_py and args.install:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(ROOT / "scripts/bench-requirements.txt")], check=True)
        has_py = True
    if not has_py:
        print("note: ome-zarr-py not importable (pip install -r scripts/bench-requirements.txt); skipping it")
    return str(binary), zarrs_ome, has_py


def gpu_present(binary):
    out = subprocess.run([binary, "info", "--gpu", "--json"], capture_output=True, text=True)
    try:
        return any(a["used_by_auto"] for a in json.loads(out.stdout))
    except (ValueError, KeyError):
        return False


def make_input(binary, path, size, fmt):
    if path.exists():
        return
    subprocess.run([binary, "synth", str(path), "--size", size, "--chunks", "64,256,256", "--dtype", "uint16",
                    "--format", fmt, "--codec", "zstd", "--clevel", "1", "-q"], check=True)


def peers(args):
    binary, zarrs_ome, has_py = find_tools(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-peers-", dir=ROOT / "target"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = {"v2": work / "input-v2.zarr", "v3": work / "input-v3.zarr"}
    for fmt, path in inputs.items():
        make_input(binary, path, args.size, fmt)
    input_bytes = 2 * eval("*".join(args.size.split(",")))  # uint16
    zstd1 = ["--compression", "zstd", "--clevel", "1"]
    zarrs_codec = ["--bytes-to-bytes-codecs", '[{"name":"zstd","configuration":{"level":1,"checksum":false}}]']
    gpu = gpu_present(binary)
    configs = []  # (group, label, tool, method, input fmt, command(out))

    def ours(group, label, method, fmt, extra=()):
        configs.append((group, label, "ome-pyramid", method, fmt,
                        lambda out, m=method, f=fmt, e=extra: [binary, "build", str(inputs[f]), out, "--method", m, "-q",
                                                                *zstd1, *e]))

    gaussian_zarrs = ["--gaussian-sigma", "0.6666667,0.6666667,0.6666667", "--gaussian-kernel-half-size", "3,3,3"]
    for method in ["mean", "gaussian"]:
        for fmt in ["v2", "v3"]:
            ours(f"zarrs_ome {method} {fmt}", "ome-pyramid cpu", method, fmt, ("--backend", "cpu", "--levels", "3"))
            if gpu:
                ours(f"zarrs_ome {method} {fmt}", "ome-pyramid gpu", method, fmt, ("--backend", "gpu", "--levels", "3"))
            if zarrs_ome:
                extra = gaussian_zarrs if method == "gaussian" else []
                configs.append((f"zarrs_ome {method} {fmt}", "zarrs_ome", "zarrs_ome", method, fmt,
                                lambda out, f=fmt, e=extra: [zarrs_ome, str(inputs[f]), out, "--max-levels", "2",
                                                             *zarrs_codec, *e]))
        # Sharded OME-NGFF 0.5, the same shards and inner chunks for both.
        group = f"zarrs_ome {method} sharded 0.5 v2"
        ours(group, "ome-pyramid cpu", method, "v2",
             ("--backend", "cpu", "--levels", "3", "--ngff-version", "0.5", "--shards", "128,512,512"))
        if zarrs_ome:
            extra = gaussian_zarrs if method == "gaussian" else []
            configs.append((group, "zarrs_ome", "zarrs_ome", method, "v2",
                            lambda out, e=extra: [zarrs_ome, str(inputs["v2"]), out, "--max-levels", "2",
                                                  "--shard-shape", "128,512,512", "--chunk-shape", "64,256,256",
                                                  *zarrs_codec, *e]))
    xy_only = ("--backend", "cpu", "--factors", "z=1,y=2,x=2", "--levels", "3")
    for method, theirs in [("mean", "local_mean"), ("nearest", "nearest")]:
        group = f"ome-zarr-py {method} (yx only) v2"
        ours(group, "ome-pyramid cpu", method, "v2", xy_only)
        if has_py:
            for path, label in [("memory", "ome-zarr-py"), ("dask", "ome-zarr-py dask")]:
                configs.append((group, label, "ome-zarr-py", method, "v2",
                                lambda out, t=theirs, p=path: [sys.executable, "-c", OME_ZARR_PY, str(inputs["v2"]), out,
                                                               t, "3", p]))
    decode = [binary, "bench", str(inputs["v2"]), "--decode-only", "--json", "-q"]

    results = {}
    failures = {}
    # group -> (build seconds, codec floor seconds) per run of ome-pyramid's cpu build of the v2
    # input, the floor measured around that run: a decode-only pass just before it and an
    # encode-only pass of the levels it wrote just after it.
    floors = {}
    decode_runs = []
    for rep in range(args.repeat):
        for i, (group, label, tool, method, fmt, command) in enumerate(configs):
            out = str(work / f"out-{i}")
            shutil.rmtree(out, ignore_errors=True)
            paired = label == "ome-pyramid cpu" and fmt == "v2" and "0.5" not in group
            if paired:
                decoded = subprocess.run(decode, capture_output=True, text=True, check=True)
                decode_runs.append(json.loads(decoded.stdout)["decode_only"]["seconds"])
            seconds, rss, code, err = run_measured(command(out))
            key = (group, label)
            if code != 0:
                failures[key] = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
                print(f"  {group:40} {label:18} FAILED: {failures[key]}")
                continue
            entry = results.setdefault(key, {"seconds": [], "rss": [], "levels": None, "bytes": 0, "files": 0})
            entry["seconds"].append(seconds)
            entry["rss"].append(rss)
            entry["levels"] = levels_of(out)
            entry["bytes"] = du(out)
            entry["files"] = file_count(out)
            if paired:
                encode_s = encode_seconds(binary, out)
                floors.setdefault(group, []).append((seconds, decode_runs[-1] + encode_s))
                print(f"  run {rep + 1}: {group:40} codec floor: decode {decode_runs[-1]:.2f} s + encode {encode_s:.2f} s")
            shutil.rmtree(out, ignore_errors=True)
            print(f"  run {rep + 1}: {group:40} {label:18} {seconds:7.2f} s {rss / 2**20:7.0f} MiB")
    if not decode_runs:  # no ome-pyramid cpu build of the v2 input ran
        decoded = subprocess.run(decode, capture_output=True, text=True, check=True)
        decode_runs.append(json.loads(decoded.stdout)["decode_only"]["seconds"])
    decode_s = statistics.median(decode_runs)

    lines = []
    lines.append(f"Machine: {machine()}. GPU used: {'yes' if gpu else 'none (no hardware adapter)'}.")
    py_probe = "import importlib.metadata as m; print(m.version('ome-zarr'), 'with zarr', m.version('zarr'))"
    py_version = version([sys.executable, "-c", py_probe]) if has_py else "unavailable"
    zarrs_version = version([zarrs_ome, "--version"]) if zarrs_ome else "zarrs_ome unavailable"
    lines.append(f"Tools: {version([binary, '--version'])}; {zarrs_version}; ome-zarr-py {py_version}.")
    lines.append(f"Input: uint16 [{args.size}] ({input_bytes / 2**20:.0f} MiB), chunks 64×256×256, zstd level 1, "
                 f"Zarr v2 and v3 written by `ome-pyramid synth`. Median of {args.repeat} interleaved runs.")
    lines.append(f"Decode-only pass of the v2 input (every chunk read and decoded once, all cores): "
                 f"{decode_s:.2f} s ({input_bytes / 1e6 / decode_s:.0f} MB/s) — the floor for any tool.")
    lines.append("")
    lines.append("| comparison | tool | median s | input MB/s | peak RSS | levels written (equal work) | output size | files | ome-pyramid is |")
    lines.append("|---|---|---:|---:|---:|---|---:|---:|---:|")
    groups = []
    for group, *_ in configs:
        if group not in groups:
            groups.append(group)
    for group in groups:
        ours_key = (group, "ome-pyramid cpu")
        ours_s = statistics.median(results[ours_key]["seconds"]) if ours_key in results else None
        for (g, label), entry in results.items():
            if g != group:
                continue
            s = statistics.median(entry["seconds"])
            rss = max(entry["rss"])
            levels = " → ".join("×".join(map(str, shape)) for shape in entry["levels"] or [])
            ratio = "" if label.startswith("ome-pyramid") or ours_s is None else f"{s / ours_s:.1f}× faster"
            lines.append(f"| {group} | {label} | {s:.2f} | {input_bytes / 1e6 / s:.0f} | {rss / 2**20:.0f} MiB | {levels} | "
                         f"{entry['bytes'] / 2**20:.0f} MiB | {entry['files']} | {ratio} |")
        for (g, label), why in failures.items():
            if g == group and (g, label) not in results:
                lines.append(f"| {group} | {label} | failed | | | {why} | | | |")
    lines.append("")
    lines.append("ome-zarr-py rows: `ome-zarr-py` is `write_image` on the whole array read into memory (numpy), "
                 "`ome-zarr-py dask` on `dask.array.from_zarr` (its streaming path), both with "
                 "`method=local_mean|nearest` (local_mean truncates) and OME-NGFF 0.4. Both reduce y and x only, "
                 "so ome-pyramid runs with `--factors z=1,y=2,x=2 --levels 3` there. `files`: files in the output, "
                 "metadata included.")
    lines.append("")
    lines.append("Codec floor of each comparison (v2 input): the decode-only pass of the input plus an encode-only "
                 "pass of the levels ome-pyramid wrote above level 0 (`ome-pyramid bench LEVEL --encode-only`: the "
                 "level's chunks decoded, untimed, then encoded again with zstd level 1 on all cores). Any tool must "
                 "at least decode the input and encode those levels; one that re-encodes level 0 pays more. The "
                 "floor is measured around every run of ome-pyramid's build (the decode-only pass just before it, "
                 "the encode-only pass of its output just after it), and `÷ floor` is the median over the runs of "
                 "each run's time over its own floor, with the lowest and highest in brackets: on a shared machine "
                 "the floor drifts with the load as much as the builds do.")
    lines.append("")
    lines.append("| comparison | codec floor s | ome-pyramid s | ome-pyramid ÷ floor | fastest peer s | fastest peer ÷ 10 |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for group in groups:
        if group not in floors:
            continue
        runs = floors[group]
        floor = statistics.median(f for _, f in runs)
        ours_s = statistics.median(b for b, _ in runs)
        ratios = [b / f for b, f in runs]
        ratio = f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"
        peer_s = [statistics.median(e["seconds"]) for (g, label), e in results.items()
                  if g == group and not label.startswith("ome-pyramid")]
        fastest = f"{min(peer_s):.2f}" if peer_s else ""
        # The 10× target is against ome-zarr-py only (zarrs_ome's are 2× and 3×).
        tenth = f"{min(peer_s) / 10:.2f}" if peer_s and group.startswith("ome-zarr-py") else ""
        lines.append(f"| {group} | {floor:.2f} | {ours_s:.2f} | {ratio} | {fastest} | {tenth} |")
    lines.append("")
    lines.append("`fastest peer ÷ 10`: the time a tool ten times faster than the fastest peer of the comparison "
                 "would take. Where it is below the codec floor, no tool can be ten times faster than that peer on "
                 "this machine with this codec.")
    lines.append("")
    lines.append("`ome-pyramid is`: the peer's median time over ome-pyramid's (cpu backend) in the same comparison. "
                 f"ome-pyramid's time over the decode-only floor: "
                 + ", ".join(f"{g.removeprefix('zarrs_ome ')}: {statistics.median(results[(g, 'ome-pyramid cpu')]['seconds']) / decode_s:.1f}×"
                             for g in groups if g.startswith("zarrs_ome") and g.endswith("v2") and (g, 'ome-pyramid cpu') in results)
                 + ".")
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        replace_section(Path(args.write), START, END, text, "python3 scripts/bench-peers.py --repeat "
                        f"{args.repeat}" + (f" --size {args.size}" if args.size != "256,1024,1024" else ""))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def scaling(args):
    binary, _, _ = find_tools(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scaling-", dir=ROOT / "target"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = {"0.5 GiB": "256,1024,1024", "2 GiB": "256,2048,2048", "8 GiB": "1024,2048,2048"}
    if args.quick:
        sizes = {"8 MiB": "16,512,512", "32 MiB": "64,512,512", "128 MiB": "256,512,512"}
    lines = [f"Machine: {machine()}.",
             "Input: uint16, chunks 64×256×256, zstd level 1 (`ome-pyramid synth`); output zstd level 1, "
             "cpu backend, default levels (until the top fits one chunk).", "",
             "| input | method | output | --memory | levels | time s | input MB/s | s per GiB | peak RSS |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for label, size in sizes.items():
        path = work / f"scaling-{size.replace(',', 'x')}.zarr"
        make_input(binary, path, size, "v2")
        n = 2 * eval("*".join(size.split(",")))
        for method, memory, version in [("mean", "256MiB", "0.4"), ("gaussian", "256MiB", "0.4"),
                                        ("gaussian", "2GiB", "0.4"), ("mean", "256MiB", "0.5")]:
            out = work / "scaling-out"
            shutil.rmtree(out, ignore_errors=True)
            seconds, rss, code, err = run_measured([binary, "build", str(path), str(out), "--method", method, "--memory", memory,
                                                    "--compression", "zstd", "--clevel", "1", "-q", "--backend", "cpu",
                                                    "--ngff-version", version])
            if code != 0:
                raise SystemExit(f"{label} {method} failed: {err}")
            levels = len(levels_of(out))
            layout = "0.4" if version == "0.4" else "0.5 sharded"
            if version == "0.5":
                dims = [int(v) for v in size.split(",")]
                chunks = 1
                for extent, chunk in zip(dims, [64, 256, 256]):
                    chunks *= -(-extent // chunk)
                files = file_count(out / "0" / "c")
                layout += f" ({files} file{'' if files == 1 else 's'} for {chunks} chunks at level 0)"
            shutil.rmtree(out, ignore_errors=True)
            row = (f"| {label} | {method} | {layout} | {memory} | {levels} | {seconds:.1f} | {n / 1e6 / seconds:.0f} | "
                   f"{seconds / (n / 2**30):.1f} | {rss / 2**20:.0f} MiB |")
            print(row)
            lines.append(row)
        if not args.keep_inputs:
            shutil.rmtree(path, ignore_errors=True)
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        replace_section(Path(args.write), SCALE_START, SCALE_END, text, "python3 scripts/bench-peers.py --scaling"
                        + (" --quick" if args.quick else ""))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def tiff_tools(args):
    """ome-pyramid, and which of tifffile, ome-zarr-py and ngff-zarr python3 can import."""
    binary = ROOT / "target" / "release" / "ome-pyramid"
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)

    def importable(*modules):
        return subprocess.run([sys.executable, "-c", "import " + ", ".join(modules)],
                              capture_output=True).returncode == 0

    modules = {"tifffile": ("tifffile", "numpy", "scipy", "zarr"), "ome-zarr-py": ("ome_zarr", "dask", "numcodecs"),
               "ngff-zarr": ("ngff_zarr.cli",)}
    have = {name: importable(*mods) for name, mods in modules.items()}
    if not all(have.values()) and args.install:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(ROOT / "scripts/bench-requirements.txt")],
                       check=True)
        have = {name: importable(*mods) for name, mods in modules.items()}
    if not have["tifffile"]:
        raise SystemExit("tifffile (with numpy, scipy and zarr) is needed to write the TIFF input: "
                         "pip install -r scripts/bench-requirements.txt")
    for name in ("ome-zarr-py", "ngff-zarr"):
        if not have[name]:
            print(f"note: {name} not importable (pip install -r scripts/bench-requirements.txt); its rows say so")
    return str(binary), have


def tiff_shape(gib, quick):
    """A z stack of 2048×2048 uint16 pages (8 MiB each), 128 pages per GiB."""
    if quick:
        return (32, 512, 512)
    return (max(1, round(128 * gib)), 2048, 2048)


def make_tiff(work, shape):
    """The tiled BigTIFF of this shape in work, written once and reused while it exists."""
    path = work / f"tiff-{'x'.join(map(str, shape))}.tif"
    if path.exists():
        print(f"reusing {path}")
        return path
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", MAKE_TIFF, str(path), *map(str, shape), "256"], check=True)
    Path(str(path) + ".part").rename(path)
    os.sync()
    print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - start:.0f} s")
    return path


def verify_tiff(src, out, mode, tiles=16):
    """Compares ours' level 0 (and level 1 with mode "yx2") with the TIFF's pixels on random tiles."""
    res = subprocess.run([sys.executable, "-c", VERIFY_TIFF, str(src), str(out), str(tiles), mode],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout)


def py_versions():
    probe = ("import importlib.metadata as m\n"
             "for name in ['tifffile', 'ome-zarr', 'zarr', 'dask', 'ngff-zarr', 'itkwasm-downsample']:\n"
             "    try: print(name, m.version(name))\n"
             "    except m.PackageNotFoundError: print(name, 'unavailable')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def tiff(args):
    binary, have = tiff_tools(args)
    repeat = args.repeat or 1
    work = Path(args.workdir) if args.workdir else ROOT / "target" / "bench-tiff"
    work.mkdir(parents=True, exist_ok=True)
    shape = tiff_shape(args.tiff_gib, args.quick)
    src = make_tiff(work, shape)
    warm = make_tiff(work, (8, 512, 512))
    input_bytes = 2 * shape[0] * shape[1] * shape[2]
    timeout = args.tiff_timeout
    levels = 3
    ngff_common = ["-m", "itkwasm_bin_shrink", "--ome-zarr-version", "0.4", "-c", "64", "256", "256",
                   "--codec", "zstd", "--compression-level", "1", "-q"]
    ours_flags = ["--factors", "z=1,y=2,x=2", "--levels", str(levels), "--compression", "zstd", "--clevel", "1",
                  "--memory", "256MiB", "--backend", "cpu", "--ngff-version", "0.4", "--chunks", "64,256,256"]
    # (label, how it is run, command(src, out) or None with the reason it cannot run)
    configs = [("ome-pyramid cpu", f"`ome-pyramid build IN.tif OUT {' '.join(ours_flags)}`",
                lambda i, o: [binary, "build", str(i), str(o), *ours_flags, "-q"])]
    for path, label, how in [("memory", "tifffile + ome-zarr-py",
                              "`tifffile.imread(IN)` (numpy, whole volume in memory), then `write_image`"),
                             ("dask", "tifffile + ome-zarr-py dask",
                              "`dask.array.from_zarr(tifffile.imread(IN, aszarr=True))` (its streaming path), then "
                              "`write_image`")]:
        how += (" with `scale_factors=(2, 4)`, `method=local_mean`, `FormatV04`, chunks (64, 256, 256), "
                "`numcodecs.Zstd(level=1)`")
        command = (lambda i, o, p=path: [sys.executable, "-c", TIFF_OME_ZARR_PY, str(i), str(o), "local_mean",
                                         str(levels), p]) if have["ome-zarr-py"] else \
            "ome-zarr-py not installed (pip install -r scripts/bench-requirements.txt)"
        configs.append((label, how, command))
    for lv, label, how in [
            ("auto", "ngff-zarr cli", f"`ngff-zarr -i IN.tif -o OUT.ome.zarr {' '.join(ngff_common)}` "
                                      "(its own levels: the command line has no option for scale factors)"),
            (str(levels), "ngff-zarr cli, our levels",
             "the same command with its `to_multiscales` given `scale_factors` "
             "[{z: 1, y: 2, x: 2}, {z: 1, y: 4, x: 4}] (ours'), which its command line cannot set")]:
        command = (lambda i, o, lv=lv: [sys.executable, "-c", NGFF_ZARR_CLI, lv, "-i", str(i), "-o", str(o),
                                        *ngff_common]) if have["ngff-zarr"] else \
            "ngff-zarr not installed (pip install -r scripts/bench-requirements.txt)"
        configs.append((label, how, command))

    # Untimed warm-up on a small TIFF: imports compiled, itkwasm's WebAssembly modules compiled
    # and cached, so the timed runs do not pay first-use costs.
    for i, (label, _, command) in enumerate(configs):
        if callable(command):
            out = work / f"warmup-{i}.ome.zarr"
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run(command(warm, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.rmtree(out, ignore_errors=True)

    results, failures, checks, encode_runs, warnings = {}, {}, [], [], set()
    for label, _, command in configs:
        if not callable(command):
            failures[label] = command
    for rep in range(repeat):
        for i, (label, _, command) in enumerate(configs):
            if label in failures:
                continue
            out = work / f"out-{i}.ome.zarr"
            shutil.rmtree(out, ignore_errors=True)
            usage = {}
            os.sync()  # the previous run's output is on disk, not being written back during this run
            seconds, rss, code, err = run_measured(command(src, out), timeout=timeout, usage_out=usage)
            if label == "ome-pyramid cpu":
                warnings.update(line.strip() for line in err.splitlines() if "WARN" in line)
            if code is None:
                failures[label] = f"did not finish in {timeout / 60:.0f} min (stopped)"
            elif code != 0:
                failures[label] = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
            if label in failures:
                print(f"  run {rep + 1}: {label:28} FAILED: {failures[label]}")
                shutil.rmtree(out, ignore_errors=True)
                continue
            entry = results.setdefault(label, {"seconds": [], "rss": [], "levels": None, "bytes": 0, "files": 0,
                                               "cpu": [], "others": []})
            entry["seconds"].append(seconds)
            entry["rss"].append(rss)
            entry["cpu"].append(usage.get("cpu_s", 0.0))
            entry["others"].append(usage.get("others", 0.0))
            entry["levels"] = levels_of(out)
            entry["bytes"] = du(out)
            entry["files"] = file_count(out)
            if label == "ome-pyramid cpu":
                check = verify_tiff(src, out, "yx2")
                checks.append(check)
                print(f"  pixels: {check}")
                encode_runs.append(encode_seconds(binary, out, first=0))
            shutil.rmtree(out, ignore_errors=True)
            print(f"  run {rep + 1}: {label:28} {seconds:7.2f} s {rss / 2**20:7.0f} MiB  cpu {usage.get('cpu_s', 0):6.1f} s  "
                  f"others {100 * usage.get('others', 0):3.0f}%  levels {entry['levels']}")
    read_runs = [tuple(map(float, subprocess.run([sys.executable, "-c", TIFF_READ, str(src)], capture_output=True,
                                                 text=True, check=True).stdout.split())) for _ in range(repeat)]

    bad = [c for c in checks if "error" in c or c["level0_mismatched"] or c["level1_mismatched"]]
    ours = results.get("ome-pyramid cpu")
    ours_levels = ours["levels"] if ours else None
    ours_s = statistics.median(ours["seconds"]) if ours else None
    versions = py_versions()
    lines = [f"Machine: {machine()}.",
             f"Tools: {version([binary, '--version'])}; tifffile {versions.get('tifffile')}; "
             f"ome-zarr-py {versions.get('ome-zarr')} with zarr {versions.get('zarr')} and dask {versions.get('dask')}; "
             f"ngff-zarr {versions.get('ngff-zarr')} with itkwasm-downsample {versions.get('itkwasm-downsample')}.",
             f"Input: a tiled BigTIFF, uint16 [{','.join(map(str, shape))}] ({input_bytes / 2**30:.2f} GiB), "
             f"{shape[0]} pages of 256×256 tiles, uncompressed (the layout light-sheet acquisition and stitching "
             "software commonly writes), written by tifffile; in the page cache for every run. "
             f"Output: {levels} levels halving y and x only (z kept: ome-zarr-py does not reduce z), "
             f"chunks 64×256×256, zstd level 1, OME-NGFF 0.4. Median of {repeat} interleaved "
             f"run{'s' if repeat > 1 else ''}, each tool its own process (peak RSS from wait4), dirty pages flushed "
             "(`sync`) before each run.", "",
             "| tool | median s | input MB/s | CPU s | peak RSS | levels written | output size | files | ome-pyramid is |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for label, _, _ in configs:
        if label in results:
            entry = results[label]
            s = statistics.median(entry["seconds"])
            lv = " → ".join("×".join(map(str, shape)) for shape in entry["levels"] or [])
            if ours_levels and entry["levels"] != ours_levels:
                lv += " (not ours)"
            ratio = "" if label == "ome-pyramid cpu" or ours_s is None else f"{s / ours_s:.1f}× faster"
            lines.append(f"| {label} | {s:.2f} | {input_bytes / 1e6 / s:.0f} | {statistics.median(entry['cpu']):.1f} | "
                         f"{max(entry['rss']) / 2**20:.0f} MiB | {lv} | {entry['bytes'] / 2**20:.0f} MiB | "
                         f"{entry['files']} | {ratio} |")
        else:
            lines.append(f"| {label} | — | | | | {failures.get(label, 'not run')} | | | |")
    others = max((o for e in results.values() for o in e["others"]), default=0.0)
    lines.append("")
    lines.append(f"`CPU s`: user + system CPU-seconds of the tool's process (the machine has {os.cpu_count()} cores). "
                 f"Other processes used at most {100 * others:.0f}% of the machine during any timed run"
                 + (" (a quiet machine)." if others < 0.05 else
                    " — **the machine was not quiet; these times are not comparable with a quiet run.**"))
    lines.append("")
    lines.append("How each row ran:")
    for label, how, _ in configs:
        lines.append(f"- {label}: {how}.")
    lines.append("")
    lines.append("What differs: every row writes the same levels with the same codec and chunks except `ngff-zarr cli`, "
                 "whose command line picks its levels itself (listed in its row). The mean rounds differently: "
                 "ome-pyramid rounds half to even, ome-zarr-py's `local_mean` truncates, ngff-zarr's bin shrink rounds "
                 "half up, so levels above 0 differ by rounding between tools. ome-pyramid and ngff-zarr also write an "
                 "`omero` display window (ngff-zarr from quantiles of a level), ome-zarr-py does not.")
    lines.append("")
    floor_read = statistics.median(r[0] for r in read_runs)
    tifffile_read = statistics.median(r[1] for r in read_runs)
    floor_encode = statistics.median(encode_runs) if encode_runs else None
    line = (f"Floors (in one process each, start-up not counted): reading the file's bytes once (16 MiB blocks, from "
            f"the page cache) takes {floor_read:.2f} s ({input_bytes / 1e6 / floor_read:.0f} MB/s); tifffile reading "
            f"every tile once (`page.asarray()` for every page) {tifffile_read:.2f} s "
            f"({input_bytes / 1e6 / tifffile_read:.0f} MB/s)")
    if floor_encode is not None:
        line += (f"; encoding again the levels ome-pyramid wrote, level 0 included, with zstd level 1 on all cores "
                 f"(`ome-pyramid bench LEVEL --encode-only`, the chunks decoded first, untimed) "
                 f"{floor_encode:.2f} s. Any tool must read the TIFF and encode every level: "
                 f"{floor_read + floor_encode:.2f} s together; ome-pyramid took {ours_s / (floor_read + floor_encode):.1f}× "
                 f"that")
    lines.append(line + ".")
    if warnings:
        lines.append("")
        lines.append("ome-pyramid's warnings in these runs: " + "; ".join(f"`{w}`" for w in sorted(warnings)) + ".")
    if checks:
        lines.append("")
        tiles = checks[-1].get("tiles")
        lines.append(f"Pixels: ome-pyramid's level 0 equals the TIFF's pixels (read with tifffile) on {tiles} tiles "
                     "of 256×256 (the first, the last and random ones), and its level 1 equals their 2×2 mean rounded "
                     "half to even, in every run." if not bad else
                     f"**Pixels: ome-pyramid's output differs from the TIFF: {bad}.**")
    text = "\n".join(lines)
    print("\n" + text)
    if not args.keep_inputs:
        src.unlink(missing_ok=True)
        warm.unlink(missing_ok=True)
    if bad:
        raise SystemExit(f"ome-pyramid's output differs from the TIFF's pixels: {bad}")
    if ours is None:
        raise SystemExit(f"ome-pyramid failed on the TIFF: {failures.get('ome-pyramid cpu')}")
    if args.write:
        command = "python3 scripts/bench-peers.py --tiff" + (" --quick" if args.quick else f" --tiff-gib {args.tiff_gib:g}")
        command += f" --repeat {repeat}"
        replace_tiff_section(Path(args.write), TIFF_START, TIFF_END, text, command)


def tiff_memory_check(args):
    binary, _ = tiff_tools(args)
    work = Path(args.workdir) if args.workdir else ROOT / "target" / "bench-tiff"
    work.mkdir(parents=True, exist_ok=True)
    shape = (64, 512, 512) if args.quick else (512, 2048, 2048)
    src = make_tiff(work, shape)
    input_bytes = 2 * shape[0] * shape[1] * shape[2]
    out = work / "memory-check.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    limit = 384 * 2**20
    command = [binary, "build", str(src), str(out), "--memory", "256MiB", "-q"]
    os.sync()
    usage = {}
    seconds, rss, code, err = run_measured(command, usage_out=usage)
    warned = [line.strip() for line in err.splitlines() if "WARN" in line]
    if code != 0:
        raise SystemExit(f"ome-pyramid failed on the TIFF: {err}")
    lv = levels_of(out)
    zarray = json.loads((out / "0" / ".zarray").read_text()) if (out / "0" / ".zarray").exists() else {}
    check = verify_tiff(src, out, "level0")
    size, files = du(out), file_count(out)
    shutil.rmtree(out, ignore_errors=True)
    if not args.keep_inputs:
        src.unlink(missing_ok=True)
    verdict = "under" if rss < limit else "**over**"
    lines = [f"Machine: {machine()}.",
             f"Input: a tiled BigTIFF as above, uint16 [{','.join(map(str, shape))}] ({input_bytes / 2**30:.2f} GiB), "
             f"256×256 tiles, uncompressed. Command: `ome-pyramid build IN.tif OUT --memory 256MiB -q` (default "
             f"options otherwise: backend auto, which is the CPU here, and the default levels, factors, chunks and "
             f"codec; this run wrote chunks {zarray.get('chunks')} with compressor {zarray.get('compressor')}).", "",
             "| input | --memory | levels written | time s | input MB/s | peak RSS | target | output size | files |",
             "|---|---|---|---:|---:|---:|---|---:|---:|",
             f"| {input_bytes / 2**30:.2f} GiB TIFF | 256MiB | {' → '.join('×'.join(map(str, s)) for s in lv or [])} | "
             f"{seconds:.1f} | {input_bytes / 1e6 / seconds:.0f} | {rss / 2**20:.0f} MiB | < 384 MiB: {verdict} | "
             f"{size / 2**20:.0f} MiB | {files} |"]
    bad = "error" in check or check["level0_mismatched"]
    lines.append("")
    lines.append(f"CPU: {usage.get('cpu_s', 0):.1f} s (user + system); other processes used "
                 f"{100 * usage.get('others', 0):.0f}% of the machine during the run."
                 + (" ome-pyramid warned: " + "; ".join(f"`{w}`" for w in warned) + "." if warned else ""))
    lines.append(f"Pixels: level 0 equals the TIFF's pixels on {check.get('tiles')} tiles of 256×256." if not bad else
                 f"**Pixels: level 0 differs from the TIFF: {check}.**")
    text = "\n".join(lines)
    print("\n" + text)
    if bad:
        raise SystemExit(f"ome-pyramid's output differs from the TIFF's pixels: {check}")
    if args.write:
        replace_tiff_section(Path(args.write), TIFF_MEM_START, TIFF_MEM_END, text,
                             "python3 scripts/bench-peers.py --tiff-memory-check" + (" --quick" if args.quick else ""))
    if rss >= limit:
        raise SystemExit(f"peak RSS {rss / 2**20:.0f} MiB is over the 384 MiB target")


def replace_tiff_section(path, start, end, text, command):
    """Like replace_section, but the markers live in the "## TIFF → pyramid" section, which is made
    (before "## GPU", else at the end) with the markers of both TIFF modes if it is missing."""
    doc = path.read_text() if path.exists() else ""
    if start not in doc:
        pairs = [(TIFF_START, TIFF_END), (TIFF_MEM_START, TIFF_MEM_END)]
        if TIFF_SECTION in doc:
            # The section is there but lacks these markers: put them after the other pair's.
            other_end = TIFF_MEM_END if start == TIFF_START else TIFF_END
            anchor = other_end if other_end in doc else TIFF_SECTION
            head, tail = doc.split(anchor, 1)
            doc = head + anchor + f"\n\n{start}\n{end}" + tail
        else:
            section = TIFF_SECTION + "\n\n" + "\n\n".join(f"{a}\n{b}" for a, b in pairs) + "\n\n"
            if "\n## GPU" in doc:
                head, tail = doc.split("\n## GPU", 1)
                doc = head.rstrip() + "\n\n" + section + "## GPU" + tail
            else:
                doc = doc.rstrip() + "\n\n" + section
        path.write_text(doc)
    replace_section(path, start, end, text, command)


def replace_section(path, start, end, text, command):
    stamp = time.strftime("%Y-%m-%d")
    block = f"{start}\nProduced by `{command}` on {stamp}.\n\n{text}\n{end}"
    doc = path.read_text() if path.exists() else ""
    if start in doc and end in doc:
        head, rest = doc.split(start, 1)
        _, tail = rest.split(end, 1)
        doc = head + block + tail
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, help="runs of every configuration (default 3; 1 with --tiff)")
    parser.add_argument("--size", default="256,1024,1024", help="input shape z,y,x (uint16)")
    parser.add_argument("--workdir", help="keep inputs here (default: a temporary directory under target/)")
    parser.add_argument("--write", help="update this markdown file between the markers")
    parser.add_argument("--scaling", action="store_true", help="0.5, 2 and 8 GiB inputs, --memory 256MiB (and 2GiB for gaussian)")
    parser.add_argument("--quick", action="store_true", help="with --scaling or --tiff*: small inputs, to try the script")
    parser.add_argument("--tiff", action="store_true", help="a tiled BigTIFF input against tifffile + ome-zarr-py and ngff-zarr")
    parser.add_argument("--tiff-gib", type=float, default=2, help="with --tiff: input size in GiB (2048×2048 pages)")
    parser.add_argument("--tiff-timeout", type=float, default=1200, help="with --tiff: seconds before a run is stopped")
    parser.add_argument("--tiff-memory-check", action="store_true",
                        help="a 4 GiB tiled BigTIFF, ome-pyramid alone at --memory 256MiB: peak RSS must stay under 384 MiB")
    parser.add_argument("--keep-inputs", action="store_true")
    parser.add_argument("--install", action="store_true", help="install missing peers (cargo install, pip)")
    parser.add_argument("--no-build", action="store_true", help="use target/release/ome-pyramid as it is")
    args = parser.parse_args()
    if args.tiff_memory_check:
        tiff_memory_check(args)
    elif args.tiff:
        tiff(args)
    else:
        args.repeat = args.repeat or 3
        (scaling if args.scaling else peers)(args)


if __name__ == "__main__":
    main()
