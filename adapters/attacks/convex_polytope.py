"""Convex Polytope (Zhu et al. 2019): targeted clean-label poisons whose features surround the target's, in the
frozen-feature protocol, batched over targets.

For each target, its ``num_poisons`` nearest base-class training images (clean features, L2) are perturbed in the
L-inf ball so that the target's features come close to a convex combination of the poisons' features. Ours: ART
has no Convex Polytope. ``coefficients: uniform`` fixes the combination at the mean: Bullseye Polytope's objective
(Aghakhani et al. 2021) on the same optimiser. Protocol and published defaults: docs/metrics.md.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from adapters.attacks.base import AttackContext, AttackCost, PoisonResult
from adapters.attacks.targeted import (
    BatchedTargetedParams,
    TargetedAttack,
    target_chunks,
)
from benchmark.core.errors import ParamError
from benchmark.core.linf import adam_linf
from benchmark.core.progress import progress
from benchmark.core.registry import register


class ConvexPolytopeParams(BatchedTargetedParams):
    num_poisons: int = Field(5, ge=1, description="poisons per target, the polytope's vertices (Zhu et al.: 5)")
    eps: float = Field(0.1, ge=0.0, le=1.0, description="L-inf radius (Zhu et al.: 0.1)")
    steps: int = Field(4000, ge=0, description="Adam steps on the poisons (Zhu et al.: 4000)")
    lr: float = Field(0.04, gt=0.0, description="Adam learning rate on the poisons (Zhu et al.: 0.04)")
    coefficients: Literal["learned", "uniform"] = Field(
        "learned", description="learned: Convex Polytope; uniform: c = 1/k, Bullseye Polytope's objective"
    )
    # ours (the paper alternates c and poison updates): features share a large common component, so the problem in c
    # is ill-conditioned and one 1/L step barely moves c (docs/metrics.md); the steps cost no extractor pass
    coefficient_steps: int = Field(50, ge=1, description="projected-gradient steps on c before each poison step")


@register
class ConvexPolytope(TargetedAttack):
    name = "convex_polytope"
    description = (
        "Convex Polytope (Zhu et al.): poisons whose features' convex combination approaches the target's, Adam "
        "within an L-inf ball, coefficients on the simplex, batched over targets (uniform coefficients: Bullseye)."
    )
    Params = ConvexPolytopeParams

    def _check_params(self) -> None:
        super()._check_params()
        if self.params.coefficients == "uniform" and "coefficient_steps" in self.params.model_fields_set:
            raise ParamError(
                f"attack '{self.name}': coefficient_steps does nothing with coefficients: uniform (c stays 1/k)"
            )

    def cost(self, n_train: int, n_per_class: int) -> AttackCost:
        p = self.params
        # steps with a backward pass, plus the forward passes for the final and the initial objectives
        return AttackCost(passes=p.num_targets * p.num_poisons * (p.steps + 2), refits=p.num_targets)

    def forward(self, ctx: AttackContext) -> PoisonResult:
        p = self.params
        chosen = self.nearest_bases(ctx)
        if chosen is None:
            return self.no_trials()
        targets, target_feats, bases = chosen
        chunks = target_chunks(len(targets), p.batch_size, bases.shape[1])
        parts = [
            self.optimise(ctx, ctx.x_train[bases[sl]], target_feats[sl])
            for sl in progress(chunks, desc=self.name, total=len(chunks))
        ]
        poisons, coeffs, objective, initial = (torch.cat(v) for v in zip(*parts, strict=True))
        trials = [self.trial(bases[t], poisons[t], int(targets[t])) for t in range(len(targets))]
        info = {
            "num_targets": float(len(targets)),
            "mean_polytope_objective": float(objective.mean()),
            "mean_initial_polytope_objective": float(initial.mean()),
            "mean_max_coefficient": float(coeffs.amax(dim=1).mean()),
        }
        return PoisonResult(trials=trials, targeted=True, info=info)

    def optimise(
        self, ctx: AttackContext, x0: torch.Tensor, target_feats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Poisons for T targets at once from their bases ``x0`` (T, k, C, H, W): (poisons on the CPU, their
        coefficients (T, k), the final objective (T,), the objective of the unperturbed bases with c = 1/k (T,))."""
        p = self.params
        n_targets, k = x0.shape[:2]
        start = x0.flatten(0, 1).to(ctx.device, torch.float32)
        tf = target_feats.to(ctx.device)
        uniform = torch.full((n_targets, k), 1.0 / k, device=ctx.device)
        coeffs = uniform.clone()

        def features(x: torch.Tensor) -> torch.Tensor:
            return ctx.features(x, grad=True).float().reshape(n_targets, k, -1)

        def update(f: torch.Tensor) -> torch.Tensor:
            if p.coefficients == "uniform":
                return coeffs
            return coefficient_steps(f.detach(), tf, coeffs, p.coefficient_steps)

        def loss_fn(x: torch.Tensor) -> torch.Tensor:
            nonlocal coeffs  # the paper's alternation: c for the current poisons, then one step on the poisons
            f = features(x)
            coeffs = update(f)
            return polytope_objective(f, coeffs, tf)

        x = adam_linf(loss_fn, start, start, p.eps, p.steps, p.lr)
        with torch.no_grad():
            f = features(x)
            coeffs = update(f)
            objective = polytope_objective(f, coeffs, tf)
            initial = polytope_objective(features(start), uniform, tf)
        return x.reshape(x0.shape).cpu(), coeffs.cpu(), objective.cpu(), initial.cpu()


def polytope_objective(f: torch.Tensor, coeffs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 * ||t - sum_i c_i f_i||^2 / ||t||^2 per target: features ``f`` (T, k, D), ``coeffs`` (T, k), ``target``
    (T, D); (T,)."""
    residual = target - torch.einsum("tk,tkd->td", coeffs, f)
    return 0.5 * residual.pow(2).sum(dim=1) / target.pow(2).sum(dim=1).clamp_min(1e-12)


def coefficient_steps(f: torch.Tensor, target: torch.Tensor, coeffs: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` projected-gradient steps of the polytope objective in c, each of length 1/L (L: the largest
    eigenvalue of F F^T / ||t||^2, the gradient's Lipschitz constant, so every step decreases the objective),
    projected on the probability simplex; for every target at once."""
    scale = target.pow(2).sum(dim=1).clamp_min(1e-12)  # (T,)
    gram = torch.einsum("tkd,tjd->tkj", f, f).double()
    lipschitz = (torch.linalg.eigvalsh(gram)[:, -1] / scale.double()).clamp_min(1e-12).to(f.dtype)
    for _ in range(steps):
        residual = torch.einsum("tk,tkd->td", coeffs, f) - target
        grad = torch.einsum("tkd,td->tk", f, residual) / scale[:, None]
        coeffs = simplex_projection(coeffs - grad / lipschitz[:, None])
    return coeffs


def simplex_projection(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` (T, k) on the probability simplex {c >= 0, sum c = 1} (sort-based:
    the threshold theta makes the positive parts of v - theta sum to 1)."""
    u = v.sort(dim=1, descending=True).values
    cumulative = u.cumsum(dim=1) - 1.0
    index = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    support = (u - cumulative / index > 0).sum(dim=1, keepdim=True)  # >= 1: the largest entry always qualifies
    theta = cumulative.gather(1, support - 1) / support.to(v.dtype)
    return (v - theta).clamp_min(0.0)
