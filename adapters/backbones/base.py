"""Backbones: a feature network plus a linear classifier used only while training on the external data.

A backbone component (registry kind ``"backbone"``) is an ``Architecture``: its ``Params`` hold the architecture's
settings and ``build(num_classes)`` returns a fresh ``Backbone`` (an ``nn.Module``). Every backbone takes images
(N, 3, H, W) in [0, 1] (no mean/std normalisation, as in the paper's code); a 1-channel batch is repeated to 3
channels by the first layer of ``features`` (the paper's code does the same for MNIST), so grey data also works.
Channels-last memory format and mixed precision are the trainer's business.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.core.errors import DataError
from benchmark.core.registry import Configurable, make


class PretrainedWeightsError(DataError):
    """Pretrained weights that cannot be downloaded or loaded (one line, no traceback)."""


class ToRGB(nn.Module):
    """Repeat a 1-channel batch to 3 channels; 3-channel batches pass through unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] == 1:
            return x.expand(-1, 3, -1, -1)
        return x


class ChannelsLast(nn.Module):
    """Put a 4-D batch in channels-last layout (a no-op when it already is): the layers after it then run in that
    layout, which the CPU kernels of some networks run faster (measured in ``small_cnn``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class Backbone(nn.Module):
    """``features``: image (N, 3, H, W) in [0, 1] -> (N, feature_dim); ``classifier``: feature_dim -> num_classes.

    ``pretrained``: the features come trained and frozen (``adapters/backbones/pretrained.py``); the cell skips the
    external training."""

    pretrained: bool = False

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.feature_dim = int(feature_dim)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FrozenFeatures(nn.Module):
    """A copy of a backbone's ``features``: always in eval mode, parameters without gradients.

    Gradients with respect to the *input* still flow (attacks need them). ``train()`` is a no-op, so an attack or a
    trainer that toggles modes cannot update batch-norm statistics of the frozen extractor.
    """

    def __init__(self, features: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.net = features
        self.feature_dim = int(feature_dim)
        self.net.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenFeatures:  # noqa: ARG002 - frozen on purpose
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Architecture(Configurable):
    """Base class of every backbone component: subclasses set ``name``, ``description``, ``Params`` and implement
    ``build``. ``pretrained``: its features come trained and frozen (the dry-run estimate counts no training)."""

    kind = "backbone"
    pretrained: ClassVar[bool] = False

    def build(self, num_classes: int) -> Backbone:
        """A freshly initialised backbone whose training classifier has ``num_classes`` outputs."""
        raise NotImplementedError


def build_backbone(name: str, params: dict[str, Any] | None, num_classes: int) -> Backbone:
    """Look ``name`` up in the registry, validate ``params`` (ParamError on a bad key) and build it."""
    architecture = make("backbone", name, params)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    model = architecture.build(num_classes)
    if not isinstance(model, Backbone):
        raise TypeError(f"backbone '{name}' built {type(model).__name__}, not a Backbone")
    return model


def feature_extractor(backbone: Backbone) -> FrozenFeatures:
    """The backbone without its last layer, as a frozen copy (eval mode, no parameter gradients).

    A deep copy, so freezing it does not touch the backbone (which may still be trained or cached); it stays on the
    backbone's device.
    """
    return FrozenFeatures(copy.deepcopy(backbone.features), backbone.feature_dim)


def extract_features(
    extractor: nn.Module, x: torch.Tensor, device: torch.device | str, batch_size: int = 1024
) -> torch.Tensor:
    """Features of images ``x`` without gradients, ``batch_size`` at a time on ``device``; float32 on the CPU."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(extractor(x[i : i + batch_size].to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)
