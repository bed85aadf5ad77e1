"""One backbone trains as it did before grouped and single training became one loop: the weights and curves of
every defense equal, bit for bit, those saved by ``reference_runs.py`` at commit 2e7ea86 (CPU, float32, one
thread). A different CPU's kernels could round differently: rerun ``reference_runs.py`` at 2e7ea86 there."""

from __future__ import annotations

import json

import pytest
from reference_runs import REFERENCE, RUNS, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("name", list(RUNS))
def test_single_backbone_training_is_unchanged(name, reference):
    now, before = train(name), reference[name]
    assert now["train_loss"] == before["train_loss"] and now["train_acc"] == before["train_acc"]
    assert (now["epochs"], now["stopped_early"]) == (before["epochs"], before["stopped_early"])
    for key, value in before["state"].items():
        assert now["state"][key] == value, key  # the digests of dtype, shape and bytes
