"""The attack interface: what an attack receives, what it returns, and the budget check every poison passes.

An attack is a small class in the style of torchattacks: the constructor holds (and validates) the
hyper-parameters, ``forward`` does the work. Parameters are a pydantic model, checked at construction as ART
does in ``_check_params``; ``_check_params`` is there for checks that span several parameters.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from adapters.backbones import extract_features
from adapters.heads.linear import LinearHead
from benchmark.core.errors import AttackError, BudgetError
from benchmark.core.registry import Configurable, Params

log = logging.getLogger(__name__)

PIXEL_TOLERANCE = 1e-6


@dataclass
class AttackContext:
    """Everything an attack may use. Tensors live on the CPU; ``device`` is where to compute.

    Images are float32 in [0, 1], NCHW; labels int64 in the dataset's label space. The extractor is frozen
    (eval mode, no parameter gradients) and maps images to feature vectors.
    """

    extractor: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    f_train: torch.Tensor  # clean training features
    f_test: torch.Tensor  # clean test features
    head: LinearHead  # clean head, fitted on (f_train, y_train)
    fit_head: Callable[[torch.Tensor, torch.Tensor], LinearHead]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    feature_batch_size: int = 512

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the cell's seed, so attacks are repeatable."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)

    def features(self, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Features of images ``x``; batched on ``device``; returned on ``x``'s device unless ``grad``."""
        if grad:
            return self.extractor(x)
        if len(x) == 0:
            return torch.empty(0, self.f_train.shape[1], device=x.device)
        return extract_features(self.extractor, x, self.device, self.feature_batch_size).to(x.device)


