"""The driver of ``benchmark run``: suite -> cells -> executor -> records -> MLflow."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.cell import Record, RunOptions
from benchmark.errors import BenchmarkError
from benchmark.executors import make_executor
from benchmark.preflight import preflight
from benchmark.suite import Cell, expand, load_suite, parse_only
from benchmark.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    parent_run_id: str
    tracking_uri: str
    total: int
    skipped: int
    records: list[tuple[Cell, Record]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for _, r in self.records if r.status != "FINISHED")


def resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return choice


def run_suite(
    suite_path: str | Path,
    only: list[str] | None = None,
    device: str | None = None,
    tracking_uri: str | None = None,
    resume: bool = True,
    executor: str | None = None,
    address: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    progress: bool = False,
    echo=print,
    download: bool = False,
    yes: bool = False,
) -> RunSummary:
    suite_path = Path(suite_path)
    suite = load_suite(suite_path)
    cells = expand(suite, parse_only(only))
    preflight(suite, cells, str(suite_path), device, data_root, download=download, yes=yes)  # before any run exists
    dev = resolve_device(device or suite.device)
    tracker = Tracker(tracking_uri)
    exp = tracker.experiment_id(suite.name, suite.description)
    parent, resumed = tracker.start_parent(
        suite.name, suite_path, dev, {"cells": len(cells), "executor": executor or suite.executor}, resume
    )
    done: dict[str, str] = {}
    if resumed:
        killed = tracker.mark_orphans(parent, exp)
        if killed:
            echo(f"marked {killed} interrupted cell run(s) KILLED")
        done = tracker.finished_keys(parent, exp)
    todo = [c for c in cells if c.key not in done]
    summary = RunSummary(parent, tracker.uri, total=len(cells), skipped=len(cells) - len(todo))
    echo(
        f"suite {suite.name}: {len(cells)} cells, {summary.skipped} already finished, {len(todo)} to run "
        f"on {dev} (parent run {parent}{', resumed' if resumed else ''})"
    )
    opts = RunOptions(device=dev, cache_dir=cache_dir, data_root=data_root, progress=progress)
    started: dict[str, str] = {}

    def on_start(cell: Cell) -> None:
        started[cell.key] = tracker.start_child(parent, exp, cell)

    def on_done(cell: Cell, record: Record) -> None:
        run_id = started.pop(cell.key, None) or tracker.start_child(parent, exp, cell)
        tracker.finish_child(run_id, record)
        summary.records.append((cell, record))
        state = "ok" if record.status == "FINISHED" else f"FAILED ({record.error})"
        echo(f"  [{len(summary.records)}/{len(todo)}] {cell.title()}: {state} in {record.seconds:.1f} s")

    res = suite.resources
    ex = make_executor(executor or suite.executor, address=address, num_cpus=res.num_cpus, num_gpus=res.num_gpus)
    try:
        ex.run(todo, opts, on_start, on_done)
    except KeyboardInterrupt:
        tracker.kill_own_children(parent, exp)
        tracker.kill_parent(parent)
        echo("interrupted: the running cell was marked KILLED; run the same command again to resume")
        raise
    tracker.end_parent(parent, summary.failed, len(cells))
    return summary


def print_table(summary: RunSummary, echo=print) -> None:
    cols = ("clean_accuracy", "poisoned_accuracy", "attack_success_rate", "robust_accuracy")
    short = ("clean", "poisoned", "success", "robust")
    if not summary.records:
        return
    width = max(len(c.title()) for c, _ in summary.records)
    echo(f"{'cell':<{width}}  {'status':<8} " + " ".join(f"{s:>8}" for s in short))
    for cell, rec in summary.records:
        vals = " ".join(f"{rec.metrics[c]:>8.3f}" if c in rec.metrics else f"{'-':>8}" for c in cols)
        echo(f"{cell.title():<{width}}  {rec.status:<8} {vals}")


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
