"""A store that cannot be written is an error before the grid (exit 2, no run left RUNNING); a write that fails
mid-grid fails that cell with its results kept in a sidecar log, closes the parent FAILED and exits 3; `report`
reads a read-only store and writes only under --out."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main
from benchmark.store.tracking import Tracker


def _runs(uri: str, name: str):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def test_artifacts_folder_that_is_a_file_stops_before_any_run(tmp_path, smoke_dict, monkeypatch, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (store / "artifacts").write_text("not a folder")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    suite = write_suite(tmp_path, tiny_suite(smoke_dict, "nowrite"))
    assert main(["run", str(suite), "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: artifact store") and "cannot be written" in err[0]
    assert _runs(uri, "nowrite") == []


def test_a_write_that_fails_mid_grid_fails_that_cell_keeps_its_results_and_exits_3(
    tmp_path, smoke_dict, monkeypatch, capsys
):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    real = Tracker.finish_child
    calls = []

    def disk_full_on_second(self, run_id, record, status=None):
        calls.append(run_id)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, run_id, record, status)

    monkeypatch.setattr(Tracker, "finish_child", disk_full_on_second)
    d = tiny_suite(smoke_dict, "diskfull")
    d["seeds"] = [0, 1]  # 4 cells: the grid must stop at the second
    suite = write_suite(tmp_path, d)
    assert main(["run", str(suite), "--quiet", "--device", "cpu"]) == 3
    cap = capsys.readouterr()
    err = [ln for ln in cap.err.strip().splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "database or disk is full" in err[0] and "closed as FAILED" in err[0]
    assert "Traceback" not in cap.err

    sidecar = Path(uri.removeprefix("sqlite:///")).parent / "benchmark-store-failures.log"
    entry = json.loads(sidecar.read_text().splitlines()[-1])
    assert entry["status"] == "FINISHED" and 0 <= entry["metrics"]["clean_accuracy"] <= 1
    assert "database or disk is full" in entry["error"]

    runs = _runs(uri, "diskfull")
    parent = [r for r in runs if r.data.tags["benchmark.role"] == "parent"]
    cells = [r for r in runs if r.data.tags["benchmark.role"] == "cell"]
    assert [p.info.status for p in parent] == ["FAILED"]
    assert sorted(c.info.status for c in cells) == ["FAILED", "FINISHED"]
    assert entry["cell_key"] == next(c for c in cells if c.info.status == "FAILED").data.tags["benchmark.cell_key"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_report_on_a_read_only_store_writes_only_under_out(smoke_dict, monkeypatch):
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: the store cannot be made read-only for the report")
    base = Path(tempfile.mkdtemp(prefix="ro-store-"))  # outside pytest's 0700 tree: another user must traverse it
    try:
        base.chmod(0o755)
        store = base / "store"
        uri = f"sqlite:///{store / 'mlflow.db'}"
        d = tiny_suite(smoke_dict, "readonly", attacks=("none",))
        suite = write_suite(base, d)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("BENCHMARK_CACHE", str(base / "cache"))
        env = dict(os.environ)
        # the store is filled in this process (the report, run as another user, is the process under test)
        assert main(["run", str(suite), "--quiet", "--device", "cpu"]) == 0
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("readonly")
        client.rename_experiment(exp.experiment_id, "../../escape")  # a hostile name, as another tool could set

        out = base / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        for p in [store, *store.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o444)
        before, outside = _snapshot(store), sorted(p.name for p in base.iterdir())
        cmd = [sys.executable, "-m", "benchmark", "report", "--suite", "../../escape", "--out", str(out)]
        if os.geteuid() == 0:  # root writes anywhere: run the report as nobody, for whom the store is read-only
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        # cwd is the store's folder, so PYTHONPATH names the checkout under test
        env_ro = {**env, "HOME": str(out), "MPLCONFIGDIR": str(out / ".mpl"), "PYTHONPATH": str(ROOT)}
        rep = subprocess.run(cmd, cwd=base, env=env_ro, capture_output=True, text=True, timeout=300)
        assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-3000:]
        assert "Traceback" not in rep.stderr
        assert _snapshot(store) == before
        assert sorted(p.name for p in base.iterdir()) == outside
        written = [p for p in out.rglob("report.md")]
        assert len(written) == 1 and written[0].parent.parent == out
    finally:
        for p in [base, *base.rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(base, ignore_errors=True)


def test_a_store_that_fills_mid_grid_says_it_once_and_never_claims_what_it_could_not_do(
    tmp_path, smoke_dict, monkeypatch, capfd
):
    """Every write of MLflow's real SQL store fails from the first cell's end on (as on a full disk): MLflow logs
    each failure with its traceback (hundreds of lines before); now the console has the one error line, and it says
    the parent could not be closed, which it could not."""
    import sqlite3

    import sqlalchemy
    from sqlalchemy import event

    full = []

    def disk_full(conn, cursor, statement, parameters, context, executemany):
        if full and statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")

    real = Tracker.finish_child

    def fill_then_finish(self, run_id, record, status=None):
        full.append(run_id)
        return real(self, run_id, record, status)

    monkeypatch.setattr(Tracker, "finish_child", fill_then_finish)
    event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", disk_full)
    try:
        suite = write_suite(tmp_path, tiny_suite(smoke_dict, "storefull", attacks=("none",)))
        assert main(["run", str(suite), "--quiet", "--device", "cpu"]) == 3
    finally:
        event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", disk_full)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "SQLAlchemy" not in err, err[:3000]
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("error: the tracking store failed while recording") and "disk is full" in line
    assert "the parent run could not be closed either (it shows RUNNING until the next run" in line, line
    parents = [r for r in _runs(os.environ["MLFLOW_TRACKING_URI"], "storefull")
               if r.data.tags["benchmark.role"] == "parent"]
    assert [p.info.status for p in parents] == ["RUNNING"]  # as the line says
