"""The torchattacks wrapper: L-inf budget, [0, 1] range, model mode, no side effects on the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapters.defenses.adversarial_examples import make_example_generator
from benchmark.core.linf import default_step_size

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if bn else nn.Identity(), nn.ReLU(), nn.Flatten()
        )
        self.classifier = nn.Linear(8 * 8 * 8, 4)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.classifier(self.features(x))


def data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_examples_stay_in_budget_and_raise_the_loss(kind: str) -> None:
    torch.manual_seed(0)
    model = Net()
    x, y = data()
    eps = 8 / 255
    x_adv = make_example_generator(kind, model, eps, steps=10)(x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert all(p.grad is None for p in model.parameters())  # parameter gradients untouched


def test_pgd_one_full_step_is_fgsm_and_default_step_is_the_papers() -> None:
    torch.manual_seed(0)
    model = Net()
    x, y = data()
    eps = 4 / 255
    a = make_example_generator("fgsm", model, eps)(x, y)
    b = make_example_generator("pgd", model, eps, steps=1, step_size=eps)(x, y)
    assert torch.allclose(a, b, atol=1e-7)
    assert default_step_size(eps) == pytest.approx(0.333 * eps)


def test_pgd_is_stronger_than_fgsm_and_random_start_is_seeded() -> None:
    torch.manual_seed(0)
    model = Net()
    x, y = data(64)
    eps = 16 / 255
    with torch.no_grad():
        adv = {k: make_example_generator(k, model, eps, steps=20)(x, y) for k in ("fgsm", "pgd")}
        loss = {k: F.cross_entropy(model(v), y) for k, v in adv.items()}
    assert loss["pgd"] >= loss["fgsm"]
    gen = make_example_generator("pgd", model, eps, steps=2, random_start=True)
    torch.manual_seed(3)
    r1 = gen(x, y)
    torch.manual_seed(3)
    r2 = gen(x, y)
    assert torch.equal(r1, r2)


def test_model_mode_during_and_after_the_attack() -> None:
    torch.manual_seed(0)
    model = Net(bn=True)
    x, y = data()
    bn = model.features[1]
    # default: attacked in eval mode (running statistics untouched), train mode restored
    model.train()
    stats = bn.running_mean.clone()
    model.modes.clear()
    make_example_generator("pgd", model, 0.03, steps=3)(x, y)
    assert model.modes == [False] * 3 and model.training
    assert torch.equal(bn.running_mean, stats)
    # train-mode attack (the paper code's choice): the model is attacked as it is during training
    model.modes.clear()
    make_example_generator("pgd", model, 0.03, steps=3, model_training=True)(x, y)
    assert model.modes == [True] * 3 and model.training
    assert not torch.equal(bn.running_mean, stats)
    # a model in eval mode stays in eval mode, even with model_training=True
    model.eval()
    make_example_generator("fgsm", model, 0.03, model_training=True)(x, y)
    assert not model.training


def test_zero_eps_and_bad_arguments() -> None:
    model = Net()
    x, y = data()
    out = make_example_generator("pgd", model, 0.0)(x, y)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    with pytest.raises(ValueError, match="eps"):
        make_example_generator("pgd", model, 1.5)
    with pytest.raises(ValueError, match="steps"):
        make_example_generator("pgd", model, 0.1, steps=0)
    with pytest.raises(ValueError, match="unknown"):
        make_example_generator("cw", model, 0.1)  # type: ignore[arg-type]
