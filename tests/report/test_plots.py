"""Report figures: the heat map's colours follow the data's range; legends never cover a panel."""

from __future__ import annotations

import pytest

from benchmark.report import plots
from benchmark.report.aggregate import aggregate
from benchmark.report.source import CellRun


def _runs(values: dict[tuple[str, str], float]) -> list[CellRun]:
    out = []
    for i, ((defense, attack), acc) in enumerate(values.items()):
        metrics = {"poisoned_accuracy": acc, "clean_accuracy": 0.95}
        if attack == "pf":
            metrics.update(attack_success_rate=0.3, attack_success_ci_low=0.1, attack_success_ci_high=0.6,
                           num_trials=20, attack_successes=6)
        out.append(CellRun(f"r{i}", "d", "bb", defense, attack, "0", "FINISHED", i, metrics))
    return out


@pytest.fixture
def captured(monkeypatch):
    """The matplotlib figures the plot functions draw, instead of their PNG bytes."""
    figs = []
    monkeypatch.setattr(plots, "_png", lambda fig: figs.append(fig) or b"png")
    return figs


def test_close_values_spread_over_the_colour_map(captured):
    agg = aggregate(_runs({("naive", "none"): 0.920, ("naive", "lf"): 0.925, ("pgd", "none"): 0.931,
                           ("pgd", "lf"): 0.929}), None)
    assert plots.heatmap(agg) is not None
    image = captured[0].axes[0].images[0]
    assert (image.norm.vmin, image.norm.vmax) == pytest.approx((92.0, 93.1))
    colours = {tuple(image.cmap(image.norm(v))) for row in image.get_array().tolist() for v in row}
    assert len(colours) == 4, "cells 0.5 to 1.1 points apart must not share one colour"


def test_colour_range_keeps_a_minimum_span():
    assert plots.colour_range([50.0, 50.0]) == (49.5, 50.5)
    assert plots.colour_range([10.0, 90.0, float("nan")]) == (10.0, 90.0)


def test_legends_sit_outside_every_panel(captured):
    agg = aggregate(_runs({("naive", "none"): 0.9, ("naive", "pf"): 0.8, ("pgd", "none"): 0.92,
                           ("pgd", "pf"): 0.91}), None)
    assert plots.accuracy_bars(agg) is not None and plots.success_rates(agg) is not None
    for fig in captured:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert all(ax.get_legend() is None for ax in fig.axes)
        (legend,) = fig.legends
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_tightbbox(renderer)), "a legend covers a panel"
        assert not box.overlaps(fig._suptitle.get_window_extent(renderer)), "the legend covers the title"
