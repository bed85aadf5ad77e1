"""A rough time estimate of a suite for ``run --dry-run``, from per-image costs and stated throughputs.

The model: every cost is a number of forward+backward passes of one 32x32 image through a backbone, divided by
that backbone's throughput; a forward-only pass counts as a third of one (the usual backward ~ 2x forward rule).

- training, once per distinct backbone cache key (external data x backbone x defense x seed, exactly the cache's
  key, so cells sharing a backbone count it once): external training images x max_epochs x (1 + attack steps
  per image: FGSM 1, PGD ``steps``), plus a forward pass over the external test set. ``max_epochs`` is an upper
  bound: early stopping at ``stop_at`` can end training sooner.
- features, once per distinct feature cache key: a forward pass over the target train and test images.
- attacks, once per distinct attack cache key (cells that differ only in their filter share one attack):
  optimisation steps x images optimised (x targets for targeted attacks).
- with a cache folder, backbones, features and attacks it already holds cost nothing.
- evaluation, per cell: the robust-accuracy PGD (``robust_steps`` x ``robust_samples``).
- heads, per cell: one clean fit plus one refit per trial, from a per-(sample x feature x class) cost (far lower
  for ``torch_svm``'s shared-base refits).

Throughputs are constants below with their source. On a GPU they come from a calibration file that the device
check (scripts/gpu_check.sh) writes per card, committed under benchmark/grid/calibration/ ($BENCHMARK_CALIBRATION names
another); the line says which card and date. Without one, the GPU figures are the assumed constants below.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.cell.keys import (  # the cache's own keys: shared backbones count once
    backbone_key,
    feature_key,
)
from benchmark.core.errors import BenchmarkError
from benchmark.core.registry import REGISTRY, make
from benchmark.store.cache import Cache
from benchmark.suite import Cell, Suite

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"

# Forward+backward images per second, 32x32 inputs.
# GPU (H100, bf16 autocast, channels_last, batch 64): ASSUMED, not measured. VGG13 is ~0.46 GFLOP forward at 32x32
# (1.4 GFLOP fwd+bwd), so the compute bound is far above these; at batch 64 kernel launches dominate.
GPU_NAME = "H100"
GPU_IMAGES_PER_SECOND = {"vgg13": 20_000.0, "resnet18": 8_000.0, "small_cnn": 50_000.0}
# CPU (2 cores): VGG13 measured, ~25 training images/s under PGD-7 = 8 fwd+bwd passes each -> 200 img/s.
# ResNet-18 scaled by its throughput ratio to VGG13 measured side by side on the same 2 (shared) cores (0.4x, also
# its FLOP ratio). small_cnn (width 16): assumed 1,500; side by side it ran 16x VGG13 (3,200), but its per-batch
# overheads (optimizer, data shuffling) weigh more than for VGG13, and the smoke suite trained slower than that.
CPU_IMAGES_PER_SECOND = {"vgg13": 200.0, "resnet18": 80.0, "small_cnn": 1_500.0}
DISPLAY = {"vgg13": "VGG13", "resnet18": "ResNet-18", "small_cnn": "small CNN"}
DEFAULT_BACKBONE = "vgg13"  # a backbone not listed (a plugin) is costed like VGG13
FORWARD_FRACTION = 1 / 3  # a forward pass costs about a third of forward+backward
# LinearSVC (liblinear, one core): seconds per (training sample x feature dimension x one-vs-rest class), measured
# ~5e-8 on synthetic 512-d ReLU features on a shared 2-core CPU; unscaled real features can take several times more.
HEAD_SECONDS_PER_UNIT = 5e-8
# torch_svm refits through adapters/heads/refit.py (shared base, warm-started from the clean head), same unit: measured
# 0.037 s for 100 refits of 1000 x 512 binary problems (7e-10) and 0.25 s at 10,000 x 512 (5e-10), 2 CPU cores.
# Used for GPUs too, where it is an upper bound.
REFIT_SECONDS_PER_UNIT = 7e-10
# Dataset sizes (train, test, classes) where they are known without loading anything.
KNOWN_SIZES = {
    "cifar10": (50_000, 10_000, 10),
    "cifar100": (50_000, 10_000, 100),
    "svhn": (73_257, 26_032, 10),
    "mnist": (60_000, 10_000, 10),
    "digits": (1_437, 360, 10),
}


@dataclass(frozen=True)
class Calibration:
    """Measured forward+backward passes per second per backbone on one card (written by the device check)."""

    card: str
    date: str
    path: Path
    passes_per_second: dict[str, float]


def read_calibration(path: str | Path) -> Calibration:
    """One calibration file; a malformed one is a one-line error naming the file and the key."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BenchmarkError(f"calibration file {path}: cannot be read as JSON ({err})") from None
    for key in ("card", "date", "passes_per_second"):
        if key not in raw:
            raise BenchmarkError(f"calibration file {path}: key '{key}' is missing")
    rates = raw["passes_per_second"]
    if not isinstance(rates, dict) or not rates:
        raise BenchmarkError(f"calibration file {path}: 'passes_per_second' must map backbones to throughputs")
    for name, value in rates.items():
        if not isinstance(value, int | float) or value <= 0:
            raise BenchmarkError(f"calibration file {path}: passes_per_second.{name} must be a positive number")
    if raw.get("quick"):
        raise BenchmarkError(f"calibration file {path}: written by a --quick rehearsal, not a measurement")
    return Calibration(str(raw["card"]), str(raw["date"]), path, {k: float(v) for k, v in rates.items()})


