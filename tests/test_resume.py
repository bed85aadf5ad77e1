"""Interrupted and concurrent runs: SIGKILL mid-cell then resume, Ctrl-C, two processes on one store, --rerun.

The contract (see ``benchmark.store.tracking``): a child run is RUNNING while its cell runs and gets every metric in one
batch when the cell ends, so a killed run never leaves a FINISHED run with partial metrics; the next invocation
marks the orphan KILLED and runs the cell again; each cell ends with exactly one FINISHED run per parent.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main
from benchmark.suite import expand, load_suite

FULL = ("clean_accuracy", "poisoned_accuracy", "accuracy_drop", "robust_accuracy", "external_accuracy", "cell_seconds")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}  # the store and cache of this test (conftest sets them)


def _cli(suite: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmark", "run", str(suite), "--quiet", *extra]


def _db_path() -> str:
    return os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")


def _running_cells() -> list[str]:
    """Child runs that are RUNNING, read straight from the sqlite file (read-only: never creates or migrates it)."""
    path = _db_path()
    if not Path(path).exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'benchmark.role' AND t.value = 'cell' AND r.status = 'RUNNING'"
            ).fetchall()
    except sqlite3.Error:  # the store is being created or is locked for a moment
        return []
    return [r[0] for r in rows]


def _wait_for_running_cell(proc: subprocess.Popen, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = _running_cells()
        if running:
            return running[0]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before a cell was seen RUNNING:\n{out}\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no cell became RUNNING in time")


def _runs(suite_name: str):
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(suite_name)
    assert exp is not None, f"no experiment {suite_name}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("benchmark.role") == "parent"]
    cells = [r for r in runs if r.data.tags.get("benchmark.role") == "cell"]
    return parents, cells


def _assert_complete(suite_path: Path, cells: list, parent_id: str) -> None:
    """Exactly one FINISHED run per cell of the grid under this parent, each with every metric."""
    keys = {c.key for c in expand(load_suite(suite_path))}
    mine = [c for c in cells if c.data.tags["mlflow.parentRunId"] == parent_id]
    finished = [c for c in mine if c.info.status == "FINISHED"]
    assert sorted(c.data.tags["benchmark.cell_key"] for c in finished) == sorted(keys)
    for c in finished:
        missing = [m for m in FULL if m not in c.data.metrics]
        assert not missing, (c.info.run_name, missing)
        assert c.data.tags["benchmark.status"] == "FINISHED"


def test_sigkill_mid_cell_then_resume(tmp_path, smoke_dict, capsys):
    suite = write_suite(tmp_path, tiny_suite(smoke_dict))
    proc = subprocess.Popen(_cli(suite), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    orphan = _wait_for_running_cell(proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)  # reaped: its pid no longer answers, so the next run sees the orphan as dead
    assert proc.returncode == -signal.SIGKILL

    parents, cells = _runs("tiny")
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"
    killed = next(c for c in cells if c.info.run_id == orphan)
    assert killed.info.status == "RUNNING"  # nobody could mark it: the process died mid-cell
    assert "clean_accuracy" not in killed.data.metrics  # metrics come in one batch at the end of a cell

    # the same command again (in this process: it saves a second start of torch and MLflow)
    assert main(["run", str(suite), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "marked 1 interrupted cell run(s) KILLED" in out
    assert f"(parent run {parents[0].info.run_id}, resumed)" in out

    parents, cells = _runs("tiny")
    assert len(parents) == 1, "resuming must log into the same parent run"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["cells_total"] == 2 and parent.data.metrics["cells_failed"] == 0
    assert {c.info.run_id: c.info.status for c in cells}[orphan] == "KILLED"
    _assert_complete(suite, cells, parent.info.run_id)
    # nothing FINISHED without its metrics, nothing left RUNNING, nothing duplicated
    assert all(set(FULL) <= set(c.data.metrics) for c in cells if c.info.status == "FINISHED")
    assert not [c for c in cells if c.info.status == "RUNNING"]
    assert len([c for c in cells if c.info.status == "FINISHED"]) == 2


def test_ctrl_c_marks_the_running_cell_killed(tmp_path, smoke_dict):
    suite = write_suite(tmp_path, tiny_suite(smoke_dict))
    proc = subprocess.Popen(_cli(suite), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    running = _wait_for_running_cell(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-4000:]
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "interrupted: the running cell was marked KILLED" in out

    parents, cells = _runs("tiny")
    assert [p.info.status for p in parents] == ["KILLED"]
    status = {c.info.run_id: c.info.status for c in cells}
    assert status[running] == "KILLED"
    assert "RUNNING" not in status.values()


def test_two_processes_on_one_store_lose_nothing(tmp_path, smoke_dict):
    """Two suites started at once into one new sqlite store and one cache (same backbone: both train and save it)."""
    a = write_suite(tmp_path, tiny_suite(smoke_dict, "conc-a", attacks=("label_flip",)), "a.yaml")
    b = write_suite(tmp_path, tiny_suite(smoke_dict, "conc-b", attacks=("none",)), "b.yaml")
    assert not Path(_db_path()).exists()  # both processes race to create it
    procs = [
        subprocess.Popen(_cli(s), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for s in (a, b)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    for name, path in (("conc-a", a), ("conc-b", b)):
        parents, cells = _runs(name)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(cells) == 1
        _assert_complete(path, cells, parents[0].info.run_id)
    # the shared cache holds one complete backbone entry, no temp files
    files = sorted(p.name for p in (Path(os.environ["BENCHMARK_CACHE"]) / "backbone").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".pt"), files


def test_rerun_starts_a_new_parent(tmp_path, smoke_dict, capsys):
    suite = write_suite(tmp_path, tiny_suite(smoke_dict))
    assert main(["run", str(suite), "--quiet"]) == 0
    assert main(["run", str(suite), "--quiet"]) == 0  # resume: nothing left to do
    assert main(["run", str(suite), "--quiet", "--rerun"]) == 0
    out = capsys.readouterr().out
    assert "2 cells, 2 already finished, 0 to run" in out
    assert out.count("2 cells, 0 already finished, 2 to run") == 2

    parents, cells = _runs("tiny")
    assert len(parents) == 2
    first, second = sorted(parents, key=lambda r: r.info.start_time)
    assert first.info.run_id != second.info.run_id
    assert all(p.info.status == "FINISHED" for p in parents)
    assert len(cells) == 4
    _assert_complete(suite, cells, first.info.run_id)
    _assert_complete(suite, cells, second.info.run_id)
    # the rerun really ran the cells again (from the cache), with identical results
    by = {p.info.run_id: {} for p in parents}
    for c in cells:
        by[c.data.tags["mlflow.parentRunId"]][c.data.tags["benchmark.cell_key"]] = c.data.metrics
    assert all(m["backbone_cached"] == 1.0 for m in by[second.info.run_id].values())
    for key, m in by[first.info.run_id].items():
        assert m["clean_accuracy"] == by[second.info.run_id][key]["clean_accuracy"]


def test_ctrl_c_during_a_store_call_is_raised_after_it():
    """A Ctrl-C inside an MLflow write waits for the write to end (no half-written run, no SQLAlchemy traceback)."""
    from benchmark.store.tracking import retry

    events = []

    def write() -> str:
        os.kill(os.getpid(), signal.SIGINT)  # arrives mid-call
        events.append("write finished")
        return "ok"

    with pytest.raises(KeyboardInterrupt):
        retry(write)
    assert events == ["write finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
