"""However many `benchmark run`s of one suite share a store, every cell ends with exactly one FINISHED run under one
parent: a cell is claimed in the store (under a lock) before it runs, and a process waits for the cells others hold."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.suite import expand, load_suite


def _cells(name: str):
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("benchmark.role") == "parent"]
    return parents, [r for r in runs if r.data.tags.get("benchmark.role") == "cell"]


# 3 processes: more than one other holder to wait for (2 processes of two suites: test_two_versions_...); a 4th
# proved nothing more and cost a fourth start of torch and MLflow
@pytest.mark.parametrize("n_procs", [3])
def test_concurrent_runs_of_one_suite_finish_each_cell_once(tmp_path, smoke_dict, n_procs):
    d = tiny_suite(smoke_dict, f"same-{n_procs}")
    d["seeds"] = [0, 1]  # 4 cells: enough for the processes to overlap
    suite = write_suite(tmp_path, d)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmark", "run", str(suite), "--quiet", "--device", "cpu"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n_procs)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-3000:]

    parents, cells = _cells(d["name"])
    assert len(parents) == 1, "processes that start together resume one parent"
    keys = {c.key for c in expand(load_suite(suite))}
    finished = Counter(c.data.tags["benchmark.cell_key"] for c in cells if c.info.status == "FINISHED")
    assert finished == Counter({k: 1 for k in keys})
    assert len(cells) == len(keys), "no cell was even started twice"
    ran = sum(out.count(": ok in ") for out, _ in outs)
    assert ran == len(keys)
    assert parents[0].info.status == "FINISHED"


def test_two_versions_of_a_suite_at_once_run_each_shared_cell_once(tmp_path, smoke_dict):
    """A suite and its grown version started together: the cells they share run once, in one of them, and the
    other reuses that run; the attack of a shared cell is made once (one cache entry per attack)."""
    small = tiny_suite(smoke_dict, "versions")  # none, label_flip
    grown = copy.deepcopy(small)
    grown["attacks"]["lf20"] = {"name": "label_flip", "params": {"rate": 0.2}}
    paths = [write_suite(tmp_path, small, "small.yaml"), write_suite(tmp_path, grown, "grown.yaml")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "benchmark", "run", str(p), "--quiet", "--device", "cpu"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in paths]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-3000:]

    parents, cells = _cells("versions")
    assert len(parents) == 2, "two versions: two parents"
    keys = {c.key for c in expand(load_suite(paths[1]))}
    assert Counter(c.data.tags["benchmark.cell_key"] for c in cells) == Counter({k: 1 for k in keys}), \
        "each cell of either version started once"
    assert all(c.info.status == "FINISHED" for c in cells)
    assert sum(out.count(": ok in ") for out, _ in outs) == len(keys) == 3
    attacks = list((Path(os.environ["BENCHMARK_CACHE"]) / "attack").glob("*.pt"))
    assert len(attacks) == 3
