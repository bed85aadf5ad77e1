"""What ART's poisoning attacks share: extractor + clean head as ART's ``PyTorchClassifier`` (its feature layer
named), the CUDA device ART computes on, numpy's global seed ART draws from, and the projection of its poisons."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from adapters.attacks.base import AttackContext

FEATURE_LAYER = "features"


class _Features(nn.Module):
    """The frozen extractor as one named layer; ART registers its activation hook on this wrapper."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x).flatten(1)


@contextlib.contextmanager
def cuda_device(ctx: AttackContext) -> Iterator[None]:
    """ART puts a "gpu" classifier on the *current* CUDA device: make that ctx.device."""
    if ctx.device.type == "cuda":
        with torch.cuda.device(ctx.device):
            yield
    else:
        yield


@contextlib.contextmanager
def numpy_seed(seed: int) -> Iterator[None]:
    """ART draws from numpy's global generator; seed it for the call and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


def art_classifier(ctx: AttackContext):
    """ART's PyTorchClassifier around extractor + clean head; layer ``"features"`` outputs the feature vector."""
    from art.estimators.classification import PyTorchClassifier

    model = nn.Sequential(OrderedDict([(FEATURE_LAYER, _Features(ctx.extractor)), ("head", ctx.head.as_module())]))
    model.to(ctx.device).eval()
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(ctx.x_train.shape[1:]),
        nb_classes=len(ctx.head.classes),
        clip_values=(0.0, 1.0),
        device_type="gpu" if ctx.device.type == "cuda" else "cpu",
    )



def project_linf(bases: torch.Tensor, poisons: torch.Tensor, eps: float) -> torch.Tensor:
    """ART's poisons moved onto the eps-ball around their bases and into [0, 1]."""
    return (bases + (poisons - bases).clamp(-eps, eps)).clamp(0.0, 1.0)
