"""Every statistic: the t interval over seeds, Wilson, exact McNemar, paired bootstrap, equivalence, Holm, n to decide,
curve crossings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.core.stats import (
    bootstrap_mean,
    crossing,
    equivalence_p,
    holm,
    mcnemar_exact,
    mean_ci,
    n_to_decide,
    wilson_interval,
)


def test_mcnemar_exact_is_the_two_sided_binomial_on_discordant_pairs():
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(8, 2) == pytest.approx(mcnemar_exact(2, 8))
    assert mcnemar_exact(8, 2) == pytest.approx(0.109375)  # 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * 56/1024


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    shifted = rng.normal(0.3, 1.0, 400)
    est = bootstrap_mean(shifted)
    assert est.low < 0.3 < est.high and est.low > 0
    assert est.p < 0.001
    assert est.se == pytest.approx(1 / math.sqrt(400), rel=0.2)
    null = bootstrap_mean(rng.normal(0.0, 1.0, 400))
    assert null.low < 0 < null.high and null.p > 0.05
    assert bootstrap_mean(np.zeros(10)).p == 1.0  # no spread, no difference
    assert math.isnan(bootstrap_mean(np.zeros(0)).value)


def test_bootstrap_is_repeatable():
    d = np.random.default_rng(2).normal(0.1, 1, 50)
    assert bootstrap_mean(d) == bootstrap_mean(d)


def test_equivalence_within_and_beyond_a_margin():
    rng = np.random.default_rng(3)
    small = rng.normal(0.0, 0.1, 2000)  # mean ~0, se ~0.002: inside +-0.03
    within, beyond = equivalence_p(small, 0.03)
    assert within < 0.01 and beyond == 1.0
    large = rng.normal(0.2, 0.1, 2000)  # clearly beyond +0.03
    within, beyond = equivalence_p(large, 0.03)
    assert within > 0.5 and beyond < 0.01


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    adj = holm([0.5, math.nan, 0.01])
    assert adj[0] == pytest.approx(0.5) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.02)


def test_n_to_decide_scales_with_the_inverse_square_of_the_effect():
    n1 = n_to_decide(0.1, 0.05, 100)
    n2 = n_to_decide(0.05, 0.05, 100)
    assert n2 == pytest.approx(4 * n1, rel=0.02)
    # z = 1.96 + 0.84 = 2.80: n = 100 * (2.80 * 0.05 / 0.1)^2 = 196
    assert n1 == pytest.approx(197, abs=1)
    assert math.isinf(n_to_decide(0.0, 0.05, 100))
    assert n_to_decide(0.01, 0.01, 100, margin=0.03) == pytest.approx(n_to_decide(0.02, 0.01, 100), abs=1)


def test_crossing_interpolates_in_log_budget():
    assert crossing([1, 5, 25], [0.1, 0.2, 0.6]) == pytest.approx((5 * 5 ** (0.75), ""))
    assert crossing([1, 5, 25], [0.6, 0.7, 0.8]) == (1, "<=")
    assert crossing([1, 5, 25], [0.0, 0.1, 0.2]) == (25, ">")


def test_bootstrap_p_goes_below_its_resampling_floor_for_a_clear_effect():
    """No resample reaches 0: the resampling p is only bounded by 2/(B+1); the normal approximation replaces it, so
    a clear effect survives Holm's adjustment over a large table."""
    d = np.random.default_rng(3).normal(0.5, 1.0, 400)  # z = 0.5 / 0.05 = 10
    est = bootstrap_mean(d, samples=999)
    assert est.p < 1e-10 < 2 / 1000
    assert holm([est.p] + [0.5] * 199)[0] < 1e-6
    weak = bootstrap_mean(np.random.default_rng(4).normal(0.1, 1.0, 400), samples=999)  # z = 2: resamples cross 0
    assert 2 / 1000 < weak.p < 0.2


def test_mean_ci_is_the_t_interval_for_any_number_of_seeds():
    # 12 seeds: the t quantile with 11 degrees of freedom (2.201), not the normal one (1.960)
    values = [0.1 * i for i in range(12)]
    mean, std, low, high = mean_ci(values)
    assert mean == pytest.approx(0.55) and std == pytest.approx(0.3605551)
    assert (high - mean) == pytest.approx(2.200985 * std / math.sqrt(12), rel=1e-6)
    assert mean_ci([0.3]) == (0.3, 0.0, 0.3, 0.3)


def test_wilson_interval_matches_its_closed_form():
    # 8 successes of 10 at 95%: (0.4902, 0.9433), Wilson (1927)
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    # no float residue at the ends, for any number of trials
    assert all(wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0 for n in range(1, 200))
