"""The cache keys of a cell's cached stages: the backbone (external data, architecture, defense, seed) and the
target features; each holds the versions of the stages it depends on (``benchmark.core.versions``)."""

from __future__ import annotations

from benchmark.core.hashing import stable_hash
from benchmark.core.versions import BACKBONE_STAGES, FEATURE_STAGES, versions
from benchmark.suite import Cell


def backbone_key(cell: Cell) -> str:
    return stable_hash(
        {
            "external": cell.external,
            "backbone": [cell.backbone.name, cell.backbone.params],
            "defense": [cell.defense.name, cell.defense.params],
            "seed": cell.seed,
            "versions": versions(BACKBONE_STAGES),
        }
    )


def feature_key(cell: Cell) -> str:
    return stable_hash({"backbone": backbone_key(cell), "target": cell.target, "versions": versions(FEATURE_STAGES)})
