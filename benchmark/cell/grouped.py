"""Grouped training: N same-architecture backbones (seeds, defenses) trained together, one vmapped step per batch.

At the paper's batch of 64 one VGG13 leaves most of a large GPU idle; stacking N models' parameters
(``torch.func.stack_module_state``) and running ``functional_call`` under ``vmap`` makes each kernel N times wider.
Every member keeps the mathematics of ``benchmark.cell.training.train_backbone``: its own initial weights (the caller's),
its own seeded batch order, its own adversarial examples with torchattacks' FGSM/PGD arithmetic (sign of the input
gradient of the mean cross-entropy, projection on the eps-ball, clamp to [0, 1]), the same loss, and an
elementwise optimizer (Adam or SGD over the stacked parameters is one optimizer per model). A member that stops
(``stop_at`` or its ``max_epochs``) keeps the weights of that epoch; the group trains on until every member stops.

Groupable (else ``ValueError`` naming the reason): same parameter shapes; no batch norm or dropout (their modes and
running statistics do not vmap); the same batch size, optimizer, lr, momentum, weight decay and precision; no PGD
random start (it draws from the global generator per model); ``adv_fraction`` 1; ``compile`` off.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from adapters.defenses import DefenseParams, make_defense
from adapters.defenses.standard import (
    AdversarialParams,
    FGSMTraining,
    NaiveTraining,
    PGDParams,
    PGDTraining,
)
from benchmark.cell.training import TrainResult, _autocast, label_indices
from benchmark.core.errors import TrainingDiverged
from benchmark.core.linf import default_step_size
from benchmark.core.registry import Params

GROUPABLE = (NaiveTraining, FGSMTraining, PGDTraining)  # whose example arithmetic _adversarial reproduces
SHARED = ("batch_size", "optimizer", "lr", "momentum", "weight_decay", "precision")


@dataclass
class Member:
    """One backbone of a group: the model (initial weights included), its defense and its seed."""

    backbone: nn.Module
    defense: str
    params: Params | dict[str, Any] | None = None
    seed: int = 0


def check_groupable(members: Sequence[Member]) -> list[DefenseParams]:
    """The members' resolved defense parameters; ``ValueError`` when they cannot train as one group."""
    if not members:
        raise ValueError("a group needs at least one member")
    defenses = [make_defense(m.defense, m.params) for m in members]
    unknown = [type(d).__name__ for d in defenses if type(d) not in GROUPABLE]
    if unknown:
        raise ValueError(f"grouped training reproduces naive, FGSM and PGD training only, not {unknown[0]}")
    ps = [d.params for d in defenses]
    shapes = [[tuple(p.shape) for p in m.backbone.parameters()] for m in members]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("grouped training needs the same architecture (parameter shapes) for every member")
    for m in members:
        bad = [type(mod).__name__ for mod in m.backbone.modules() if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.Dropout))]
        if bad:
            raise ValueError(f"grouped training does not support {bad[0]} (mode-dependent layers do not vmap)")
    for key in SHARED:
        if len({getattr(p, key) for p in ps}) > 1:
            raise ValueError(f"grouped training needs the same {key} for every member")
    for p in ps:
        assert isinstance(p, DefenseParams)
        if p.compile:
            raise ValueError("grouped training does not compile (compile: true)")
        if isinstance(p, AdversarialParams) and p.adv_fraction not in (0.0, 1.0):
            raise ValueError("grouped training needs adv_fraction 0 or 1")
        if isinstance(p, PGDParams) and p.random_start:
            raise ValueError("grouped training does not support PGD random_start")
    return ps  # type: ignore[return-value]


def _attack_settings(defense: str, p: DefenseParams) -> tuple[str, float, int, float] | None:
    """(kind, eps, steps, step size) of a member's adversarial examples, or None for clean training."""
    if defense == "naive" or not isinstance(p, AdversarialParams) or p.adv_fraction == 0 or p.eps == 0:
        return None
    if isinstance(p, PGDParams):
        return "pgd", p.eps, p.steps, p.step_size if p.step_size is not None else default_step_size(p.eps)
    return "fgsm", p.eps, 1, p.eps


def _adversarial(forward, params, buffers, x0, y, settings, device, precision) -> torch.Tensor:  # noqa: ANN001
    """torchattacks' FGSM/PGD arithmetic for a sub-group at once: x0 (S, B, ...), y (S, B); no random start."""
    kind, eps, steps, alpha = settings
    x0 = x0.detach()
    adv = x0.clone()
    with torch.enable_grad():
        for _ in range(steps):
            adv.requires_grad_(True)
            with _autocast(device, precision):
                out = forward(params, buffers, adv)
                # per model: the mean cross-entropy over its batch (torchattacks' loss); the sum over models keeps
                # each model's input gradient its own
                loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1).sum()
            grad = torch.autograd.grad(loss, adv)[0]
            if kind == "fgsm":
                return torch.clamp(adv.detach() + eps * grad.sign(), 0, 1).detach()
            adv = adv.detach() + alpha * grad.sign()
            adv = torch.clamp(x0 + torch.clamp(adv - x0, -eps, eps), 0, 1).detach()
    return adv


