"""Train a backbone on the external data under a defence: naive, FGSM or PGD adversarial training.

A lean loop in the spirit of airbench: the whole training set is moved to the device once, each epoch is a
seeded permutation (a CPU ``torch.Generator``) sliced into batches, no DataLoader, no worker processes. On CUDA
the forward passes (attack included) run under bf16 autocast (``precision``; the CPU can ask for it too) and the
model and data use ``channels_last``; ``compile: true`` wraps the model in ``torch.compile``.

Faithful to the paper's code (V4, CIFAR-100 script) by default: Adam, lr 1e-4, batch 64, cross-entropy, shuffled,
no augmentation, every batch fully adversarial, early stop when an epoch's training accuracy passes ``stop_at``.
The training accuracy of an epoch is measured, as in a plain training loop, on the batches the model is trained
on (the adversarial ones under FGSM/PGD), from the forward pass that computes the loss.

Labels: ``y`` holds the dataset's original labels; they are mapped to row indices ``0..K-1`` through the sorted
unique labels (``TrainResult.classes``), so the backbone's classifier must have exactly K outputs.

Registry: kind "defense", names naive / fgsm / pgd; each factory is called as
``factory(backbone, x, y, params, device=..., seed=..., progress=...) -> TrainResult`` (same as
``train_backbone`` with the defence name filled in).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from benchmark.errors import DataError, ParamError, TrainingDiverged
from benchmark.progress import progress as progress_bar
from benchmark.registry import REGISTRY, Params

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Parameters


class DefenseParams(Params):
    """Shared by every defence. Sources: 'code' = the paper's published code (V4), CIFAR-100 script."""

    lr: float = Field(1e-4, gt=0)  # code, CIFAR-100 script (SVHN script: 1e-5)
    max_epochs: int = Field(16, ge=1)  # code, CIFAR-100 script: naive 16 (SVHN: 16)
    stop_at: float = Field(0.95, ge=0, le=1.0)  # code, CIFAR-100 script (SVHN: 0.98); 1.0 never stops early
    batch_size: int = Field(64, ge=1)  # code
    optimizer: Literal["adam", "sgd"] = "adam"  # code: Adam
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only; a common value, not from the paper
    weight_decay: float = Field(0.0, ge=0)  # code: Adam without weight decay
    compile: bool = False  # torch.compile the model (CUDA recommended); not from the paper
    # forward passes (attack steps included) under bf16 autocast: "auto" on CUDA only; "bf16" also on the CPU, where
    # it pays on CPUs with bf16 matrix units (measured: small CNN attack step 9-10 -> 5.2 ms on an AMX Xeon) and
    # is slow elsewhere; "float32" never (bit-for-bit repeatable CPU runs are float32). Not from the paper.
    precision: Literal["auto", "bf16", "float32"] = "auto"


def _check_eps(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"eps is an L-inf radius on images in [0, 1] and must be in [0, 1] (for example 3/255 = 0.0118); "
            f"got {value}"
        )
    return value


class AdversarialParams(DefenseParams):
    max_epochs: int = Field(128, ge=1)  # code, CIFAR-100 script: FGSM/PGD 128 (SVHN: 64)
    eps: float = 3 / 255  # code: FGSM and PGD eps 3/255 (CIFAR-100 and SVHN)
    adv_fraction: float = Field(1.0, ge=0, le=1)  # code: every batch fully adversarial
    attack_train_mode: bool = False  # attack the model in eval mode (see adapters.torchattacks_adapter)

    @field_validator("eps")
    @classmethod
    def _eps_in_range(cls, value: float) -> float:
        return _check_eps(value)


class NaiveParams(DefenseParams):
    pass


class FGSMParams(AdversarialParams):
    pass


class PGDParams(AdversarialParams):
    steps: int = Field(40, ge=1)  # code: 40 iterations
    step_size: float | None = Field(None, gt=0)  # None: 0.333 * eps (code)
    random_start: bool = False  # code: no random start


@REGISTRY.register("defense", "naive", "standard training (cross-entropy on clean images)", NaiveParams)
def _naive(backbone: nn.Module, x: torch.Tensor, y: torch.Tensor, params: NaiveParams, **kw: Any) -> TrainResult:
    return train_backbone(backbone, x, y, "naive", params, **kw)


@REGISTRY.register("defense", "fgsm", "FGSM adversarial training (one signed step of size eps)", FGSMParams)
def _fgsm(backbone: nn.Module, x: torch.Tensor, y: torch.Tensor, params: FGSMParams, **kw: Any) -> TrainResult:
    return train_backbone(backbone, x, y, "fgsm", params, **kw)


