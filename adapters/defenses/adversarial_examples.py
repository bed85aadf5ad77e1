"""Adversarial examples for adversarial training and robust-accuracy checks: torchattacks' FGSM and PGD (with the
choices of the paper's code fixed and documented), FFGSM (fast adversarial training's FGSM with a random start) and
TPGD (TRADES' inner maximisation of the KL divergence from the clean prediction).

Why torchattacks rather than our own PGD: FGSM and PGD are the *defences* here, not the object of study, so we use
the reference implementation the community audits; our own would be one more place where an off-by-one in the
projection or the clamp could silently weaken a defence.

Model mode during the attack: torchattacks attacks in ``eval()`` mode unless told otherwise. The paper's code
attacks the network as it is during training (``train()``); for its VGG13 without batch norm or dropout the two
are the same function. For backbones with batch norm (ResNet-18) eval mode is the default here: the attack sees the
running statistics, and its ``steps`` extra forward passes do not update them. ``model_training=True`` (the
defence parameter ``attack_train_mode``) keeps train mode, literally what the paper's code does.

Labels passed to the generators are row indices ``0..K-1`` of the model's outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torchattacks
from torch import nn

from benchmark.core.linf import default_step_size

ExampleGenerator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Kind = Literal["fgsm", "pgd", "fast_fgsm", "trades_kl"]
FAST_STEP_FRACTION = 1.25  # Wong et al. 2020: FGSM step 1.25 * eps after a uniform random start


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def make_attack(
    kind: Kind,
    model: nn.Module,
    eps: float,
    steps: int = 40,
    step_size: float | None = None,
    random_start: bool = False,
    model_training: bool = False,
) -> torchattacks.attack.Attack:
    """The configured torchattacks object (L-inf, images in [0, 1]); ``trades_kl`` needs ``step_size``."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1] (images are in [0, 1]); got {eps}")
    if kind == "fgsm":
        atk = torchattacks.FGSM(model, eps=eps)
    elif kind == "pgd":
        if steps < 1:
            raise ValueError(f"PGD steps must be >= 1; got {steps}")
        alpha = default_step_size(eps) if step_size is None else step_size
        atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    elif kind == "fast_fgsm":
        alpha = FAST_STEP_FRACTION * eps if step_size is None else step_size
        atk = torchattacks.FFGSM(model, eps=eps, alpha=alpha)
    elif kind == "trades_kl":
        if steps < 1 or step_size is None:
            raise ValueError(f"TRADES' KL-PGD needs steps >= 1 and a step_size; got {steps}, {step_size}")
        atk = torchattacks.TPGD(model, eps=eps, alpha=step_size, steps=steps)
    else:
        raise ValueError(f"unknown adversarial example kind {kind!r}; expected one of {Kind.__args__}")
    # torchattacks reads the device from the model's parameters at construction; set it explicitly for
    # parameter-less wrappers.
    atk.set_device(_model_device(model))
    if model_training:
        atk.set_model_training_mode(model_training=True, batchnorm_training=True, dropout_training=True)
    return atk


def make_example_generator(
    kind: Kind,
    model: nn.Module,
    eps: float,
    steps: int = 40,
    step_size: float | None = None,
    random_start: bool = False,
    model_training: bool = False,
) -> ExampleGenerator:
    """A function ``(x, y) -> x_adv`` that perturbs images within the L-inf ball of radius ``eps``.

    ``kind="fgsm"``: one signed-gradient step of size ``eps``, clamped to [0, 1] (paper code).
    ``kind="pgd"``: ``steps`` signed-gradient steps of size ``step_size`` (None: 0.333 * eps, paper code), each
    projected on the eps-ball and clamped to [0, 1]; no random start by default (paper code).
    ``kind="fast_fgsm"``: a uniform start in the eps-ball, one signed step of ``step_size`` (None: 1.25 * eps),
    projected and clamped (Wong et al. 2020).
    ``kind="trades_kl"``: ``steps`` signed steps of ``step_size`` maximising KL(clean prediction || prediction),
    from ``x`` plus N(0, 0.001^2) noise (Zhang et al. 2019); the labels are not used.

    ``x`` is float in [0, 1] NCHW, ``y`` row indices; the result is detached, on the model's device, with the
    memory format of ``x``. Gradients are enabled inside, so it also works under ``torch.no_grad()``.
    ``eps == 0`` returns a detached copy of ``x`` without running the model. The model's
    parameter gradients are not touched (torchattacks differentiates with respect to the input only).
    """
    if eps == 0:
        # Validate the other arguments anyway, so a bad configuration fails the same way whatever eps is.
        make_attack(kind, model, eps, steps, step_size, random_start, model_training)
        device = _model_device(model)
        return lambda x, y: x.detach().to(device).clone()
    atk = make_attack(kind, model, eps, steps, step_size, random_start, model_training)

    def generate(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # torchattacks restores train() after the attack but leaves a model that was in eval() in train() when
        # model_training=True; restore the caller's mode ourselves.
        was_training = model.training
        try:
            with torch.enable_grad():  # works inside a caller's no_grad() block too
                return atk(x, y)
        finally:
            model.train(was_training)

    return generate


class BoundGenerator:
    """A defense's example generator, built once per model it is called with (torchattacks binds an attack to one
    model); called as ``(model, x, y) -> x_adv`` in the dtype of ``x``."""

    def __init__(self, build: Callable[[nn.Module], ExampleGenerator]) -> None:
        self._build = build
        self._model: nn.Module | None = None
        self._generate: ExampleGenerator | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._model is not model or self._generate is None:
            self._model, self._generate = model, self._build(model)
        return self._generate(x, y).to(x.dtype)
