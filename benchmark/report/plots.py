"""The report's figures (matplotlib, Agg backend), each returned as PNG bytes; one panel per (dataset, backbone).

- heat map of poisoned accuracy, defense x attack, its colours spread over the values' own range (one colour scale
  for all panels) so that cells a few points apart look different;
- clean vs poisoned accuracy bars, with 95% interval error bars;
- success rates of targeted attacks, with 95% interval error bars (Wilson's over trials for a single seed).

Legends sit above the panels, outside every axes, so that they never hide a bar.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from benchmark.artifacts import pyplot
from benchmark.report.aggregate import Aggregate, Group, Stat


@dataclass
class Figure:
    name: str  # file name
    title: str
    png: bytes


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def _panels(agg: Aggregate, groups: list[Group]) -> list[tuple[str, str]]:
    keys = {(g.label("dataset"), g.label("backbone")) for g in groups}
    return sorted(keys, key=lambda k: (_rank(agg, "dataset", k[0]), _rank(agg, "backbone", k[1])))


def _rank(agg: Aggregate, axis: str, label: str) -> int:
    order = agg.order.get(axis, [])
    return order.index(label) if label in order else len(order)


def _in_order(agg: Aggregate, axis: str, labels: set[str]) -> list[str]:
    return sorted(labels, key=lambda v: (_rank(agg, axis, v), v))


def arms_in_order(agg: Aggregate, groups: list[Group]) -> list[str]:
    """The groups' arms (defense, +filter when filtered) in suite order: by defense, then filter."""
    rank = {g.arm: (_rank(agg, "defense", g.label("defense")), _rank(agg, "filter", g.label("filter"))) for g in groups}
    return sorted(rank, key=lambda arm: (rank[arm], arm))


def _axes(n: int, width: float, height: float) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _err(stats: list[Stat | None], scale: float = 100.0) -> tuple[list[float], list[list[float]]]:
    means, lo, hi = [], [], []
    for s in stats:
        if s is None:
            means.append(math.nan)
            lo.append(0.0)
            hi.append(0.0)
        else:
            means.append(s.mean * scale)
            lo.append(max(0.0, (s.mean - s.low) * scale))
            hi.append(max(0.0, (s.high - s.mean) * scale))
    return means, [lo, hi]


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
    panels = _panels(agg, groups)
    fig, axes = _axes(len(panels), 4.8, 3.6)
    tables = []
    for ds, bb in panels:
        mine = [g for g in groups if g.label("dataset") == ds and g.label("backbone") == bb]
        defenses = arms_in_order(agg, mine)
        attacks = _in_order(agg, "attack", {g.label("attack") for g in mine})
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
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right")
        ax.set_yticks(range(len(defenses)), defenses)
        ax.set_title(f"{ds} / {bb}")
    if image is not None:
        fig.colorbar(image, ax=axes, label=f"poisoned accuracy (%), {vmin:.1f} to {vmax:.1f}", shrink=0.8)
    fig.suptitle("Poisoned accuracy (%), mean over seeds", y=1.03)
    return Figure("heatmap_poisoned_accuracy.png", "Poisoned accuracy: defense x attack", _png(fig))


def accuracy_bars(agg: Aggregate) -> Figure | None:
    groups = [g for g in agg.groups.values() if "clean_accuracy" in g.stats]
    if not groups:
        return None
    panels = _panels(agg, groups)
    per_panel = max(sum(1 for g in groups if (g.label("dataset"), g.label("backbone")) == p) for p in panels)
    width = max(4.5, 0.55 * per_panel)
    fig, axes = _axes(len(panels), width, 3.4)
    for ax, (ds, bb) in zip(axes, panels, strict=True):
        mine = [g for g in groups if g.label("dataset") == ds and g.label("backbone") == bb]
        xs = list(range(len(mine)))
        for offset, metric, name in ((-0.2, "clean_accuracy", "clean"), (0.2, "poisoned_accuracy", "poisoned")):
            means, err = _err([g.stats.get(metric) for g in mine])
            ax.bar([x + offset for x in xs], means, width=0.4, yerr=err, capsize=2, label=name)
        ax.set_xticks(xs, [f"{g.arm}\n{g.label('attack')}" for g in mine], fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{ds} / {bb}")
    _legend_above(fig, axes)
    fig.suptitle("Clean vs poisoned accuracy (95% interval over seeds)", y=1.12)
    return Figure("accuracy_clean_vs_poisoned.png", "Clean vs poisoned accuracy", _png(fig))


def success_rates(agg: Aggregate) -> Figure | None:
    groups = [g for g in agg.groups.values() if "attack_success_rate" in g.stats]
    if not groups:
        return None
    panels = _panels(agg, groups)
    fig, axes = _axes(len(panels), 4.8, 3.4)
    for ax, (ds, bb) in zip(axes, panels, strict=True):
        mine = [g for g in groups if g.label("dataset") == ds and g.label("backbone") == bb]
        defenses = arms_in_order(agg, mine)
        attacks = _in_order(agg, "attack", {g.label("attack") for g in mine})
        width = 0.8 / len(attacks)
        for i, attack in enumerate(attacks):
            by_def = {g.arm: g for g in mine if g.label("attack") == attack}
            stats = [by_def[d].stats["attack_success_rate"] if d in by_def else None for d in defenses]
            means, err = _err(stats)
            xs = [x - 0.4 + width * (i + 0.5) for x in range(len(defenses))]
            ax.bar(xs, means, width=width, yerr=err, capsize=3, label=attack)
        crowded = len(defenses) > 3  # arms with a filter (``naive+knn``) overlap when written level
        ax.set_xticks(range(len(defenses)), defenses, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        ax.set_ylim(0, 100)
        ax.set_ylabel("success rate (%)")
        ax.set_title(f"{ds} / {bb}")
    _legend_above(fig, axes)
    fig.suptitle("Targeted attacks and backdoors: success rate (95% interval)", y=1.12)
    return Figure("success_rates.png", "Targeted attacks and backdoors: success rates", _png(fig))


def figures(agg: Aggregate) -> list[Figure]:
    return [f for f in (heatmap(agg), accuracy_bars(agg), success_rates(agg)) if f is not None]
