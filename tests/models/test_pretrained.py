"""RobustBench and timm backbones from checkpoints the test saves itself (real model classes, random weights) on
real CIFAR-10 images: classifier removed, normalisation applied, frozen, offline failures in one line, and a cell
that skips the external training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from adapters.backbones import PretrainedWeightsError, build_backbone, feature_extractor
from adapters.backbones.pretrained import _robustbench
from benchmark.cell.pipeline import RunOptions, run_cell
from benchmark.core.errors import SuiteError
from benchmark.suite import expand, parse_suite

pytestmark = pytest.mark.usefixtures("one_thread")

CIFAR = ROOT.parent / "shared" / "data" / "cifar10_dev.npz"


def cifar_path() -> Path:
    if not CIFAR.exists():
        pytest.skip(f"real CIFAR-10 images not found at {CIFAR} (they ship in ../shared/data beside the repo)")
    return CIFAR


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    x = np.load(cifar_path())["x_train"][:16]
    return torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2) / 255


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """RobustBench's Wong2020Fast architecture with random weights, saved where RobustBench looks for it."""
    _, zoo, dataset, threat = _robustbench()
    torch.manual_seed(0)
    net = zoo[dataset("cifar10")][threat("Linf")]["Wong2020Fast"]["model"]().eval()
    root = tmp_path_factory.mktemp("robustbench")
    (root / "cifar10" / "Linf").mkdir(parents=True)
    torch.save({"state_dict": net.state_dict()}, root / "cifar10" / "Linf" / "Wong2020Fast.pt")
    return root, net


def test_robustbench_features_are_the_models_penultimate_layer(zoo_dir, images) -> None:
    root, net = zoo_dir
    backbone = build_backbone("robustbench", {"model": "Wong2020Fast", "model_dir": str(root)}, num_classes=2)
    assert backbone.pretrained and backbone.feature_dim == 512
    assert not any(p.requires_grad for p in backbone.features.parameters())
    feats = feature_extractor(backbone)(images)
    assert feats.shape == (16, 512)
    with torch.no_grad():  # the original classifier on our features gives the original model's logits
        assert torch.allclose(net.linear(feats), net(images), atol=1e-4)
    # the model normalises its input itself (CIFAR-10 mean/std): a shifted image gives other features
    assert not torch.allclose(feature_extractor(backbone)(images * 0.5), feats)


def test_robustbench_missing_checkpoint_is_one_line_naming_the_download(tmp_path) -> None:
    with pytest.raises(PretrainedWeightsError) as err:
        build_backbone("robustbench", {"model": "Wong2020Fast", "model_dir": str(tmp_path)}, num_classes=2)
    msg = str(err.value)
    assert "\n" not in msg and "Wong2020Fast" in msg and "Google Drive id" in msg and str(tmp_path) in msg


def test_unknown_robustbench_model_fails_at_load_time(smoke_dict) -> None:
    smoke_dict["backbones"] = {"rb": {"name": "robustbench", "params": {"model": "NoSuch2099"}}}
    with pytest.raises(SuiteError, match="backbones.rb.params.*NoSuch2099.*not in RobustBench's cifar10/Linf zoo"):
        parse_suite(smoke_dict)


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path_factory.mktemp("timm") / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_timm_features_are_pre_logits_of_the_normalised_image(timm_checkpoint, images) -> None:
    path, net = timm_checkpoint
    backbone = build_backbone("timm", {"model": "resnet18", "checkpoint": str(path)}, num_classes=3)
    assert backbone.pretrained and backbone.feature_dim == 512
    feats = feature_extractor(backbone)(images)
    cfg = net.pretrained_cfg
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net.forward_head(net.forward_features((images - mean) / std), pre_logits=True)
    assert torch.allclose(feats, expected, atol=1e-4)


def test_timm_without_weights_is_one_line_naming_the_download(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedWeightsError) as err:
        build_backbone("timm", {"model": "resnet18.a1_in1k"}, num_classes=2)
    msg = str(err.value)
    assert "\n" not in msg and "resnet18.a1_in1k" in msg and "hf-hub:timm/resnet18.a1_in1k" in msg


def test_cell_with_a_robustbench_backbone_skips_external_training(zoo_dir, tmp_path) -> None:
    root, _ = zoo_dir
    data = {"name": "npz", "params": {"path": str(cifar_path())}, "classes": [0, 1], "train_limit": 60,
            "test_limit": 40}
    suite = {
        "name": "pretrained",
        "device": "cpu",
        "datasets": {"cifar": {"external": data, "target": data}},
        "backbones": {"wong": {"name": "robustbench", "params": {"model": "Wong2020Fast", "model_dir": str(root)}}},
        "defenses": {"naive": {}},
        "attacks": {"lf": {"name": "label_flip", "params": {"rate": 0.1}}},
        "evaluation": {"robust_eps": 0.03, "robust_steps": 2, "robust_samples": 8},
    }
    (cell,) = expand(parse_suite(suite))
    rec = run_cell(cell, RunOptions(device="cpu", cache_dir=str(tmp_path)))
    assert rec.status == "FINISHED", rec.error
    assert rec.metrics["external_training_skipped"] == 1.0
    assert "train_seconds" not in rec.metrics and not rec.curves
    assert any("external training skipped" in line for line in rec.logs)
    assert 0.0 <= rec.metrics["clean_accuracy"] <= 1.0


def test_dry_run_counts_no_training_for_a_pretrained_backbone(zoo_dir, smoke_dict) -> None:
    from benchmark.grid.estimate import estimate

    root, _ = zoo_dir
    trained = parse_suite(smoke_dict)
    assert estimate(trained, expand(trained), gpu=False).seconds["training"] > 0
    smoke_dict["backbones"] = {"wong": {"name": "robustbench", "params": {"model": "Wong2020Fast",
                                                                            "model_dir": str(root)}}}
    pretrained = parse_suite(smoke_dict)
    assert estimate(pretrained, expand(pretrained), gpu=False).seconds["training"] == 0.0
