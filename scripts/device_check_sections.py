"""The device check's other sections (``scripts/device_check.py``): the cuda tests, the card's peak, the batched
attacks, the head refits and the gpu-check suite end to end."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from device_check_training import BACKBONE_PARAMS, Sizes, images, timed

log = logging.getLogger("device_check")
ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "gpu-check.yaml"


def section_tests(out: Path) -> dict[str, Any]:
    """The ``cuda``-marked tests, in a child process (a failure there must not end the check)."""
    xml = out / "cuda-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
           str(ROOT / "tests")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    log.info("%s", proc.stdout[-3000:])
    import xml.etree.ElementTree as ET

    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["exit_code"] = proc.returncode
    return counts


def section_peak(device: torch.device, sizes: Sizes) -> dict[str, float]:
    """The card's bf16 matrix-product peak, measured: the denominator of the model FLOPs utilisation."""
    n = sizes.matmul_n
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    reps = 10
    seconds, _ = timed(lambda: [a @ b for _ in range(reps)], device)
    return {"matmul_n": n, "dtype": str(dtype), "tflops": float(f"{2 * n**3 * reps / seconds / 1e12:.4g}")}


def _attack_context(device: torch.device, sizes: Sizes, n_train: int):  # noqa: ANN202
    from adapters.attacks.base import AttackContext
    from adapters.backbones import build_backbone, feature_extractor
    from adapters.heads.base import fit_head

    torch.manual_seed(0)
    name = sizes.backbones[0]
    extractor = feature_extractor(build_backbone(name, BACKBONE_PARAMS.get(name, {}), sizes.num_classes)).to(device)
    x, _ = images(n_train + n_train // 2, 2, seed=1)
    y = torch.arange(len(x)) % 2
    with torch.no_grad():
        f = torch.cat([extractor(x[i : i + 512].to(device)).float().cpu() for i in range(0, len(x), 512)])
    head = fit_head(f[:n_train], y[:n_train])
    return AttackContext(extractor=extractor, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:],
                         y_test=y[n_train:], f_train=f[:n_train], f_test=f[n_train:], head=head,
                         fit_head=lambda a, b: fit_head(a, b), device=device)


