"""Several same-architecture backbones as one module, for ``training.train_backbones``: their parameters stacked
(``torch.func.stack_module_state``) and one forward vmapped over them, so each kernel is N models wide (at the
paper's batch of 64 one VGG13 leaves most of a large GPU idle). Inputs and outputs are laid out member after
member, ``(N * B, ...)``, so a defense and torchattacks see an ordinary batch.

Groupable (``why_not_groupable`` names the reason otherwise): the same parameter shapes; no batch norm or dropout
(their modes and running statistics do not vmap); the same batch size, optimizer, lr, momentum, weight decay and
precision; naive, FGSM or PGD training (cross-entropy on the batch the defense makes) without a random
start and with ``adv_fraction`` 0 or 1 (a random draw or a part-adversarial batch would differ from the member's
own); ``compile`` off.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from adapters.defenses import Defense, DefenseParams
from adapters.defenses.standard import (
    AdversarialParams,
    FGSMTraining,
    NaiveTraining,
    PGDParams,
    PGDTraining,
)

GROUPABLE = (NaiveTraining, FGSMTraining, PGDTraining)  # deterministic, cross-entropy on their training batch
SHARED = ("batch_size", "optimizer", "lr", "momentum", "weight_decay", "precision")  # one optimizer, one batch loop


def why_not_alone(backbone: nn.Module, defense: Defense) -> str | None:
    """Why this member could join no group, or None."""
    if type(defense) not in GROUPABLE:
        return f"defense {defense.name} (grouped training runs naive, FGSM and PGD training only)"
    p = defense.params
    if p.compile:
        return "compile: true (a group is not compiled)"
    if isinstance(p, AdversarialParams) and p.adv_fraction not in (0.0, 1.0):
        return f"adv_fraction {p.adv_fraction} (a group needs 0 or 1)"
    if isinstance(p, PGDParams) and p.random_start:
        return "PGD random_start (its draws would not be the member's own)"
    bad = [type(m).__name__ for m in backbone.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))]
    if bad:
        return f"{bad[0]} in the backbone (mode-dependent layers do not vmap)"
    return None


def why_not_groupable(backbones: Sequence[nn.Module], defenses: Sequence[Defense]) -> str | None:
    """Why these members cannot train as one group, or None."""
    for backbone, defense in zip(backbones, defenses, strict=True):
        problem = why_not_alone(backbone, defense)
        if problem:
            return problem
    shapes = [[tuple(q.shape) for q in b.parameters()] for b in backbones]
    if any(s != shapes[0] for s in shapes):
        return "different architectures (parameter shapes)"
    ps: list[DefenseParams] = [d.params for d in defenses]
    for key in SHARED:
        if len({getattr(p, key) for p in ps}) > 1:
            return f"different {key} (one optimizer and one batch loop need the same)"
    return None


def defense_key(defense: Defense) -> tuple[type, str]:
    """Members with equal keys make the same training batch: one call of the defense serves them all."""
    return type(defense), defense.params.model_dump_json()


class StackedBackbones(nn.Module):
    """N backbones' parameters stacked along a first dimension; ``forward`` maps ``(N * B, ...)`` images to
    ``(N * B, K)`` logits, member m's rows through member m's weights."""

    def __init__(self, skeleton: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]):
        super().__init__()
        self.names, self.buffer_names = list(params), list(buffers)
        self.weights = nn.ParameterList([nn.Parameter(v) for v in params.values()])  # what the optimizer updates
        for i, b in enumerate(buffers.values()):
            self.register_buffer(f"buffer{i}", b)
        object.__setattr__(self, "skeleton", skeleton)  # not a submodule: its meta tensors stay out of parameters()
        self.size = len(self.weights[0])
        self._vmapped = torch.vmap(self._one)

    @classmethod
    def of(cls, backbones: Sequence[nn.Module]) -> StackedBackbones:
        params, buffers = stack_module_state(list(backbones))
        return cls(_skeleton(backbones[0]), {k: v.detach() for k, v in params.items()}, buffers)

    def _one(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.skeleton, (params, buffers), (x,))

    def stacked_buffers(self) -> list[torch.Tensor]:
        return [getattr(self, f"buffer{i}") for i in range(len(self.buffer_names))]

    def run(self, rows: slice, x: torch.Tensor) -> torch.Tensor:
        """Members ``rows`` (a slice) on their images ``x`` laid out member after member."""
        params = {k: w[rows] for k, w in zip(self.names, self.weights, strict=True)}
        buffers = {k: b[rows] for k, b in zip(self.buffer_names, self.stacked_buffers(), strict=True)}
        count = len(self.weights[0][rows])
        out = self._vmapped(params, buffers, x.reshape(count, -1, *x.shape[1:]))
        return out.reshape(-1, *out.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(slice(None), x)

    def rows(self, start: int, stop: int) -> nn.Module:
        """The members ``start:stop`` as a module of their own (a defense's attack runs on it)."""
        return self if (start, stop) == (0, self.size) else _Rows(self, slice(start, stop))

    def state_of(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s state dict."""
        state = {k: w[member].detach() for k, w in zip(self.names, self.weights, strict=True)}
        state.update({k: b[member] for k, b in zip(self.buffer_names, self.stacked_buffers(), strict=True)})
        return state

    def keep(self, rows: list[int]) -> StackedBackbones:
        """A stack of only the members ``rows`` (their current weights)."""
        index = torch.tensor(rows, device=self.weights[0].device)
        params = {k: w.detach()[index] for k, w in zip(self.names, self.weights, strict=True)}
        buffers = {k: b[index] for k, b in zip(self.buffer_names, self.stacked_buffers(), strict=True)}
        return StackedBackbones(self.skeleton, params, buffers)


class _Rows(nn.Module):
    """Some members of a stack; the stack is a submodule, so ``parameters()`` tells torchattacks the device."""

    def __init__(self, stack: StackedBackbones, rows: slice) -> None:
        super().__init__()
        self.stack, self.slice = stack, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack.run(self.slice, x)


def carry_optimizer_state(old: torch.optim.Optimizer, new: torch.optim.Optimizer, rows: list[int]) -> None:
    """Give ``new`` (over a stack kept to ``rows``) the state of ``old`` for those members: Adam's moments and SGD's
    momentum are per element, so each member's slice is its own state; step counts are shared."""
    old_params = [q for g in old.param_groups for q in g["params"]]
    new_params = [q for g in new.param_groups for q in g["params"]]
    for before, after in zip(old_params, new_params, strict=True):
        index = torch.tensor(rows, device=before.device)
        new.state[after] = {
            k: v[index].clone() if torch.is_tensor(v) and v.ndim > 0 and v.shape == before.shape else v
            for k, v in old.state.get(before, {}).items()
        }


def _skeleton(backbone: nn.Module) -> nn.Module:
    """The module ``functional_call`` runs: the backbone on the meta device, its layout-only ``ChannelsLast`` steps
    (which vmap cannot query) replaced by identities."""
    from adapters.backbones.base import ChannelsLast

    skeleton = copy.deepcopy(backbone).to("meta")
    for module in list(skeleton.modules()):
        for name, child in module.named_children():
            if isinstance(child, ChannelsLast):
                setattr(module, name, nn.Identity())
    return skeleton
