"""Label flip (LF): a fraction of training labels replaced by random labels; images untouched."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from adapters.attacks.base import (
    Attack,
    AttackContext,
    PoisonResult,
    PoisonTrial,
)
from benchmark.core.registry import Params, register


class LabelFlipParams(Params):
    # paper text: "2% of label is random"; the code flips with probability 1/51 (~1.96%)
    rate: float = Field(0.02, ge=0.0, le=1.0, description="fraction of training labels replaced")
    # "random": a uniformly random existing label (may equal the true one, as in the paper's code);
    # "different": always a different existing label
    mode: Literal["random", "different"] = "random"
    # "fixed": exactly round(rate * N) rows; "bernoulli": each row with probability rate (the paper's code)
    selection: Literal["fixed", "bernoulli"] = "fixed"


@register
class LabelFlip(Attack):
    name = "label_flip"
    description = "Replace a fraction of training labels by random labels drawn from the existing classes."
    Params = LabelFlipParams

    def max_poisons(self, n_train: int) -> int | None:
        if self.params.selection == "fixed":
            return int(round(self.params.rate * n_train))
        return n_train

    def forward(self, ctx: AttackContext) -> PoisonResult:
        g = ctx.generator()
        n = len(ctx.y_train)
        if self.params.selection == "fixed":
            idx = torch.randperm(n, generator=g)[: int(round(self.params.rate * n))]
        else:
            idx = torch.nonzero(torch.rand(n, generator=g) < self.params.rate).flatten()
        idx = idx.sort().values
        classes = ctx.y_train.unique()  # only existing classes: the code's randint(0, 10) made an 11th
        old = ctx.y_train[idx]
        if self.params.mode == "random":
            new = classes[torch.randint(len(classes), (len(idx),), generator=g)]
        else:
            pos = torch.searchsorted(classes, old)
            shift = torch.randint(1, len(classes), (len(idx),), generator=g)
            new = classes[(pos + shift) % len(classes)]
        trial = PoisonTrial(indices=idx, y=new, x=ctx.x_train[idx].clone())
        return PoisonResult(trials=[trial], info={"labels_changed": float((new != old).sum())})
