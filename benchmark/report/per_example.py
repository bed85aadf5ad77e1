"""Per-target and per-test-image outcomes of each counted run, read back from its artifacts for the paired tests.

A run without them (logged before they existed) is simply absent here; the tests that would need it are skipped
and the report says so.
"""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.cell.backdoor import BACKDOOR_HITS, load_triggered_rates
from benchmark.cell.per_example_artifacts import (
    PER_TARGET,
    TEST_CORRECT,
    load_test_correct,
)
from benchmark.report.aggregate import Aggregate
from benchmark.report.source import RunSet, download


@dataclass
class Outcome:
    clean: np.ndarray  # (N,) bool: clean head correct on each test image of the cell's task
    poisoned: np.ndarray  # (trials, N) bool: each trial's poisoned head
    targets: dict[int, bool] = field(default_factory=dict)  # targeted: test row of the target -> success
    # backdoors: test row of a counted victim image -> share of trials whose trigger turned it
    triggered: dict[int, float] = field(default_factory=dict)

    @property
    def poisoned_mean(self) -> np.ndarray:
        """(N,) per test image: the fraction of trials whose poisoned head classifies it correctly."""
        return self.poisoned.mean(axis=0) if len(self.poisoned) else np.full(len(self.clean), np.nan)


def _targets(text: str) -> dict[int, bool]:
    return {int(row["target_index"]): row["success"] == "1" for row in csv.DictReader(io.StringIO(text))}


def load_outcomes(rs: RunSet, agg: Aggregate) -> dict[str, Outcome]:
    """run id -> Outcome, for every counted run that has ``test_correct.npz``."""
    out: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group in agg.groups.values():
            for run in group.runs:
                path = download(rs.tracker, run.run_id, TEST_CORRECT, Path(tmp))
                if path is None or not path.is_file():
                    continue
                clean, poisoned = load_test_correct(path.read_bytes())
                targets, triggered = {}, {}
                if "backdoor_success_clean_head" in run.metrics:
                    hits = download(rs.tracker, run.run_id, BACKDOOR_HITS, Path(tmp))
                    if hits is not None and hits.is_file():
                        triggered = load_triggered_rates(hits.read_bytes())
                elif "attack_success_rate" in run.metrics:
                    csv_path = download(rs.tracker, run.run_id, PER_TARGET, Path(tmp))
                    if csv_path is not None and csv_path.is_file():
                        targets = _targets(csv_path.read_text())
                out[run.run_id] = Outcome(clean, poisoned, targets, triggered)
    return out
