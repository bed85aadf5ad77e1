"""Fast, one-line failures before any run exists: an unreachable Ray cluster; and no password in any message."""

from __future__ import annotations

import os

import pytest
from conftest import tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main
from benchmark.store.tracking import redact


def test_unreachable_ray_address_is_one_line_before_any_run(tmp_path, smoke_dict, capsys):
    pytest.importorskip("ray")
    suite = write_suite(tmp_path, tiny_suite(smoke_dict, "farcluster"))
    assert main(["run", str(suite), "--quiet", "--executor", "ray", "--address", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Ray cluster answers at 127.0.0.1:9" in err[0], err
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("farcluster")
    assert exp is None or client.search_runs([exp.experiment_id]) == []


def test_malformed_ray_address_is_one_line(tmp_path, smoke_dict, capsys):
    pytest.importorskip("ray")
    suite = write_suite(tmp_path, tiny_suite(smoke_dict, "badaddr"))
    assert main(["run", str(suite), "--quiet", "--executor", "ray", "--address", "headnode"]) == 2
    assert "--address headnode: expected HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize(
    "uri",
    [
        "http://bob:hunter2@127.0.0.1:9",
        "postgresql://bob:hunter2@127.0.0.1:9/mlflow",
        "mysql+pymysql://bob:hunter2@127.0.0.1:9/mlflow?password=hunter2",
    ],
)
def test_a_password_in_the_tracking_uri_is_never_printed(tmp_path, smoke_dict, capsys, uri):
    suite = write_suite(tmp_path, tiny_suite(smoke_dict, "secret"))
    assert main(["run", str(suite), "--quiet", "--tracking-uri", uri]) == 2
    assert main(["report", "--suite", "secret", "--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 2
    cap = capsys.readouterr()
    assert "hunter2" not in cap.out + cap.err
    assert "bob:***@127.0.0.1:9" in cap.err


def test_redact_keeps_everything_but_the_secret():
    assert redact("http://u:p%40ss@h:5000/x") == "http://u:***@h:5000/x"
    assert redact("https://h/db?user=u&password=s3cret&x=1") == "https://h/db?user=u&password=***&x=1"
    assert redact("sqlite:////tmp/mlruns/mlflow.db") == "sqlite:////tmp/mlruns/mlflow.db"
    assert redact("http://host:5000/api") == "http://host:5000/api"
