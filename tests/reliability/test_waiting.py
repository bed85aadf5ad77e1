"""Waiting is never silent: an --address that answers but is not Ray fails in seconds with one line, and a `run`
that waits for the claim lock says who holds it (a stopped process included) and how to stop waiting."""

from __future__ import annotations

import http.server
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main
from benchmark.grid.ray_executor import CONNECT_TIMEOUT
from benchmark.store import leases


def _http_server() -> socketserver.TCPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("kind", ["http", "silent"])
def test_an_address_that_answers_but_is_not_ray_is_one_line(kind, tmp_path, smoke_dict, capsys):
    """The dashboard's port (HTTP) given for the GCS port: before, `run` hung in ray.init."""
    pytest.importorskip("ray")
    if kind == "http":
        server = _http_server()
        port, close = server.server_address[1], server.shutdown
    else:  # accepts the connection (the kernel's backlog) and never says a word
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port, close = listener.getsockname()[1], listener.close
    suite = write_suite(tmp_path, tiny_suite(smoke_dict, "notray"))
    try:
        t0 = time.monotonic()
        code = main(["run", str(suite), "--quiet", "--executor", "ray", "--address", f"127.0.0.1:{port}"])
        waited = time.monotonic() - t0
    finally:
        close()
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port} answers, but not as a Ray cluster" in err[0], err
    assert waited < 60 + CONNECT_TIMEOUT  # the probe's own wait is CONNECT_TIMEOUT; the rest is loading the suite
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("notray")
    assert exp is None or client.search_runs([exp.experiment_id]) == []


HOLDER = """
import fcntl, os, signal, sys
fh = open(sys.argv[1], "a")
fcntl.lockf(fh, fcntl.LOCK_EX)
print("locked", flush=True)
if sys.argv[2] == "stop":
    os.kill(os.getpid(), signal.SIGSTOP)
else:
    sys.stdin.read()
"""


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("how", ["running", "stopped"])
def test_waiting_for_the_claim_lock_says_who_holds_it(how, tmp_path, caplog):
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to see that the holder is stopped")
    lock = tmp_path / "mlflow.db.claim-lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "stop" if how == "stopped" else "wait"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        deadline = time.monotonic() + 30
        while how == "stopped" and _state(holder.pid) not in ("T", "t") and time.monotonic() < deadline:
            time.sleep(0.05)
        entered = threading.Event()

        def wait_for_lock() -> None:
            with leases.held(lock):
                entered.set()

        with caplog.at_level(logging.WARNING, logger="benchmark.store.leases"):
            waiter = threading.Thread(target=wait_for_lock, daemon=True)
            waiter.start()
            deadline = time.monotonic() + 30
            while not caplog.records and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not entered.is_set()
            holder.send_signal(signal.SIGKILL)  # the holder ends: its lock goes with it
            waiter.join(timeout=30)
        assert entered.is_set()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"waiting for the claim lock {lock}, held by process {holder.pid}") and "Ctrl-C" in line
    if how == "stopped":
        assert f"which is stopped (`kill -CONT {holder.pid}` resumes it" in line, line
