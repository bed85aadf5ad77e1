"""Label flip: rate, existing classes only, determinism, and an accuracy drop after refitting."""

import pytest
import torch
from torch import nn
from toy_context import fit_head, head_accuracy, make_ctx  # noqa: F401

from adapters.attacks.base import apply_trial, check_budget
from adapters.attacks.label_flip import LabelFlip
from benchmark.core.errors import ParamError

pytestmark = pytest.mark.usefixtures("one_thread")


def wide_extractor():
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())


@pytest.fixture(scope="module")
def ctx(one_thread):
    return make_ctx(classes=(1, 7), n_train=300, n_test=60, size=8, extractor=wide_extractor)



def test_fixed_rate_respected(ctx):
    attack = LabelFlip(rate=0.1)
    result = attack(ctx)
    (trial,) = result.trials
    n = len(ctx.y_train)
    assert len(trial.indices) == round(0.1 * n) == attack.max_poisons(n)
    assert trial.indices.unique().numel() == len(trial.indices)
    assert torch.equal(trial.x, ctx.x_train[trial.indices])  # images untouched
    check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(n))


def test_bernoulli_rate_close(ctx):
    n = len(ctx.y_train)
    count = len(LabelFlip(rate=0.2, selection="bernoulli")(ctx).trials[0].indices)
    assert abs(count - 0.2 * n) < 4 * (0.2 * 0.8 * n) ** 0.5


def test_only_existing_classes():
    ctx = make_ctx(classes=(2, 5, 7), n_train=300, n_test=50)
    for mode in ("random", "different"):
        trial = LabelFlip(rate=0.5, mode=mode)(ctx).trials[0]
        assert set(trial.y.tolist()) <= {2, 5, 7}
    trial = LabelFlip(rate=0.5, mode="different")(ctx).trials[0]
    assert (trial.y != ctx.y_train[trial.indices]).all()


def test_deterministic_given_seed(ctx):
    a, b = LabelFlip(rate=0.1)(ctx).trials[0], LabelFlip(rate=0.1)(ctx).trials[0]
    assert torch.equal(a.indices, b.indices) and torch.equal(a.y, b.y)
    ctx.seed = 1
    try:
        c = LabelFlip(rate=0.1)(ctx).trials[0]
    finally:
        ctx.seed = 0
    assert not torch.equal(a.indices, c.indices)


def test_does_not_mutate_ctx(ctx):
    y0 = ctx.y_train.clone()
    LabelFlip(rate=0.5, mode="different")(ctx)
    assert torch.equal(ctx.y_train, y0)


def test_accuracy_drops_after_refit(ctx):
    # a linear SVM shrugs off a few % of random labels on a separable pair (the paper's 2% costs CIFAR heads
    # 7-11 points, not these): flip 45% of a binary task, where the flipped labels nearly balance the true ones
    clean = head_accuracy(ctx.head, ctx.f_test, ctx.y_test)
    assert clean > 0.9
    trial = LabelFlip(rate=0.45, mode="different")(ctx).trials[0]
    _, y_poison = apply_trial(None, ctx.y_train, trial)
    poisoned = head_accuracy(fit_head(ctx.f_train, y_poison), ctx.f_test, ctx.y_test)
    assert poisoned < clean - 0.1


def test_bad_params_refused():
    with pytest.raises(ParamError, match="rate"):
        LabelFlip(rate=-0.02)
    with pytest.raises(ParamError, match="mode"):
        LabelFlip(mode="sometimes")
