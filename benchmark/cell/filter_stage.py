"""The filter stage: a poison filter (``adapters.filters``) cleans each trial's training set in feature space and
the head is fitted on the rows it keeps; what it removed is measured against the rows the attack replaced."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from adapters.filters.base import PoisonFilter
from adapters.heads.linear import LinearHead
from adapters.heads.refit import RowEdit
from benchmark.core.registry import make
from benchmark.suite import Resolved

HeadFitter = Callable[[torch.Tensor, torch.Tensor], LinearHead]


def filtered_heads_stage(
    spec: Resolved,
    f_train: torch.Tensor,
    y_train: torch.Tensor,
    edits: list[RowEdit],
    fit: HeadFitter,
    seed: int,
) -> tuple[list[LinearHead], dict[str, float]]:
    """One head per trial, fitted on the rows of that trial's (poisoned) training set the filter keeps.

    Metrics: ``filter_poisons_caught`` (removed poisoned rows / poisoned rows, all trials pooled; NaN without
    poisons), ``filter_clean_rows_lost`` (removed clean rows / clean rows, mean over trials),
    ``filter_rows_removed`` (mean per trial)."""
    filt: PoisonFilter = make("filter", spec.name, spec.params)
    t0 = time.perf_counter()
    heads, caught, poisons, lost, removed = [], 0, 0, [], []
    for edit in edits:
        f, y = edit.apply(f_train, y_train)
        keep = filt.keep(f, y, seed).cpu()
        kept_classes = torch.unique(y[keep])
        if len(kept_classes) < 2:
            raise ValueError(
                f"filter '{spec.label}' kept {int(keep.sum())} of {len(y)} rows and only classes "
                f"{kept_classes.tolist()}: no head can be fitted"
            )
        poisoned = torch.zeros(len(y), dtype=torch.bool)
        poisoned[edit.indices] = True
        caught += int((~keep & poisoned).sum())
        poisons += int(poisoned.sum())
        lost.append(float((~keep & ~poisoned).sum()) / max(int((~poisoned).sum()), 1))
        removed.append(float((~keep).sum()))
        heads.append(fit(f[keep], y[keep]))
    metrics = {
        "filter_seconds": time.perf_counter() - t0,
        "filter_poisons_caught": caught / poisons if poisons else float("nan"),
        "filter_clean_rows_lost": sum(lost) / len(lost),
        "filter_rows_removed": sum(removed) / len(removed),
    }
    return heads, metrics
