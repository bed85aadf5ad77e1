"""A group trained in one loop gives each member the weights and curves that train_backbone gives it alone."""

from __future__ import annotations

import pytest
import torch

from adapters.backbones import build_backbone
from benchmark.cell.stacked import why_not_groupable
from benchmark.cell.training import Member, train_backbone, train_backbones
from benchmark.core.registry import make

CNN = {"width": 4, "feature_dim": 16}


def _model(seed: int, **params) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone("small_cnn", {**CNN, **params}, num_classes=3)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(96, 3, 16, 16, generator=g), torch.randint(3, (96,), generator=g)


def test_grouped_equals_sequential_per_model(data, one_thread):
    """Different seeds and defenses (naive, FGSM, PGD) and epoch counts in one group; each member as if alone."""
    x, y = data
    common = {"batch_size": 32, "lr": 1e-3, "stop_at": 1.0}
    specs = [
        ("naive", {"max_epochs": 2}, 0),
        ("pgd", {"max_epochs": 2, "eps": 0.03, "steps": 3}, 1),
        ("fgsm", {"max_epochs": 1, "eps": 0.03}, 2),
        ("pgd", {"max_epochs": 2, "eps": 0.03, "steps": 3}, 3),
    ]
    alone = []
    for defense, extra, seed in specs:
        model = _model(seed)
        alone.append((model, train_backbone(model, x, y, defense, {**common, **extra}, seed=seed, progress=False)))
    members = [Member(_model(seed), defense, {**common, **extra}, seed) for defense, extra, seed in specs]
    grouped = train_backbones(members, x, y)
    for (model, res), member, g_res in zip(alone, members, grouped, strict=True):
        for a, b in zip(model.state_dict().values(), member.backbone.state_dict().values(), strict=True):
            assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
        assert g_res.epochs == res.epochs
        assert g_res.curves["train_loss"] == pytest.approx(res.curves["train_loss"], rel=1e-5)
        assert g_res.curves["train_acc"] == pytest.approx(res.curves["train_acc"], abs=1e-6)
    # training moved the weights: equal because the arithmetic is the same, not because nothing happened
    assert not torch.allclose(members[1].backbone.state_dict()["classifier.weight"], _model(1).state_dict()["classifier.weight"])


def test_early_stop_keeps_the_weights_of_its_epoch(data, one_thread):
    x, y = data
    params = {"batch_size": 32, "lr": 1e-3, "max_epochs": 3}
    model = _model(0)
    res = train_backbone(model, x, y, "naive", {**params, "stop_at": 0.0}, progress=False)  # stops after epoch 1
    members = [Member(_model(0), "naive", {**params, "stop_at": 0.0}), Member(_model(1), "naive", {**params, "stop_at": 1.0})]
    grouped = train_backbones(members, x, y)
    assert res.epochs == grouped[0].epochs == 1 and grouped[0].stopped_early
    assert grouped[1].epochs == 3
    for a, b in zip(model.state_dict().values(), members[0].backbone.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        (lambda: [Member(_model(0, batch_norm=True), "naive")], "BatchNorm2d"),
        (lambda: [Member(_model(0), "naive", {"lr": 1e-3}), Member(_model(1), "naive", {"lr": 1e-4})], "different lr"),
        (lambda: [Member(_model(0), "pgd", {"random_start": True})], "random_start"),
        (lambda: [Member(_model(0), "naive"), Member(_model(1, width=8), "naive")], "different architectures"),
    ],
)
def test_what_cannot_be_grouped_is_refused_by_name(members, reason):
    group = members()
    defenses = [make("defense", m.defense, m.params) for m in group]
    assert reason in why_not_groupable([m.backbone for m in group], defenses)
    if len(group) > 1:
        with pytest.raises(ValueError, match=reason):
            train_backbones(group, torch.rand(8, 3, 16, 16), torch.arange(8) % 3)
