"""Train a backbone on the external data under a defense, and measure clean and robust accuracy.

A lean loop in the spirit of airbench: the whole training set is moved to the device once, each epoch is a
seeded permutation (a CPU ``torch.Generator``) sliced into batches, no DataLoader, no worker processes. The
defense (``adapters.defenses``) turns each clean batch into the batch trained on. On CUDA the forward passes (the
defense's included) run under bf16 autocast (``precision``; the CPU can ask for it too) and the model and data use
``channels_last``; ``compile: true`` wraps the model in ``torch.compile``.

Faithful to the paper's code by default (``DefenseParams``): Adam, lr 1e-4, batch 64, cross-entropy, shuffled,
no augmentation, early stop when an epoch's training accuracy passes ``stop_at``, measured on the batches trained
on (the adversarial ones under FGSM/PGD), from the forward pass that computes the loss.

Labels: ``y`` holds the dataset's original labels; they are mapped to row indices ``0..K-1`` through the sorted
unique labels (``TrainResult.classes``), so the backbone's classifier must have exactly K outputs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adapters.defenses import Defense, DefenseParams, make_defense
from adapters.defenses.adversarial_examples import make_example_generator
from adapters.defenses.base import check_eps
from benchmark.core.errors import DataError, ParamError, TrainingDiverged
from benchmark.core.progress import progress as progress_bar
from benchmark.core.registry import Params

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainResult:
    epochs: int  # epochs actually run
    curves: dict[str, list[float]]  # per epoch: train_loss, train_acc, epoch_seconds
    images_per_second: float  # training images (clean count) per second of training, attack included
    stopped_early: bool  # an epoch's training accuracy passed stop_at before max_epochs ran out
    classes: list[int] = field(default_factory=list)  # original label of each output row


def label_indices(y: torch.Tensor, classes: Sequence[int] | torch.Tensor, unknown: int | None = None) -> torch.Tensor:
    """Row index of each original label in ``classes`` (sorted).

    A label that is not in ``classes`` raises, or gets the index ``unknown`` when one is given (e.g. -1, which no
    prediction equals).
    """
    cls = torch.as_tensor(classes, dtype=torch.long).cpu()
    y = y.long().cpu()
    if len(cls) == 0:
        raise ValueError("no classes given")
    idx = torch.searchsorted(cls, y).clamp(max=len(cls) - 1)
    found = cls[idx] == y
    if not bool(found.all()):
        if unknown is None:
            missing = sorted(set(y[~found].tolist()))[:5]
            raise ValueError(f"labels {missing} are not among the model's classes {cls.tolist()[:20]}")
        idx = torch.where(found, idx, torch.full_like(idx, unknown))
    return idx


def _autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_optimizer(model: nn.Module, p: DefenseParams) -> torch.optim.Optimizer:
    params = [q for q in model.parameters() if q.requires_grad]
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


def _check_outputs(model: nn.Module, x: torch.Tensor, n_classes: int) -> None:
    """Fail before training when the model has fewer outputs than the data has classes (eval mode: no state moves)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was_training)
    if out.ndim != 2 or out.shape[1] < n_classes:
        raise ValueError(
            f"the backbone outputs {tuple(out.shape[1:])} scores per image but the training data has {n_classes} "
            f"classes; build the backbone with num_classes={n_classes}"
        )


