"""Poison Frog (ours): budget, feature collision, batching invariance, code variant, parameter validation."""

import pytest
import torch
from toy_context import fit_head, head_accuracy, make_ctx  # noqa: F401

from adapters.attacks.base import check_budget
from adapters.attacks.poison_frog import PoisonFrog
from adapters.attacks.targeted import select_targets
from benchmark.core.errors import ParamError
from benchmark.core.linf import sign_pgd

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx(one_thread):
    return make_ctx()


EPS = 16 / 255


def feats(ctx, x):
    return ctx.features(x)


def test_targets_are_correct_test_images_of_target_class(ctx):
    targets = select_targets(ctx, 0, 5)
    assert len(targets) == 5
    assert (ctx.y_test[targets] == 0).all()
    assert (ctx.head.predict(ctx.f_test[targets]) == 0).all()
    # the first ones, in test order
    ok = torch.nonzero((ctx.y_test == 0) & (ctx.head.predict(ctx.f_test) == 0)).flatten()
    assert torch.equal(targets, ok[:5])


def test_paper_variant_within_budget_and_closer_in_features(ctx):
    snapshot = {k: getattr(ctx, k).clone() for k in ("x_train", "y_train", "x_test", "f_train", "f_test")}
    attack = PoisonFrog(num_targets=4, num_poisons=2, eps=EPS, steps=20)
    result = attack(ctx)
    assert result.targeted and len(result.trials) == 4
    report = check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(len(ctx.x_train)))
    assert report.passed and report.linf <= EPS + 1e-6 and report.changed == 2
    for trial in result.trials:
        assert trial.x.min() >= 0 and trial.x.max() <= 1
        assert (trial.x - ctx.x_train[trial.indices]).abs().max() <= EPS + 1e-6
        assert (ctx.y_train[trial.indices] == 1).all() and (trial.y == 1).all()  # clean label: base images
        assert trial.target_label == 0 and trial.adversarial_label == 1
        assert int(ctx.y_test[trial.target_index]) == 0
        target_f = ctx.f_test[trial.target_index]
        before = (ctx.f_train[trial.indices] - target_f).norm(dim=1)
        after = (feats(ctx, trial.x) - target_f).norm(dim=1)
        assert (after < before).all()
    assert result.info["mean_feature_distance"] < 0.8 * result.info["mean_initial_feature_distance"]
    assert result.info["num_targets"] == 4
    for k, v in snapshot.items():
        assert torch.equal(getattr(ctx, k), v), f"ctx.{k} was mutated"


def test_bases_are_nearest_base_images_in_feature_space(ctx):
    result = PoisonFrog(num_targets=2, num_poisons=3, eps=EPS, steps=1)(ctx)
    base_rows = torch.nonzero(ctx.y_train == 1).flatten()
    for trial in result.trials:
        d = (ctx.f_train[base_rows] - ctx.f_test[trial.target_index]).norm(dim=1)
        assert torch.equal(trial.indices.sort().values, base_rows[d.argsort()[:3]].sort().values)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_batched_equals_one_at_a_time(ctx, batch_size):
    kw = dict(num_targets=4, num_poisons=2, eps=EPS, steps=10)
    together = PoisonFrog(batch_size=256, **kw)(ctx)
    apart = PoisonFrog(batch_size=batch_size, **kw)(ctx)
    for a, b in zip(together.trials, apart.trials, strict=True):
        assert torch.equal(a.indices, b.indices) and a.target_index == b.target_index
        torch.testing.assert_close(a.x, b.x, atol=1e-6, rtol=0)


def test_deterministic(ctx):
    a = PoisonFrog(num_targets=2, eps=EPS, steps=5)(ctx)
    b = PoisonFrog(num_targets=2, eps=EPS, steps=5)(ctx)
    assert all(torch.equal(s.x, t.x) for s, t in zip(a.trials, b.trials, strict=True))


def test_code_variant_chunks(ctx):
    attack = PoisonFrog(variant="code", chunk_size=16, num_targets=2, eps=EPS, steps=5)
    assert attack.resolved_distance == "l1" and attack.max_poisons(10_000) == 16
    result = attack(ctx)
    check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(len(ctx.x_train)))
    base_rows = torch.nonzero(ctx.y_train == 1).flatten()
    chunks = [c.tolist() for c in base_rows[: len(base_rows) // 16 * 16].split(16)]
    for trial in result.trials:
        assert len(trial.indices) == 16 and (trial.y == 1).all()
        assert trial.indices.tolist() in chunks
    # the chosen chunk has the smallest total distance: trying only the first chunk cannot do better
    first_only = PoisonFrog(variant="code", chunk_size=16, max_chunks=1, num_targets=2, eps=EPS, steps=5)(ctx)
    assert result.info["mean_feature_distance"] <= first_only.info["mean_feature_distance"] + 1e-6
    assert result.info["chunks_per_target"] == len(chunks) and first_only.info["chunks_per_target"] == 1
    # a pool smaller than one chunk is one smaller chunk, and the result says how many poisons that made
    small = PoisonFrog(variant="code", chunk_size=len(base_rows) + 5, num_targets=1, eps=EPS, steps=2)(ctx)
    assert small.info["poisons_per_target"] == len(small.trials[0].indices) == len(base_rows)


def test_sign_pgd_respects_ball_and_range():
    x0 = torch.rand(4, 3, 5, 5)
    x = sign_pgd(lambda z: z.flatten(1).sum(1), x0, eps=0.1, steps=7, step_size=0.05, maximize=True)
    assert (x - x0).abs().max() <= 0.1 + 1e-6 and x.min() >= 0 and x.max() <= 1
    assert torch.allclose(x, (x0 + 0.1).clamp(max=1.0), atol=1e-6)  # a monotone objective goes to the corner


def test_task_classes_and_defaults():
    attack = PoisonFrog()
    assert attack.task_classes() == [0, 1]
    assert attack.budget_eps == pytest.approx(7 / 255)
    assert attack.resolved_step_size == pytest.approx(0.333 * 7 / 255)
    assert attack.resolved_distance == "l2" and attack.max_poisons(50_000) == 1
    assert PoisonFrog(binary=False).task_classes() is None


@pytest.mark.parametrize(
    "kw, key",
    [({"eps": 2.0}, "eps"), ({"eps": -0.1}, "eps"), ({"num_targets": 0}, "num_targets"), ({"steps": -1}, "steps")],
)
def test_bad_params_refused_naming_the_key(kw, key):
    with pytest.raises(ParamError, match=key):
        PoisonFrog(**kw)


def test_same_target_and_base_class_refused():
    with pytest.raises(ParamError, match="target_class and base_class"):
        PoisonFrog(target_class=3, base_class=3)
