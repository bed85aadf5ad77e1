"""Components' parameter dumps are hashed into every key: the keys of shipped suites' cells are pinned, so that a
change to how components are declared or registered cannot re-key (rerun) finished work.

The values were computed at commit 2e7ea86, before every kind became a ``Configurable`` class; the stage versions
are pinned to that commit's too, so a deliberate version bump does not fail this test."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import ROOT

from benchmark.cell.attack_cache import attack_key
from benchmark.cell.pipeline import backbone_key, feature_key
from benchmark.core import versions
from benchmark.suite import expand, load_suite

VERSIONS_2E7EA86 = {"data": "data-v1", "models": "models-v2", "training": "1", "features": "1", "cell": "1"}

# cell order of ``expand``: [cell key, backbone key, feature key, attack key]
SMOKE = [
    ["cd637bdde938ad82", "7626ad209d28761a", "bf0926b99419d71a", "06776c654157f05f"],
    ["8e822d769752e55c", "7626ad209d28761a", "bf0926b99419d71a", "4a2e540b2fd6641b"],
    ["930a5d0e750129d9", "9a45932f719c0e05", "c200051debe71e14", "e379d224de8abacd"],
    ["5b0af69f3da4c191", "9a45932f719c0e05", "c200051debe71e14", "646e8df206cfbc74"],
]
# sha256 of the JSON list above for bigger suites: torchvision records (cifar), digits, the torch_svm head (gpu-check)
DIGESTS = {
    "cifar-cpu": ("e175161a0e358326", 36),
    "digits-cpu": ("74e3e5af759d0bfd", 8),
    "gpu-check": ("0633da2fb0f9e5c5", 24),
}


@pytest.fixture(autouse=True)
def _versions_of_2e7ea86(monkeypatch):
    for stage, version in VERSIONS_2E7EA86.items():
        monkeypatch.setitem(versions.STAGE_VERSIONS, stage, version)


def _keys(suite: str) -> list[list[str]]:
    cells = expand(load_suite(ROOT / "suites" / f"{suite}.yaml"))
    return [[c.key, backbone_key(c), feature_key(c), attack_key(c, feature_key(c))] for c in cells]


def test_smoke_keys_are_unchanged():
    assert _keys("smoke") == SMOKE


@pytest.mark.parametrize("suite", list(DIGESTS))
def test_suite_keys_are_unchanged(suite):
    keys = _keys(suite)
    assert (hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16], len(keys)) == DIGESTS[suite]
