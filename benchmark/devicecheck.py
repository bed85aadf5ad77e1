"""The device check: every GPU figure of docs/performance.md in one process, one call (scripts/gpu_check.sh).

``python -m benchmark.devicecheck OUT_DIR [--device cuda|cpu] [--quick] [--skip SECTION ...]`` writes
``figures.json`` (every figure, with the card, versions and date), ``calibration.json`` (the throughputs
``run --dry-run`` reads; copy it to ``benchmark/grid/calibration/<card>.json``), ``store.tar.gz`` (the MLflow store of
``suites/gpu-check.yaml``, its report included), ``cuda-tests.xml`` and ``check.log``. Each measurement is a short
timed window after a warm-up; sections run in order of importance and one that would pass the time budget is
recorded as skipped, so the check ends in time on any card. ``--quick`` shrinks every size (the CPU rehearsal).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("benchmark.devicecheck")
ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "gpu-check.yaml"
SECTIONS = ("tests", "peak", "training", "flops", "attacks", "refits", "suite", "processes", "grouped", "compile")


@dataclass(frozen=True)
class Sizes:
    """Everything the check sizes; ``QUICK`` is the CPU rehearsal's."""

    # the sections together: with start-up and installs the check stays under 6 minutes on a card, so that a failed
    # first try leaves device time for a second; a section that would pass the budget is recorded as skipped
    budget_s: float = 330.0
    window_s: float = 1.5  # one timed window
    training_budget_s: float = 110.0  # the training grid; compile and the rest get what is left
    compile_budget_s: float = 40.0
    backbones: tuple[str, ...] = ("vgg13", "resnet18")
    defenses: tuple[str, ...] = ("pgd", "naive", "fgsm")  # PGD first: the calibration and the targets need it
    pgd_steps: int = 40  # the paper's
    paper_batch: int = 64
    batch_sweep: tuple[int, ...] = (64, 256, 1024)
    precisions: tuple[str, ...] = ("float32", "bf16")
    matmul_n: int = 8192
    num_classes: int = 100  # CIFAR-100, the paper's external data
    attack_targets: int = 256
    attack_steps: int = 40
    refits: int = 100
    refit_rows: int = 10_000  # the paper's airplane-vs-car training set
    processes: tuple[int, ...] = (1, 2, 4)
    group: int = 4  # backbones trained together
    suite_only: tuple[str, ...] = ()  # --only filters for the suite run
    suite_backbone: str | None = None  # replaces the suite's backbones (the quick run's small CNN)


# The CPU rehearsal: every code path of the check in about a minute on 2 busy cores, so the small CNN stands in for
# the paper's backbones (a VGG13 step on a 2-core CPU takes a second).
QUICK = Sizes(
    budget_s=600.0, window_s=0.1, training_budget_s=60.0, compile_budget_s=10.0, backbones=("small_cnn",),
    pgd_steps=2, paper_batch=8, batch_sweep=(8, 16), precisions=("float32",), matmul_n=256, num_classes=10,
    attack_targets=4, attack_steps=2, refits=10, refit_rows=300, processes=(2,), group=2,
    suite_only=("defense=naive,pgd", "attack=none"), suite_backbone="small_cnn",
)
BACKBONE_PARAMS = {"small_cnn": {"width": 8, "feature_dim": 32}}  # the quick run's; the paper's take their defaults


class Check:
    """Runs the sections and collects their figures; a section that raises is recorded, the others go on."""

    def __init__(self, out: Path, device: torch.device, sizes: Sizes, quick: bool) -> None:
        self.out, self.device, self.sizes, self.quick = out, device, sizes, quick
        self.start = time.perf_counter()
        self.figures: dict[str, Any] = {"meta": _meta(device, quick), "sizes": asdict(sizes), "skipped": {}}

    def left(self) -> float:
        return self.sizes.budget_s - (time.perf_counter() - self.start)

    def section(self, name: str, fn: Callable[[], Any], need_s: float = 0.0) -> None:
        if self.left() < need_s:
            self.figures["skipped"][name] = f"time budget: {self.left():.0f} s left, needs ~{need_s:.0f} s"
            log.warning("skip %s: %s", name, self.figures["skipped"][name])
            return
        t0 = time.perf_counter()
        log.info("== %s (%.0f s left)", name, self.left())
        try:
            self.figures[name] = fn()
        except Exception as err:  # one broken section must not cost the figures of the others
            log.exception("section %s failed", name)
            self.figures["skipped"][name] = f"failed: {type(err).__name__}: {err}"
        self.figures.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        self.save()

    def save(self) -> None:
        (self.out / "figures.json").write_text(json.dumps(self.figures, indent=1, default=str))


