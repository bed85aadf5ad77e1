"""The defense interface: how a backbone is trained on the external data.

A defense is a small class like an attack: the constructor holds and validates its hyper-parameters (a pydantic
model, cross-parameter checks in ``_check_params``), ``training_batch`` turns a model and a clean batch into the
batch it is trained on. The training loop (optimizer, epochs, precision) is the same for every defense and reads
its settings from ``DefenseParams``, which every defense's ``Params`` extends. A defense whose loss is not
cross-entropy on one batch (TRADES) overrides ``training_loss``; one that takes several optimizer steps per
minibatch (free adversarial training) returns their number from ``replays``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from benchmark.core.registry import Configurable, Params


class DefenseParams(Params):
    """The training loop's settings, shared by every defense. 'code' = the paper's published code (V4), CIFAR-100
    script."""

    lr: float = Field(1e-4, gt=0)  # code, CIFAR-100 script (SVHN script: 1e-5)
    max_epochs: int = Field(16, ge=1)  # code, CIFAR-100 script: naive 16 (SVHN: 16)
    stop_at: float = Field(0.95, ge=0, le=1.0)  # code, CIFAR-100 script (SVHN: 0.98); 1.0 never stops early
    batch_size: int = Field(64, ge=1)  # code
    optimizer: Literal["adam", "sgd"] = "adam"  # code: Adam
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only; a common value, not from the paper
    weight_decay: float = Field(0.0, ge=0)  # code: Adam without weight decay
    compile: bool = False  # torch.compile the model (CUDA recommended); not from the paper
    # forward passes (the defense's own included) under bf16 autocast: "auto" on CUDA only; "bf16" also on the CPU,
    # where it pays on CPUs with bf16 matrix units and is slow elsewhere (docs/performance.md); "float32" never
    # (bit-for-bit repeatable CPU runs are float32). Not from the paper.
    precision: Literal["auto", "bf16", "float32"] = "auto"


def check_eps(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"eps is an L-inf radius on images in [0, 1] and must be in [0, 1] (for example 3/255 = 0.0118); "
            f"got {value}"
        )
    return value


class EpsParams(DefenseParams):
    """A defense that perturbs training images inside an L-inf ball of radius ``eps``."""

    eps: float = 3 / 255  # code: FGSM and PGD eps 3/255 (CIFAR-100 and SVHN)

    @field_validator("eps")
    @classmethod
    def _eps_in_range(cls, value: float) -> float:
        return check_eps(value)


class Defense(Configurable):
    """Base class of every defense.

    Subclasses set ``name``, ``description``, ``Params`` (a ``DefenseParams`` model) and implement
    ``training_batch`` (or ``training_loss``); ``passes_per_image`` says what one training image costs per epoch
    and replay, for the dry-run estimate.
    """

    kind = "defense"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[DefenseParams]] = DefenseParams

    def passes_per_image(self) -> float:
        """Forward+backward passes through the backbone per training image (the update itself is one)."""
        return 1.0

    def training_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The images the model is trained on for the clean batch ``x`` (labels ``y``: row indices of the outputs).

        Called in the training loop under its autocast; randomness must come from torch's global generator, which
        the loop seeds. The default is the clean batch (standard training)."""
        return x

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss minimised on the clean batch ``x`` and the logits whose accuracy is the training accuracy.

        The default is cross-entropy on ``training_batch``; called under the loop's autocast."""
        out = model(self.training_batch(model, x, y))
        return F.cross_entropy(out.float(), y), out

    def replays(self) -> int:
        """Optimizer steps on each minibatch, in a row (free adversarial training's m). The loop then runs
        ceil(max_epochs / replays) epochs, so ``max_epochs`` keeps counting passes over the data."""
        return 1

