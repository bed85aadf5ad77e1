"""Label flip: rate, existing classes only, determinism, and an accuracy drop after refitting."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapters.base import AttackContext, apply_trial, check_budget
from adapters.label_flip import LabelFlip
from benchmark.errors import ParamError
from benchmark.linear import LinearHead


def fit_head(f, y):
    from sklearn.svm import LinearSVC

    svc = LinearSVC(C=1.0, max_iter=5000).fit(f.numpy(), y.numpy())
    w, b = torch.tensor(svc.coef_, dtype=torch.float32), torch.tensor(svc.intercept_, dtype=torch.float32)
    if w.shape[0] == 1:
        w, b = torch.cat([-w, w]), torch.cat([-b, b])
    return LinearHead(w, b, torch.tensor(svc.classes_, dtype=torch.long))


def make_ctx(classes=(1, 7), n_train=300, n_test=60, size=8, seed=0):
    """sklearn digits, 3 channels, a fixed random conv extractor, a LinearSVC head."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target, dtype=torch.long)
    keep = torch.isin(y, torch.tensor(classes))
    x, y = x[keep], y[keep]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    torch.manual_seed(seed)
    ext = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()).eval()
    for q in ext.parameters():
        q.requires_grad_(False)
    xtr, ytr = x[:n_train], y[:n_train]
    xte, yte = x[n_train : n_train + n_test], y[n_train : n_train + n_test]
    with torch.no_grad():
        ftr, fte = ext(xtr), ext(xte)
    return AttackContext(ext, xtr, ytr, xte, yte, ftr, fte, fit_head(ftr, ytr), fit_head, seed=seed)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny tensors: one intra-op thread is faster, and orders of magnitude faster on a loaded machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ctx(one_thread):
    return make_ctx(classes=(1, 7), n_train=300, n_test=60)


def accuracy(head, f, y):
    return float((head.predict(f) == y).float().mean())


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
    clean = accuracy(ctx.head, ctx.f_test, ctx.y_test)
    assert clean > 0.9
    trial = LabelFlip(rate=0.45, mode="different")(ctx).trials[0]
    _, y_poison = apply_trial(None, ctx.y_train, trial)
    poisoned = accuracy(fit_head(ctx.f_train, y_poison), ctx.f_test, ctx.y_test)
    assert poisoned < clean - 0.1


def test_bad_params_refused():
    with pytest.raises(ParamError, match="rate"):
        LabelFlip(rate=-0.02)
    with pytest.raises(ParamError, match="mode"):
        LabelFlip(mode="sometimes")
