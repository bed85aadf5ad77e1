"""Accuracies, rates and confidence intervals."""

from __future__ import annotations

import math

import torch


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((pred.cpu() == labels.cpu()).float().mean())


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate; well-behaved at 0 and 1, unlike the normal interval."""
    if trials <= 0:
        return float("nan"), float("nan")
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(values: list[float], z: float = 1.959964) -> tuple[float, float, float, float]:
    """Mean, sample std, and a normal-approximation 95% interval half-width over seeds (nan-free input)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0, mean, mean
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    # t quantiles for small n (two-sided 95%); z beyond 30
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(n, z)
    half = t * std / math.sqrt(n)
    return mean, std, mean - half, mean + half
