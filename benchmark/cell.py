"""run_cell: the stages of one cell, in order, and nothing else.

data -> backbone + defense (cached) -> features (cached) -> attack + budget check -> heads -> metrics.
A cell is a function of its configuration and the cache; it returns a Record and never talks to MLflow.
"""

from __future__ import annotations

import io
import logging
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from adapters.base import Attack, AttackContext, PoisonResult, run_attack
from benchmark.cache import Cache
from benchmark.data import load_data
from benchmark.hashing import stable_hash
from benchmark.heads import fit_head
from benchmark.linear import HeadOnFeatures, LinearHead
from benchmark.metrics import accuracy, wilson_interval
from benchmark.models import MODELS_VERSION, build_backbone, feature_extractor
from benchmark.refit import RowEdit, refit_heads
from benchmark.registry import REGISTRY
from benchmark.suite import Cell
from benchmark.training import evaluate_accuracy, robust_accuracy, train_backbone

log = logging.getLogger(__name__)

# Bump a version when that stage's behaviour changes, so stale cache entries are not reused.
TRAINING_VERSION = "1"
FEATURE_VERSION = "1"
DEFAULT_ROBUST_EPS = 3 / 255  # the paper's adversarial-training eps
MAX_NPZ_ROWS = 10_000  # poison rows kept in the .npz artifact; more is noted as truncated


@dataclass
class RunOptions:
    device: str = "cpu"
    cache_dir: str | None = None
    data_root: str | None = None
    progress: bool = False


@dataclass
class Record:
    """What a cell produced; tracking turns it into an MLflow run."""

    key: str
    title: str
    status: str = "FINISHED"  # or FAILED
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


def backbone_key(cell: Cell) -> str:
    return stable_hash(
        {
            "external": cell.external,
            "backbone": [cell.backbone.name, cell.backbone.params],
            "defense": [cell.defense.name, cell.defense.params],
            "seed": cell.seed,
            "version": TRAINING_VERSION,
            "models": MODELS_VERSION,  # an architecture change invalidates trained weights
        }
    )


def feature_key(cell: Cell) -> str:
    return stable_hash({"backbone": backbone_key(cell), "target": cell.target, "version": FEATURE_VERSION})


@contextmanager
def _captured_logs(lines: list[str]) -> Iterator[None]:
    handler = _ListHandler(lines)
    loggers = [logging.getLogger(n) for n in ("benchmark", "adapters")]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


def run_cell(cell: Cell, opts: RunOptions) -> Record:
    """Run one cell; a failure becomes a FAILED record carrying the error, never an exception."""
    rec = Record(key=cell.key, title=cell.title(), params=cell.flat_params())
    start = time.perf_counter()
    with _captured_logs(rec.logs):
        try:
            _run(cell, opts, rec)
        except Exception as err:  # the grid goes on; the record says why this cell failed
            rec.status = "FAILED"
            rec.error = f"{type(err).__name__}: {err}"
            rec.artifacts["traceback.txt"] = traceback.format_exc().encode()
            log.error("cell %s failed: %s", cell.title(), rec.error)
    rec.seconds = time.perf_counter() - start
    rec.metrics["cell_seconds"] = rec.seconds
    return rec


