"""The driver of ``benchmark run``: suite -> cells -> executor -> records -> MLflow."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.cell.pipeline import Record, RunOptions
from benchmark.core import signals
from benchmark.core.errors import BenchmarkError, StoreError, SuiteError
from benchmark.core.hashing import stable_hash
from benchmark.grid.executors import make_executor
from benchmark.grid.preflight import preflight
from benchmark.grid.pretrain import grouping_on, pretrain_backbones
from benchmark.store import leases, reuse
from benchmark.store.cache import cache_root
from benchmark.store.headline import HEADLINE_METRICS
from benchmark.store.tracking import Tracker, redact
from benchmark.suite import Cell, Suite, expand, load_suite, parse_only

log = logging.getLogger(__name__)

WAIT_SECONDS = 2.0  # polling for cells another process holds
FAILURE_LOG = "benchmark-store-failures.log"  # beside the store (or in the cache folder for a remote store)


@dataclass
class RunSummary:
    parent_run_id: str
    tracking_uri: str
    total: int
    skipped: int  # finished before this invocation: by this parent (resumed) or by earlier runs (reused)
    reused: int = 0  # of ``skipped``, those finished under another parent run (another version of the suite)
    records: list[tuple[Cell, Record]] = field(default_factory=list)
    failed_elsewhere: int = 0  # cells another process ran at the same time, and that failed there

    @property
    def failed(self) -> int:
        return sum(1 for _, r in self.records if r.status != "FINISHED") + self.failed_elsewhere


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
    rerun: list[str] | None = None,
) -> RunSummary:
    """``resume=False`` starts a new parent and reruns every cell; ``rerun`` (``KEY=VALUE`` slices, as ``--only``)
    starts a new parent and reruns only the cells of the slice, reusing the others' finished runs."""
    suite_path = Path(suite_path)
    suite = load_suite(suite_path)
    cells = expand(suite, parse_only(only))
    again = rerun_keys(suite, cells, resume, rerun)
    preflight(suite, cells, str(suite_path), device, data_root, download=download, yes=yes)  # before any run exists
    dev = resolve_device(device or suite.device)
    res = suite.resources
    group = grouping_on(res.group_backbones, dev, executor or suite.executor)  # refused before any run exists
    tracker = Tracker(tracking_uri)
    exp = tracker.experiment_id(suite.name, suite.description)
    tracker.check_writable(exp)
    warn_unwritable_cache(cache_dir)  # after the store's checks: a run refused there creates no cache folder
    ex = make_executor(executor or suite.executor, address=address, num_cpus=res.num_cpus, num_gpus=res.num_gpus)
    with signals.handled():
        ex.connect()  # an unreachable cluster fails here, before any run exists
        try:
            lock = leases.lock_path(tracker.uri, cache_root(cache_dir).resolve())
            with leases.held(lock):  # two processes starting at once resume one parent, not create two
                parent, resumed, note = tracker.start_parent(
                    suite.name, suite_path, dev, {"cells": len(cells), "executor": executor or suite.executor},
                    resume and not again, suite_hash(suite),
                )
            grid = _Grid(tracker, lock, parent, exp, echo)
            grid.rerun, grid.suite_keys = again, [c.key for c in expand(suite)]
            grid.group_backbones = group
            if note:
                echo(note)
            summary = grid.plan(suite.name, cells, resumed, dev)
            log.info("group_backbones: %s (%s on %s)", "on" if group else "off", res.group_backbones, dev)
            opts = RunOptions(device=dev, cache_dir=cache_dir, data_root=data_root, progress=progress)
            grid.run(ex, opts)
        finally:
            ex.close()
    return summary


def rerun_keys(suite: Suite, cells: list[Cell], resume: bool, rerun: list[str] | None) -> set[str]:
    """The cells to run again although finished: all of them without ``resume``, else those of the ``rerun``
    slices (none without)."""
    if not resume:
        return {c.key for c in cells}
    try:
        return {c.key for c in expand(suite, parse_only(rerun))} if rerun else set()
    except SuiteError as err:  # the slice is parsed as --only's; the message names the option given
        raise SuiteError(str(err).replace("--only", "--rerun", 1)) from None


