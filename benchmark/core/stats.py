"""Every statistic of the project, on scipy: accuracy, the Wilson interval of a rate, the t interval of a mean over
seeds (cells), and the report's paired tests, intervals and multiplicity correction (definitions in docs/metrics.md).

scipy supplies the t and normal quantiles and the exact binomial test behind McNemar's test; the paired bootstrap is a
few lines of numpy over per-unit differences (scipy's ``bootstrap`` gives intervals but no p-value), and Holm's
step-down correction is not in scipy (statsmodels, which has it, is not a dependency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_SAMPLES = 4000
BOOTSTRAP_SEED = 0  # the report is a function of the runs: the same runs give the same intervals and p-values


@dataclass(frozen=True)
class Estimate:
    """A paired effect: estimate, 95% percentile interval, two-sided p-value, units, bootstrap standard error."""

    value: float
    low: float
    high: float
    p: float
    n: int
    se: float


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: discordant pairs b (only A succeeded) vs c (only B), binomial(b + c, 1/2)."""
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5).pvalue)


def _resample_means(d: np.ndarray, samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(d)
    out = np.empty(samples)
    chunk = max(1, 2_000_000 // max(n, 1))  # bounded memory for large n
    for s in range(0, samples, chunk):
        e = min(samples, s + chunk)
        out[s:e] = d[rng.integers(0, n, size=(e - s, n))].mean(axis=1)
    return out


def bootstrap_mean(d: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """Paired bootstrap of the mean of per-unit differences ``d`` (a test image, a target or a seed per unit):
    percentile 95% interval, two-sided p-value of 'mean = 0' as twice the smaller tail beyond 0 (add-one). When no
    resample reaches 0 that p is only a bound (2 / (samples + 1)), which Holm's adjustment over a large table would
    multiply past 0.05 however clear the effect: the normal approximation from the bootstrap's standard error,
    smaller, is given instead."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0, math.nan)
    value = float(d.mean())
    if n == 1 or np.all(d == d[0]):  # no spread to resample: a degenerate interval, no evidence either way
        return Estimate(value, value, value, 1.0 if value == 0 else math.nan, n, 0.0)
    boot = _resample_means(d, samples, seed)
    low, high = (float(q) for q in np.quantile(boot, [0.025, 0.975]))
    tail = min(int((boot <= 0).sum()), int((boot >= 0).sum()))
    se = float(boot.std(ddof=1))
    p = min(1.0, 2 * (tail + 1) / (samples + 1))
    if tail == 0 and se > 0:
        p = min(p, math.erfc(abs(value) / se / math.sqrt(2)))
    return Estimate(value, low, high, p, n, se)


def equivalence_p(d: np.ndarray, margin: float, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
                  ) -> tuple[float, float]:
    """Bootstrap p-values for 'the mean difference lies within +-margin' (two one-sided tests: the larger of the
    two tails beyond the margins) and for 'it lies beyond the margin' (the tail on the near side of the margin the
    estimate is beyond; 1 when the estimate is inside)."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return math.nan, math.nan
    boot = _resample_means(d, samples, seed)
    p_within = max(int((boot <= -margin).sum()) + 1, int((boot >= margin).sum()) + 1) / (samples + 1)
    value = float(d.mean())
    if value > margin:
        p_beyond = (int((boot <= margin).sum()) + 1) / (samples + 1)
    elif value < -margin:
        p_beyond = (int((boot >= -margin).sum()) + 1) / (samples + 1)
    else:
        p_beyond = 1.0
    return min(1.0, p_within), min(1.0, p_beyond)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error); nan stays nan and does not count."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def n_to_decide(value: float, se: float, n: int, alpha: float = ALPHA, power: float = POWER,
                margin: float = 0.0) -> float:
    """Units needed for a test at level ``alpha`` to have ``power`` if the observed effect is the true one and the
    standard error shrinks as 1/sqrt(n): n * ((z_{1-alpha/2} + z_power) * se / distance)^2, the distance being
    from the estimate to 0 (``margin`` 0) or to the nearer margin of an equivalence claim. inf when the distance
    is 0 (no effect observed); nan without a standard error."""
    distance = abs(abs(value) - margin) if margin else abs(value)
    if distance == 0:
        return math.inf
    if not (se > 0) or n <= 0:
        return math.nan
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(n * (z * se / distance) ** 2)


def crossing(xs: list[float], ys: list[float], level: float = 0.5) -> tuple[float, str]:
    """Where a curve first reaches ``level``, interpolated linearly in log x between swept points; with a flag:
    '' (inside the sweep), '<=' (already at the first point), '>' (never within the sweep: returns the last x)."""
    for i, y in enumerate(ys):
        if y >= level:
            if i == 0:
                return xs[0], "<="
            x0, x1, y0 = xs[i - 1], xs[i], ys[i - 1]
            t = (level - y0) / (y - y0)
            if x0 > 0 and x1 > 0:
                return float(math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))), ""
            return float(x0 + t * (x1 - x0)), ""
    return xs[-1], ">"


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((pred.cpu() == labels.cpu()).float().mean())


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate; well-behaved at 0 and 1, unlike the normal interval."""
    if trials <= 0:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # at 0 (or all) successes the bound is 0 (1) exactly; centre - half would leave a float residue there
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    return low, (1.0 if successes == trials else min(1.0, centre + half))


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std, and the t interval of the mean over seeds (nan-free input)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0, mean, mean
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half
