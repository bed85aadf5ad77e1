"""A growing suite: the attack stage cached across filters, and one filter added to a finished suite.

Grid: 3 defenses x 2 attacks (Convex Polytope, Witches' Brew) x 4 filters (none, k-NN, activation clustering,
spectral signatures) on synthetic data with a small CNN, sized to run in minutes on 2 CPU cores.
- cold vs cached: the 24 cells with the attack made in every cell (the attack cache emptied before each, as
  every cell ran its attack before the attack was a cached stage) vs once per (defense, attack); backbones and
  features are cached in both. Target: the attack work divided by the number of filters (4).
- grown: a finished 18-cell suite (3 filters) grown by one filter and run again, vs the grown 24-cell suite from
  an empty store and cache. Target: under 15% of the from-scratch time.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from conftest import report, timed

from benchmark.cell.pipeline import RunOptions, run_cell
from benchmark.cli.commands import main
from benchmark.store.cache import Cache
from benchmark.suite import expand, load_suite

ROOT = Path(__file__).resolve().parents[1]
TRAINING = {"max_epochs": 2, "lr": 0.002, "stop_at": 0.99}
ATTACK = {"target_class": 0, "base_class": 1, "num_targets": 8, "num_poisons": 5, "eps": 0.0314}
FILTERS = {
    "none": {},
    "knn": {"name": "knn_label", "params": {"k": 10}},
    "ac": {"name": "art_activation_clustering"},
    "spectral": {"name": "art_spectral_signature"},
}


def grid(filters: dict) -> dict:
    """The smoke suite's data and backbone, 3 defenses x 2 targeted attacks x ``filters``."""
    d = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())
    d["name"] = "growing-bench"
    d["datasets"]["synthetic"]["external"]["params"].update(n_train=600, n_test=150)
    d["datasets"]["synthetic"]["target"]["params"].update(n_train=300, n_test=300)
    d["defenses"] = {
        "naive": {"params": TRAINING},
        "fgsm": {"params": {**TRAINING, "eps": 0.0314}},
        "pgd": {"params": {**TRAINING, "eps": 0.0314, "steps": 3}},
    }
    d["attacks"] = {
        "convex_polytope": {"params": {**ATTACK, "steps": 150}},
        "witches_brew": {"params": {**ATTACK, "steps": 40, "restarts": 1}},
    }
    d["filters"] = copy.deepcopy(filters)
    d["evaluation"].update(robust_steps=5, robust_samples=100)
    return d


def _write(folder: Path, d: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def test_attack_stage_cached_across_filters(benchmark, tmp_path):
    cells = expand(load_suite(_write(tmp_path, grid(FILTERS))))
    assert len(cells) == 24
    opts = RunOptions(device="cpu", cache_dir=str(tmp_path / "cache"))
    cache = Cache(opts.cache_dir)
    for cell in {c.defense.label: c for c in cells}.values():  # train and cache the 3 backbones and features
        run_cell(cell, opts)

    def every_cell_attacks():
        out = []
        for cell in cells:
            cache.clear("attack")
            out.append(run_cell(cell, opts))
        return out

    def attack_once_per_defense():
        cache.clear("attack")
        return [run_cell(cell, opts) for cell in cells]

    cold_s, cold = timed(every_cell_attacks)
    cached = benchmark.pedantic(attack_once_per_defense, rounds=1, iterations=1)
    assert all(r.status == "FINISHED" for r in cold + cached)
    made = [r for r in cached if r.metrics["attack_cached"] == 0.0]
    assert len(made) == 6 and sum(r.metrics["attack_cached"] == 0.0 for r in cold) == 24
    for a, b in zip(cold, cached, strict=True):  # the same poisons: the same outcome
        assert a.metrics["poisoned_accuracy"] == b.metrics["poisoned_accuracy"]
    attack_cold = sum(r.metrics["attack_seconds"] for r in cold)
    attack_cached = sum(r.metrics["attack_seconds"] for r in made)
    report(benchmark, "24-cell grid, attack in every cell vs attack cached", cold_s, benchmark.stats.stats.mean,
           attack_seconds_every_cell=round(attack_cold, 1), attack_seconds_cached=round(attack_cached, 1),
           attack_work_ratio=round(attack_cold / attack_cached, 2))


def test_one_filter_added_to_a_finished_suite(benchmark, tmp_path, monkeypatch, capsys):
    three = {k: v for k, v in FILTERS.items() if k != "spectral"}

    def use(folder: Path) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        monkeypatch.setenv("BENCHMARK_CACHE", str(folder / "cache"))

    def run(path: Path) -> None:
        assert main(["run", str(path), "--quiet", "--device", "cpu"]) == 0

    scratch = _write(tmp_path / "scratch", grid(FILTERS))
    use(scratch.parent)
    scratch_s, _ = timed(lambda: run(scratch))

    grown = _write(tmp_path / "grown", grid(three))
    use(grown.parent)
    run(grown)
    grown.write_text(yaml.safe_dump(grid(FILTERS), sort_keys=False))
    capsys.readouterr()
    benchmark.pedantic(lambda: run(grown), rounds=1, iterations=1)
    assert "24 cells, 18 already finished, 6 to run" in capsys.readouterr().out
    added_s = benchmark.stats.stats.mean
    report(benchmark, "grown suite from scratch vs one filter added", scratch_s, added_s,
           added_fraction=round(added_s / scratch_s, 3))
