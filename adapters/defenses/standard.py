"""The paper's three defenses: standard training, FGSM and PGD adversarial training (examples from torchattacks)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from adapters.defenses.adversarial_examples import (
    BoundGenerator,
    ExampleGenerator,
    make_example_generator,
)
from adapters.defenses.base import Defense, DefenseParams, EpsParams
from benchmark.core.registry import register


class NaiveParams(DefenseParams):
    pass


@register
class NaiveTraining(Defense):
    name = "naive"
    description = "standard training (cross-entropy on clean images)"
    Params = NaiveParams


class AdversarialParams(EpsParams):
    max_epochs: int = Field(128, ge=1)  # code, CIFAR-100 script: FGSM/PGD 128 (SVHN: 64)
    adv_fraction: float = Field(1.0, ge=0, le=1)  # code: every batch fully adversarial
    attack_train_mode: bool = False  # attack the model in eval mode (see adapters.defenses.adversarial_examples)


class AdversarialTraining(Defense):
    """Replaces the first ``adv_fraction`` of every batch by adversarial examples of the model being trained."""

    Params = AdversarialParams

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self._examples = BoundGenerator(self.example_generator)

    def example_generator(self, model: nn.Module) -> ExampleGenerator:
        raise NotImplementedError

    def training_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.params
        n_adv = len(x) if p.adv_fraction >= 1 else int(round(p.adv_fraction * len(x)))
        if n_adv == 0:
            return x
        x_adv = self._examples(model, x[:n_adv], y[:n_adv])
        return x_adv if n_adv == len(x) else torch.cat([x_adv, x[n_adv:]])


class FGSMParams(AdversarialParams):
    pass


@register
class FGSMTraining(AdversarialTraining):
    name = "fgsm"
    description = "FGSM adversarial training (one signed step of size eps)"
    Params = FGSMParams

    def passes_per_image(self) -> float:
        return 2.0

    def example_generator(self, model: nn.Module) -> ExampleGenerator:
        return make_example_generator("fgsm", model, self.params.eps, model_training=self.params.attack_train_mode)


class PGDParams(AdversarialParams):
    steps: int = Field(40, ge=1)  # code: 40 iterations
    step_size: float | None = Field(None, gt=0)  # None: 0.333 * eps (code)
    random_start: bool = False  # code: no random start


@register
class PGDTraining(AdversarialTraining):
    name = "pgd"
    description = "PGD adversarial training (L-inf, Madry et al.)"
    Params = PGDParams

    def passes_per_image(self) -> float:
        return 1.0 + self.params.steps

    def example_generator(self, model: nn.Module) -> ExampleGenerator:
        p = self.params
        return make_example_generator(
            "pgd", model, p.eps, p.steps, p.step_size, p.random_start, model_training=p.attack_train_mode
        )
