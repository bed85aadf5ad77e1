"""The report, on runs fabricated straight into a temporary MLflow store in the layout of benchmark.store.tracking.

Grid: datasets d1, d2 x backbone bb x defenses naive, pgd x attacks none, pf x seeds 0, 1 = 16 cells, of which
d2/bb/pgd/none/seed1 FAILED, d2/bb/pgd/pf/seed1 never ran (missing), and d1/bb/naive/none/seed0 FAILED once and then
FINISHED on resume (it counts as finished). Each metric is a known function of the cell, so every table cell can
be checked against the mean over seeds computed here.
"""

from __future__ import annotations

import io
import math
import statistics
import time
from pathlib import Path

import pytest
import yaml

from benchmark.cli.commands import main as cli_main
from benchmark.core.errors import BenchmarkError
from benchmark.report import build_report
from benchmark.report.aggregate import Stat
from benchmark.report.tables import fmt_stat

SUITE = "fab"
DATASETS, DEFENSES, ATTACKS, SEEDS = ("d1", "d2"), ("naive", "pgd"), ("none", "pf"), (0, 1)
FAILED_CELL = ("d2", "bb", "pgd", "none", "1")
MISSING_CELL = ("d2", "bb", "pgd", "pf", "1")  # runs written without a filter tag, as before filters
RESUMED_CELL = ("d1", "bb", "naive", "none", "0")
SUITE_RAW = {
    "name": SUITE,
    "seeds": list(SEEDS),
    "datasets": {d: {"external": {"name": "synthetic"}, "target": {"name": "synthetic"}} for d in DATASETS},
    "backbones": {"bb": {"name": "small_cnn"}},
    "defenses": {"naive": {}, "pgd": {}},
    "attacks": {"none": {}, "pf": {"name": "poison_frog"}},
    "references": [
        {"table": "T1", "source": "paper Table 1", "metric": "poisoned_accuracy", "value": 0.24,
         "match": {"dataset": "d1", "backbone": "bb", "defense": "naive", "attack": "none"}},
        {"table": "T1", "source": "paper Table 1", "metric": "poisoned_accuracy", "value": 0.34,
         "match": {"dataset": "d2", "backbone": "bb", "defense": "pgd", "attack": "none"}},
        {"table": "T2", "source": "paper Table 2", "metric": "attack_success_rate", "value": 0.85,
         "match": {"dataset": "d2", "backbone": "bb", "defense": "pgd", "attack": "pf"}},
    ],
}


def poisoned(d: str, df: str, at: str, seed: int) -> float:
    return 0.5 + 0.1 * DATASETS.index(d) - 0.2 * DEFENSES.index(df) - 0.05 * ATTACKS.index(at) + 0.03 * seed


def _png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, [[0.0, 1.0], [1.0, 0.0]], format="png")
    return buf.getvalue()


def _child(client, exp: str, parent: str, cell: tuple[str, ...], status: str, art_dir: Path) -> str:
    from mlflow.entities import Metric

    d, bb, df, at, seed = cell
    tags = {"mlflow.parentRunId": parent, "benchmark.role": "cell", "benchmark.cell_key": "-".join(cell),
            "dataset": d, "backbone": bb, "defense": df, "attack": at, "seed": seed}
    run = client.create_run(exp, run_name="/".join(cell), tags=tags)
    rid = run.info.run_id
    if status == "FAILED":
        client.set_tag(rid, "benchmark.error", "RuntimeError: boom in training")
    else:
        s = int(seed)
        clean = 0.9 - 0.2 * DEFENSES.index(df) + 0.01 * s
        values = {"clean_accuracy": clean, "poisoned_accuracy": poisoned(d, df, at, s),
                  "perturbation_linf_max": 0.0275 if at == "pf" else 0.0, "cell_seconds": 10.0 + s}
        values["accuracy_drop"] = clean - values["poisoned_accuracy"]
        if at == "pf":
            values.update(attack_success_rate=0.3 + 0.1 * s, attack_success_ci_low=0.2 + 0.1 * s,
                          attack_success_ci_high=0.4 + 0.1 * s, attack_successes=30.0 + 10 * s, num_trials=100.0)
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in values.items()]
        metrics += [Metric("curve.train_loss", v, now, i) for i, v in enumerate((2.0, 1.0))]
        client.log_batch(rid, metrics=metrics)
        if at == "pf":
            path = art_dir / "poison_examples.png"
            path.write_bytes(_png())
            client.log_artifact(rid, str(path))
    client.set_terminated(rid, status)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    from mlflow.tracking import MlflowClient

    base = tmp_path_factory.mktemp("report_store")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(SUITE, artifact_location=(base / "artifacts").as_uri())
    suite_file = base / "fab.yaml"
    suite_file.write_text(yaml.safe_dump(SUITE_RAW, sort_keys=False))
    # an older parent whose numbers must not show: the report takes the latest parent
    old = client.create_run(exp, run_name="old", tags={"benchmark.role": "parent", "benchmark.suite": SUITE})
    client.log_artifact(old.info.run_id, str(suite_file))
    client.set_terminated(old.info.run_id, "FINISHED")
    time.sleep(0.01)
    parent = client.create_run(exp, run_name="fab run", tags={"benchmark.role": "parent", "benchmark.suite": SUITE})
    pid = parent.info.run_id
    client.log_artifact(pid, str(suite_file))
    _child(client, exp, pid, RESUMED_CELL, "FAILED", base)  # failed first, then resumed below
    for d in DATASETS:
        for df in DEFENSES:
            for at in ATTACKS:
                for seed in SEEDS:
                    cell = (d, "bb", df, at, str(seed))
                    if cell == MISSING_CELL:
                        continue
                    _child(client, exp, pid, cell, "FAILED" if cell == FAILED_CELL else "FINISHED", base)
    client.set_terminated(pid, "FAILED")
    out = base / "reports"
    result = build_report(suite=SUITE, out=out, tracking_uri=uri)
    return {"uri": uri, "client": client, "parent": pid, "old": old.info.run_id, "result": result,
            "md": (out / SUITE / "report.md").read_text(), "html": (out / SUITE / "report.html").read_text(),
            "out": out}


