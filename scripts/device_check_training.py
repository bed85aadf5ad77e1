"""The device check's training figures (``scripts/device_check.py``): what it sizes, ``train_backbone`` timed over
a short window, and the sections that measure training: images/s, FLOPs, ``compile``, processes sharing the card,
grouped training."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("device_check")
ROOT = Path(__file__).resolve().parents[1]


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
    defenses=("pgd", "naive"), pgd_steps=2, paper_batch=8, batch_sweep=(8,), precisions=("float32",), matmul_n=256,
    num_classes=10, attack_targets=4, attack_steps=2, refits=10, refit_rows=300, processes=(2,), group=2,
    suite_only=("defense=naive,pgd", "attack=none"), suite_backbone="small_cnn",
)
BACKBONE_PARAMS = {"small_cnn": {"width": 8, "feature_dim": 32}}  # the quick run's; the paper's take their defaults


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


def section_processes(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """N plain processes training VGG13 PGD at batch 64 on the same card at once (what Ray's fractional GPUs,
    ``resources: {num_gpus: 1/N}``, do on a cluster): the sum of their images/s against one process alone."""
    res: dict[str, Any] = {}
    for n in sizes.processes:
        ready = Path(tempfile.mkdtemp(prefix=f"gpu-check-ready{n}-"))
        cmd = [sys.executable, str(ROOT / "scripts" / "device_check.py"), "--worker", "--device", device.type,
               "--backbone", sizes.backbones[0], "--defense", "pgd", "--batch", str(sizes.paper_batch), "--of", str(n),
               "--ready", str(ready)]
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
    """``group`` backbones (seeds 0..N-1, PGD) at batch 64 each trained as one stack by ``train_backbones`` vs one
    model by itself."""
    from adapters.backbones import build_backbone
    from benchmark.cell.training import Member, train_backbones

    name, precision = sizes.backbones[0], sizes.precisions[-1]
    params = defense_params("pgd", sizes, sizes.paper_batch, precision, False)
    x, y = images(sizes.paper_batch * 3, sizes.num_classes)
    group = []
    for seed in range(sizes.group):
        torch.manual_seed(seed)
        backbone = build_backbone(name, BACKBONE_PARAMS.get(name, {}), sizes.num_classes)
        group.append(Member(backbone, "pgd", params, seed))

    def run(n_batches: int) -> float:
        reps, rows = -(-n_batches // 3), n_batches * sizes.paper_batch
        xs, ys = x.repeat(reps, 1, 1, 1)[:rows], y.repeat(reps)[:rows]
        seconds, _ = timed(lambda: train_backbones(group, xs, ys, device, progress=False,
                                                   classes=range(sizes.num_classes)), device)
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