def load_calibration() -> Calibration | None:
    """$BENCHMARK_CALIBRATION (a file), else the newest file of benchmark/grid/calibration/ by its date; else None."""
    named = os.environ.get("BENCHMARK_CALIBRATION")
    if named:
        return read_calibration(named)
    found = [read_calibration(p) for p in sorted(CALIBRATION_DIR.glob("*.json"))]
    return max(found, key=lambda c: c.date) if found else None


@dataclass
class Estimate:
    """Seconds per category, and what was counted."""

    seconds: dict[str, float] = field(default_factory=dict)
    backbones: int = 0
    feature_sets: int = 0
    attacks: int = 0
    cells: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@dataclass(frozen=True)
class _Size:
    train: int
    test: int
    classes: int


def _data_size(spec: Any) -> _Size:
    """Image counts of a DataSpec after its class subset and limits (balanced classes assumed where unknown)."""
    params = spec.params or {}
    if spec.name == "npz":
        train, test, k = _npz_size(params.get("path", ""), spec.classes)
    elif spec.name == "synthetic":
        k = int(params.get("num_classes", 4))
        frac = len(spec.classes) / k if spec.classes else 1.0
        train, test = int(params.get("n_train", 512) * frac), int(params.get("n_test", 256) * frac)
        k = len(spec.classes) if spec.classes else k
    else:
        n_train, n_test, total = KNOWN_SIZES.get(spec.name, (50_000, 10_000, 10))
        frac = len(spec.classes) / total if spec.classes else 1.0
        train, test = int(n_train * frac), int(n_test * frac)
        k = len(spec.classes) if spec.classes else total
    if spec.train_limit is not None:
        train = min(train, spec.train_limit)
    if spec.test_limit is not None:
        test = min(test, spec.test_limit)
    return _Size(train, test, max(k, 1))


def _npz_size(path: str, classes: list[int] | None) -> tuple[int, int, int]:
    import numpy as np

    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path.cwd() / p
    try:
        with np.load(p, allow_pickle=False) as f:  # only the label arrays are read
            y_train, y_test = f["y_train"], f["y_test"]
    except Exception:
        return 10_000, 2_000, len(classes) if classes else 10  # file absent here: a guess, the run will tell
    if classes:
        return int(np.isin(y_train, classes).sum()), int(np.isin(y_test, classes).sum()), len(classes)
    return len(y_train), len(y_test), len(np.unique(y_train))


def _rate(table: dict[str, float], backbone: str) -> float:
    return table.get(backbone, table[DEFAULT_BACKBONE])


def _training_passes(cell: Cell, ext: _Size) -> float:
    if REGISTRY.get("backbone", cell.backbone.name).cls.pretrained:
        return 0.0  # robustbench / timm: no external training
    defense = make("defense", cell.defense.name, cell.defense.params)
    per_image = defense.passes_per_image()
    return ext.train * defense.params.max_epochs * per_image + ext.test * FORWARD_FRACTION


