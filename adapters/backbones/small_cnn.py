"""A tiny CNN for CPU suites: three conv blocks, global average pooling, a linear layer to ``feature_dim``, ReLU.

Blocks: conv3x3(3 -> w) maxpool2 ReLU, conv3x3(w -> 2w) maxpool2 ReLU, conv3x3(2w -> 4w) ReLU (batch norm after each
conv when ``batch_norm``). Max-pooling before the ReLU (the same function, ReLU being non-decreasing) and the
channels-last layout make it faster on the CPU; ``centre_input`` maps [0, 1] to (x - 0.5) / 0.25 inside the
network. The measurements behind these choices are in docs/components.md.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from adapters.backbones.base import Architecture, Backbone, ChannelsLast, ToRGB
from benchmark.core.registry import Params, register


class SmallCNNParams(Params):
    width: int = Field(16, ge=1, le=1024)  # channels of the first block; doubled in each of the next two
    feature_dim: int = Field(64, ge=1)
    batch_norm: bool = False
    centre_input: bool = True  # (x - 0.5) / 0.25 as the first layer; see the module docstring for the measurement


class CentreInput(nn.Module):
    """x -> (x - 0.5) / 0.25: a fixed map that centres [0, 1] images (no learned or data-fitted statistics)."""

    def forward(self, x):
        return (x - 0.5) * 4.0


def _block(cin: int, cout: int, bn: bool, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if pool:  # before the ReLU: same function, a quarter of the ReLU work (module docstring)
        layers.append(nn.MaxPool2d(2))
    layers.append(nn.ReLU(inplace=True))
    return layers


@register
class SmallCNN(Architecture):
    name = "small_cnn"
    description = "tiny 3-block CNN for CPU runs (width w, 2w, 4w; global pool; feature_dim)"
    Params = SmallCNNParams

    def build(self, num_classes: int) -> Backbone:
        p = self.params
        w, bn = p.width, p.batch_norm
        features = nn.Sequential(
            ToRGB(),
            CentreInput() if p.centre_input else nn.Identity(),
            ChannelsLast(),
            *_block(3, w, bn, pool=True),
            *_block(w, 2 * w, bn, pool=True),
            *_block(2 * w, 4 * w, bn, pool=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * w, p.feature_dim),
            nn.ReLU(inplace=True),
        )
        return Backbone(features, p.feature_dim, num_classes)
