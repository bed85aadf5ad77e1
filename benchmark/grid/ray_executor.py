"""Run cells as Ray tasks; records come back to the driver, which alone writes MLflow.

How it works
------------
- Each cell is one Ray task that asks for the suite's ``resources`` (``num_cpus``, ``num_gpus`` per cell) and calls
  ``run_cell``, which never raises: a cell that fails comes back as a FAILED record. A task whose worker or node
  dies is retried by Ray up to ``SYSTEM_RETRIES`` times (Ray retries system failures only, never a cell's own
  error); the driver sees one result per task, so a retry never records a cell twice. A task that dies for good
  becomes a FAILED record here, in the driver, and the next ``benchmark run`` (resume) runs the cell again.
- A backbone is trained once per ``backbone_key``: the cells that share it form a group; the group's first cell
  runs first (it trains the backbone and writes it to the cache), and the group's other cells take that task's
  "done" ObjectRef as an argument, so Ray starts them only after it ended and they find the backbone in the cache.
  A group whose backbone is already in the cache has no such ordering. If the first cell's task dies, the cells
  waiting for it (which Ray would fail without running them) are submitted again as a new group.
- ``on_start(cell)`` (the claim, see ``benchmark.store.leases``) is called in the driver before a cell's task is
  submitted, and cells it refuses are not submitted; ``on_done(cell, record)`` is called when its result arrives
  (``ray.wait``), one at a time, in the driver: MLflow is written by one process, so nothing is lost or written
  twice.
- Ctrl-C or SIGTERM in the driver, or a store that fails, cancels every outstanding task (``force=True`` stops
  running ones) and re-raises, so the runner marks the claimed cells KILLED (or FAILED).
- ``connect()`` runs before any MLflow run is created; an ``--address`` where nothing answers fails in
  ``CONNECT_TIMEOUT`` seconds with one line.

Where it runs
-------------
- No ``--address``: a local Ray instance is started with ``address="local"`` (always a new one, never a cluster
  that happens to run here), ``num_cpus=os.cpu_count()``, no dashboard, and shut down at the end. Its workers run
  the driver's Python with the driver's environment and working directory, so the project (installed in the venv,
  editable) imports as it does in the driver; no ``runtime_env`` is needed. Ray's ``uv run`` hook (which would
  start every worker through ``uv run`` and upload the working directory) is switched off for this local instance:
  measured, it only made workers slower to start and moved their working directory away from the driver's.
- ``--address``: connects to an existing cluster with ``runtime_env={"working_dir": <project root>}`` so that
  workers import this version of the code. On a multi-node cluster, the cache directory (``--cache-dir`` /
  ``$BENCHMARK_CACHE``) and any data files must be on a filesystem shared by every node at the same path: the
  backbone trained by one task is read from the cache by the tasks of the same group, possibly on another node.
  The cache and data root are resolved to absolute paths in the driver, and each task moves into the driver's
  working directory when that exists on its node, so relative paths in a suite (an ``npz`` path) mean the same
  thing on the workers.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmark.cell.keys import backbone_key
from benchmark.cell.pipeline import Record, RunOptions
from benchmark.core.errors import BenchmarkError
from benchmark.store.cache import Cache, cache_root
from benchmark.suite import Cell

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.25
SYSTEM_RETRIES = 2  # a task whose worker or node died runs again, up to this many times
CONNECT_TIMEOUT = 3.0  # seconds to wait for a TCP answer from --address before ray.init


def _task(cell: Cell, opts: RunOptions, cwd: str, *after: Any) -> Record:
    """One cell on a Ray worker. ``after`` holds the group's "backbone trained" token; Ray resolves it first."""
    if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)
    from benchmark.cell.pipeline import run_cell

    return run_cell(cell, opts)


def _leader_task(cell: Cell, opts: RunOptions, cwd: str) -> tuple[bool, Record]:
    """The first cell of a backbone group: trains and caches the backbone; returns (token, record)."""
    return True, _task(cell, opts, cwd)


