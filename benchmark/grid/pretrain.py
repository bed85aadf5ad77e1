"""Backbones trained in groups before the cells run (the suite's ``resources.group_backbones``).

The backbones the cells need and the cache lacks are grouped by training data, architecture and the settings a
group shares (``benchmark.cell.stacked``), trained together by ``train_backbones`` and stored under each cell's own
``backbone_key``, so every cell then finds its backbone cached. A backbone that cannot join a group is left to its
cell, which trains it alone as without grouping; one log line says which and why. A group that runs out of device
memory is split in two and each half tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from adapters.datasets import Dataset, load_data
from benchmark.cell.backbone_stage import initial_backbone, store_trained
from benchmark.cell.keys import backbone_key
from benchmark.cell.pipeline import RunOptions
from benchmark.cell.stacked import SHARED, why_not_alone
from benchmark.cell.training import Member, train_backbones
from benchmark.core.errors import SuiteError
from benchmark.core.hashing import stable_hash
from benchmark.core.registry import REGISTRY, make
from benchmark.store.cache import Cache
from benchmark.suite import Cell

log = logging.getLogger(__name__)


def grouping_on(setting: str | bool, device: str, executor: str) -> bool:
    """The setting resolved: ``auto`` is on for CUDA under the local executor; ``true`` under Ray is refused (its
    workers train each cell's backbone themselves, so the value would not be the one used)."""
    if executor != "local":
        if setting is True:
            raise SuiteError(f"resources.group_backbones: true needs the local executor, not {executor}; "
                             "set it to auto or false")
        return False
    return setting is True or (setting == "auto" and device == "cuda")


def pretrain_backbones(cells: Sequence[Cell], opts: RunOptions) -> None:
    """Train in groups the backbones of ``cells`` that the cache lacks; the rest is left to the cells."""
    cache = Cache(opts.cache_dir)
    wanted: dict[str, Cell] = {}
    for cell in cells:
        key = backbone_key(cell)
        if key not in wanted and not cache.has("backbone", key):
            wanted[key] = cell
    data = _Data(opts.data_root)
    groups: dict[str, list[Cell]] = {}
    alone: list[str] = []
    for cell in wanted.values():
        if REGISTRY.get("backbone", cell.backbone.name).cls.pretrained:
            continue  # nothing to train: asked of the class, so no checkpoint is loaded for the question
        external, data_id = data.load(cell)
        backbone = initial_backbone(cell, external.num_classes)
        defense = make("defense", cell.defense.name, cell.defense.params)
        problem = why_not_alone(backbone, defense)
        if problem:
            alone.append(f"{_name(cell)} ({problem})")
            continue
        shared = {k: getattr(defense.params, k) for k in SHARED}
        groups.setdefault(stable_hash([data_id, cell.backbone.name, cell.backbone.params, shared]), []).append(cell)
    alone += [f"{_name(c[0])} (the only one of its architecture and settings)" for c in groups.values() if len(c) == 1]
    if alone:
        log.info("group_backbones: %d backbone(s) train alone in their cells: %s", len(alone), "; ".join(alone))
    for group in groups.values():
        if len(group) > 1:
            _train_group(group, data.load(group[0])[0], cache, opts)


def _name(cell: Cell) -> str:
    return f"{cell.backbone.label}/{cell.defense.label}/seed {cell.seed}"


def _train_group(cells: list[Cell], external: Dataset, cache: Cache, opts: RunOptions) -> None:
    """Train ``cells``' backbones as one group and cache each; out of memory, each half as a group of its own."""
    device = torch.device(opts.device)
    members = [Member(initial_backbone(c, external.num_classes), c.defense.name, c.defense.params, c.seed)
               for c in cells]
    t0 = time.perf_counter()
    try:
        results = train_backbones(members, external.train.x, external.train.y, device, opts.progress,
                                  classes=external.classes)
    except torch.OutOfMemoryError:
        results = None  # split below, once the traceback (and the stack it holds on the device) is gone
    except Exception as err:  # the cells train their backbones themselves, and a real fault fails them there
        log.warning("group_backbones: the group of %s failed (%s: %s); its backbones train alone in their cells",
                    ", ".join(_name(c) for c in cells), type(err).__name__, err)
        return
    if results is None:
        del members
        _split(cells, external, cache, opts)
        return
    seconds = time.perf_counter() - t0
    for cell, member, result in zip(cells, members, results, strict=True):
        store_trained(cache, cell, member.backbone, result, seconds, external, device, group_size=len(cells))
    log.info("group_backbones: trained %s as one group in %.1f s; cached", ", ".join(_name(c) for c in cells),
             seconds)


def _split(cells: list[Cell], external: Dataset, cache: Cache, opts: RunOptions) -> None:
    torch.cuda.empty_cache()
    half = len(cells) // 2
    log.warning("group_backbones: %d backbones do not fit on %s together; trying %d and %d", len(cells), opts.device,
                half, len(cells) - half)
    for part in (cells[:half], cells[half:]):
        if len(part) > 1:
            _train_group(part, external, cache, opts)
        else:
            log.info("group_backbones: %s trains alone in its cell (out of memory in a group)", _name(part[0]))


class _Data:
    """External data loaded once per content: seeds that give the same data (every dataset but generated ones)
    share one copy, and one group."""

    def __init__(self, data_root: str | None) -> None:
        self.data_root = data_root
        self.loaded: dict[tuple[str, int], tuple[Dataset, str]] = {}
        self.distinct: list[tuple[str, Dataset, str]] = []  # (spec, data, id)

    def load(self, cell: Cell) -> tuple[Dataset, str]:
        spec = cell.external.model_dump_json()
        if (spec, cell.seed) not in self.loaded:
            data = load_data(cell.external, seed=cell.seed, data_root=self.data_root)
            same = next(((d, i) for s, d, i in self.distinct if s == spec and _equal(d, data)), None)
            if same is None:
                same = data, f"{spec}#{len(self.distinct)}"
                self.distinct.append((spec, *same))
            self.loaded[(spec, cell.seed)] = same
        return self.loaded[(spec, cell.seed)]


def _equal(a: Dataset, b: Dataset) -> bool:
    return a.classes == b.classes and all(
        torch.equal(getattr(a, part).x, getattr(b, part).x) and torch.equal(getattr(a, part).y, getattr(b, part).y)
        for part in ("train", "test")
    )
