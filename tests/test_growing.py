"""A growing suite pays only for what is new: finished cells are reused across versions of a suite, attacks are
cached per (features, attack, head, seed), and the view and the report show one row per cell of the suite file.

Stage calls are counted (backbone trainings, attack runs), never timed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cell import backbone_stage
from benchmark.cell import pipeline as cell_module
from benchmark.cli.commands import main
from benchmark.core import versions
from benchmark.report.source import load_runs
from benchmark.store.reuse import CELLS_FILE
from benchmark.store.tracking import CURRENT, VIEW_TAG
from benchmark.suite import expand, load_suite


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """How many times this process trained a backbone and ran an attack."""
    counts = {"train": 0, "attack": 0}

    def counted(name: str, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(backbone_stage, "train_backbone", counted("train", backbone_stage.train_backbone))
    monkeypatch.setattr(cell_module, "run_attack", counted("attack", cell_module.run_attack))
    return counts


def _filtered(smoke_dict: dict, name: str) -> dict:
    """2 attacks (none, label flip) x 2 filters (none, k-NN): 4 cells, one backbone."""
    d = tiny_suite(smoke_dict, name)
    d["filters"] = {"none": {}, "knn": {"name": "knn_label", "params": {"k": 5}}}
    return d


def _grown(d: dict) -> dict:
    """One more filter and one more attack: 9 cells, 5 of them new."""
    d = json.loads(json.dumps(d))
    d["filters"]["knn3"] = {"name": "knn_label", "params": {"k": 3}}
    d["attacks"]["lf20"] = {"name": "label_flip", "params": {"rate": 0.2}}
    return d


def _run(suite, *extra: str) -> None:
    assert main(["run", str(suite), "--quiet", "--device", "cpu", *extra]) == 0


def _experiment(name: str):
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    return client, client.get_experiment_by_name(name)


def _cell_runs(name: str) -> list:
    client, exp = _experiment(name)
    return client.search_runs([exp.experiment_id], "tags.`benchmark.role` = 'cell'", max_results=1000)


def _view_keys(name: str) -> list[str]:
    """The cell keys of the rows the experiment's stored view shows (its own filter, applied by MLflow)."""
    client, exp = _experiment(name)
    view = json.loads(exp.tags[VIEW_TAG])
    runs = client.search_runs([exp.experiment_id], view["searchFilter"], max_results=1000)
    return sorted(r.data.tags["benchmark.cell_key"] for r in runs)


def _keys(suite) -> list[str]:
    return sorted(c.key for c in expand(load_suite(suite)))


def test_growing_a_suite_runs_only_the_new_cells_and_attacks(tmp_path, smoke_dict, calls, capsys):
    d = _filtered(smoke_dict, "grow")
    suite = write_suite(tmp_path, d)
    _run(suite)
    assert calls == {"train": 1, "attack": 2}, "one backbone; each attack once, not once per filter"
    first = {r.data.tags["benchmark.cell_key"]: r.info.run_id for r in _cell_runs("grow")}

    write_suite(tmp_path, _grown(d))
    calls.update(train=0, attack=0)
    assert main(["run", str(suite), "--dry-run", "--device", "cpu"]) == 0
    assert "9 cells: 4 already finished or reusable, 5 to run" in capsys.readouterr().out
    _run(suite)
    assert calls == {"train": 0, "attack": 1}, "no backbone trained; only the new attack runs, once"
    out = capsys.readouterr().out
    assert "9 cells, 4 already finished, 5 to run on cpu (4 reused from earlier runs;" in out

    runs = _cell_runs("grow")
    assert len(runs) == 9, "a reused cell is referenced, not copied"
    assert {k: first[k] for k in first} == {r.data.tags["benchmark.cell_key"]: r.info.run_id for r in runs
                                            if r.data.tags["benchmark.cell_key"] in first}
    assert _view_keys("grow") == _keys(suite), "the stored view: one row per cell of the grown suite"
    report = load_runs(None, "grow", None)
    assert sorted(r.run_id for r in report.runs) == sorted(r.info.run_id for r in runs)

    client, exp = _experiment("grow")
    parent = report.parent_id
    record = json.loads(open(client.download_artifacts(parent, CELLS_FILE, str(tmp_path))).read())
    assert set(record["reused"]) == set(first) and len(record["ran"]) == 5 and not record["not_finished"]
    assert client.get_run(parent).data.metrics["cells_reused"] == 4

    # the suite shrinks back: nothing runs, and the view and the report drop the cells it no longer has
    write_suite(tmp_path, d)
    calls.update(train=0, attack=0)
    _run(suite)
    assert calls == {"train": 0, "attack": 0}
    assert _view_keys("grow") == sorted(first) == _keys(suite)
    assert sorted(r.run_id for r in load_runs(None, "grow", None).runs) == sorted(first.values())


