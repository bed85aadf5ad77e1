"""run_cell: the stages of one cell, in order, and nothing else.

data -> backbone + defense (cached) -> features (cached) -> task -> clean head -> attack + budget check ->
poisoned heads -> outcome metrics -> robust accuracy -> artifacts. A cell is a function of its configuration and
the cache; it returns a Record and never talks to MLflow. Each stage is a function whose inputs are its arguments
and whose outputs are its return values (metrics as a dict the caller merges into the record).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from adapters.attacks.base import (
    Attack,
    AttackContext,
    BudgetReport,
    PoisonResult,
    run_attack,
)
from adapters.backbones import extract_features, feature_extractor
from adapters.datasets import Dataset, load_data
from adapters.heads.base import fit_head
from adapters.heads.linear import HeadOnFeatures, LinearHead
from adapters.heads.refit import RowEdit, refit_heads
from benchmark.cell.artifacts import label_flip_artifacts, poison_artifacts
from benchmark.cell.attack_cache import attack_key, cached_attack
from benchmark.cell.backbone_stage import backbone_stage
from benchmark.cell.backdoor import backdoor_stage, has_trigger
from benchmark.cell.filter_stage import filtered_heads_stage
from benchmark.cell.keys import backbone_key, feature_key
from benchmark.cell.per_example_artifacts import outcome_artifacts
from benchmark.cell.training import robust_accuracy
from benchmark.core.registry import REGISTRY
from benchmark.core.stats import accuracy, wilson_interval
from benchmark.store.cache import Cache
from benchmark.suite import Cell, sweep_metric

log = logging.getLogger(__name__)

DEFAULT_ROBUST_EPS = 3 / 255  # the paper's adversarial-training eps

Metrics = dict[str, float]
HeadFitter = Callable[[torch.Tensor, torch.Tensor], LinearHead]


@dataclass
class RunOptions:
    device: str = "cpu"
    cache_dir: str | None = None
    data_root: str | None = None
    progress: bool = False


@dataclass
class Record:
    """What a cell produced; tracking turns it into an MLflow run.

    ``params`` are the cell's inputs (every resolved hyper-parameter); everything the cell computed is a metric, a
    result (a non-numeric outcome such as the budget check's verdict), a curve or an artifact, and tracking logs
    each of these dictionaries whole."""

    key: str
    title: str
    status: str = "FINISHED"  # or FAILED
    params: dict[str, Any] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Task:
    """The target data the attack and the heads work on: images, labels and frozen features of both splits."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    f_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    f_test: torch.Tensor

    def restricted(self, classes: list[int] | None) -> Task:
        """Only the rows whose label is in ``classes`` (all rows for None)."""
        if classes is None:
            return self
        keep_tr, keep_te = torch.isin(self.y_train, torch.tensor(classes)), torch.isin(self.y_test, torch.tensor(classes))
        return replace(
            self,
            x_train=self.x_train[keep_tr],
            y_train=self.y_train[keep_tr],
            f_train=self.f_train[keep_tr],
            x_test=self.x_test[keep_te],
            y_test=self.y_test[keep_te],
            f_test=self.f_test[keep_te],
        )


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
            rec.logs.append(f"error: cell {cell.title()} failed: {rec.error}")  # the runner prints it, once
    rec.seconds = time.perf_counter() - start
    rec.metrics["cell_seconds"] = rec.seconds
    return rec


def _run(cell: Cell, opts: RunOptions, rec: Record) -> None:
    """The stages in order; each returns what the next needs and the metrics it measured, which land in the record
    at once (a failed cell keeps those of the stages before the failure)."""
    device = torch.device(opts.device)
    torch.manual_seed(cell.seed)  # any randomness of a dataset; the backbone's initial weights are seeded again
    cache = Cache(opts.cache_dir)
    m = rec.metrics

    external = load_data(cell.external, seed=cell.seed, data_root=opts.data_root)
    target = load_data(cell.target, seed=cell.seed, data_root=opts.data_root)
    backbone, rec.curves, training = backbone_stage(cell, external, cache, device, opts.progress)
    m.update(training)
    extractor = feature_extractor(backbone).to(device)
    features, extraction = feature_stage(cell, target, extractor, cache, device)
    m.update(extraction)

    attack: Attack = REGISTRY.build("attack", cell.attack.name, cell.attack.params)
    task = task_stage(cell, target, features, attack)

    def fit(f: torch.Tensor, y: torch.Tensor) -> LinearHead:
        return fit_head(f, y, cell.head.name, cell.head.params, device=device)

    clean_head, clean = clean_head_stage(task, fit)
    m.update(clean)
    classes = attack.task_classes() or target.classes
    akey = attack_key(cell, feature_key(cell))
    result, attacked, budget_line = attack_stage(
        attack, task, extractor, clean_head, fit, device, cell.seed, classes, cache=cache, key=akey
    )
    m.update(attacked)
    rec.results["budget_check"] = "passed"
    heads, edits, refit = poisoned_heads_stage(cell, task, result, extractor, clean_head, fit, device)
    m.update(refit)
    outcome, outcome_files = outcome_stage(task, result, clean_head, m["clean_accuracy"], heads, edits)
    m.update(outcome)
    rec.artifacts.update(outcome_files)
    if has_trigger(result):  # backdoors: success on triggered victim-class test images (benchmark/cell/backdoor.py)
        triggered, triggered_files = backdoor_stage(
            result, clean_head, heads, task.x_test, task.y_test, task.f_test, extractor, device
        )
        m.update(triggered)
        rec.artifacts.update(triggered_files)
    rec.results["robust_eps_used"] = eps = _robust_eps(cell, attack)
    m.update(robust_stage(cell, task, extractor, clean_head, eps, device))

    rec.artifacts.update(poison_artifacts(task.x_train, result))
    rec.artifacts.update(label_flip_artifacts(task.y_train, result))
    rec.artifacts["budget_check.txt"] = (budget_line + "\n").encode()


def feature_stage(
    cell: Cell, target: Dataset, extractor: torch.nn.Module, cache: Cache, device: torch.device
) -> tuple[dict[str, torch.Tensor], Metrics]:
    """Frozen features of the target's train and test images, from the cache when it holds them."""
    fkey = feature_key(cell)
    feats = cache.load("features", fkey)
    if feats is not None:
        log.info("cache hit: features %s reused", fkey)
        return feats, {}
    t0 = time.perf_counter()
    feats = {
        "train": extract_features(extractor, target.train.x, device),
        "test": extract_features(extractor, target.test.x, device),
    }
    cache.save("features", fkey, feats, meta={"backbone": backbone_key(cell), "target": cell.target.name})
    return feats, {"feature_seconds": time.perf_counter() - t0}


def task_stage(cell: Cell, target: Dataset, features: dict[str, torch.Tensor], attack: Attack) -> Task:
    """The target data restricted to the classes the attack's task needs (all of them for most attacks)."""
    classes = attack.task_classes()
    missing = sorted(set(classes or []) - set(target.classes))
    if missing:
        raise ValueError(f"attack '{cell.attack.label}' needs classes {missing} absent from the target data")
    task = Task(target.train.x, target.train.y, features["train"], target.test.x, target.test.y, features["test"])
    return task.restricted(classes)


def clean_head_stage(task: Task, fit: HeadFitter) -> tuple[LinearHead, Metrics]:
    t0 = time.perf_counter()
    head = fit(task.f_train, task.y_train)
    seconds = time.perf_counter() - t0
    return head, {"head_seconds": seconds, "clean_accuracy": accuracy(head.predict(task.f_test), task.y_test)}


def attack_stage(
    attack: Attack,
    task: Task,
    extractor: torch.nn.Module,
    clean_head: LinearHead,
    fit: HeadFitter,
    device: torch.device,
    seed: int,
    classes: list[int],
    cache: Cache | None = None,
    key: str | None = None,
) -> tuple[PoisonResult, Metrics, str]:
    """The attack's poisons, made on copies of the task (it cannot write through to them) and checked against its
    budget and the task's ``classes`` on the cell's own tensors before anything uses them (a violation raises).
    With a ``cache`` and the attack's ``key`` (``attack_cache.attack_key``), made once and read by every cell with
    that key."""
    ctx = AttackContext(
        extractor=extractor,
        x_train=task.x_train,
        y_train=task.y_train,
        x_test=task.x_test,
        y_test=task.y_test,
        f_train=task.f_train,
        f_test=task.f_test,
        head=clean_head,
        fit_head=fit,
        device=device,
        seed=seed,
    )
    # 5. the attack on copies, and the budget check against the cell's own tensors, before any poison is used
    def make() -> tuple[PoisonResult, BudgetReport]:
        return run_attack(attack, ctx, classes=classes)

    if cache is None or key is None:
        t0 = time.perf_counter()
        (result, report), cached = make(), False
        seconds = time.perf_counter() - t0
    else:
        (result, report, seconds), cached = cached_attack(cache, key, make)
        if cached:
            log.info("cache hit: attack %s (%s) reused, not run again", key, attack.name)
    metrics = {
        "attack_cached": float(cached),
        "attack_seconds": seconds,  # what making it took, once
        "perturbation_linf_max": report.linf,
        "perturbation_linf_mean": report.mean_linf,
        "poisons_per_trial": float(report.changed),
        "num_trials": float(len(result.trials)),
        **{f"attack_{k}": float(v) for k, v in result.info.items()},
    }
    return result, metrics, report.line()


def poisoned_heads_stage(
    cell: Cell,
    task: Task,
    result: PoisonResult,
    extractor: torch.nn.Module,
    clean_head: LinearHead,
    fit: HeadFitter,
    device: torch.device,
) -> tuple[list[LinearHead], list[RowEdit], Metrics]:
    """One head per trial on the clean set with that trial's rows replaced: all refitted together from the clean
    head, or, when the suite names a filter, each fitted on the rows the filter keeps of its training set."""
    t0 = time.perf_counter()
    edits = poison_edits(task, result, extractor, device)
    if cell.filtered:
        heads, metrics = filtered_heads_stage(cell.filter, task.f_train, task.y_train, edits, fit, cell.seed)
        return heads, edits, metrics
    heads = refit_heads(
        task.f_train, task.y_train, edits, cell.head.name, cell.head.params, device=device, init=clean_head
    )
    return heads, edits, {"refit_seconds": time.perf_counter() - t0}


def poison_edits(
    task: Task, result: PoisonResult, extractor: torch.nn.Module, device: torch.device
) -> list[RowEdit]:
    """Each trial as the rows of the clean training features it replaces, with their poisoned features."""
    sizes = [len(trial.indices) for trial in result.trials]
    changed = [t for t, n in zip(result.trials, sizes, strict=True) if n]
    if not changed:
        new_rows = task.f_train[:0]
    elif result.space == "feature":
        new_rows = torch.cat([t.features for t in changed])
    else:  # every trial's poisons in one pass through the extractor
        new_rows = extract_features(extractor, torch.cat([t.x for t in changed]), device)
    return [
        RowEdit(trial.indices, rows.to(task.f_train.dtype), trial.y)
        for trial, rows in zip(result.trials, new_rows.split(sizes), strict=True)
    ]


def outcome_stage(
    task: Task,
    result: PoisonResult,
    clean_head: LinearHead,
    clean: float,
    heads: list[LinearHead],
    edits: list[RowEdit],
) -> tuple[Metrics, dict[str, bytes]]:
    """Poisoned accuracy (mean over trials), for targeted attacks the success rate with its interval, and the
    per-target and per-test-image outcomes the report pairs across cells (artifacts); ``clean``: the clean head's
    accuracy."""
    poisoned = float(np.mean([accuracy(h.predict(task.f_test), task.y_test) for h in heads]))
    metrics = {"poisoned_accuracy": poisoned, "accuracy_drop": clean - poisoned}
    artifacts, successes = outcome_artifacts(
        result, clean_head, heads, edits, task.f_train, task.f_test, task.y_test
    )
    if result.targeted:
        wins = sum(successes)
        n = len(result.trials)
        lo, hi = wilson_interval(wins, n)
        metrics["attack_success_rate"] = wins / n if n else float("nan")
        metrics["attack_success_ci_low"], metrics["attack_success_ci_high"] = lo, hi
        metrics["attack_successes"] = float(wins)
    return metrics, artifacts


def _robust_eps(cell: Cell, attack: Attack) -> float:
    """The suite's ``robust_eps``, else the attack's eps, else the paper's adversarial-training eps."""
    if cell.evaluation.robust_eps is not None:
        return cell.evaluation.robust_eps
    return attack.budget_eps if attack.budget_eps > 0 else DEFAULT_ROBUST_EPS


def robust_stage(
    cell: Cell, task: Task, extractor: torch.nn.Module, clean_head: LinearHead, eps: float, device: torch.device
) -> Metrics:
    """Robust accuracy of extractor + clean head: what adversarial training bought the features."""
    n = min(cell.evaluation.robust_samples, len(task.y_test))
    model = HeadOnFeatures(extractor, clean_head).to(device).eval()
    labels = clean_head.index_of(task.y_test[:n])
    evals = {"robust_accuracy": eps}
    if cell.attack.name == "none":  # the eps curve belongs to the features and the clean head: measured once
        swept = cell.evaluation.sweep.get("robust_eps", [])
        evals.update({sweep_metric("robust_accuracy", "robust_eps", v): v for v in swept})
    steps = cell.evaluation.robust_steps
    return {
        name: robust_accuracy(model, task.x_test[:n], labels, eps=e, steps=steps, device=device)
        for name, e in evals.items()
    }


