"""Budget curves, budget to break, paired comparisons and the claims' verdicts, on fabricated cells whose
per-target and per-test-image outcomes are known (no MLflow: the aggregate is built from CellRun objects)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.report.aggregate import SuiteGrid, aggregate
from benchmark.report.claims import check_claims, claims_table
from benchmark.report.curves import break_table, curve_figure, families
from benchmark.report.paired import pairwise, pairwise_table
from benchmark.report.per_example import Outcome
from benchmark.report.source import CellRun

RAW = {
    "name": "fab",
    "seeds": [0],
    "datasets": {"d": {"external": {"name": "synthetic"}, "target": {"name": "synthetic"}}},
    "backbones": {"bb": {"name": "small_cnn"}},
    "defenses": {"naive": {}, "fgsm": {}, "pgd": {}},
    "attacks": {
        "none": {},
        "pf": {"name": "poison_frog", "sweep": {"num_poisons": [1, 5, 25]}},
        "ad": {"name": "adv_poison"},
        "lf": {"name": "label_flip"},
    },
}
N_TEST, N_TARGETS = 2000, 30
# successes out of 30 targets per (defense, poisons); targets 0..k-1 succeed, so the sets are nested
PF = {"naive": {1: 0, 5: 9, 25: 27}, "fgsm": {1: 0, 5: 3, 25: 14}, "pgd": {1: 0, 5: 0, 25: 1}}
AD_ACC = {"naive": 0.1, "fgsm": 0.5, "pgd": 0.9}
CLEAN = {"naive": 0.95, "fgsm": 0.92, "pgd": 0.90}


def _correct(rate: float, offset: int = 0) -> np.ndarray:
    out = np.zeros(N_TEST, bool)
    k = round(rate * N_TEST)
    out[(np.arange(k) + offset) % N_TEST] = True
    return out


def _cells(pf: dict[str, dict[int, int]]) -> tuple[list[CellRun], dict[str, Outcome]]:
    runs, outcomes = [], {}

    def add(defense: str, attack: str, metrics: dict[str, float], outcome: Outcome, sweep: dict[str, str]) -> None:
        rid = f"{defense}-{attack}"
        runs.append(CellRun(rid, "d", "bb", defense, attack, "0", "FINISHED", len(runs), metrics, sweep=sweep))
        outcomes[rid] = outcome

    for defense in RAW["defenses"]:
        clean = _correct(CLEAN[defense])
        acc = float(clean.mean())
        add(defense, "none", {"clean_accuracy": acc, "poisoned_accuracy": acc, "accuracy_drop": 0.0},
            Outcome(clean, clean[None, :]), {})
        for k, wins in pf[defense].items():
            targets = {t: t < wins for t in range(N_TARGETS)}
            add(defense, f"pf[num_poisons={k}]",
                {"clean_accuracy": acc, "poisoned_accuracy": acc, "accuracy_drop": 0.0,
                 "attack_success_rate": wins / N_TARGETS, "attack_successes": wins},
                Outcome(clean, np.repeat(clean[None, :], N_TARGETS, 0), targets),
                {"sweep.attack.num_poisons": str(k), "attack.base": "pf"})
        ad = _correct(AD_ACC[defense])
        add(defense, "ad", {"clean_accuracy": acc, "poisoned_accuracy": float(ad.mean()),
                            "accuracy_drop": acc - float(ad.mean())}, Outcome(clean, ad[None, :]), {})
        # label flip: 2% of the images turn wrong, different images for each defense
        lf = clean.copy()
        lf[np.flatnonzero(clean)[40 * list(RAW["defenses"]).index(defense):][:40]] = False
        add(defense, "lf", {"clean_accuracy": acc, "poisoned_accuracy": float(lf.mean()),
                            "accuracy_drop": acc - float(lf.mean())}, Outcome(clean, lf[None, :]), {})
    return runs, outcomes


@pytest.fixture
def fab():
    runs, outcomes = _cells(PF)
    # Wilson intervals per group, as a one-seed cell carries them
    for r in runs:
        if "attack_successes" in r.metrics:
            from benchmark.core.stats import wilson_interval

            lo, hi = wilson_interval(int(r.metrics["attack_successes"]), N_TARGETS)
            r.metrics.update(attack_success_ci_low=lo, attack_success_ci_high=hi)
    return aggregate(runs, SuiteGrid.from_raw(RAW)), outcomes


def _verdicts(checks) -> dict[tuple[str, str], str]:
    return {(c.claim, c.attack): c.verdict for c in checks}


def test_claims_verdicts(fab):
    agg, outcomes = fab
    checks = check_claims(agg, outcomes)
    v = _verdicts(checks)
    assert v[("T1", "ad")] == "supported"
    assert v[("T2", "pf[num_poisons=25]")] == "supported"
    assert v[("T2", "pf[num_poisons=1]")] == "inconclusive at this n"  # no success anywhere
    assert v[("T2", "pf[num_poisons=5]")] == "inconclusive at this n"  # 9 vs 3 vs 0 of 30: not decisive
    assert v[("T3", "lf")] == "supported"  # 2 pts each, within +-3
    assert v[("T4", "none")] == "supported"
    five = next(c for c in checks if c.attack == "pf[num_poisons=5]")
    assert "targets" in five.decide and "≈" in five.decide
    one = next(c for c in checks if c.attack == "pf[num_poisons=1]")
    assert "no effect observed" in one.decide
    t2 = next(c for c in checks if c.attack == "pf[num_poisons=25]")
    assert [c.discordant for c in t2.comparisons] == [(13, 0), (13, 0)]  # naive 27 vs fgsm 14; fgsm 14 vs pgd 1
    assert all(0 < c.p_adj < 0.05 for c in t2.comparisons)
    table = claims_table(checks)
    assert len(table.rows) == len(checks) and table.header[8] == "verdict"


def test_claims_are_checked_only_on_real_data(fab):
    from benchmark.report.answer import claims_blocks, generated_datasets
    from benchmark.report.document import Text
    from benchmark.report.tables import Table

    agg, outcomes = fab
    checks = check_claims(agg, outcomes)
    assert generated_datasets(RAW) == {"d"}  # RAW's data is the synthetic dataset
    (heading, why) = claims_blocks(checks, generated_datasets(RAW))
    assert heading.text == "Claims" and isinstance(why, Text) and "generated" in why.text
    real = claims_blocks(checks, set())  # the same cells, said to be real images
    assert isinstance(real[1], Table) and len(real[1].rows) == len(checks)


def test_a_reversed_order_is_contradicted():
    reversed_pf = {"naive": PF["pgd"], "fgsm": PF["fgsm"], "pgd": PF["naive"]}
    runs, outcomes = _cells(reversed_pf)
    checks = check_claims(aggregate(runs, SuiteGrid.from_raw(RAW)), outcomes)
    assert _verdicts(checks)[("T2", "pf[num_poisons=25]")] == "contradicted"


def test_pairwise_comparisons_are_paired_and_holm_adjusted(fab):
    agg, outcomes = fab
    comps = pairwise(agg, outcomes)
    pf25 = [c for c in comps if c.key[3] == "pf[num_poisons=25]" and c.kind == "success"]
    naive_pgd = next(c for c in pf25 if (c.a, c.b) == ("naive", "pgd"))
    assert naive_pgd.discordant == (26, 0) and naive_pgd.est.value == pytest.approx(26 / 30)
    assert naive_pgd.p_adj >= naive_pgd.p
    ad = next(c for c in comps if c.key[3] == "ad" and (c.a, c.b) == ("naive", "pgd") and c.kind == "drop")
    # drop naive 0.85 vs pgd 0.00: +85 pts
    assert ad.est.value == pytest.approx((0.95 - 0.1) - (0.90 - 0.9), abs=1e-9)
    assert not any(c.kind == "drop_seeds" for c in comps)  # one seed: nothing to bootstrap over seeds
    assert len(pairwise_table(comps).rows) == len(comps)


def test_budget_curves_and_budget_to_break(fab):
    agg, outcomes = fab
    fams = families(agg, outcomes)
    assert [(f.attack, f.param, f.targeted) for f in fams] == [("pf", "num_poisons", True)]
    line = fams[0].lines[("d", "bb", "naive")]
    assert [p.x for p in line] == [1, 5, 25] and line[-1].stat.interval == "wilson"
    table = break_table(agg, fams)
    rows = {r[2]: r for r in table.rows}
    assert rows["naive"][4].startswith("≈ ") and 5 < float(rows["naive"][4][2:]) < 25
    assert rows["pgd"][4] == "> 25"
    assert curve_figure(agg, fams[0]).png[:4] == b"\x89PNG"
