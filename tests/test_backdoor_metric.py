"""The backdoor metric on a hand-built case: two-pixel images, an identity extractor, heads and triggers whose
triggered predictions are known."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from adapters.attacks.base import PoisonResult, PoisonTrial, Trigger
from adapters.heads.linear import LinearHead
from benchmark.cell.backdoor import BACKDOOR_HITS, TRIGGERED_EXAMPLES, backdoor_stage
from benchmark.core.stats import wilson_interval

CLASSES = torch.tensor([0, 1])
# clean head: class 1 iff pixel 0 > 0.5; it ignores pixel 1
CLEAN = LinearHead(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.tensor([0.5, -0.5]), CLASSES)
# a poisoned head that learnt the trigger: class 1 iff pixel 0 + pixel 1 > 1.15
LEARNT = LinearHead(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([0.0, -1.15]), CLASSES)

# test set: four victims (class 0) with pixel 0 at 0.1 0.2 0.3 0.7 (the clean head gets the last wrong), two base
P0 = [0.1, 0.2, 0.3, 0.7, 0.9, 0.8]
X_TEST = torch.tensor([[[[p, 0.0]]] for p in P0])  # (6, 1, 1, 2)
Y_TEST = torch.tensor([0, 0, 0, 0, 1, 1])


def _trigger(pixel: int, value: float) -> Trigger:
    mask = torch.zeros(1, 2, dtype=torch.bool)
    mask[0, pixel] = True
    pattern = torch.zeros(1, 1, 2)
    pattern[0, 0, pixel] = value
    return Trigger(pattern=pattern, mask=mask)


def _trial(trigger: Trigger) -> PoisonTrial:
    return PoisonTrial(indices=torch.tensor([0]), y=torch.tensor([1]), x=torch.zeros(1, 1, 1, 2), target_label=0,
                       adversarial_label=1, trigger=trigger)


def _stage(trials, heads):
    result = PoisonResult(trials=trials)
    f_test = X_TEST.flatten(1)
    return backdoor_stage(result, CLEAN, heads, X_TEST, Y_TEST, f_test, nn.Flatten(), torch.device("cpu"))


def test_counts_only_victims_the_clean_head_gets_right_and_the_poisoned_heads_hits():
    # trial 0: its head learnt the trigger (pixel 1 := 1): victims 0.2 and 0.3 flip, 0.1 does not, 0.7 is not
    # counted; trial 1: its head is the clean one, which ignores pixel 1: nothing flips
    trig = _trigger(pixel=1, value=1.0)
    metrics, files = _stage([_trial(trig), _trial(trig)], [LEARNT, CLEAN])
    assert metrics["backdoor_images_counted"] == 6  # 3 counted victims x 2 trials
    assert metrics["attack_successes"] == 2
    assert metrics["attack_success_rate"] == pytest.approx(2 / 6)
    assert (metrics["attack_success_ci_low"], metrics["attack_success_ci_high"]) == pytest.approx(wilson_interval(2, 6))
    assert metrics["backdoor_success_clean_head"] == 0.0
    with np.load(io.BytesIO(files[BACKDOOR_HITS])) as f:
        n = int(f["n"])
        assert f["rows"].tolist() == [0, 1, 2, 3] and f["counted"].tolist() == [True, True, True, False]
        poisoned = np.unpackbits(f["poisoned"], axis=1, count=n).astype(bool)
        clean = np.unpackbits(f["clean_head"], axis=1, count=n).astype(bool)
    assert poisoned.tolist() == [[False, True, True, True], [False, False, False, True]]
    assert clean.tolist() == [[False, False, False, True]] * 2
    assert files[TRIGGERED_EXAMPLES].startswith(b"\x89PNG")


def test_a_trigger_the_clean_head_already_follows_is_the_baseline():
    # pixel 0 := 0.6 makes every victim class 1 for any head that reads pixel 0: baseline and success both 1
    metrics, _ = _stage([_trial(_trigger(pixel=0, value=0.6))], [CLEAN])
    assert metrics["backdoor_success_clean_head"] == 1.0 and metrics["attack_success_rate"] == 1.0


def test_trials_without_one_victim_class_are_refused():
    other = _trial(_trigger(1, 1.0))
    other.target_label = 1
    with pytest.raises(ValueError, match="one victim class"):
        _stage([_trial(_trigger(1, 1.0)), other], [CLEAN, CLEAN])
