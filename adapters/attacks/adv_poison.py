"""Adversarial poisoning (AD, Chan-Hon-Tong 2018): untargeted, clean-label, each poisoned image in an L-inf ball.

Paper variant: each image maximises ``(w_t[y] - w_c[y])^T f(z)`` by sign-PGD, ``w_c`` the clean head and ``w_t`` a
proxy head fitted on labels moved by a fixed derangement of the classes (the cyclic shift ``c_i -> c_{i+1}``), so
each image is pushed from its class towards the previous one, rotating ``w_c`` towards ``w_t``; ``absolute: true``
maximises the literal ``|.|``, which pushes most images deeper into their own class (a weak attack). Code
variant: maximise the cross-entropy of a proxy head fitted on the clean test features. Both: no random start,
step 0.333 * eps; docs/metrics.md has the protocol.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from adapters.attacks.base import (
    Attack,
    AttackContext,
    AttackCost,
    PoisonResult,
    PoisonTrial,
)
from benchmark.core.linf import default_step_size, sign_pgd
from benchmark.core.progress import progress
from benchmark.core.registry import Params, register


class AdvPoisonParams(Params):
    variant: Literal["paper", "code"] = "paper"
    # paper: 3/255 on CIFAR; MNIST 7/255 (paper) or 10/255 (code): the suites set it
    eps: float = Field(3 / 255, ge=0.0, le=1.0, description="L-inf radius")
    steps: int = Field(40, ge=0)  # code: 40 iterations
    step_size: float | None = Field(None, gt=0.0, description="None: 0.333 * eps (code)")
    fraction: float = Field(1.0, ge=0.0, le=1.0, description="fraction of training images poisoned (code: all)")
    target_head: Literal["train_shifted", "test_shifted"] = Field(
        "train_shifted", description="paper variant: features the derangement-label target head is fitted on"
    )
    absolute: bool = Field(False, description="paper variant: maximise |.| (literal formula) instead of the signed form")
    batch_size: int = Field(256, ge=1, description="images optimised per forward/backward pass")


def shift_labels(y: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The fixed derangement: each label replaced by the next class of the sorted class list (cyclically)."""
    classes = classes.sort().values
    pos = torch.searchsorted(classes, y)
    return classes[(pos + 1) % len(classes)]


@register
class AdvPoison(Attack):
    name = "adv_poison"
    description = (
        "Adversarial poisoning: untargeted clean-label L-inf perturbation of training images (paper: rotate the "
        "head towards a target head; code: maximise a test-fitted proxy head's cross-entropy)."
    )
    Params = AdvPoisonParams

    @property
    def resolved_step_size(self) -> float:
        return self.params.step_size if self.params.step_size is not None else default_step_size(self.params.eps)

    def max_poisons(self, n_train: int) -> int:
        return int(round(self.params.fraction * n_train))

    def cost(self, n_train: int, n_per_class: int) -> AttackCost:
        # every poisoned image optimised; one head more than the poisoned refit (the target or proxy head)
        return AttackCost(passes=self.max_poisons(n_train) * self.params.steps, refits=2)

    def _rows(self, ctx: AttackContext) -> torch.Tensor:
        n = len(ctx.y_train)
        m = self.max_poisons(n)
        if m >= n:
            return torch.arange(n)
        return torch.randperm(n, generator=ctx.generator())[:m].sort().values

    def _objective(self, ctx: AttackContext):
        """Per-sample objective to maximise, as a function of (features, labels), plus a description of the heads."""
        p = self.params
        if p.variant == "code":
            proxy = ctx.fit_head(ctx.f_test, ctx.y_test)
            w, b = proxy.weight.to(ctx.device), proxy.bias.to(ctx.device)

            def code_obj(f: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
                return F.cross_entropy(f @ w.T + b, rows, reduction="none")

            return code_obj, proxy

        classes = ctx.y_train.unique()
        if p.target_head == "train_shifted":
            w_t = ctx.fit_head(ctx.f_train, shift_labels(ctx.y_train, classes))
        else:
            w_t = ctx.fit_head(ctx.f_test, shift_labels(ctx.y_test, classes))
        w_c = ctx.head
        # direction per class label: w_t[y] - w_c[y], indexed by the clean head's row order
        rows_t = w_t.index_of(w_c.classes)
        direction = (w_t.weight[rows_t] - w_c.weight).to(ctx.device, torch.float32)

        def paper_obj(f: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            proj = (f * direction[rows]).sum(dim=1)
            return proj.abs() if p.absolute else proj

        return paper_obj, w_c

    def forward(self, ctx: AttackContext) -> PoisonResult:
        p = self.params
        idx = self._rows(ctx)
        objective, head = self._objective(ctx)
        labels = ctx.y_train[idx]
        head_rows = head.index_of(labels)  # row of each image's true class in the head the objective uses
        out: list[torch.Tensor] = []
        obj0: list[torch.Tensor] = []
        obj1: list[torch.Tensor] = []
        correct: list[torch.Tensor] = []
        starts = range(0, len(idx), p.batch_size)
        for s in progress(starts, desc="adversarial poisoning", total=len(starts)):
            e = min(s + p.batch_size, len(idx))
            x0 = ctx.x_train[idx[s:e]].to(ctx.device, torch.float32)
            r = head_rows[s:e].to(ctx.device)

            def loss_fn(x: torch.Tensor, r: torch.Tensor = r) -> torch.Tensor:
                return objective(ctx.features(x, grad=True).float(), r)

            x = sign_pgd(loss_fn, x0, p.eps, p.steps, self.resolved_step_size, maximize=True)
            with torch.no_grad():
                f0, f1 = ctx.features(x0, grad=True).float(), ctx.features(x, grad=True).float()
                obj0.append(objective(f0, r).cpu())
                obj1.append(objective(f1, r).cpu())
                correct.append((head.predict(f1).cpu() == labels[s:e]).cpu())
            out.append(x.cpu())
        x_poison = torch.cat(out) if out else ctx.x_train[:0].clone()
        info = {"poisoned_rows": float(len(idx))}
        if obj0:
            info["mean_objective_clean"] = float(torch.cat(obj0).mean())
            info["mean_objective_poisoned"] = float(torch.cat(obj1).mean())
            # accuracy of the head the objective uses (clean head or proxy) on the poisoned images
            info["objective_head_accuracy_on_poisons"] = float(torch.cat(correct).float().mean())
        trial = PoisonTrial(indices=idx, y=labels.clone(), x=x_poison)
        return PoisonResult(trials=[trial], info=info)
