"""Aggregation of cell runs over seeds, and the grid the suite expected (to find missing and failed cells).

A cell (dataset, backbone, defense, attack, filter, seed) may have several runs under one parent (a FAILED run, then a
resumed FINISHED one): its FINISHED run counts (the latest if several); a cell without one is *failed* (its latest
run's status and error), and an expected cell without any run is *missing*. Finished cells are grouped by
(dataset, backbone, defense, attack, filter) and every metric is summarised over seeds with
``benchmark.core.stats.mean_ci`` (mean, sample std, t-based 95% interval). With a single seed a targeted attack's success rate keeps the cell's own
Wilson interval over its trials, which is the only spread one run can show.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from benchmark.core.stats import mean_ci
from benchmark.report.source import CellRun
from benchmark.suite import (
    AXES,
    NO_FILTER,
    SWEPT_AXES,
    ComponentSpec,
    ReferenceSpec,
    sweep_section,
)

GROUP_AXES = AXES[:-1]  # every axis but the seed, in the same order
GroupKey = tuple[str, str, str, str, str]
CellId = tuple[str, str, str, str, str, str]


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    low: float
    high: float
    n: int
    interval: str = "t"  # "t": over seeds; "wilson": one run's binomial interval over its trials


@dataclass
class Group:
    key: GroupKey
    runs: list[CellRun]  # the counted (FINISHED) run of each seed
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)

    def label(self, axis: str) -> str:
        return self.key[GROUP_AXES.index(axis)]

    @property
    def arm(self) -> str:
        """The defense, with the filter when there is one (``naive+knn``): what a paired comparison sets against
        another arm on the same attack, so that robust features and a poison filter meet in one table."""
        filt = self.label("filter")
        return self.label("defense") if filt == NO_FILTER else f"{self.label('defense')}+{filt}"


@dataclass
class SuiteGrid:
    """What the suite file says the grid is: axis labels, exclusions, references, component names per label."""

    labels: dict[str, list[str]]
    exclude: list[dict[str, Any]]
    references: list[ReferenceSpec]
    names: dict[str, dict[str, str]]

    @classmethod
    def from_raw(cls, raw: dict[str, Any] | None) -> SuiteGrid | None:
        """From the parsed YAML alone (no registry), so a report still works after components change."""
        if not isinstance(raw, dict):
            return None
        sections = {"dataset": "datasets", "backbone": "backbones", "defense": "defenses", "attack": "attacks",
                    "filter": "filters"}
        labels: dict[str, list[str]] = {}
        names: dict[str, dict[str, str]] = {}
        for axis, section in sections.items():
            entries = raw.get(section) or ({NO_FILTER: {}} if axis == "filter" else {})
            if not isinstance(entries, dict):
                return None
            labels[axis] = [str(k) for k in entries]
            names[axis] = {
                str(k): str((v or {}).get("name") or k) if isinstance(v, dict) else str(k) for k, v in entries.items()
            }
            if axis in SWEPT_AXES:
                labels[axis], names[axis] = _swept_labels(entries, labels[axis], names[axis])
        labels["seed"] = [str(s) for s in (raw.get("seeds") or [0])]
        grid = raw.get("grid") or {}
        exclude = [r for r in (grid.get("exclude") or []) if isinstance(r, dict)] if isinstance(grid, dict) else []
        refs = []
        for item in raw.get("references") or []:
            try:
                refs.append(ReferenceSpec.model_validate(item))
            except ValidationError:
                continue  # a malformed reference is left out of the tables, not fatal to the report
        return cls(labels=labels, exclude=exclude, references=refs, names=names)

    def expected(self) -> list[CellId]:
        """Every cell of the grid minus the exclusion rules (the same rule semantics as ``suite.expand``)."""
        out = []
        for cell in itertools.product(*(self.labels[a] for a in AXES)):
            values = dict(zip(AXES, cell, strict=True))
            if not any(_rule_matches(values, rule) for rule in self.exclude):
                out.append(cell)
        return out

    def name(self, axis: str, label: str) -> str:
        """The registry name behind a label (``naive_svhn`` -> ``naive``); the label itself if unknown."""
        return self.names.get(axis, {}).get(label, label)


def _swept_labels(
    entries: dict[str, Any], labels: list[str], names: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """Labels and names with sweeps expanded into variants, as ``suite.expand`` does; as written if malformed."""
    try:
        variants = sweep_section({str(k): ComponentSpec.model_validate(v or {}) for k, v in entries.items()})
    except (ValidationError, ValueError):
        return labels, names
    return list(variants), {label: v.spec.name or v.base for label, v in variants.items()}


def base_label(label: str) -> str:
    """``poison_frog[num_poisons=5]`` -> ``poison_frog``: the label a swept variant was written under."""
    return label.split("[", 1)[0]


def _rule_matches(values: dict[str, str], rule: dict[str, Any]) -> bool:
    for axis, value in rule.items():
        allowed = {str(v) for v in (value if isinstance(value, list) else [value])}
        if str(values.get(axis)) not in allowed and base_label(str(values.get(axis))) not in allowed:
            return False
    return True


def matches(key: GroupKey, match: dict[str, Any]) -> bool:
    """Whether a group is one a reference's ``match`` names (keys other than the group axes are ignored)."""
    values = dict(zip(GROUP_AXES, key, strict=True))
    return all(str(v) in (str(values[k]), base_label(str(values[k]))) for k, v in match.items() if k in values)


