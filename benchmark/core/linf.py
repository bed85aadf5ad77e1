"""L-inf steps shared by the poisoning attacks and the adversarial-training defenses: the paper code's step size,
sign-PGD from a starting batch within an eps-ball intersected with [0, 1], and Adam (plain or signed) projected on
that same box."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

PAPER_STEP_FRACTION = 0.333  # the paper's code: PGD step = 0.333 * eps (attacks and adversarial training)


def default_step_size(eps: float) -> float:
    """The paper code's sign step: 0.333 * eps."""
    return PAPER_STEP_FRACTION * eps


def linf_box(x0: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper pixel bounds of the eps-ball around ``x0`` intersected with [0, 1]."""
    return (x0 - eps).clamp(0.0, 1.0), (x0 + eps).clamp(0.0, 1.0)


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
    lo, hi = linf_box(x0, eps)
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


def adam_linf(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x_start: torch.Tensor,
    x0: torch.Tensor,
    eps: float,
    steps: int,
    lr: float,
    signed: bool = False,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> torch.Tensor:
    """Adam on the pixels from ``x_start``, each step followed by projection on the eps-ball around ``x0``
    intersected with [0, 1]. Returns a detached tensor.

    ``loss_fn`` returns per-sample (or per-group) losses, summed; Adam's update is element-wise, so samples whose
    losses do not interact are optimised exactly as they would be alone (batching does not change them).
    ``signed``: Adam is fed the sign of the gradient (Geiping et al.'s signed Adam). The learning rate is multiplied
    by ``gamma`` at each step listed in ``milestones``."""
    lo, hi = linf_box(x0, eps)
    x = torch.maximum(torch.minimum(x_start.detach().clone(), hi), lo).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for i in range(steps):
        if i in milestones:
            for group in opt.param_groups:
                group["lr"] *= gamma
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(loss_fn(x).sum(), x)
        x.grad = grad.sign() if signed else grad
        opt.step()
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    return x.detach()
