"""A Ray cluster simulated on this machine: a head and a second node (`ray start`), a suite run with --address, the
second node killed mid-grid. Every cell ends FINISHED exactly once, each backbone is trained once (one cache entry
per backbone, shared through a folder both nodes see), and the driver exits 0."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.suite import expand, load_suite

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids(*markers: str) -> list[int]:
    """Processes whose command line holds every marker (ours: the markers name this test's temp folder)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(m in cmd for m in markers):
            out.append(int(entry.name))
    return out


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _finished_cells(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute(
                "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'benchmark.role' AND t.value = 'cell' AND r.status = 'FINISHED'"
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_losing_a_node_mid_grid_still_finishes_every_cell_once(tmp_path, smoke_dict):
    temp = Path(tempfile.mkdtemp(prefix="rpb", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port, node2_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",  # one token for head, node and driver, whatever ~/.ray holds
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_health_check_period_ms": "1000",  # a dead node is noticed in seconds, not half a minute
        "RAY_health_check_failure_threshold": "3",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    common = ["--num-cpus", "1", "--temp-dir", str(temp), "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "False", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        head_ip = ray.util.get_node_ip_address()  # the address `ray start` binds (no Python started for it)
        address = f"{head_ip}:{port}"
        subprocess.run([RAY, "start", "--address", address, "--node-manager-port", str(node2_port), *common],
                       env=env, check=True, capture_output=True, timeout=180)

        d = tiny_suite(smoke_dict, "cluster")
        d["seeds"] = [0, 1]  # 2 backbones x (none, label_flip): 4 cells, each backbone shared by 2
        suite = write_suite(tmp_path, d)
        db = tmp_path / "store" / "mlflow.db"
        cache = tmp_path / "cache"  # both nodes are this machine: a folder both see
        run_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "BENCHMARK_CACHE": str(cache)}
        cmd = [sys.executable, "-m", "benchmark", "run", str(suite), "--quiet", "--device", "cpu",
               "--executor", "ray", "--address", address]
        driver = subprocess.Popen(cmd, cwd=ROOT, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        deadline = time.monotonic() + 600
        while _finished_cells(db) < 1 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert driver.poll() is None and _finished_cells(db) < 4, "the grid ended before the node could be killed"
        raylet = _pids(str(temp), f"--node_manager_port={node2_port}")
        assert raylet, "the second node's raylet was not found"
        _kill([p for pid in raylet for p in _descendants(pid)])  # the second node dies mid-grid
        out, err = driver.communicate(timeout=900)
        assert driver.returncode == 0, out[-3000:] + err[-3000:]
        print(out[-1500:])
    finally:
        _kill(_pids(str(temp)))
        subprocess.run(["rm", "-rf", str(temp)], check=False)

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("cluster")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    cells = [r for r in runs if r.data.tags.get("benchmark.role") == "cell"]
    keys = {c.key for c in expand(load_suite(suite))}
    assert Counter(c.data.tags["benchmark.cell_key"] for c in cells if c.info.status == "FINISHED") == Counter(
        {k: 1 for k in keys}
    )
    assert len(cells) == len(keys)
    trained = Counter((c.data.tags["seed"]) for c in cells if c.data.metrics.get("backbone_cached") == 0.0)
    assert all(n <= 1 for n in trained.values()), trained
    assert len(list((cache / "backbone").glob("*.pt"))) == 2