@REGISTRY.register("defense", "pgd", "PGD adversarial training (L-inf, Madry et al.)", PGDParams)
def _pgd(backbone: nn.Module, x: torch.Tensor, y: torch.Tensor, params: PGDParams, **kw: Any) -> TrainResult:
    return train_backbone(backbone, x, y, "pgd", params, **kw)


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


def _resolve(defense_name: str, params: Params | dict[str, Any] | None) -> Params:
    return REGISTRY.get("defense", defense_name).resolve(params)


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


def _make_generator(defense_name: str, model: nn.Module, p: Params):  # noqa: ANN202
    if defense_name == "naive" or not isinstance(p, AdversarialParams) or p.adv_fraction == 0:
        return None
    from adapters.torchattacks_adapter import make_example_generator

    if isinstance(p, PGDParams):
        return make_example_generator(
            "pgd", model, p.eps, p.steps, p.step_size, p.random_start, model_training=p.attack_train_mode
        )
    return make_example_generator("fgsm", model, p.eps, model_training=p.attack_train_mode)


def train_backbone(
    backbone: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    defense_name: str,
    params: Params | dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    classes: Sequence[int] | torch.Tensor | None = None,
) -> TrainResult:
    """Train ``backbone`` (in place) on images ``x`` (float [0, 1], NCHW, CPU) and original labels ``y``.

    The backbone's initial weights are the caller's (seed them before building it). ``seed`` drives the
    shuffling and any randomness of the attack (PGD random start); on the CPU the same seed and the same initial
    weights give bit-identical weights. The backbone is returned in eval mode, on ``device``.
    ``classes``: the label of each output row (e.g. the dataset's declared classes, so a class missing from a
    small sample keeps its row); default: the sorted unique labels of ``y``. The backbone needs at least that many
    outputs (extra rows are never trained towards). Raises ``TrainingDiverged`` when an epoch's loss is NaN or
    infinite.
    """
    p = _resolve(defense_name, params)
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
    checked_outputs = False

    fork_devices = [device] if cuda else []
    with torch.random.fork_rng(devices=fork_devices), torch.enable_grad():
        torch.manual_seed(seed)  # PGD random start draws from the global generator of the device
        example_generator = _make_generator(defense_name, model, p)
        adv_fraction = p.adv_fraction if isinstance(p, AdversarialParams) else 0.0
        backbone.train()
        epoch_iter = progress_bar(range(p.max_epochs), desc=f"train {defense_name}") if progress else range(
            p.max_epochs
        )
        for epoch in epoch_iter:
            _sync(device)
            start = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device, dtype=torch.float32)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for i in range(0, n, p.batch_size):
                idx = perm[i : i + p.batch_size]
                xb, yb = xd[idx], yd[idx]
                if example_generator is not None:
                    n_adv = len(xb) if adv_fraction >= 1 else int(round(adv_fraction * len(xb)))
                    if n_adv > 0:
                        with _autocast(device, p.precision):
                            x_adv = example_generator(xb[:n_adv], yb[:n_adv])
                        xb = torch.cat([x_adv.to(xb.dtype), xb[n_adv:]]) if n_adv < len(xb) else x_adv
                with _autocast(device, p.precision):
                    out = model(xb)
                if not checked_outputs:
                    checked_outputs = True
                    if out.ndim != 2 or out.shape[1] < n_classes:
                        raise ValueError(
                            f"the backbone outputs {tuple(out.shape[1:])} scores per image but the training data "
                            f"has {n_classes} classes; build the backbone with num_classes={n_classes}"
                        )
                loss = F.cross_entropy(out.float(), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * len(yb)
                correct += (out.detach().argmax(dim=1) == yb).sum()
            epoch_loss = loss_sum.item() / n  # syncs
            epoch_acc = correct.item() / n
            seconds = time.perf_counter() - start
            total_time += seconds
            curves["train_loss"].append(epoch_loss)
            curves["train_acc"].append(epoch_acc)
            curves["epoch_seconds"].append(seconds)
            if not math.isfinite(epoch_loss):
                raise TrainingDiverged(
                    f"{defense_name} training diverged: the loss became {epoch_loss} in epoch {epoch + 1} "
                    f"(lr={p.lr}, optimizer={p.optimizer}); try a smaller learning rate"
                )
            if epoch_acc > p.stop_at:
                stopped_early = epoch + 1 < p.max_epochs
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
    from adapters.torchattacks_adapter import make_example_generator

    try:
        _check_eps(eps)
    except ValueError as err:
        raise ParamError(str(err)) from None
    target = _targets(y, classes)
    if len(x) == 0:
        return float("nan")
    generate = make_example_generator("pgd", model, eps, steps, step_size, random_start)
    return _accuracy(model, x, target, torch.device(device), batch_size, perturb=generate)
