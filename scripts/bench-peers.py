#!/usr/bin/env python3
"""Times ome-pyramid against its peers on the same input, interleaved, in one run.

    python3 scripts/bench-peers.py [--repeat 3] [--write BENCHMARKS.md]
    python3 scripts/bench-peers.py --scaling [--write BENCHMARKS.md]

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
writing those levels with that codec must at least spend.

--scaling builds 0.5, 2 and 8 GiB inputs with --memory 256MiB and reports time and peak RSS
(memory must stay flat while time grows linearly), for OME-NGFF 0.4 and for sharded 0.5 (with
the files of level 0 against its inner chunks).

With --write FILE, the results replace the section between the peer-bench markers of FILE.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- peer-bench:start -->", "<!-- peer-bench:end -->"
SCALE_START, SCALE_END = "<!-- scaling:start -->", "<!-- scaling:end -->"

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


def run_measured(cmd, env=None):
    """Runs cmd; returns (seconds, peak RSS bytes, returncode, stderr tail)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
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


def encode_seconds(binary, pyramid):
    """Seconds to encode again, with their own codec and all cores, the levels above 0 of an
    OME-Zarr pyramid (`ome-pyramid bench LEVEL --encode-only`, which decodes first, untimed)."""
    attrs = json.loads((Path(pyramid) / ".zattrs").read_text())
    total = 0.0
    for d in attrs["multiscales"][0]["datasets"][1:]:
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
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(ROOT / "scripts/requirements.txt")], check=True)
        has_py = True
    if not has_py:
        print("note: ome-zarr-py not importable (pip install -r scripts/requirements.txt); skipping it")
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
    floors = {}  # group -> encode-only seconds of the levels above 0, per run
    for rep in range(args.repeat):
        for i, (group, label, tool, method, fmt, command) in enumerate(configs):
            out = str(work / f"out-{i}")
            shutil.rmtree(out, ignore_errors=True)
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
            if label == "ome-pyramid cpu" and fmt == "v2" and (Path(out) / ".zattrs").exists():
                floors.setdefault(group, []).append(encode_seconds(binary, out))
            shutil.rmtree(out, ignore_errors=True)
            print(f"  run {rep + 1}: {group:40} {label:18} {seconds:7.2f} s {rss / 2**20:7.0f} MiB")
    decode_runs = []
    for _ in range(args.repeat):
        out = subprocess.run(decode, capture_output=True, text=True, check=True)
        decode_runs.append(json.loads(out.stdout)["decode_only"]["seconds"])
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
                 "at least decode the input and encode those levels; one that re-encodes level 0 pays more.")
    lines.append("")
    lines.append("| comparison | codec floor s | ome-pyramid s | ome-pyramid ÷ floor | fastest peer s | fastest peer ÷ 10 |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for group in groups:
        if group not in floors or (group, "ome-pyramid cpu") not in results:
            continue
        floor = decode_s + statistics.median(floors[group])
        ours_s = statistics.median(results[(group, "ome-pyramid cpu")]["seconds"])
        peer_s = [statistics.median(e["seconds"]) for (g, label), e in results.items()
                  if g == group and not label.startswith("ome-pyramid")]
        fastest = f"{min(peer_s):.2f}" if peer_s else ""
        # The 10× target is against ome-zarr-py only (zarrs_ome's are 2× and 3×).
        tenth = f"{min(peer_s) / 10:.2f}" if peer_s and group.startswith("ome-zarr-py") else ""
        lines.append(f"| {group} | {floor:.2f} | {ours_s:.2f} | {ours_s / floor:.1f}× | {fastest} | {tenth} |")
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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", default="256,1024,1024", help="input shape z,y,x (uint16)")
    parser.add_argument("--workdir", help="keep inputs here (default: a temporary directory under target/)")
    parser.add_argument("--write", help="update this markdown file between the markers")
    parser.add_argument("--scaling", action="store_true", help="0.5, 2 and 8 GiB inputs, --memory 256MiB (and 2GiB for gaussian)")
    parser.add_argument("--quick", action="store_true", help="with --scaling: small inputs, to try the script")
    parser.add_argument("--keep-inputs", action="store_true")
    parser.add_argument("--install", action="store_true", help="install missing peers (cargo install, pip)")
    parser.add_argument("--no-build", action="store_true", help="use target/release/ome-pyramid as it is")
    args = parser.parse_args()
    (scaling if args.scaling else peers)(args)


if __name__ == "__main__":
    main()
