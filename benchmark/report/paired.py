"""Paired comparisons of arms (a defense, with a poison filter or none) on the same attack: the same targets and the
same test images in both cells.

- success (targeted attacks): exact McNemar test on the targets both cells attacked (a target is a test row; the
  clean-head-correct filter can leave a defense without some), effect = difference in success rate with a paired
  bootstrap interval over those targets;
- accuracy drop over test images: per image, (clean - poisoned correctness) in cell A minus the same in cell B,
  bootstrapped over images (seeds pooled, each seed pairing its own cells);
- triggered success (backdoors): per victim image counted in both cells, the share of trials whose trigger turned
  it, A minus B, bootstrapped over those images (seeds pooled);
- accuracy drop over seeds: the per-seed differences of ``accuracy_drop``, bootstrapped over seeds (2+ seeds).

Every p-value of the table is adjusted by Holm's method over the table's comparisons (one family).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from benchmark.core.stats import Estimate, bootstrap_mean, holm, mcnemar_exact
from benchmark.report.aggregate import Aggregate, Group, GroupKey
from benchmark.report.per_example import Outcome
from benchmark.report.tables import Table

UNIT_NAMES = {"success": "targets", "triggered": "victim images", "drop": "test images", "drop_seeds": "seeds",
              "poisoned": "test images", "clean": "test images"}
TESTS = {
    "success": "exact McNemar",
    "triggered": "paired bootstrap, victim images",
    "drop": "paired bootstrap, test images",
    "drop_seeds": "paired bootstrap, seeds",
    "poisoned": "paired bootstrap, test images",
    "clean": "paired bootstrap, test images",
}


@dataclass
class Comparison:
    kind: str  # success | drop | drop_seeds | poisoned | clean
    key: GroupKey  # group A's (dataset, backbone, defense, attack, filter)
    a: str  # arms: defense labels, ``+filter`` when filtered
    b: str
    est: Estimate  # effect A - B, in rate units
    p: float  # raw p-value (McNemar's for success)
    discordant: tuple[int, int] | None = None  # success: (A only, B only)
    p_adj: float = math.nan

    @property
    def test(self) -> str:
        return TESTS[self.kind]


def seed_pairs(ga: Group, gb: Group, outcomes: dict[str, Outcome]) -> list[tuple[Outcome, Outcome]]:
    """The two groups' outcomes seed by seed, where both seeds have them and the tasks have the same images."""
    by_seed = {r.seed: outcomes.get(r.run_id) for r in gb.runs}
    out = []
    for r in ga.runs:
        oa, ob = outcomes.get(r.run_id), by_seed.get(r.seed)
        if oa is not None and ob is not None and len(oa.clean) == len(ob.clean):
            out.append((oa, ob))
    return out


def per_unit(kind: str, pairs: list[tuple[Outcome, Outcome]]) -> np.ndarray:
    """Per-unit differences A - B, pooled over seeds: success per common target, or a per-image quantity."""
    parts = []
    for oa, ob in pairs:
        if kind == "success":
            common = sorted(set(oa.targets) & set(ob.targets))
            parts.append(np.array([float(oa.targets[t]) - float(ob.targets[t]) for t in common]))
        elif kind == "triggered":
            common = sorted(set(oa.triggered) & set(ob.triggered))
            parts.append(np.array([oa.triggered[r] - ob.triggered[r] for r in common]))
        elif kind == "drop":
            parts.append((oa.clean - oa.poisoned_mean) - (ob.clean - ob.poisoned_mean))
        elif kind == "poisoned":
            parts.append(oa.poisoned_mean - ob.poisoned_mean)
        elif kind == "clean":
            parts.append(oa.clean.astype(float) - ob.clean.astype(float))
    return np.concatenate(parts) if parts else np.zeros(0)


def compare(kind: str, ga: Group, gb: Group, outcomes: dict[str, Outcome]) -> Comparison | None:
    """One paired comparison of group A against group B (same dataset, backbone, attack); None without data."""
    if kind == "drop_seeds":
        b_drop = {r.seed: r.metrics.get("accuracy_drop") for r in gb.runs}
        d = [r.metrics["accuracy_drop"] - b_drop[r.seed] for r in ga.runs
             if r.seed in b_drop and b_drop[r.seed] is not None and "accuracy_drop" in r.metrics]
        if len(d) < 2:
            return None
        est = bootstrap_mean(np.array(d))
        return Comparison(kind, ga.key, ga.arm, gb.arm, est, est.p)
    d = per_unit(kind, seed_pairs(ga, gb, outcomes))
    if len(d) == 0:
        return None
    est = bootstrap_mean(d)
    if kind != "success":
        return Comparison(kind, ga.key, ga.arm, gb.arm, est, est.p)
    b, c = int((d > 0).sum()), int((d < 0).sum())
    return Comparison(kind, ga.key, ga.arm, gb.arm, est, mcnemar_exact(b, c), (b, c))


def adjust(comparisons: list[Comparison]) -> None:
    """Holm-adjust the p-values of one family of comparisons, in place."""
    for comp, p in zip(comparisons, holm([c.p for c in comparisons]), strict=True):
        comp.p_adj = p


def pairwise(agg: Aggregate, outcomes: dict[str, Outcome]) -> list[Comparison]:
    """Every pair of arms on every attack of each (dataset, backbone), Holm-adjusted as one family."""
    out: list[Comparison] = []
    slots: dict[tuple[str, str, str], list[Group]] = {}
    for key, group in agg.groups.items():
        if agg.grid is not None and agg.grid.name("attack", key[3]) == "none":
            continue
        slots.setdefault((key[0], key[1], key[3]), []).append(group)
    for groups in slots.values():
        for ga, gb in itertools.combinations(groups, 2):
            kinds = [success_kind(ga)] if "attack_success_rate" in ga.stats else []
            for kind in [*kinds, "drop", "drop_seeds"]:
                comp = compare(kind, ga, gb, outcomes)
                if comp is not None:
                    out.append(comp)
    adjust(out)
    return out


def success_kind(group: Group) -> str:
    """How a group's success rate pairs: per target (targeted attacks) or per triggered victim image (backdoors)."""
    return "triggered" if "backdoor_success_clean_head" in group.stats else "success"


def fmt_effect(est: Estimate) -> str:
    return f"{100 * est.value:+.1f} [{100 * est.low:+.1f}, {100 * est.high:+.1f}]"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def pairwise_table(comparisons: list[Comparison]) -> Table:
    rows = []
    for c in comparisons:
        dataset, backbone, _, attack, _ = c.key
        what = "success rate" if c.kind in ("success", "triggered") else "accuracy drop"
        counts = f"{c.discordant[0]} vs {c.discordant[1]}" if c.discordant else ""
        rows.append([f"{dataset}/{backbone}", attack, f"{c.a} − {c.b}", what, fmt_effect(c.est),
                     f"{c.est.n} {UNIT_NAMES[c.kind]}", c.test, counts, fmt_p(c.p), fmt_p(c.p_adj)])
    header = ["dataset/backbone", "attack", "arms A − B (defense+filter)", "effect on", "A − B (pts) [95% CI]", "n",
              "test", "discordant (A only vs B only)", "p", "p (Holm)"]
    note = (
        "Paired: the same targets (McNemar) or test images (bootstrap) in both cells, seed by seed. Effect: "
        "arm A minus arm B in percentage points, percentile bootstrap 95% interval (4,000 resamples, not "
        "adjusted). p (Holm): Holm's step-down adjustment over every comparison of this table. See docs/metrics.md."
    )
    return Table("Paired comparisons of defenses and filters", header, rows, note=note, anchor="paired")