def _run(cell: Cell, opts: RunOptions, rec: Record) -> None:
    device = torch.device(opts.device)
    torch.manual_seed(cell.seed)
    cache = Cache(opts.cache_dir)
    m = rec.metrics

    # 1. data
    external = load_data(cell.external, seed=cell.seed, data_root=opts.data_root)
    target = load_data(cell.target, seed=cell.seed, data_root=opts.data_root)

    # 2. backbone + defense
    bkey = backbone_key(cell)
    backbone = build_backbone(cell.backbone.name, cell.backbone.params, num_classes=external.num_classes)
    stored = cache.load("backbone", bkey)
    if stored is not None:
        backbone.load_state_dict(stored["state_dict"])
        meta = stored["meta"]
        log.info("cache hit: backbone %s (%s, %s) reused, no training", bkey, cell.backbone.label, cell.defense.label)
        m["backbone_cached"] = 1.0
    else:
        t0 = time.perf_counter()
        result = train_backbone(
            backbone,
            external.train.x,
            external.train.y,
            cell.defense.name,
            cell.defense.params,
            device=device,
            seed=cell.seed,
            progress=opts.progress,
            classes=external.classes,
        )
        train_seconds = time.perf_counter() - t0
        ext_acc = evaluate_accuracy(backbone, external.test.x, external.test.y, device, classes=result.classes)
        meta = {
            "curves": result.curves,
            "epochs": result.epochs,
            "images_per_second": result.images_per_second,
            "external_accuracy": ext_acc,
            "train_seconds": train_seconds,
        }
        cache.save("backbone", bkey, {"state_dict": backbone.cpu().state_dict(), "meta": meta}, meta=_meta_of(cell))
        log.info("trained backbone %s in %.1f s (%d epochs); cached", bkey, train_seconds, result.epochs)
        m["backbone_cached"] = 0.0
    rec.curves = {k: list(v) for k, v in meta["curves"].items()}
    m["external_accuracy"] = float(meta["external_accuracy"])
    m["train_epochs"] = float(meta["epochs"])
    m["train_seconds"] = float(meta["train_seconds"])
    m["train_images_per_second"] = float(meta["images_per_second"])

    # 3. frozen features of the target data
    extractor = feature_extractor(backbone).to(device)
    fkey = feature_key(cell)
    feats = cache.load("features", fkey)
    if feats is None:
        t0 = time.perf_counter()
        feats = {
            "train": _extract(extractor, target.train.x, device),
            "test": _extract(extractor, target.test.x, device),
        }
        cache.save("features", fkey, feats, meta={"backbone": bkey, "target": cell.target.name})
        m["feature_seconds"] = time.perf_counter() - t0
    else:
        log.info("cache hit: features %s reused", fkey)
    x_tr, y_tr, f_tr = target.train.x, target.train.y, feats["train"]
    x_te, y_te, f_te = target.test.x, target.test.y, feats["test"]

    # 4. attack, on the task it asks for
    component = REGISTRY.get("attack", cell.attack.name)
    attack: Attack = component.factory(**cell.attack.params)
    classes = attack.task_classes()
    if classes is not None:
        missing = sorted(set(classes) - set(target.classes))
        if missing:
            raise ValueError(f"attack '{cell.attack.label}' needs classes {missing} absent from the target data")
        keep_tr, keep_te = torch.isin(y_tr, torch.tensor(classes)), torch.isin(y_te, torch.tensor(classes))
        x_tr, y_tr, f_tr = x_tr[keep_tr], y_tr[keep_tr], f_tr[keep_tr]
        x_te, y_te, f_te = x_te[keep_te], y_te[keep_te], f_te[keep_te]

    def fit(features: torch.Tensor, labels: torch.Tensor) -> LinearHead:
        return fit_head(features, labels, cell.head.name, cell.head.params, device=device)

    t0 = time.perf_counter()
    clean_head = fit(f_tr, y_tr)
    m["head_seconds"] = time.perf_counter() - t0
    m["clean_accuracy"] = accuracy(clean_head.predict(f_te), y_te)

    ctx = AttackContext(
        extractor=extractor,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        f_train=f_tr,
        f_test=f_te,
        head=clean_head,
        fit_head=fit,
        device=device,
        seed=cell.seed,
    )
    # 5. the attack on copies, and the budget check against the cell's own tensors, before any poison is used
    t0 = time.perf_counter()
    result, report = run_attack(attack, ctx, classes=classes if classes is not None else target.classes)
    m["attack_seconds"] = time.perf_counter() - t0
    rec.params["budget_check"] = "passed" if report.passed else "failed"
    m["perturbation_linf_max"] = report.linf
    m["perturbation_linf_mean"] = report.mean_linf
    m["poisons_per_trial"] = float(report.changed)
    m["num_trials"] = float(len(result.trials))
    for k, v in result.info.items():
        m[f"attack_{k}"] = float(v)

    # 6. heads on poisoned features, then metrics
    t0 = time.perf_counter()
    sizes = [len(trial.indices) for trial in result.trials]
    changed = [t for t, n in zip(result.trials, sizes, strict=True) if n]
    if not changed:
        new_rows = f_tr[:0]
    elif result.space == "feature":
        new_rows = torch.cat([t.features for t in changed])
    else:  # every trial's poisons in one pass through the extractor
        new_rows = _extract(extractor, torch.cat([t.x for t in changed]), device)
    edits = [
        RowEdit(trial.indices, rows.to(f_tr.dtype), trial.y)
        for trial, rows in zip(result.trials, new_rows.split(sizes), strict=True)
    ]
    # one base set and the replaced rows: the torch head solves all trials together from the clean head
    heads = refit_heads(f_tr, y_tr, edits, cell.head.name, cell.head.params, device=device, init=clean_head)
    m["refit_seconds"] = time.perf_counter() - t0
    accs = [accuracy(h.predict(f_te), y_te) for h in heads]
    m["poisoned_accuracy"] = float(np.mean(accs))
    m["accuracy_drop"] = m["clean_accuracy"] - m["poisoned_accuracy"]
    if result.targeted:
        wins = 0
        for head, trial in zip(heads, result.trials, strict=True):
            pred = int(head.predict(f_te[trial.target_index : trial.target_index + 1])[0])
            wins += int(pred == trial.adversarial_label)
        n = len(result.trials)
        lo, hi = wilson_interval(wins, n)
        m["attack_success_rate"] = wins / n if n else float("nan")
        m["attack_success_ci_low"], m["attack_success_ci_high"] = lo, hi
        m["attack_successes"] = float(wins)

    # robust accuracy of the clean head: what adversarial training bought the features
    eps = cell.evaluation.robust_eps
    if eps is None:
        eps = attack.budget_eps if attack.budget_eps > 0 else DEFAULT_ROBUST_EPS
    rec.params["robust_eps_used"] = eps
    n = min(cell.evaluation.robust_samples, len(y_te))
    model = HeadOnFeatures(extractor, clean_head).to(device).eval()
    m["robust_accuracy"] = robust_accuracy(
        model, x_te[:n], clean_head.index_of(y_te[:n]), eps=eps, steps=cell.evaluation.robust_steps, device=device
    )

    rec.artifacts.update(_poison_artifacts(x_tr, result))
    rec.artifacts["budget_check.txt"] = (report.line() + "\n").encode()


