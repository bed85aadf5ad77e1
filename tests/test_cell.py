"""Cache keys of a cell: what invalidates a trained backbone or its features, and what does not."""

from __future__ import annotations

import benchmark.cell
from benchmark.cell import backbone_key, feature_key
from benchmark.suite import expand, parse_suite


def _cells(smoke: dict) -> dict[tuple[str, str], object]:
    return {(c.defense.label, c.attack.label): c for c in expand(parse_suite(smoke))}


def test_backbone_key_follows_training_inputs_not_the_attack(smoke_dict, monkeypatch):
    cells = _cells(smoke_dict)
    pgd_none, pgd_lf, naive_none = cells["pgd", "none"], cells["pgd", "label_flip"], cells["naive", "none"]
    assert backbone_key(pgd_none) == backbone_key(pgd_lf)  # attacks share the trained backbone
    assert feature_key(pgd_none) == feature_key(pgd_lf)
    assert backbone_key(pgd_none) != backbone_key(naive_none)
    before = backbone_key(pgd_none), feature_key(pgd_none)
    monkeypatch.setattr(benchmark.cell, "MODELS_VERSION", "models-next")  # an architecture changed
    assert backbone_key(pgd_none) != before[0] and feature_key(pgd_none) != before[1]
