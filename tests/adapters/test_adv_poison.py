"""Adversarial poisoning (ours): both variants within budget, clean labels, accuracy drop, fraction, validation."""

import pytest
import torch
from toy_context import fit_head, head_accuracy, make_ctx  # noqa: F401

from adapters.attacks.adv_poison import AdvPoison, shift_labels
from adapters.attacks.base import apply_trial, check_budget
from benchmark.core.errors import ParamError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx(one_thread):
    return make_ctx()


@pytest.fixture(scope="module")
def ctx3(one_thread):
    return make_ctx(classes=(0, 1, 2), n_train=180, n_test=90)



def poisoned_accuracy(ctx, trial):
    x, y = apply_trial(ctx.x_train, ctx.y_train, trial)
    return head_accuracy(fit_head(ctx.features(x), y), ctx.f_test, ctx.y_test)


@pytest.mark.parametrize("variant", ["paper", "code"])
@pytest.mark.parametrize("which", ["ctx", "ctx3"])
def test_variant_within_budget_and_hurts_accuracy(request, variant, which):
    ctx = request.getfixturevalue(which)
    snapshot = {k: getattr(ctx, k).clone() for k in ("x_train", "y_train", "f_train", "f_test")}
    eps = 32 / 255
    attack = AdvPoison(variant=variant, eps=eps, steps=10)
    result = attack(ctx)
    n = len(ctx.x_train)
    report = check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(n))
    assert report.passed and report.changed == n and report.linf <= eps + 1e-6
    (trial,) = result.trials
    assert torch.equal(trial.indices, torch.arange(n))
    assert torch.equal(trial.y, ctx.y_train)  # clean label
    assert not result.targeted
    assert result.info["mean_objective_poisoned"] > result.info["mean_objective_clean"]
    clean = head_accuracy(ctx.head, ctx.f_test, ctx.y_test)
    assert poisoned_accuracy(ctx, trial) < clean - 0.1
    for k, v in snapshot.items():
        assert torch.equal(getattr(ctx, k), v), f"ctx.{k} was mutated"


@pytest.mark.parametrize("option", [{"absolute": True}, {"target_head": "test_shifted"}])
def test_paper_options_change_the_objective(ctx, option):
    default = AdvPoison(eps=8 / 255, steps=3)(ctx).trials[0]
    attack = AdvPoison(eps=8 / 255, steps=3, **option)
    result = attack(ctx)
    check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(len(ctx.x_train)))
    # the option's own objective rises, and it is another objective: the poisons differ from the default's
    assert result.info["mean_objective_poisoned"] > result.info["mean_objective_clean"]
    assert not torch.equal(result.trials[0].x, default.x)
    if option.get("absolute"):
        assert result.info["mean_objective_clean"] >= 0  # |.| is never negative


def test_fraction_selects_a_seeded_subset(ctx):
    attack = AdvPoison(eps=4 / 255, steps=2, fraction=0.25)
    n = len(ctx.x_train)
    a = attack(ctx).trials[0]
    assert len(a.indices) == round(0.25 * n) == attack.max_poisons(n)
    assert a.indices.unique().numel() == len(a.indices) and torch.equal(a.indices, a.indices.sort().values)
    b = attack(ctx).trials[0]
    assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x)
    ctx.seed = 5
    try:
        c = attack(ctx).trials[0]
    finally:
        ctx.seed = 0
    assert not torch.equal(a.indices, c.indices)


def test_batching_does_not_change_poisons(ctx):
    kw = dict(eps=8 / 255, steps=4, fraction=0.2)
    a = AdvPoison(batch_size=256, **kw)(ctx).trials[0]
    b = AdvPoison(batch_size=7, **kw)(ctx).trials[0]
    torch.testing.assert_close(a.x, b.x, atol=1e-6, rtol=0)


def test_shift_labels_is_a_derangement():
    classes = torch.tensor([2, 5, 9])
    y = torch.tensor([2, 5, 9, 9, 2])
    assert shift_labels(y, classes).tolist() == [5, 9, 2, 2, 5]
    assert shift_labels(torch.tensor([0, 1, 1]), torch.tensor([0, 1])).tolist() == [1, 0, 0]


def test_defaults():
    attack = AdvPoison()
    assert attack.budget_eps == pytest.approx(3 / 255)
    assert attack.resolved_step_size == pytest.approx(0.333 * 3 / 255)
    assert attack.max_poisons(1000) == 1000 and attack.task_classes() is None


@pytest.mark.parametrize(
    "kw, key", [({"eps": 2.0}, "eps"), ({"fraction": -0.5}, "fraction"), ({"fraction": 1.5}, "fraction")]
)
def test_bad_params_refused_naming_the_key(kw, key):
    with pytest.raises(ParamError, match=key):
        AdvPoison(**kw)
