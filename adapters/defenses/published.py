"""Defenses the robustness literature compares with PGD adversarial training: TRADES, fast adversarial training
(FGSM with a random start) and free adversarial training (replayed minibatches). Defaults are the published ones
(docs/metrics.md, "Defenses"); the training loop's own settings stay the benchmark's, as for FGSM and PGD."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from adapters.defenses.adversarial_examples import (
    BoundGenerator,
    ExampleGenerator,
    make_example_generator,
)
from adapters.defenses.base import Defense, EpsParams
from adapters.defenses.standard import AdversarialParams, AdversarialTraining
from benchmark.core.registry import register


class TradesParams(EpsParams):
    eps: float = 0.031  # TRADES, CIFAR-10 (MNIST: 0.3)
    step_size: float = Field(0.007, gt=0)  # TRADES, CIFAR-10 (MNIST: 0.01)
    steps: int = Field(10, ge=1)  # TRADES, CIFAR-10 (MNIST: 40)
    beta: float = Field(6.0, ge=0)  # TRADES, CIFAR-10 (MNIST: 1.0); 1/lambda, the weight of the robust term
    max_epochs: int = Field(128, ge=1)  # as FGSM/PGD here (code, CIFAR-100 script)


@register
class TRADES(Defense):
    """Cross-entropy on the clean batch plus ``beta`` times KL(f(x) || f(x')), x' maximising that KL in the eps-ball
    (torchattacks' TPGD, the model in eval mode as in TRADES' code). The training accuracy is the clean logits'."""

    name = "trades"
    description = "TRADES (Zhang et al. 2019): clean cross-entropy + beta * KL to the prediction on a KL-PGD example"
    Params = TradesParams

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self._examples = BoundGenerator(self._example_generator)

    def _example_generator(self, model: nn.Module) -> ExampleGenerator:
        p = self.params
        return make_example_generator("trades_kl", model, p.eps, p.steps, p.step_size)

    def passes_per_image(self) -> float:
        return 2.0 + self.params.steps  # the KL-PGD steps, then the clean and the adversarial pass

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self._examples(model, x, y)
        logits = model(x)
        robust = F.kl_div(
            F.log_softmax(model(x_adv).float(), dim=1), F.softmax(logits.float(), dim=1), reduction="batchmean"
        )
        return F.cross_entropy(logits.float(), y) + self.params.beta * robust, logits


class FastParams(AdversarialParams):
    eps: float = 8 / 255  # Wong et al. 2020, CIFAR-10 (MNIST: 0.3)
    step_size: float | None = Field(None, gt=0)  # None: 1.25 * eps (Wong et al. 2020, CIFAR-10 and MNIST)


@register
class FastAdversarialTraining(AdversarialTraining):
    name = "fast_at"
    description = "fast adversarial training (Wong et al. 2020): FGSM from a uniform random start, step 1.25 * eps"
    Params = FastParams

    def passes_per_image(self) -> float:
        return 2.0

    def example_generator(self, model: nn.Module) -> ExampleGenerator:
        p = self.params
        return make_example_generator(
            "fast_fgsm", model, p.eps, step_size=p.step_size, model_training=p.attack_train_mode
        )


class FreeParams(EpsParams):
    eps: float = 8 / 255  # Shafahi et al. 2019, CIFAR-10
    replays: int = Field(8, ge=1)  # m, Shafahi et al. 2019, CIFAR-10 (their best trade-off)
    step_size: float | None = Field(None, gt=0)  # None: eps (Shafahi et al. 2019: the ascent step is eps)
    max_epochs: int = Field(128, ge=1)  # passes over the data, replays counted: ceil(128 / m) epochs are run


@register
class FreeAdversarialTraining(Defense):
    """Each minibatch is replayed ``replays`` times; every replay's backward pass gives the parameter gradient and
    the gradient for the perturbation, which takes a signed step and is carried to the next replay and the next
    minibatch (Shafahi et al. 2019). The perturbation starts at zero; its step uses the previous replay's gradient,
    read at the start of the next call (the loop's backward pass fills it in)."""

    name = "free_at"
    description = "free adversarial training (Shafahi et al. 2019): m replays per minibatch, perturbation carried over"
    Params = FreeParams

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self._delta: torch.Tensor | None = None  # the carried perturbation, one row per batch position
        self._last: torch.Tensor | None = None  # the rows of it used by the previous call, with their gradient
        self._model: nn.Module | None = None

    def replays(self) -> int:
        return self.params.replays

    def _ascend(self) -> None:
        """Apply the previous call's signed step to the carried perturbation."""
        last, self._last = self._last, None
        if last is None or last.grad is None or self._delta is None:
            return
        p = self.params
        step = p.eps if p.step_size is None else p.step_size
        with torch.no_grad():
            self._delta[: len(last)] = (last + step * last.grad.sign()).clamp(-p.eps, p.eps)

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._model is not model:  # a new training run starts from a zero perturbation
            self._model, self._delta, self._last = model, None, None
        self._ascend()
        if self._delta is None or self._delta.shape[1:] != x.shape[1:] or len(self._delta) < len(x):
            self._delta = torch.zeros_like(x, dtype=torch.float32)
        delta = self._delta[: len(x)].clone().requires_grad_(True)
        self._last = delta
        out = model((x + delta).clamp(0.0, 1.0))
        return F.cross_entropy(out.float(), y), out
