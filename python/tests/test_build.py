"""`ome_pyramid.build`: the CLI's build, byte for byte, with a report, progress, Python
exceptions, the GIL released while it works, and Ctrl-C that stops it resumably."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import level, tree_bytes, volume

import ome_pyramid


@pytest.mark.parametrize(
    ("cli_args", "kwargs"),
    [
        ([], {}),
        (
            ["--method", "gaussian", "--ngff-version", "0.5", "--compression", "zstd", "--chunks", "16,64,64"],
            {"method": "gaussian", "ngff_version": "0.5", "compression": "zstd", "chunks": [16, 64, 64]},
        ),
        (
            ["--levels", "2", "--factors", "z=1,y=2,x=2", "--scale", "z=2,y=0.5,x=0.5", "--unit", "micrometer"],
            {"levels": 2, "factors": {"z": 1, "y": 2, "x": 2}, "scale": {"z": 2, "y": 0.5, "x": 0.5}, "unit": "micrometer"},
        ),
    ],
)
def test_build_writes_what_the_cli_writes_byte_for_byte(cli, zarr_input, fresh, cli_args, kwargs):
    source, _ = zarr_input
    by_cli, by_python = fresh("cli.ome.zarr"), fresh("python.ome.zarr")
    common = ["--backend", "cpu", "--threads", "2"]
    subprocess.run([cli, "build", source, by_cli, *common, *cli_args, "--quiet"], check=True)
    report = ome_pyramid.build(source, by_python, backend="cpu", threads=2, **kwargs)
    assert tree_bytes(by_python) == tree_bytes(by_cli)
    assert report.output == str(by_python)
    assert report.backend == "cpu, 2 threads"
    assert [lv.level for lv in report.levels] == list(range(len(report.levels)))


def test_the_report_describes_the_levels_as_the_metadata_does(zarr_input, fresh):
    source, data = zarr_input
    output = fresh("out.ome.zarr")
    report = ome_pyramid.build(source, output, scale={"z": 1.0, "y": 0.5, "x": 0.5}, backend="cpu")
    assert isinstance(report, ome_pyramid.BuildReport)
    assert report.levels[0].shape == list(data.shape)
    assert report.method == "mean" and report.dtype == "uint16"
    assert report.seconds > 0 and report.input_mb_per_s > 0
    assert report.input_bytes == data.nbytes
    assert "stage_seconds" in report.details
    multiscale = ome_pyramid.info(output)
    for lv, array in zip(report.levels, multiscale["arrays"], strict=True):
        transforms = {t["type"]: t[t["type"]] for t in array["coordinateTransformations"]}
        assert transforms["scale"] == pytest.approx(lv.scale)
        assert transforms.get("translation", [0.0] * len(lv.scale)) == pytest.approx(lv.translation)
        assert array["shape"] == lv.shape
        assert np.array_equal(level(output, lv.level).shape, lv.shape)


def test_progress_is_called_with_done_and_total_at_a_bounded_rate(zarr_input, fresh):
    source, _ = zarr_input
    calls: list[tuple[int, int]] = []
    ome_pyramid.build(source, fresh("out.ome.zarr"), chunks=[8, 32, 32], progress=lambda d, t: calls.append((d, t)))
    assert calls, "the callback was never called"
    totals = {t for _, t in calls}
    assert len(totals) == 1 and totals.pop() > 50
    done = [d for d, _ in calls]
    assert done == sorted(done), "progress never goes back"
    assert calls[-1][0] == calls[-1][1], "the last call says the build is complete"
    assert len(calls) < calls[-1][1], "calls are rate-limited, not one per chunk"


def test_an_exception_in_the_progress_callback_stops_the_build(tmp_path, fresh):
    source = big_input(tmp_path)
    output = fresh("out.ome.zarr")
    options = {"method": "gaussian", "threads": 1, "chunks": [16, 64, 64]}

    def fail(done: int, total: int) -> None:
        raise ZeroDivisionError("callback says no")

    with pytest.raises(ZeroDivisionError, match="callback says no"):
        ome_pyramid.build(source, output, progress=fail, **options)
    assert not has_multiscales(output), "stopped before the metadata: the group claims no levels"
    ome_pyramid.build(source, output, resume=True, **options)
    assert has_multiscales(output)


def has_multiscales(output: Path) -> bool:
    attributes = output / ".zattrs"
    return attributes.exists() and "multiscales" in attributes.read_text()


def test_invalid_requests_raise_invalid_input_error_with_the_cli_message(zarr_input, fresh, tmp_path):
    source, _ = zarr_input
    with pytest.raises(ome_pyramid.InvalidInputError, match="does not exist") as missing:
        ome_pyramid.build(tmp_path / "nowhere.zarr", fresh("a.ome.zarr"))
    assert isinstance(missing.value, ValueError)
    with pytest.raises(ome_pyramid.InvalidInputError, match="method"):
        ome_pyramid.build(source, fresh("b.ome.zarr"), method="median")
    with pytest.raises(ome_pyramid.InvalidInputError, match="levels: expected a positive int, got str"):
        ome_pyramid.build(source, fresh("c.ome.zarr"), levels="3")  # type: ignore[arg-type]
    with pytest.raises(ome_pyramid.InvalidInputError, match="factor of axis `y` must be at least 1"):
        ome_pyramid.build(source, fresh("d.ome.zarr"), factors={"y": 0})
    with pytest.raises(ome_pyramid.InvalidInputError, match="not an axis"):
        ome_pyramid.build(source, fresh("e.ome.zarr"), scale={"w": 2.0})
    with pytest.raises(ome_pyramid.InvalidInputError, match="memory"):
        ome_pyramid.build(source, fresh("f.ome.zarr"), memory="lots")
    existing = fresh("g.ome.zarr")
    ome_pyramid.build(source, existing)
    with pytest.raises(ome_pyramid.InvalidInputError, match="overwrite"):
        ome_pyramid.build(source, existing)
    assert ome_pyramid.info(existing)["kind"] == "ome-zarr image", "a refused build leaves the output as it was"


def test_a_failure_while_running_raises_build_error(zarr_input, fresh):
    source, _ = zarr_input
    chunk = source / "1.1.1"
    chunk.write_bytes(b"not a compressed chunk")
    with pytest.raises(ome_pyramid.BuildError, match="cannot read chunk `1.1.1`") as failed:
        ome_pyramid.build(source, fresh("out.ome.zarr"), backend="cpu")
    assert isinstance(failed.value, RuntimeError)


def big_input(tmp_path: Path) -> Path:
    """An input whose gaussian pyramid on one thread takes long enough to watch."""
    import zarr

    data = volume((64, 512, 512))
    path = tmp_path / "big.zarr"
    array = zarr.create_array(store=str(path), shape=data.shape, chunks=(16, 128, 128), dtype=data.dtype, zarr_format=2)
    array[...] = data
    return path


def test_other_python_threads_run_while_the_engine_works(tmp_path, fresh):
    source = big_input(tmp_path)
    ticks = 0
    running = True

    def count() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.05)
    before = ticks
    started = time.monotonic()
    # Builds until the engine has worked long enough to tell (one build of this input took
    # 0.2 s on CI's 2 cores, and gets shorter as the engine gets faster).
    builds = 0
    while time.monotonic() - started < 0.5:
        output = fresh(f"out{builds}.ome.zarr")
        ome_pyramid.build(source, output, method="gaussian", threads=1, chunks=[16, 64, 64])
        builds += 1
    seconds = time.monotonic() - started
    during = ticks - before
    running = False
    counter.join()
    # Holding the GIL for the whole build would leave the counter at a handful of ticks.
    assert during > 0.2 * seconds / 0.002, f"{during} ticks in {seconds:.2f} s ({builds} builds)"


def test_ctrl_c_stops_the_build_between_tasks_and_resume_finishes_it(tmp_path, fresh):
    source = big_input(tmp_path)
    output, reference = fresh("out.ome.zarr"), fresh("reference.ome.zarr")
    options = {"method": "gaussian", "threads": 1, "chunks": [16, 64, 64], "backend": "cpu"}
    started = threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        started.set()

    def interrupt() -> None:
        started.wait(30)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        ome_pyramid.build(source, output, progress=progress, **options)
    assert seen and seen[-1][0] < seen[-1][1], "interrupted before the end"
    assert not has_multiscales(output)
    ome_pyramid.build(source, output, resume=True, **options)
    ome_pyramid.build(source, reference, **options)
    assert tree_bytes(output) == tree_bytes(reference)
