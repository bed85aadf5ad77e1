"""Budget curves of swept attacks and of robust accuracy over eps, and the budget at which each defense breaks.

A *family* is an attack written once in the suite and swept over one parameter (``poison_frog`` over
``num_poisons``): its variants' groups, read from the ``sweep.attack.*`` tags of their runs. For each family and
(dataset, backbone): a targeted attack's success rate with its 95% Wilson band against the swept value, or an
untargeted attack's poisoned accuracy with its 95% interval, one line per defense; and, for targeted families,
the swept value at which success first reaches 50% ("budget to break"), with the interval from the band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmark.core.stats import crossing, wilson_interval
from benchmark.report.aggregate import Aggregate, Group, Stat, base_label
from benchmark.report.per_example import Outcome
from benchmark.report.plots import (
    Figure,
    arms_in_order,
    in_order,
    panel_axes,
    panel_grid,
    render_figure,
)
from benchmark.report.tables import Table
from benchmark.suite import sweep_metric

BREAK_LEVEL = 0.5


@dataclass
class Point:
    x: float
    group: Group
    stat: Stat  # success rate (targeted) or poisoned accuracy, with its interval


@dataclass
class Family:
    attack: str  # the label the attack is written under
    param: str  # the swept parameter
    targeted: bool
    lines: dict[tuple[str, str, str], list[Point]] = field(default_factory=dict)  # (dataset, backbone, defense)

    @property
    def metric(self) -> str:
        return "attack_success_rate" if self.targeted else "poisoned_accuracy"


def _swept_value(group: Group) -> tuple[str, float] | None:
    """The attack's one swept parameter and its value in this group (None: not swept, or swept over several)."""
    tags = group.runs[0].sweep
    swept = [(k.removeprefix("sweep.attack."), v) for k, v in tags.items() if k.startswith("sweep.attack.")]
    if len(swept) != 1:
        return None
    try:
        return swept[0][0], float(swept[0][1])
    except ValueError:
        return None


def accuracy_stat(group: Group, metric: str, outcomes: dict[str, Outcome]) -> Stat | None:
    """The group's accuracy with an interval: over seeds (t) when there are several, else Wilson's over the test
    images of its one run (a poisoned accuracy averaged over trials counts as that many images right)."""
    stat = group.stats.get(metric)
    if stat is None or stat.n > 1:
        return stat
    out = outcomes.get(group.runs[0].run_id)
    if out is None:
        return stat
    n = len(out.clean)
    lo, hi = wilson_interval(round(stat.mean * n), n)
    return Stat(stat.mean, 0.0, lo, hi, 1, interval="wilson")


def families(agg: Aggregate, outcomes: dict[str, Outcome]) -> list[Family]:
    out: dict[tuple[str, str], Family] = {}
    for key, group in agg.groups.items():
        dataset, backbone, _, attack, _ = key
        swept = _swept_value(group)
        if swept is None:
            continue
        param, x = swept
        targeted = "attack_success_rate" in group.stats
        fam = out.setdefault((base_label(attack), param), Family(base_label(attack), param, targeted))
        stat = group.stats.get(fam.metric) if targeted else accuracy_stat(group, fam.metric, outcomes)
        if stat is not None:
            fam.lines.setdefault((dataset, backbone, group.arm), []).append(Point(x, group, stat))
    for fam in out.values():
        for points in fam.lines.values():
            points.sort(key=lambda p: p.x)
    return list(out.values())


def _log_x(xs: list[float]) -> bool:
    return min(xs) > 0 and max(xs) / min(xs) >= 8


def curve_figure(agg: Aggregate, fam: Family) -> Figure:
    panels = panel_grid(agg, [pts[0].group for pts in fam.lines.values()])
    fig, axes = panel_axes(len(panels))
    for ax, (ds, bb) in zip(axes, panels, strict=True):
        defenses = arms_in_order(agg, [pts[0].group for (d0, b0, _), pts in fam.lines.items() if (d0, b0) == (ds, bb)])
        xs_all: list[float] = []
        for defense in defenses:
            pts = fam.lines[(ds, bb, defense)]
            xs = [p.x for p in pts]
            xs_all += xs
            ys = [100 * p.stat.mean for p in pts]
            ax.plot(xs, ys, marker="o", label=defense)
            ax.fill_between(xs, [100 * p.stat.low for p in pts], [100 * p.stat.high for p in pts], alpha=0.2)
        if xs_all and _log_x(xs_all):
            ax.set_xscale("log")
        if fam.targeted:
            ax.axhline(100 * BREAK_LEVEL, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0, 100)
        ax.set_xlabel(fam.param)
        ax.set_ylabel("success rate (%)" if fam.targeted else "poisoned accuracy (%)")
        ax.set_title(f"{ds} / {bb}")
        ax.legend()
    what = "success rate, 95% Wilson band" if fam.targeted else "poisoned accuracy, 95% interval"
    fig.suptitle(f"{fam.attack} over {fam.param}: {what}", y=1.03)
    return Figure(f"curve_{fam.attack}_{fam.param}.png", f"{fam.attack}: {what} vs {fam.param}", *render_figure(fig))


