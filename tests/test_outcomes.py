"""A cell's outcome artifacts agree with its metrics: per_target.csv with the success rate, test_correct.npz with
the clean and poisoned accuracies; the robust-accuracy eps sweep is measured in the no-attack cell only."""

from __future__ import annotations

import csv
import io

import pytest
from conftest import tiny_suite

from benchmark.cell.per_example_artifacts import (
    PER_TARGET,
    PER_TARGET_COLUMNS,
    TEST_CORRECT,
    load_test_correct,
)
from benchmark.cell.pipeline import RunOptions, run_cell
from benchmark.suite import expand, parse_suite, sweep_metric


@pytest.mark.usefixtures("one_thread")
def test_outcome_artifacts_match_the_metrics(smoke_dict, tmp_path):
    d = tiny_suite(smoke_dict, attacks=("none",))
    d["attacks"]["pf"] = {"name": "poison_frog", "params": {"target_class": 0, "base_class": 1, "num_targets": 4,
                                                             "num_poisons": 3, "eps": 0.05, "steps": 5}}
    d["evaluation"]["sweep"] = {"robust_eps": [0.01, 0.03]}
    recs = {}
    for cell in expand(parse_suite(d)):
        rec = run_cell(cell, RunOptions(device="cpu", cache_dir=str(tmp_path)))
        assert rec.status == "FINISHED", rec.error
        recs[cell.attack.label] = rec
    for rec in recs.values():
        clean, poisoned = load_test_correct(rec.artifacts[TEST_CORRECT])
        assert clean.mean() == pytest.approx(rec.metrics["clean_accuracy"])
        assert poisoned.mean(axis=1).mean() == pytest.approx(rec.metrics["poisoned_accuracy"])
    pf = recs["pf"]
    rows = list(csv.DictReader(io.StringIO(pf.artifacts[PER_TARGET].decode())))
    assert tuple(rows[0]) == PER_TARGET_COLUMNS
    assert len(rows) == pf.metrics["num_trials"]
    assert sum(int(r["success"]) for r in rows) == pf.metrics["attack_successes"]
    assert all(int(r["num_poisons"]) == 3 for r in rows)
    assert PER_TARGET not in recs["none"].artifacts
    for eps in (0.01, 0.03):
        assert 0.0 <= recs["none"].metrics[sweep_metric("robust_accuracy", "robust_eps", eps)] <= 1.0
        assert sweep_metric("robust_accuracy", "robust_eps", eps) not in pf.metrics
