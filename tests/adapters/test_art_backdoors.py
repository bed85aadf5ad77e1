"""ART's hidden-trigger and clean-label backdoors: their trials on a toy context (fast), and on real MNIST features
of a briefly trained small CNN, where each must raise triggered success above the clean head's."""

from __future__ import annotations

import pytest
import torch
from conftest import mnist_path
from toy_context import make_ctx

from adapters.attacks.art_backdoors import ArtCleanLabelBackdoor, ArtHiddenTrigger
from adapters.attacks.base import check_budget
from benchmark.cell.pipeline import RunOptions, run_cell
from benchmark.core.errors import AttackError, ParamError
from benchmark.suite import expand, parse_suite

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"num_trials": 2, "num_poisons": 4, "eps": 0.1, "patch_size": 3}
HTBD_FAST = {**FAST, "max_iter": 20, "stopping_threshold": 0.0}
CLBD_FAST = {**FAST, "max_iter": 3, "eps_step": 0.05}


@pytest.fixture(scope="module")
def ctx(one_thread):
    return make_ctx(n_train=120, n_test=60, size=12)


def _checked(ctx, attack):
    result = attack(ctx)
    shape = tuple(ctx.x_train.shape[1:])
    check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(len(ctx.x_train)), classes=[0, 1],
                 max_trigger_area=attack.max_trigger_area(shape))
    return result


@pytest.mark.parametrize("cls,params", [(ArtHiddenTrigger, HTBD_FAST), (ArtCleanLabelBackdoor, CLBD_FAST)])
def test_trials_keep_base_labels_each_with_its_own_trigger(ctx, cls, params):
    attack = cls(**params)
    result = _checked(ctx, attack)
    assert len(result.trials) == 2 and not result.targeted
    for trial in result.trials:
        assert len(trial.indices) == 4 and trial.indices.unique().numel() == 4
        assert torch.all(ctx.y_train[trial.indices] == 1) and torch.all(trial.y == 1)
        assert (trial.target_label, trial.adversarial_label) == (0, 1)
        assert trial.trigger.area == 9
    a, b = (t.trigger for t in result.trials)
    assert not torch.equal(a.pattern, b.pattern)
    again = cls(**params)(ctx)  # deterministic given the seed (ART draws from numpy's generator)
    for t1, t2 in zip(result.trials, again.trials, strict=True):
        assert torch.equal(t1.indices, t2.indices) and torch.equal(t1.x, t2.x)
        assert torch.equal(t1.trigger.pattern, t2.trigger.pattern)


def test_hidden_trigger_poisons_stay_in_the_ball_without_the_trigger(ctx):
    result = _checked(ctx, ArtHiddenTrigger(**HTBD_FAST, learning_rate=1.0))
    for trial in result.trials:
        delta = (trial.x - ctx.x_train[trial.indices]).abs()
        assert float(delta.max()) <= 0.1 + 1e-6 and float(delta.max()) > 0.01  # moved, inside eps everywhere
    assert result.info["mean_feature_distance"] < result.info["mean_initial_feature_distance"]


def test_clean_label_backdoor_poisons_carry_the_stamp_and_pgd_outside_it(ctx):
    result = _checked(ctx, ArtCleanLabelBackdoor(**CLBD_FAST, patch_location="corner"))
    for trial in result.trials:
        trig = trial.trigger
        assert bool(trig.mask[-3:, -3:].all()) and trig.area == 9  # bottom-right corner
        assert torch.equal(trial.x[:, :, trig.mask], trig.pattern[:, trig.mask].expand(4, -1, -1))
        outside = (trial.x - ctx.x_train[trial.indices]).abs()[:, :, ~trig.mask]
        assert float(outside.max()) <= 0.1 + 1e-6 and float(outside.max()) > 0.01
    inside = ArtCleanLabelBackdoor(**CLBD_FAST, trigger_in_ball=True)(ctx)  # Toxic's code: the stamp clipped too
    assert max(float((t.x - ctx.x_train[t.indices]).abs().max()) for t in inside.trials) <= 0.1 + 1e-6


@pytest.mark.parametrize("cls,params", [(ArtHiddenTrigger, HTBD_FAST), (ArtCleanLabelBackdoor, CLBD_FAST)])
def test_a_multiclass_task_poisons_the_base_class_rows(cls, params):
    ctx3 = make_ctx(classes=(0, 1, 2), n_train=150, n_test=60, size=12)
    attack = cls(**{**params, "binary": False, "target_class": 2, "base_class": 0})
    assert attack.task_classes() is None
    result = attack(ctx3)
    check_budget(ctx3.x_train, result, attack.budget_eps, 4, classes=[0, 1, 2], max_trigger_area=9)
    for trial in result.trials:
        assert torch.all(ctx3.y_train[trial.indices] == 0) and (trial.target_label, trial.adversarial_label) == (2, 0)


def test_more_poisons_than_base_images_fails_naming_the_count(ctx):
    n = int((ctx.y_train == 1).sum())
    with pytest.raises(AttackError, match=f"{n} base-class training images for 500 poisons"):
        ArtHiddenTrigger(**{**HTBD_FAST, "num_poisons": 500})(ctx)


def test_a_patch_larger_than_the_images_fails_with_its_size(ctx):
    with pytest.raises(AttackError, match="patch_size 13 does not fit 12x12 images"):
        ArtCleanLabelBackdoor(**{**CLBD_FAST, "patch_size": 13})(ctx)


@pytest.mark.parametrize("cls", [ArtHiddenTrigger, ArtCleanLabelBackdoor])
@pytest.mark.parametrize("kw,key", [({"target_class": 1, "base_class": 1}, "base_class"),
                                    ({"patch_location": "centre"}, "patch_location"), ({"patch_size": 0}, "patch_size"),
                                    ({"eps": 1.5}, "eps")])