def _table_rows(md: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The Markdown table whose header starts with ``first_header``: (header, rows)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    split = [c.strip() for c in lines[start].strip("|").split(" | ")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return split, rows


def _expected(values: list[float], scale: float = 100.0) -> str:
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean * scale:.1f}"
    half = 12.706 * statistics.stdev(values) / math.sqrt(len(values))  # t(0.975, 1 dof)
    return f"{mean * scale:.1f} ± {half * scale:.1f}"


def test_full_table_cells_are_means_over_seeds(store):
    header, rows = _table_rows(store["md"], "dataset")
    by_group = {tuple(r[:4]): dict(zip(header, r, strict=True)) for r in rows}
    assert len(by_group) == 8  # every expected group, even the partly failed ones
    row = by_group[("d1", "bb", "naive", "pf")]
    assert row["seeds"] == "2/2"
    assert row["poisoned (%)"] == _expected([poisoned("d1", "naive", "pf", s) for s in SEEDS])
    assert row["success (%)"] == _expected([0.3, 0.4])
    assert row["clean (%)"] == _expected([0.9, 0.91])
    # the resumed cell counts its FINISHED run: two seeds
    assert by_group[("d1", "bb", "naive", "none")]["seeds"] == "2/2"
    # one seed failed, one missing: n=1 of 2, and the single-seed value printed as is
    failed_group = by_group[("d2", "bb", "pgd", "none")]
    assert failed_group["seeds"] == "1/2"
    assert failed_group["poisoned (%)"] == _expected([poisoned("d2", "pgd", "none", 0)])
    missing_group = by_group[("d2", "bb", "pgd", "pf")]
    assert missing_group["seeds"] == "1/2"
    # one seed of a targeted attack: its own Wilson interval over the trials
    assert missing_group["success (%)"] == "30.0 [20.0, 40.0]"


def test_paper_tables_put_measured_beside_published(store):
    header, rows = _table_rows(store["md"], "defense")
    assert header == ["defense", "d1 measured", "d1 published", "d2 measured", "d2 published"]
    table = {r[0]: r for r in rows}
    d1_naive = [poisoned("d1", "naive", "none", s) for s in SEEDS]
    assert table["naive"][1] == _expected(d1_naive) + " (n=2)"
    assert table["naive"][2] == "24"
    assert table["pgd"][3] == _expected([poisoned("d2", "pgd", "none", 0)]) + " (n=1)"
    assert table["pgd"][4] == "34"
    assert "**T1: poisoned_accuracy (%)**" in store["md"]
    assert "**T2: attack_success_rate (%)**" in store["md"]
    assert "30.0 [20.0, 40.0] (n=1)" in store["md"]


def test_failed_and_missing_cells_are_listed(store):
    md = store["md"]
    header, rows = _table_rows(md, "cell")
    failed = {r[0]: r for r in rows}
    assert set(failed) == {"d2/bb/pgd/none/seed1"}  # the resumed cell is not failed
    assert failed["d2/bb/pgd/none/seed1"][1] == "FAILED"
    assert "RuntimeError: boom in training" in failed["d2/bb/pgd/none/seed1"][2]
    assert "- d2/bb/pgd/pf: seed 1" in md
    agg = store["result"].aggregate
    # runs without a filter tag (written before filters were an axis) read as unfiltered cells
    assert agg.missing == [unfiltered(MISSING_CELL)]
    assert [r.cell for r in agg.failed] == [unfiltered(FAILED_CELL)]


def unfiltered(cell: tuple[str, ...]) -> tuple[str, ...]:
    return (*cell[:4], "none", cell[4])


def test_html_is_self_contained(store):
    html = store["html"]
    assert "data:image/png;base64," in html
    assert 'src="http' not in html and "<link" not in html and "<script" not in html
    assert html.count("<img") >= 4  # heat map, bars, success rates, at least one gallery picture


def test_outputs_are_logged_to_the_parent(store):
    client, pid = store["client"], store["parent"]
    logged = {a.path for a in client.list_artifacts(pid, "report")}
    assert {"report/report.md", "report/report.html", "report/figures"} <= logged
    figures = {a.path for a in client.list_artifacts(pid, "report/figures")}
    assert "report/figures/heatmap_poisoned_accuracy.png" in figures
    assert not list(client.list_artifacts(store["old"], "report"))  # the latest parent, not the old one


def test_unknown_suite_and_run_fail_with_one_line(store, tmp_path, capsys):
    with pytest.raises(BenchmarkError, match="no runs of suite 'nope'"):
        build_report(suite="nope", out=tmp_path, tracking_uri=store["uri"])
    with pytest.raises(BenchmarkError, match="not found"):
        build_report(run_id="0" * 32, out=tmp_path, tracking_uri=store["uri"])
    assert cli_main(["report", "--suite", "nope", "--tracking-uri", store["uri"], "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_run_id_selects_a_parent(store, tmp_path):
    result = build_report(run_id=store["old"], out=tmp_path, tracking_uri=store["uri"], log_artifacts=False)
    assert result.parent_id == store["old"]
    assert not result.aggregate.groups  # the old parent has no cell runs
    assert len(result.aggregate.missing) == 16


def test_fmt_stat_formats():
    assert fmt_stat(Stat(0.5, 0.1, 0.4, 0.6, 3), "poisoned_accuracy") == "50.0 ± 10.0 (n=3)"
    assert fmt_stat(None, "poisoned_accuracy") == "–"


def test_paper_suite_tables_keep_the_paper_layout():
    """paper.yaml's references, with no runs yet: T1-T3 are defense x dataset grids (the `_svhn` defenses shown
    under their registry names, as in the paper), toxic-style same-cell references fall back to attack columns."""
    from conftest import ROOT

    from benchmark.report.aggregate import SuiteGrid, aggregate
    from benchmark.report.tables import reference_tables

    raw = yaml.safe_load((ROOT / "suites" / "paper.yaml").read_text())
    agg = aggregate([], SuiteGrid.from_raw(raw))
    assert len(agg.missing) == 144
    tables = {t.anchor: t for t in reference_tables(agg)}
    assert list(tables) == ["table-T1", "table-T2", "table-T3", "table-text"]
    t1 = tables["table-T1"]
    assert t1.header == ["defense", "cifar measured", "cifar published", "mnist measured", "mnist published"]
    assert [r[0] for r in t1.rows] == ["naive", "fgsm", "pgd"]
    assert t1.rows[2] == ["pgd", "missing", "34", "missing", "95"]
    assert tables["table-T3"].header[1] == "mnist measured" and len(tables["table-T3"].rows) == 2
    assert tables["table-text"].header[0] == "cell" and len(tables["table-text"].rows) == 5
    toxic = yaml.safe_load((ROOT / "suites" / "toxic-transfer.yaml").read_text())
    (t,) = reference_tables(aggregate([], SuiteGrid.from_raw(toxic)))
    toxic_rows = ["art_feature_collision", "art_bullseye_polytope", "convex_polytope", "art_clean_label_backdoor",
                  "art_hidden_trigger"]  # the five rows of the Toxic table, in the suite's order
    assert t.header == ["defense"] + [f"{a} {part}" for a in toxic_rows for part in ("measured", "published")]
    assert t.rows[0][0] == "naive" and t.rows[0][2::2] == ["22", "85", "33", "5", "10"]
