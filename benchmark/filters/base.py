"""The poison-filter interface: a small class like an attack or a defense (pydantic ``Params``, ``_check_params``),
whose ``keep`` method looks at the training set in feature space and says which rows to keep."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import ValidationError

from benchmark.errors import ParamError
from benchmark.registry import REGISTRY, NoParams, Params, format_validation_error


class PoisonFilter:
    """Base class of every poison filter: subclasses set ``name``, ``description``, ``Params`` and implement
    ``keep``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = NoParams

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except ValidationError as err:
            raise ParamError(f"filter '{self.name}': {format_validation_error(err)}") from None
        self._check_params()

    def _check_params(self) -> None:
        """Checks spanning several parameters; raise ParamError with a clear message."""

    def keep(self, features: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """A boolean mask over the rows of ``features`` (N, D; the frozen features of the training set the head
        would be fitted on, poisons included) with original ``labels`` (N,): True for the rows to keep."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


REGISTRY.declare_base("filter", PoisonFilter)


def register(cls: type[PoisonFilter]) -> type[PoisonFilter]:
    """Class decorator: add a filter to the registry under ``cls.name``."""
    REGISTRY.add_class("filter", cls)
    return cls


def make_filter(name: str, params: Params | dict[str, Any] | None = None) -> PoisonFilter:
    """The filter registered as ``name`` (or a ``module:Class`` path), built with ``params`` (ParamError)."""
    comp = REGISTRY.get("filter", name)
    return comp.factory(**comp.resolve(params).model_dump())
