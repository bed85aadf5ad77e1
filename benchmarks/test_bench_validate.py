"""Loading a suite stays linear in its size: 100,000 seeds are parsed, checked and refused (the grid limit) in
seconds. Before: a quadratic duplicate-seed check took over 2 minutes, and the pure-Python YAML parser alone 15 s
(2 busy shared CPU cores); now libyaml parses and composes, and every check counts once. Measured here: 12.5-15.9 s
per load with a load average of 9 on the 2 shared cores (7.9 s at load 7 after libyaml also composes)."""

from __future__ import annotations

import pytest
import yaml

from benchmark.core.errors import SuiteError
from benchmark.suite import load_suite


def test_validate_100000_seeds(benchmark, tmp_path):
    smoke = yaml.safe_load(open("suites/smoke.yaml").read())
    smoke["seeds"] = "SEEDS"
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(smoke).replace("SEEDS", "[" + ", ".join(map(str, range(100_000))) + "]"))

    def load() -> str:
        with pytest.raises(SuiteError) as err:
            load_suite(path)
        return str(err.value)

    message = benchmark.pedantic(load, rounds=3, iterations=1)
    assert "cells before exclusions" in message
    benchmark.extra_info["seeds"] = 100_000