def _disable_uv_hook() -> None:
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"  # read when ray is first imported
    try:
        from ray._private import ray_constants

        ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False  # ray was already imported
    except (ImportError, AttributeError):  # pragma: no cover - a Ray without the hook
        pass


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # RayTaskError's text starts with the task name and a traceback; its last line is the cause
    return (lines[-1] if lines else type(err).__name__)[:500]


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.init_seconds: float | None = None  # how long connecting / starting Ray took (for reports and tests)
        self._ray: Any = None
        self._started_here = False

    # connection
    def connect(self) -> None:
        """Reach the cluster (or start a local instance) and check that a cell fits on some node."""
        if self._ray is not None:
            return
        if self.address:
            _probe(self.address)
        self._ray, self._started_here = self._connect()
        try:
            self._check_fits(self._ray)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._ray is not None and self._started_here:
            self._ray.shutdown()
        self._ray, self._started_here = None, False

    def _connect(self):
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a dependency
            raise BenchmarkError("--executor ray: the 'ray' package is not installed") from None
        if ray.is_initialized():  # the caller started (and will stop) Ray itself
            return ray, False
        t0 = time.perf_counter()
        common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if self.address:
                runtime_env = {
                    "working_dir": str(PROJECT_ROOT),
                    "excludes": [".git", ".venv", "mlruns", ".cache", "reports", "*.pt", "*.npz", "**/__pycache__"],
                }
                ray.init(address=self.address, runtime_env=runtime_env, **common)
            else:
                _disable_uv_hook()
                ray.init(address="local", num_cpus=os.cpu_count() or 1, **common)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"cluster at {self.address}" if self.address else "a local Ray instance"
            raise BenchmarkError(f"--executor ray: cannot start or reach {where}: {_first_line(err)}") from None
        self.init_seconds = time.perf_counter() - t0
        cpus = ray.cluster_resources().get("CPU", 0)
        what = f"connected to {self.address}" if self.address else "started a local instance"
        log.info("ray: %s with %g CPUs in %.1f s", what, cpus, self.init_seconds)
        return ray, True

    def _check_fits(self, ray) -> None:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        cpus = max((n.get("CPU", 0) for n in nodes), default=0)
        gpus = max((n.get("GPU", 0) for n in nodes), default=0)
        problems = []
        if self.num_cpus > cpus:
            problems.append(f"resources.num_cpus={self.num_cpus} per cell, the largest Ray node has {cpus:g} CPUs")
        if self.num_gpus > gpus:
            problems.append(f"resources.num_gpus={self.num_gpus} per cell, the largest Ray node has {gpus:g} GPUs")
        if problems:
            msg = "; ".join(problems)
            if self.address:  # an autoscaling cluster may add a node that fits
                log.warning("ray: %s; the cells wait until a node that fits joins", msg)
            else:
                raise BenchmarkError(f"--executor ray: {msg}; no cell could be scheduled")

    # running
    def run(self, cells: Sequence[Cell], opts: RunOptions, on_start, on_done) -> None:
        if not cells:
            return
        # workers may run elsewhere (another node, another working directory): absolute paths only
        opts = replace(
            opts,
            cache_dir=str(cache_root(opts.cache_dir).resolve()),
            data_root=str(Path(opts.data_root).expanduser().resolve()) if opts.data_root else None,
        )
        self.connect()
        claimed = [cell for cell in cells if on_start(cell)]  # claimed in the store before they are submitted
        self._run(self._ray, claimed, opts, on_done)

    def _run(self, ray, cells: list[Cell], opts: RunOptions, on_done) -> None:
        from benchmark.core.progress import enabled as bars_enabled

        if not cells:
            return
        res = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_retries": SYSTEM_RETRIES}
        task = ray.remote(_task).options(**res)
        leader = ray.remote(_leader_task).options(num_returns=2, **res)
        cwd = os.getcwd()
        cache = Cache(opts.cache_dir)

        groups: dict[str, list[Cell]] = {}
        for cell in cells:
            groups.setdefault(backbone_key(cell), []).append(cell)

        pending: dict[Any, Cell] = {}  # result ref -> cell
        followers: dict[Any, list[Any]] = {}  # a leader's result ref -> the refs of the cells waiting for it
        extra: list[Any] = []  # the leaders' tokens, cancelled on interrupt

        def submit(key: str, members: list[Cell]) -> None:
            if len(members) == 1 or cache.has("backbone", key):
                for cell in members:
                    pending[task.remote(cell, opts, cwd)] = cell
                return
            token, first = leader.remote(members[0], opts, cwd)
            pending[first] = members[0]
            extra.append(token)
            waiting = [task.remote(cell, opts, cwd, token) for cell in members[1:]]
            pending.update(zip(waiting, members[1:], strict=True))
            followers[first] = waiting

        for key, members in groups.items():
            submit(key, members)
        log.info("ray: %d cells in %d backbone group(s) submitted", len(cells), len(groups))

        bar = None
        if bars_enabled():
            from tqdm.auto import tqdm

            bar = tqdm(total=len(cells), desc="cells", dynamic_ncols=True)

        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                for ref in ready:
                    cell = pending.pop(ref, None)
                    if cell is None:  # a follower already resubmitted below
                        continue
                    waiting = followers.pop(ref, [])
                    try:
                        record = ray.get(ref)
                    except Exception as err:  # the task died (run_cell itself never raises): a record that says so
                        record = Record(key=cell.key, title=cell.title(), params=cell.flat_params(), status="FAILED",
                                        error=f"ray task failed: {type(err).__name__}: {_first_line(err)}")
                        # its followers would fail with it without running: they form a new group instead
                        again = [pending.pop(w) for w in waiting if w in pending]
                        for w in waiting:
                            try:
                                ray.cancel(w)
                            except Exception:  # already failed with its leader
                                pass
                        if again:
                            log.warning("ray: %s died; %d cell(s) waiting for its backbone are resubmitted",
                                        cell.title(), len(again))
                            submit(backbone_key(cell), again)
                    for line in record.logs:
                        log.info("  %s: %s", cell.title(), line)
                    on_done(cell, record)
                    if bar is not None:
                        bar.update(1)
        except BaseException:  # Ctrl-C, SIGTERM, a failing store: nothing may go on running for this driver
            for ref in list(pending) + extra:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or gone
                    pass
            raise
        finally:
            if bar is not None:
                bar.close()


