"""VGG13 as the paper's code builds it: torchvision's VGG13 without batch norm, ``avgpool`` replaced by identity,
so a 32x32 input gives a 512-d feature (512 channels x 1 x 1 after five max-pools); a single Linear(512, n_classes)
classifier during training. Inputs in [0, 1], no mean/std normalisation (the paper's code uses ToTensor only).

Only torchvision's ``features`` part is built (``torchvision.models.vgg.make_layers(cfgs["B"])`` with the
initialisation ``torchvision.models.VGG`` applies to it): the ImageNet classifier (102M parameters) would be
replaced anyway. ``pretrained: imagenet`` loads the ``features.*`` tensors of VGG13_Weights.IMAGENET1K_V1.

The feature size is 512 * (H/32) * (W/32): the 512-d classifier assumes 32x32 input (``image_size: 32``).
"""

from __future__ import annotations

import os
from typing import Literal

from torch import nn

from adapters.backbones.base import (
    Architecture,
    Backbone,
    PretrainedWeightsError,
    ToRGB,
)
from benchmark.core.registry import Params, register


class VGG13Params(Params):
    # The paper's code starts from ImageNet weights; "none" trains from scratch (no download needed).
    pretrained: Literal["none", "imagenet"] = "none"


def vgg13_conv_layers() -> nn.Sequential:
    """torchvision's VGG13 ``features`` (config "B", no batch norm), initialised as torchvision.models.VGG does."""
    from torchvision.models.vgg import cfgs, make_layers

    layers = make_layers(cfgs["B"], batch_norm=False)
    for m in layers.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
    return layers


def _imagenet_features_state_dict() -> dict:
    from torch.hub import get_dir
    from torchvision.models import VGG13_Weights

    weights = VGG13_Weights.IMAGENET1K_V1
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # URLError/OSError offline, RuntimeError for a damaged or partial file
        reason = " ".join(str(err).split())[:300] or "no details"
        raise PretrainedWeightsError(
            f"backbone 'vgg13': ImageNet weights (VGG13_Weights.IMAGENET1K_V1, {weights.url}) could not be downloaded "
            f"or loaded into {os.path.join(get_dir(), 'checkpoints')} ({type(err).__name__}: {reason}); "
            "they need internet once (then cached under TORCH_HOME), or use `pretrained: none`"
        ) from None
    return {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}


@register
class VGG13(Architecture):
    name = "vgg13"
    description = "VGG13 without BN as in the paper's code (512-d feature at 32x32; optional ImageNet init)"
    Params = VGG13Params

    def build(self, num_classes: int) -> Backbone:
        conv = vgg13_conv_layers()
        if self.params.pretrained == "imagenet":
            try:
                conv.load_state_dict(_imagenet_features_state_dict())
            except RuntimeError as err:  # shapes/keys that do not match
                reason = " ".join(str(err).split())[:300]
                raise PretrainedWeightsError(f"backbone 'vgg13': ImageNet weights do not fit ({reason})") from None
        features = nn.Sequential(ToRGB(), conv, nn.Flatten())  # (torchvision's avgpool -> identity)
        return Backbone(features, 512, num_classes)
