"""Backbones: VGG13 (paper style), CIFAR-style ResNet-18, a small CNN for CPU, RobustBench and timm pretrained
models, and the frozen feature extractor.

Importing this package registers the built-in backbone components (registry kind ``"backbone"``): each an
``Architecture`` whose ``build(num_classes)`` returns the ``Backbone`` module.
"""

from adapters.backbones import pretrained, resnet, small_cnn, vgg  # noqa: F401  (register built-ins)
from adapters.backbones.base import (
    Architecture,
    Backbone,
    FrozenFeatures,
    PretrainedWeightsError,
    build_backbone,
    extract_features,
    feature_extractor,
)

__all__ = [
    "Architecture",
    "Backbone",
    "FrozenFeatures",
    "PretrainedWeightsError",
    "build_backbone",
    "extract_features",
    "feature_extractor",
]
