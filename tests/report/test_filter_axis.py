"""The filter axis in the report: "robust features or a filter?" in one table. Fabricated cells (no MLflow):
naive and PGD features, each with no filter and with a k-NN filter, under label flip; known outcomes per image."""

from __future__ import annotations

import numpy as np

from benchmark.report.aggregate import SuiteGrid, aggregate
from benchmark.report.paired import pairwise, pairwise_table
from benchmark.report.per_example import Outcome
from benchmark.report.plots import arms_in_order, heatmap
from benchmark.report.source import CellRun
from benchmark.report.tables import full_table, missing_lines

RAW = {
    "name": "fab",
    "seeds": [0],
    "datasets": {"d": {"external": {"name": "synthetic"}, "target": {"name": "synthetic"}}},
    "backbones": {"bb": {"name": "small_cnn"}},
    "defenses": {"naive": {}, "pgd": {}},
    "attacks": {"lf": {"name": "label_flip"}},
    "filters": {"none": {}, "knn": {"name": "knn_label"}},
}
N_TEST = 1000
# poisoned accuracy per arm: the filter repairs naive features more than PGD training does
POISONED = {("naive", "none"): 0.60, ("naive", "knn"): 0.88, ("pgd", "none"): 0.75, ("pgd", "knn"): 0.80}
CLEAN = 0.90


def _correct(rate: float) -> np.ndarray:
    out = np.zeros(N_TEST, bool)
    out[: round(rate * N_TEST)] = True
    return out


def _runs() -> tuple[list[CellRun], dict[str, Outcome]]:
    runs, outcomes = [], {}
    for (defense, filt), acc in POISONED.items():
        rid = f"{defense}-{filt}"
        metrics = {"clean_accuracy": CLEAN, "poisoned_accuracy": acc, "accuracy_drop": CLEAN - acc}
        if filt != "none":
            metrics |= {"filter_poisons_caught": 0.7, "filter_clean_rows_lost": 0.05}
        runs.append(CellRun(rid, "d", "bb", defense, "lf", "0", "FINISHED", len(runs), metrics, filter=filt))
        outcomes[rid] = Outcome(_correct(CLEAN), _correct(acc)[None, :])
    return runs, outcomes


def test_full_table_shows_the_filter_and_what_it_removed() -> None:
    runs, _ = _runs()
    agg = aggregate(runs, SuiteGrid.from_raw(RAW))
    table = full_table(agg)
    assert table.header[:5] == ["dataset", "backbone", "defense", "attack", "filter"]
    assert "poisons caught (%)" in table.header and "clean rows lost (%)" in table.header
    assert [row[2] + "+" + row[4] for row in table.rows] == ["naive+none", "naive+knn", "pgd+none", "pgd+knn"]
    assert table.cells[("d/bb/naive/lf/knn", "filter_poisons_caught")] == "70.0"
    assert table.cells[("d/bb/naive/lf/none", "filter_poisons_caught")] == "–"
    assert not agg.missing and not missing_lines(agg)


def test_unfiltered_suite_has_no_filter_columns() -> None:
    runs, _ = _runs()
    raw = {k: v for k, v in RAW.items() if k != "filters"}
    agg = aggregate([r for r in runs if r.filter == "none"], SuiteGrid.from_raw(raw))
    table = full_table(agg)
    assert "filter" not in table.header and "poisons caught (%)" not in table.header
    assert ("d/bb/pgd/lf", "poisoned_accuracy") in table.cells


def test_paired_table_sets_a_filter_against_robust_features() -> None:
    runs, outcomes = _runs()
    agg = aggregate(runs, SuiteGrid.from_raw(RAW))
    comps = {(c.a, c.b): c for c in pairwise(agg, outcomes) if c.kind == "drop"}
    assert len(comps) == 6  # every pair of the four arms on the one attack
    naive_knn_vs_pgd = comps[("naive+knn", "pgd")]
    # drop(naive+knn) - drop(pgd) = (0.90 - 0.88) - (0.90 - 0.75) = -13 pts: the filter did better here
    assert abs(naive_knn_vs_pgd.est.value - (-0.13)) < 1e-9
    assert naive_knn_vs_pgd.p_adj < 0.05
    rows = pairwise_table(list(comps.values())).rows
    assert any(row[2] == "naive+knn − pgd" for row in rows)


def test_figures_have_one_row_per_arm_in_suite_order() -> None:
    runs, _ = _runs()
    agg = aggregate(runs[::-1], SuiteGrid.from_raw(RAW))  # order of the suite file, not of the runs
    assert arms_in_order(agg, list(agg.groups.values())) == ["naive", "naive+knn", "pgd", "pgd+knn"]
    fig = heatmap(agg)  # rows are arms: four distinct rows, none overwriting another
    assert fig is not None and fig.png.startswith(b"\x89PNG")