@dataclass
class Trigger:
    """A backdoor patch: ``pattern`` (C, H, W) in [0, 1] replaces the pixels where ``mask`` (H, W, bool) is set."""

    pattern: torch.Tensor
    mask: torch.Tensor

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) with the patch stamped on every image (a copy)."""
        mask = self.mask.to(x.device, torch.bool)
        return torch.where(mask, self.pattern.to(x.device, x.dtype), x)


@dataclass
class PoisonTrial:
    """One poisoned training set, described by the rows it replaces.

    Untargeted attacks return one trial; targeted attacks return one per target, each refitted and judged on its
    own. Image-space attacks fill ``x``; feature-space attacks (an upper bound on what an attacker who controls
    features could do) fill ``features`` instead.
    """

    indices: torch.Tensor  # (M,) int64 rows of the clean training set that are replaced
    y: torch.Tensor  # (M,) int64 their labels after poisoning
    x: torch.Tensor | None = None  # (M, C, H, W) their images after poisoning
    features: torch.Tensor | None = None  # (M, D) their feature vectors (feature-space attacks only)
    target_index: int | None = None  # targeted: row of the test set that is attacked
    target_label: int | None = None  # targeted: its true label
    adversarial_label: int | None = None  # targeted: the label the attacker wants it to get
    trigger: Trigger | None = None  # backdoor: the patch stamped on test images of target_label at test time


@dataclass
class PoisonResult:
    trials: list[PoisonTrial]
    targeted: bool = False
    space: str = "image"  # "image" or "feature"
    info: dict[str, float] = field(default_factory=dict)  # extra metrics the attack wants logged


@dataclass(frozen=True)
class AttackCost:
    """What an attack costs, for the ``run --dry-run`` estimate: forward+backward passes of one image through the
    extractor, and head fits besides the clean head (one per trial, plus any proxy heads)."""

    passes: float = 0.0
    refits: int = 1


@dataclass
class BudgetReport:
    """What the budget check measured on one trial (or the worst over trials)."""

    linf: float
    mean_linf: float
    pixel_min: float
    pixel_max: float
    changed: int
    eps: float
    max_changed: int | None
    passed: bool
    trigger_area: int = 0  # the largest backdoor trigger (pixels), 0 without one
    max_trigger_area: int = 0

    def line(self) -> str:
        state = "passed" if self.passed else "FAILED"
        cap = "" if self.max_changed is None else f" <= {self.max_changed}"
        if self.changed == 0:
            return f"budget check {state}: no training row changed"
        if self.eps == 0 and self.linf == 0:  # a label-only attack: there is no pixel budget to report
            return f"budget check {state}: images unchanged (labels only), changed samples {self.changed}{cap}"
        trigger = f", trigger area {self.trigger_area} <= {self.max_trigger_area} pixels" if self.trigger_area else ""
        return (
            f"budget check {state}: max L-inf {self.linf:.6f} <= eps {self.eps:.6f}, pixels in "
            f"[{self.pixel_min:.4f}, {self.pixel_max:.4f}] within [0, 1], changed samples {self.changed}{cap}{trigger}"
        )


class Attack(Configurable):
    """Base class of every poisoning attack.

    Subclasses set ``name``, ``description``, ``Params`` (a ``benchmark.core.registry.Params`` model) and implement
    ``forward``. ``budget_eps`` is the L-inf radius the poisons are checked against (0 for label-only attacks);
    ``max_poisons`` the number of training rows an attack may change (None: unbounded).
    """

    kind = "attack"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = Params
    targeted: ClassVar[bool] = False
    space: ClassVar[str] = "image"

    @property
    def budget_eps(self) -> float:
        return float(getattr(self.params, "eps", 0.0))

    def max_poisons(self, n_train: int) -> int | None:
        return None

    def max_trigger_area(self, image_shape: tuple[int, ...]) -> int:
        """Pixels a backdoor trigger may cover on images of ``image_shape`` (C, H, W); 0: the attack has none."""
        return 0

    def task_classes(self) -> list[int] | None:
        """Labels the attack's task is restricted to (e.g. a binary task), or None for all classes."""
        return None

    def rows_needed(self) -> dict[int, tuple[str, int]]:
        """Training rows the attack needs per class, as {class: (the parameter that sets it, rows)}: checked against
        the data before the grid runs (``benchmark/grid/feasibility.py``), so a count is never silently lowered."""
        return {}

    def min_image_side(self) -> tuple[str, int]:
        """(the parameter, the smallest image side it needs): a backdoor's trigger must fit in the image."""
        return "", 1

    def cost(self, n_train: int, n_per_class: int) -> AttackCost:
        """Its cost on a training set of ``n_train`` images (``n_per_class`` per class); none by default."""
        return AttackCost()

    def forward(self, ctx: AttackContext) -> PoisonResult:
        raise NotImplementedError

    def __call__(self, ctx: AttackContext) -> PoisonResult:
        return self.forward(ctx)


