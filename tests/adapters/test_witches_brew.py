"""Witches' Brew (ours): parameters refused at load, budget, determinism, batching, the gradient-matching
objective, success on real MNIST features where the unperturbed bases never succeed, and one `benchmark run` of a
tiny suite with both new targeted attacks."""

import os
from dataclasses import replace

import pytest
import torch
from conftest import tiny_suite, write_suite
from mlflow.tracking import MlflowClient
from mnist_context import mnist_ctx, successes
from toy_context import make_ctx

from adapters.attacks.base import check_budget
from adapters.attacks.witches_brew import WitchesBrew, head_loss_gradient
from benchmark.cli.commands import main
from benchmark.core.linf import adam_linf

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 16 / 255
SMALL = dict(num_targets=4, num_poisons=3, eps=EPS, steps=20, restarts=2)


@pytest.fixture(scope="module")
def ctx(one_thread):
    return make_ctx()


@pytest.mark.parametrize(
    "params, key",
    [
        ({"eps": 1.5}, "attacks.wb.params.eps"),
        ({"restarts": 0}, "attacks.wb.params.restarts"),
        ({"step_size": 0}, "attacks.wb.params.step_size"),
        ({"loss": "hinge"}, "attacks.wb.params.loss"),
        ({"num_poisons": 0}, "attacks.wb.params.num_poisons"),
        ({"target_class": 2, "base_class": 2}, "target_class and base_class must differ"),
    ],
)
def test_bad_params_refused_at_load(params, key, tmp_path, smoke_dict, capsys):
    d = tiny_suite(smoke_dict, "bad", attacks=("none",))
    d["attacks"]["wb"] = {"name": "witches_brew", "params": params}
    assert main(["validate", str(write_suite(tmp_path, d))]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and key in err, err


def test_within_budget_clean_label_and_inputs_untouched(ctx):
    snapshot = {k: getattr(ctx, k).clone() for k in ("x_train", "y_train", "x_test", "f_train", "f_test")}
    attack = WitchesBrew(**SMALL)
    result = attack(ctx)
    assert result.targeted and len(result.trials) == 4
    report = check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(len(ctx.x_train)))
    assert report.passed and report.linf <= EPS + 1e-6 and report.changed == 3
    assert report.linf > 0.5 * EPS  # the poisons moved
    for trial in result.trials:
        assert (trial.y == 1).all() and (ctx.y_train[trial.indices] == 1).all()  # clean label
        assert trial.target_label == 0 and trial.adversarial_label == 1
    for k, v in snapshot.items():
        assert torch.equal(getattr(ctx, k), v), f"ctx.{k} was mutated"


@pytest.mark.parametrize("loss", ["squared_hinge", "cross_entropy"])
def test_objective_decreases(ctx, loss):
    info = WitchesBrew(loss=loss, **SMALL)(ctx).info
    assert info["mean_gradient_alignment_loss"] < 0.5 * info["mean_initial_gradient_alignment_loss"], info


def test_deterministic_and_batching_invariant(ctx):
    a = WitchesBrew(**SMALL)(ctx)
    b = WitchesBrew(**SMALL)(ctx)
    c = WitchesBrew(batch_size=7, **SMALL)(ctx)  # two targets (6 poisons) per pass
    for s, t, u in zip(a.trials, b.trials, c.trials, strict=True):
        assert torch.equal(s.x, t.x)
        torch.testing.assert_close(s.x, u.x, atol=1e-5, rtol=0)


def test_more_restarts_never_end_worse(ctx):
    """The best restart per target is kept: restarts 1..R include restart 0's result."""
    one = WitchesBrew(**{**SMALL, "restarts": 1})(ctx).info["mean_gradient_alignment_loss"]
    three = WitchesBrew(**{**SMALL, "restarts": 3})(ctx).info["mean_gradient_alignment_loss"]
    assert three <= one + 1e-7


