"""``benchmark ui``: the MLflow server over the project's store, in its own process group, stopped as a whole.

The server runs in a new session so that a signal sent to ``benchmark ui`` (SIGTERM from a supervisor, Ctrl-C
from the terminal) is handled here, once, and forwarded to the server's whole group: its uvicorn workers included,
which a plain ``subprocess.call`` left serving. One worker, because each one imports MLflow's server on start
(seconds per worker on a small machine) and a local UI has a single user; and without MLflow's job executor (six
huey consumer processes for its GenAI judges, which this benchmark does not use, that slowed the start). The
server runs ``benchmark.cli.ui_app`` (MLflow's app plus the route that opens runs in model-training mode) without
uvicorn's access log, and the links are printed as soon as it answers, from its own REST API.

Before the server starts (``check``): the port is a port, nothing else listens on it (else the links would open
another program), and the store answers (else MLflow would start and print its traceback). The store's URI goes to
the server in its environment (``MLFLOW_BACKEND_STORE_URI``, readable by this user only), never on its command
line, where any local user could read a password in it with ``ps``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from benchmark import COMMAND
from benchmark.cli.ui_app import APP_NAME, ROUTE, entry_point_folder
from benchmark.core.errors import BenchmarkError
from benchmark.store.tracking import redact

STOP_GRACE_SECONDS = 10.0  # SIGTERM to the group, then SIGKILL for whatever is left


class _Stop(BaseException):
    """SIGTERM arrived: leave the wait and stop the server group (a BaseException, like KeyboardInterrupt, so that
    no ``except Exception`` on the way, such as the link listing's, can swallow it)."""


STORE_ENV = "MLFLOW_BACKEND_STORE_URI"  # the server's --backend-store-uri, read from its environment


def server_command(host: str, port: int) -> list[str]:
    """The server's command line: no store URI in it (see ``server_env``)."""
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1"]


def server_env(uri: str) -> dict[str, str]:
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, STORE_ENV: uri}


def launch(uri: str, host: str, port: int, folder: Path) -> subprocess.Popen:
    """The MLflow server in a session of its own, serving ``benchmark.cli.ui_app`` (``browser_mode``, its entry point
    written under ``folder``), the store's URI in its environment."""
    extra, env = browser_mode(server_env(uri), folder)
    return subprocess.Popen(server_command(host, port) + extra, start_new_session=True, env=env)


def check(uri: str, host: str, port: int) -> None:
    """Everything that would make the UI fail or mislead, as one line (BenchmarkError) before the server starts."""
    check_port(port)
    check_port_free(host, port)
    check_store(uri)


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise BenchmarkError(f"--port {port}: a port is a number from 1 to 65535")


def check_port_free(host: str, port: int) -> None:
    """Bind the address as the server will (SO_REUSEADDR: a port left in TIME_WAIT by a previous UI is free)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise BenchmarkError(f"--host {host}: cannot be resolved ({err.strerror or err})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise BenchmarkError(
                    f"--port {port}: {host}:{port} is already in use by another program (its links would open "
                    "that program); stop it or choose another port with --port"
                ) from None
            raise BenchmarkError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from None


def check_store(uri: str) -> None:
    """The store answers (``Tracker`` opens it, creating a new local sqlite store as the server would)."""
    from benchmark.store.tracking import Tracker

    Tracker(uri)  # an unreachable database: one BenchmarkError line, the password redacted


def _say(line: str) -> None:
    print(line, flush=True)  # at once, also when stdout is a pipe: a supervisor waits for the links


def serve(uri: str, host: str, port: int, echo: Callable[[str], None] = _say) -> int:
    """Run the MLflow UI until it exits or this process is told to stop; returns its exit code (0 when stopped)."""
    with tempfile.TemporaryDirectory(prefix="benchmark-ui-") as folder:
        return _serve(uri, host, port, echo, Path(folder))


def browser_mode(env: dict[str, str], folder: Path) -> tuple[list[str], dict[str, str]]:
    """The server arguments and environment that serve ``benchmark.cli.ui_app`` (the route that opens runs in
    model-training mode) without an HTTP access log line per request."""
    paths = [str(entry_point_folder(folder)), str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
    args = ["--app-name", APP_NAME, "--uvicorn-opts", "--no-access-log"]
    # MLflow's own import of starlette.middleware.wsgi warns that it is deprecated: nothing a user can act on
    warnings = ",".join(w for w in (env.get("PYTHONWARNINGS"), "ignore:starlette.middleware.wsgi is deprecated") if w)
    return args, {**env, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "PYTHONWARNINGS": warnings}


def _serve(uri: str, host: str, port: int, echo: Callable[[str], None], folder: Path) -> int:
    proc = launch(uri, host, port, folder)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    url = f"http://{host}:{port}"
    try:
        started = time.monotonic()
        if _wait_ready(proc, url):
            shown = redact(uri)  # a password in the store's URI is never printed
            echo(f"MLflow UI ready on {url} over {shown} in {time.monotonic() - started:.1f} s (Ctrl-C to stop)")
            for line in suite_links(uri, url):
                echo(line)
        return proc.wait()
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        # a second Ctrl-C or SIGTERM while the group stops must not leave it half stopped
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stop_group(proc)
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)


def suite_links(uri: str, url: str) -> list[str]:
    """One line per suite experiment: the link that opens its cells with their headline metrics. Asked of the
    server that just answered (its REST API), so that no MLflow import delays the links."""
    from benchmark.store.tracking import VIEW_TAG

    try:
        experiments = _experiments(url)
    except (OSError, ValueError):  # the links are a convenience; the server is up either way
        return []
    return [
        f"  {name}: {experiment_link(url, eid)}"
        for name, eid, tags in sorted(experiments)
        if VIEW_TAG in tags
    ] or [f"  no suite has runs in {redact(uri)} yet: `{COMMAND} run suites/smoke.yaml` makes some"]


def _experiments(url: str) -> list[tuple[str, str, set[str]]]:
    """(name, id, tag keys) of every active experiment, from the server's ``experiments/search``."""
    out, token = [], None
    for _ in range(100):  # pages of 1,000
        body = {"max_results": 1000, **({"page_token": token} if token else {})}
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/experiments/search", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as resp:
            page = json.load(resp)
        for e in page.get("experiments", []):
            out.append((e["name"], e["experiment_id"], {t["key"] for t in e.get("tags", [])}))
        token = page.get("next_page_token")
        if not token:
            break
    return out


def experiment_link(url: str, experiment_id: str) -> str:
    """The route of ``benchmark.cli.ui_app`` that sets model-training mode, then opens the experiment's runs table."""
    return f"{url}{ROUTE}{experiment_id}"


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120.0) -> bool:
    """Poll the server's health endpoint until it answers; False if the server exited or never answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after a grace period; waits for the server itself."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(proc.pid):
            proc.poll()  # reap the leader so that it does not linger as a zombie member of the group
            time.sleep(0.1)
        if not _group_alive(proc.pid):
            break
    if proc.poll() is None:
        proc.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