def check_budget(
    x_clean: torch.Tensor,
    result: PoisonResult,
    eps: float,
    max_changed: int | None = None,
    n_train: int | None = None,
    classes: list[int] | None = None,
    n_test: int | None = None,
    max_trigger_area: int = 0,
) -> BudgetReport:
    """Check every trial against the budget; raise BudgetError on a violation, else return the report.

    Image-space: L-inf distance to the original rows <= eps + 1e-6, same image shape, pixels in [0, 1]. Every
    space: integer indices, valid and unique, count of changed rows <= ``max_changed``, labels among ``classes``
    (the task's), a target row inside the test set (``n_test``). A backdoor trial's trigger: the image's shape,
    pattern in [0, 1], at most ``max_trigger_area`` pixels; its poisons may leave the eps-ball only on pixels equal
    to the trigger's pattern inside its mask (the stamp). The report is logged either way.
    """
    worst_linf, sum_linf, n_rows = 0.0, 0.0, 0
    pmin, pmax, changed, trigger_area = 0.0, 1.0, 0, 0
    n_train = len(x_clean) if n_train is None else n_train
    problems: list[str] = []
    first = True
    if result.space not in ("image", "feature"):
        raise BudgetError(f"poison budget violated: unknown space {result.space!r} (image or feature)")
    for t, trial in enumerate(result.trials):
        shape = _shape_problem(trial, classes, n_test)
        if shape:
            problems.append(f"trial {t}: {shape}")
            continue
        idx = trial.indices
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_train):
            problems.append(f"trial {t}: indices outside the training set")
            continue
        if idx.unique().numel() != idx.numel():
            problems.append(f"trial {t}: repeated indices")
        if len(trial.y) != len(idx):
            problems.append(f"trial {t}: {len(trial.y)} labels for {len(idx)} indices")
        changed = max(changed, int(idx.numel()))
        if trial.trigger is not None:
            problem = _trigger_problem(trial.trigger, tuple(x_clean.shape[1:]), max_trigger_area, result.space)
            if problem:
                problems.append(f"trial {t}: {problem}")
                continue
            trigger_area = max(trigger_area, trial.trigger.area)
        if result.space == "image":
            if trial.x is None or trial.x.shape != (len(idx), *x_clean.shape[1:]):
                problems.append(f"trial {t}: image-space attack without one image per index, of the data's shape")
                continue
            if idx.numel() == 0:
                continue
            delta = (trial.x.float() - x_clean[idx].float()).abs()
            if trial.trigger is not None:  # the stamped trigger is not a perturbation
                delta = torch.where(_stamped(trial.x, trial.trigger), 0.0, delta)
            delta = delta.flatten(1).amax(dim=1)
            worst_linf = max(worst_linf, float(delta.max()))
            sum_linf += float(delta.sum())
            n_rows += int(delta.numel())
            lo, hi = float(trial.x.min()), float(trial.x.max())
            pmin, pmax = (lo, hi) if first else (min(pmin, lo), max(pmax, hi))
            first = False
            if not torch.isfinite(trial.x).all():
                problems.append(f"trial {t}: non-finite pixels")
    if result.space == "image":
        if worst_linf > eps + PIXEL_TOLERANCE:
            problems.append(f"L-inf {worst_linf:.6f} exceeds eps {eps:.6f}")
        if pmin < -PIXEL_TOLERANCE or pmax > 1 + PIXEL_TOLERANCE:
            problems.append(f"pixels in [{pmin:.4f}, {pmax:.4f}] leave [0, 1]")
    if max_changed is not None and changed > max_changed:
        problems.append(f"{changed} changed samples exceed the budget of {max_changed}")
    report = BudgetReport(
        linf=worst_linf,
        mean_linf=sum_linf / n_rows if n_rows else 0.0,
        pixel_min=pmin,
        pixel_max=pmax,
        changed=changed,
        eps=eps,
        max_changed=max_changed,
        passed=not problems,
        trigger_area=trigger_area,
        max_trigger_area=max_trigger_area,
    )
    if changed == 0:
        pass  # nothing was poisoned (the clean baseline): no budget line to print
    elif result.space == "feature":
        log.info("budget check (feature-space attack, no pixel budget): changed samples %d", changed)
    else:
        log.info(report.line())
    if problems:
        raise BudgetError("poison budget violated: " + "; ".join(problems))
    return report


def _shape_problem(trial: PoisonTrial, classes: list[int] | None, n_test: int | None) -> str:
    """What is wrong with a trial's types, labels or target, before any arithmetic on it ('' if nothing)."""
    if not isinstance(trial, PoisonTrial):
        return f"{type(trial).__name__} is not a PoisonTrial"
    for name in ("indices", "y"):
        value = getattr(trial, name)
        if not isinstance(value, torch.Tensor) or value.dim() != 1 or value.is_floating_point() or value.is_complex():
            return f"{name} is not a 1-d integer tensor"
    if classes is not None:
        allowed = set(classes)
        bad = sorted({int(v) for v in trial.y.unique()} - allowed)
        if bad:
            return f"labels {bad[:5]} are not classes of the task {sorted(allowed)}"
        if trial.adversarial_label is not None and int(trial.adversarial_label) not in allowed:
            return f"adversarial label {trial.adversarial_label} is not a class of the task"
    if trial.target_index is not None and n_test is not None and not 0 <= int(trial.target_index) < n_test:
        return f"target index {trial.target_index} is outside the test set"
    for name in ("x", "features"):
        value = getattr(trial, name)
        if value is not None and not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            return f"{name} is not a floating-point tensor"
    if trial.features is not None and not torch.isfinite(trial.features).all():
        return "non-finite features"
    return ""


