"""Backbones: shapes, the frozen feature extractor, parameter validation, and the ImageNet-weights error."""

from __future__ import annotations

import socket

import pytest
import torch

from adapters.backbones import Backbone, build_backbone, feature_extractor
from benchmark.core.errors import DataError, ParamError
from benchmark.core.registry import REGISTRY


@pytest.mark.parametrize(
    ("name", "params", "dim"),
    [
        ("small_cnn", {}, 64),
        ("small_cnn", {"width": 8, "feature_dim": 32, "batch_norm": True}, 32),
        ("vgg13", {}, 512),
        ("resnet18", {}, 512),
    ],
)
def test_output_shapes(name, params, dim):
    torch.manual_seed(0)
    model = build_backbone(name, params, num_classes=7)
    assert isinstance(model, Backbone) and model.feature_dim == dim
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert model.features(x).shape == (2, dim)
        assert model(x).shape == (2, 7)
        assert model(x[:, :1]).shape == (2, 7)  # one grey channel is repeated to three
    assert model.classifier.in_features == dim and model.classifier.out_features == 7


def test_vgg13_is_torchvision_features_without_bn():
    from torchvision.models import vgg13

    ours = build_backbone("vgg13", {}, 10)
    reference = vgg13(weights=None).features
    convs = [m for m in ours.features.modules() if isinstance(m, torch.nn.Conv2d)]
    tv = [m for m in reference.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.weight.shape for c in convs] == [c.weight.shape for c in tv]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.modules())
    # Same state-dict keys as torchvision's `features`, so ImageNet weights load by name.
    conv_part = ours.features[1]
    assert set(conv_part.state_dict()) == set(reference.state_dict())


def test_feature_extractor_is_frozen_copy():
    torch.manual_seed(0)
    model = build_backbone("small_cnn", {"batch_norm": True}, 3)
    model.train()
    ext = feature_extractor(model)
    assert not ext.training and all(not p.requires_grad for p in ext.parameters())
    ext.train()  # stays in eval mode: an attack cannot update batch-norm statistics
    assert not ext.training and not any(m.training for m in ext.modules())
    assert model.training and all(p.requires_grad for p in model.parameters())  # the backbone is untouched
    assert ext.feature_dim == 64
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    out = ext(x)
    assert out.shape == (4, 64)
    out.sum().backward()  # gradients reach the input (attacks need them)
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    running = [m.running_mean.clone() for m in ext.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ext(torch.rand(4, 3, 32, 32))
    after = [m.running_mean for m in ext.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(running, after, strict=True))
    with torch.no_grad():
        model.eval()
        assert torch.allclose(ext(x), model.features(x))


def test_params_are_validated():
    with pytest.raises(ParamError, match="depth"):
        build_backbone("small_cnn", {"depth": 3}, 10)
    with pytest.raises(ParamError, match="pretrained"):
        build_backbone("resnet18", {"pretrained": "imagenet"}, 10)
    with pytest.raises(ParamError, match="pretrained"):
        build_backbone("vgg13", {"pretrained": "cifar"}, 10)
    with pytest.raises(ParamError, match="unknown backbone"):
        build_backbone("vgg19", {}, 10)
    assert set(REGISTRY.names("backbone")) >= {"small_cnn", "vgg13", "resnet18"}


def test_vgg13_imagenet_weights_fail_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)
    try:
        with pytest.raises(DataError) as info:
            build_backbone("vgg13", {"pretrained": "imagenet"}, 10)
    finally:
        socket.setdefaulttimeout(old)
    msg = str(info.value)
    assert "ImageNet weights" in msg and "pretrained: none" in msg and "\n" not in msg
    assert str(tmp_path / "torch-home") in msg


@pytest.mark.parametrize("batch_norm", [False, True])
def test_small_cnn_layout_and_pool_order_do_not_change_its_function(batch_norm):
    """The small CNN pools before its ReLUs and runs channels-last for speed; it must compute what the textbook
    order (conv, ReLU, pool) computes in NCHW with the same weights."""
    torch.manual_seed(0)
    model = build_backbone("small_cnn", {"width": 8, "feature_dim": 16, "batch_norm": batch_norm}, num_classes=3)
    model.eval()
    x = torch.rand(5, 3, 32, 32)

    def reference(x: torch.Tensor) -> torch.Tensor:
        h = x
        layers = list(model.features)
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, torch.nn.MaxPool2d):  # swap back: ReLU first, then pool
                h = torch.relu(h)
                h = layer(h)
                i += 2  # skip the ReLU that followed the pool
                continue
            if type(layer).__name__ != "ChannelsLast":
                h = layer(h.contiguous()) if isinstance(layer, torch.nn.Conv2d) else layer(h)
            i += 1
        return h

    with torch.no_grad():
        got, want = model.features(x), reference(x)
    assert got.shape == want.shape == (5, 16)
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.features) == 2
