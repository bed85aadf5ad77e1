"""Convex Polytope (ours): parameters refused at load, budget, determinism, batching, the objective and its
coefficients, and success on real MNIST features where the unperturbed bases never succeed."""

import pytest
import torch
from conftest import tiny_suite, write_suite
from mnist_context import mnist_ctx, successes
from toy_context import make_ctx

from adapters.attacks.base import check_budget
from adapters.attacks.convex_polytope import (
    ConvexPolytope,
    polytope_objective,
    simplex_projection,
)
from adapters.attacks.targeted import nearest_rows, select_targets
from benchmark.cli.commands import main

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 16 / 255
SMALL = dict(num_targets=4, num_poisons=3, eps=EPS, steps=30, lr=0.01)


@pytest.fixture(scope="module")
def ctx(one_thread):
    return make_ctx()


@pytest.mark.parametrize(
    "params, key",
    [
        ({"eps": 2.0}, "attacks.cp.params.eps"),
        ({"steps": -1}, "attacks.cp.params.steps"),
        ({"lr": 0.0}, "attacks.cp.params.lr"),
        ({"coefficients": "median"}, "attacks.cp.params.coefficients"),
        ({"coefficient_steps": 0}, "attacks.cp.params.coefficient_steps"),
        ({"target_class": 1, "base_class": 1}, "target_class and base_class must differ"),
        ({"coefficients": "uniform", "coefficient_steps": 5}, "coefficient_steps does nothing"),
    ],
)
def test_bad_params_refused_at_load(params, key, tmp_path, smoke_dict, capsys):
    d = tiny_suite(smoke_dict, "bad", attacks=("none",))
    d["attacks"]["cp"] = {"name": "convex_polytope", "params": params}
    assert main(["validate", str(write_suite(tmp_path, d))]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and key in err, err


def test_within_budget_clean_label_and_inputs_untouched(ctx):
    snapshot = {k: getattr(ctx, k).clone() for k in ("x_train", "y_train", "x_test", "f_train", "f_test")}
    attack = ConvexPolytope(**SMALL)
    result = attack(ctx)
    assert result.targeted and len(result.trials) == 4
    report = check_budget(ctx.x_train, result, attack.budget_eps, attack.max_poisons(len(ctx.x_train)))
    assert report.passed and report.linf <= EPS + 1e-6 and report.changed == 3
    base_rows = torch.nonzero(ctx.y_train == 1).flatten()
    for trial in result.trials:
        assert (trial.y == 1).all() and (ctx.y_train[trial.indices] == 1).all()  # clean label
        assert trial.target_label == 0 and trial.adversarial_label == 1
        d = (ctx.f_train[base_rows] - ctx.f_test[trial.target_index]).norm(dim=1)  # the nearest bases
        assert torch.equal(trial.indices.sort().values, base_rows[d.argsort()[:3]].sort().values)
    for k, v in snapshot.items():
        assert torch.equal(getattr(ctx, k), v), f"ctx.{k} was mutated"


def test_objective_decreases(ctx):
    info = ConvexPolytope(**SMALL)(ctx).info
    assert info["mean_polytope_objective"] < 0.5 * info["mean_initial_polytope_objective"], info


def test_deterministic_and_batching_invariant(ctx):
    a = ConvexPolytope(**SMALL)(ctx)
    b = ConvexPolytope(**SMALL)(ctx)
    c = ConvexPolytope(batch_size=3, **SMALL)(ctx)  # one target (3 poisons) per pass
    for s, t, u in zip(a.trials, b.trials, c.trials, strict=True):
        assert torch.equal(s.x, t.x)
        assert torch.equal(s.indices, u.indices)
        torch.testing.assert_close(s.x, u.x, atol=1e-5, rtol=0)


def test_learned_coefficients_leave_uniform_and_do_not_end_above_bullseye(ctx):
    """Bullseye Polytope is this attack with c fixed at 1/k: on the same start, learning c moves it off uniform
    and ends at or below the uniform objective."""
    k = 5
    targets = select_targets(ctx, 0, 6)
    pool = torch.nonzero(ctx.y_train == 1).flatten()
    bases = nearest_rows(ctx, ctx.f_test[targets], pool, k, "l2")
    x0, tf = ctx.x_train[bases], ctx.f_test[targets].float()
    kw = dict(num_poisons=k, eps=0.03, steps=40, lr=0.01)
    x_cp, c_cp, obj_cp, start = ConvexPolytope(**kw).optimise(ctx, x0, tf)
    x_bp, c_bp, obj_bp, start_bp = ConvexPolytope(coefficients="uniform", **kw).optimise(ctx, x0, tf)
    assert torch.equal(start, start_bp)
    assert torch.allclose(c_bp, torch.full_like(c_bp, 1 / k))
    assert (c_cp - 1 / k).abs().amax(dim=1).mean() > 0.1, c_cp  # the coefficients moved off 1/k
    torch.testing.assert_close(c_cp.sum(dim=1), torch.ones(len(targets)))
    assert (c_cp >= 0).all()
    assert obj_cp.mean() < obj_bp.mean(), (obj_cp, obj_bp)
    # the reported objective is the one of the returned poisons and coefficients
    f = ctx.features(x_cp.flatten(0, 1)).reshape(len(targets), k, -1)
    torch.testing.assert_close(polytope_objective(f, c_cp, tf), obj_cp, atol=1e-5, rtol=1e-3)


def test_simplex_projection():
    v = torch.tensor([[0.2, 0.3, 0.5], [2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-3.0, -1.0, -2.0]])
    c = simplex_projection(v)
    torch.testing.assert_close(c[0], v[0])  # already on the simplex
    torch.testing.assert_close(c[1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(c[2], torch.full((3,), 1 / 3))
    torch.testing.assert_close(c[3], torch.tensor([0.0, 1.0, 0.0]))
    w = simplex_projection(torch.randn(50, 7, generator=torch.Generator().manual_seed(0)) * 3)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(50))


def test_cost_counts_extractor_passes():
    cost = ConvexPolytope(num_targets=10, num_poisons=5, steps=100).cost(1000, 500)
    assert cost.passes == 10 * 5 * 102 and cost.refits == 10


@pytest.mark.slow
def test_succeeds_on_real_features_where_unperturbed_bases_do_not():
    """MNIST 9 -> 4, 25 poisons, eps 0.1: measured (seed 0, 2 shared CPU cores) 5/10 targets with 100 steps;
    the same bases unperturbed (0 steps) 0/10."""
    ctx = mnist_ctx()
    kw = dict(target_class=9, base_class=4, num_targets=10, num_poisons=25, eps=0.1)
    attacked = successes(ctx, ConvexPolytope(steps=100, **kw)(ctx).trials)
    unperturbed = successes(ctx, ConvexPolytope(steps=0, **kw)(ctx).trials)
    print(f"convex polytope {attacked}/10, unperturbed bases {unperturbed}/10")
    assert attacked >= unperturbed + 3, (attacked, unperturbed)