def _skeleton(backbone: nn.Module) -> nn.Module:
    """The module ``functional_call`` runs: the backbone on the meta device, its layout-only ``ChannelsLast`` steps
    (which vmap cannot query) replaced by identities."""
    from adapters.backbones.base import ChannelsLast

    skeleton = copy.deepcopy(backbone).to("meta")
    for module in list(skeleton.modules()):
        for name, child in module.named_children():
            if isinstance(child, ChannelsLast):
                setattr(module, name, nn.Identity())
    return skeleton


def train_group(
    members: Sequence[Member],
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device | str = "cpu",
    classes: Sequence[int] | torch.Tensor | None = None,
) -> list[TrainResult]:
    """Train every member's backbone (in place) on images ``x`` and original labels ``y``; one result each.

    Same contract as ``train_backbone`` per member (backbones returned in eval mode on ``device``).
    """
    ps = check_groupable(members)
    p0 = ps[0]
    device = torch.device(device)
    classes = torch.unique(y.long().cpu()) if classes is None else torch.as_tensor(classes, dtype=torch.long)
    y_idx = label_indices(y, classes)
    cuda4d = device.type == "cuda" and x.ndim == 4
    fmt = torch.channels_last if cuda4d else torch.contiguous_format
    xd = x.to(device=device, dtype=torch.float32).contiguous(memory_format=fmt)
    yd = y_idx.to(device)
    n, count, batch = len(xd), len(members), p0.batch_size
    for m in members:
        m.backbone.to(device).train()

    params, buffers = stack_module_state([m.backbone for m in members])
    skeleton = _skeleton(members[0].backbone)

    def one(p: dict, b: dict, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, (p, b), (xb,))

    forward = torch.vmap(one)
    opt_params = list(params.values())
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(opt_params, lr=p0.lr, weight_decay=p0.weight_decay)
        if p0.optimizer == "adam"
        else torch.optim.SGD(opt_params, lr=p0.lr, momentum=p0.momentum, weight_decay=p0.weight_decay)
    )
    gens = [torch.Generator().manual_seed(m.seed) for m in members]
    subgroups: dict[Any, list[int]] = {}
    for i, (m, p) in enumerate(zip(members, ps, strict=True)):
        subgroups.setdefault(_attack_settings(m.defense, p), []).append(i)
    curves: list[dict[str, list[float]]] = [{"train_loss": [], "train_acc": [], "epoch_seconds": []} for _ in members]
    done = [False] * count
    stopped_early = [False] * count
    total_time = [0.0] * count
    final: list[dict[str, torch.Tensor] | None] = [None] * count

    for epoch in range(max(p.max_epochs for p in ps)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        loss_sum = torch.zeros(count, device=device)
        correct = torch.zeros(count, device=device, dtype=torch.long)
        for i in range(0, n, batch):
            idx = perms[:, i : i + batch]  # (N, B): each model's own batch
            xb, yb = xd[idx], yd[idx]
            detached = {k: v.detach() for k, v in params.items()}
            adversarial = []
            for settings, rows in subgroups.items():
                if settings is not None:
                    sel = torch.tensor(rows, device=device)
                    sub_p, sub_b = ({k: v[sel] for k, v in d.items()} for d in (detached, buffers))
                    adversarial.append((sel, _adversarial(forward, sub_p, sub_b, xb[sel], yb[sel], settings, device,
                                                          p0.precision)))
            if adversarial:
                xb = xb.clone()
                for sel, adv in adversarial:
                    xb[sel] = adv.to(xb.dtype)
            with _autocast(device, p0.precision):
                out = forward(params, buffers, xb)
            if epoch == 0 and i == 0 and out.shape[-1] < len(classes):
                raise ValueError(f"the backbone outputs {out.shape[-1]} scores per image but the data has "
                                 f"{len(classes)} classes")
            losses = F.cross_entropy(out.float().flatten(0, 1), yb.flatten(), reduction="none").view(yb.shape).mean(1)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            loss_sum += losses.detach() * yb.shape[1]
            correct += (out.detach().argmax(-1) == yb).sum(1)
        epoch_loss, epoch_acc = (loss_sum / n).tolist(), (correct.float() / n).tolist()
        seconds = time.perf_counter() - start
        for m in range(count):
            if done[m]:
                continue
            total_time[m] += seconds
            for key, value in (("train_loss", epoch_loss[m]), ("train_acc", epoch_acc[m]), ("epoch_seconds", seconds)):
                curves[m][key].append(value)
            if not math.isfinite(epoch_loss[m]):
                raise TrainingDiverged(f"grouped training: member {m} ({members[m].defense}, seed {members[m].seed}) "
                                       f"diverged in epoch {epoch + 1} (loss {epoch_loss[m]})")
            if epoch_acc[m] > ps[m].stop_at or epoch + 1 == ps[m].max_epochs:
                done[m] = True
                stopped_early[m] = epoch_acc[m] > ps[m].stop_at and epoch + 1 < ps[m].max_epochs
                final[m] = {k: v[m].detach().clone() for k, v in params.items()}
        if all(done):
            break

    results = []
    for m, member in enumerate(members):
        state = {**(final[m] or {}), **{k: v[m] for k, v in buffers.items()}}
        member.backbone.load_state_dict(state)
        member.backbone.eval()
        epochs = len(curves[m]["train_loss"])
        results.append(TrainResult(
            epochs=epochs, curves=curves[m], stopped_early=stopped_early[m], classes=[int(c) for c in classes],
            images_per_second=epochs * n / total_time[m] if total_time[m] > 0 else float("inf"),
        ))
    return results
