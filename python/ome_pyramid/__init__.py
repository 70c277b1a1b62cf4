"""Multiscale OME-Zarr pyramids from large microscopy volumes, from Python.

The engine is ome-pyramid's Rust library: the downsampling runs in WGSL compute shaders on
a GPU or on all CPU cores with identical integer results, memory stays within ``memory``
whatever the volume's size, and the output is OME-NGFF 0.4 (Zarr v2) or 0.5 (Zarr v3 with
shards). The GIL is released while it works.

>>> import numpy as np, ome_pyramid
>>> volume = np.random.default_rng(0).integers(0, 4000, (64, 512, 512), dtype=np.uint16)
>>> report = ome_pyramid.write_image(volume, "volume.ome.zarr", axes="zyx",
...                                  scale={"z": 2.0, "y": 0.5, "x": 0.5}, unit="micrometer")
>>> [level.shape for level in report.levels]  # z (2 µm) is kept until x and y are as coarse
[[64, 512, 512], [64, 256, 256]]

Errors are :class:`InvalidInputError` (a :class:`ValueError`: the input or an option is
wrong, nothing was written) or :class:`BuildError` (a :class:`RuntimeError`: the build
failed while running), with the command-line tool's one-line messages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _native
from ._native import GPU_SUPPORT, BuildError, InvalidInputError, __version__

__all__ = [
    "GPU_SUPPORT",
    "BuildError",
    "BuildReport",
    "InvalidInputError",
    "LevelReport",
    "PartReport",
    "PlanReport",
    "__version__",
    "build",
    "finalize",
    "info",
    "labels",
    "part",
    "plan",
    "write_image",
]

Progress = Callable[[int, int], object]
"""A progress callback: called with ``(done, total)`` output chunks, from the calling thread,
at most five times a second and once at the end."""

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class LevelReport:
    """One level of the pyramid."""

    level: int
    """Level index (0 is full resolution)."""
    shape: list[int]
    """Shape, in the axes' order."""
    chunks: list[int]
    """Chunk shape."""
    step_factors: list[int]
    """Factors of the step that made it from the level before (all 1 for level 0)."""
    scale: list[float]
    """Pixel size per axis, as the metadata's ``scale`` says."""
    translation: list[float]
    """Position of the first pixel's centre per axis, as the metadata's ``translation`` says."""
    pass_seconds: float
    """Seconds of the pass that made it (shared by the levels of one pass)."""


@dataclass(frozen=True)
class BuildReport:
    """What a build did (the command-line tool's ``--json`` report)."""

    input: str
    """The input's path (for an array in memory, a description of it)."""
    output: str
    """The output's path."""
    method: str
    """The downsampling method."""
    dtype: str
    """The data type."""
    backend: str
    """The backend used, as recorded in the metadata (``cpu, 8 threads``, or the GPU adapter)."""
    levels: list[LevelReport]
    """The levels, level 0 first."""
    seconds: float
    """Wall time."""
    input_bytes: int
    """Uncompressed bytes of level 0."""
    input_mb_per_s: float
    """``input_bytes / seconds`` in MB/s (10**6 bytes)."""
    details: dict[str, Any]
    """Everything else the engine reports (stage seconds, chunks decoded, peak memory)."""

    @classmethod
    def _from_json(cls, text: str) -> BuildReport:
        report = json.loads(text)
        levels = [
            LevelReport(
                level=level["level"],
                shape=level["shape"],
                chunks=level["chunks"],
                step_factors=level["step_factors"],
                scale=level["scale"],
                translation=level["translation"],
                pass_seconds=level["pass_seconds"],
            )
            for level in report.pop("levels")
        ]
        fields = {
            name: report.pop(name)
            for name in ("input", "output", "method", "dtype", "backend", "seconds", "input_bytes", "input_mb_per_s")
        }
        return cls(levels=levels, details=report, **fields)


@dataclass(frozen=True)
class PlanReport:
    """What :func:`plan` decided (the CLI's ``plan --json``)."""

    output: str
    """The output, created with its level arrays and the plan inside."""
    parts: int
    """Number of parts: run :func:`part` for each index ``0 .. parts - 1``."""
    levels: int
    """Levels of the whole pyramid."""
    part_last_level: int
    """The parts write levels ``0 .. part_last_level``; :func:`finalize` the ones above."""
    blocks: int
    """Blocks of whole chunks or shards the parts share out."""
    details: dict[str, Any]
    """The whole plan: the options and every part's range of blocks and input bytes."""

    @classmethod
    def _from_json(cls, text: str) -> PlanReport:
        report = json.loads(text)
        plan = report["plan"]
        return cls(
            output=report["output"],
            parts=len(plan["parts"]),
            levels=plan["levels"],
            part_last_level=plan["part_last_level"],
            blocks=plan["blocks"],
            details=plan,
        )


