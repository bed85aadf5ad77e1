"""`benchmark ui` in a real browser (headless chromium), over a store with a finished smoke-shaped run.

Skipped where no chromium is installed (Debian: `apt-get install chromium`). Chromium's own `--dump-dom` renders
each page (MLflow's UI is a JavaScript app) and prints the resulting document, which the asserts read. A browser
is a profile folder: pages opened with the same one share its localStorage, where MLflow keeps its sidebar mode.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, tiny_suite, write_suite

from benchmark.cli.commands import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")
GENAI_ONLY = ("Evaluations", "Judges", "Agent versions")  # GenAI sidebar entries and the GenAI run breadcrumb
ASSISTANT_PANEL = "Ask questions about your experiments"  # MLflow's Assistant panel, open


def dom(url: str, profile, wait_ms: int = 20000) -> str:
    """The page's document after its scripts ran for ``wait_ms`` of virtual time, in the browser ``profile``."""
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}", "--window-size=1600,900",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    return out.stdout


def text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, one_thread):
    """A smoke-shaped run (2 defenses x none / label flip, shrunk to seconds) and `benchmark ui` serving it."""
    import yaml

    base = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    smoke = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())
    d = tiny_suite(smoke, "smoke")
    d["defenses"]["pgd"] = {"params": {"max_epochs": 1, "lr": 0.002, "eps": 0.03, "steps": 2}}
    assert main(["run", str(write_suite(base, d)), "--quiet", "--cache-dir", str(base / "cache")]) == 0

    port = _free_port()
    log = open(base / "server.log", "w")  # the server's own output: no access line per request
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "ui", "--port", str(port)],
        cwd=ROOT, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    lines, ready_at, link_at = [], None, None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "ready on" in line:
            ready_at = time.monotonic()
        if line.strip().startswith("smoke: http"):
            link_at = time.monotonic()
            break
    link = next((ln.split(": ", 1)[1].strip() for ln in lines if ln.strip().startswith("smoke: http")), None)
    try:
        assert link, "".join(lines)
        yield {"uri": uri, "url": f"http://127.0.0.1:{port}", "link": link, "base": base,
               "link_after_ready": link_at - ready_at, "server_log": base / "server.log", "pages": {}}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        log.close()


def _table(ui) -> str:
    """The runs table as a new browser shows it when its first page is the printed link (rendered once)."""
    if "table" not in ui["pages"]:
        ui["pages"]["table"] = dom(ui["link"], ui["base"] / "browser")
    return ui["pages"]["table"]


def _children(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`benchmark.role` = 'cell'")
    return client, runs


def test_the_link_opens_the_runs_table_most_damaged_first_with_descriptions(ui):
    assert ui["link_after_ready"] < 5.0, "the links come as soon as the server answers"
    shown = text(_table(ui))
    assert "Model training" in shown and "Naive vs PGD adversarial training" in shown  # the suite's description
    assert "Model registry" in shown and not any(w in shown for w in GENAI_ONLY), "model-training sidebar"
    assert "Description" in shown and "→ poisoned" in shown, "the Description column with each cell's headline"
    for metric in ("poisoned_accuracy", "clean_accuracy", "accuracy_drop", "robust_accuracy"):
        assert metric in shown, f"column {metric} not shown"
    assert "4 matching runs" in shown, "the table lists the four cells, flat"
    _, runs = _children(ui["uri"])
    order = sorted(runs, key=lambda r: shown.index(f" {r.info.run_name} "))  # as the table lists them
    drops = [r.data.metrics["accuracy_drop"] for r in order]
    assert drops == sorted(drops, reverse=True), "largest accuracy drop first"
    assert all(r.info.run_name.count("·") == 1 for r in runs), "names without the suffix every row shares"


def test_a_run_opened_from_the_table_stays_in_model_training_mode(ui):
    client, runs = _children(ui["uri"])
    lf = next(r for r in runs if r.data.tags["attack"] == "label_flip" and r.data.tags["defense"] == "pgd")
    table = _table(ui)
    href = re.search(rf'href="(#/experiments/\d+/runs/{lf.info.run_id})"', table)
    assert href, "the runs table links the run"
    run_page = f"{ui['url']}/{href.group(1)}"  # where a click on the run's name goes: no ?workflowType
    shown = text(dom(run_page, ui["base"] / "browser"))
    assert "pgd · label_flip" in shown and "clean " in shown and "→ poisoned " in shown  # the headline
    for metric in ("clean_accuracy", "poisoned_accuracy", "accuracy_drop", "robust_accuracy"):
        assert metric in shown, f"metric {metric} missing on the run page"
    assert "Model registry" in shown, "the model-training sidebar"
    assert not any(w in shown for w in GENAI_ONLY), "a GenAI page (Evaluations breadcrumb, Judges, Agent versions)"
    assert ASSISTANT_PANEL not in shown, "MLflow's Assistant panel opened over the page"
    ids = ",".join(f'"{r.info.run_id}"' for r in runs[:2])  # the compare page, as its button opens it
    compare = text(dom(f'{ui["url"]}/#/compare-runs?runs=[{ids}]&experiments=["{lf.info.experiment_id}"]',
                       ui["base"] / "browser"))
    assert "Model registry" in compare and not any(w in compare for w in GENAI_ONLY), "compare page: GenAI layout"
    # what the route prevents: a browser that did not come through the printed link gets MLflow's GenAI pages
    fresh = text(dom(run_page, ui["base"] / "fresh browser"))
    assert "Evaluations" in fresh, "MLflow now opens runs in model-training mode by itself: the route may go"


def test_run_artifacts_are_listed_and_served(ui):
    _, runs = _children(ui["uri"])
    lf = next(r for r in runs if r.data.tags["attack"] == "label_flip" and r.data.tags["defense"] == "pgd")
    base = f"{ui['url']}/#/experiments/{lf.info.experiment_id}/runs/{lf.info.run_id}"
    artifacts = dom(f"{base}/artifacts", ui["base"] / "browser")
    assert "label_flips.png" in artifacts and "label_flips.csv" in artifacts
    with urllib.request.urlopen(f"{ui['url']}/get-artifact?path=label_flips.png&run_uuid={lf.info.run_id}") as resp:
        assert resp.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_server_prints_no_access_log_and_no_deprecation_warning(ui):
    log = ui["server_log"].read_text()  # after the pages above: dozens of requests
    assert "Uvicorn running" in log, log[-2000:]
    assert '"GET /' not in log and '"POST /' not in log, "an HTTP access line per request"
    assert "DeprecationWarning" not in log, log[-2000:]