# ----------------------------------------------------------------------------------------------------------------
# helpers


def card_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"


def card_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _meta(device: torch.device, quick: bool) -> dict[str, Any]:
    meta = {
        "card": card_name(device),
        "device": device.type,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "quick": quick,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
    return meta


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def images(n: int, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 32x32 RGB images and labels: throughput does not depend on the pixels."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(num_classes, (n,), generator=g)


def defense_params(defense: str, sizes: Sizes, batch: int, precision: str, compile_: bool) -> dict[str, Any]:
    p: dict[str, Any] = {"batch_size": batch, "max_epochs": 1, "stop_at": 1.0, "precision": precision,
                         "compile": compile_}
    if defense != "naive":
        p["eps"] = 3 / 255
    if defense == "pgd":
        p["steps"] = sizes.pgd_steps
    return p


def passes_per_image(defense: str, sizes: Sizes) -> int:
    """Forward+backward passes per training image: the training step plus the attack's."""
    return 1 + {"naive": 0, "fgsm": 1}.get(defense, sizes.pgd_steps)


def make_trainer(
    backbone: str, defense: str, batch: int, precision: str, compile_: bool, device: torch.device, sizes: Sizes,
    seed: int = 0,
) -> Callable[[int], float]:
    """``run(n_batches) -> seconds``: ``train_backbone`` itself on ``n_batches`` batches of one model (kept across
    calls, so the first call is the warm-up: kernels chosen, compiled graphs built)."""
    from adapters.backbones import build_backbone
    from benchmark.cell.training import train_backbone

    torch.manual_seed(seed)
    model = build_backbone(backbone, BACKBONE_PARAMS.get(backbone, {}), num_classes=sizes.num_classes)
    params = defense_params(defense, sizes, batch, precision, compile_)
    x, y = images(batch * 3, sizes.num_classes, seed)

    def run(n_batches: int) -> float:
        reps = -(-n_batches // 3)
        xs, ys = x.repeat(reps, 1, 1, 1)[: n_batches * batch], y.repeat(reps)[: n_batches * batch]
        res = train_backbone(model, xs, ys, defense, params, device=device, seed=seed, progress=False,
                             classes=range(sizes.num_classes))
        return len(xs) / res.images_per_second

    return run


def window_batches(run: Callable[[int], float], batch: int, window_s: float) -> int:
    """Warm ``run`` up and return how many batches fill a timed window of about ``window_s``."""
    run(1)
    per_batch = run(2) / 2
    return max(2, min(500, int(window_s / max(per_batch, 1e-6))))


def train_rate(
    backbone: str, defense: str, batch: int, precision: str, compile_: bool, device: torch.device, sizes: Sizes
) -> dict[str, float]:
    """Training images/s of ``train_backbone`` over a window of about ``window_s`` after a warm-up."""
    run = make_trainer(backbone, defense, batch, precision, compile_, device, sizes)
    n = window_batches(run, batch, sizes.window_s)
    seconds = run(n)
    rate = n * batch / seconds
    return {"images_per_second": round(rate, 1), "passes_per_second": round(rate * passes_per_image(defense, sizes), 1),
            "batches": n, "seconds": round(seconds, 3)}


# ----------------------------------------------------------------------------------------------------------------
# sections


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


def section_training(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Images/s per backbone x defense, eager: a batch sweep in the last precision listed (bf16) for the best batch,
    then batch 64 and the best batch in the other precisions. Past ``training_budget_s`` the rest is left out."""
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    main_precision = sizes.precisions[-1]
    for backbone in sizes.backbones:
        for defense in sizes.defenses:
            if time.perf_counter() - t0 > sizes.training_budget_s:
                out[f"{backbone}/{defense}"] = "skipped: training budget spent"
                continue
            sweep = {}
            for batch in sizes.batch_sweep:
                try:
                    sweep[batch] = train_rate(backbone, defense, batch, main_precision, False, device, sizes)
                except torch.OutOfMemoryError:
                    break
            best = max(sweep, key=lambda b: sweep[b]["images_per_second"])
            rows = {f"batch{b}_{main_precision}_eager": r for b, r in sweep.items() if b in (sizes.paper_batch, best)}
            for precision in sizes.precisions[:-1]:
                for batch in dict.fromkeys((sizes.paper_batch, best)):
                    rows[f"batch{batch}_{precision}_eager"] = train_rate(backbone, defense, batch, precision, False,
                                                                         device, sizes)
            sweep_rates = {str(b): r["images_per_second"] for b, r in sweep.items()}
            out[f"{backbone}/{defense}"] = {"best_batch": best, "sweep": sweep_rates, **rows}
            log.info("%s %s images/s by batch: %s", backbone, defense, sweep_rates)
    return out


def section_compile(device: torch.device, sizes: Sizes, figures: dict[str, Any]) -> dict[str, Any]:
    """``compile: true`` (torch.compile of the model) in the main precision at batch 64 and at the best batch,
    beside the eager figure of the same configuration; past ``compile_budget_s`` the rest is left out."""
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    precision = sizes.precisions[-1]
    for key, row in figures.get("training", {}).items():
        if not isinstance(row, dict):
            continue
        backbone, defense = key.split("/")
        for batch in dict.fromkeys((sizes.paper_batch, row["best_batch"])):
            name = f"{key}/batch{batch}_{precision}"
            if time.perf_counter() - t0 > sizes.compile_budget_s:
                out[name] = "skipped: compile budget spent"
                continue
            compiled = train_rate(backbone, defense, batch, precision, True, device, sizes)
            eager = row.get(f"batch{batch}_{precision}_eager", {}).get("images_per_second")
            out[name] = {"compiled": compiled["images_per_second"], "eager": eager,
                         "speedup": round(compiled["images_per_second"] / eager, 2) if eager else None}
    return out


def flops_per_image(backbone: str, defense: str, sizes: Sizes, device: torch.device) -> float:
    """Model FLOPs of one training image, counted by torch.utils.flop_counter on the real operations: one training
    step (forward, backward to the weights) plus the attack's steps (forward, backward to the input only)."""
    from torch.utils.flop_counter import FlopCounterMode

    from adapters.backbones import build_backbone

    model = build_backbone(backbone, BACKBONE_PARAMS.get(backbone, {}), num_classes=sizes.num_classes).to(device)
    x, y = (t.to(device) for t in images(2, sizes.num_classes))

    def count(weights: bool) -> int:
        for q in model.parameters():
            q.requires_grad_(weights)
        xi = x.clone().requires_grad_(not weights)
        with FlopCounterMode(display=False) as counter:
            torch.nn.functional.cross_entropy(model(xi), y).backward()
        return counter.get_total_flops()

    attack = count(False) * (passes_per_image(defense, sizes) - 1)
    return (count(True) + attack) / len(x)


def section_flops(device: torch.device, sizes: Sizes, figures: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per training image and the model FLOPs utilisation of the measured peak, per training figure."""
    peak = figures.get("peak", {}).get("tflops")
    out: dict[str, Any] = {}
    for backbone in sizes.backbones:
        for defense in sizes.defenses:
            per_image = flops_per_image(backbone, defense, sizes, device)
            row: dict[str, Any] = {"gflop_per_image": round(per_image / 1e9, 3)}
            t = figures.get("training", {}).get(f"{backbone}/{defense}")
            if isinstance(t, dict) and peak:
                for key, r in t.items():
                    if isinstance(r, dict) and "images_per_second" in r:
                        row[f"mfu_{key}"] = round(r["images_per_second"] * per_image / (peak * 1e12), 4)
            out[f"{backbone}/{defense}"] = row
    return out


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
    from adapters.heads.base import accuracy, fit_head, fit_heads
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
    agree = max(abs(accuracy(h, fe, ye) - accuracy(s, fe, ye))
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


def section_suite(out: Path, device: torch.device, sizes: Sizes, quick: bool) -> dict[str, Any]:
    """``benchmark run suites/gpu-check.yaml`` end to end into a store under OUT, then ``report``; tarred."""
    import yaml

    from benchmark.grid.estimate import estimate_lines
    from benchmark.suite import expand, load_suite

    work = Path(tempfile.mkdtemp(prefix="gpu-check-suite-"))  # OUT keeps only the tarball (the device tool's limits)
    suite_path = SUITE
    if quick:  # the same grid, sized for seconds on a CPU
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
        suite_path = work / "gpu-check-quick.yaml"
        suite_path.write_text(yaml.safe_dump(raw, sort_keys=False))
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


def worker(args: argparse.Namespace) -> int:
    """One of N processes sharing the card: warm up, wait for the others, train for a window, print images/s."""
    sizes = QUICK if args.quick else Sizes()
    device = torch.device(args.device)
    run = make_trainer(args.backbone, args.defense, args.batch, sizes.precisions[-1], False, device, sizes,
                       seed=args.rank)
    n = window_batches(run, args.batch, sizes.window_s / 2)
    ready = Path(args.ready)
    (ready / f"{args.rank}.ready").touch()
    deadline = time.time() + 300
    while len(list(ready.glob("*.ready"))) < args.of and time.time() < deadline:
        time.sleep(0.05)
    seconds = done = 0.0
    while seconds < 2 * sizes.window_s:
        seconds += run(n)
        done += n * args.batch
    print(json.dumps({"images_per_second": done / seconds, "seconds": seconds}))
    return 0


def section_processes(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """N plain processes training VGG13 PGD at batch 64 on the same card at once (what Ray's fractional GPUs,
    ``resources: {num_gpus: 1/N}``, do on a cluster): the sum of their images/s against one process alone."""
    res: dict[str, Any] = {}
    for n in sizes.processes:
        ready = Path(tempfile.mkdtemp(prefix=f"gpu-check-ready{n}-"))
        cmd = [sys.executable, "-m", "benchmark.devicecheck", "--worker", "--device", device.type, "--backbone",
               sizes.backbones[0], "--defense", "pgd", "--batch", str(sizes.paper_batch), "--of", str(n), "--ready", str(ready)]
        if sizes == QUICK:
            cmd.append("--quick")
        procs = [subprocess.Popen([*cmd, "--rank", str(r)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for r in range(n)]
        rates = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1])["images_per_second"]
                 for p in procs]
        for f in ready.glob("*.ready"):
            f.unlink()
        ready.rmdir()
        res[str(n)] = {"total_images_per_second": round(sum(rates), 1), "per_process": [round(r, 1) for r in rates]}
    if "1" in res:
        for row in res.values():
            row["speedup_over_one"] = round(row["total_images_per_second"] / res["1"]["total_images_per_second"], 2)
    return res


def section_grouped(device: torch.device, sizes: Sizes, figures: dict[str, Any]) -> dict[str, Any]:
    """``group`` VGG13 backbones (seeds 0..N-1, PGD) at batch 64 each in one vmapped step vs one after another."""
    from adapters.backbones import build_backbone
    from benchmark.cell.grouped import Member, train_group

    name, precision = sizes.backbones[0], sizes.precisions[-1]
    params = defense_params("pgd", sizes, sizes.paper_batch, precision, False)
    x, y = images(sizes.paper_batch * 3, sizes.num_classes)
    classes = range(sizes.num_classes)

    def members() -> list[Member]:
        out = []
        for seed in range(sizes.group):
            torch.manual_seed(seed)
            out.append(Member(build_backbone(name, BACKBONE_PARAMS.get(name, {}), sizes.num_classes), "pgd", params, seed))
        return out

    group = members()

    def run(n_batches: int) -> float:
        reps = -(-n_batches // 3)
        xs, ys = x.repeat(reps, 1, 1, 1)[: n_batches * sizes.paper_batch], y.repeat(reps)[: n_batches * sizes.paper_batch]
        seconds, _ = timed(lambda: train_group(group, xs, ys, device=device, classes=classes), device)
        return seconds

    n = window_batches(run, sizes.paper_batch, sizes.window_s)
    grouped_rate = sizes.group * n * sizes.paper_batch / run(n)
    single = train_rate(name, "pgd", sizes.paper_batch, precision, False, device, sizes)["images_per_second"]
    peak = figures.get("peak", {}).get("tflops")
    gflop = figures.get("flops", {}).get(f"{name}/pgd", {}).get("gflop_per_image")
    mfu = round(grouped_rate * gflop * 1e9 / (peak * 1e12), 4) if peak and gflop else None
    return {"mfu": mfu, "models": sizes.group, "batch": sizes.paper_batch, "precision": precision,
            "grouped_images_per_second": round(grouped_rate, 1), "one_model_images_per_second": single,
            "speedup_over_sequential": round(grouped_rate / single, 2), "target_speedup": sizes.group / 2}


def calibration(figures: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """What ``run --dry-run`` reads: forward+backward passes per second per backbone, from PGD training at the
    paper's batch in the main precision (the suites' defaults: batch 64, bf16 autocast on CUDA, eager)."""
    key = f"batch{sizes.paper_batch}_{sizes.precisions[-1]}_eager"
    rates = {}
    for name, row in figures.get("training", {}).items():
        backbone, defense = name.split("/")
        if defense == "pgd" and isinstance(row, dict) and key in row:
            rates[backbone] = row[key]["passes_per_second"]
    meta = figures["meta"]
    return {"card": meta["card"], "date": meta["date"], "torch": meta["torch"], "quick": meta["quick"],
            "setting": f"PGD-{sizes.pgd_steps} training, {key}", "passes_per_second": rates,
            "written_by": "scripts/gpu_check.sh (benchmark/devicecheck.py)"}


def paper_estimate(cal: dict[str, Any], path: Path) -> list[str]:
    """``run suites/paper.yaml --dry-run``'s GPU estimate from the throughputs just measured."""
    from benchmark.grid.estimate import Calibration, estimate_lines
    from benchmark.suite import expand, load_suite

    suite = load_suite(ROOT / "suites" / "paper.yaml")
    measured = Calibration(cal["card"], cal["date"], path, cal["passes_per_second"])
    return estimate_lines(suite, expand(suite), "cuda", calibration=measured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.devicecheck", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="output folder (created)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CPU rehearsal, about a minute")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for opt in ("--backbone", "--defense", "--ready"):
        parser.add_argument(opt, help=argparse.SUPPRESS)
    for opt in ("--batch", "--of", "--rank"):
        parser.add_argument(opt, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.out is None:
        parser.error("OUT_DIR is required")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available here; use --device cpu", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(out / "check.log")])
    for noisy in ("mlflow", "alembic", "matplotlib", "PIL", "benchmark.cell.training"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    device = torch.device(args.device)
    sizes = QUICK if args.quick else Sizes()
    if device.type == "cpu":
        sizes = replace(sizes, precisions=("float32",))  # bf16 on a CPU depends on its matrix units: not the point
    check = Check(out, device, sizes, args.quick)
    figs = check.figures
    plan: list[tuple[str, Callable[[], Any], float]] = [
        ("tests", lambda: section_tests(out), 0),
        ("peak", lambda: section_peak(device, sizes), 0),
        ("training", lambda: section_training(device, sizes), 30),
        ("flops", lambda: section_flops(device, sizes, figs), 5),
        ("attacks", lambda: section_attacks(device, sizes), 5),
        ("refits", lambda: section_refits(device, sizes), 5),
        ("suite", lambda: section_suite(out, device, sizes, args.quick), 20),
        ("grouped", lambda: section_grouped(device, sizes, figs), 10),
        ("processes", lambda: section_processes(device, sizes), 20),
        ("compile", lambda: section_compile(device, sizes, figs), 20),
    ]
    if device.type == "cpu":  # inductor's CPU compile takes minutes on 2 cores and is not the question here
        args.skip.append("compile")
    for name, fn, need in plan:
        if name in args.skip:
            figs["skipped"][name] = "--skip" if name != "compile" or device.type != "cpu" else "not on the CPU"
            continue
        check.section(name, fn, need)
    cal = calibration(figs, sizes)
    (out / "calibration.json").write_text(json.dumps(cal, indent=1))
    if cal["passes_per_second"]:
        figs["paper_estimate"] = paper_estimate(cal, out / "calibration.json")
    figs["total_seconds"] = round(time.perf_counter() - check.start, 1)
    check.save()
    log.info("figures: %s; calibration: %s (copy it to benchmark/grid/calibration/%s.json)", out / "figures.json",
             out / "calibration.json", card_slug(cal["card"]))
    failed = [k for k, v in figs["skipped"].items() if str(v).startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
