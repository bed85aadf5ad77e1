"""The clean baseline: no poisoning."""

from __future__ import annotations

import torch

from adapters.attacks.base import (
    Attack,
    AttackContext,
    PoisonResult,
    PoisonTrial,
)
from benchmark.core.registry import Params, register


class NoAttackParams(Params):
    pass


@register
class NoAttack(Attack):
    name = "none"
    description = "No poisoning: the clean baseline every attack is compared with."
    Params = NoAttackParams

    def max_poisons(self, n_train: int) -> int:
        return 0

    def forward(self, ctx: AttackContext) -> PoisonResult:
        empty = torch.empty(0, dtype=torch.long)
        return PoisonResult(trials=[PoisonTrial(indices=empty, y=empty, x=ctx.x_train[:0])])
