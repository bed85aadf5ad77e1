"""Backdoor cells in the report: the trigger-alone baseline column, and paired comparisons over the victim images
both cells counted (fabricated cells, no MLflow), read back from the cell's own ``backdoor_hits.npz``."""

from __future__ import annotations

import numpy as np
import torch

from benchmark.cell.backdoor import TriggeredHits, hits_npz, load_triggered_rates
from benchmark.report.aggregate import SuiteGrid, aggregate
from benchmark.report.paired import pairwise
from benchmark.report.per_example import Outcome
from benchmark.report.source import CellRun
from benchmark.report.tables import full_table

RAW = {
    "name": "fab",
    "seeds": [0],
    "datasets": {"d": {"external": {"name": "synthetic"}, "target": {"name": "synthetic"}}},
    "backbones": {"bb": {"name": "small_cnn"}},
    "defenses": {"naive": {}, "pgd": {}},
    "attacks": {"htb": {"name": "art_hidden_trigger"}},
}
N_VICTIMS = 200


def _hits(rate: float, counted: int) -> TriggeredHits:
    """4 trials; the first ``rate`` share of the victim images is turned in every trial."""
    rows = torch.arange(100, 100 + N_VICTIMS)
    turned = torch.arange(N_VICTIMS) < round(rate * N_VICTIMS)
    poisoned = turned.expand(4, -1).clone()
    return TriggeredHits(rows, torch.arange(N_VICTIMS) < counted, torch.zeros_like(poisoned), poisoned)


def test_triggered_rates_read_back_only_counted_images() -> None:
    rates = load_triggered_rates(hits_npz(_hits(0.5, counted=150)))
    assert sorted(rates) == list(range(100, 250))  # the 150 counted rows, by test row
    assert sum(rates.values()) == 100.0  # rows 100..199 turned in every trial


def test_backdoor_groups_pair_over_common_victim_images_and_show_the_baseline() -> None:
    runs, outcomes = [], {}
    for defense, rate, counted in (("naive", 0.6, 180), ("pgd", 0.1, 150)):
        rid = f"{defense}-htb"
        metrics = {"clean_accuracy": 0.9, "poisoned_accuracy": 0.9, "accuracy_drop": 0.0,
                   "attack_success_rate": rate, "backdoor_success_clean_head": 0.05}
        runs.append(CellRun(rid, "d", "bb", defense, "htb", "0", "FINISHED", len(runs), metrics))
        clean = np.ones(400, bool)
        outcomes[rid] = Outcome(clean, clean[None, :], triggered=load_triggered_rates(hits_npz(_hits(rate, counted))))
    agg = aggregate(runs, SuiteGrid.from_raw(RAW))
    table = full_table(agg)
    assert "trigger alone (%)" in table.header
    assert table.cells[("d/bb/pgd/htb", "backdoor_success_clean_head")] == "5.0"
    (comp,) = [c for c in pairwise(agg, outcomes) if c.kind == "triggered"]
    # the 150 images both counted: naive turns 120 of them (rows 0..119), PGD 20: 100/150 = +66.7 pts
    assert comp.est.n == 150 and abs(comp.est.value - 100 / 150) < 1e-9
    assert comp.p_adj < 0.001 and comp.test == "paired bootstrap, victim images"