class StoreFailure(Exception):
    """A write to the store failed while the grid ran (wraps the cell and the cause)."""

    def __init__(self, cell: Cell, record: Record | None, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cell, self.record, self.cause = cell, record, cause


class _Grid:
    """Claims, runs and records the cells of one invocation; waits for cells that another process holds."""

    def __init__(self, tracker: Tracker, lock: Path, parent: str, exp: str, echo) -> None:
        self.tracker, self.lock, self.parent, self.exp, self.echo = tracker, lock, parent, exp, echo
        self.started: dict[str, str] = {}
        self.busy: dict[str, Cell] = {}  # held by another process
        self.heartbeat: leases.Heartbeat | None = None
        self.todo: list[Cell] = []
        self.summary: RunSummary | None = None
        self.rerun: set[str] = set()  # keys run again even if FINISHED under another parent
        self.suite_keys: list[str] = []  # every cell of the suite file (not only the --only slice)
        self.group_backbones = False  # train the backbones of the plan in groups first (benchmark/grid/pretrain.py)

    def plan(self, name: str, cells: list[Cell], resumed: bool, device: str) -> RunSummary:
        """The cells with no FINISHED run in the experiment (for cells to rerun: under this parent); orphans of a
        resumed parent are marked KILLED first."""
        if resumed:
            killed = self.tracker.mark_orphans(self.parent, self.exp)
            if killed:
                self.echo(f"marked {killed} interrupted cell run(s) KILLED")
        here = self.tracker.finished_keys(self.parent, self.exp)
        anywhere = reuse.finished_by_key(self.tracker, self.exp)
        reused = [c for c in cells if c.key not in here and c.key in anywhere and c.key not in self.rerun]
        self.todo = [c for c in cells if c.key not in here and (c.key in self.rerun or c.key not in anywhere)]
        self.summary = RunSummary(self.parent, self.tracker.shown_uri, total=len(cells),
                                  skipped=len(cells) - len(self.todo), reused=len(reused))
        with leases.held(self.lock):  # the view shows the new suite's cells at once, the reused ones included
            reuse.mark_current(self.tracker, self.exp, self.suite_keys)
        earlier = f"{len(reused)} reused from earlier runs; " if reused else ""
        self.echo(
            f"suite {name}: {len(cells)} cells, {self.summary.skipped} already finished, "
            f"{len(self.todo)} to run on {device} ({earlier}parent run {self.parent}{', resumed' if resumed else ''})"
        )
        return self.summary

    def run(self, ex, opts: RunOptions) -> None:
        """Run the plan; Ctrl-C / SIGTERM and store failures close what this process holds."""
        try:
            with leases.Heartbeat(self.tracker.client) as beat:
                self.heartbeat = beat
                if self.group_backbones:
                    pretrain_backbones(self.todo, opts)
                self._run(ex, self.todo, opts)
        except KeyboardInterrupt:
            with signals.shielded():  # a second Ctrl-C must not cut the clean-up short
                self.tracker.kill_own_children(self.parent, self.exp)
                self.tracker.kill_parent(self.parent)
            self.echo("interrupted: the running cell was marked KILLED; run the same command again to resume")
            raise
        except StoreFailure as err:
            raise self.store_failed(err) from None
        with leases.held(self.lock):  # the last of two versions run at once leaves its cells current
            reuse.mark_current(self.tracker, self.exp, self.suite_keys)
        reuse.log_cell_record(self.tracker, self.parent, reuse.cell_record(self.tracker, self.exp, self.parent,
                                                                           self.suite_keys))
        self.tracker.end_parent(self.parent, self.summary.failed, self.summary.total)

    def on_start(self, cell: Cell) -> bool:
        try:
            outcome, run_id = leases.claim(self.tracker, self.lock, self.parent, self.exp, cell,
                                           rerun=cell.key in self.rerun)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            raise StoreFailure(cell, None, err) from err
        if outcome == "busy":
            self.busy[cell.key] = cell
        if run_id is None:
            return False
        self.started[cell.key] = run_id
        if self.heartbeat is not None:
            self.heartbeat.run_ids.add(run_id)
        return True

    def on_done(self, cell: Cell, record: Record) -> None:
        run_id = self.started.pop(cell.key)
        try:
            self.tracker.finish_child(run_id, record)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            self.started[cell.key] = run_id
            raise StoreFailure(cell, record, err) from err
        if self.heartbeat is not None:
            self.heartbeat.run_ids.discard(run_id)
        if record.status == "FINISHED":
            self.show_current(cell.key, run_id)
        self.summary.records.append((cell, record))
        state = "ok" if record.status == "FINISHED" else f"FAILED ({record.error})"
        self.echo(f"  [{len(self.summary.records)}/{len(self.todo)}] {cell.title()}: {state} in {record.seconds:.1f} s")

    def show_current(self, key: str, run_id: str) -> None:
        """The view shows a cell as soon as it finishes; the grid's end sets every cell's tag again, so a write
        that fails here (the store failing mid-grid is handled at the next write) loses nothing."""
        try:
            reuse.mark_finished(self.tracker, self.exp, key, run_id)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            log.warning("could not mark run %s as its cell's current run: %s", run_id, redact(str(err))[:200])

    def _run(self, ex, todo: list[Cell], opts: RunOptions) -> None:
        """Run what can be claimed; then wait for the cells another process holds, and take over any it drops."""
        ex.run(todo, opts, self.on_start, self.on_done)
        while self.busy:
            self.echo(f"{len(self.busy)} cell(s) are being run by another process; waiting for them (Ctrl-C stops "
                      "waiting; a later run takes over any cell that process drops)")
            while True:
                states = {k: leases.state(self.tracker, self.parent, self.exp, k, k in self.rerun) for k in self.busy}
                if "busy" not in states.values():
                    break
                time.sleep(WAIT_SECONDS)
            self.summary.failed_elsewhere += sum(1 for v in states.values() if v == "failed")
            dropped = [self.busy[k] for k, v in states.items() if v == "free"]  # its owner died or was stopped
            self.busy = {}
            if dropped:
                self.echo(f"{len(dropped)} cell(s) were dropped by their process; running them here")
                ex.run(dropped, opts, self.on_start, self.on_done)

    def store_failed(self, err: StoreFailure) -> StoreError:
        """Keep what the cell computed beside the store, close what can be closed, and say so in one line."""
        log_file = self.lock.parent / FAILURE_LOG
        entry = {
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "parent_run": self.parent,
            "cell": err.cell.title(),
            "cell_key": err.cell.key,
            "error": redact(f"{type(err.cause).__name__}: {err.cause}"),
        }
        if err.record is not None:
            entry.update(status=err.record.status, metrics=err.record.metrics, cell_error=err.record.error)
        try:
            with open(log_file, "a") as fh:
                fh.write(json.dumps(entry, default=str) + "\n")
            kept = (f"the cell's results are kept in {log_file}" if err.record is not None else
                    f"the failure is noted in {log_file}")
        except OSError as werr:
            kept = f"they could not be kept in {log_file} either ({werr.strerror})"
        for rid in self.started.values():
            self._close(rid)  # the store is failing: a cell left RUNNING is marked KILLED by the next run
        parent = ("the parent run was closed as FAILED" if self._close(self.parent) else
                  "the parent run could not be closed either (it shows RUNNING until the next run of this suite "
                  "resumes it)")
        # SQLAlchemy may put its own note first ("(raised as a result of Query-invoked autoflush ...)"): the cause is
        # the database's line
        lines = [ln for ln in redact(str(err.cause)).splitlines() if ln.strip() and "raised as a result of" not in ln]
        first = lines[0].strip()[:300] if lines else type(err.cause).__name__
        return StoreError(f"the tracking store failed while recording {err.cell.title()}: {first}; {kept}; {parent}")

    def _close(self, run_id: str) -> bool:
        """Mark a run FAILED; False when the store refuses that too (the message must not say it was closed)."""
        try:
            self.tracker.set_status(run_id, "FAILED")
        except Exception:
            return False
        return True


def warn_unwritable_cache(cache_dir: str | None) -> None:
    """Said once, before the grid: a cache that cannot be written costs time (models trained again next run),
    never results (``benchmark/store/cache.py`` keeps them in memory for this run)."""
    from benchmark.store.cache import Cache

    Cache(cache_dir).warn_if_unwritable()


def suite_hash(suite: Suite) -> str:
    """The suite's meaning, comments and key order aside: a change starts a new parent run. Whether backbones train
    in groups is how, not what (a cell's backbone is the same up to float rounding): left out."""
    return stable_hash(suite.model_dump(mode="json", exclude={"resources": {"group_backbones"}}))


def print_table(summary: RunSummary, echo=print) -> None:
    cols, short = list(HEADLINE_METRICS), list(HEADLINE_METRICS.values())
    if not summary.records:
        return
    width = max(len(c.title()) for c, _ in summary.records)
    echo(f"{'cell':<{width}}  {'status':<8} " + " ".join(f"{s:>8}" for s in short))
    for cell, rec in summary.records:
        vals = " ".join(f"{rec.metrics[c]:>8.3f}" if c in rec.metrics else f"{'-':>8}" for c in cols)
        echo(f"{cell.title():<{width}}  {rec.status:<8} {vals}")


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
