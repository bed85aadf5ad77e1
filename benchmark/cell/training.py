"""Train a backbone on the external data under a defense, and measure clean and robust accuracy.

A lean loop in the spirit of airbench: the whole training set is moved to the device once, each epoch is a
seeded permutation (a CPU ``torch.Generator``) sliced into batches, no DataLoader, no worker processes. The
defense (``adapters.defenses``) turns each clean batch into the batch trained on. On CUDA the forward passes (the
defense's included) run under bf16 autocast (``precision``; the CPU can ask for it too) and the model and data use
``channels_last``; ``compile: true`` wraps the model in ``torch.compile``. Several same-architecture backbones train
in the same loop as one vmapped stack (``train_backbones``, ``benchmark.cell.stacked``); one trains by itself.

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
import torch.nn.functional as F
from torch import nn

from adapters.defenses import Defense, DefenseParams
from adapters.defenses.adversarial_examples import make_example_generator
from adapters.defenses.base import check_eps
from benchmark.cell.stacked import (
    StackedBackbones,
    carry_optimizer_state,
    defense_key,
    why_not_groupable,
)
from benchmark.core.errors import DataError, ParamError, TrainingDiverged
from benchmark.core.progress import progress as progress_bar
from benchmark.core.registry import Params, make

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


@dataclass
class Member:
    """One backbone to train: the model (its initial weights are the caller's), its defense and its seed."""

    backbone: nn.Module
    defense: str | Defense
    params: Params | dict[str, Any] | None = None
    seed: int = 0

    def built_defense(self) -> Defense:
        return self.defense if isinstance(self.defense, Defense) else make("defense", self.defense, self.params)


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
    images ``x`` (float [0, 1], NCHW, CPU) and original labels ``y``: ``train_backbones`` with one member.

    The backbone's initial weights are the caller's (seed them before building it). ``seed`` drives the
    shuffling and any randomness of the attack (PGD random start); on the CPU the same seed and the same initial
    weights give bit-identical weights. The backbone is returned in eval mode, on ``device``.
    ``classes``: the label of each output row (e.g. the dataset's declared classes, so a class missing from a
    small sample keeps its row); default: the sorted unique labels of ``y``. The backbone needs at least that many
    outputs (extra rows are never trained towards). Raises ``TrainingDiverged`` when an epoch's loss is NaN or
    infinite.
    """
    return train_backbones([Member(backbone, defense, params, seed)], x, y, device, progress, classes)[0]


def train_backbones(
    members: Sequence[Member],
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device | str = "cpu",
    progress: bool = True,
    classes: Sequence[int] | torch.Tensor | None = None,
) -> list[TrainResult]:
    """Train every member's backbone (in place) on ``x`` and ``y``, one result each, as ``train_backbone`` trains one.

    One member trains its backbone itself (any defense, batch norm, ``compile``); several train as one stack
    (``benchmark.cell.stacked``: ``ValueError`` when they cannot), each with its own initial weights, seeded batch
    order, adversarial examples, loss and optimizer state, so each ends as it would alone up to float rounding. A
    member that stops keeps the weights of its last epoch; the others train on without it.
    """
    if not members:
        raise ValueError("train_backbones needs at least one member")
    defenses = [m.built_defense() for m in members]
    if len(members) > 1:
        problem = why_not_groupable([m.backbone for m in members], defenses)
        if problem:
            raise ValueError(f"these backbones cannot train as one group: {problem}")
    device = torch.device(device)
    _check_images(x, y)
    classes = torch.unique(y.long().cpu()) if classes is None else torch.as_tensor(classes, dtype=torch.long)
    if len(classes) > 1 and not bool((classes[1:] > classes[:-1]).all()):
        raise ValueError(f"classes must be sorted and distinct; got {classes.tolist()[:20]}")
    y_idx = label_indices(y, classes)
    layout = torch.channels_last if (device.type == "cuda" and x.ndim == 4) else torch.contiguous_format
    data = (x.to(device=device, dtype=torch.float32).contiguous(memory_format=layout), y_idx.to(device))
    trainer = _Solo(members[0], defenses[0], device, layout) if len(members) == 1 else _Group(members, defenses, device)
    with _autocast(device, defenses[0].params.precision):  # in the precision training runs in
        _check_outputs(trainer.probe, data[0][:1], len(classes))
    results = _loop(trainer, [m.seed for m in members], defenses, data, device, progress)
    for result in results:
        result.classes = [int(c) for c in classes]
    return results


def _check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim < 2 or len(x) != len(y):
        raise ValueError(f"x and y must have the same length; got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) == 0:
        raise ValueError("cannot train on an empty dataset")
    if not x.is_floating_point() or float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError(
            f"training images must be floats in [0, 1] (the attacks clamp to that range); got {x.dtype} values "
            f"in [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )


def _loop(
    trainer: _Solo | _Group,
    seeds: list[int],
    defenses: list[Defense],
    data: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    progress: bool,
) -> list[TrainResult]:
    """The training loop every backbone shares: seeded batches, ``replays`` optimizer steps on each, per-member
    curves, the divergence check and the early stop. ``trainer`` makes the steps of one backbone or of a stack."""
    xd, yd = data
    n, p = len(xd), defenses[0].params
    replays = defenses[0].replays()  # a group's defenses (naive, FGSM, PGD) all replay once
    n_epochs = [math.ceil(d.params.max_epochs / replays) for d in defenses]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    runs = [_Run() for _ in seeds]
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), torch.enable_grad():
        torch.manual_seed(seeds[0])  # a defense's randomness (PGD random start) draws from the global generator
        trainer.model.train()
        epochs = range(max(n_epochs))
        what = defenses[0].name if len(seeds) == 1 else f"{len(seeds)} backbones"
        for epoch in progress_bar(epochs, desc=f"train {what}") if progress else epochs:
            _sync(device)
            start = time.perf_counter()
            active = trainer.members
            perms = torch.stack([torch.randperm(n, generator=gens[m]) for m in active]).to(device)
            loss_sum = torch.zeros(len(active), device=device, dtype=torch.float32)
            correct = torch.zeros(len(active), device=device, dtype=torch.long)
            for i in range(0, n, p.batch_size):
                idx = perms[:, i : i + p.batch_size]
                xb, yb = trainer.batch(xd, yd, idx)
                for _ in range(replays):
                    with _autocast(device, p.precision):
                        loss, losses, hits = trainer.step(xb, yb)
                    trainer.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    trainer.opt.step()
                    loss_sum += losses.detach() * idx.shape[1]
                    correct += hits
            epoch_loss, epoch_correct = loss_sum.tolist(), correct.tolist()  # syncs: the epoch's time includes its end
            seconds = time.perf_counter() - start
            finished = []
            for row, m in enumerate(active):
                run = runs[m]
                run.add(epoch_loss[row] / (n * replays), epoch_correct[row] / (n * replays), seconds)
                if not math.isfinite(run.curves["train_loss"][-1]):
                    raise TrainingDiverged(_diverged(defenses[m], epoch, run, seeds[m] if len(seeds) > 1 else None))
                if run.curves["train_acc"][-1] > defenses[m].params.stop_at or epoch + 1 == n_epochs[m]:
                    run.stopped_early = epoch + 1 < n_epochs[m]
                    finished.append(m)
            trainer.finish(finished)
            if not trainer.members:
                break
    return [run.result(n) for run in runs]


@dataclass
class _Run:
    """One member's curves as the epochs go."""

    curves: dict[str, list[float]] = field(
        default_factory=lambda: {"train_loss": [], "train_acc": [], "epoch_seconds": []}
    )
    stopped_early: bool = False

    def add(self, loss: float, acc: float, seconds: float) -> None:
        for key, value in (("train_loss", loss), ("train_acc", acc), ("epoch_seconds", seconds)):
            self.curves[key].append(value)

    def result(self, n: int) -> TrainResult:
        epochs, total = len(self.curves["train_loss"]), sum(self.curves["epoch_seconds"])
        return TrainResult(epochs=epochs, curves=self.curves, stopped_early=self.stopped_early,
                           images_per_second=(epochs * n / total) if total > 0 else float("inf"))


def _diverged(defense: Defense, epoch: int, run: _Run, seed: int | None) -> str:
    p, loss = defense.params, run.curves["train_loss"][-1]
    which = f" (grouped member, seed {seed})" if seed is not None else ""
    return (f"{defense.name} training{which} diverged: the loss became {loss} in epoch {epoch + 1} "
            f"(lr={p.lr}, optimizer={p.optimizer}); try a smaller learning rate")


class _Solo:
    """One backbone trained by itself, under its defense's own loss (any defense; batch norm; ``compile``)."""

    def __init__(self, member: Member, defense: Defense, device: torch.device, layout: torch.memory_format) -> None:
        self.backbone, self.defense, self.layout, self.members = member.backbone, defense, layout, [0]
        self.backbone.to(device)
        if layout == torch.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.model: nn.Module = torch.compile(self.backbone) if defense.params.compile else self.backbone
        self.opt = _make_optimizer(self.backbone, defense.params)
        self.probe = self.model  # what the output check runs

    def batch(self, xd: torch.Tensor, yd: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return xd[idx[0]], yd[idx[0]]

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss to minimise, the member's loss and its count of correct predictions (one-element tensors)."""
        loss, out = self.defense.training_loss(self.model, xb, yb)
        return loss, loss.reshape(1), (out.detach().argmax(dim=1) == yb).sum().reshape(1)

    def finish(self, finished: list[int]) -> None:
        if finished:
            self.members = []
            self.backbone.eval()
            if self.layout == torch.channels_last:
                self.backbone.to(memory_format=torch.contiguous_format)


class _Group:
    """Several backbones as one ``StackedBackbones``: the members whose defenses make the same batch share one call
    of it, then one vmapped forward trains them all. A finished member's weights go back to its backbone and the
    stack shrinks to the others, with their optimizer state."""

    def __init__(self, members: Sequence[Member], defenses: list[Defense], device: torch.device) -> None:
        self.backbones = [m.backbone.to(device) for m in members]
        self.defenses = defenses
        # rows of the stack in defense order, so that members sharing a defense are one slice of it
        self.members = sorted(range(len(members)), key=lambda m: str(defense_key(defenses[m])))
        self.model = StackedBackbones.of([self.backbones[m] for m in self.members])
        self.opt = _make_optimizer(self.model, defenses[0].params)
        self.probe = self.backbones[0]  # what the output check runs: any member, the architecture is one
        self._slices()

    def _slices(self) -> None:
        """Runs of rows whose defenses make the same batch: (start, stop, the defense, those rows as a module)."""
        self.slices: list[tuple[int, int, Defense, nn.Module]] = []
        for row, m in enumerate(self.members):
            if self.slices and defense_key(self.slices[-1][2]) == defense_key(self.defenses[m]):
                start, _, defense, _ = self.slices.pop()
                self.slices.append((start, row + 1, defense, self.model.rows(start, row + 1)))
            else:
                self.slices.append((row, row + 1, self.defenses[m], self.model.rows(row, row + 1)))

    def batch(self, xd: torch.Tensor, yd: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return xd[idx].flatten(0, 1), yd[idx]  # images member after member; labels (members, batch)

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The sum of the members' mean cross-entropies (each member's gradient is its own), their losses, their
        counts of correct predictions."""
        size = yb.shape[1]
        flat = yb.flatten()
        parts = [defense.training_batch(rows, xb[a * size : b * size], flat[a * size : b * size])
                 for a, b, defense, rows in self.slices]
        out = self.model(parts[0] if len(parts) == 1 else torch.cat(parts)).view(*yb.shape, -1)
        losses = F.cross_entropy(out.float().flatten(0, 1), flat, reduction="none").view(yb.shape).mean(1)
        return losses.sum(), losses, (out.detach().argmax(-1) == yb).sum(1)

    def finish(self, finished: list[int]) -> None:
        if not finished:
            return
        for row, m in enumerate(self.members):
            if m in finished:
                self.backbones[m].load_state_dict(self.model.state_of(row))
                self.backbones[m].eval()
        keep = [row for row, m in enumerate(self.members) if m not in finished]
        self.members = [self.members[row] for row in keep]
        if keep:
            model = self.model.keep(keep)
            opt = _make_optimizer(model, self.defenses[self.members[0]].params)
            carry_optimizer_state(self.opt, opt, keep)
            self.model, self.opt = model, opt
            self.model.train()
            self._slices()


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