@dataclass
class Aggregate:
    groups: dict[GroupKey, Group]  # every group with at least one finished seed, in suite order
    failed: list[CellRun]  # cells with no finished run: their latest run (FAILED, KILLED or still RUNNING)
    missing: list[CellId]  # cells the suite expects that have no run at all
    expected: dict[GroupKey, int]  # seeds expected per group (empty without the suite file)
    order: dict[str, list[str]]  # axis -> labels in suite order (then order of appearance)
    grid: SuiteGrid | None

    def all_keys(self) -> list[GroupKey]:
        """Groups with results or expected by the grid, in suite order."""
        return _sorted(set(self.groups) | set(self.expected), self.order)

    def matching(self, match: dict[str, Any]) -> list[Group]:
        return [g for k, g in self.groups.items() if matches(k, match)]

    def expected_matching(self, match: dict[str, Any]) -> list[GroupKey]:
        return [k for k in self.all_keys() if matches(k, match)]


def summarise(values: list[float]) -> Stat:
    mean, std, low, high = mean_ci(values)
    return Stat(mean, std, low, high, len(values))


def _stats(runs: list[CellRun]) -> dict[str, Stat]:
    out: dict[str, Stat] = {}
    metrics = sorted({m for r in runs for m in r.metrics})
    for m in metrics:
        values = [r.metrics[m] for r in runs if m in r.metrics and math.isfinite(r.metrics[m])]
        if values:
            out[m] = summarise(values)
    rate = out.get("attack_success_rate")
    if rate is not None and rate.n == 1:
        run = next(r for r in runs if "attack_success_rate" in r.metrics)
        lo, hi = run.metrics.get("attack_success_ci_low"), run.metrics.get("attack_success_ci_high")
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            out["attack_success_rate"] = Stat(rate.mean, 0.0, lo, hi, 1, interval="wilson")
    return out


def _sorted(keys: set[tuple[str, ...]] | list[tuple[str, ...]], order: dict[str, list[str]]) -> list[Any]:
    axes = AXES

    def rank(key: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(
            order[a].index(v) if v in order.get(a, []) else len(order.get(a, [])) for a, v in zip(axes, key)
        )

    return sorted(keys, key=lambda k: (rank(k), k))


def aggregate(runs: list[CellRun], grid: SuiteGrid | None) -> Aggregate:
    """Pick the counted run of each cell, group over seeds, and compare with the grid the suite expected."""
    order: dict[str, list[str]] = {a: list(grid.labels[a]) if grid else [] for a in AXES}
    for r in sorted(runs, key=lambda r: r.start_time):
        for axis, value in zip(AXES, r.cell, strict=True):
            if value not in order[axis]:
                order[axis].append(value)

    by_cell: dict[CellId, list[CellRun]] = {}
    for r in runs:
        by_cell.setdefault(r.cell, []).append(r)
    counted: dict[CellId, CellRun] = {}
    failed: list[CellRun] = []
    for cell, cell_runs in by_cell.items():
        cell_runs.sort(key=lambda r: r.start_time)
        finished = [r for r in cell_runs if r.status == "FINISHED"]
        if finished:
            counted[cell] = finished[-1]
        else:
            failed.append(cell_runs[-1])

    grouped: dict[GroupKey, list[CellRun]] = {}
    for cell in _sorted(list(counted), order):
        grouped.setdefault(cell[:-1], []).append(counted[cell])
    groups = {key: Group(key, rs, _stats(rs)) for key, rs in grouped.items()}

    expected: dict[GroupKey, int] = {}
    missing: list[CellId] = []
    if grid is not None:
        for cell in grid.expected():
            expected[cell[:-1]] = expected.get(cell[:-1], 0) + 1
            if cell not in by_cell:
                missing.append(cell)
    failed = [by_cell[c][-1] for c in _sorted([r.cell for r in failed], order)]
    return Aggregate(groups=groups, failed=failed, missing=missing, expected=expected, order=order, grid=grid)