def test_bad_params_refused_naming_the_key(cls, kw, key):
    with pytest.raises(ParamError, match=key):
        cls(**kw)


def test_cost_counts_the_optimisation_passes():
    assert ArtHiddenTrigger(num_trials=2, num_poisons=5, max_iter=10).cost(100, 10).passes == 2 * 5 * 11
    assert ArtCleanLabelBackdoor(num_trials=2, num_poisons=5, max_iter=10).cost(100, 10).refits == 2


# ---------------------------------------------------------------------------------------------------------------
# real MNIST: a small CNN trained for 6 epochs on digits 5-9, victims 0, bases 1


def _data(classes: list[int], train_limit: int) -> dict:
    return {"name": "npz", "params": {"path": str(mnist_path())}, "classes": classes, "train_limit": train_limit,
            "test_limit": 300, "image_size": 16}


def mnist_suite() -> dict:
    """Built when a test asks (the data may be absent: that skips the test, not the module's collection)."""
    return {
        "name": "backdoors",
        "device": "cpu",
        "datasets": {"mnist": {"external": _data([5, 6, 7, 8, 9], 600), "target": _data([0, 1, 2], 600)}},
        "backbones": {"small_cnn": {"params": {"width": 8, "feature_dim": 32, "batch_norm": True}}},
        "defenses": {"naive": {"params": {"lr": 0.003, "max_epochs": 6, "batch_size": 32}}},
        "attacks": {
            # 60 of the ~200 digit-1 training images, eps 0.2 (MNIST scale); hidden trigger at ART's learning rate,
            # 300 steps; the clean-label backdoor needs a larger patch (8x8 of 16x16) on these features
            "htbd": {"name": "art_hidden_trigger", "params": {
                "num_trials": 3, "num_poisons": 60, "eps": 0.2, "patch_size": 6, "max_iter": 300,
                "stopping_threshold": 0.0}},
            "clbd": {"name": "art_clean_label_backdoor", "params": {"num_trials": 3, "num_poisons": 60, "eps": 0.2,
                                                                    "patch_size": 8, "eps_step": 0.05, "max_iter": 10}},
        },
        "evaluation": {"robust_eps": 0.1, "robust_steps": 2, "robust_samples": 20},
    }


@pytest.fixture(scope="module")
def records(tmp_path_factory, one_thread):
    cache = str(tmp_path_factory.mktemp("backdoor_cache"))
    out = {}
    for cell in expand(parse_suite(mnist_suite())):
        rec = run_cell(cell, RunOptions(device="cpu", cache_dir=cache))
        assert rec.status == "FINISHED", rec.error
        out[cell.attack.label] = rec
    print({k: {m: round(v, 3) for m, v in r.metrics.items() if "success" in m or "accuracy" in m or "seconds" in m}
           for k, r in out.items()})
    return out


@pytest.mark.parametrize("label", ["htbd", "clbd"])
def test_each_backdoor_beats_the_clean_heads_triggered_baseline(records, label):
    m = records[label].metrics
    assert m["backdoor_images_counted"] > 150  # ~75 correctly classified zeros x 3 trials
    assert m["attack_success_ci_low"] > m["backdoor_clean_head_ci_high"], m
    assert m["poisoned_accuracy"] > 0.9  # the backdoor leaves clean accuracy alone
    assert {"backdoor_hits.npz", "triggered_examples.png", "poisons.npz"} <= set(records[label].artifacts)


# ---------------------------------------------------------------------------------------------------------------
# the ART 1.20 defects the adapters work around (README, "Attacks"): these fail once ART fixes them


def test_art_hidden_trigger_by_index_always_raises(ctx):
    import numpy as np
    from art.attacks.poisoning import HiddenTriggerBackdoorPyTorch

    from adapters.attacks.art_backdoors import _backdoor
    from adapters.attacks.art_poisoning import FEATURE_LAYER, art_classifier

    trigger = ArtHiddenTrigger(patch_size=2).trigger((3, 12, 12), torch.Generator().manual_seed(0))
    y = ctx.y_train.numpy()
    bases, sources = np.nonzero(y == 1)[0][:3], np.nonzero(y == 0)[0][:3]  # valid: different classes
    attack = HiddenTriggerBackdoorPyTorch(art_classifier(ctx), target=bases, source=sources,
                                          feature_layer=FEATURE_LAYER, backdoor=_backdoor(trigger), is_index=True,
                                          max_iter=2, verbose=False)
    with pytest.raises(ValueError, match="source class that is labeled as the target"):
        attack.poison(ctx.x_train.numpy(), y=np.eye(2)[y])


def test_art_clean_label_backdoor_draws_rows_with_replacement_and_never_all(ctx):
    import numpy as np
    from art.attacks.poisoning import PoisoningAttackCleanLabelBackdoor

    from adapters.attacks.art_backdoors import _backdoor
    from adapters.attacks.art_estimator import art_classifier, numpy_seed

    trigger = ArtCleanLabelBackdoor(patch_size=2).trigger((3, 12, 12), torch.Generator().manual_seed(0))
    x = ctx.x_train[ctx.y_train == 1][:20].numpy()
    target = np.array([0.0, 1.0])
    attack = PoisoningAttackCleanLabelBackdoor(_backdoor(trigger), art_classifier(ctx), target, pp_poison=0.99,
                                               eps=0.05, eps_step=0.05, max_iter=1)
    attack.attack.set_params(verbose=False)
    with numpy_seed(0):
        poisoned, _ = attack.poison(x, y=np.tile(target, (20, 1)))
    changed = int((np.abs(poisoned - x).reshape(20, -1).max(axis=1) > 0).sum())
    assert changed < 19  # int(0.99 * 20) = 19 draws, some of them repeated