def _extract(extractor: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = 1024) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(extractor(x[i : i + batch].to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def _meta_of(cell: Cell) -> dict[str, Any]:
    return {
        "external": cell.external.name,
        "backbone": cell.backbone.name,
        "defense": cell.defense.name,
        "seed": cell.seed,
    }


def _poison_artifacts(x_clean: torch.Tensor, result: PoisonResult) -> dict[str, bytes]:
    """The poison set as .npz (indices, images or features, labels, trial ids) and a picture of a few poisons."""
    rows = [(t_id, tr) for t_id, tr in enumerate(result.trials) if len(tr.indices)]
    if not rows:
        return {}
    out: dict[str, bytes] = {}
    idx = torch.cat([tr.indices for _, tr in rows])
    trial_id = torch.cat([torch.full((len(tr.indices),), t_id) for t_id, tr in rows])
    labels = torch.cat([tr.y for _, tr in rows])
    payload: dict[str, np.ndarray] = {
        "indices": idx.numpy(),
        "labels": labels.numpy(),
        "trial": trial_id.numpy(),
        "targets": np.array([-1 if tr.target_index is None else tr.target_index for tr in result.trials]),
    }
    truncated = len(idx) > MAX_NPZ_ROWS
    sel = slice(0, MAX_NPZ_ROWS)
    if result.space == "image":
        payload["images"] = torch.cat([tr.x for _, tr in rows])[sel].float().numpy()
    else:
        payload["features"] = torch.cat([tr.features for _, tr in rows])[sel].float().numpy()
    payload["truncated"] = np.array(truncated)
    buf = io.BytesIO()
    np.savez_compressed(buf, **payload)
    out["poisons.npz"] = buf.getvalue()
    if result.space == "image":
        changed = [(tr.indices[i], tr.x[i]) for _, tr in rows for i in range(len(tr.indices))][:6]
        png = _poison_grid(x_clean, changed)
        if png:
            out["poison_examples.png"] = png
    return out


def _poison_grid(x_clean: torch.Tensor, changed: list[tuple[torch.Tensor, torch.Tensor]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(changed)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5), squeeze=False)
    for j, (i, poison) in enumerate(changed):
        orig = x_clean[int(i)].float()
        diff = (poison.float() - orig).abs()
        scale = float(diff.max()) or 1.0
        for r, (img, title) in enumerate(
            ((orig, "original"), (poison.float(), "poison"), (diff / scale, f"|diff| x{1 / scale:.0f}"))
        ):
            ax = axes[r][j]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 or r == 2:
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
