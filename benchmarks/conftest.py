"""Shared inputs for the benchmarks: each benchmark times ours and the library it replaces on the same inputs.

Run with ``uv run pytest benchmarks`` (not part of the default test run). Each benchmark records the library's
time, ours, and their ratio in ``extra_info`` and prints a line ``RATIO <name>: <x>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from adapters.attacks.base import AttackContext
from adapters.backbones import build_backbone, feature_extractor
from adapters.datasets import DataSpec, load_data
from adapters.heads.base import fit_head


def pytest_xdist_auto_num_workers(config):  # noqa: ARG001
    """No xdist workers here (pyproject's ``-n auto`` is for the tests): timings are taken with the cores to
    themselves, and pytest-benchmark turns itself off under xdist."""
    return 0


@dataclass
class Problem:
    backbone: torch.nn.Module
    ctx: AttackContext


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def report(benchmark, name: str, library_seconds: float, ours_seconds: float, **extra: float) -> float:
    ratio = library_seconds / ours_seconds if ours_seconds > 0 else float("inf")
    benchmark.extra_info.update(
        {"library_seconds": library_seconds, "ours_seconds": ours_seconds, "speedup": ratio, **extra}
    )
    print(f"\nRATIO {name}: library {library_seconds:.2f} s / ours {ours_seconds:.2f} s = {ratio:.1f}x {extra}")
    return ratio


@pytest.fixture(scope="session")
def problem() -> Problem:
    """A small CNN (untrained weights are fine for timing) over binary synthetic data, with its clean head."""
    torch.manual_seed(0)
    spec = DataSpec(name="synthetic", params={"num_classes": 2, "n_train": 512, "n_test": 256, "seed_offset": 1})
    data = load_data(spec, seed=0)
    backbone = build_backbone("small_cnn", {"width": 16, "feature_dim": 64}, num_classes=2)
    extractor = feature_extractor(backbone)
    with torch.no_grad():
        f_tr, f_te = extractor(data.train.x), extractor(data.test.x)
    head = fit_head(f_tr, data.train.y)
    ctx = AttackContext(
        extractor=extractor,
        x_train=data.train.x,
        y_train=data.train.y,
        x_test=data.test.x,
        y_test=data.test.y,
        f_train=f_tr,
        f_test=f_te,
        head=head,
        fit_head=lambda f, y: fit_head(f, y),
    )
    return Problem(backbone=backbone, ctx=ctx)
