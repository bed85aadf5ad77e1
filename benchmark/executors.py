"""Executors move cells to workers and records back; they never touch MLflow or the science.

``local`` runs cells one after another in this process. ``ray`` (see ``benchmark.ray_executor``) runs them as Ray
tasks. Both call ``on_start(cell)`` before a cell runs where they can, and ``on_done(cell, record)`` when it ends,
always in the driver process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from benchmark.cell import Record, RunOptions, run_cell
from benchmark.progress import progress
from benchmark.suite import Cell

OnStart = Callable[[Cell], None]
OnDone = Callable[[Cell, Record], None]


class LocalExecutor:
    name = "local"

    def run(self, cells: Sequence[Cell], opts: RunOptions, on_start: OnStart, on_done: OnDone) -> None:
        for cell in progress(cells, desc="cells", total=len(cells), leave=True):
            on_start(cell)
            on_done(cell, run_cell(cell, opts))


def make_executor(name: str, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0):
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from benchmark.ray_executor import RayExecutor

        return RayExecutor(address=address, num_cpus=num_cpus, num_gpus=num_gpus)
    raise ValueError(f"unknown executor {name!r}; known: local, ray")
