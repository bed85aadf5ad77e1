"""The device check, rehearsed on the CPU in this process (a second start-up of torch and MLflow costs more than the
check itself on 2 busy cores): ``main --quick`` at the smallest sizes writes the figures and the calibration; the
quick suite it runs is a valid grid of small CNNs trained in groups; the wheel list carries what the GPU image lacks
and never ray. Left to the rehearsal of docs/performance.md: scripts/gpu_check.sh's installs, the suite run (its
``benchmark run`` and ``report`` are tested elsewhere), the cuda tests and the worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import ROOT, mnist_path

sys.path.insert(0, str(ROOT / "scripts"))  # the device check's modules, as scripts/device_check.py imports them
import device_check  # noqa: E402
from device_check_sections import quick_suite  # noqa: E402
from device_check_training import QUICK  # noqa: E402

# QUICK's code paths at the smallest sizes that still give every figure
TINY = replace(QUICK, window_s=0.01, matmul_n=64, num_classes=3, attack_targets=2, refits=4, refit_rows=60)


def test_quick_check_writes_every_figure(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(device_check, "QUICK", TINY)
    out = tmp_path / "out"
    rc = device_check.main([str(out), "--device", "cpu", "--quick", "--skip", "tests", "processes", "suite"])
    figs = json.loads((out / "figures.json").read_text())
    assert rc == 0, figs["skipped"]
    assert {"calibration.json", "figures.json"} <= {p.name for p in out.iterdir()}
    assert figs["meta"]["device"] == "cpu" and figs["meta"]["quick"] is True
    assert set(figs["skipped"]) == {"tests", "processes", "suite", "compile"}
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
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["card"] == figs["meta"]["card"] and cal["passes_per_second"]["small_cnn"] == row["passes_per_second"]
    assert figs["paper_estimate"][0].startswith("estimated time:") and cal["card"] in figs["paper_estimate"][0]


def test_quick_suite_is_a_small_grouped_grid(tmp_path):
    from benchmark.suite import expand, load_suite, parse_only

    mnist_path()  # the suite reads the real MNIST subset
    suite = load_suite(quick_suite(tmp_path, QUICK))
    cells = expand(suite, parse_only(list(QUICK.suite_only)))
    assert cells and {c.backbone.name for c in cells} == {"small_cnn"}
    assert {c.defense.name for c in cells} == {"naive", "pgd"} and {c.attack.name for c in cells} == {"none"}
    assert suite.resources.group_backbones is True
    assert all(c.external.train_limit == 64 and c.defense.params["max_epochs"] == 1 for c in cells)


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
