"""100 Poison Frog refits: the shared-base torch solver vs 100 sequential sklearn LinearSVC fits."""

from __future__ import annotations

import torch
from conftest import peak_rss_mb, report, timed

from adapters.heads.base import fit_head, fit_heads, head_accuracy
from adapters.heads.refit import RowEdit, refit_heads

REFITS = 100


def _refit_problem(n: int = 1000, d: int = 512, classes: int = 2, seed: int = 0):
    """A clean training set of ReLU-like features and 100 edits that each replace one row (a PF trial each)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, d, generator=g)
    y = torch.randint(classes, (n,), generator=g)
    f = (means[y] + 2.0 * torch.randn(n, d, generator=g)).relu()
    edits = [RowEdit(torch.tensor([i]), f[i : i + 1] + torch.randn(1, d, generator=g), y[i : i + 1]) for i in range(REFITS)]
    return f, y, edits


def test_torch_svm_vs_sequential_linearsvc(benchmark):
    f, y, edits = _refit_problem()
    sets = [e.apply(f, y) for e in edits]
    # both warmed up first: the first LinearSVC fit in a process pays for importing sklearn (seconds)
    fit_heads(sets[:1], "linear_svc")
    clean = fit_head(f, y, "torch_svm")  # as the cell runner does: the clean head warm-starts the refits
    refit_heads(f, y, edits[:2], "torch_svm", init=clean)
    lib_s, sk_heads = timed(lambda: fit_heads(sets, "linear_svc"))
    cold_s, _ = timed(lambda: refit_heads(f, y, edits, "torch_svm"))
    heads = benchmark.pedantic(lambda: refit_heads(f, y, edits, "torch_svm", init=clean), rounds=3, iterations=1)
    for (fe, ye), h, sk in zip(sets, heads, sk_heads, strict=True):
        assert abs(head_accuracy(h, fe, ye) - head_accuracy(sk, fe, ye)) <= 0.01
    report(
        benchmark,
        f"torch_svm (shared base, warm) vs {REFITS} sequential LinearSVC fits",
        lib_s,
        benchmark.stats.stats.mean,
        ours_without_warm_start_seconds=cold_s,
        peak_rss_mb=peak_rss_mb(),
    )
