"""The report's tables as plain data (title, header, rows of strings), built from an Aggregate.

- one published-vs-measured table per reference table id (``T1``, ``T2``, ...) in the paper's layout: rows are
  defenses, columns datasets (or attacks, where datasets alone would put two references in one cell), each
  column pair "measured | published"; a table whose references mix metrics is a list instead;
- the full table: every group (expected or run) with the main metrics;
- the failed cells (with their error) and the missing ones.

Rates and accuracies print in percent; a measured value is "mean ± half-width of the 95% interval (n=seeds)".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmark.report.aggregate import GROUP_AXES, Aggregate, Group, GroupKey, Stat
from benchmark.suite import NO_FILTER, ReferenceSpec

PERCENT = {
    "clean_accuracy",
    "poisoned_accuracy",
    "accuracy_drop",
    "attack_success_rate",
    "robust_accuracy",
    "external_accuracy",
    "filter_poisons_caught",
    "filter_clean_rows_lost",
    "backdoor_success_clean_head",
}
# metric -> (scale, decimals, unit shown in headers)
UNITS: dict[str, tuple[float, int, str]] = {
    **{m: (100.0, 1, "%") for m in PERCENT},
    "accuracy_drop": (100.0, 1, "pts"),
    "perturbation_linf_max": (255.0, 1, "/255"),
    "perturbation_linf_mean": (255.0, 1, "/255"),
    "attack_seconds": (1.0, 1, "s"),
    "train_seconds": (1.0, 1, "s"),
    "cell_seconds": (1.0, 1, "s"),
}
FULL_COLUMNS = (
    ("clean_accuracy", "clean"),
    ("poisoned_accuracy", "poisoned"),
    ("accuracy_drop", "drop"),
    ("attack_success_rate", "success"),
    ("robust_accuracy", "robust"),
    ("external_accuracy", "external"),
    ("perturbation_linf_max", "L∞ max"),
    ("attack_seconds", "attack"),
    ("cell_seconds", "cell"),
)
# what a poison filter removed (docs/metrics.md, "Poison filters"): shown when a suite has a filter axis
FILTER_COLUMNS = (
    ("filter_poisons_caught", "poisons caught"),
    ("filter_clean_rows_lost", "clean rows lost"),
)
# backdoors: the trigger's success on the clean head, the baseline of their success column; shown when present
BACKDOOR_COLUMNS = (("backdoor_success_clean_head", "trigger alone"),)
DASH = "–"


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    anchor: str = ""
    cells: dict[tuple[str, str], str] = field(default_factory=dict)  # (row, column) -> text, for lookups


def unit(metric: str) -> str:
    return UNITS.get(metric, (1.0, 3, ""))[2]


def fmt_stat(stat: Stat | None, metric: str, group_n: int | None = None) -> str:
    """'24.3 ± 1.2 (n=3)'; one seed: '24.3 (n=1)', or a success rate's Wilson interval '85.0 [76.7, 90.7] (n=1)'.
    ``(n=...)`` is left out when it equals ``group_n`` (a table that shows the seed count in its own column)."""
    if stat is None or stat.n == 0:
        return DASH
    scale, digits, _ = UNITS.get(metric, (1.0, 3, ""))
    n = "" if stat.n == group_n else f" (n={stat.n})"
    mean = f"{stat.mean * scale:.{digits}f}"
    if stat.interval == "wilson":
        return f"{mean} [{stat.low * scale:.{digits}f}, {stat.high * scale:.{digits}f}]{n}"
    if stat.n > 1:
        return f"{mean} ± {(stat.high - stat.mean) * scale:.{digits}f}{n}"
    return f"{mean}{n}"


def fmt_value(value: float, metric: str) -> str:
    """A published number in the same unit as the measured one (0.24 -> '24')."""
    scale, digits, _ = UNITS.get(metric, (1.0, 3, ""))
    text = f"{value * scale:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _metric_title(metric: str) -> str:
    u = unit(metric)
    return f"{metric} ({u})" if u else metric


# ---------------------------------------------------------------------------------------------------------------
# published vs measured


def _measured(agg: Aggregate, ref: ReferenceSpec) -> str:
    groups = agg.matching(ref.match)
    if not groups:
        return "not run" if not agg.expected_matching(ref.match) else "missing"
    if len(groups) == 1:
        return fmt_stat(groups[0].stats.get(ref.metric), ref.metric)
    # several groups match (a reference without a backbone, say): name what tells them apart
    varying = [a for a in GROUP_AXES if len({g.label(a) for g in groups}) > 1]
    return "; ".join(
        f"{'/'.join(g.label(a) for a in varying)}: {fmt_stat(g.stats.get(ref.metric), ref.metric)}" for g in groups
    )


def _row_label(agg: Aggregate, ref: ReferenceSpec, by_name: bool) -> str:
    """The defense of a reference: its registry name (``naive_svhn`` shows as ``naive``, the paper's row) or label."""
    label = str(ref.match.get("defense", "any"))
    return agg.grid.name("defense", label) if by_name and agg.grid else label


def _layout(agg: Aggregate, refs: list[ReferenceSpec]) -> tuple[str, bool] | None:
    """(column axis, rows by registry name) of a grid in which each reference has its own cell; None: a list.
    Columns are datasets where that works (the paper's layout), else attacks, else backbones."""
    if len({r.metric for r in refs}) > 1:
        return None
    for col in ("dataset", "attack", "backbone"):
        for by_name in (True, False):
            cells = [(_row_label(agg, r, by_name), str(r.match.get(col, "any"))) for r in refs]
            if len(set(cells)) == len(cells):
                return col, by_name
    return None


def reference_tables(agg: Aggregate) -> list[Table]:
    """One table per reference table id, in the order the ids first appear in the suite."""
    refs = agg.grid.references if agg.grid else []
    by_table: dict[str, list[ReferenceSpec]] = {}
    for ref in refs:
        by_table.setdefault(ref.table or "references", []).append(ref)
    return [_reference_table(agg, tid, rs) for tid, rs in by_table.items()]


def _reference_table(agg: Aggregate, tid: str, refs: list[ReferenceSpec]) -> Table:
    sources = ", ".join(dict.fromkeys(r.source for r in refs if r.source))
    layout = _layout(agg, refs)
    if layout is None:
        header = ["cell", "metric", "measured", "published", "source"]
        rows = []
        for r in refs:
            where = "/".join(str(r.match[a]) for a in GROUP_AXES if a in r.match)
            rows.append([where, _metric_title(r.metric), _measured(agg, r), fmt_value(r.value, r.metric), r.source])
        return Table(f"{tid}", header, rows, note=sources, anchor=f"table-{tid}")
    col_axis, by_name = layout
    metric = refs[0].metric
    row_names = list(dict.fromkeys(_row_label(agg, r, by_name) for r in refs))
    col_names = list(dict.fromkeys(str(r.match.get(col_axis, "any")) for r in refs))
    cells = {(_row_label(agg, r, by_name), str(r.match.get(col_axis, "any"))): r for r in refs}
    header = ["defense"] + [f"{c} {part}" for c in col_names for part in ("measured", "published")]
    rows, lookup = [], {}
    for row in row_names:
        line = [row]
        for col in col_names:
            ref = cells.get((row, col))
            measured = _measured(agg, ref) if ref else ""
            published = fmt_value(ref.value, ref.metric) if ref else ""
            lookup[(row, col)] = measured
            line += [measured, published]
        rows.append(line)
    title = f"{tid}: {_metric_title(metric)}"
    return Table(title, header, rows, note=sources, anchor=f"table-{tid}", cells=lookup)


# ---------------------------------------------------------------------------------------------------------------
# every group


def full_table(agg: Aggregate) -> Table:
    """Every group, one row; the filter column and what the filters removed only when a cell had a filter, the
    trigger's clean-head success only when a cell had a backdoor."""
    keys = agg.all_keys()
    filtered = any(dict(zip(GROUP_AXES, k, strict=True))["filter"] != NO_FILTER for k in keys)
    axes = GROUP_AXES if filtered else tuple(a for a in GROUP_AXES if a != "filter")
    backdoors = any("backdoor_success_clean_head" in g.stats for g in agg.groups.values())
    columns = FULL_COLUMNS[:4] + (BACKDOOR_COLUMNS if backdoors else ()) + FULL_COLUMNS[4:]
    columns += FILTER_COLUMNS if filtered else ()
    header = [*axes, "seeds"] + [f"{short} ({unit(m)})" if unit(m) else short for m, short in columns]
    rows, lookup = [], {}
    for key in keys:
        group: Group | None = agg.groups.get(key)
        n = group.n if group else 0
        expected = agg.expected.get(key)
        seeds = f"{n}/{expected}" if expected else str(n)
        labels = [v for a, v in zip(GROUP_AXES, key, strict=True) if a in axes]
        line = [*labels, seeds]
        for metric, _ in columns:
            text = fmt_stat(group.stats.get(metric) if group else None, metric, group_n=n)
            lookup[("/".join(labels), metric)] = text
            line.append(text)
        rows.append(line)
    note = (
        "Mean over seeds ± half-width of the 95% t-interval (seeds: finished / expected; a value over fewer seeds "
        "says its n); one seed: its value, and a "
        "targeted attack's Wilson 95% interval over its trials. drop = clean - poisoned accuracy; L∞ max in "
        "units of 1/255; times in seconds."
    )
    return Table("", header, rows, note=note, anchor="all-groups", cells=lookup)


def failed_table(agg: Aggregate) -> Table:
    rows = [[r.title, r.status, _one_line(r.error) or "(no error recorded)", r.run_id] for r in agg.failed]
    return Table("", ["cell", "status", "error", "run"], rows, anchor="failed")


def missing_lines(agg: Aggregate) -> list[str]:
    """Missing cells grouped over seeds: 'cifar/vgg13/pgd/ad: seeds 1, 2'."""
    by_group: dict[GroupKey, list[str]] = {}
    for cell in agg.missing:
        by_group.setdefault(cell[:-1], []).append(cell[-1])
    return [f"{group_path(k)}: seed{'s' if len(v) > 1 else ''} {', '.join(v)}" for k, v in by_group.items()]


def group_path(key: GroupKey) -> str:
    """'cifar/vgg13/pgd/ad', and '/knn' after it when the group has a filter."""
    return "/".join(key if key[-1] != NO_FILTER else key[:-1])


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def to_markdown(table: Table) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = [f"| {' | '.join(cell(h) for h in table.header)} |", f"|{'|'.join('---' for _ in table.header)}|"]
    out += [f"| {' | '.join(cell(c) for c in row)} |" for row in table.rows]
    return "\n".join(out)
