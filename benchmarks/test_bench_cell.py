"""A full cell of the smoke suite, cold (training, features) vs warm (both cached)."""

from __future__ import annotations

from pathlib import Path

from conftest import peak_rss_mb, report, timed

from benchmark.cell.pipeline import RunOptions, run_cell
from benchmark.suite import expand, load_suite

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_cell_cold_vs_warm_cache(benchmark, tmp_path):
    cell = next(
        c for c in expand(load_suite(ROOT / "suites/smoke.yaml")) if (c.defense.label, c.attack.label) == ("pgd", "label_flip")
    )
    opts = RunOptions(device="cpu", cache_dir=str(tmp_path / "cache"))
    cold_s, cold = timed(lambda: run_cell(cell, opts))
    warm = benchmark.pedantic(lambda: run_cell(cell, opts), rounds=1, iterations=1)
    assert cold.status == warm.status == "FINISHED"
    assert warm.metrics["backbone_cached"] == 1.0 and cold.metrics["backbone_cached"] == 0.0
    assert warm.metrics["clean_accuracy"] == cold.metrics["clean_accuracy"]
    report(benchmark, "smoke cell cold vs warm cache", cold_s, benchmark.stats.stats.mean, peak_rss_mb=peak_rss_mb())
