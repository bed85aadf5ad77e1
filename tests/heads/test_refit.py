"""Refitting heads on row-edited copies of one training set: the shared-base torch solver reaches the optimum of
every edited set, exactly as fitting each set alone; the other paths build the sets."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from adapters.heads.base import fit_head, fit_heads, svm_objective
from adapters.heads.refit import RowEdit, refit_heads
from benchmark.core.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def features() -> tuple[torch.Tensor, torch.Tensor]:
    """Random-ReLU features of the digits (non-negative, unscaled, like CNN features); 10 classes."""
    d = load_digits()
    x, y = torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    return torch.relu(x @ (torch.randn(64, 48, generator=g) / 8)), y


def _edits(f: torch.Tensor, y: torch.Tensor, n: int, rows: int, flip: bool, seed: int = 0) -> list[RowEdit]:
    """``n`` edits of ``rows`` random rows each: features moved (as a poison would), some labels changed."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    out = []
    for k in range(n):
        idx = torch.randperm(len(y), generator=g)[: rows if k % 5 else 0]  # every fifth edit changes nothing
        new_f = f[idx] + 2.0 * torch.rand(len(idx), f.shape[1], generator=g)
        new_y = y[idx].clone()
        if flip and len(idx):
            new_y[0] = classes[(torch.searchsorted(classes, new_y[0]) + 1) % len(classes)]
        out.append(RowEdit(idx, new_f, new_y))
    return out


def _assert_same_optimum(f, y, edits, heads, reference, C=1.0):
    assert len(heads) == len(reference) == len(edits)
    for e, h, r in zip(edits, heads, reference, strict=True):
        fe, ye = e.apply(f, y)
        assert torch.equal(h.classes, r.classes)
        obj_h = svm_objective(fe, ye, h.weight, h.bias, C, h.classes)
        obj_r = svm_objective(fe, ye, r.weight, r.bias, C, r.classes)
        assert abs(obj_h - obj_r) <= 1e-6 * obj_r, (obj_h, obj_r)
        assert (h.predict(fe) == r.predict(fe)).float().mean() >= 0.995


@pytest.mark.parametrize("task", ["binary", "multiclass"])
@pytest.mark.parametrize("warm", [True, False])
def test_shared_solver_matches_separate_fits(features, monkeypatch, task, warm):
    import adapters.heads.base

    f, y = features
    if task == "binary":
        keep = (y == 3) | (y == 8)
        f, y = f[keep], y[keep]
    edits = _edits(f, y, n=12, rows=3, flip=True)
    init = fit_head(f, y, "torch_svm") if warm else None
    with monkeypatch.context() as mp:  # the shared solver, not the fallback that builds every set
        mp.setattr(adapters.heads.base.Head, "refit", lambda *a, **k: pytest.fail("fell back"))
        heads = refit_heads(f, y, edits, "torch_svm", init=init)
    reference = [fit_head(*e.apply(f, y), "torch_svm") for e in edits]
    _assert_same_optimum(f, y, edits, heads, reference)


def test_many_replaced_rows_take_the_direct_path(features, monkeypatch):
    """More differing rows than feature dimensions: each Hessian is formed and factored; still the same optimum."""
    f, y = features
    keep = (y == 1) | (y == 7)
    f, y = f[keep][:, :8], y[keep]  # 8 features: 60 replaced rows exceed the dimension
    edits = _edits(f, y, n=4, rows=60, flip=True)
    init = fit_head(f, y, "torch_svm")
    calls = []
    original = torch.linalg.cholesky
    monkeypatch.setattr(torch.linalg, "cholesky", lambda a, *k, **kw: calls.append(a.shape) or original(a, *k, **kw))
    heads = refit_heads(f, y, edits, "torch_svm", init=init)
    assert any(len(shape) == 4 for shape in calls)  # per-problem Hessians (T, Q, D1, D1) were factored
    _assert_same_optimum(f, y, edits, heads, [fit_head(*e.apply(f, y), "torch_svm") for e in edits])


def test_chunked_directions_give_the_same_heads(features, monkeypatch):
    """Newton directions computed a few problems at a time (memory bound) equal those computed all at once."""
    import adapters.heads.refit

    f, y = features
    edits = _edits(f, y, n=7, rows=3, flip=True)
    whole = refit_heads(f, y, edits, "torch_svm")
    monkeypatch.setattr(adapters.heads.refit._SharedNewton, "CHUNK_BYTES", 1)  # one problem per chunk
    chunked = refit_heads(f, y, edits, "torch_svm")
    for a, b in zip(whole, chunked, strict=True):
        assert torch.allclose(a.weight, b.weight, atol=1e-6) and torch.allclose(a.bias, b.bias, atol=1e-6)


def test_float32_is_close(features):
    f, y = features
    edits = _edits(f, y, n=6, rows=2, flip=False)
    heads = refit_heads(f, y, edits, "torch_svm", {"dtype": "float32"})
    for e, h in zip(edits, heads, strict=True):
        fe, ye = e.apply(f, y)
        ref = fit_head(fe, ye, "torch_svm")
        assert svm_objective(fe, ye, h.weight, h.bias, 1.0) <= 1.001 * svm_objective(fe, ye, ref.weight, ref.bias, 1.0)


@pytest.mark.parametrize(
    ("head", "params", "why"),
    [
        ("linear_svc", None, "sklearn fits each set"),
        ("torch_svm", {"scale": True}, "standardisation is per set"),
        ("torch_svm", None, "an edit brings a new class"),
    ],
)
def test_other_paths_build_each_set(features, monkeypatch, head, params, why):
    import adapters.heads.torch_svm

    f, y = features
    keep = (y == 2) | (y == 5)
    f, y = f[keep], y[keep]
    edits = _edits(f, y, n=3, rows=2, flip=False)
    if why == "an edit brings a new class":
        edits[1] = RowEdit(torch.tensor([0]), f[:1], torch.tensor([9]))
    monkeypatch.setattr(adapters.heads.torch_svm, "fit_shared", lambda *a: pytest.fail(f"shared solver used ({why})"))
    heads = refit_heads(f, y, edits, head, params)
    reference = fit_heads([e.apply(f, y) for e in edits], head, params)
    for h, r in zip(heads, reference, strict=True):
        assert torch.equal(h.classes, r.classes)
        assert torch.allclose(h.weight, r.weight, atol=1e-4) and torch.allclose(h.bias, r.bias, atol=1e-4)


def test_an_edit_that_leaves_one_class_is_refused(features):
    f, y = features
    keep = (y == 2) | (y == 5)
    f, y = f[keep], y[keep]
    fives = torch.nonzero(y == 5).flatten()
    edits = [RowEdit(fives, f[fives], torch.full((len(fives),), 2)), RowEdit(fives[:1], f[fives[:1]], y[fives[:1]])]
    with pytest.raises(DataError, match="at least 2 classes"):
        refit_heads(f, y, edits, "torch_svm")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (RowEdit(torch.tensor([0, 0]), torch.zeros(2, 48), torch.zeros(2, dtype=torch.long)), "replaced twice"),
        (RowEdit(torch.tensor([10_000]), torch.zeros(1, 48), torch.zeros(1, dtype=torch.long)), "row indices"),
        (RowEdit(torch.tensor([1]), torch.zeros(1, 47), torch.zeros(1, dtype=torch.long)), r"features \(1, 48\)"),
    ],
)
def test_bad_edits_are_named(features, edit, message):
    f, y = features
    with pytest.raises(DataError, match=message):
        refit_heads(f, y, [edit, edit], "torch_svm")
