"""`report` and `ui` at their edges: an --out that cannot hold a report, a port that is not one or is taken, a store
that does not answer: one line, exit 2, no server started. The store's URI (a password in it included) reaches the
MLflow server through its environment, never its command line: the test reads the child's argv."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, one_error_line

from benchmark.cli import ui
from benchmark.cli.commands import main

SECRET_URI = "postgresql://bob:hunter2@127.0.0.1:9/mlflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_server(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the MLflow server must not be started")

    monkeypatch.setattr(ui, "launch", refuse)


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
def test_a_port_that_is_not_one_is_one_line(port, capsys, no_server):
    assert main(["ui", "--port", port]) == 2
    assert one_error_line(capsys) == f"error: --port {port}: a port is a number from 1 to 65535"
    assert capsys.readouterr().out == ""


def test_a_port_another_program_serves_is_refused(capsys, no_server):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    line = one_error_line(capsys)
    assert f"--port {port}: 127.0.0.1:{port} is already in use by another program" in line, line


def test_an_unreachable_database_is_one_line_without_its_password(capsys, no_server):
    assert main(["ui", "--tracking-uri", SECRET_URI, "--port", str(_free_port())]) == 2
    line = one_error_line(capsys)
    assert "cannot be reached" in line and "bob:***@127.0.0.1:9" in line and "hunter2" not in line, line


def test_the_store_uri_reaches_the_server_by_its_environment_not_its_argv(tmp_path):
    proc = ui.launch(SECRET_URI, "127.0.0.1", _free_port(), tmp_path)
    try:
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
    finally:
        ui.stop_group(proc)
    if argv == [b""]:  # the server already exited (its store is unreachable): what it was started with is proc.args
        argv, environ = [str(a).encode() for a in proc.args], None
    assert b"mlflow" in argv and b"server" in argv, argv
    assert not any(b"hunter2" in arg for arg in argv), argv
    assert environ is None or f"{ui.STORE_ENV}={SECRET_URI}".encode() in environ
    assert oct(Path(f"/proc/{os.getpid()}/environ").stat().st_mode & 0o777) == "0o400"  # this user only


@pytest.mark.parametrize("where", ["a-file", "under-a-file"])
def test_report_out_that_cannot_hold_a_folder_is_one_line(where, tmp_path, capsys):
    blocker = tmp_path / "report.txt"
    blocker.write_text("keep me\n")
    out = blocker if where == "a-file" else blocker / "reports"
    assert main(["report", "--suite", "none", "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: --out {out}: ") and ("a file, not a folder" in line or "Not a directory" in line)
    assert blocker.read_text() == "keep me\n"


def test_report_out_in_a_folder_without_write_permission_is_one_line(smoke_dict):
    base = Path(tempfile.mkdtemp(prefix="ro-out-"))  # outside pytest's 0700 tree: another user must traverse it
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        cmd = [sys.executable, "-m", "benchmark", "report", "--suite", "none", "--out", str(locked / "r")]
        if os.geteuid() == 0:  # root writes anywhere: as nobody, the folder is read-only
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(base), "MPLCONFIGDIR": str(base / ".mpl")}
        done = subprocess.run(cmd, cwd=base, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert lines == [f"error: --out {locked / 'r'}: the report cannot be written there (Permission denied)"]
    finally:
        shutil.rmtree(base, ignore_errors=True)
