"""L-inf sign steps shared by the poisoning attacks and the adversarial-training defenses: the paper code's step
size, and sign-PGD from a starting batch within an eps-ball intersected with [0, 1]."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

PAPER_STEP_FRACTION = 0.333  # the paper's code: PGD step = 0.333 * eps (attacks and adversarial training)


def default_step_size(eps: float) -> float:
    """The paper code's sign step: 0.333 * eps."""
    return PAPER_STEP_FRACTION * eps


def sign_pgd(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
    maximize: bool = False,
    schedule: Literal["constant", "linear"] = "constant",
) -> torch.Tensor:
    """L-inf sign-PGD from ``x0`` (no random start): ``steps`` sign steps on ``loss_fn`` (per-sample losses, (B,)),
    each followed by projection on ``[x0 - eps, x0 + eps]`` intersected with [0, 1]. Returns a detached tensor.

    ``schedule="linear"`` shrinks the step linearly from ``step_size`` towards 0 over the steps: a constant sign
    step cannot settle on a minimum (docs/metrics.md, Poison Frog)."""
    lo = (x0 - eps).clamp(0.0, 1.0)
    hi = (x0 + eps).clamp(0.0, 1.0)
    x = x0.detach().clone()
    sign = 1.0 if maximize else -1.0
    for i in range(steps):
        step = sign * step_size * ((1 - i / steps) if schedule == "linear" else 1.0)
        with torch.enable_grad():
            x.requires_grad_(True)
            loss = loss_fn(x).sum()
            (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = torch.maximum(torch.minimum(x.detach() + step * grad.sign(), hi), lo)
    return x.detach()
