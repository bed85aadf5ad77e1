"""The poison-filter interface: a small class like an attack or a defense (pydantic ``Params``, ``_check_params``),
whose ``keep`` method looks at the training set in feature space and says which rows to keep."""

from __future__ import annotations

from typing import ClassVar

import torch

from benchmark.core.registry import Configurable, NoParams, Params, register


class PoisonFilter(Configurable):
    """Base class of every poison filter: subclasses set ``name``, ``description``, ``Params`` and implement
    ``keep``."""

    kind = "filter"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = NoParams

    def rows_needed(self) -> tuple[str, int]:
        """(the parameter that sets it, the training rows the filter needs): checked against the data before the
        grid runs (``benchmark/grid/feasibility.py``); ``keep`` refuses fewer rather than lower the parameter."""
        return "", 0

    def keep(self, features: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """A boolean mask over the rows of ``features`` (N, D; the frozen features of the training set the head
        would be fitted on, poisons included) with original ``labels`` (N,): True for the rows to keep."""
        raise NotImplementedError



@register
class NoFilter(PoisonFilter):
    """Keeps every row. A cell with this filter skips the filter stage altogether: its poisoned heads are refitted
    from the clean head (``adapters/heads/refit.py``): the same fitting problems, solved faster."""

    name = "none"
    description = "no filter: the head sees every row of the poisoned training set (the default)"

    def keep(self, features: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        return torch.ones(len(labels), dtype=torch.bool, device=features.device)
