"""ART adapters: each runs through our interface on a tiny problem; budgets; feature-space trials."""

import pytest
import torch
from toy_context import fit_head, head_accuracy, make_ctx  # noqa: F401

from adapters.attacks.art_poisoning import (
    ArtBullseyePolytope,
    ArtFeatureCollision,
    ArtSvmFeatureSpace,
)
from adapters.attacks.base import check_budget
from benchmark.core.errors import ParamError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx(one_thread):
    return make_ctx()


def snapshot(ctx):
    return {k: getattr(ctx, k).clone() for k in ("x_train", "y_train", "x_test", "f_train", "f_test")}


def assert_unchanged(ctx, snap):
    for k, v in snap.items():
        assert torch.equal(getattr(ctx, k), v), f"ctx.{k} was mutated"
    assert not ctx.extractor._forward_hooks, "ART left a hook on the shared extractor"


def check_targeted(ctx, attack, result, n_targets):
    report = check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(len(ctx.x_train)))
    assert report.passed
    assert result.targeted and result.space == "image" and len(result.trials) == n_targets
    for trial in result.trials:
        assert (ctx.y_train[trial.indices] == 1).all() and (trial.y == 1).all()
        assert int(ctx.y_test[trial.target_index]) == 0 and trial.adversarial_label == 1
    return report


def test_feature_collision_unbounded(ctx):
    snap = snapshot(ctx)
    attack = ArtFeatureCollision(num_targets=2, max_iter=10)
    assert attack.budget_eps == 1.0 and attack.task_classes() == [0, 1]
    result = attack(ctx)
    check_targeted(ctx, attack, result, 2)
    assert result.info["art_linf_max"] > 0  # ART moved the bases
    assert_unchanged(ctx, snap)


def test_feature_collision_projected_on_eps_ball(ctx):
    # a step size and similarity weight that let ART move far, then the projection has to bite
    attack = ArtFeatureCollision(num_targets=2, max_iter=10, eps=0.02, learning_rate=1.0, similarity_coeff=1.0)
    result = attack(ctx)
    report = check_targeted(ctx, attack, result, 2)
    assert result.info["art_linf_max"] > 0.02 >= report.linf - 1e-6


def test_bullseye_fixed_moves_polytope_center_to_target(ctx):
    snap = snapshot(ctx)
    attack = ArtBullseyePolytope(num_targets=2, num_poisons=3, eps=0.1, max_iter=40)
    result = attack(ctx)
    report = check_targeted(ctx, attack, result, 2)
    assert report.linf <= 0.1 + 1e-6 and report.changed == 3
    for trial in result.trials:
        target_f = ctx.f_test[trial.target_index]
        before = (ctx.f_train[trial.indices].mean(0) - target_f).norm()
        after = (ctx.features(trial.x).mean(0) - target_f).norm()
        assert after < 0.8 * before
    assert_unchanged(ctx, snap)


def test_bullseye_art_implementation_ignores_the_target_and_fixed_uses_it(ctx):
    """``implementation: art`` runs ART 1.20's poison(), which never reads the target (the defect documented in
    adapters/attacks/art_poisoning.py); ``fixed`` pulls the poisons towards whichever target it is given."""
    from adapters.attacks.art_poisoning import art_classifier

    bases = ctx.x_train[ctx.y_train == 1][:2].numpy().copy()
    targets = [ctx.x_test[ctx.y_test == 0][i : i + 1].numpy() for i in (0, 1)]
    classifier = art_classifier(ctx)
    for implementation, same in (("art", True), ("fixed", False)):
        attack = ArtBullseyePolytope(num_poisons=2, eps=0.05, max_iter=5, implementation=implementation)
        a, b = (attack._poison_one(classifier, t, bases.copy()) for t in targets)
        assert (a == b).all() == same, implementation
    art = ArtBullseyePolytope(num_targets=1, num_poisons=2, eps=0.05, max_iter=3, implementation="art")
    check_targeted(ctx, art, art(ctx), 1)


def test_svm_feature_space_trials(ctx):
    snap = snapshot(ctx)
    attack = ArtSvmFeatureSpace(num_poisons=3, max_iter=5, max_train=60, num_val=30)
    assert attack.space == "feature" and attack.task_classes() == [0, 1] and attack.max_poisons(10**6) == 3
    assert "upper bound" in attack.description.lower()
    result = attack(ctx)
    assert result.space == "feature" and not result.targeted
    (trial,) = result.trials
    assert trial.x is None and trial.features.shape == (3, ctx.f_train.shape[1])
    assert torch.isfinite(trial.features).all()
    assert (trial.y != ctx.y_train[trial.indices]).all()  # label flipped
    assert set(trial.y.tolist()) <= {0, 1}
    assert check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(len(ctx.x_train))).passed
    again = attack(ctx).trials[0]
    assert torch.equal(again.indices, trial.indices) and torch.equal(again.features, trial.features)
    assert_unchanged(ctx, snap)


def test_svm_feature_space_refuses_a_validation_set_it_cannot_hold(ctx):
    rows = int(torch.isin(ctx.y_train, torch.tensor([0, 1])).sum())
    with pytest.raises(ParamError, match=rf"num_val {rows} is more than half of the {rows} training rows"):
        ArtSvmFeatureSpace(num_poisons=3, max_iter=5, num_val=rows)(ctx)


@pytest.mark.parametrize(
    "cls, kw, key",
    [
        (ArtFeatureCollision, {"eps": 2.0}, "eps"),
        (ArtBullseyePolytope, {"eps": 2.0}, "eps"),
        (ArtBullseyePolytope, {"implementation": "other"}, "implementation"),
        (ArtSvmFeatureSpace, {"num_poisons": 0}, "num_poisons"),
        (ArtSvmFeatureSpace, {"max_iter": 1}, "max_iter"),
    ],
)
def test_bad_params_refused_naming_the_key(cls, kw, key):
    with pytest.raises(ParamError, match=key):
        cls(**kw)
