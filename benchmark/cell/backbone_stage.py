"""The cell's backbone stage: the backbone trained on the external data under the defense, cached under
``backbone_key``. ``benchmark.grid.pretrain`` trains some of them in groups before the cells run and stores them the
same way (``store_trained``), so a cell cannot tell how its cached backbone was trained but by its metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from adapters.backbones import Backbone, build_backbone
from adapters.datasets import Dataset
from benchmark.cell.keys import backbone_key
from benchmark.cell.training import TrainResult, evaluate_accuracy, train_backbone
from benchmark.store.cache import Cache
from benchmark.suite import Cell

log = logging.getLogger(__name__)

Metrics = dict[str, float]


def initial_backbone(cell: Cell, num_classes: int) -> Backbone:
    """The cell's backbone with its initial weights, seeded by the cell's seed (the same wherever it is built)."""
    torch.manual_seed(cell.seed)
    return build_backbone(cell.backbone.name, cell.backbone.params, num_classes=num_classes)


def backbone_stage(
    cell: Cell, external: Dataset, cache: Cache, device: torch.device, progress: bool
) -> tuple[Backbone, dict[str, list[float]], Metrics]:
    """The backbone trained on the external data under the defense, from the cache when it holds it."""
    bkey = backbone_key(cell)
    backbone = initial_backbone(cell, external.num_classes)
    if backbone.pretrained:
        log.info("external training skipped: backbone '%s' comes pretrained and frozen", cell.backbone.label)
        return backbone, {}, {"external_training_skipped": 1.0}
    stored = cache.load("backbone", bkey)
    if stored is not None:
        backbone.load_state_dict(stored["state_dict"])
        meta = stored["meta"]
        how = f"trained in a group of {meta['group_size']}" if meta.get("group_size", 1) > 1 else "no training"
        log.info("cache hit: backbone %s (%s, %s) reused, %s", bkey, cell.backbone.label, cell.defense.label, how)
    else:
        t0 = time.perf_counter()
        result = train_backbone(backbone, external.train.x, external.train.y, cell.defense.name, cell.defense.params,
                                device=device, seed=cell.seed, progress=progress, classes=external.classes)
        meta = store_trained(cache, cell, backbone, result, time.perf_counter() - t0, external, device)
        log.info("trained backbone %s in %.1f s (%d epochs); cached", bkey, meta["train_seconds"], meta["epochs"])
    metrics = {
        "backbone_cached": float(stored is not None),
        "external_accuracy": float(meta["external_accuracy"]),
        "train_epochs": float(meta["epochs"]),
        "train_seconds": float(meta["train_seconds"]),
        "train_images_per_second": float(meta["images_per_second"]),
        "train_group_size": float(meta.get("group_size", 1)),  # entries from before grouping: trained alone
    }
    return backbone, {k: list(v) for k, v in meta["curves"].items()}, metrics


def store_trained(
    cache: Cache,
    cell: Cell,
    backbone: Backbone,
    result: TrainResult,
    train_seconds: float,
    external: Dataset,
    device: torch.device,
    group_size: int = 1,
) -> dict[str, Any]:
    """Cache a trained backbone under the cell's ``backbone_key`` with what its cells report; returns that."""
    meta = {
        "curves": result.curves,
        "epochs": result.epochs,
        "images_per_second": result.images_per_second,
        "external_accuracy": evaluate_accuracy(
            backbone, external.test.x, external.test.y, device, classes=result.classes
        ),
        "train_seconds": train_seconds,
        "group_size": group_size,
    }
    about = {"external": cell.external.name, "backbone": cell.backbone.name, "defense": cell.defense.name,
             "seed": cell.seed}
    cache.save("backbone", backbone_key(cell), {"state_dict": backbone.cpu().state_dict(), "meta": meta}, meta=about)
    return meta