def _trigger_problem(trigger: Trigger, image_shape: tuple[int, ...], max_area: int, space: str) -> str:
    """What is wrong with a backdoor trigger ('' if nothing): its type, shapes, pixel range and area."""
    if not isinstance(trigger, Trigger):
        return f"trigger is a {type(trigger).__name__}, not a Trigger"
    if space != "image":
        return "a trigger needs an image-space attack"
    pattern, mask = trigger.pattern, trigger.mask
    if not isinstance(pattern, torch.Tensor) or not pattern.is_floating_point() or tuple(pattern.shape) != image_shape:
        return f"trigger pattern is not a floating-point tensor of the images' shape {image_shape}"
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != image_shape[1:]:
        return f"trigger mask is not a boolean tensor of shape {image_shape[1:]}"
    if not torch.isfinite(pattern).all() or pattern.min() < -PIXEL_TOLERANCE or pattern.max() > 1 + PIXEL_TOLERANCE:
        return "trigger pattern leaves [0, 1]"
    if trigger.area == 0 or trigger.area > max_area:
        return f"trigger area {trigger.area} pixels is not within the attack's 1..{max_area}"
    return ""


def _stamped(x: torch.Tensor, trigger: Trigger) -> torch.Tensor:
    """(M, C, H, W) bool: pixels of ``x`` inside the trigger's mask that equal its pattern."""
    same = (x.float() - trigger.pattern.float()).abs() <= PIXEL_TOLERANCE
    return same & trigger.mask


def run_attack(attack: Attack, ctx: AttackContext, classes: list[int] | None = None) -> tuple[PoisonResult, BudgetReport]:
    """Run ``attack`` on copies of ``ctx`` and check what it returns against ``ctx``, which it cannot reach.

    The attack gets clones of every tensor and of the extractor and head, so an in-place edit cannot change what
    the poisons are compared with, nor the features, head or model the cell goes on to use. Its budget (eps,
    max poisons, trigger area) is read before it runs. Anything it raises fails the cell, ``SystemExit`` and a
    ``KeyboardInterrupt`` of its own included; only a real Ctrl-C or SIGTERM (see ``benchmark.core.signals``) passes.
    """
    from benchmark.core import signals

    eps, cap = attack.budget_eps, attack.max_poisons(len(ctx.y_train))
    area = attack.max_trigger_area(tuple(ctx.x_train.shape[1:]))
    copies = replace(
        ctx,
        extractor=copy.deepcopy(ctx.extractor),
        head=copy.deepcopy(ctx.head),
        **{name: getattr(ctx, name).clone() for name in ("x_train", "y_train", "x_test", "y_test", "f_train", "f_test")},
    )
    before = signals.received()
    try:
        result = attack(copies)
    except Exception:
        raise
    except BaseException as err:  # sys.exit, a KeyboardInterrupt it raised itself, GeneratorExit...
        if isinstance(err, KeyboardInterrupt) and signals.received() > before:
            raise
        raise AttackError(f"attack '{attack.name}' raised {type(err).__name__}: {err}") from None
    if not isinstance(result, PoisonResult) or not isinstance(result.trials, list):
        raise AttackError(f"attack '{attack.name}' returned {type(result).__name__}, not a PoisonResult")
    report = check_budget(
        ctx.x_train, result, eps=eps, max_changed=cap, classes=classes, n_test=len(ctx.y_test), max_trigger_area=area
    )
    return result, report


def apply_trial(x: torch.Tensor | None, y: torch.Tensor, trial: PoisonTrial) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The full poisoned training set of one trial (copies; inputs are never mutated)."""
    y2 = y.clone()
    y2[trial.indices] = trial.y
    if x is None or trial.x is None:
        return x, y2
    x2 = x.clone()
    x2[trial.indices] = trial.x.to(x2.dtype)
    return x2, y2
