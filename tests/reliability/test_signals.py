"""SIGTERM stops a run like Ctrl-C (cells KILLED, exit 143); more Ctrl-Cs during the clean-up leave nothing RUNNING."""

from __future__ import annotations

import signal
import subprocess
import time

from conftest import ROOT, tiny_suite, write_suite
from test_resume import _cli, _env, _runs, _wait_for_running_cell


def _start(tmp_path, smoke_dict, name):
    suite = write_suite(tmp_path, tiny_suite(smoke_dict, name))
    proc = subprocess.Popen(_cli(suite, "--device", "cpu"), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, _wait_for_running_cell(proc)


def test_sigterm_is_handled_like_ctrl_c(tmp_path, smoke_dict):
    proc, running = _start(tmp_path, smoke_dict, "term")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "terminated"
    parents, cells = _runs("term")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert {c.info.run_id: c.info.status for c in cells}[running] == "KILLED"
    assert "RUNNING" not in {c.info.status for c in cells}


def test_ctrl_c_again_during_clean_up_leaves_nothing_running(tmp_path, smoke_dict):
    proc, _ = _start(tmp_path, smoke_dict, "twice")
    proc.send_signal(signal.SIGINT)
    for _ in range(20):  # an impatient user: Ctrl-C again and again while the run cleans up
        time.sleep(0.05)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    parents, cells = _runs("twice")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert "RUNNING" not in {c.info.status for c in cells}
