"""The claim protocol on a real store, without running cells: who may run a cell, and when a claim is an orphan."""

from __future__ import annotations

import os
import socket
import time

from conftest import tiny_suite, write_suite

from benchmark.grid.runner import suite_hash
from benchmark.store import leases
from benchmark.store.tracking import Tracker
from benchmark.suite import expand, load_suite


def _setup(tmp_path, smoke_dict):
    path = write_suite(tmp_path, tiny_suite(smoke_dict, "claims"))
    suite = load_suite(path)
    cell = expand(suite)[0]
    tracker = Tracker()
    exp = tracker.experiment_id(suite.name)
    parent, _, _ = tracker.start_parent(suite.name, path, "cpu", {}, True, suite_hash(suite))
    lock = leases.lock_path(tracker.uri, tmp_path)
    return tracker, exp, parent, cell, lock


def test_a_cell_is_claimed_once_then_finished_or_taken_over(tmp_path, smoke_dict):
    tracker, exp, parent, cell, lock = _setup(tmp_path, smoke_dict)
    outcome, rid = leases.claim(tracker, lock, parent, exp, cell)
    assert outcome == "claimed" and rid
    assert leases.claim(tracker, lock, parent, exp, cell) == ("busy", None)  # this process is alive: it holds it

    # the same claim seen as another host's: live while its heartbeat is fresh, an orphan once it is stale
    tracker.client.set_tag(rid, "benchmark.host", "elsewhere")
    assert leases.claim(tracker, lock, parent, exp, cell) == ("busy", None)
    assert leases.state(tracker, parent, exp, cell.key) == "busy"
    tracker.client.set_tag(rid, leases.HEARTBEAT, str(int(time.time() - leases.STALE_SECONDS - 1)))
    assert leases.state(tracker, parent, exp, cell.key) == "free"
    outcome, again = leases.claim(tracker, lock, parent, exp, cell)
    assert outcome == "claimed" and again != rid
    assert tracker.client.get_run(rid).info.status == "KILLED"

    tracker.set_status(again, "FINISHED")
    assert leases.claim(tracker, lock, parent, exp, cell) == ("finished", None)
    assert leases.state(tracker, parent, exp, cell.key) == "finished"


def test_a_dead_local_owner_is_an_orphan_and_a_failed_cell_stays_failed(tmp_path, smoke_dict):
    tracker, exp, parent, cell, lock = _setup(tmp_path, smoke_dict)
    _, rid = leases.claim(tracker, lock, parent, exp, cell)
    tracker.client.set_tag(rid, "benchmark.pid", str(2**22 + 12345))  # above pid_max: no such process
    assert not leases.owner_alive(tracker.client.get_run(rid).data.tags)
    _, again = leases.claim(tracker, lock, parent, exp, cell)
    tracker.set_status(again, "FAILED")
    assert leases.state(tracker, parent, exp, cell.key) == "failed"  # its owner ended it: not taken over
    assert leases.owner_alive({"benchmark.host": socket.gethostname(), "benchmark.pid": str(os.getpid())})


def test_the_lock_lives_beside_a_sqlite_store_or_in_the_cache(tmp_path):
    assert str(leases.lock_path("sqlite:////data/mlruns/mlflow.db", tmp_path)) == "/data/mlruns/mlflow.db.claim-lock"
    remote = leases.lock_path("http://server:5000", tmp_path)
    assert remote.parent == tmp_path / "locks" and remote.name.startswith("claims-")