def _attack_passes(cell: Cell, tgt: _Size) -> tuple[float, int, int, int]:
    """(fwd+bwd passes, head refits, training rows and one-vs-rest classes of each head) for this cell's attack."""
    attack = REGISTRY.build("attack", cell.attack.name, cell.attack.params)
    task = attack.task_classes()
    rows = tgt.train * len(task) / tgt.classes if task else tgt.train
    k = 1 if (task and len(task) == 2) or tgt.classes == 2 else (len(task) if task else tgt.classes)
    cost = attack.cost(tgt.train, tgt.train // tgt.classes)
    return float(cost.passes), cost.refits, int(rows), k


def _feature_dim(cell: Cell) -> int:
    return int(cell.backbone.params.get("feature_dim", 512))


def _table(gpu: bool, calibration: Calibration | None) -> dict[str, float]:
    if not gpu:
        return CPU_IMAGES_PER_SECOND
    return {**GPU_IMAGES_PER_SECOND, **(calibration.passes_per_second if calibration else {})}


def estimate(
    suite: Suite, cells: list[Cell], gpu: bool, calibration: Calibration | None = None, cache: Cache | None = None
) -> Estimate:
    """Seconds per category for ``cells`` on a GPU (``gpu``; measured rates from ``calibration`` where it has
    them) or on the 2-core CPU; what ``cache`` holds is free."""
    from benchmark.cell.attack_cache import (
        attack_key,  # imports torch: only when estimating
    )

    table = _table(gpu, calibration)
    est = Estimate(seconds={"training": 0.0, "features": 0.0, "attacks": 0.0, "evaluation": 0.0, "heads": 0.0})
    seen_backbones: set[str] = set()
    seen_features: set[str] = set()
    seen_attacks: set[str] = set()

    def held(kind: str, key: str) -> bool:
        return cache is not None and cache.has(kind, key)
    sizes: dict[str, _Size] = {}

    def size(spec: Any) -> _Size:
        key = spec.model_dump_json()
        if key not in sizes:
            sizes[key] = _data_size(spec)
        return sizes[key]

    for cell in cells:
        rate = _rate(table, cell.backbone.name)
        ext, tgt = size(cell.external), size(cell.target)
        bkey = backbone_key(cell)
        if bkey not in seen_backbones:
            seen_backbones.add(bkey)
            est.seconds["training"] += 0.0 if held("backbone", bkey) else _training_passes(cell, ext) / rate
        fkey = feature_key(cell)
        if fkey not in seen_features:
            seen_features.add(fkey)
            est.seconds["features"] += 0.0 if held("features", fkey) else (tgt.train + tgt.test) * FORWARD_FRACTION / rate
        passes, fits, rows, k = _attack_passes(cell, tgt)
        akey = attack_key(cell, fkey)
        if akey not in seen_attacks:
            seen_attacks.add(akey)
            est.seconds["attacks"] += 0.0 if held("attack", akey) else passes / rate
        ev = cell.evaluation
        est.seconds["evaluation"] += min(ev.robust_samples, tgt.test) * ev.robust_steps / rate
        # a filtered cell fits each trial's head from scratch on the rows the filter kept: no shared-base refits
        shared = cell.head.name == "torch_svm" and fits > 1 and not cell.filtered
        refit = REFIT_SECONDS_PER_UNIT if shared else HEAD_SECONDS_PER_UNIT
        est.seconds["heads"] += (HEAD_SECONDS_PER_UNIT + fits * refit) * rows * _feature_dim(cell) * k
    est.backbones, est.feature_sets, est.cells = len(seen_backbones), len(seen_features), len(cells)
    est.attacks = len(seen_attacks)
    return est


def _duration(seconds: float, unit: str) -> str:
    hours = seconds / 3600
    if hours >= 1:
        return f"{hours:.1f} {unit}-hours"
    if seconds >= 60:
        return f"{seconds / 60:.0f} {unit}-minutes"
    return f"{max(seconds, 0.0):.0f} {unit}-seconds"


def _line(est: Estimate, gpu: bool, backbones: list[str], calibration: Calibration | None = None) -> str:
    table = _table(gpu, calibration)
    rates = ", ".join(f"{_rate(table, b):,.0f} img/s {DISPLAY.get(b, b)}" for b in backbones)
    if gpu and calibration is not None:
        what = _duration(est.total, "GPU")
        assumed = [DISPLAY.get(b, b) for b in backbones if b not in calibration.passes_per_second]
        basis = (f"{calibration.card}, measured {calibration.date} ({calibration.path.name}): {rates} fwd+bwd bf16"
                 + (f"; {', '.join(assumed)} assumed" if assumed else ""))
    elif gpu:
        what = _duration(est.total, "GPU")
        basis = f"{GPU_NAME}, assumed (no calibration file measured on a card): {rates} fwd+bwd bf16"
    else:
        what = _duration(est.total, "CPU")
        if "vgg13" not in backbones:
            measured = "assumed"
        else:
            measured = "measured" if backbones == ["vgg13"] else "VGG13's measured, the rest assumed"
        basis = f"2 CPU cores, {measured}: {rates} fwd+bwd"
    total = est.total or 1.0
    parts = ", ".join(
        f"{k} {100 * v / total:.0f}%" for k, v in est.seconds.items() if v > 0 and round(100 * v / total) > 0
    )
    return f"estimated time: {what} ({basis}) — {parts or 'nothing to run'}"


_LOAD = object()  # estimate_lines' default: read the calibration files


def estimate_lines(
    suite: Suite,
    cells: list[Cell],
    device: str | None,
    calibration: Calibration | None | object = _LOAD,
    cache_dir: str | None = None,
) -> list[str]:
    """The lines ``run --dry-run`` prints: the estimate on the device the run would use (both when 'auto').

    ``calibration``: the measured GPU throughputs; by default ``load_calibration()``; None: the assumed ones.
    What the cache under ``cache_dir`` (default: ``benchmark.store.cache.cache_root``) holds is not priced."""
    cal = load_calibration() if calibration is _LOAD else calibration
    assert cal is None or isinstance(cal, Calibration)
    choice = device or suite.device
    kinds = {"cuda": [True], "cpu": [False]}.get(choice, [True, False])
    backbones = list(dict.fromkeys(c.backbone.name for c in cells))
    lines = []
    for gpu in kinds:
        est = estimate(suite, cells, gpu, cal if gpu else None, cache=Cache(cache_dir))
        lines.append(_line(est, gpu, backbones, cal if gpu else None))
    lines.append(
        f"counted: {est.cells} cells, {est.backbones} distinct backbones trained once each (cached), "
        f"{est.feature_sets} feature sets, {est.attacks} distinct attacks (cached: a filter reuses its cell's "
        "attack); what the cache holds is free; training at max_epochs (early stopping makes it an upper bound); "
        "heads are LinearSVC fits on the CPU (torch_svm refits at their measured CPU cost)"
    )
    return lines