@dataclass(frozen=True)
class PartReport:
    """What one :func:`part` did (the CLI's ``part --json``)."""

    part: int
    """The part's index."""
    parts: int
    """Parts in the plan."""
    blocks_done_before: int
    """Of its blocks, those an earlier run of the same part had finished."""
    files_stored: int
    """Chunk or shard files this run wrote."""
    seconds: float
    """Wall time."""
    details: dict[str, Any]
    """Everything else: its range of blocks, bytes written, backend, threads, peak memory."""

    @classmethod
    def _from_json(cls, text: str) -> PartReport:
        report = json.loads(text)
        fields = {name: report.pop(name) for name in ("part", "parts", "blocks_done_before", "files_stored", "seconds")}
        return cls(details=report, **fields)


def _options(arguments: dict[str, Any], *positional: str) -> dict[str, Any]:
    """The engine options among a function's ``arguments`` (its ``locals()`` on entry): every
    keyword but ``progress`` and the ``positional`` ones, those left at ``None`` omitted."""
    skip = {"progress", *positional}
    return {key: value for key, value in arguments.items() if key not in skip and value is not None}


def build(
    input: PathLike,
    output: PathLike,
    *,
    method: str = "mean",
    backend: str = "auto",
    levels: int | None = None,
    factors: str | Mapping[str, int] | None = None,
    chunks: Sequence[int] | None = None,
    compression: str | None = None,
    clevel: int | None = None,
    memory: int | str | None = None,
    threads: int | None = None,
    ngff_version: str = "0.4",
    shards: str | None = None,
    shard_size: int | str | None = None,
    axes: str | None = None,
    scale: Mapping[str, float] | None = None,
    unit: str | None = None,
    name: str | None = None,
    series: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
) -> BuildReport:
    """Builds an OME-Zarr pyramid from ``input`` into the new group ``output``: the CLI's
    ``ome-pyramid build``, with the same defaults and byte for byte the same output.

    Args:
        input: A Zarr v2/v3 array, an OME-Zarr image (its first dataset is level 0), or
            TIFF input: a TIFF/BigTIFF/OME-TIFF/ImageJ file, a folder of 2-D TIFF slices, or
            a glob pattern such as ``"slices/*.tif"``.
        output: The OME-Zarr group to create.
        method: ``"mean"``, ``"nearest"``, ``"gaussian"``, ``"mode"`` (labels), ``"min"``
            or ``"max"``.
        backend: ``"auto"`` (a hardware GPU where there is one and it computes this build's
            method and dtype faster than the CPU, measured on one tile before the build; a
            build the CPU computes in under 0.5 s stays on it; the reason is in the
            metadata), ``"gpu"`` or ``"cpu"``.
        levels: Total number of levels, level 0 included (default: until every space axis
            fits its chunk).
        factors: ``"auto"`` (halve the space axes of similar pixel size), ``"xy"`` (halve y
            and x only), or a factor per axis name such as ``{"z": 1, "y": 2, "x": 2}``.
        chunks: Output chunk shape (default: the input's).
        compression: ``"input"`` (default), ``"blosc-lz4"``, ``"blosc-zstd"``, ``"zstd"``,
            ``"gzip"`` or ``"none"``; ``clevel`` sets its level.
        memory: Working-set budget, in bytes or as text such as ``"4GiB"`` (default 2 GiB).
        threads: CPU threads (default: every core).
        ngff_version: ``"0.4"`` (Zarr v2) or ``"0.5"`` (Zarr v3, sharded unless
            ``shards="none"``); ``shards`` is ``"auto"``, ``"none"`` or a shape such as
            ``"128,1024,1024"``, and ``shard_size`` caps ``auto`` shards.
        axes: Axis names of an input that does not name them, such as ``"tczyx"``.
        scale: Level-0 pixel size by axis name, such as ``{"z": 2.0, "y": 0.5, "x": 0.5}``.
        unit: Unit of the space axes, such as ``"micrometer"``.
        name: Image name in the metadata.
        series: The series of an OME-TIFF holding several.
        overwrite: Replace ``output`` if it exists (only a Zarr store or an empty folder).
        resume: Continue an interrupted build of ``output`` with the same options.
        progress: Called with ``(done, total)`` output chunks as the build goes.

    Returns:
        What the build did: levels (shape, scale, translation), backend, seconds, MB/s.

    Raises:
        InvalidInputError: The input or an option is invalid; nothing was written.
        BuildError: The build failed while running; ``resume=True`` continues it.
        KeyboardInterrupt: Ctrl-C stopped the build between tasks; ``resume=True``
            continues it.
    """
    options = _options(locals(), "input", "output")
    return BuildReport._from_json(_native.build(input, output, options, progress))


