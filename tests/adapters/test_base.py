"""The attack interface: budget check, apply_trial, parameter validation."""

import pytest
import torch

from adapters.attacks.base import PoisonResult, PoisonTrial, apply_trial, check_budget
from adapters.attacks.label_flip import LabelFlip
from adapters.attacks.no_attack import NoAttack
from benchmark.core.errors import BudgetError, ParamError


def _data(n=10):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 4, 4, generator=g) * 0.8 + 0.1  # away from 0 and 1
    y = torch.arange(n) % 3
    return x, y


def _trial(x, idx, delta=0.0, y=None):
    idx = torch.tensor(idx, dtype=torch.long)
    return PoisonTrial(indices=idx, y=torch.zeros(len(idx), dtype=torch.long) if y is None else y, x=x[idx] + delta)


def test_valid_poison_passes_and_reports():
    x, _ = _data()
    result = PoisonResult(trials=[_trial(x, [1, 4], 0.03), _trial(x, [2], -0.01)])
    report = check_budget(x, result, eps=0.03, max_changed=2)
    assert report.passed
    assert report.linf == pytest.approx(0.03, abs=1e-6)
    assert report.changed == 2
    assert "passed" in report.line()


def test_eps_violation_rejected():
    x, _ = _data()
    result = PoisonResult(trials=[_trial(x, [1, 4], 0.05)])
    with pytest.raises(BudgetError, match="exceeds eps"):
        check_budget(x, result, eps=0.03)


def test_out_of_range_pixels_rejected():
    x, _ = _data()
    trial = _trial(x, [3])
    trial.x[0, 0, 0, 0] = 1.02  # within eps of nothing in particular, but outside [0, 1]
    x2 = x.clone()
    x2[3, 0, 0, 0] = 1.0
    with pytest.raises(BudgetError, match=r"leave \[0, 1\]"):
        check_budget(x2, PoisonResult(trials=[trial]), eps=0.05)


def test_repeated_indices_rejected():
    x, _ = _data()
    with pytest.raises(BudgetError, match="repeated indices"):
        check_budget(x, PoisonResult(trials=[_trial(x, [2, 2])]), eps=0.1)


def test_too_many_changes_rejected():
    x, _ = _data()
    with pytest.raises(BudgetError, match="exceed the budget of 2"):
        check_budget(x, PoisonResult(trials=[_trial(x, [0, 1, 2])]), eps=0.1, max_changed=2)


def test_indices_outside_training_set_rejected():
    x, _ = _data()
    trial = PoisonTrial(indices=torch.tensor([10]), y=torch.zeros(1, dtype=torch.long), x=x[:1])
    with pytest.raises(BudgetError, match="outside the training set"):
        check_budget(x, PoisonResult(trials=[trial]), eps=0.1)


def test_missing_images_rejected_for_image_space():
    x, _ = _data()
    trial = PoisonTrial(indices=torch.tensor([1]), y=torch.zeros(1, dtype=torch.long))
    with pytest.raises(BudgetError, match="one image per index"):
        check_budget(x, PoisonResult(trials=[trial]), eps=0.1)


def test_feature_space_skips_pixel_checks_but_counts():
    x, _ = _data()
    trial = PoisonTrial(indices=torch.tensor([1, 2]), y=torch.zeros(2, dtype=torch.long), features=torch.randn(2, 8))
    result = PoisonResult(trials=[trial], space="feature")
    assert check_budget(x, result, eps=0.0, max_changed=2).passed
    with pytest.raises(BudgetError):
        check_budget(x, result, eps=0.0, max_changed=1)


def test_apply_trial_does_not_mutate():
    x, y = _data()
    x0, y0 = x.clone(), y.clone()
    trial = _trial(x, [1, 5], 0.02, y=torch.tensor([2, 0]))
    x2, y2 = apply_trial(x, y, trial)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert torch.allclose(x2[[1, 5]], x0[[1, 5]] + 0.02)
    assert torch.equal(y2[[1, 5]], torch.tensor([2, 0]))
    keep = torch.ones(len(x), dtype=torch.bool)
    keep[[1, 5]] = False
    assert torch.equal(x2[keep], x0[keep]) and torch.equal(y2[keep], y0[keep])


def test_label_only_trial_keeps_images():
    x, y = _data()
    trial = PoisonTrial(indices=torch.tensor([0]), y=torch.tensor([1]))
    x2, y2 = apply_trial(x, y, trial)
    assert x2 is x  # nothing to copy, nothing changed
    assert int(y2[0]) == 1 and int(y[0]) == 0


def test_no_attack_changes_nothing():
    from toy_context import make_ctx

    ctx = make_ctx(n_train=40, n_test=10)
    attack = NoAttack()
    assert attack.max_poisons(100) == 0 and attack.budget_eps == 0.0
    result = attack(ctx)
    (trial,) = result.trials
    assert len(trial.indices) == 0 and not result.targeted
    assert check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(len(ctx.x_train))).changed == 0
    x, y = apply_trial(ctx.x_train, ctx.y_train, trial)
    assert torch.equal(x, ctx.x_train) and torch.equal(y, ctx.y_train)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bad_rate_refused_naming_the_key(value):
    with pytest.raises(ParamError, match="rate"):
        LabelFlip(rate=value)


def test_unknown_key_refused():
    with pytest.raises(ParamError, match="not_a_param: unknown key"):
        LabelFlip(not_a_param=1)
