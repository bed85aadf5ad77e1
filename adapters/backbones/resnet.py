"""ResNet-18 for 32x32 images (CIFAR style): 3x3 stem without max-pool, BasicBlocks [2, 2, 2, 2], global average
pooling to a 512-d feature. The paper names ResNet as a second backbone; its code has none, so this is the common
CIFAR variant (He et al. 2016, as in widely used CIFAR training code), trained from scratch.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from adapters.backbones.base import Architecture, Backbone, ToRGB
from benchmark.core.registry import Params, register


class ResNet18Params(Params):
    pretrained: Literal["none"] = "none"  # no CIFAR-style ImageNet weights exist; from scratch only


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet18_features() -> nn.Sequential:
    layers: list[nn.Module] = [
        ToRGB(),
        nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


@register
class ResNet18(Architecture):
    name = "resnet18"
    description = "CIFAR-style ResNet-18 (3x3 stem, no max-pool; 512-d feature)"
    Params = ResNet18Params

    def build(self, num_classes: int) -> Backbone:
        return Backbone(resnet18_features(), 512, num_classes)
