"""Partitioned builds from Python: ``plan``, ``part`` and ``finalize`` equal one build byte
for byte, whether the parts run in this process, as array tasks told their index by the
environment, or as tasks of a Dask cluster (the example in ``examples/cluster``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import ome_pyramid
from conftest import REPO, tree_bytes


def cli_build(cli: Path, input: Path, output: Path, *args: str) -> None:
    subprocess.run([str(cli), "build", str(input), str(output), "-q", *args], check=True)


def test_plan_parts_and_finalize_equal_the_cli_build(cli: Path, zarr_input: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    input, _ = zarr_input
    single = tmp_path / "single.ome.zarr"
    cli_build(cli, input, single, "--backend", "cpu", "--method", "gaussian")
    output = tmp_path / "parts.ome.zarr"
    plan = ome_pyramid.plan(input, output, 3, backend="cpu", method="gaussian")
    assert plan.parts == 3 and plan.levels >= 2 and 0 < plan.part_last_level < plan.levels
    assert sum(p["input_bytes"] for p in plan.details["parts"]) == 40 * 300 * 200 * 2
    assert not (output / ".zattrs").exists()
    seen: list[tuple[int, int]] = []
    reports = [ome_pyramid.part(output, i, threads=1, progress=lambda d, t: seen.append((d, t))) for i in (2, 0, 1)]
    assert [r.part for r in reports] == [2, 0, 1] and all(r.files_stored > 0 for r in reports)
    assert seen and all(done <= total for done, total in seen)
    report = ome_pyramid.finalize(output)
    assert [level.shape for level in report.levels][0] == [40, 300, 200]
    assert tree_bytes(single) == tree_bytes(output)


def test_a_part_takes_its_index_from_the_scheduler(zarr_input: tuple[Path, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    input, _ = zarr_input
    output = tmp_path / "out.ome.zarr"
    ome_pyramid.plan(input, output, 2, backend="cpu")
    for variable in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX", "BATCH_TASK_INDEX", "LSB_JOBINDEX", "SGE_TASK_ID", "PBS_ARRAY_INDEX"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ome_pyramid.InvalidInputError, match="JOB_COMPLETION_INDEX"):
        ome_pyramid.part(output)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert ome_pyramid.part(output).part == 1
    # Finalize names the part that has not run, and writes nothing.
    with pytest.raises(ome_pyramid.BuildError, match="part 0 has not run"):
        ome_pyramid.finalize(output)
    assert not (output / ".zattrs").exists()
    with pytest.raises(ome_pyramid.InvalidInputError, match="part 2 is not in the plan"):
        ome_pyramid.part(output, 2)
    ome_pyramid.part(output, 0)
    ome_pyramid.finalize(output)
    assert (output / ".zattrs").is_file()


def test_too_many_parts_are_refused(zarr_input: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    input, _ = zarr_input
    with pytest.raises(ome_pyramid.InvalidInputError, match="use --parts"):
        ome_pyramid.plan(input, tmp_path / "out.ome.zarr", 10_000)
    assert not (tmp_path / "out.ome.zarr").exists()


def dask_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dask_pyramid", REPO / "examples" / "cluster" / "dask_pyramid.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dask_example_builds_on_a_local_cluster(cli: Path, zarr_input: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but dask.distributed is not installed")
        pytest.skip("dask.distributed is not installed")
    input, _ = zarr_input
    single = tmp_path / "single.ome.zarr"
    sharded = ("--ngff-version", "0.5", "--chunks", "8,64,64", "--shards", "16,128,128")
    # One thread, as the parts and finalize get: the metadata names the backend's threads.
    cli_build(cli, input, single, "--backend", "cpu", "--threads", "1", *sharded)
    output = tmp_path / "dask.ome.zarr"
    # Worker processes, as on a real cluster: each part runs in another process than the plan.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        report = dask_example().build_on_dask(
            client,
            str(input),
            str(output),
            4,
            threads=1,
            backend="cpu",
            ngff_version="0.5",
            chunks=[8, 64, 64],
            shards="16,128,128",
        )
    assert report.levels[0].shape == [40, 300, 200]
    assert tree_bytes(single) == tree_bytes(output)
