"""Poison Frog (PF): targeted clean-label feature collision inside an L-inf ball, batched over targets.

Ours rather than ART's: ART's ``FeatureCollisionAttack`` has no L-inf bound and optimises one target at a time
(it is offered beside this one as ``art_feature_collision``). Paper variant: ``num_poisons`` nearest base images
per target, L2, a linearly decaying sign step; code variant: 64-image chunks, L1, the code's constant step. The
protocol (task, targets, success) is in docs/metrics.md; what all targeted attacks share is in adapters/attacks/targeted.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
from pydantic import Field

from adapters.attacks.base import AttackContext, AttackCost, PoisonResult
from adapters.attacks.targeted import (
    Distance,
    TargetedAttack,
    TargetedParams,
    distance_objective,
    feature_distance,
    nearest_rows,
    require_pool,
)
from benchmark.core.linf import default_step_size, sign_pgd
from benchmark.core.progress import progress
from benchmark.core.registry import register


class PoisonFrogParams(TargetedParams):
    variant: Literal["paper", "code"] = "paper"
    chunk_size: int = Field(64, ge=1, description="code variant: images per chunk (code: 64)")
    max_chunks: int | None = Field(None, ge=1, description="code variant: chunks tried per target (None: all)")
    distance: Distance | None = Field(None, description="feature distance; None: l2 (paper) or l1 (code)")
    eps: float = Field(7 / 255, ge=0.0, le=1.0, description="L-inf radius (paper and code: 7/255)")
    steps: int = Field(40, ge=0)  # code: 40 iterations
    step_size: float | None = Field(None, gt=0.0, description="None: 0.333 * eps (code)")
    # None: "linear" for the paper variant (a decaying step converges on the collision, see sign_pgd), "constant"
    # for the code variant (the code's fixed 0.333 * eps step, final iterate)
    step_schedule: Literal["constant", "linear"] | None = None
    batch_size: int = Field(256, ge=1, description="(target, base) pairs optimised per forward/backward pass")


@register
class PoisonFrog(TargetedAttack):
    name = "poison_frog"
    description = (
        "Poison Frog: targeted clean-label feature collision, sign-PGD within an L-inf ball (paper and code variants)."
    )
    Params = PoisonFrogParams

    @property
    def resolved_distance(self) -> Distance:
        if self.params.distance is not None:
            return self.params.distance
        return "l2" if self.params.variant == "paper" else "l1"

    @property
    def resolved_step_size(self) -> float:
        return self.params.step_size if self.params.step_size is not None else default_step_size(self.params.eps)

    @property
    def resolved_schedule(self) -> Literal["constant", "linear"]:
        if self.params.step_schedule is not None:
            return self.params.step_schedule
        return "linear" if self.params.variant == "paper" else "constant"

    def max_poisons(self, n_train: int) -> int:
        return self.params.num_poisons if self.params.variant == "paper" else self.params.chunk_size

    def rows_needed(self) -> dict[int, tuple[str, int]]:
        return super().rows_needed() if self.params.variant == "paper" else {}  # code: chunks of whatever is there

    def cost(self, n_train: int, n_per_class: int) -> AttackCost:
        p = self.params
        if p.variant == "paper":
            return AttackCost(passes=p.num_targets * p.num_poisons * p.steps, refits=p.num_targets)
        bases = n_per_class // p.chunk_size * p.chunk_size  # every full chunk of base images, for every target
        if p.max_chunks is not None:
            bases = min(bases, p.max_chunks * p.chunk_size)
        return AttackCost(passes=p.num_targets * bases * p.steps, refits=p.num_targets)

    # -----------------------------------------------------------------------------------------------------------

    def forward(self, ctx: AttackContext) -> PoisonResult:
        p = self.params
        dist = self.resolved_distance
        targets, pool = self.targets_and_pool(ctx)
        if not self.usable(targets, pool):
            return self.no_trials()
        target_feats = ctx.f_test[targets].float()

        # units: (target position, base rows optimised together); one per target (paper) or per chunk (code)
        units: list[tuple[int, torch.Tensor]] = []
        if p.variant == "paper":
            require_pool(self.name, pool, p.num_poisons, p.base_class)
            bases = nearest_rows(ctx, target_feats, pool, p.num_poisons, dist)
            units = [(t, bases[t]) for t in range(len(targets))]
        else:
            n_full = len(pool) // p.chunk_size
            chunks = list(pool[: n_full * p.chunk_size].split(p.chunk_size)) if n_full else [pool]
            chunks = chunks[: p.max_chunks] if p.max_chunks is not None else chunks
            units = [(t, c) for t in range(len(targets)) for c in chunks]

        best: dict[int, tuple[float, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for t, rows, x, d, d0 in self._optimise(ctx, target_feats, units, dist):
            total = float(d.sum())
            if t not in best or total < best[t][0]:  # code: the chunk with the smallest total distance
                best[t] = (total, rows, x, d, d0)

        trials, dists, dists0 = [], [], []
        for t in range(len(targets)):
            _, rows, x, d, d0 = best[t]
            trials.append(self.trial(rows, x, int(targets[t])))
            dists.append(d)
            dists0.append(d0)
        d_all, d0_all = torch.cat(dists), torch.cat(dists0)
        info = {
            "num_targets": float(len(targets)),
            "mean_feature_distance": float(d_all.mean()),
            "mean_initial_feature_distance": float(d0_all.mean()),
            "mean_target_feature_norm": float(target_feats.norm(dim=1).mean()),
        }
        if p.variant == "code":  # what the pool allowed: fewer than chunk_size base images make one smaller chunk
            info["chunks_per_target"] = float(len(units) // len(targets))
            info["poisons_per_target"] = float(len(units[0][1]))
        return PoisonResult(trials=trials, targeted=True, info=info)

    def _optimise(
        self,
        ctx: AttackContext,
        target_feats: torch.Tensor,
        units: list[tuple[int, torch.Tensor]],
        dist: Distance,
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Optimise every (target, base) pair of every unit, ``batch_size`` pairs at a time, and yield each unit as
        soon as all its pairs are done: (target position, base rows, poisons, final distances, initial distances),
        all on the CPU. Only the pairs of unfinished units are held in memory."""
        p = self.params
        pair_t = torch.cat([torch.full((len(rows),), t, dtype=torch.long) for t, rows in units])
        pair_b = torch.cat([rows for _, rows in units])
        n_pairs = len(pair_b)
        buf_x: list[torch.Tensor] = []
        buf_d: list[torch.Tensor] = []
        buf_d0: list[torch.Tensor] = []
        buffered, u = 0, 0
        starts = range(0, n_pairs, p.batch_size)
        for s in progress(starts, desc="poison frog", total=len(starts)):
            e = min(s + p.batch_size, n_pairs)
            x0 = ctx.x_train[pair_b[s:e]].to(ctx.device, torch.float32)
            tf = target_feats[pair_t[s:e]].to(ctx.device)

            def loss_fn(x: torch.Tensor, tf: torch.Tensor = tf) -> torch.Tensor:
                return distance_objective(ctx.features(x, grad=True).float(), tf, dist)

            x = sign_pgd(loss_fn, x0, p.eps, p.steps, self.resolved_step_size, schedule=self.resolved_schedule)
            with torch.no_grad():
                d = feature_distance(ctx.features(x, grad=True).float(), tf, dist)
                d0 = feature_distance(ctx.features(x0, grad=True).float(), tf, dist)
            buf_x.append(x.cpu())
            buf_d.append(d.cpu())
            buf_d0.append(d0.cpu())
            buffered += e - s
            while u < len(units) and len(units[u][1]) <= buffered:
                xs, ds, d0s = torch.cat(buf_x), torch.cat(buf_d), torch.cat(buf_d0)
                m = len(units[u][1])
                yield units[u][0], units[u][1], xs[:m].clone(), ds[:m].clone(), d0s[:m].clone()
                buf_x, buf_d, buf_d0 = [xs[m:]], [ds[m:]], [d0s[m:]]
                buffered -= m
                u += 1
