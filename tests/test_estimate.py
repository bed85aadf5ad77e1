"""The --dry-run time estimate: grows with the work, and counts a cached backbone once."""

from __future__ import annotations

import copy
import json

import pytest

import benchmark.grid.estimate
from benchmark.core.errors import BenchmarkError
from benchmark.grid.estimate import (
    estimate,
    estimate_lines,
    load_calibration,
    read_calibration,
)
from benchmark.suite import expand, parse_suite


def _suite(smoke: dict, **changes):
    raw = copy.deepcopy(smoke)
    raw.update(changes)
    suite = parse_suite(raw)
    return suite, expand(suite)


def test_more_epochs_cost_more(smoke_dict):
    base = estimate(*_suite(smoke_dict), gpu=True)
    longer = copy.deepcopy(smoke_dict)
    for d in longer["defenses"].values():
        d["params"]["max_epochs"] *= 3
    more = estimate(*_suite(longer), gpu=True)
    assert more.seconds["training"] > 2.9 * base.seconds["training"]
    assert more.total > base.total
    # PGD's steps make its training dearer than naive training of the same length
    pgd_only = estimate(*_suite(smoke_dict, defenses={"pgd": smoke_dict["defenses"]["pgd"]}), gpu=True)
    naive_only = estimate(*_suite(smoke_dict, defenses={"naive": smoke_dict["defenses"]["naive"]}), gpu=True)
    assert pgd_only.seconds["training"] > naive_only.seconds["training"]


def test_cached_backbone_counted_once(smoke_dict):
    one_attack = estimate(*_suite(smoke_dict, attacks={"none": {}}), gpu=False)
    two_attacks = estimate(*_suite(smoke_dict), gpu=False)  # none + label_flip share each backbone
    assert one_attack.backbones == two_attacks.backbones == len(smoke_dict["defenses"])
    assert two_attacks.seconds["training"] == one_attack.seconds["training"]
    assert two_attacks.cells == 2 * one_attack.cells
    two_seeds = estimate(*_suite(smoke_dict, seeds=[0, 1]), gpu=False)  # a seed is part of the backbone's key
    assert two_seeds.backbones == 2 * two_attacks.backbones
    assert abs(two_seeds.seconds["training"] - 2 * two_attacks.seconds["training"]) < 1e-9


def test_attack_steps_cost_time(smoke_dict):
    pf = {"pf": {"name": "poison_frog", "params": {"target_class": 0, "base_class": 1, "num_targets": 10}}}
    cheap = estimate(*_suite(smoke_dict, attacks=pf), gpu=True)
    pf["pf"]["params"]["steps"] = 400
    dear = estimate(*_suite(smoke_dict, attacks=pf), gpu=True)
    assert dear.seconds["attacks"] > 5 * cheap.seconds["attacks"] > 0


def test_lines_name_the_device(smoke_dict):
    suite, cells = _suite(smoke_dict)
    gpu = estimate_lines(suite, cells, "cuda", calibration=None)
    assert gpu[0].startswith("estimated time:") and "GPU" in gpu[0] and "assumed" in gpu[0]
    cpu = estimate_lines(suite, cells, "cpu")
    assert "CPU" in cpu[0] and "GPU" not in cpu[0]
    assert len(estimate_lines(suite, cells, "auto")) == 3  # both estimates, then what was counted


def test_torch_svm_refits_cost_less_than_linearsvc_fits(smoke_dict):
    pf = {"pf": {"name": "poison_frog", "params": {"target_class": 0, "base_class": 1, "num_targets": 100}}}
    sk = estimate(*_suite(smoke_dict, attacks=pf), gpu=False)
    torch_head = estimate(*_suite(smoke_dict, attacks=pf, head={"name": "torch_svm"}), gpu=False)
    assert 0 < torch_head.seconds["heads"] < sk.seconds["heads"] / 10
    assert torch_head.seconds["attacks"] == sk.seconds["attacks"]


def _write_calibration(path, card="NVIDIA H100 80GB HBM3", date="2026-12-01 10:00 UTC", **rates):
    path.write_text(json.dumps({"card": card, "date": date, "passes_per_second": rates or {"small_cnn": 75_000.0}}))
    return path


def test_measured_calibration_replaces_the_assumed_gpu_rates(smoke_dict, tmp_path, monkeypatch):
    suite, cells = _suite(smoke_dict)
    assumed = estimate(suite, cells, gpu=True)
    path = _write_calibration(tmp_path / "h100.json", small_cnn=2 * 50_000.0)  # twice the assumed small CNN rate
    cal = read_calibration(path)
    measured = estimate(suite, cells, gpu=True, calibration=cal)
    assert measured.seconds["training"] == pytest.approx(assumed.seconds["training"] / 2)
    line = estimate_lines(suite, cells, "cuda", calibration=cal)[0]
    assert "NVIDIA H100 80GB HBM3" in line and "2026-12-01" in line and "h100.json" in line and "assumed" not in line
    # by default the lines read the calibration files: $BENCHMARK_CALIBRATION, else benchmark/grid/calibration/
    monkeypatch.setenv("BENCHMARK_CALIBRATION", str(path))
    assert estimate_lines(suite, cells, "cuda")[0] == line
    monkeypatch.delenv("BENCHMARK_CALIBRATION")
    monkeypatch.setattr(benchmark.grid.estimate, "CALIBRATION_DIR", tmp_path / "none")
    assert load_calibration() is None and "assumed" in estimate_lines(suite, cells, "cuda")[0]


def test_newest_calibration_wins_and_unmeasured_backbones_stay_assumed(smoke_dict, tmp_path, monkeypatch):
    monkeypatch.delenv("BENCHMARK_CALIBRATION", raising=False)
    monkeypatch.setattr(benchmark.grid.estimate, "CALIBRATION_DIR", tmp_path)
    _write_calibration(tmp_path / "a.json", card="old card", date="2026-11-30 09:00 UTC")
    _write_calibration(tmp_path / "b.json", card="new card", date="2026-12-02 09:00 UTC", vgg13=30_000.0)
    cal = load_calibration()
    assert cal is not None and cal.card == "new card"
    suite, cells = _suite(smoke_dict)
    line = estimate_lines(suite, cells, "cuda", calibration=cal)[0]
    assert "new card" in line and "small CNN assumed" in line


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("{not json", "JSON"),
        (json.dumps({"card": "x", "passes_per_second": {"vgg13": 1.0}}), "'date'"),
        (json.dumps({"card": "x", "date": "d", "passes_per_second": {"vgg13": -1}}), "passes_per_second.vgg13"),
        (json.dumps({"card": "x", "date": "d", "quick": True, "passes_per_second": {"vgg13": 1.0}}), "--quick"),
    ],
)
def test_bad_calibration_file_is_one_line_naming_file_and_key(tmp_path, content, key):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BenchmarkError, match=key) as err:
        read_calibration(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
