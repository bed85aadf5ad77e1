"""The filter stage in a cell on real MNIST: it changes the key only when set, records what it removed, and the
head is fitted on what it kept."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import mnist_path

from benchmark.cell import RunOptions, run_cell
from benchmark.errors import SuiteError
from benchmark.suite import expand, parse_suite

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(classes: list[int], train_limit: int) -> dict[str, Any]:
    return {"name": "npz", "params": {"path": str(mnist_path())}, "classes": classes, "train_limit": train_limit,
            "test_limit": 300, "image_size": 16}


def _suite(filt: dict[str, Any] | None) -> dict[str, Any]:
    d = {
        "name": "filter-stage",
        "device": "cpu",
        "datasets": {"mnist": {"external": _data([5, 6, 7, 8, 9], 600), "target": _data([0, 1, 2], 600)}},
        "backbones": {"small_cnn": {"params": {"width": 8, "feature_dim": 32, "batch_norm": True}}},
        "defenses": {"naive": {"params": {"lr": 0.003, "max_epochs": 6, "batch_size": 32}}},
        "attacks": {"lf": {"name": "label_flip", "params": {"rate": 0.1}}},
        "evaluation": {"robust_eps": 0.1, "robust_steps": 2, "robust_samples": 20},
    }
    if filt is not None:
        d["filter"] = filt
    return d


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("filter_cache"))
    out = {}
    for label, filt in [
        ("none", None),
        ("knn", {"name": "knn_label", "params": {"k": 10}}),
        ("spectral", {"name": "art_spectral_signature"}),
        ("ac", {"name": "art_activation_clustering"}),
    ]:
        (cell,) = expand(parse_suite(_suite(filt)))
        rec = run_cell(cell, RunOptions(device="cpu", cache_dir=cache))
        assert rec.status == "FINISHED", rec.error
        out[label] = (cell, rec)
    print({k: {m: round(v, 3) for m, v in r.metrics.items() if m.startswith("filter_") or "accuracy" in m}
           for k, (_, r) in out.items()})
    return out


def test_filter_metrics_are_recorded_and_knn_catches_flipped_labels(records) -> None:
    for label in ("knn", "spectral", "ac"):
        cell, rec = records[label]
        m = rec.metrics
        assert {"filter_poisons_caught", "filter_clean_rows_lost", "filter_rows_removed"} <= set(m), label
        assert 0.0 <= m["filter_poisons_caught"] <= 1.0 and 0.0 <= m["filter_clean_rows_lost"] < 1.0
        assert rec.params["filter"] == cell.filter.name
    knn = records["knn"][1].metrics
    assert knn["filter_poisons_caught"] > 0.5, knn
    assert knn["filter_clean_rows_lost"] < 0.2, knn
    assert "filter_poisons_caught" not in records["none"][1].metrics
    # the same backbone and features: the clean head is the same, only the poisoned heads differ
    assert records["knn"][1].metrics["clean_accuracy"] == records["none"][1].metrics["clean_accuracy"]


def test_filter_is_in_the_key_and_params_only_when_set(records) -> None:
    keys = {label: cell.key for label, (cell, _) in records.items()}
    assert len(set(keys.values())) == 4
    none_cell, none_rec = records["none"]
    assert "filter" not in none_rec.params and "filter" not in none_cell.tags()
    knn_cell, knn_rec = records["knn"]
    assert knn_rec.params["filter"] == "knn_label" and knn_rec.params["filter.k"] == 10
    assert knn_cell.tags()["filter"] == "knn_label"


@pytest.mark.parametrize(
    ("filt", "match"),
    [
        ({"name": "knn"}, "filter.knn.name: unknown filter 'knn'"),
        ({"name": "knn_label", "params": {"k": -1}}, "filter.knn_label.params.k"),
        ({"params": {"k": 3}}, "filter.name: required"),
    ],
)
def test_bad_filter_is_caught_at_load_time(filt: dict[str, Any], match: str) -> None:
    with pytest.raises(SuiteError, match=match):
        parse_suite(copy.deepcopy(_suite(filt)))
