"""The batched torch head solver vs sequential sklearn LinearSVC fits (100 Poison Frog refits)."""

from __future__ import annotations

import torch

from benchmark.heads import accuracy, fit_heads
from conftest import peak_rss_mb, report, timed

REFITS = 100


def _refit_problems(n: int = 1000, d: int = 512, classes: int = 2, seed: int = 0):
    """A clean training set of features, and 100 copies that each change one row (a PF trial each)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, d, generator=g)
    y = torch.randint(classes, (n,), generator=g)
    f = (means[y] + 2.0 * torch.randn(n, d, generator=g)).relu()  # non-negative, like ReLU features
    problems = []
    for i in range(REFITS):
        fi = f.clone()
        fi[i] = fi[i] + torch.randn(d, generator=g)
        problems.append((fi, y))
    return (f, y), problems


def test_torch_svm_vs_sequential_linearsvc(benchmark):
    clean_set, problems = _refit_problems()
    lib_s, sk_heads = timed(lambda: fit_heads(problems, "linear_svc"))
    # as the cell runner does: the clean head warm-starts the refits
    clean = fit_heads([clean_set], "torch_svm")[0]
    heads = benchmark.pedantic(lambda: fit_heads(problems, "torch_svm", init=clean), rounds=1, iterations=1)
    f, y = problems[0]
    assert abs(accuracy(heads[0], f, y) - accuracy(sk_heads[0], f, y)) <= 0.01
    report(benchmark, f"torch_svm vs {REFITS} sequential LinearSVC fits", lib_s, benchmark.stats.stats.mean,
           peak_rss_mb=peak_rss_mb())
