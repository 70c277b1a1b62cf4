"""A pyramid built on a Dask cluster: ``plan`` here, the parts as Dask tasks, ``finalize``.

Every worker must see INPUT and OUTPUT at the same paths (a shared file system) and have
``ome_pyramid`` installed (``pip install ./python`` in this repository). The parts release
the GIL and use ``threads`` cores each, so give each worker that many cores.

    python examples/cluster/dask_pyramid.py INPUT OUTPUT PARTS [SCHEDULER_ADDRESS]

Without SCHEDULER_ADDRESS a ``LocalCluster`` on this machine is used.
"""

from __future__ import annotations

import sys
from typing import Any

import ome_pyramid


def build_on_dask(
    client: Any, input: str, output: str, parts: int, threads: int | None = None, **options: Any
) -> ome_pyramid.BuildReport:
    """Plans the build of ``input`` into ``output`` in ``parts`` parts, runs them on the
    cluster of ``client`` (each at most three times: a part is idempotent, so a retry after a
    lost worker finishes what is missing), and finalizes it."""
    plan = ome_pyramid.plan(input, output, parts, **options)
    futures = client.map(
        ome_pyramid.part,
        [output] * plan.parts,
        range(plan.parts),
        threads=threads,
        pure=False,
        retries=2,
    )
    for report in client.gather(futures):
        print(f"part {report.part}: {report.files_stored} files in {report.seconds:.1f} s", file=sys.stderr)
    return ome_pyramid.finalize(output, threads=threads)


def main(argv: list[str]) -> int:
    from dask.distributed import Client, LocalCluster

    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    input, output, parts = argv[1], argv[2], int(argv[3])
    if len(argv) == 5:
        client = Client(argv[4])
    else:
        client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    with client:
        report = build_on_dask(client, input, output, parts)
    print(f"{len(report.levels)} levels in {output}: {[level.shape for level in report.levels]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