def test_rerun_a_slice_a_version_bump_and_a_corrupt_attack_entry(tmp_path, smoke_dict, calls, capsys, monkeypatch):
    suite = write_suite(tmp_path, _filtered(smoke_dict, "again"))
    _run(suite)
    before = {r.info.run_id for r in _cell_runs("again")}

    # --rerun KEY=VALUE: a new parent reruns that slice only; the attacks come from the cache
    calls.update(train=0, attack=0)
    _run(suite, "--rerun", "filter=knn")
    assert "4 cells, 2 already finished, 2 to run" in capsys.readouterr().out
    assert calls == {"train": 0, "attack": 0}
    new = [r for r in _cell_runs("again") if r.info.run_id not in before]
    assert sorted(r.data.tags["filter"] for r in new) == ["knn", "knn"]
    assert _view_keys("again") == _keys(suite), "one row per cell: the rerun's runs replace the ones they redo"
    assert {r.info.run_id for r in new} <= {r.info.run_id for r in _cell_runs("again") if CURRENT in r.data.tags}
    assert main(["run", str(suite), "--quiet", "--rerun", "filter=nope"]) == 2
    assert "--rerun filter=nope: not in the suite" in capsys.readouterr().err

    # a stage version bump: every cell and attack is made again, the backbone (which does not depend on it) is not
    old = _keys(suite)
    calls.update(train=0, attack=0)
    monkeypatch.setitem(versions.STAGE_VERSIONS, "cell", "bumped")
    _run(suite)
    assert calls == {"train": 0, "attack": 2}
    assert set(_keys(suite)).isdisjoint(old) and _view_keys("again") == _keys(suite)

    # an attack entry cut short is detected by its checksum and made again, never used
    entries = sorted((Path(os.environ["BENCHMARK_CACHE"]) / "attack").glob("*.pt"))
    assert len(entries) == 4  # 2 attacks x 2 versions of the cell stage
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:-10])
    calls.update(attack=0)
    _run(suite, "--rerun", "attack=label_flip")
    assert calls["attack"] == 1
    assert "is corrupt" in capsys.readouterr().err

    assert main(["cache", "clear", "--kind", "attack"]) == 0  # entries and their lock files
    root = Path(os.environ["BENCHMARK_CACHE"])
    assert not (root / "attack").exists() and not list(root.glob("locks/attack-*"))


def test_the_estimate_prices_an_attack_once_for_all_its_filters_and_nothing_the_cache_holds(smoke_dict, tmp_path):
    from benchmark.cell.attack_cache import attack_key
    from benchmark.cell.keys import backbone_key, feature_key
    from benchmark.grid.estimate import estimate
    from benchmark.store.cache import Cache
    from benchmark.suite import parse_suite

    pf = {"pf": {"name": "poison_frog", "params": {"target_class": 0, "base_class": 1, "num_targets": 10}}}
    one = parse_suite({**smoke_dict, "attacks": pf})
    four = parse_suite({**smoke_dict, "attacks": pf, "filters": {"none": {}, **{f"k{k}": {"name": "knn_label",
                        "params": {"k": k}} for k in (3, 5, 10)}}})
    plain, filtered = estimate(one, expand(one), gpu=False), estimate(four, expand(four), gpu=False)
    assert filtered.cells == 4 * plain.cells and filtered.attacks == plain.attacks == 2  # 2 defenses
    assert filtered.seconds["attacks"] == plain.seconds["attacks"] > 0

    cache = Cache(tmp_path)
    for cell in expand(four):  # what a finished run of the suite left in the cache
        for kind, key in (("backbone", backbone_key(cell)), ("features", feature_key(cell)),
                          ("attack", attack_key(cell, feature_key(cell)))):
            cache.save(kind, key, {})
    warm = estimate(four, expand(four), gpu=False, cache=cache)
    assert warm.seconds["training"] == warm.seconds["features"] == warm.seconds["attacks"] == 0
    assert warm.seconds["evaluation"] == filtered.seconds["evaluation"]  # each cell still evaluates its heads
