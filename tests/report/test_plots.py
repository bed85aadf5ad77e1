"""Report figures: the heat map's colours follow the data's range and say so; accuracies are drawn on the scale
of the effect, with intervals only where there are several seeds; legends never cover a panel; every figure is a 2x
PNG and an SVG."""

from __future__ import annotations

import pytest

from benchmark.report import plots
from benchmark.report.aggregate import aggregate
from benchmark.report.source import CellRun


def _runs(values: dict[tuple[str, str], float], seeds: tuple[str, ...] = ("0",)) -> list[CellRun]:
    out = []
    for s, seed in enumerate(seeds):
        for i, ((defense, attack), acc) in enumerate(values.items()):
            metrics = {"poisoned_accuracy": acc + 0.01 * s, "clean_accuracy": 0.95 - 0.01 * s}
            if attack == "pf":
                metrics.update(attack_success_rate=0.3, attack_success_ci_low=0.1, attack_success_ci_high=0.6,
                               num_trials=20, attack_successes=6)
            out.append(CellRun(f"r{i}s{seed}", "d", "bb", defense, attack, seed, "FINISHED", i, metrics))
    return out


@pytest.fixture
def captured(monkeypatch):
    """The matplotlib figures the plot functions draw, instead of their PNG bytes."""
    figs = []
    monkeypatch.setattr(plots, "render_figure", lambda fig: figs.append(fig) or (b"png", b"svg"))
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


def _error_bar_lengths(fig) -> list[float]:
    return [abs(seg[1][1] - seg[0][1]) for coll in fig.axes[0].collections for seg in coll.get_segments()]


@pytest.mark.parametrize("seeds", [("0",), ("0", "1")], ids=["one seed", "two seeds"])
def test_accuracy_is_drawn_on_the_effects_scale_with_intervals_only_over_seeds(captured, seeds):
    agg = aggregate(_runs({("naive", "none"): 0.95, ("naive", "lf"): 0.93, ("pgd", "lf"): 0.94}, seeds), None)
    assert plots.accuracy_bars(agg) is not None
    fig = captured[0]
    low, high = fig.axes[0].get_ylim()
    assert low < 93 and 95 < high <= 100
    assert low > (85 if len(seeds) == 1 else 50), "a 2-point drop on a 0-100 axis is invisible"
    title = fig._suptitle.get_text()
    if len(seeds) == 1:
        assert "one seed: no interval" in title and not any(_error_bar_lengths(fig)), "no interval over one seed"
    else:
        assert "over seeds" in title and any(length > 0 for length in _error_bar_lengths(fig))


def test_heat_map_writes_its_colour_range_in_the_title(captured):
    agg = aggregate(_runs({("naive", "none"): 0.900, ("pgd", "none"): 0.918}), None)
    plots.heatmap(agg)
    assert "colours span 90.0-91.8% (1.8 pts), not 0-100" in captured[0]._suptitle.get_text()


def test_figures_are_a_2x_png_and_an_svg():
    import struct

    agg = aggregate(_runs({("naive", "none"): 0.9, ("pgd", "pf"): 0.8}), None)
    for fig in plots.figures(agg):
        assert fig.png[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in fig.svg[:1000]
        width = struct.unpack(">I", fig.png[16:20])[0]
        assert width >= 0.8 * plots.PANEL[0] * plots.PNG_DPI, "a PNG at 2x a screen's 100 dpi"
