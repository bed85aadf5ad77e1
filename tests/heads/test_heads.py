"""Linear heads: the LinearSVC wrapper predicts as sklearn; the batched torch solver reaches the same objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from adapters.heads.base import fit_head, fit_heads, head_accuracy, svm_objective
from adapters.heads.linear import LinearHead
from adapters.heads.torch_svm import TorchSVMHead
from benchmark.core.errors import DataError, ParamError
from benchmark.core.registry import REGISTRY

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target, dtype=torch.long)


@pytest.fixture(scope="module")
def relu_features(digits: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """CNN-like features: non-negative, correlated, unscaled (a random ReLU layer on the digits)."""
    x, y = digits
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(64, 96, generator=g) / 8
    return torch.relu(x @ proj), y


def sk_objective(f: torch.Tensor, y: torch.Tensor, C: float, **kw: object) -> tuple[float, LinearSVC]:
    svc = LinearSVC(C=C, **kw).fit(f.double().numpy(), y.numpy())
    return svm_objective(f, y, torch.tensor(svc.coef_), torch.tensor(svc.intercept_), C), svc


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_linear_svc_head_predicts_exactly_as_sklearn(digits, task: str, scale: bool) -> None:
    x, y = digits
    if task == "binary":
        sel = (y == 3) | (y == 8)
        x, y = x[sel], torch.where(y[sel] == 3, 13, 42)  # arbitrary original labels
    head = fit_head(x, y, "linear_svc", {"scale": scale})
    est = LinearSVC()
    model = make_pipeline(StandardScaler(), est) if scale else est
    model.fit(x.double().numpy(), y.numpy())
    expected = torch.from_numpy(model.predict(x.double().numpy()))
    assert torch.equal(head.predict(x), expected)
    assert head.weight.dtype == torch.float32 and head.bias.dtype == torch.float32
    assert head.classes.dtype == torch.int64
    if task == "binary":
        assert head.classes.tolist() == [13, 42]
        assert head.weight.shape == (2, 64)
        assert torch.equal(head.weight[0], -head.weight[1]) and torch.equal(head.bias[0], -head.bias[1])
        if not scale:
            np.testing.assert_allclose(head.weight[1].numpy(), est.coef_[0], rtol=1e-6, atol=1e-7)
    else:
        assert head.weight.shape == (10, 64) and head.classes.tolist() == list(range(10))
    assert head_accuracy(head, x, y) == pytest.approx(float((expected == y).float().mean()))


@pytest.mark.parametrize("C", [1.0, 0.01])
def test_torch_svm_matches_linear_svc_multiclass(relu_features, C: float) -> None:
    f, y = relu_features
    tr, te = slice(0, 1200), slice(1200, None)
    sk_obj, svc = sk_objective(f[tr], y[tr], C)
    head = fit_head(f[tr], y[tr], "torch_svm", {"C": C})
    ours = svm_objective(f[tr], y[tr], head.weight, head.bias, C)
    assert ours <= sk_obj * (1 + 1e-6) + 1e-9, (ours, sk_obj)
    sk_acc = float((torch.from_numpy(svc.predict(f[te].double().numpy())) == y[te]).float().mean())
    assert abs(head_accuracy(head, f[te], y[te]) - sk_acc) <= 0.01
    # a tightly converged LinearSVC finds the same minimum (weights may differ along flat directions)
    tight_obj, _ = sk_objective(f[tr], y[tr], C, tol=1e-10, max_iter=100_000, dual=False)
    assert ours == pytest.approx(tight_obj, rel=1e-6)


def test_torch_svm_binary_and_scaled(digits) -> None:
    x, y = digits
    sel = (y == 1) | (y == 7)
    f, yb = x[sel], y[sel]
    for scale in (False, True):
        head = fit_head(f, yb, "torch_svm", {"C": 0.1, "scale": scale})
        assert head.classes.tolist() == [1, 7]
        assert torch.equal(head.weight[0], -head.weight[1])
        ref = fit_head(f, yb, "linear_svc", {"C": 0.1, "scale": scale})
        agree = float((head.predict(f) == ref.predict(f)).float().mean())
        assert agree >= 0.99
    # unscaled: objective at or below sklearn's
    sk_obj, _ = sk_objective(f, yb, 0.1)
    head = fit_head(f, yb, "torch_svm", {"C": 0.1})
    assert svm_objective(f, yb, head.weight, head.bias, 0.1) <= sk_obj * (1 + 1e-6)


def test_fit_many_equals_separate_fits(relu_features) -> None:
    f, y = relu_features
    g = torch.Generator().manual_seed(1)
    problems = []
    for t in range(20):
        # poisoned variants of one binary training set, two of them with a different size (padding)
        sel = torch.nonzero((y == 0) | (y == 6)).flatten()[: 300 - 10 * (t % 3 == 0)]
        ft, yt = f[sel].clone(), y[sel].clone()
        rows = torch.randperm(len(sel), generator=g)[:20]
        ft[rows] += 0.5 * torch.randn(20, f.shape[1], generator=g).abs()
        if t % 4 == 0:
            yt[rows[:5]] = 6 - yt[rows[:5]]  # a few label flips
        problems.append((ft, yt))
    params = {"C": 1.0}
    many = fit_heads(problems, "torch_svm", params)
    assert len(many) == 20
    for (ft, yt), h in zip(problems, many, strict=True):
        one = fit_head(ft, yt, "torch_svm", params)
        assert torch.equal(h.classes, one.classes)
        np.testing.assert_allclose(h.weight.numpy(), one.weight.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(h.bias.numpy(), one.bias.numpy(), rtol=1e-4, atol=1e-5)
        assert torch.equal(h.predict(ft), one.predict(ft))
    # stacked (T, N, D) input and a warm start give the same heads
    same_n = [(ft[:290], yt[:290]) for ft, yt in problems]
    stacked = TorchSVMHead(C=1.0).fit_many(
        torch.stack([p[0] for p in same_n]), torch.stack([p[1] for p in same_n])
    )
    warm = fit_heads(same_n, "torch_svm", params, init=many[0])
    for (ft, yt), a, b in zip(same_n, stacked, warm, strict=True):
        # the stopping rule bounds ||w - w*|| by ||grad|| <= tol * ||grad at 0||: compare the optimum's value tightly,
        # the weights to that bound
        obj_a, obj_b = (svm_objective(ft, yt, h.weight, h.bias, 1.0) for h in (a, b))
        assert abs(obj_a - obj_b) <= 1e-6 * obj_a
        np.testing.assert_allclose(a.weight.numpy(), b.weight.numpy(), atol=1e-4)
    # the sklearn loop accepts the same input
    sk = fit_heads(problems[:3], "linear_svc")
    assert all(isinstance(h, LinearHead) for h in sk)


def test_cg_solver_reaches_the_same_optimum(relu_features) -> None:
    f, y = relu_features
    f, y = f[:600], y[:600]
    a = fit_head(f, y, "torch_svm", {"solver": "cholesky"})
    b = fit_head(f, y, "torch_svm", {"solver": "cg"})
    oa, ob = (svm_objective(f, y, h.weight, h.bias, 1.0) for h in (a, b))
    assert ob == pytest.approx(oa, rel=1e-5)


def test_float32_solver_is_close(relu_features) -> None:
    f, y = relu_features
    f, y = f[:600], y[:600]
    a = fit_head(f, y, "torch_svm", {"C": 0.1})
    b = fit_head(f, y, "torch_svm", {"C": 0.1, "dtype": "float32"})
    oa, ob = (svm_objective(f, y, h.weight, h.bias, 0.1) for h in (a, b))
    assert ob == pytest.approx(oa, rel=1e-3)


def test_errors_and_params(digits) -> None:
    x, y = digits
    with pytest.raises(DataError, match="at least 2 classes"):
        fit_head(x[y == 0], y[y == 0], "torch_svm")
    with pytest.raises(DataError, match="at least 2 classes"):
        fit_head(x[y == 0], y[y == 0], "linear_svc")
    with pytest.raises(ParamError, match="C"):
        REGISTRY.get("head", "linear_svc").validate({"C": -1})
    with pytest.raises(ParamError, match="unknown key"):
        REGISTRY.get("head", "torch_svm").validate({"dual": True})
    p = REGISTRY.get("head", "linear_svc").validate({})
    assert (p.C, p.max_iter, p.tol, p.scale, p.dual) == (1.0, 1000, 1e-4, False, "auto")
    assert fit_heads([], "torch_svm") == []


def test_linear_svc_is_repeatable_in_the_dual_solver(relu_features) -> None:
    """N < D: 'auto' picks liblinear's dual solver, which shuffles; a fixed random_state makes it repeatable."""
    f, y = relu_features
    f, y = f[:60], y[:60]
    np.random.seed(1)
    a = fit_head(f, y, "linear_svc", {"max_iter": 5})
    np.random.seed(2)
    b = fit_head(f, y, "linear_svc", {"max_iter": 5})
    assert torch.equal(a.weight, b.weight)