def section_attacks(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Batched Poison Frog and AdvPoison on VGG13 features: image-steps (one image, one optimisation step) per
    second. Random weights: the cost does not depend on them; success rates are the suite's business."""
    from adapters.attacks.adv_poison import AdvPoison
    from adapters.attacks.poison_frog import PoisonFrog

    n_train = max(2 * sizes.attack_targets, 64)
    ctx = _attack_context(device, sizes, n_train)
    out: dict[str, Any] = {}
    pf = PoisonFrog(num_targets=sizes.attack_targets, steps=sizes.attack_steps, binary=False)
    PoisonFrog(num_targets=2, steps=1, binary=False)(ctx)  # warm-up
    seconds, res = timed(lambda: pf(ctx), device)
    steps = sum(len(t.indices) for t in res.trials) * sizes.attack_steps
    out["poison_frog"] = {"image_steps_per_second": round(steps / seconds, 1), "targets": len(res.trials),
                          "seconds": round(seconds, 3)}
    ad = AdvPoison(steps=sizes.attack_steps)
    AdvPoison(steps=1, fraction=0.1)(ctx)  # warm-up
    seconds, res = timed(lambda: ad(ctx), device)
    steps = sum(len(t.indices) for t in res.trials) * sizes.attack_steps
    out["adv_poison"] = {"image_steps_per_second": round(steps / seconds, 1), "images": steps // sizes.attack_steps,
                         "seconds": round(seconds, 3)}
    return out


def section_refits(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """``refits`` Poison Frog refits: ``torch_svm`` on the device (shared base, warm start) vs sequential LinearSVC."""
    from adapters.heads.base import fit_head, fit_heads, head_accuracy
    from adapters.heads.refit import RowEdit, refit_heads

    g = torch.Generator().manual_seed(0)
    n, d = sizes.refit_rows, 512
    y = torch.randint(2, (n,), generator=g)
    f = (torch.randn(2, d, generator=g)[y] + 2.0 * torch.randn(n, d, generator=g)).relu()
    edits = [RowEdit(torch.tensor([i]), f[i : i + 1] + torch.randn(1, d, generator=g), y[i : i + 1])
             for i in range(sizes.refits)]
    clean = fit_head(f, y, "torch_svm", device=device)
    refit_heads(f, y, edits[:2], "torch_svm", device=device, init=clean)  # warm-up
    torch_s, heads = timed(lambda: refit_heads(f, y, edits, "torch_svm", device=device, init=clean), device)
    sets = [e.apply(f, y) for e in edits]
    fit_heads(sets[:1], "linear_svc")  # warm-up (imports)
    n_sk = min(len(sets), 10)  # LinearSVC fits cost the same each: time 10, scale
    sk_s, sk_heads = timed(lambda: fit_heads(sets[:n_sk], "linear_svc"), torch.device("cpu"))
    agree = max(abs(head_accuracy(h, fe, ye) - head_accuracy(s, fe, ye))
                for (fe, ye), h, s in zip(sets[:n_sk], heads[:n_sk], sk_heads, strict=True))
    sk_total = sk_s * len(sets) / n_sk
    return {"refits": len(edits), "rows": n, "dim": d, "torch_svm_seconds": round(torch_s, 4),
            "linear_svc_seconds": round(sk_total, 3), "linear_svc_fits_timed": n_sk,
            "speedup": round(sk_total / torch_s, 1), "max_train_accuracy_difference": round(agree, 4)}


def _cli(argv: list[str]) -> tuple[int, str]:
    """``python -m benchmark ARGV`` in this process (no second start-up of torch and MLflow): exit code, stdout."""
    import contextlib
    import io

    from benchmark.cli.commands import main as cli_main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(argv)
    log.info("python -m benchmark %s: exit %d\n%s", " ".join(argv), rc, buf.getvalue()[-4000:])
    return rc, buf.getvalue()


def quick_suite(work: Path, sizes: Sizes) -> Path:
    """``suites/gpu-check.yaml``'s grid sized for seconds on a CPU, written under ``work``."""
    import yaml

    raw = yaml.safe_load(SUITE.read_text())
    data = ROOT / raw["datasets"]["mnist"]["target"]["params"]["path"]
    if not data.exists():  # not copied to .data/ (scripts/gpu_wheels.sh does): the shared copy beside the repo
        data = ROOT.parent / "shared" / "data" / data.name
    for spec in raw["datasets"]["mnist"].values():
        spec.update(train_limit=64, test_limit=32)
        spec["params"]["path"] = str(data.resolve())
    for d in raw["defenses"].values():
        d.setdefault("params", {}).update(max_epochs=1, **({"steps": 2} if "steps" in d["params"] else {}))
    for a in raw["attacks"].values():
        if "params" in a:
            a["params"].update({k: 2 for k in ("steps", "num_targets") if k in a["params"]})
    raw["evaluation"].update(robust_steps=2, robust_samples=8)
    if sizes.suite_backbone:
        raw["backbones"] = {sizes.suite_backbone: {"params": BACKBONE_PARAMS.get(sizes.suite_backbone, {})}}
    raw.setdefault("resources", {})["group_backbones"] = True  # the path a card takes (auto: on for CUDA)
    path = work / "gpu-check-quick.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def section_suite(out: Path, device: torch.device, sizes: Sizes, quick: bool) -> dict[str, Any]:
    """``benchmark run suites/gpu-check.yaml`` end to end into a store under OUT, then ``report``; tarred."""
    from benchmark.grid.estimate import estimate_lines
    from benchmark.suite import expand, load_suite

    work = Path(tempfile.mkdtemp(prefix="gpu-check-suite-"))  # OUT keeps only the tarball (the device tool's limits)
    suite_path = quick_suite(work, sizes) if quick else SUITE
    suite = load_suite(suite_path)
    only = [a for s in sizes.suite_only for a in ("--only", s)]
    store = ["--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"]
    t0 = time.perf_counter()
    run_rc, run_out = _cli(["run", str(suite_path), "--device", device.type, "--quiet", "--cache-dir",
                            str(work / "cache"), *store, *only])
    run_s = time.perf_counter() - t0
    rep_rc, _ = _cli(["report", "--suite", suite.name, "--out", str(work / "report"), *store])
    with tarfile.open(out / "store.tar.gz", "w:gz") as tar:
        for name in ("mlflow.db", "artifacts", "report", suite_path.name):  # the store: database and artifacts
            if (work / name).exists():
                tar.add(work / name, arcname=name)
    shutil.rmtree(work, ignore_errors=True)
    cells = expand(suite)
    return {"suite": str(suite_path.relative_to(ROOT) if suite_path.is_relative_to(ROOT) else suite_path.name),
            "cells": len(cells), "only": list(sizes.suite_only), "run_exit_code": run_rc,
            "report_exit_code": rep_rc, "run_seconds": round(run_s, 1),
            "table": run_out.strip().splitlines()[-(len(cells) + 3):],
            "estimate_before": estimate_lines(suite, cells, device.type)}


