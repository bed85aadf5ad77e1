"""A fitted linear head as plain tensors, so attacks can differentiate through backbone + head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LinearHead:
    """Scores = features @ weight.T + bias; the prediction is ``classes[argmax(scores)]``.

    A binary sklearn head (one weight row) is stored as two rows ``[-w, w]`` so that every head, binary or not,
    predicts by argmax over its classes.
    """

    weight: torch.Tensor  # (K, D) float32
    bias: torch.Tensor  # (K,) float32
    classes: torch.Tensor  # (K,) int64, original label of each row

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(features.device, features.dtype)
        b = self.bias.to(features.device, features.dtype)
        return features @ w.T + b

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        idx = self.scores(features).argmax(dim=1)
        return self.classes.to(idx.device)[idx]

    def index_of(self, labels: torch.Tensor) -> torch.Tensor:
        """Row index of each label (for losses over the head's scores)."""
        lookup = {int(c): i for i, c in enumerate(self.classes)}
        return torch.tensor([lookup[int(v)] for v in labels], dtype=torch.long, device=labels.device)

    def as_module(self) -> nn.Linear:
        layer = nn.Linear(self.weight.shape[1], self.weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            layer.bias.copy_(self.bias)
        return layer


class HeadOnFeatures(nn.Module):
    """Backbone feature extractor followed by a fitted linear head: one differentiable torch model.

    Its outputs are the head's scores in the order of ``head.classes``; labels passed to attacks on this model
    must be row indices (``head.index_of``).
    """

    def __init__(self, extractor: nn.Module, head: LinearHead) -> None:
        super().__init__()
        self.extractor = extractor
        self.linear = head.as_module()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.extractor(x))
