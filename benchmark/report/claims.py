"""The paper's claims, checked on the suite's cells: measured values, the paired test, a verdict, and the n that
would decide an inconclusive one.

- T1: after adversarial poisoning, accuracy orders naive < FGSM < PGD (poisoned accuracy, per test image);
- T2: Poison Frog success orders naive > FGSM > PGD (per target, exact McNemar);
- T3: label flip costs robust features about as much as naive ones: the difference of accuracy drops lies within
  +-``EQUIVALENCE_MARGIN`` (bootstrap two one-sided tests);
- T4: robust features cost clean accuracy: clean accuracy naive > FGSM and naive > PGD (no-attack cells).

An order claim is *supported* when every adjacent pair differs in the claimed direction at Holm-adjusted p < 0.05,
*contradicted* when some pair differs significantly the other way, *inconclusive at this n* otherwise. The claims'
tests are one Holm family. Each claim is checked per (dataset, backbone) and per swept variant of its attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmark.core.stats import (
    ALPHA,
    bootstrap_mean,
    equivalence_p,
    mcnemar_exact,
    n_to_decide,
)
from benchmark.report.aggregate import Aggregate, Group
from benchmark.report.paired import (
    UNIT_NAMES,
    Comparison,
    adjust,
    fmt_effect,
    fmt_p,
    per_unit,
    seed_pairs,
)
from benchmark.report.per_example import Outcome
from benchmark.report.tables import Table
from benchmark.suite import NO_FILTER

EQUIVALENCE_MARGIN = 0.03  # "about as much": accuracy drops within 3 percentage points of each other
ORDER = ("naive", "fgsm", "pgd")
CLAIMS = {
    # id: (attack registry name, per-unit quantity, sign the claim expects for (earlier - later), statement)
    "T1": ("adv_poison", "poisoned", -1, "accuracy after adversarial poisoning orders naive < FGSM < PGD"),
    "T2": ("poison_frog", "success", +1, "Poison Frog success orders naive > FGSM > PGD"),
    "T3": ("label_flip", "drop", 0, "label flip costs robust features about as much as naive ones (±3 pts)"),
    "T4": ("none", "clean", +1, "robust features cost clean accuracy: naive > FGSM, naive > PGD"),
}


@dataclass
class ClaimCheck:
    claim: str
    dataset: str
    backbone: str
    attack: str
    measured: str
    comparisons: list[Comparison] = field(default_factory=list)
    verdict: str = ""
    decide: str = ""


def _defenses(agg: Aggregate, groups: dict[str, Group]) -> list[tuple[str, Group]]:
    """(registry name, group) for naive, FGSM, PGD in that order: the first label of each name."""
    out = []
    for name in ORDER:
        for label, g in groups.items():
            if (agg.grid.name("defense", label) if agg.grid else label) == name:
                out.append((name, g))
                break
    return out


def _pairs(claim: str, present: list[tuple[str, Group]]) -> list[tuple[Group, Group]]:
    """Which cells a claim compares: adjacent defenses for an order, each robust one against naive otherwise."""
    if claim in ("T3", "T4"):
        naive = [g for n, g in present if n == "naive"]
        return [(naive[0], g) for n, g in present if n != "naive"] if naive else []
    return [(present[i][1], present[i + 1][1]) for i in range(len(present) - 1)]


def _compare(claim: str, ga: Group, gb: Group, outcomes: dict[str, Outcome]) -> Comparison | None:
    _, kind, _, _ = CLAIMS[claim]
    pairs = seed_pairs(ga, gb, outcomes)
    d = per_unit(kind, pairs)
    if len(d) == 0:
        return None
    if claim == "T3":  # robust minus naive drop: equivalence within the margin
        d = -d
        est = bootstrap_mean(d)
        p_within, p_beyond = equivalence_p(d, EQUIVALENCE_MARGIN)
        p = p_within if abs(est.value) < EQUIVALENCE_MARGIN else p_beyond
        return Comparison(kind, gb.key, gb.label("defense"), ga.label("defense"), est, p)
    est = bootstrap_mean(d)
    if kind == "success":
        b, c = int((d > 0).sum()), int((d < 0).sum())
        return Comparison(kind, ga.key, ga.label("defense"), gb.label("defense"), est, mcnemar_exact(b, c), (b, c))
    return Comparison(kind, ga.key, ga.label("defense"), gb.label("defense"), est, est.p)


def _measured(claim: str, present: list[tuple[str, Group]]) -> str:
    metric = {"T1": "poisoned_accuracy", "T2": "attack_success_rate", "T3": "accuracy_drop",
              "T4": "clean_accuracy"}[claim]
    parts = []
    for name, g in present:
        s = g.stats.get(metric)
        if s is not None:
            parts.append(f"{name} {100 * s.mean:.1f}{' pts' if metric == 'accuracy_drop' else '%'}")
    return ", ".join(parts)


def _verdict(check: ClaimCheck, family_size: int) -> None:
    claim = check.claim
    comps = check.comparisons
    significant = [c for c in comps if c.p_adj < ALPHA]
    alpha = ALPHA / max(family_size, 1)  # the level the first Holm step asks for: the conservative n
    if claim == "T3":
        within = [c for c in significant if abs(c.est.value) < EQUIVALENCE_MARGIN]
        beyond = [c for c in significant if abs(c.est.value) >= EQUIVALENCE_MARGIN]
        check.verdict = ("contradicted" if beyond else "supported" if len(within) == len(comps)
                         else "inconclusive at this n")
        margin = EQUIVALENCE_MARGIN
    else:
        sign = CLAIMS[claim][2]
        wrong = [c for c in significant if c.est.value * sign < 0]
        right = [c for c in significant if c.est.value * sign > 0]
        check.verdict = ("contradicted" if wrong else "supported" if len(right) == len(comps)
                         else "inconclusive at this n")
        margin = 0.0
    if check.verdict.startswith("inconclusive"):
        needs = []
        for c in comps:
            if c in significant:
                continue
            n = n_to_decide(c.est.value, c.est.se, c.est.n, alpha=alpha, margin=margin)
            what = UNIT_NAMES[c.kind]
            needs.append(f"{c.a} vs {c.b}: " + ("no n (no effect observed)" if math.isinf(n) else
                                                 "unknown (no spread)" if math.isnan(n) else f"≈ {n:,} {what}"))
        check.decide = "; ".join(needs)


def check_claims(agg: Aggregate, outcomes: dict[str, Outcome]) -> list[ClaimCheck]:
    slots: dict[tuple[str, str, str], dict[str, Group]] = {}
    for key, group in agg.groups.items():
        if group.label("filter") == NO_FILTER:  # the paper's claims are about unfiltered heads
            slots.setdefault((key[0], key[1], key[3]), {})[key[2]] = group
    checks: list[ClaimCheck] = []
    for (dataset, backbone, attack), groups in slots.items():
        name = agg.grid.name("attack", attack) if agg.grid else attack
        for claim, (attack_name, *_rest) in CLAIMS.items():
            if name != attack_name:
                continue
            present = _defenses(agg, groups)
            comps = [c for ga, gb in _pairs(claim, present) if (c := _compare(claim, ga, gb, outcomes))]
            if comps:
                checks.append(ClaimCheck(claim, dataset, backbone, attack, _measured(claim, present), comps))
    family = [c for check in checks for c in check.comparisons]
    adjust(family)
    for check in checks:
        _verdict(check, len(family))
    return sorted(checks, key=lambda c: (c.claim, c.dataset, c.backbone))


def claims_table(checks: list[ClaimCheck]) -> Table:
    rows = []
    for ch in checks:
        effects = "; ".join(f"{c.a} − {c.b}: {fmt_effect(c.est)}" for c in ch.comparisons)
        ps = "; ".join(fmt_p(c.p_adj) for c in ch.comparisons)
        n = ", ".join(sorted({f"{c.est.n} {UNIT_NAMES[c.kind]}" for c in ch.comparisons}))
        rows.append([ch.claim, f"{ch.dataset}/{ch.backbone}", ch.attack, ch.measured, ch.comparisons[0].test,
                     effects, n, ps, ch.verdict, ch.decide])
    header = ["claim", "dataset/backbone", "cell", "measured", "test", "effect (pts) [95% CI]", "n", "p (Holm)",
              "verdict", "n that would decide"]
    note = (
        "; ".join(f"{k}: {v[3]}" for k, v in CLAIMS.items())
        + ". Order claims: supported when each adjacent pair differs in the claimed direction at Holm-adjusted "
        "p < 0.05 (Holm over every test of this table), contradicted when one differs the other way. T3: two "
        "one-sided bootstrap tests against ±3 pts. n that would decide: the number of units at which the test "
        "would have 80% power at level 0.05 / (tests in the table) if the observed effect were the true one."
    )
    return Table("The paper's claims, checked", header, rows, note=note, anchor="claims")
