#!/usr/bin/env bash
# One-command GPU report: on a machine with a GPU, the kernel benches (CPU, and on the GPU the
# upload, kernel, readback and end-to-end rates next to the device's copy bandwidth) and the
# CPU-against-GPU end-to-end comparison (cpu, gpu and auto, all cores) on a synthetic volume
# of at least 16 GiB, and on a time series chunked one plane per time point and channel
# (small tiles, which the GPU computes in batches), written as Markdown tables with the
# device and machine named.
#
#   scripts/gpu-report.sh [--smoke] [--out FILE] [--workdir DIR] [--size Z,Y,X]
#
#   --smoke     the whole report on a tiny volume (seconds; lavapipe where there is no GPU,
#               and auto may then measure lavapipe too); CI runs this
#   --out       where the Markdown goes (default: gpu-report.md; the JSON beside it)
#   --workdir   where the synthetic volume and the outputs go (default: a folder here)
#   --size      the synthetic volume's shape, uint16 (default 2048,2048,2048: 16 GiB)
#
# The binary: $OME_PYRAMID, else .dev/ome-pyramid (the lent-GPU recipe of
# ../shared/gpu/README.md), else target/release/ome-pyramid (built if missing). Where a
# folder `.gl` holds the Vulkan loader's .deb (same recipe), it is unpacked first.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
out=gpu-report.md
workdir=""
size=2048,2048,2048
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) out=$2; shift ;;
    --workdir) workdir=$2; shift ;;
    --size) size=$2; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-report.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -d .gl ] && ls .gl/*.deb >/dev/null 2>&1 && ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi

bin=${OME_PYRAMID:-}
if [ -z "$bin" ]; then
  if [ -x .dev/ome-pyramid ]; then bin=.dev/ome-pyramid
  else
    [ -x target/release/ome-pyramid ] || cargo build --release --quiet
    bin=target/release/ome-pyramid
  fi
fi

# A machine whose NVIDIA driver ships its Vulkan ICD outside the loader's search path.
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ] && ! "$bin" info --gpu --json | grep -q '"used_by_auto": true'; then
  export VK_DRIVER_FILES=$nvidia_icd
fi

# The time series: uint16, one plane per chunk, so that each tile is one plane's source.
if [ "$smoke" = 1 ]; then
  tile=8,32,32; size=16,512,512; repeat=1; memory=256MiB
  planes=8,2,1,128,128; plane_chunks=1,1,1,64,64
  # No hardware GPU in CI: let auto measure lavapipe too, so its choice is exercised.
  export OME_PYRAMID_AUTO_SOFTWARE_GPU=1
  # … and time it although so small a build would not be worth opening a GPU for.
  export OME_PYRAMID_AUTO_MIN_SECONDS=0
else
  tile=64,512,512; repeat=3; memory=16GiB
  planes=256,4,1,1024,1024; plane_chunks=1,1,1,512,512
fi
workdir=${workdir:-.ome-pyramid-gpu-report}
mkdir -p "$workdir"
json_dir=$(dirname "$out")
mkdir -p "$json_dir"
base=$(basename "$out" .md)
kernels_json=$json_dir/$base-kernels.json
builds_json=$json_dir/$base-builds.json
planes_json=$json_dir/$base-planes.json

echo "gpu-report: kernels on a $tile tile …" >&2
"$bin" bench --kernels --backends cpu,gpu --tile "$tile" --dtypes uint8,uint16,float32 \
  --methods nearest,mean,gaussian --repeat "$repeat" --json -q > "$kernels_json"
echo "gpu-report: cpu, gpu and auto end to end on a $size uint16 volume …" >&2
"$bin" bench --size "$size" --dtype uint16 --backends cpu,gpu,auto --methods nearest,mean,gaussian \
  --repeat 1 --memory "$memory" --workdir "$workdir" --json -q > "$builds_json"
rm -rf "$workdir"
mkdir -p "$workdir"
echo "gpu-report: cpu, gpu and auto end to end on a $planes time series, one plane per chunk …" >&2
"$bin" synth --size "$planes" --chunks "$plane_chunks" --dtype uint16 -q "$workdir/planes.zarr"
"$bin" bench "$workdir/planes.zarr" --backends cpu,gpu,auto --methods mean,gaussian \
  --repeat 1 --memory "$memory" --workdir "$workdir" --json -q > "$planes_json"
rm -rf "$workdir"

python3 - "$kernels_json" "$builds_json" "$planes_json" "$out" "$smoke" <<'EOF'
import json, os, sys

kernels = json.load(open(sys.argv[1]))
builds = json.load(open(sys.argv[2]))
planes = json.load(open(sys.argv[3]))
out, smoke = sys.argv[4], sys.argv[5] == "1"
m = kernels["machine"]
device = kernels.get("device") or "none"
if os.environ.get("CI") == "true" and kernels.get("device") is None:
    sys.exit("gpu-report: no GPU adapter found, and CI has lavapipe (mesa-vulkan-drivers)")
if not builds["rows"] or not kernels["rows"] or not planes["rows"]:
    sys.exit("gpu-report: a bench produced no rows")
lines = [
    f"GPU report{' (smoke run: tiny volume, numbers mean nothing)' if smoke else ''}.",
    "",
    f"Device: {device}. Machine: {m['cores']} × {m['cpu']}, {m['memory_bytes'] / 2**30:.0f} GiB.",
    "",
    f"Kernels on a {kernels['tile']} tile (factors {kernels['factors']}), best of {kernels['runs']} runs; "
    f"GPU kernels timed by {'timestamp queries' if kernels.get('kernel_clock') == 'timestamps' else 'the host'}; "
    + (f"device-to-device copy {kernels['copy_gb_per_s']:.1f} GB/s (the ceiling)." if kernels.get("copy_gb_per_s") else "no GPU."),
    "",
    "| method | dtype | CPU GB/s | upload GB/s | kernel GB/s | readback GB/s | GPU end to end GB/s | kernel ÷ copy |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
]
def rate(v):
    return "" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1 else f"{v:.3f}")
for r in kernels["rows"]:
    g = r.get("gpu") or {}
    share = g.get("kernel_share_of_copy")
    share = "" if share is None else "%.0f%%" % (share * 100)
    lines.append(f"| {r['method']} | {r['dtype']} | {rate(r['cpu_gb_per_s'])} | {rate(g.get('upload_gb_per_s'))} | "
                 f"{rate(g.get('kernel_gb_per_s'))} | {rate(g.get('readback_gb_per_s'))} | "
                 f"{rate(g.get('end_to_end_gb_per_s'))} | {share} |")
fused = [r for r in kernels["rows"] if (r.get("gpu") or {}).get("per_axis_kernel_gb_per_s") is not None]
if fused:
    def fused_rates(r):
        g = r["gpu"]
        yx = g.get("yx_fused_kernel_gb_per_s")
        return (f"{r['dtype']} ({g['fused']} fused) {rate(g['per_axis_kernel_gb_per_s'])} GB/s"
                + ("" if yx is None else f", with y–x fused only {rate(yx)} GB/s"))
    lines += ["", "Gaussian runs its passes fused in one dispatch where the tiles fit workgroup memory (z–y–x, else "
              "y–x); with one dispatch per axis instead, the kernel rates were: " + "; ".join(map(fused_rates, fused)) + "."]
small = kernels.get("small_tiles")
if small:
    lines += ["", f"Small tiles ({small['tiles']} staged {small['method']} {small['dtype']} tiles of {small['tile']}, "
              f"as a build computes the tiles queued for the device): {small['alone_us_per_tile']:.0f} µs per tile "
              f"in a submission each, {small['batched_us_per_tile']:.0f} µs in one submission."]
def busy(r):
    """The workers' task time over their threads × the wall time, and the GPU submission
    threads' (the compute stage where the backend has them): which side keeps the other
    waiting."""
    stages, wall = r.get("stage_seconds"), r["seconds"]
    if not stages or wall <= 0:
        return "", ""
    read, compute, write = stages
    gpu_threads = r.get("compute_threads", 0)
    workers = read + write + (compute if gpu_threads == 0 else 0)
    share = lambda seconds, threads: "%.0f%%" % (100 * seconds / (threads * wall))
    return share(workers, r["threads"]), ("" if gpu_threads == 0 else f"{share(compute, gpu_threads)} of {gpu_threads}")
def end_to_end(report, what):
    """The end-to-end table of one `bench --json` report."""
    gib = report["input_bytes"] / 2**30
    rows = [
        "",
        f"End to end, {what}: {report['dtype']} {report['shape']} ({gib:.1f} GiB), codec {report['codec']}; "
        f"decode-only pass {report['decode_only']['seconds']:.2f} s.",
        "",
        "| method | backend | time s | input MB/s | peak RSS | ÷ decode-only | CPU time ÷ this | workers busy | GPU threads busy | tiles staged | submissions |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cpu_time = {r["method"]: r["seconds"] for r in report["rows"] if r["backend"].startswith("cpu") and "auto" not in r["backend"]}
    for r in report["rows"]:
        rss = r.get("peak_rss_bytes")
        rss = "" if rss is None else "%.0f MiB" % (rss / 2**20)
        cpu = cpu_time.get(r["method"])
        speedup = "" if cpu is None else "%.2f×" % (cpu / r["seconds"])
        workers, gpu_threads = busy(r)
        rows.append(f"| {r['method']} | {r['backend']} | {r['seconds']:.2f} | {r['input_mb_per_s']:.0f} | "
                    f"{rss} | {r['times_decode_only']:.2f}× | {speedup} | {workers} | {gpu_threads} | "
                    f"{r.get('tiles_staged', 0)} | {r.get('staged_batches', 0)} |")
    return rows
lines += end_to_end(builds, "a volume")
lines += end_to_end(planes, "a time series chunked one plane per time point and channel (small tiles)")
lines += [
    "",
    "`workers busy`: the workers' read, write (and, without GPU threads, compute) time summed over tasks, over "
    "their threads × the wall time; `GPU threads busy`: the submission threads' time (upload, kernels, readback, "
    "waiting on the device included) over theirs. Workers near 100% with GPU threads well below: the codecs on "
    "the CPU are the bottleneck, and a faster GPU gains nothing; the reverse: the device is. `tiles staged`: "
    "source tiles the workers read straight into the GPU's staging memory (the others went through a host tile "
    "and the submission thread's copy); `submissions`: the submissions they were computed in (small tiles queued "
    "for the device go in batches of up to 32 MiB).",
    "",
    "Targets (issue 15): kernels at ≥ 50% of the copy bandwidth; gaussian on the GPU ≥ 1.5× the CPU end to end; "
    "auto never slower than the CPU (the rows come in the order cpu, gpu, auto per method; the backend column "
    "of an auto row gives its measured reason).",
]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
EOF
echo "gpu-report: written to $out (JSON: $kernels_json, $builds_json, $planes_json)" >&2
