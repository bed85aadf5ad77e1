"""The budget check of backdoor trials: the trigger's area and pixel range, and poisons that may leave the eps-ball
only where they carry the stamped trigger."""

from __future__ import annotations

import pytest
import torch
from toy_context import make_ctx

from adapters.attacks.base import (
    Attack,
    PoisonResult,
    PoisonTrial,
    Trigger,
    check_budget,
    run_attack,
)
from benchmark.core.errors import BudgetError

EPS = 0.05


def _trigger(shape=(3, 8, 8), size=2, value=1.0) -> Trigger:
    pattern = torch.zeros(shape)
    mask = torch.zeros(shape[1:], dtype=torch.bool)
    mask[-size:, -size:] = True
    pattern[:, mask] = value
    return Trigger(pattern=pattern, mask=mask)


def _x():
    return torch.full((6, 3, 8, 8), 0.5)


def _trial(x_new: torch.Tensor, trigger: Trigger | None, rows=(0, 1)) -> PoisonTrial:
    idx = torch.tensor(rows)
    return PoisonTrial(indices=idx, y=torch.ones(len(idx), dtype=torch.long), x=x_new, target_label=0,
                       adversarial_label=1, trigger=trigger)


def _check(x, trial, area=4):
    return check_budget(x, PoisonResult(trials=[trial]), eps=EPS, max_changed=2, max_trigger_area=area)


def test_trigger_apply_replaces_only_the_masked_pixels():
    trig = _trigger(value=0.9)
    out = trig.apply(_x())
    assert trig.area == 4
    assert torch.all(out[:, :, -2:, -2:] == 0.9) and torch.all(out[:, :, :-2, :] == 0.5)
    assert torch.all(_x() == 0.5)  # a copy


def test_stamped_poisons_pass_though_the_trigger_leaves_the_ball():
    x, trig = _x(), _trigger()
    poisons = trig.apply(x[:2] + EPS)  # in the ball everywhere but the stamp, which is 0.5 away
    report = _check(x, _trial(poisons, trig))
    assert report.passed and report.linf == pytest.approx(EPS) and report.trigger_area == 4
    assert "trigger area 4 <= 4 pixels" in report.line()


def test_a_trigger_larger_than_declared_is_refused():
    x, trig = _x(), _trigger(size=3)
    with pytest.raises(BudgetError, match="trigger area 9 pixels is not within the attack's 1..4"):
        _check(x, _trial(trig.apply(x[:2]), trig))


def test_an_attack_that_declares_no_trigger_cannot_return_one():
    x, trig = _x(), _trigger()
    with pytest.raises(BudgetError, match="not within the attack's 1..0"):
        _check(x, _trial(x[:2].clone(), trig), area=0)


def test_a_trigger_pattern_outside_0_1_is_refused():
    x, trig = _x(), _trigger(value=1.5)
    with pytest.raises(BudgetError, match=r"trigger pattern leaves \[0, 1\]"):
        _check(x, _trial(x[:2].clone(), trig))


def test_a_trigger_of_the_wrong_shape_is_refused():
    x, trig = _x(), _trigger(shape=(1, 8, 8))
    with pytest.raises(BudgetError, match="trigger pattern is not a floating-point tensor of the images' shape"):
        _check(x, _trial(x[:2].clone(), trig))


def test_leaving_the_ball_outside_the_mask_is_refused():
    x, trig = _x(), _trigger()
    poisons = trig.apply(x[:2])
    poisons[0, 0, 0, 0] = 0.5 + 2 * EPS  # outside the mask
    with pytest.raises(BudgetError, match="exceeds eps"):
        _check(x, _trial(poisons, trig))


def test_leaving_the_ball_inside_the_mask_with_another_pattern_is_refused():
    x, trig = _x(), _trigger()
    poisons = trig.apply(x[:2])
    poisons[1, 2, -1, -1] = 0.8  # inside the mask, neither the pattern nor within eps of the clean pixel
    with pytest.raises(BudgetError, match="exceeds eps"):
        _check(x, _trial(poisons, trig))


def test_without_a_trigger_the_same_stamp_is_an_eps_violation():
    x, trig = _x(), _trigger()
    with pytest.raises(BudgetError, match="exceeds eps"):
        _check(x, _trial(trig.apply(x[:2]), None))


def test_a_feature_space_trial_cannot_carry_a_trigger():
    trial = PoisonTrial(indices=torch.tensor([0]), y=torch.tensor([1]), features=torch.zeros(1, 4), trigger=_trigger())
    with pytest.raises(BudgetError, match="a trigger needs an image-space attack"):
        check_budget(_x(), PoisonResult(trials=[trial], space="feature"), eps=0.0, max_trigger_area=4)


class GrowsItsTrigger(Attack):
    """Declares a 2x2 trigger, then claims 3x3 once it has run."""

    name = "grows_its_trigger"

    def max_trigger_area(self, image_shape):
        return 4

    def forward(self, ctx):
        self.max_trigger_area = lambda shape: 9
        trig = _trigger(shape=tuple(ctx.x_train.shape[1:]), size=3)
        idx = torch.tensor([0])
        return PoisonResult(trials=[PoisonTrial(indices=idx, y=ctx.y_train[idx].clone(),
                                                x=trig.apply(ctx.x_train[idx]), trigger=trig)])


def test_the_trigger_area_is_read_before_the_attack_runs():
    ctx = make_ctx(n_train=40, n_test=20, size=8)
    with pytest.raises(BudgetError, match="trigger area 9 pixels is not within the attack's 1..4"):
        run_attack(GrowsItsTrigger(), ctx, classes=[0, 1])
