"""A tiny attack context shared by the adapter tests: sklearn digits, a fixed random conv extractor, a LinearSVC."""

import torch
import torch.nn.functional as F
from torch import nn

from adapters.attacks.base import AttackContext
from adapters.heads.base import head_accuracy  # noqa: F401  (the attack tests take it from here)
from adapters.heads.linear import LinearHead


def fit_head(f, y):
    from sklearn.svm import LinearSVC

    svc = LinearSVC(C=1.0, max_iter=5000).fit(f.numpy(), y.numpy())
    w, b = torch.tensor(svc.coef_, dtype=torch.float32), torch.tensor(svc.intercept_, dtype=torch.float32)
    if w.shape[0] == 1:
        w, b = torch.cat([-w, w]), torch.cat([-b, b])
    return LinearHead(w, b, torch.tensor(svc.classes_, dtype=torch.long))


def two_layer_extractor() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
    )  # fmt: skip


def make_ctx(classes=(0, 1), n_train=160, n_test=80, size=16, seed=0, extractor=two_layer_extractor):
    """sklearn digits upsampled to 3 x size x size, a fixed random conv extractor, a LinearSVC head."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target, dtype=torch.long)
    keep = torch.isin(y, torch.tensor(classes))
    x, y = x[keep], y[keep]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    torch.manual_seed(seed)
    ext = extractor().eval()
    for q in ext.parameters():
        q.requires_grad_(False)
    xtr, ytr = x[:n_train], y[:n_train]
    xte, yte = x[n_train : n_train + n_test], y[n_train : n_train + n_test]
    with torch.no_grad():
        ftr, fte = ext(xtr), ext(xte)
    return AttackContext(ext, xtr, ytr, xte, yte, ftr, fte, fit_head(ftr, ytr), fit_head, seed=seed)