@pytest.mark.parametrize("loss", ["squared_hinge", "cross_entropy"])
def test_head_loss_gradient_matches_autograd(ctx, loss):
    """The closed-form gradient is the gradient of the head's training loss with respect to (W, b)."""
    f = ctx.f_train[:7].float()
    label = 1
    w = ctx.head.weight.clone().requires_grad_(True)
    b = ctx.head.bias.clone().requires_grad_(True)
    scores = f @ w.T + b
    if loss == "cross_entropy":
        total = torch.nn.functional.cross_entropy(scores, torch.full((7,), label), reduction="sum")
    else:
        sign = torch.full_like(scores, -1.0)
        sign[:, label] = 1.0
        total = (1 - sign * scores).clamp_min(0).pow(2).sum()
    gw, gb = torch.autograd.grad(total, (w, b))
    expected = torch.cat([gw, gb[:, None]], dim=1).flatten()
    torch.testing.assert_close(head_loss_gradient(ctx.head, f[None], label, loss)[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("signed", [False, True])
def test_adam_linf_stays_in_the_box_and_follows_its_schedule(signed):
    x0 = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))

    def up(z):
        return z.flatten(1).sum(1) * -1.0  # minimised by raising every pixel

    x = adam_linf(up, x0, x0, eps=0.1, steps=40, lr=0.02, signed=signed)
    assert torch.allclose(x, (x0 + 0.1).clamp(max=1.0), atol=1e-6)  # a monotone objective goes to the corner
    # the rate is multiplied by gamma = 0 at step 1: only the first Adam step (of length lr) is taken
    once = adam_linf(up, x0, x0, eps=0.1, steps=10, lr=0.02, signed=signed, milestones=[1], gamma=0.0)
    torch.testing.assert_close(once, (x0 + 0.02).clamp(max=1.0), atol=1e-5, rtol=0)


def test_cost_counts_extractor_passes():
    cost = WitchesBrew(num_targets=10, num_poisons=5, steps=100, restarts=4).cost(1000, 500)
    assert cost.passes == 10 * 5 * 4 * 101 and cost.refits == 10


@pytest.mark.slow
def test_succeeds_on_real_features_where_unperturbed_bases_do_not():
    """MNIST 9 -> 4, 25 poisons, eps 0.1, 50 steps x 2 restarts: measured (seed 0, 2 shared CPU cores) 4/20
    targets; the same bases unperturbed 0/20."""
    ctx = mnist_ctx()
    kw = dict(target_class=9, base_class=4, num_targets=20, num_poisons=25, eps=0.1)
    result = WitchesBrew(steps=50, restarts=2, **kw)(ctx)
    attacked = successes(ctx, result.trials)
    unperturbed = [replace(t, x=ctx.x_train[t.indices]) for t in result.trials]
    baseline = successes(ctx, unperturbed)
    print(f"witches' brew {attacked}/20, unperturbed bases {baseline}/20")
    assert attacked >= baseline + 2, (attacked, baseline)


def test_benchmark_run_with_both_attacks(tmp_path, smoke_dict):
    """One `benchmark run` of a tiny synthetic suite: both new attacks finish and log their success rate."""
    d = tiny_suite(smoke_dict, "targeted-new", attacks=("none",))
    small = {"target_class": 0, "base_class": 1, "num_targets": 2, "num_poisons": 2, "eps": 0.05}
    d["attacks"] = {
        "cp": {"name": "convex_polytope", "params": {**small, "steps": 5}},
        "wb": {"name": "witches_brew", "params": {**small, "steps": 5, "restarts": 2}},
    }
    assert main(["run", str(write_suite(tmp_path, d)), "--quiet"]) == 0
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("targeted-new")
    cells = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("benchmark.role") == "cell"]
    by_attack = {r.data.tags.get("attack"): r for r in cells}
    assert sorted(by_attack) == ["cp", "wb"], [r.data.tags for r in cells]
    for run in by_attack.values():
        assert run.info.status == "FINISHED"
        assert 0.0 <= run.data.metrics["attack_success_rate"] <= 1.0
        assert run.data.metrics["num_trials"] >= 1