def train_backbone(
    backbone: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    defense: str | Defense,
    params: Params | dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    classes: Sequence[int] | torch.Tensor | None = None,
) -> TrainResult:
    """Train ``backbone`` (in place) under ``defense`` (a ``Defense``, or a registered name built with ``params``) on
    images ``x`` (float [0, 1], NCHW, CPU) and original labels ``y``.

    The backbone's initial weights are the caller's (seed them before building it). ``seed`` drives the
    shuffling and any randomness of the attack (PGD random start); on the CPU the same seed and the same initial
    weights give bit-identical weights. The backbone is returned in eval mode, on ``device``.
    ``classes``: the label of each output row (e.g. the dataset's declared classes, so a class missing from a
    small sample keeps its row); default: the sorted unique labels of ``y``. The backbone needs at least that many
    outputs (extra rows are never trained towards). Raises ``TrainingDiverged`` when an epoch's loss is NaN or
    infinite.
    """
    if not isinstance(defense, Defense):
        defense = make_defense(defense, params)
    p = defense.params
    assert isinstance(p, DefenseParams)
    device = torch.device(device)
    if x.ndim < 2 or len(x) != len(y):
        raise ValueError(f"x and y must have the same length; got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) == 0:
        raise ValueError("cannot train on an empty dataset")
    if not x.is_floating_point() or float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError(
            f"training images must be floats in [0, 1] (the attacks clamp to that range); got {x.dtype} values "
            f"in [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
    classes = torch.unique(y.long().cpu()) if classes is None else torch.as_tensor(classes, dtype=torch.long)
    if len(classes) > 1 and not bool((classes[1:] > classes[:-1]).all()):
        raise ValueError(f"classes must be sorted and distinct; got {classes.tolist()[:20]}")
    y_idx = label_indices(y, classes)
    n_classes = len(classes)

    cuda = device.type == "cuda"
    mem_format = torch.channels_last if (cuda and x.ndim == 4) else torch.contiguous_format
    backbone.to(device)
    if cuda and x.ndim == 4:
        backbone.to(memory_format=torch.channels_last)
    xd = x.to(device=device, dtype=torch.float32).contiguous(memory_format=mem_format)
    yd = y_idx.to(device)
    n = len(xd)

    model: nn.Module = torch.compile(backbone) if p.compile else backbone
    opt = _make_optimizer(backbone, p)
    gen = torch.Generator().manual_seed(seed)
    curves: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "epoch_seconds": []}
    stopped_early = False
    total_time = 0.0

    with _autocast(device, p.precision):  # in the precision training runs in
        _check_outputs(model, xd[:1], n_classes)
    fork_devices = [device] if cuda else []
    with torch.random.fork_rng(devices=fork_devices), torch.enable_grad():
        torch.manual_seed(seed)  # a defense's randomness (PGD random start) draws from the global generator
        backbone.train()
        replays = defense.replays()
        n_epochs = math.ceil(p.max_epochs / replays)
        epoch_iter = progress_bar(range(n_epochs), desc=f"train {defense.name}") if progress else range(n_epochs)
        for epoch in epoch_iter:
            _sync(device)
            start = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device, dtype=torch.float32)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for i in range(0, n, p.batch_size):
                idx = perm[i : i + p.batch_size]
                xb, yb = xd[idx], yd[idx]
                for _ in range(replays):
                    with _autocast(device, p.precision):
                        loss, out = defense.training_loss(model, xb, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.detach() * len(yb)
                    correct += (out.detach().argmax(dim=1) == yb).sum()
            epoch_loss = loss_sum.item() / (n * replays)  # syncs
            epoch_acc = correct.item() / (n * replays)
            seconds = time.perf_counter() - start
            total_time += seconds
            curves["train_loss"].append(epoch_loss)
            curves["train_acc"].append(epoch_acc)
            curves["epoch_seconds"].append(seconds)
            if not math.isfinite(epoch_loss):
                raise TrainingDiverged(
                    f"{defense.name} training diverged: the loss became {epoch_loss} in epoch {epoch + 1} "
                    f"(lr={p.lr}, optimizer={p.optimizer}); try a smaller learning rate"
                )
            if epoch_acc > p.stop_at:
                stopped_early = epoch + 1 < n_epochs
                break

    backbone.eval()
    if cuda and x.ndim == 4:
        backbone.to(memory_format=torch.contiguous_format)
    epochs = len(curves["train_loss"])
    return TrainResult(
        epochs=epochs,
        curves=curves,
        images_per_second=(epochs * n / total_time) if total_time > 0 else float("inf"),
        stopped_early=stopped_early,
        classes=[int(c) for c in classes],
    )


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


def _targets(y: torch.Tensor, classes: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """Row indices; a label outside ``classes`` (absent from the training data) counts as an error (-1)."""
    if classes is None:
        return y.long().cpu()
    idx = label_indices(y, classes, unknown=-1)
    if bool((idx < 0).any()):
        log.warning("%d evaluation labels are not among the trained classes; counted as errors", int((idx < 0).sum()))
    return idx


def _accuracy(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    device: torch.device,
    batch_size: int,
    perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Accuracy of ``model`` in eval mode on ``x`` (optionally perturbed per batch); the caller's mode is restored."""
    if len(x) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device, torch.float32)
            yb = target[i : i + batch_size].to(device)
            if perturb is not None:
                xb = perturb(xb, yb)
            with torch.no_grad():
                correct += int((model(xb).argmax(dim=1) == yb).sum())
    finally:
        model.train(was_training)
    return correct / len(x)


def evaluate_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
    classes: Sequence[int] | torch.Tensor | None = None,
) -> float:
    """Clean accuracy of ``model`` (eval mode, float32) on ``x``.

    ``y`` holds original labels mapped through ``classes`` (``TrainResult.classes``), or, with ``classes=None``,
    row indices of the model's outputs.
    """
    return _accuracy(model, x, _targets(y, classes), torch.device(device), batch_size)


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    device: torch.device | str = "cpu",
    step_size: float | None = None,
    batch_size: int = 512,
    random_start: bool = False,
    classes: Sequence[int] | torch.Tensor | None = None,
) -> float:
    """Accuracy of ``model`` on L-inf PGD examples (torchattacks; step None -> 0.333 * eps, the paper code's).

    ``y``: row indices of the model's outputs (or original labels with ``classes``). The model is attacked and
    evaluated in eval mode, float32. ``eps`` must be in [0, 1].
    """
    try:
        check_eps(eps)
    except ValueError as err:
        raise ParamError(str(err)) from None
    target = _targets(y, classes)
    if len(x) == 0:
        return float("nan")
    generate = make_example_generator("pgd", model, eps, steps, step_size, random_start)
    return _accuracy(model, x, target, torch.device(device), batch_size, perturb=generate)
