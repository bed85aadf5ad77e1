"""Reading a suite's runs back from MLflow (never running anything): the parent, its cell runs, its suite file.

The layout is the one ``benchmark.store.tracking`` writes: one experiment per suite, a parent run tagged
``benchmark.role=parent`` with the suite YAML at the root of its artifacts, child runs tagged with the parent id
and the axis labels.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.core.errors import BenchmarkError
from benchmark.store.reuse import current_runs
from benchmark.store.tracking import CELL_KEY, PARENT, ROLE, Tracker, retry
from benchmark.suite import NO_FILTER

AXIS_TAGS = ("dataset", "backbone", "defense", "attack", "seed")  # a run without a filter tag had no filter


@dataclass
class CellRun:
    """One child run: its axis labels, status, metrics (curves left out) and error tag."""

    run_id: str
    dataset: str
    backbone: str
    defense: str
    attack: str
    seed: str
    status: str
    start_time: int
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    sweep: dict[str, str] = field(default_factory=dict)  # ``sweep.attack.num_poisons`` -> "5", ``attack.base`` ...
    filter: str = NO_FILTER

    @property
    def cell(self) -> tuple[str, str, str, str, str, str]:
        """Its labels in the order of ``benchmark.suite.AXES``."""
        return (self.dataset, self.backbone, self.defense, self.attack, self.filter, self.seed)

    @property
    def title(self) -> str:
        filt = "" if self.filter == NO_FILTER else f"/{self.filter}"
        return f"{self.dataset}/{self.backbone}/{self.defense}/{self.attack}{filt}/seed{self.seed}"


@dataclass
class RunSet:
    """Everything the report needs from the store."""

    tracker: Tracker
    suite: str
    parent_id: str
    parent_name: str
    runs: list[CellRun]
    suite_raw: dict[str, Any] | None  # the suite YAML logged with the parent, parsed; None if absent
    suite_file: str | None


def load_runs(tracking_uri: str | None, suite: str | None, run_id: str | None) -> RunSet:
    """The cells of ``suite`` as its file last run has them (the latest parent, whose suite file it reads), or the
    children of the parent ``run_id``; BenchmarkError if none."""
    if not suite and not run_id:
        raise BenchmarkError("report: give --suite NAME (its latest run) or --run-id ID (a parent run)")
    tracker = Tracker(tracking_uri, read_only=True)
    client = tracker.client
    if run_id:
        parent = _get_run(tracker, run_id)
        if parent.data.tags.get(ROLE) == "cell" and PARENT in parent.data.tags:  # a cell run: report its parent
            parent = _get_run(tracker, parent.data.tags[PARENT])
        if parent.data.tags.get(ROLE) != "parent":
            raise BenchmarkError(f"run {run_id} is not a benchmark suite run (no tag {ROLE}=parent)")
        exp = retry(lambda: client.get_experiment(parent.info.experiment_id))
        if suite and exp.name != suite:
            raise BenchmarkError(f"run {run_id} belongs to suite '{exp.name}', not '{suite}'")
        suite = exp.name
    else:
        exp = retry(lambda: client.get_experiment_by_name(suite))
        if exp is None:
            known = sorted(e.name for e in retry(lambda: client.search_experiments()) if e.name != "Default")
            hint = f"; suites with runs: {', '.join(known)}" if known else ""
            raise BenchmarkError(f"no runs of suite '{suite}' in {tracker.shown_uri}{hint}")
        latest = tracker.latest_parent(exp.experiment_id)
        if latest is None:
            raise BenchmarkError(f"suite '{suite}' has no parent run in {tracker.shown_uri}; run it first")
        parent = _get_run(tracker, latest)
    children = tracker.children(parent.info.run_id, parent.info.experiment_id)
    if not run_id:  # the suite as it is now: every cell of its file, whichever invocation ran it
        children = _current_cells(tracker, parent.info.experiment_id, children)
    runs = [_cell_run(r) for r in children if r.data.tags.get(ROLE, "cell") == "cell"]
    suite_raw, suite_file = _suite_yaml(tracker, parent.info.run_id, suite)
    return RunSet(
        tracker=tracker,
        suite=suite,
        parent_id=parent.info.run_id,
        parent_name=parent.info.run_name or parent.info.run_id,
        runs=runs,
        suite_raw=suite_raw,
        suite_file=suite_file,
    )


def _current_cells(tracker: Tracker, experiment_id: str, children: list[Any]) -> list[Any]:
    """The runs marked current (``benchmark.store.reuse``), and the latest parent's cells that did not finish (to list
    them as failed); the parent's children alone in a store written before cells were reused."""
    current = current_runs(tracker, experiment_id)
    if not current:
        return children
    keys = {r.data.tags.get(CELL_KEY) for r in current}
    return current + [r for r in children if r.info.status != "FINISHED" and r.data.tags.get(CELL_KEY) not in keys]


def _get_run(tracker: Tracker, run_id: str) -> Any:
    try:
        return retry(lambda: tracker.client.get_run(run_id))
    except Exception:
        raise BenchmarkError(f"run {run_id} not found in {tracker.shown_uri}") from None


def _cell_run(r: Any) -> CellRun:
    tags = r.data.tags
    return CellRun(
        run_id=r.info.run_id,
        **{axis: tags.get(axis, "?") for axis in AXIS_TAGS},
        status=r.info.status,
        start_time=r.info.start_time or 0,
        metrics={k: v for k, v in r.data.metrics.items() if not k.startswith("curve.")},
        error=tags.get("benchmark.error", ""),
        sweep={k: v for k, v in tags.items() if k.startswith("sweep.") or k.endswith(".base")},
        filter=tags.get("filter", NO_FILTER),
    )


def _suite_yaml(tracker: Tracker, parent_id: str, suite: str) -> tuple[dict[str, Any] | None, str | None]:
    """The suite file logged at the root of the parent's artifacts (the one naming this suite if several)."""
    try:
        names = [a.path for a in tracker.client.list_artifacts(parent_id) if not a.is_dir]
    except Exception:
        return None, None
    found: list[tuple[dict[str, Any], str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if not name.endswith((".yaml", ".yml")):
                continue
            path = download(tracker, parent_id, name, Path(tmp))
            if path is None:
                continue
            try:
                raw = yaml.safe_load(path.read_text())
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                continue
            if isinstance(raw, dict):
                found.append((raw, name))
    for raw, name in found:
        if raw.get("name") == suite:
            return raw, name
    return found[0] if found else (None, None)


def download(tracker: Tracker, run_id: str, artifact: str, into: Path) -> Path | None:
    """A run's artifact as a local file under ``into``, or None if it has none."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bar per tiny file
    dst = into / run_id
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(tracker.client.download_artifacts(run_id, artifact, str(dst)))
    except Exception:  # absent or unreadable: the report goes on without it
        return None
