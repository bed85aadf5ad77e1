"""The report's figures (matplotlib, Agg backend), each returned as a 2x PNG and an SVG; one panel per (dataset,
backbone), sized for a paper's column (3.5 inches a panel, 8-point text).

- heat map of poisoned accuracy, defense x attack, its colours spread over the values' own range (one colour scale
  for all panels, the range written in the title) so that cells a few points apart look different;
- clean vs poisoned accuracy, on an axis that spans the values (a 2-point drop on a 0-100 axis is invisible), with
  95% intervals over seeds where there are several seeds and none where there is one;
- success rates of targeted attacks, with 95% intervals (over seeds; Wilson's over trials for a single seed).

Legends sit above the panels, outside every axes, so that they never hide a bar.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from benchmark.cell.artifacts import pyplot
from benchmark.report.aggregate import Aggregate, Group, Stat

PANEL = (3.5, 2.6)  # inches: one panel fills a two-column paper's column
PNG_DPI = 200  # 2x a 100-dpi screen: sharp on a slide and in a PDF viewer
PAPER_STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "figure.titlesize": 9, "svg.fonttype": "none",  # SVG text stays text (editable)
}  # fmt: skip


@dataclass
class Figure:
    name: str  # file name of the PNG; the SVG has the same stem
    title: str
    png: bytes
    svg: bytes = b""


def render_figure(fig: Any) -> tuple[bytes, bytes]:
    """(PNG at 2x, SVG) of the figure, which is closed."""
    out = []
    for fmt, dpi in (("png", PNG_DPI), ("svg", None)):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
        out.append(buf.getvalue())
    pyplot().close(fig)
    return out[0], out[1]


def panel_grid(agg: Aggregate, groups: list[Group]) -> list[tuple[str, str]]:
    keys = {(g.label("dataset"), g.label("backbone")) for g in groups}
    return sorted(keys, key=lambda k: (_rank(agg, "dataset", k[0]), _rank(agg, "backbone", k[1])))


def _rank(agg: Aggregate, axis: str, label: str) -> int:
    order = agg.order.get(axis, [])
    return order.index(label) if label in order else len(order)


def in_order(agg: Aggregate, axis: str, labels: set[str]) -> list[str]:
    return sorted(labels, key=lambda v: (_rank(agg, axis, v), v))


def arms_in_order(agg: Aggregate, groups: list[Group]) -> list[str]:
    """The groups' arms (defense, +filter when filtered) in suite order: by defense, then filter."""
    rank = {g.arm: (_rank(agg, "defense", g.label("defense")), _rank(agg, "filter", g.label("filter"))) for g in groups}
    return sorted(rank, key=lambda arm: (rank[arm], arm))


def panel_axes(n: int, width: float = PANEL[0], height: float = PANEL[1]) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    pyplot().rcParams.update(PAPER_STYLE)
    fig, axes = pyplot().subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _err(stats: list[Stat | None], scale: float = 100.0) -> tuple[list[float], list[list[float]]]:
    """Means and error-bar lengths; no bar for a statistic over a single seed (it has no interval over seeds)."""
    means, lo, hi = [], [], []
    for s in stats:
        if s is not None and not has_interval(s):
            means.append(s.mean * scale)
            lo.append(0.0)
            hi.append(0.0)
        elif s is None:
            means.append(math.nan)
            lo.append(0.0)
            hi.append(0.0)
        else:
            means.append(s.mean * scale)
            lo.append(max(0.0, (s.mean - s.low) * scale))
            hi.append(max(0.0, (s.high - s.mean) * scale))
    return means, [lo, hi]


def has_interval(s: Stat) -> bool:
    """Whether the statistic has an interval to draw: over two or more seeds, or Wilson's over trials."""
    return s.interval == "wilson" or s.n >= 2


def interval_words(stats: list[Stat]) -> str:
    """What the error bars of a figure are, for its title."""
    kinds = {("wilson" if s.interval == "wilson" else "seeds" if s.n >= 2 else "none") for s in stats}
    if kinds == {"none"}:
        return "one seed: no interval"
    words = {"wilson": "Wilson over trials", "seeds": "over seeds", "none": "none for one seed"}
    return "95% interval: " + ", ".join(words[k] for k in sorted(kinds))


def value_range(values: list[float], pad_share: float = 0.15, min_pad: float = 1.0) -> tuple[float, float]:
    """Axis limits around the values (in %), padded, kept inside 0-100: the scale of the effect, not 0-100."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return 0.0, 100.0
    lo, hi = min(finite), max(finite)
    pad = max(min_pad, pad_share * (hi - lo))
    return max(0.0, lo - pad), min(100.0, hi + pad)


MIN_COLOUR_SPAN = 1.0  # percentage points: values closer than this are not stretched over the whole colour map


def colour_range(values: list[float]) -> tuple[float, float]:
    """(vmin, vmax) of a heat map: the finite values' range, widened symmetrically to at least MIN_COLOUR_SPAN."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return 0.0, 100.0
    lo, hi = min(finite), max(finite)
    pad = max(0.0, MIN_COLOUR_SPAN - (hi - lo)) / 2
    return lo - pad, hi + pad


