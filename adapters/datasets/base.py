"""Datasets as tensors: the spec a suite writes, the loaded result, and ``load_data`` that joins them.

A dataset component (registry kind ``"dataset"``) is a ``DataSource``: its ``Params`` say which data, and
``load(seed, data_root) -> RawData`` returns raw arrays as they come (uint8 or float in [0, 1]; NHW, NHWC or NCHW).
``load_data`` builds the component from a suite's ``DataSpec`` (its ``params``), loads it and applies the shared
transforms of ``adapters.datasets.transforms`` in one place: class subset, limits, float [0, 1], NCHW, resize,
channels.

Choices (documented here because cache keys depend on them: bump ``data`` in ``benchmark/core/versions.py`` when they
change):

- ``train_limit`` / ``test_limit`` keep the *first* N examples (in the source order) after class filtering. This
  is deterministic and independent of the seed, so a limited dataset is the same for every seed of a suite. If a
  limit removes every example of some class (data sorted by label), a warning says so; if it leaves a single class
  out of several, that is a ``DataError``.
- Labels keep their original ids (CIFAR-10 classes [3, 5] stay 3 and 5); ``Dataset.classes`` lists them sorted and
  ``Dataset.encode_labels`` maps them to 0..K-1 for a classifier that needs contiguous ids.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, field_validator

from benchmark.core.errors import DataError
from benchmark.core.registry import REGISTRY, Configurable, make

DATA_ENV = "BENCHMARK_DATA"
DEFAULT_DATA_ROOT = Path("~/.cache/robust-poison-bench/data")


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64, original label ids

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    classes: list[int]  # sorted label ids present (the class subset when one was given)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def encode_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Original label ids -> contiguous indices 0..num_classes-1 (position in ``classes``)."""
        lookup = torch.full((max(self.classes) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(self.classes, dtype=torch.long)] = torch.arange(len(self.classes))
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > max(self.classes)):
            raise DataError(f"dataset '{self.name}': labels outside classes {self.classes}")
        out = lookup[y.long()]
        if out.numel() and int(out.min()) < 0:
            raise DataError(f"dataset '{self.name}': labels outside classes {self.classes}")
        return out

    def decode_labels(self, idx: torch.Tensor) -> torch.Tensor:
        """Contiguous indices -> original label ids."""
        return torch.tensor(self.classes, dtype=torch.long)[idx.long()]


@dataclass
class RawData:
    """What a dataset component loads: arrays as they come, before any shared transform."""

    x_train: np.ndarray | torch.Tensor
    y_train: np.ndarray | torch.Tensor
    x_test: np.ndarray | torch.Tensor
    y_test: np.ndarray | torch.Tensor


class DataSource(Configurable):
    """Base class of every dataset component: subclasses set ``name``, ``description``, ``Params`` and implement
    ``load``."""

    kind = "dataset"

    def load(self, seed: int = 0, data_root: Path | None = None) -> RawData:
        """Both splits as they come. ``seed``: the run's seed (only generated data uses it); ``data_root``: the
        folder of downloaded datasets (``data_root()``)."""
        raise NotImplementedError


class DataSpec(BaseModel):
    """One dataset in one role (external or target), as written in a suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # registry name
    params: dict[str, Any] = {}  # validated by the component's Params model
    classes: list[int] | None = None  # class subset (original ids are kept)
    train_limit: int | None = None  # keep the first N training examples after class filtering
    test_limit: int | None = None
    # None keeps the channels; "grey": mean of channels repeated to 3 (the paper's code turns SVHN grey);
    # "rgb": 1 channel repeated to 3 (the paper's code repeats MNIST's channel).
    channels: Literal["grey", "rgb"] | None = None
    # Bilinear resize (antialiased) to a square side; None keeps. The paper's code resizes MNIST 28 -> 32.
    image_size: int | None = 32

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("classes must list at least one class id (or be left out for all classes)")
        if any(c < 0 for c in v):
            raise ValueError("classes must be non-negative label ids")
        if len(set(v)) != len(v):
            raise ValueError("classes must not repeat an id")
        return sorted(v)

    @field_validator("train_limit", "test_limit", "image_size")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("must be a positive integer")
        return v

    def resolved(self) -> DataSpec:
        """This spec with the component's parameters validated and their defaults filled in (for cache keys)."""
        comp = REGISTRY.get("dataset", self.name)
        params = comp.validate(self.params).model_dump(mode="json")
        return self.model_copy(update={"params": params})


def data_root(explicit: str | Path | None = None) -> Path:
    """Where torchvision datasets live: the explicit argument, else $BENCHMARK_DATA, else ~/.cache/..."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_ROOT.expanduser()


def load_data(spec: DataSpec, seed: int = 0, data_root: str | Path | None = None) -> Dataset:
    """Load ``spec`` as tensors: (N, C, H, W) float32 in [0, 1] and int64 original labels.

    ``seed`` only matters for generated data (``synthetic``); ``data_root`` overrides $BENCHMARK_DATA for the
    torchvision datasets (a dataset's own ``root`` parameter overrides both).
    """
    from adapters.datasets import transforms as T

    raw = make("dataset", spec.name, spec.params).load(seed=seed, data_root=_data_root(data_root))
    what = f"dataset '{spec.name}'"

    splits = {}
    for part in ("train", "test"):
        x = T.as_tensor(getattr(raw, f"x_{part}"), f"{what} x_{part}")
        y = T.as_labels(getattr(raw, f"y_{part}"), f"{what} y_{part}")
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{what}: x_{part} has {x.shape[0]} images but y_{part} has {y.shape[0]} labels")
        splits[part] = (x, y)

    present = sorted(set(torch.unique(splits["train"][1]).tolist()) | set(torch.unique(splits["test"][1]).tolist()))
    if spec.classes is not None:
        train_ids = set(torch.unique(splits["train"][1]).tolist())
        missing = [c for c in spec.classes if c not in train_ids]
        if missing:
            raise DataError(f"{what}: classes {missing} have no training examples (labels present: {present})")
        classes = list(spec.classes)
    else:
        classes = present

    out = {}
    for part, limit in (("train", spec.train_limit), ("test", spec.test_limit)):
        x, y = splits[part]
        if spec.classes is not None:
            x, y = T.select_classes(x, y, classes)
        if limit is not None:
            before = sorted(torch.unique(y).tolist())
            x, y = x[:limit], y[:limit]
            after = sorted(torch.unique(y).tolist())
            if len(before) > 1 and len(after) < 2:
                raise DataError(
                    f"{what}: {part}_limit {limit} keeps only class {after} of {before}; the data looks sorted by "
                    "label: raise the limit or shuffle the file"
                )
            if len(after) < len(before):
                lost = sorted(set(before) - set(after))
                warnings.warn(f"{what}: {part}_limit {limit} leaves classes {lost} without examples", stacklevel=2)
        x = T.to_float_nchw(x, f"{what} x_{part}")
        if spec.image_size is not None:
            x = T.resize(x, spec.image_size)
        x = T.convert_channels(x, spec.channels)
        out[part] = Split(x=x.contiguous(), y=y.contiguous())
    return Dataset(name=spec.name, train=out["train"], test=out["test"], classes=classes)


def _data_root(explicit: str | Path | None) -> Path:
    return data_root(explicit)