def write_image(
    image: np.ndarray | Any,
    output: PathLike,
    *,
    axes: str | None = None,
    scale: Mapping[str, float] | None = None,
    unit: str | None = None,
    name: str = "image",
    method: str = "mean",
    backend: str = "auto",
    levels: int | None = None,
    factors: str | Mapping[str, int] | None = None,
    chunks: Sequence[int] | None = None,
    compression: str | None = None,
    clevel: int | None = None,
    memory: int | str | None = None,
    threads: int | None = None,
    ngff_version: str = "0.4",
    shards: str | None = None,
    shard_size: int | str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> BuildReport:
    """Builds an OME-Zarr pyramid from an array in memory, read in place (never copied whole).

    The counterpart of ome-zarr-py's ``write_image(image, group, scale_factors, method)``:
    ``write_image(image, "out.ome.zarr", axes="zyx", levels=4, method="mean")``.

    Args:
        image: A NumPy array (or anything ``numpy.asarray`` takes) of 2 to 5 dimensions,
            of an unsigned or signed integer type of 8 to 64 bits, float32 or float64, in C
            or Fortran order or strided. A non-native byte order is converted (a copy).
            Other Python threads must not write to it during the build.
        output: The OME-Zarr group to create.
        axes: Axis names such as ``"zyx"`` or ``"tczyx"`` (default by dimensionality:
            yx, zyx, czyx, tczyx).
        scale: Level-0 pixel size by axis name (default 1).
        unit: Unit of the space axes, such as ``"micrometer"``.
        name: Image name in the metadata.
        method, backend, levels, factors, chunks, compression, clevel, memory, threads,
        ngff_version, shards, shard_size, overwrite, progress: As for :func:`build`; the
            default chunks are 256 along y and x, 64 along z and 1 before.

    An array in memory cannot be checked against an interrupted build, so there is no
    ``resume``: after an interruption, write it again with ``overwrite=True``.

    Raises:
        InvalidInputError: The array or an option is invalid; nothing was written.
        BuildError: The build failed while running.
        KeyboardInterrupt: Ctrl-C stopped the build between tasks.
    """
    options = _options(locals(), "image", "output")
    array = np.asarray(image)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return BuildReport._from_json(_native.write_image(array, output, options, progress))


def labels(
    image: PathLike,
    segmentation: PathLike | np.ndarray,
    name: str,
    *,
    method: str = "mode",
    colors: Sequence[Mapping[str, Any]] | None = None,
    properties: Sequence[Mapping[str, Any]] | None = None,
    backend: str = "auto",
    chunks: Sequence[int] | None = None,
    compression: str | None = None,
    clevel: int | None = None,
    memory: int | str | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
) -> BuildReport:
    """Adds the label image ``name`` to the OME-Zarr image ``image`` (the CLI's ``labels``):
    a pyramid of ``segmentation`` with the image's own levels, listed in its ``labels`` group.

    Args:
        image: An OME-Zarr image written by :func:`build`, :func:`write_image` or any tool.
        segmentation: Integer labels of the image's level-0 shape (or that shape without the
            channel axis): a Zarr array, an OME-Zarr (label) image or a TIFF on disk, or a
            NumPy array (read in place).
        name: The label image's name (``image/labels/NAME``).
        method: ``"mode"`` (most frequent label of each window) or ``"nearest"``.
        colors: The ``image-label`` colours, such as
            ``[{"label-value": 1, "rgba": [255, 0, 0, 255]}]`` (default: one per label).
        properties: The ``image-label`` properties, such as
            ``[{"label-value": 1, "class": "nucleus"}]``.
        backend, chunks, compression, clevel, memory, threads, overwrite, resume, progress:
            As for :func:`build`; the default chunks are the image's. ``resume`` needs a
            segmentation on disk.

    Raises:
        InvalidInputError: The image, segmentation, name or an option is invalid.
        BuildError: The build failed while running.
        KeyboardInterrupt: Ctrl-C stopped the build between tasks.
    """
    options = _options(locals(), "image", "segmentation", "name", "colors", "properties")
    if isinstance(segmentation, (str, os.PathLike)):
        seg: Any = segmentation
    else:
        seg = np.asarray(segmentation)
        if not seg.dtype.isnative:
            seg = seg.astype(seg.dtype.newbyteorder("="))
    return BuildReport._from_json(
        _native.labels(
            image,
            seg,
            name,
            options,
            None if colors is None else json.dumps(list(colors)),
            None if properties is None else json.dumps(list(properties)),
            progress,
        )
    )


def plan(
    input: PathLike,
    output: PathLike,
    parts: int,
    *,
    method: str = "mean",
    backend: str = "auto",
    levels: int | None = None,
    factors: str | Mapping[str, int] | None = None,
    chunks: Sequence[int] | None = None,
    compression: str | None = None,
    clevel: int | None = None,
    memory: int | str | None = None,
    threads: int | None = None,
    ngff_version: str = "0.4",
    shards: str | None = None,
    shard_size: int | str | None = None,
    axes: str | None = None,
    scale: Mapping[str, float] | None = None,
    unit: str | None = None,
    name: str | None = None,
    series: int | None = None,
    overwrite: bool = False,
) -> PlanReport:
    """Plans a build of ``input`` split into ``parts`` parts, for a cluster (the CLI's
    ``ome-pyramid plan``): checks it, creates ``output`` with its level arrays (no image
    metadata yet) and stores the plan inside it. Then run :func:`part` for every index, on
    any hosts that see ``output`` at the same path (a Dask cluster, array tasks of a
    scheduler), and :func:`finalize` once. The result equals :func:`build` with the same
    options, byte for byte.

    Args:
        input, output: As for :func:`build`; ``input`` must be on a file system every
            host sees.
        parts: Number of parts. Each owns whole chunks (or shards) of the levels it writes;
            a pyramid too small for so many is refused, naming how many it allows.
        method, backend, levels, factors, chunks, compression, clevel, memory, threads,
        ngff_version, shards, shard_size, axes, scale, unit, name, series, overwrite: As for
            :func:`build`. ``memory``, ``threads`` and ``backend`` are the parts' defaults.

    Raises:
        InvalidInputError: The input or an option is invalid, or there are too many parts.
        BuildError: The output could not be created.
    """
    options = _options(locals(), "input", "output", "parts")
    return PlanReport._from_json(_native.plan(input, output, parts, options, None))


def part(
    output: PathLike,
    index: int | None = None,
    *,
    memory: int | str | None = None,
    threads: int | None = None,
    backend: str | None = None,
    progress: Progress | None = None,
) -> PartReport:
    """Runs part ``index`` of the build :func:`plan` made in ``output`` (the CLI's
    ``ome-pyramid part``). Parts run at once in any processes or hosts; each is idempotent:
    run again, it does only what is missing.

    Args:
        output: The output :func:`plan` made.
        index: The part, from 0 (default: the scheduler's array task index, such as
            ``SLURM_ARRAY_TASK_ID`` or ``JOB_COMPLETION_INDEX``).
        memory, threads, backend: This host's budget, threads and backend (default: the
            plan's).
        progress: Called with ``(done, total)`` output chunks of the part.

    Raises:
        InvalidInputError: No plan, an index outside it, or the part running elsewhere.
        BuildError: The part failed while running; run it again to finish it.
    """
    settings = _options(locals(), "output", "index")
    return PartReport._from_json(_native.part(output, index, settings, progress))


def finalize(
    output: PathLike,
    *,
    memory: int | str | None = None,
    threads: int | None = None,
    backend: str | None = None,
    progress: Progress | None = None,
) -> BuildReport:
    """Finishes the build :func:`plan` made in ``output`` once every :func:`part` has (the
    CLI's ``ome-pyramid finalize``): computes the levels above the parts and writes the
    image metadata last.

    Raises:
        BuildError: A part is running, failed, unfinished or never ran (each is named);
            nothing was written.
        InvalidInputError: ``output`` holds no plan, or is already finalized.
    """
    settings = _options(locals(), "output")
    return BuildReport._from_json(_native.finalize(output, settings, progress))


def info(path: PathLike) -> dict[str, Any]:
    """What ``path`` holds, as the CLI's ``info --json`` prints it: for a Zarr array or
    OME-Zarr image its levels (shape, chunks, dtype, codecs, transforms) and label images,
    for TIFF input the series ``build`` would read (axes, shape, pixel sizes, layout, codec).

    Raises:
        InvalidInputError: ``path`` does not exist or is neither Zarr nor TIFF.
        BuildError: It could not be read.
    """
    result: dict[str, Any] = json.loads(_native.info(path))
    return result
