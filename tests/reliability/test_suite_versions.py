"""An edited suite does not resume a parent that ran another version of it: it starts a new parent, and each parent
keeps the suite file it ran. Edits that change nothing (comments, key order) resume."""

from __future__ import annotations

import os

import yaml
from conftest import tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main
from benchmark.store.tracking import SUITE_HASH


def _parents(name: str):
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return client, [r for r in runs if r.data.tags.get("benchmark.role") == "parent"]


def test_a_changed_suite_starts_a_new_parent(tmp_path, smoke_dict, capsys):
    d = tiny_suite(smoke_dict, "edited", attacks=("none",))
    suite = write_suite(tmp_path, d)
    assert main(["run", str(suite), "--quiet", "--device", "cpu"]) == 0
    # the same suite, reformatted and commented: the same version, so it resumes
    suite.write_text("# a comment\n" + yaml.safe_dump(d, sort_keys=True))
    assert main(["run", str(suite), "--quiet", "--device", "cpu"]) == 0
    assert "1 already finished, 0 to run" in capsys.readouterr().out
    # a real change: the head's regularisation
    d["head"] = {"name": "linear_svc", "params": {"C": 0.5}}
    write_suite(tmp_path, d)
    assert main(["run", str(suite), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "differs from the suite its latest parent run ran: starting a new parent run" in out
    assert "1 cells, 0 already finished, 1 to run" in out

    client, parents = _parents("edited")
    assert len(parents) == 2
    assert parents[0].data.tags[SUITE_HASH] != parents[1].data.tags[SUITE_HASH]
    for parent, c in zip(parents, (1.0, 0.5), strict=True):  # each parent keeps the version it ran
        path = client.download_artifacts(parent.info.run_id, "suite.yaml", str(tmp_path / parent.info.run_id))
        assert yaml.safe_load(open(path)).get("head", {}).get("params", {}).get("C", 1.0) == c
