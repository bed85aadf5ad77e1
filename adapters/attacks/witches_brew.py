"""Witches' Brew (Geiping et al. 2021): gradient matching against the linear head's training loss on frozen
features, batched over targets.

For each target, its ``num_poisons`` nearest base-class training images (label kept) are perturbed in the L-inf
ball so that the gradient of the head's training loss on the poisons, with respect to the head's parameters (W, b),
points along the gradient of the adversarial loss on the target (labelled ``base_class``): minimise 1 - cos.
Signed Adam with restarts, the best restart per target kept. Ours rather than ART's ``GradientMatchingAttack``:
README, "Attacks". Loss surrogates and defaults: docs/metrics.md.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from adapters.attacks.base import AttackContext, AttackCost, PoisonResult
from adapters.attacks.targeted import (
    BatchedTargetedParams,
    TargetedAttack,
    target_chunks,
)
from adapters.heads.linear import LinearHead
from benchmark.core.linf import adam_linf
from benchmark.core.progress import progress
from benchmark.core.registry import register

HeadLoss = Literal["squared_hinge", "cross_entropy"]
LR_MILESTONES = (0.375, 0.625, 0.875)  # Geiping et al.'s code: learning rate x 0.1 at these fractions of the steps


class WitchesBrewParams(BatchedTargetedParams):
    num_poisons: int = Field(
        25, ge=1, description="poisons per target (Geiping et al.: 1% of the training set; 1% of 2,500 images)"
    )
    eps: float = Field(16 / 255, ge=0.0, le=1.0, description="L-inf radius (Geiping et al.: 16/255)")
    steps: int = Field(250, ge=0, description="signed-Adam steps per restart (Geiping et al.: 250)")
    restarts: int = Field(8, ge=1, description="random restarts, the best kept per target (Geiping et al.: 8)")
    step_size: float | None = Field(
        None, gt=0.0, description="signed-Adam learning rate; None: 0.1 * eps (Geiping et al.: tau 0.1)"
    )
    # cross_entropy (Geiping et al.'s loss) by default: LinearSVC's squared hinge gives poisons outside the margin
    # no gradient, and the cosine, blind to magnitude, is matched by the few inside it (measured: docs/metrics.md)
    loss: HeadLoss = Field(
        "cross_entropy", description="the head's training loss: cross_entropy on its scores, or squared_hinge"
    )


@register
class WitchesBrew(TargetedAttack):
    name = "witches_brew"
    description = (
        "Witches' Brew (Geiping et al.): clean-label poisons whose head-loss gradient matches the target's "
        "adversarial gradient (1 - cosine), signed Adam with restarts in an L-inf ball, batched over targets."
    )
    Params = WitchesBrewParams

    @property
    def resolved_step_size(self) -> float:
        return self.params.step_size if self.params.step_size is not None else 0.1 * self.params.eps

    def cost(self, n_train: int, n_per_class: int) -> AttackCost:
        p = self.params
        # every restart: its steps with a backward pass, and one forward pass to score it
        return AttackCost(passes=p.num_targets * p.num_poisons * p.restarts * (p.steps + 1), refits=p.num_targets)

    def forward(self, ctx: AttackContext) -> PoisonResult:
        p = self.params
        chosen = self.nearest_bases(ctx)
        if chosen is None:
            return self.no_trials()
        targets, target_feats, bases = chosen
        label = ctx.head.index_of(torch.tensor([p.base_class]))  # the head's row of base_class
        target_grad = head_loss_gradient(ctx.head, target_feats[:, None], int(label), p.loss)
        x0 = ctx.x_train[bases].float()  # (T, k, C, H, W)
        best_x = x0.clone()
        best = torch.full((len(targets),), float("inf"))
        initial = self.objective(ctx, x0, target_grad, int(label))
        chunks = target_chunks(len(targets), p.batch_size, bases.shape[1])
        for r in progress(range(p.restarts), desc=self.name, total=p.restarts):
            # the start of restart r is drawn for every target at once, so chunking cannot change it
            g = ctx.generator(offset=r)
            noise = (torch.randn(x0.shape, generator=g) * p.eps).clamp(-p.eps, p.eps)
            for sl in chunks:
                x = self.optimise(ctx, x0[sl], x0[sl] + noise[sl], target_grad[sl], int(label))
                score = self.objective(ctx, x, target_grad[sl], int(label))
                better = score < best[sl]
                best[sl] = torch.where(better, score, best[sl])
                best_x[sl][better] = x[better]
        trials = [self.trial(bases[t], best_x[t], int(targets[t])) for t in range(len(targets))]
        info = {
            "num_targets": float(len(targets)),
            "mean_gradient_alignment_loss": float(best.mean()),
            "mean_initial_gradient_alignment_loss": float(initial.mean()),
        }
        return PoisonResult(trials=trials, targeted=True, info=info)

    def optimise(
        self, ctx: AttackContext, x0: torch.Tensor, start: torch.Tensor, target_grad: torch.Tensor, label: int
    ) -> torch.Tensor:
        """One restart for T targets: poisons (T, k, C, H, W) on the CPU, from ``start``, within the ball of ``x0``."""
        p = self.params
        n_targets, k = x0.shape[:2]
        base = x0.flatten(0, 1).to(ctx.device, torch.float32)
        grad_t = target_grad.to(ctx.device)
        milestones = [round(p.steps * f) for f in LR_MILESTONES]

        def loss_fn(x: torch.Tensor) -> torch.Tensor:
            f = ctx.features(x, grad=True).float().reshape(n_targets, k, -1)
            return alignment_loss(ctx.head, f, label, p.loss, grad_t)

        x = adam_linf(
            loss_fn, start.flatten(0, 1).to(ctx.device), base, p.eps, p.steps, self.resolved_step_size,
            signed=True, milestones=milestones,
        )  # fmt: skip
        return x.reshape(x0.shape).cpu()

    def objective(self, ctx: AttackContext, x: torch.Tensor, target_grad: torch.Tensor, label: int) -> torch.Tensor:
        """1 - cos per target of poisons ``x`` (T, k, C, H, W); (T,) on the CPU."""
        f = ctx.features(x.flatten(0, 1)).float().to(ctx.device).reshape(*x.shape[:2], -1)
        return alignment_loss(ctx.head, f, label, self.params.loss, target_grad.to(ctx.device)).cpu()


def head_loss_gradient(head: LinearHead, f: torch.Tensor, label: int, loss: HeadLoss) -> torch.Tensor:
    """Gradient of the summed training loss of samples ``f`` (T, n, D), all labelled with head row ``label``, with
    respect to the head's parameters [W | b], for each of the T groups: (T, K * (D + 1)). In closed form (the loss
    is linear in the parameters through the scores), so it stays differentiable in ``f`` without double backward.

    squared_hinge: LinearSVC's one-vs-rest ``max(0, 1 - s * score)^2`` per row (C and the regulariser dropped: the
    cosine ignores scale, and the regulariser's gradient is not the poisons'); cross_entropy: softmax over rows."""
    scores = head.scores(f)  # (T, n, K)
    onehot = F.one_hot(torch.tensor(label), scores.shape[-1]).to(scores)
    if loss == "cross_entropy":
        residual = scores.softmax(dim=-1) - onehot
    else:
        sign = 2 * onehot - 1
        residual = -2 * (1 - sign * scores).clamp_min(0.0) * sign
    augmented = torch.cat([f, torch.ones_like(f[..., :1])], dim=-1)  # the bias's input
    return torch.einsum("tnk,tnd->tkd", residual, augmented).flatten(1)


def alignment_loss(
    head: LinearHead, f: torch.Tensor, label: int, loss: HeadLoss, target_grad: torch.Tensor
) -> torch.Tensor:
    """Geiping et al.'s objective, 1 - cos(poison gradient, target gradient), per target: (T,)."""
    return 1 - F.cosine_similarity(head_loss_gradient(head, f, label, loss), target_grad, dim=1)
