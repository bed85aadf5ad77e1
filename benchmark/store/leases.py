"""Exactly once: a cell is leased (claimed in the store) before it runs, under a lock every `benchmark run` takes.

A claim is the cell's child run, created RUNNING with the owner's host and pid. Checking "no FINISHED run and no
live claim for this key in the suite's experiment" and creating the claim happen under one exclusive lock, so two
processes (or machines) running the same suite, or two versions of it that share cells, against the same store
never both run a cell. The lock is a POSIX
record lock (``fcntl.lockf``, which NFS honours) on a file beside a local sqlite store, or in the cache folder for
any other store (that folder must then be shared, as it already must be for a cluster).

A claim is live while its owner is: on this host, while its pid exists; on another host, while its heartbeat (a
tag the owner refreshes every ``HEARTBEAT_SECONDS``) is younger than ``STALE_SECONDS``. A claim that is not live
is an orphan: it is marked KILLED and the cell may be claimed again.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmark.core.errors import BenchmarkError
from benchmark.core.hashing import stable_hash

log = logging.getLogger(__name__)

HEARTBEAT = "benchmark.heartbeat"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 180.0


def lock_path(tracking_uri: str, cache_dir: Path) -> Path:
    """Beside a local sqlite store; else in the (shared) cache folder, one file per store."""
    if tracking_uri.startswith("sqlite:///") and tracking_uri[len("sqlite:///") :] not in ("", ":memory:"):
        return Path(tracking_uri[len("sqlite:///") :] + ".claim-lock")
    return cache_dir / "locks" / f"claims-{stable_hash(tracking_uri)}.lock"


@contextmanager
def held(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` for the duration of the block (waits for other holders)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")  # noqa: SIM115 - closed below, after the lock is released
    except OSError as err:
        raise BenchmarkError(f"cannot create the claim lock {path}: {err.strerror or err}") from None
    with fh:
        _lock_saying_why(fh, path)
        try:
            yield
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)


def _lock_saying_why(fh: Any, path: Path) -> None:
    """Take the lock; when another process holds it, say so once (who, and how to stop waiting), then wait."""
    try:
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
    log.warning("waiting for the claim lock %s, held by %s; Ctrl-C stops waiting", path, _holder(fh))
    fcntl.lockf(fh, fcntl.LOCK_EX)


def _holder(fh: Any) -> str:
    """The process holding the lock on ``fh`` as words (its pid, and whether it is stopped), best effort."""
    pid = _holder_pid(fh)
    if pid is None:
        return "another `benchmark run` on this store"
    state = ""
    try:  # the third field of /proc/<pid>/stat; the name before it may hold spaces, hence the last ')'
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        pass
    if state in ("T", "t"):
        return f"process {pid}, which is stopped (`kill -CONT {pid}` resumes it, `kill {pid}` ends it)"
    return f"process {pid} (another `benchmark run` on this store)"


def _holder_pid(fh: Any) -> int | None:
    """F_GETLK for the whole file (Linux's struct flock: type, whence, start, len, pid)."""
    layout = "hhqqi"
    try:
        query = struct.pack(layout, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0) + bytes(8)
        answer = fcntl.fcntl(fh.fileno(), fcntl.F_GETLK, query)
        kind, _, _, _, pid = struct.unpack(layout, answer[: struct.calcsize(layout)])
    except (OSError, struct.error):
        return None
    return pid if kind != fcntl.F_UNLCK and pid > 0 else None


def owner_tags() -> dict[str, str]:
    return {"benchmark.pid": str(os.getpid()), "benchmark.host": socket.gethostname(), HEARTBEAT: str(int(time.time()))}


def is_mine(tags: dict[str, str]) -> bool:
    return tags.get("benchmark.pid") == str(os.getpid()) and tags.get("benchmark.host") == socket.gethostname()


def owner_alive(tags: dict[str, str], now: float | None = None) -> bool:
    """Whether the process that holds a RUNNING run (by its tags) is still there."""
    if tags.get("benchmark.host") == socket.gethostname():
        return _pid_alive(int(tags.get("benchmark.pid", "0") or 0))
    try:
        beat = float(tags.get(HEARTBEAT, "0"))
    except ValueError:
        return False
    return (now or time.time()) - beat < STALE_SECONDS


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeat:
    """Refreshes the heartbeat tag of the runs this process holds, so other hosts see its claims as live."""

    def __init__(self, client: Any, interval: float = HEARTBEAT_SECONDS) -> None:
        self.client = client
        self.interval = interval
        self.run_ids: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="benchmark-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for rid in list(self.run_ids):
                try:
                    self.client.set_tag(rid, HEARTBEAT, str(int(time.time())))
                except Exception:  # a missed beat is retried at the next one; STALE_SECONDS spans several
                    pass


def claim(
    tracker: Any, lock: Path, parent_id: str, experiment_id: str, cell: Any, rerun: bool = False
) -> tuple[str, str | None]:
    """Claim ``cell`` under ``parent_id``: ("claimed", run id), ("finished", None) or ("busy", None).

    Under the lock, over the whole experiment (every version of the suite): a FINISHED run for the key means the
    cell is done (with ``rerun``, only one under ``parent_id`` counts); a RUNNING one whose owner is alive means
    another process holds it; a RUNNING one whose owner is gone is an orphan and becomes KILLED. Otherwise this
    process creates the cell's run, which is the claim.
    """
    with held(lock):
        runs = tracker.cell_runs(None, experiment_id, cell.key)
        if any(r.info.status == "FINISHED" for r in _done_scope(runs, parent_id, rerun)):
            return "finished", None
        for r in runs:
            if r.info.status != "RUNNING":
                continue
            if owner_alive(r.data.tags):
                return "busy", None
            tracker.set_status(r.info.run_id, "KILLED")
        return "claimed", tracker.start_child(parent_id, experiment_id, cell)


def state(tracker: Any, parent_id: str, experiment_id: str, key: str, rerun: bool = False) -> str:
    """finished | busy (a live claim) | failed (ended FAILED by its owner) | free (nothing, or killed)."""
    runs = tracker.cell_runs(None, experiment_id, key)
    if any(r.info.status == "FINISHED" for r in _done_scope(runs, parent_id, rerun)):
        return "finished"
    if any(r.info.status == "RUNNING" and owner_alive(r.data.tags) for r in runs):
        return "busy"
    latest = max(runs, key=lambda r: r.info.start_time, default=None)
    return "failed" if latest is not None and latest.info.status == "FAILED" else "free"


def _done_scope(runs: list[Any], parent_id: str, rerun: bool) -> list[Any]:
    """The runs whose FINISHED status settles a cell: any run of its key, or with ``rerun`` only this parent's."""
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id] if rerun else runs
