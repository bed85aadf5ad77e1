"""k-NN label consistency in feature space (ours; the idea of Peri et al. 2020, "Deep k-NN Defense against
Clean-label Data Poisoning Attacks"): a row whose label is not the most common label among its k nearest
neighbours is removed. Clean-label poisons sit among the target class in feature space while keeping the base
class's label, which is what this catches."""

from __future__ import annotations

import torch
from pydantic import Field

from adapters.filters.base import PoisonFilter
from benchmark.core.errors import ParamError
from benchmark.core.registry import Params, register

CHUNK_ROWS = 1024  # rows of the distance matrix computed at once (memory: CHUNK_ROWS x N floats)


class KnnParams(Params):
    k: int = Field(50, ge=1)  # Peri et al. 2020 found k near the number of poisons per class works; 50 covers theirs


@register
class KnnLabelFilter(PoisonFilter):
    name = "knn_label"
    description = "k-NN label consistency in feature space: drop rows whose label is not their neighbours' plurality"
    Params = KnnParams

    def rows_needed(self) -> tuple[str, int]:
        return "k", self.params.k + 1

    def keep(self, features: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        f = features.float()
        classes, y = torch.unique(labels, return_inverse=True)
        k = self.params.k
        if k > len(f) - 1:  # refused, never lowered: the run's k must be the k used
            raise ParamError(f"filter '{self.name}': k {k} needs {k + 1} training rows (each row and its k "
                             f"neighbours); the training set has {len(f)}; lower k")
        keep = torch.empty(len(f), dtype=torch.bool)
        for start in range(0, len(f), CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            dist = torch.cdist(f[rows], f)
            dist[torch.arange(dist.shape[0]), torch.arange(start, start + dist.shape[0])] = float("inf")  # not itself
            neighbours = dist.topk(k, dim=1, largest=False).indices
            votes = torch.zeros(dist.shape[0], len(classes)).scatter_add_(
                1, y[neighbours], torch.ones(neighbours.shape)
            )
            # a tie keeps the row: only a row outvoted by another label is removed
            keep[rows] = votes.gather(1, y[rows, None]).squeeze(1) >= votes.max(dim=1).values
        return keep
