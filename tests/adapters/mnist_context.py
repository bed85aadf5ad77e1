"""A real-data attack context for the targeted-attack tests: a small CNN trained briefly on MNIST digits 0, 1, 2, 6,
8 (external), frozen, and a LinearSVC head on its features of digits 4 and 9 (the target task, the confusable pair
of tests/test_attacks_vs_robustness.py). Skips when ../shared/data/mnist_subset.npz is absent."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from conftest import mnist_path
from toy_context import fit_head

from adapters.attacks.base import AttackContext
from adapters.backbones.base import build_backbone, feature_extractor

EXTERNAL = [0, 1, 2, 6, 8]
TASK = [4, 9]


def _images(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)[:, None] / 255.0


def _subset(x: np.ndarray, y: np.ndarray, classes: list[int], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep = np.flatnonzero(np.isin(y, classes))[:n]
    return _images(x[keep]), torch.tensor(y[keep], dtype=torch.long)


@functools.cache  # built once per test session, shared by the test modules that use it
def mnist_ctx(n_external: int = 1000, epochs: int = 2, n_train: int = 300, n_test: int = 200) -> AttackContext:
    data = np.load(mnist_path())
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", {"width": 8, "feature_dim": 32, "batch_norm": True}, len(EXTERNAL))
    x_ext, y_ext = _subset(data["x_train"], data["y_train"], EXTERNAL, n_external)
    y_ext = torch.tensor([EXTERNAL.index(int(v)) for v in y_ext])
    opt = torch.optim.Adam(backbone.parameters(), lr=2e-3)
    backbone.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(y_ext), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(backbone(x_ext[idx]), y_ext[idx]).backward()
            opt.step()
    extractor = feature_extractor(backbone)
    x_tr, y_tr = _subset(data["x_train"], data["y_train"], TASK, n_train)
    x_te, y_te = _subset(data["x_test"], data["y_test"], TASK, n_test)
    with torch.no_grad():
        f_tr, f_te = extractor(x_tr), extractor(x_te)
    return AttackContext(extractor, x_tr, y_tr, x_te, y_te, f_tr, f_te, fit_head(f_tr, y_tr), fit_head)


def successes(ctx: AttackContext, trials) -> int:
    """Targets whose head, refitted on the training set with the trial's rows replaced, predicts the adversarial
    label (as the cell judges a targeted trial)."""
    won = 0
    for trial in trials:
        features, labels = ctx.f_train.clone(), ctx.y_train.clone()
        features[trial.indices] = ctx.features(trial.x)
        labels[trial.indices] = trial.y
        head = ctx.fit_head(features, labels)
        target = ctx.f_test[trial.target_index : trial.target_index + 1]
        won += int(head.predict(target)[0]) == trial.adversarial_label
    return won
