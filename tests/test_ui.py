"""`benchmark ui` stops the MLflow server's whole process group on SIGTERM and on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid="], capture_output=True, text=True, check=True).stdout
    return [tuple(int(v) for v in line.split()) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_signal_stops_the_server_group(sig, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "ui", "--port", str(_free_port())],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        ready = ""
        while "ready on" not in ready:
            ready = proc.stdout.readline()
            assert ready, "benchmark ui exited before the server was ready"
        (server_group,) = {pgid for pid, ppid, pgid in _processes() if ppid == proc.pid}
        assert server_group != os.getpgid(proc.pid), "the server runs in a group of its own"
        assert len([p for p in _processes() if p[2] == server_group]) >= 2  # the server and its uvicorn worker
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        left = [p for p in _processes() if p[2] == server_group]
        assert not left, f"processes of the server group still alive: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