def _legend_above(fig: Any, axes: list[Any]) -> None:
    """One legend for the figure, above the panels (labels gathered from every panel, each once)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(
            list(entries.values()), list(entries), loc="lower center", bbox_to_anchor=(0.5, 1.0),
            ncol=min(len(entries), 6), fontsize=7, frameon=False,
        )  # fmt: skip


def heatmap(agg: Aggregate) -> Figure | None:
    groups = [g for g in agg.groups.values() if "poisoned_accuracy" in g.stats]
    if not groups:
        return None
    panels = panel_grid(agg, groups)
    fig, axes = panel_axes(len(panels))
    tables = []
    for ds, bb in panels:
        mine = [g for g in groups if g.label("dataset") == ds and g.label("backbone") == bb]
        defenses = arms_in_order(agg, mine)
        attacks = in_order(agg, "attack", {g.label("attack") for g in mine})
        values = [[math.nan] * len(attacks) for _ in defenses]
        for g in mine:
            values[defenses.index(g.arm)][attacks.index(g.label("attack"))] = (
                100 * g.stats["poisoned_accuracy"].mean
            )
        tables.append((defenses, attacks, values))
    vmin, vmax = colour_range([v for _, _, values in tables for row in values for v in row])
    image = None
    for ax, (ds, bb), (defenses, attacks, values) in zip(axes, panels, tables, strict=True):
        image = ax.imshow(values, vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    dark = (v - vmin) / (vmax - vmin) < 0.6  # viridis is dark at its low end
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if dark else "black", fontsize=7)
        ax.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right")
        ax.set_yticks(range(len(defenses)), defenses)
        ax.set_title(f"{ds} / {bb}")
    if image is not None:
        fig.colorbar(image, ax=axes, label=f"poisoned accuracy (%), {vmin:.1f} to {vmax:.1f}", shrink=0.8)
    fig.suptitle(
        f"Poisoned accuracy (%), mean over seeds\ncolours span {vmin:.1f}-{vmax:.1f}% "
        f"({vmax - vmin:.1f} pts), not 0-100", y=1.08,
    )  # fmt: skip
    return Figure("heatmap_poisoned_accuracy.png", "Poisoned accuracy: defense x attack", *render_figure(fig))


def accuracy_bars(agg: Aggregate) -> Figure | None:
    """Clean and poisoned accuracy of each group as two points joined by a line, on an axis that spans them."""
    groups = [g for g in agg.groups.values() if "clean_accuracy" in g.stats]
    if not groups:
        return None
    panels = panel_grid(agg, groups)
    per_panel = max(sum(1 for g in groups if (g.label("dataset"), g.label("backbone")) == p) for p in panels)
    fig, axes = panel_axes(len(panels), max(PANEL[0], 0.4 * per_panel))
    stats: list[Stat] = []
    for ax, (ds, bb) in zip(axes, panels, strict=True):
        mine = [g for g in groups if g.label("dataset") == ds and g.label("backbone") == bb]
        xs = list(range(len(mine)))
        shown: list[float] = []
        for offset, metric, name, marker in ((-0.12, "clean_accuracy", "clean", "o"),
                                             (0.12, "poisoned_accuracy", "poisoned", "s")):
            present = [g.stats.get(metric) for g in mine]
            stats += [s for s in present if s is not None]
            means, err = _err(present)
            ax.errorbar([x + offset for x in xs], means, yerr=err, fmt=marker, ms=4, capsize=2, lw=0, elinewidth=1,
                        label=name)
            shown += [m - e for m, e in zip(means, err[0], strict=True)] + [m + e for m, e in zip(means, err[1],
                                                                                                strict=True)]
        for x, g in zip(xs, mine, strict=True):  # the drop itself: a line from clean to poisoned
            if "poisoned_accuracy" in g.stats:
                ys = [100 * g.stats["clean_accuracy"].mean, 100 * g.stats["poisoned_accuracy"].mean]
                ax.plot([x - 0.12, x + 0.12], ys, color="grey", lw=0.8, zorder=0)
        ax.set_xticks(xs, [f"{g.arm}\n{g.label('attack')}" for g in mine], fontsize=6)
        ax.set_ylim(*value_range(shown))
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{ds} / {bb}")
        ax.grid(axis="y", lw=0.3, alpha=0.5)
    _legend_above(fig, axes)
    fig.suptitle(f"Clean vs poisoned accuracy ({interval_words(stats)}); the axis spans the values", y=1.2)
    return Figure("accuracy_clean_vs_poisoned.png", "Clean vs poisoned accuracy", *render_figure(fig))


def success_rates(agg: Aggregate) -> Figure | None:
    groups = [g for g in agg.groups.values() if "attack_success_rate" in g.stats]
    if not groups:
        return None
    panels = panel_grid(agg, groups)
    fig, axes = panel_axes(len(panels))
    shown: list[Stat] = []
    for ax, (ds, bb) in zip(axes, panels, strict=True):
        mine = [g for g in groups if g.label("dataset") == ds and g.label("backbone") == bb]
        defenses = arms_in_order(agg, mine)
        attacks = in_order(agg, "attack", {g.label("attack") for g in mine})
        width = 0.8 / len(attacks)
        for i, attack in enumerate(attacks):
            by_def = {g.arm: g for g in mine if g.label("attack") == attack}
            stats = [by_def[d].stats["attack_success_rate"] if d in by_def else None for d in defenses]
            shown += [s for s in stats if s is not None]
            means, err = _err(stats)
            xs = [x - 0.4 + width * (i + 0.5) for x in range(len(defenses))]
            ax.bar(xs, means, width=width, yerr=err, capsize=3, label=attack)
        crowded = len(defenses) > 3  # arms with a filter (``naive+knn``) overlap when written level
        ax.set_xticks(range(len(defenses)), defenses, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        ax.set_ylim(0, 100)
        ax.set_ylabel("success rate (%)")
        ax.set_title(f"{ds} / {bb}")
    _legend_above(fig, axes)
    fig.suptitle(f"Targeted attacks and backdoors: success rate ({interval_words(shown)})", y=1.2)
    return Figure("success_rates.png", "Targeted attacks and backdoors: success rates", *render_figure(fig))


def figures(agg: Aggregate) -> list[Figure]:
    return [f for f in (heatmap(agg), accuracy_bars(agg), success_rates(agg)) if f is not None]
