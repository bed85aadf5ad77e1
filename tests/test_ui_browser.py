"""`benchmark ui` in a real browser (headless chromium), over a store with a finished smoke-shaped run.

Skipped where no chromium is installed (Debian: `apt-get install chromium`). Chromium's own `--dump-dom` renders
each page (MLflow's UI is a JavaScript app) and prints the resulting document, which the asserts read.
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

from benchmark.cli import main
from conftest import ROOT, tiny_suite, write_suite

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")


def dom(url: str, wait_ms: int = 20000) -> str:
    """The page's document after its scripts ran for ``wait_ms`` of virtual time."""
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--virtual-time-budget={wait_ms}", "--window-size=1600,900", "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    return out.stdout


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "ui", "--port", str(port)],
        cwd=ROOT, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.strip().startswith("smoke: http"):
            break
    link = next((ln.split(": ", 1)[1].strip() for ln in lines if ln.strip().startswith("smoke: http")), None)
    try:
        assert link, "".join(lines)
        yield proc, uri, f"http://127.0.0.1:{port}", link
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def _children(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`benchmark.role` = 'cell'")
    return client, runs


def test_experiment_opens_on_the_runs_table_with_names_and_headline_metrics(ui):
    _, uri, _, link = ui
    page = dom(link)
    assert "Model training" in page and "Naive vs PGD adversarial training" in page  # the suite's description
    for name in ("naive · none · s0", "naive · label_flip · s0", "pgd · none · s0", "pgd · label_flip · s0"):
        assert name in page, f"child run {name!r} not listed"
    for metric in ("poisoned_accuracy", "clean_accuracy", "robust_accuracy"):
        assert metric in page, f"column {metric} not shown"
    assert "4 matching runs" in re.sub(r"<[^>]+>", "", page), "the table lists the four cells, flat"


def test_child_run_page_lists_metrics_and_the_poison_image(ui):
    _, uri, url, _ = ui
    client, runs = _children(uri)
    lf = next(r for r in runs if r.data.tags["attack"] == "label_flip" and r.data.tags["defense"] == "pgd")
    base = f"{url}/#/experiments/{lf.info.experiment_id}/runs/{lf.info.run_id}"
    overview = re.sub(r"<[^>]+>", " ", dom(f"{base}?workflowType=machine_learning"))
    assert "pgd · label_flip · s0 · synthetic/small_cnn" in overview
    assert "clean " in overview and "→ poisoned " in overview  # the headline, as the run's description
    for metric in ("clean_accuracy", "poisoned_accuracy", "accuracy_drop", "robust_accuracy"):
        assert metric in overview, f"metric {metric} missing on the run page"
    artifacts = dom(f"{base}/artifacts?workflowType=machine_learning")
    assert "label_flips.png" in artifacts and "label_flips.csv" in artifacts
    with urllib.request.urlopen(f"{url}/get-artifact?path=label_flips.png&run_uuid={lf.info.run_id}") as resp:
        assert resp.read(8) == b"\x89PNG\r\n\x1a\n"
