"""The MLflow server app with one route of ours: ``/benchmark/experiments/<id>`` puts the browser in MLflow's
*Model training* mode and opens the experiment's runs table with the benchmark's view.

MLflow 3 keeps the sidebar's mode (GenAI or Model training) in the browser's localStorage, GenAI for a new browser,
and does not reconcile it with the experiment's kind (mlflow/mlflow issue 24498; 3.17.2 and 3.18.0 alike): a
``?workflowType=`` link holds for the page it opens, and a click on a run falls back to GenAI pages. Only a page of
the same origin can write that storage, so the link ``benchmark ui`` prints goes through this route, which sets the
mode (and marks MLflow's Assistant panel as already shown, so that it does not open over a quarter of every page)
and then redirects. ``mlflow server --app-name benchmark`` finds ``create_app`` through an ``mlflow.app`` entry
point that ``benchmark.cli.ui`` declares for the server's processes only (``entry_point_folder``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROUTE = "/benchmark/experiments/"
APP_NAME = "benchmark"
VIEW_KEY = "benchmark"  # tracking.VIEW_KEY (not imported: this module is imported by `mlflow server` before it forks)
# MLflow's localStorage entries (useLocalStorage stores `${key}_v${version}` as JSON), read from its 3.17 bundle
STORAGE = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
    "mlflow.assistant.panelOpen_v1": False,
}
_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")  # experiment ids: digits in sqlite stores; nothing that could leave the site


def runs_table_route(experiment_id: str) -> str:
    """The runs table of an experiment in model-training mode, with the benchmark's stored view."""
    return f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def open_page(experiment_id: str) -> str:
    """The HTML that sets MLflow's browser-side settings, then replaces itself with the runs table."""
    sets = "".join(f"localStorage.setItem({json.dumps(k)},{json.dumps(json.dumps(v))});" for k, v in STORAGE.items())
    target = runs_table_route(experiment_id)
    return (
        "<!doctype html><meta charset='utf-8'><title>robust-poison-bench</title>"
        f"<script>try{{{sets}}}catch(e){{}}location.replace({json.dumps(target)});</script>"
        f"<noscript><a href='{target}'>Open the runs table</a></noscript>"
    )


def create_app():
    """The ASGI app uvicorn serves: our route, everything else to MLflow's own app (imported here, in the worker)."""
    from mlflow.server.fastapi_app import app as mlflow_app

    async def app(scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(ROUTE):
            await _respond(send, path[len(ROUTE) :].strip("/"))
        else:
            await mlflow_app(scope, receive, send)

    return app


async def _respond(send, experiment_id: str) -> None:
    ok = bool(_ID.match(experiment_id))
    body = (open_page(experiment_id) if ok else "unknown experiment id").encode()
    headers = [(b"content-type", b"text/html; charset=utf-8" if ok else b"text/plain; charset=utf-8"),
               (b"cache-control", b"no-store"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200 if ok else 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def entry_point_folder(base: Path) -> Path:
    """A folder that, on PYTHONPATH, declares ``create_app`` as the ``mlflow.app`` entry point ``benchmark``: the
    server's processes find it through importlib.metadata, and nothing is installed into the environment."""
    info = base / "robust_poison_bench_ui-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: robust-poison-bench-ui\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[mlflow.app]\n{APP_NAME} = benchmark.cli.ui_app:create_app\n")
    return base
