"""Cache keys of a cell: what invalidates a trained backbone, its features or a finished cell, and what does not."""

from __future__ import annotations

import pytest

from benchmark.cell.keys import backbone_key, feature_key
from benchmark.core.versions import STAGE_VERSIONS
from benchmark.suite import expand, parse_suite


def _cells(smoke: dict) -> dict[tuple[str, str], object]:
    return {(c.defense.label, c.attack.label): c for c in expand(parse_suite(smoke))}


def test_backbone_key_follows_training_inputs_not_the_attack(smoke_dict):
    cells = _cells(smoke_dict)
    pgd_none, pgd_lf, naive_none = cells["pgd", "none"], cells["pgd", "label_flip"], cells["naive", "none"]
    assert backbone_key(pgd_none) == backbone_key(pgd_lf)  # attacks share the trained backbone
    assert feature_key(pgd_none) == feature_key(pgd_lf)
    assert backbone_key(pgd_none) != backbone_key(naive_none)
    assert pgd_none.key != pgd_lf.key


# stage -> which keys its version is part of: (backbone, features, cell)
INVALIDATES = {
    "data": (True, True, True),
    "models": (True, True, True),
    "training": (True, True, True),
    "features": (False, True, True),
    "cell": (False, False, True),
}


def test_every_stage_version_is_in_the_keys_it_should_be():
    assert set(INVALIDATES) == set(STAGE_VERSIONS)  # a new stage must say what it invalidates


@pytest.mark.parametrize("stage", sorted(INVALIDATES))
def test_bumping_a_stage_invalidates_exactly_its_entries(smoke_dict, monkeypatch, stage):
    cell = _cells(smoke_dict)["pgd", "none"]
    before = backbone_key(cell), feature_key(cell), cell.key
    monkeypatch.setitem(STAGE_VERSIONS, stage, STAGE_VERSIONS[stage] + "-next")
    after = backbone_key(cell), feature_key(cell), cell.key
    assert tuple(a != b for a, b in zip(before, after, strict=True)) == INVALIDATES[stage]
