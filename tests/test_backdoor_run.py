"""Both backdoors through ``benchmark run`` into MLflow: FINISHED cells with the triggered-success metrics, the
clean-head baseline and the triggered example picture."""

from __future__ import annotations

import os

from conftest import tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main

SMALL = {"target_class": 0, "base_class": 1, "num_trials": 2, "num_poisons": 3, "patch_size": 4, "eps": 0.1}


def test_benchmark_run_logs_backdoor_cells(tmp_path, smoke_dict):
    d = tiny_suite(smoke_dict, name="tiny-backdoors", attacks=())
    d["attacks"] = {
        "htbd": {"name": "art_hidden_trigger", "params": {**SMALL, "max_iter": 10}},
        "clbd": {"name": "art_clean_label_backdoor", "params": {**SMALL, "max_iter": 2}},
    }
    assert main(["run", str(write_suite(tmp_path, d)), "--quiet"]) == 0
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("tiny-backdoors").experiment_id])
    cells = {r.data.tags["attack"]: r for r in runs if r.data.tags.get("benchmark.role") == "cell"}
    assert set(cells) == {"htbd", "clbd"}
    for label, run in cells.items():
        m = run.data.metrics
        assert run.info.status == "FINISHED", label
        for metric in ("attack_success_rate", "attack_success_ci_low", "backdoor_success_clean_head",
                       "backdoor_images_counted", "poisoned_accuracy", "clean_accuracy"):
            assert metric in m, (label, metric)
        assert 0.0 <= m["attack_success_rate"] <= 1.0 and 0.0 <= m["backdoor_success_clean_head"] <= 1.0
        assert run.data.params["budget_check"] == "passed"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"backdoor_hits.npz", "triggered_examples.png", "poisons.npz"} <= artifacts, label
