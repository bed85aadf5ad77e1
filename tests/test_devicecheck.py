"""The device check, rehearsed on the CPU: scripts/gpu_check.sh --device cpu --quick writes every figure, the
calibration and the MLflow store; the wheel list carries what the GPU image lacks and never ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT, mnist_path


@pytest.mark.slow
def test_quick_check_end_to_end(tmp_path):
    mnist_path()  # the suite reads the real MNIST subset
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    # the cuda tests are this test's siblings (pytest in pytest would only skip them); the worker processes cost
    # their start-up on 2 CPU cores, and the rehearsal in docs/performance.md runs them
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(out), "--device", "cpu", "--quick", "--skip", "tests", "processes"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["calibration.json", "check.log", "figures.json", "store.tar.gz"]
    figs = json.loads((out / "figures.json").read_text())
    assert figs["meta"]["device"] == "cpu" and figs["meta"]["quick"] is True
    assert set(figs["skipped"]) == {"tests", "processes", "compile"}
    assert figs["peak"]["tflops"] > 0
    pgd = figs["training"]["small_cnn/pgd"]
    assert pgd[f"batch{pgd['best_batch']}_float32_eager"]["images_per_second"] > 0
    # PGD-2: each training image costs 3 forward+backward passes; both figures are rounded to 0.1 on their own,
    # so 3 x images differs from passes by up to 0.05 + 3 x 0.05 (at 25 images/s, 76.1 vs 3 x 25.4)
    row = pgd["batch8_float32_eager"]
    assert row["passes_per_second"] == pytest.approx(3 * row["images_per_second"], abs=0.21)
    flops = figs["flops"]["small_cnn/pgd"]
    assert flops["gflop_per_image"] > figs["flops"]["small_cnn/naive"]["gflop_per_image"] > 0
    assert 0 < flops["mfu_batch8_float32_eager"]
    assert figs["attacks"]["poison_frog"]["image_steps_per_second"] > 0
    assert figs["attacks"]["adv_poison"]["image_steps_per_second"] > 0
    assert figs["refits"]["max_train_accuracy_difference"] <= 0.01 and figs["refits"]["speedup"] > 0
    assert figs["grouped"]["models"] == 2 and figs["grouped"]["speedup_over_sequential"] > 0
    suite = figs["suite"]
    assert suite["run_exit_code"] == 0 and suite["report_exit_code"] == 0
    assert any("FINISHED" in line for line in suite["table"])
    with tarfile.open(out / "store.tar.gz") as tar:
        names = tar.getnames()
    assert "mlflow.db" in names and "report/gpu-check/report.md" in names
    assert any(n.startswith("artifacts/") for n in names)
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["card"] == figs["meta"]["card"] and cal["passes_per_second"]["small_cnn"] == row["passes_per_second"]
    assert figs["paper_estimate"][0].startswith("estimated time:") and cal["card"] in figs["paper_estimate"][0]


def test_wheel_list_carries_what_the_gpu_image_lacks():
    proc = subprocess.run([sys.executable, "scripts/gpu_wheel_list.py"], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    reqs = dict(line.split("==") for line in proc.stdout.split())
    for needed in ("mlflow", "pydantic", "pydantic-core", "torchattacks", "adversarial-robustness-toolbox", "sqlalchemy",
                   "alembic", "flask"):
        assert needed in reqs
    for present_or_too_large in ("ray", "torch", "numpy", "pandas", "scikit-learn", "matplotlib", "pyyaml"):
        assert present_or_too_large not in reqs
    assert reqs["mlflow"] in (ROOT / "uv.lock").read_text()  # pinned from the lock
