"""What targeted clean-label attacks share: the binary task, the choice of targets and bases, feature distances,
and one ``PoisonTrial`` per target whose poisons keep the base class's label."""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field

from adapters.attacks.base import Attack, AttackContext, PoisonResult, PoisonTrial
from benchmark.core.errors import ParamError
from benchmark.core.registry import Params

log = logging.getLogger(__name__)

Distance = Literal["l1", "l2"]


class TargetedParams(Params):
    # the paper's pair: airplane (0) is the target class, car (1) the base class
    target_class: int = Field(0, ge=0)
    base_class: int = Field(1, ge=0)
    binary: bool = True  # restrict the task to [target_class, base_class] (paper and code)
    num_targets: int = Field(100, ge=1)  # paper: 100 trials
    num_poisons: int = Field(1, ge=1, description="poisons per target (paper: one)")


class BatchedTargetedParams(TargetedParams):
    batch_size: int = Field(
        256, ge=1, description="poisons per forward/backward pass, whole targets (memory only: poisons do not change)"
    )


class TargetedAttack(Attack):
    """Base of the targeted clean-label attacks: success means the target is predicted as ``base_class``."""

    Params = TargetedParams
    targeted = True

    def _check_params(self) -> None:
        if self.params.target_class == self.params.base_class:
            raise ParamError(f"attack '{self.name}': target_class and base_class must differ")

    def max_poisons(self, n_train: int) -> int:
        return self.params.num_poisons

    def task_classes(self) -> list[int] | None:
        return [self.params.target_class, self.params.base_class] if self.params.binary else None

    def rows_needed(self) -> dict[int, tuple[str, int]]:
        return {self.params.base_class: ("num_poisons", self.params.num_poisons)}  # each target's nearest bases

    def targets_and_pool(self, ctx: AttackContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets (test rows) and the pool of base-class training rows; empty when either is unusable."""
        targets = select_targets(ctx, self.params.target_class, self.params.num_targets)
        pool = torch.nonzero(ctx.y_train == self.params.base_class).flatten()
        return targets, pool

    def usable(self, targets: torch.Tensor, pool: torch.Tensor) -> bool:
        """Whether there is a target and a base image to attack with; warns when not, or when targets are short."""
        if targets.numel() == 0 or pool.numel() == 0:
            log.warning("%s: no usable target (%d) or base image (%d)", self.name, targets.numel(), pool.numel())
            return False
        if len(targets) < self.params.num_targets:
            log.warning(
                "%s: only %d of %d targets are correctly classified", self.name, len(targets), self.params.num_targets
            )
        return True

    def nearest_bases(self, ctx: AttackContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The targets, their clean features (T, D) and each target's ``num_poisons`` nearest base-class training
        rows (T, k) by L2 feature distance; None when there is nothing to attack."""
        targets, pool = self.targets_and_pool(ctx)
        if not self.usable(targets, pool):
            return None
        target_feats = ctx.f_test[targets].float()
        require_pool(self.name, pool, self.params.num_poisons, self.params.base_class)
        return targets, target_feats, nearest_rows(ctx, target_feats, pool, self.params.num_poisons, "l2")

    @staticmethod
    def no_trials() -> PoisonResult:
        """What a targeted attack returns when it has nothing to attack."""
        return PoisonResult(trials=[], targeted=True, info={"num_targets": 0.0})

    def trial(self, rows: torch.Tensor, x: torch.Tensor, target_index: int) -> PoisonTrial:
        """One target's poisoned training set: ``rows`` replaced by ``x``, labels kept at ``base_class``."""
        p = self.params
        return PoisonTrial(
            indices=rows.clone(),
            y=torch.full((len(rows),), p.base_class, dtype=torch.long),
            x=x,
            target_index=int(target_index),
            target_label=p.target_class,
            adversarial_label=p.base_class,
        )


def require_pool(attack: str, pool: torch.Tensor, num_poisons: int, base_class: int) -> None:
    """Refuse (the cell FAILS) rather than make fewer poisons than ``num_poisons`` says: the run's parameter must be
    the number used."""
    if pool.numel() < num_poisons:
        raise ParamError(
            f"attack '{attack}': num_poisons {num_poisons} exceeds the {pool.numel()} training rows of base class "
            f"{base_class}; lower num_poisons"
        )


def target_chunks(n_targets: int, batch_size: int, per_target: int) -> list[slice]:
    """Slices of whole targets with at most ``batch_size`` poisons each (one target when it alone has more)."""
    step = max(1, batch_size // per_target)
    return [slice(s, s + step) for s in range(0, n_targets, step)]


def feature_distance(a: torch.Tensor, b: torch.Tensor, distance: Distance) -> torch.Tensor:
    """Row-wise L1 or L2 distance between two (N, D) feature batches."""
    d = (a - b).flatten(1)
    return d.abs().sum(dim=1) if distance == "l1" else d.norm(dim=1)


def distance_objective(a: torch.Tensor, b: torch.Tensor, distance: Distance) -> torch.Tensor:
    """What PGD minimises: L1, or the squared L2 (same sign of gradient as L2, no sqrt at 0)."""
    d = (a - b).flatten(1)
    return d.abs().sum(dim=1) if distance == "l1" else d.pow(2).sum(dim=1)


def select_targets(ctx: AttackContext, target_class: int, num_targets: int) -> torch.Tensor:
    """The first ``num_targets`` test rows of ``target_class`` that the clean head classifies correctly."""
    rows = torch.nonzero(ctx.y_test == target_class).flatten()
    if rows.numel() == 0:
        return rows
    pred = ctx.head.predict(ctx.f_test[rows])
    return rows[pred.cpu() == target_class][:num_targets]


def nearest_rows(
    ctx: AttackContext, queries: torch.Tensor, pool: torch.Tensor, k: int, distance: Distance
) -> torch.Tensor:
    """For each query feature (Q, D), the ``k`` rows of ``pool`` (training row indices) whose clean training
    features are closest; (Q, k) int64, ties broken by row order (stable sort)."""
    if k > pool.numel():
        raise ParamError(f"{k} nearest rows asked of a pool of {pool.numel()}")
    pool_f = ctx.f_train[pool].to(ctx.device, torch.float32)
    out = []
    for i in range(0, len(queries), 64):
        q = queries[i : i + 64].to(ctx.device, torch.float32)
        d = torch.cdist(q, pool_f, p=1.0 if distance == "l1" else 2.0)
        order = torch.sort(d.cpu(), dim=1, stable=True).indices[:, :k]
        out.append(pool[order])
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)
