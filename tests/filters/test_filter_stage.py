"""The filter axis and the filter stage in a cell on real MNIST: a filter changes the key only when set, records what
it removed, and the head is fitted on what it kept."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import mnist_path

from benchmark.cell.pipeline import RunOptions, run_cell
from benchmark.core.errors import SuiteError
from benchmark.suite import expand, parse_suite

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(classes: list[int], train_limit: int) -> dict[str, Any]:
    return {"name": "npz", "params": {"path": str(mnist_path())}, "classes": classes, "train_limit": train_limit,
            "test_limit": 300, "image_size": 16}


FILTERS = {
    "none": {},
    "knn": {"name": "knn_label", "params": {"k": 10}},
    "spectral": {"name": "art_spectral_signature"},
    "ac": {"name": "art_activation_clustering"},
}


def _suite(filters: dict[str, Any] | None) -> dict[str, Any]:
    d = {
        "name": "filter-stage",
        "device": "cpu",
        "datasets": {"mnist": {"external": _data([5, 6, 7, 8, 9], 600), "target": _data([0, 1, 2], 600)}},
        "backbones": {"small_cnn": {"params": {"width": 8, "feature_dim": 32, "batch_norm": True}}},
        "defenses": {"naive": {"params": {"lr": 0.003, "max_epochs": 6, "batch_size": 32}}},
        "attacks": {"lf": {"name": "label_flip", "params": {"rate": 0.1}}},
        "evaluation": {"robust_eps": 0.1, "robust_steps": 2, "robust_samples": 20},
    }
    if filters is not None:
        d["filters"] = filters
    return d


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("filter_cache"))
    cells = expand(parse_suite(_suite(FILTERS)))
    assert [c.filter.label for c in cells] == list(FILTERS)  # the filter is a grid axis
    out = {}
    for cell in cells:
        rec = run_cell(cell, RunOptions(device="cpu", cache_dir=cache))
        assert rec.status == "FINISHED", rec.error
        out[cell.filter.label] = (cell, rec)
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
    (unfiltered,) = expand(parse_suite(_suite(None)))  # a suite without `filters:` runs the same cell
    assert none_cell.key == unfiltered.key and not none_cell.filtered
    assert "filter" not in none_rec.params and none_cell.tags()["filter"] == "none"
    knn_cell, knn_rec = records["knn"]
    assert knn_rec.params["filter"] == "knn_label" and knn_rec.params["filter.k"] == 10
    assert knn_cell.tags()["filter"] == "knn" and "knn" in knn_cell.title() and "none" not in none_cell.title()


def test_filter_axis_takes_exclusions_only_and_sweeps() -> None:
    suite = parse_suite(_suite({"none": {}, "knn": {"name": "knn_label", "sweep": {"k": [5, 25]}}}))
    labels = [c.filter.label for c in expand(suite)]
    assert labels == ["none", "knn[k=25]", "knn[k=5]"] or labels == ["none", "knn[k=5]", "knn[k=25]"]
    assert [c.filter.label for c in expand(suite, only={"filter": ["knn"]})] == labels[1:]
    raw = _suite({"none": {}, "knn": {"name": "knn_label"}})
    raw["grid"] = {"exclude": [{"filter": "knn"}]}
    assert [c.filter.label for c in expand(parse_suite(raw))] == ["none"]


@pytest.mark.parametrize(
    ("filters", "match"),
    [
        ({"knn": {"name": "knn"}}, "filters.knn.name: unknown filter 'knn'"),
        ({"knn_label": {"params": {"k": -1}}}, "filters.knn_label.params.k"),
        ({"knn": {"name": "knn_label", "sweep": {"k": [0]}}}, r"filters.knn.sweep"),
        ({}, "filters"),
    ],
)
def test_bad_filter_is_caught_at_load_time(filters: dict[str, Any], match: str) -> None:
    with pytest.raises(SuiteError, match=match):
        parse_suite(copy.deepcopy(_suite(filters)))


def test_old_singular_filter_key_is_refused() -> None:
    raw = _suite(None)
    raw["filter"] = {"name": "knn_label"}
    with pytest.raises(SuiteError, match="filter: unknown key"):
        parse_suite(raw)
