"""Shared fixtures of the Python package's tests: the CLI binary to compare with, a Zarr
input written by zarr-python, and readers of the output."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli() -> Path:
    """The ome-pyramid binary (`OME_PYRAMID_CLI`, else target/debug or target/release)."""
    named = os.environ.get("OME_PYRAMID_CLI")
    candidates = [Path(named)] if named else [REPO / "target" / p / "ome-pyramid" for p in ("debug", "release")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the ome-pyramid binary is missing (looked at {candidates})")
    pytest.skip("no ome-pyramid binary built (cargo build, or set OME_PYRAMID_CLI)")


def volume(shape: tuple[int, ...], dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    """Smooth structure plus noise, so every method has something to do."""
    rng = np.random.default_rng(seed)
    smooth = np.zeros(shape, dtype=np.float32)
    for axis, n in enumerate(shape):
        profile = np.sin(np.linspace(0, 6 * (axis + 1), n, dtype=np.float32))
        smooth += profile.reshape([n if a == axis else 1 for a in range(len(shape))])
    if np.dtype(dtype).kind == "f":
        return (smooth * 100 + rng.normal(0, 10, shape)).astype(dtype)
    info = np.iinfo(dtype)
    span = min(int(info.max), 60000) - max(int(info.min), 0)
    smooth -= smooth.min()
    smooth *= span * 0.8 / max(float(smooth.max()), 1e-9)
    return (smooth + rng.integers(0, span // 10 + 1, shape, dtype=np.int64)).astype(dtype)


@pytest.fixture
def zarr_input(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A Zarr v2 array of shape (40, 300, 200), chunks (16, 128, 128), written by zarr-python."""
    data = volume((40, 300, 200))
    path = tmp_path / "input.zarr"
    array = zarr.create_array(
        store=str(path), shape=data.shape, chunks=(16, 128, 128), dtype=data.dtype, zarr_format=2
    )
    array[...] = data
    return path, data


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def level(output: Path, index: int) -> np.ndarray:
    """Level `index` of an OME-Zarr output, read by zarr-python."""
    return zarr.open_array(str(output / str(index)), mode="r")[...]


@pytest.fixture
def fresh(tmp_path: Path):
    """A path that does not exist yet, under the test's folder."""

    def make(name: str) -> Path:
        path = tmp_path / name
        if path.exists():
            shutil.rmtree(path)
        return path

    return make
