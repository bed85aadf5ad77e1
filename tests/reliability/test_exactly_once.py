"""However many `benchmark run`s of one suite share a store, every cell ends with exactly one FINISHED run under one
parent: a cell is claimed in the store (under a lock) before it runs, and a process waits for the cells others hold."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from benchmark.suite import expand, load_suite
from conftest import ROOT, tiny_suite, write_suite


def _cells(name: str):
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("benchmark.role") == "parent"]
    return parents, [r for r in runs if r.data.tags.get("benchmark.role") == "cell"]


@pytest.mark.parametrize("n_procs", [2, 4])
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
