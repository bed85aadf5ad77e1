"""``benchmark ui``: the MLflow server over the project's store, in its own process group, stopped as a whole.

The server runs in a new session so that a signal sent to ``benchmark ui`` (SIGTERM from a supervisor, Ctrl-C
from the terminal) is handled here, once, and forwarded to the server's whole group: its uvicorn workers included,
which a plain ``subprocess.call`` left serving. One worker, because each one imports MLflow's server on start
(seconds per worker on a small machine) and a local UI has a single user; and without MLflow's job executor (six
huey consumer processes for its GenAI judges, which this benchmark does not use, that slowed the start).

Before the server starts (``check``): the port is a port, nothing else listens on it (else the links would open
another program), and the store answers (else MLflow would start and print its traceback). The store's URI goes to
the server in its environment (``MLFLOW_BACKEND_STORE_URI``, readable by this user only), never on its command
line, where any local user could read a password in it with ``ps``.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from benchmark import COMMAND
from benchmark.errors import BenchmarkError
from benchmark.tracking import redact

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


def launch(uri: str, host: str, port: int) -> subprocess.Popen:
    """The MLflow server in a session of its own, the store's URI in its environment."""
    return subprocess.Popen(server_command(host, port), start_new_session=True, env=server_env(uri))


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
    from benchmark.tracking import Tracker

    Tracker(uri)  # an unreachable database: one BenchmarkError line, the password redacted


def _say(line: str) -> None:
    print(line, flush=True)  # at once, also when stdout is a pipe: a supervisor waits for the links


def serve(uri: str, host: str, port: int, echo: Callable[[str], None] = _say) -> int:
    """Run the MLflow UI until it exits or this process is told to stop; returns its exit code (0 when stopped)."""
    proc = launch(uri, host, port)
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
    """One line per suite experiment: the link that opens its cells with their headline metrics."""
    from mlflow.tracking import MlflowClient

    from benchmark.tracking import VIEW_TAG

    try:
        experiments = MlflowClient(tracking_uri=uri).search_experiments()
    except Exception:  # the store is read by the server too; links are a convenience
        return []
    return [
        f"  {e.name}: {experiment_link(url, e.experiment_id)}"
        for e in sorted(experiments, key=lambda e: e.name)
        if VIEW_TAG in e.tags
    ] or [f"  no suite has runs in {redact(uri)} yet: `{COMMAND} run suites/smoke.yaml` makes some"]


def experiment_link(url: str, experiment_id: str) -> str:
    """The experiment's runs table in MLflow's model-training mode, with the benchmark's view of the cells."""
    from benchmark.tracking import VIEW_KEY

    return f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


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