def _fmt_x(x: float, flag: str) -> str:
    text = f"{x:.3g}"
    return {"": f"≈ {text}", "<=": f"≤ {text}", ">": f"> {text}"}[flag]


def break_table(agg: Aggregate, fams: list[Family]) -> Table:
    """Budget to break: the swept value at which the success rate first reaches 50%, interpolated in log budget;
    the interval is where the upper band (lower end) and the lower band (upper end) of the Wilson band reach 50%."""
    rows = []
    for fam in fams:
        if not fam.targeted:
            continue
        for (ds, bb, defense), pts in fam.lines.items():
            xs = [p.x for p in pts]
            est = crossing(xs, [p.stat.mean for p in pts], BREAK_LEVEL)
            lo = crossing(xs, [p.stat.high for p in pts], BREAK_LEVEL)
            hi = crossing(xs, [p.stat.low for p in pts], BREAK_LEVEL)
            curve = ", ".join(f"{p.x:g}: {100 * p.stat.mean:.0f}%" for p in pts)
            rows.append([f"{ds}/{bb}", fam.attack, defense, fam.param, _fmt_x(*est),
                         f"[{_fmt_x(*lo)}, {_fmt_x(*hi)}]", curve])
    note = (
        "Budget to break: the swept value at which the success rate first reaches 50%, interpolated linearly in log "
        "budget between swept points; interval: where the upper (lower end) and lower (upper end) 95% Wilson bands "
        "reach 50%. '> x': not reached within the sweep; '≤ x': reached at the smallest value swept."
    )
    header = ["dataset/backbone", "attack", "defense", "budget", "to break", "95% interval", "success by budget"]
    return Table("Budget to break (50% success)", header, rows, note=note, anchor="budget-to-break")


def robust_figure(agg: Aggregate, eps_values: list[float], samples: int) -> Figure | None:
    """Robust accuracy of the clean head vs eps, one line per defense: from the no-attack cells when the suite has
    them (the full task), else from every cell of that defense (mean over cells)."""
    if not eps_values:
        return None
    keys = [k for k in agg.groups if agg.grid is None or agg.grid.name("attack", k[3]) == "none"] or list(agg.groups)
    panels = panel_grid(agg, [agg.groups[k] for k in keys])
    if not panels:
        return None
    fig, axes = panel_axes(len(panels))
    xs = sorted(eps_values)
    for ax, (ds, bb) in zip(axes, panels, strict=True):
        for defense in in_order(agg, "defense", {k[2] for k in keys if k[:2] == (ds, bb)}):
            groups = [agg.groups[k] for k in keys if k[:3] == (ds, bb, defense)]
            ys, lo, hi = [], [], []
            for eps in xs:
                vals = [g.stats[m].mean for g in groups if (m := sweep_metric("robust_accuracy", "robust_eps", eps))
                        in g.stats]
                v = sum(vals) / len(vals) if vals else math.nan
                band = wilson_interval(round(v * samples), samples) if vals else (math.nan, math.nan)
                ys.append(100 * v)
                lo.append(100 * band[0])
                hi.append(100 * band[1])
            ax.plot([255 * x for x in xs], ys, marker="o", label=defense)
            ax.fill_between([255 * x for x in xs], lo, hi, alpha=0.2)
        ax.set_ylim(0, 100)
        ax.set_xlabel("eps (/255)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_title(f"{ds} / {bb}")
        ax.legend()
    fig.suptitle(f"Robust accuracy (PGD) vs eps, 95% Wilson band over {samples} test images", y=1.03)
    return Figure("curve_robust_accuracy_eps.png", "Robust accuracy vs eps", *render_figure(fig))


__all__ = ["Family", "accuracy_stat", "break_table", "curve_figure", "families", "robust_figure"]
