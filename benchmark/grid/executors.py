"""Executors move cells to workers and records back; they never touch MLflow or the science.

``local`` runs cells one after another in this process. ``ray`` (see ``benchmark.grid.ray_executor``) runs them as Ray
tasks. Both call ``on_start(cell)`` in the driver before a cell is run, which claims it (False: another process
holds it or has finished it, so it is skipped), and ``on_done(cell, record)`` in the driver when it ends.
``connect()`` reaches the workers before any run is created, so a missing cluster fails first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from benchmark.cell.pipeline import Record, RunOptions, run_cell
from benchmark.core.progress import progress
from benchmark.suite import Cell

OnStart = Callable[[Cell], bool]
OnDone = Callable[[Cell, Record], None]


class LocalExecutor:
    name = "local"

    def connect(self) -> None:
        """Nothing to reach: cells run in this process."""

    def close(self) -> None:
        """Nothing to release."""

    def run(self, cells: Sequence[Cell], opts: RunOptions, on_start: OnStart, on_done: OnDone) -> None:
        for cell in progress(cells, desc="cells", total=len(cells), leave=True):
            if on_start(cell):
                on_done(cell, run_cell(cell, opts))


def make_executor(name: str, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0):
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from benchmark.grid.ray_executor import RayExecutor

        return RayExecutor(address=address, num_cpus=num_cpus, num_gpus=num_gpus)
    raise ValueError(f"unknown executor {name!r}; known: local, ray")
