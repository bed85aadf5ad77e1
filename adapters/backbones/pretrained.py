"""Backbones people already have: RobustBench's model zoo by name and timm's pretrained models.

The classifier is removed (RobustBench: the last linear layer is replaced by the identity; timm:
``reset_classifier(0)``), so ``features`` maps an image in [0, 1] to the representation the classifier read; their
own input normalisation is applied inside ``features`` (RobustBench models normalise in their own ``forward``; timm's
mean and std come from the model's pretrained configuration). These backbones are not trained on the external data:
``Backbone.pretrained`` tells the cell to skip that stage (and ``Architecture.pretrained`` the dry-run estimate).
Weights are never downloaded behind the user's back in a test: a missing RobustBench checkpoint or timm weights
without network fail with one line naming the model and the download it needs.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from adapters.backbones.base import (
    Architecture,
    Backbone,
    PretrainedWeightsError,
    ToRGB,
)
from benchmark.core.registry import Params, register


class Normalise(nn.Module):
    """(x - mean) / std per channel: the input normalisation a pretrained model was trained with."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def strip_last_linear(model: nn.Module) -> int:
    """Replace the model's last ``nn.Linear`` (its classifier) by the identity, in place; its input width."""
    name, last = None, None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name, last = n, m
    if last is None or name is None:
        raise PretrainedWeightsError(f"{type(model).__name__} has no linear classifier to remove")
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return last.in_features


def frozen_backbone(features: nn.Module, feature_dim: int, num_classes: int) -> Backbone:
    backbone = Backbone(nn.Sequential(ToRGB(), features), feature_dim, num_classes)
    backbone.pretrained = True
    backbone.requires_grad_(False)
    return backbone.eval()


# ----------------------------------------------------------------------------------------------------------------
# RobustBench


def _robustbench():
    """robustbench 1.1.1 (PyPI) imports ``autoattack``, which its PyPI dependency installs as ``pyautoattack``."""
    if "autoattack" not in sys.modules:
        try:
            import autoattack  # noqa: F401
        except ImportError:
            import pyautoattack

            sys.modules["autoattack"] = pyautoattack
    with warnings.catch_warnings():  # robustbench imports pkg_resources and torch.jit.interface, both deprecated
        for category in (UserWarning, DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        import robustbench.utils
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return robustbench.utils, model_dicts, BenchmarkDataset, ThreatModel


class RobustBenchParams(Params):
    model: str  # a RobustBench model name, e.g. Wong2020Fast
    dataset: Literal["cifar10", "cifar100", "imagenet"] = "cifar10"
    threat: Literal["Linf", "L2", "corruptions"] = "Linf"
    # where RobustBench keeps its checkpoints: <model_dir>/<dataset>/<threat>/<model>.pt
    model_dir: str = Field(default_factory=lambda: str(Path.home() / ".cache" / "robustbench"))

    @model_validator(mode="after")
    def _known_model(self) -> RobustBenchParams:
        _, zoo, dataset, threat = _robustbench()
        known = zoo[dataset(self.dataset)][threat(self.threat)]
        if self.model not in known:
            some = ", ".join(sorted(known)[:5])
            raise ValueError(f"'{self.model}' is not in RobustBench's {self.dataset}/{self.threat} zoo (e.g. {some})")
        return self


@register
class RobustBench(Architecture):
    name = "robustbench"
    description = "a RobustBench model-zoo model by name, frozen, its classifier removed (no external training)"
    Params = RobustBenchParams
    pretrained = True

    def build(self, num_classes: int) -> Backbone:
        p = self.params
        utils, zoo, dataset, threat = _robustbench()
        entry = zoo[dataset(p.dataset)][threat(p.threat)][p.model]
        path = Path(p.model_dir) / p.dataset / p.threat / f"{p.model}.pt"
        if not path.is_file():
            raise PretrainedWeightsError(
                f"backbone 'robustbench': {p.model} ({p.dataset}, {p.threat}) needs its checkpoint at {path} "
                f"(RobustBench downloads it from Google Drive id {entry['gdrive_id']}: run "
                f"robustbench.utils.load_model('{p.model}', '{p.model_dir}', '{p.dataset}', "
                f"'{p.threat}') once with internet)"
            )
        try:
            model = utils.load_model(p.model, p.model_dir, p.dataset, p.threat)
        except Exception as err:  # a damaged or foreign checkpoint
            reason = " ".join(str(err).split())[:300]
            raise PretrainedWeightsError(f"backbone 'robustbench': {path} could not be loaded ({reason})") from None
        return frozen_backbone(model, strip_last_linear(model), num_classes)

# ----------------------------------------------------------------------------------------------------------------
# timm


class TimmParams(Params):
    model: str  # a timm model name with its pretrained tag, e.g. resnet18.a1_in1k
    checkpoint: str | None = None  # a local weights file instead of the Hugging Face Hub download

    @model_validator(mode="after")
    def _known_model(self) -> TimmParams:
        import timm

        if not timm.is_model(self.model):
            raise ValueError(f"'{self.model}' is not a timm model (see timm.list_models())")
        return self


@register
class Timm(Architecture):
    name = "timm"
    description = (
        "a timm pretrained model, frozen, classifier removed, its mean/std normalisation applied (no external training)"
    )
    Params = TimmParams
    pretrained = True

    def build(self, num_classes: int) -> Backbone:
        import timm

        p = self.params
        try:
            model = timm.create_model(p.model, pretrained=p.checkpoint is None, checkpoint_path=p.checkpoint or "")
        except Exception as err:  # offline (no Hub), or a checkpoint that does not fit the model
            reason = " ".join(str(err).split())[:300]
            where = p.checkpoint or f"the Hugging Face Hub (hf-hub:timm/{p.model})"
            raise PretrainedWeightsError(
                f"backbone 'timm': {p.model} needs its pretrained weights from {where}, which could not be loaded "
                f"({type(err).__name__}: {reason}); download them once with internet or give `checkpoint: FILE`"
            ) from None
        cfg = model.pretrained_cfg
        model.reset_classifier(0)  # timm's own pooled pre-logits features
        features = nn.Sequential(Normalise(cfg["mean"], cfg["std"]), model)
        return frozen_backbone(features, model.num_features, num_classes)
