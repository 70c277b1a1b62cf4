"""Type stubs of the extension module (the Rust engine); use the functions of ``ome_pyramid``."""

import os
from collections.abc import Callable
from typing import Any

import numpy as np

__version__: str
GPU_SUPPORT: bool

class InvalidInputError(ValueError):
    """The input or an option is invalid; nothing was written."""

class BuildError(RuntimeError):
    """The build failed while running; the finished work is kept."""

def build(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: dict[str, Any],
    progress: Callable[[int, int], object] | None = None,
) -> str: ...
def write_image(
    image: np.ndarray,
    output: str | os.PathLike[str],
    options: dict[str, Any],
    progress: Callable[[int, int], object] | None = None,
) -> str: ...
def labels(
    image: str | os.PathLike[str],
    segmentation: str | os.PathLike[str] | np.ndarray,
    name: str,
    options: dict[str, Any],
    colors: str | None = None,
    properties: str | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> str: ...
def info(path: str | os.PathLike[str]) -> str: ...
def plan(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    parts: int,
    options: dict[str, Any],
    progress: Callable[[int, int], object] | None = None,
) -> str: ...
def part(
    output: str | os.PathLike[str],
    index: int | None,
    settings: dict[str, Any],
    progress: Callable[[int, int], object] | None = None,
) -> str: ...
def finalize(
    output: str | os.PathLike[str],
    settings: dict[str, Any],
    progress: Callable[[int, int], object] | None = None,
) -> str: ...