def _probe(address: str) -> None:
    """A TCP answer from ``host:port`` within CONNECT_TIMEOUT, else one line: ray.init would retry for minutes."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise BenchmarkError(f"--address {address}: expected HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:PORT")
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT)
    except OSError as err:
        raise BenchmarkError(
            f"--executor ray: no Ray cluster answers at {address} ({err.strerror or err}); start one with "
            f"`ray start --head` or fix --address"
        ) from None
    with conn:
        speaks_grpc = _answers_http2(conn)
    if not speaks_grpc:  # ray.init would wait for ever on, say, the dashboard's port
        raise BenchmarkError(
            f"--executor ray: {address} answers, but not as a Ray cluster (its GCS, or a ray:// client server, "
            "speaks gRPC); the dashboard's port (8265) is not it: give the address `ray start --head` printed "
            "(port 6379 unless set)"
        )


# An HTTP/2 client's first bytes (RFC 9113, 3.4): the preface, then an empty SETTINGS frame. A gRPC server (Ray's
# GCS and its client server) answers with a frame of its own, SETTINGS first; an HTTP/1 server (the dashboard)
# answers "HTTP/1.1 400" or closes; a silent one lets the timeout pass.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_SETTINGS = 4  # frame type, the fourth byte of a frame header


def _answers_http2(conn: socket.socket) -> bool:
    """Whether the server at the other end of ``conn`` answers an HTTP/2 preface with a SETTINGS frame."""
    answer = b""
    try:
        conn.settimeout(CONNECT_TIMEOUT)
        conn.sendall(HTTP2_PREFACE)
        while len(answer) < 9:
            chunk = conn.recv(9 - len(answer))
            if not chunk:
                break
            answer += chunk
    except OSError:
        return False
    return len(answer) == 9 and answer[3] == HTTP2_SETTINGS
