"""The headline a cell shows first in the MLflow UI, and metric rounding."""

from __future__ import annotations

import math

import numpy as np

from benchmark.store.headline import headline, rounded


def test_rounding_drops_float32_noise_only():
    assert rounded(float(np.float32(0.925))) == 0.925  # 0.92500001192... as float32
    assert rounded(123.456789) == 123.457
    assert rounded(1e-9 / 3) == float("3.33333e-10")
    assert math.isnan(rounded(float("nan")))


def test_headline_of_targeted_and_untargeted_cells():
    lf = {"clean_accuracy": 0.93, "poisoned_accuracy": 0.927, "robust_accuracy": 0.19}
    assert headline(lf) == "clean 93.0% → poisoned 92.7% (drop 0.3 pts) · robust 19.0%"
    pf = {**lf, "attack_success_rate": 0.15, "attack_successes": 3.0, "num_trials": 20.0}
    assert "success 15.0% (3/20 targets)" in headline(pf)
    assert headline({"cell_seconds": 3.0}) == ""  # a failed cell has none of them
