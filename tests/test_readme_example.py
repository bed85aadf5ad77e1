"""The README's "adding an attack", "adding a defense", "adding a backbone" and "adding a head" examples, run from
outside the package through the CLI."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, write_suite
from mlflow.tracking import MlflowClient


def readme_code(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text.split(f"## {section}", 1)[1], re.S).group(1)


def readme_attack_code() -> str:
    return readme_code("Adding an attack")


def run_cli(args: list[str], plugin_dir, uri: str | None = None) -> subprocess.CompletedProcess:
    """``python -m benchmark ARGS`` from the repo root with the plugin folder on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(plugin_dir), **({"MLFLOW_TRACKING_URI": uri} if uri else {})}
    return subprocess.run(
        [sys.executable, "-m", "benchmark", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def run_here(args: list[str], plugin_dir, monkeypatch, capsys) -> tuple[int, str]:
    """``main(ARGS)`` in this process with the plugin folder on sys.path, as PYTHONPATH puts it: (exit code, stderr).
    The process boundary is the attack test's (``run_cli``); here a process start would only cost time."""
    from benchmark.cli.commands import main

    monkeypatch.syspath_prepend(str(plugin_dir))
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err


def tiny_suite(smoke_dict: dict) -> dict:
    d = copy.deepcopy(smoke_dict)
    d["name"] = "plugin"
    d["defenses"] = {"naive": {"params": {"max_epochs": 1, "lr": 0.002}}}
    d["datasets"]["synthetic"]["external"]["params"].update(n_train=200, n_test=50)
    d["datasets"]["synthetic"]["target"]["params"].update(n_train=100, n_test=60)
    d["attacks"] = {"noise": {"name": "my_attacks:UniformNoise", "params": {"eps": 0.05, "fraction": 0.2}}}
    return d


def test_readme_attack_runs_through_the_cli(tmp_path, smoke_dict):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_attacks.py").write_text(readme_attack_code())
    suite = write_suite(tmp_path, tiny_suite(smoke_dict))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(["run", str(suite), "--quiet"], plugin_dir, uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("plugin")
    (child,) = client.search_runs([exp.experiment_id], filter_string="tags.`benchmark.role` = 'cell'")
    assert child.info.status == "FINISHED"
    assert child.data.params["attack"] == "my_attacks:UniformNoise"
    assert child.data.params["budget_check"] == "passed"
    assert child.data.metrics["poisons_per_trial"] == 20
    assert 0 < child.data.metrics["perturbation_linf_max"] <= 0.05 + 1e-6


def test_readme_attack_with_a_bad_parameter_is_refused(tmp_path, smoke_dict, monkeypatch, capsys):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_attacks.py").write_text(readme_attack_code())
    d = tiny_suite(smoke_dict)
    d["attacks"]["noise"]["params"]["eps"] = 2.0
    suite = write_suite(tmp_path, d)
    code, err = run_here(["validate", str(suite)], plugin_dir, monkeypatch, capsys)
    assert code == 2
    assert "attacks.noise.params.eps: Input should be less than or equal to 1" in err


def test_readme_defense_runs_through_the_cli_and_changes_training(tmp_path, smoke_dict, monkeypatch, capsys, one_thread):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_defenses.py").write_text(readme_code("Adding a defense"))
    d = tiny_suite(smoke_dict)
    d["name"] = "defense-plugin"
    d["attacks"] = {"none": {}}
    common = {"max_epochs": 1, "lr": 0.002}
    d["defenses"] = {
        "naive": {"params": common},
        "noise": {"name": "my_defenses:GaussianNoiseTraining", "params": {**common, "sigma": 0.3}},
    }
    suite = write_suite(tmp_path, d)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    code, err = run_here(["run", str(suite), "--quiet"], plugin_dir, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("defense-plugin")
    runs = {r.data.tags["defense"]: r for r in client.search_runs([exp.experiment_id], "tags.`benchmark.role` = 'cell'")}
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert runs["noise"].data.params["defense"] == "my_defenses:GaussianNoiseTraining"
    assert runs["noise"].data.params["defense.sigma"] == "0.3"
    # same initial weights and batches: only the noise differs, so the training curves must differ
    loss = {k: client.get_metric_history(r.info.run_id, "curve.train_loss")[0].value for k, r in runs.items()}
    assert loss["noise"] != loss["naive"]

    d["defenses"]["noise"]["params"]["sigma"] = 0.0  # out of range: refused at load time, naming the key
    bad = write_suite(tmp_path, d, name="bad.yaml")
    code, err = run_here(["validate", str(bad)], plugin_dir, monkeypatch, capsys)
    assert code == 2 and "defenses.noise.params.sigma" in err, err


def test_readme_suite_file_example_is_a_valid_suite() -> None:
    import yaml

    from benchmark.suite import expand, parse_suite

    text = (ROOT / "README.md").read_text().split("## Suite files", 1)[1]
    raw = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    cells = expand(parse_suite(raw))
    # 2 defenses x 2 attacks x 2 filters, minus naive x lf (both filters)
    assert len(cells) == 6
    assert {c.filter.label for c in cells} == {"none", "knn"}


def _walkthrough() -> str:
    return (ROOT / "README.md").read_text().split("## Your own attack in five minutes", 1)[1].split("\n## ", 1)[0]


def _dist_info(folder, pyproject: dict):
    """What installing the README's package writes for its entry points: a dist-info folder on the path."""
    name = pyproject["project"]["name"].replace("-", "_")
    info = folder / f"{name}-{pyproject['project']['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {pyproject['project']['name']}\nVersion: 0.1.0\n")
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
             for group, eps in pyproject["project"]["entry-points"].items()]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return folder


def test_readme_walkthrough_runs_its_two_cell_suite_and_registers_the_plugin(tmp_path, monkeypatch, one_thread):
    """The suite as written, in this process (the plugin folder on sys.path as PYTHONPATH puts it); the entry point
    as declared, found by a registry as an installed package's."""
    import tomllib

    import yaml

    from benchmark.cli.commands import main

    text = _walkthrough()
    plugin_dir = tmp_path / "my-attacks"
    plugin_dir.mkdir()
    (plugin_dir / "my_attacks.py").write_text(readme_attack_code())
    suite_text = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    (plugin_dir / "noise.yaml").write_text(suite_text)
    monkeypatch.syspath_prepend(str(plugin_dir))
    uri = os.environ["MLFLOW_TRACKING_URI"]
    assert main(["run", str(plugin_dir / "noise.yaml"), "--quiet"]) == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(yaml.safe_load(suite_text)["name"])
    runs = {r.data.tags["attack"]: r for r in client.search_runs([exp.experiment_id], "tags.`benchmark.role` = 'cell'")}
    assert set(runs) == {"none", "noise"} and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert runs["noise"].data.params["budget_check"] == "passed"
    assert 0 < runs["noise"].data.metrics["perturbation_linf_max"] <= 0.1 + 1e-6

    pyproject = tomllib.loads(re.search(r"```toml\n(.*?)```", text, re.S).group(1))
    assert pyproject["tool"]["setuptools"]["py-modules"] == ["my_attacks"]
    monkeypatch.syspath_prepend(str(_dist_info(tmp_path / "site", pyproject)))  # as `uv pip install -e` would
    from benchmark.core.registry import Registry

    fresh = Registry()  # the process-wide one has read its entry points already
    assert "uniform_noise" in fresh.names("attack")
    assert fresh.get("attack", "uniform_noise").description.startswith("Uniform noise in the L-inf ball")


def test_readme_backbone_and_head_run_through_the_cli(tmp_path, smoke_dict, monkeypatch, capsys, one_thread):
    """The README's backbone and head, each one file, named by path in a suite: a poisoned cell runs on them."""
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_backbones.py").write_text(readme_code("Adding a backbone"))
    (plugin_dir / "my_heads.py").write_text(readme_code("Adding a head"))
    d = tiny_suite(smoke_dict)
    d["name"] = "component-plugins"
    d["backbones"] = {"mlp": {"name": "my_backbones:MLP", "params": {"hidden": 32, "feature_dim": 16}}}
    d["attacks"] = {"lf": {"name": "label_flip", "params": {"rate": 0.1}}}
    d["head"] = {"name": "my_heads:NearestCentroid", "params": {"shrink": 0.1}}
    suite = write_suite(tmp_path, d)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    code, err = run_here(["run", str(suite), "--quiet"], plugin_dir, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("component-plugins")
    (child,) = client.search_runs([exp.experiment_id], filter_string="tags.`benchmark.role` = 'cell'")
    assert child.info.status == "FINISHED"
    assert child.data.params["backbone"] == "my_backbones:MLP" and child.data.params["backbone.hidden"] == "32"
    assert child.data.params["head"] == "my_heads:NearestCentroid"
    assert 0 < child.data.metrics["clean_accuracy"] <= 1 and 0 <= child.data.metrics["poisoned_accuracy"] <= 1


def test_readme_backbone_and_head_plug_in_and_refuse_bad_params(tmp_path, smoke_dict, monkeypatch):
    """In this process: bad params refused at load naming the key; the entry-point groups register both."""
    from benchmark.core.errors import SuiteError
    from benchmark.core.registry import Registry
    from benchmark.suite import load_suite

    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_backbones.py").write_text(readme_code("Adding a backbone"))
    (plugin_dir / "my_heads.py").write_text(readme_code("Adding a head"))
    monkeypatch.syspath_prepend(str(plugin_dir))
    for where, value, key in [
        ("backbones", {"mlp": {"name": "my_backbones:MLP", "params": {"hidden": 0}}}, "backbones.mlp.params.hidden"),
        ("head", {"name": "my_heads:NearestCentroid", "params": {"shrink": 2}}, "head.my_heads:NearestCentroid.params"),
    ]:
        d = {**tiny_suite(smoke_dict), "attacks": {"none": {}}, where: value}
        with pytest.raises(SuiteError, match=re.escape(key)):
            load_suite(write_suite(tmp_path, d))

    pyproject = {
        "project": {
            "name": "my-components",
            "version": "0.1.0",
            "entry-points": {
                "benchmark.backbones": {"mlp": "my_backbones:MLP"},
                "benchmark.heads": {"nearest_centroid": "my_heads:NearestCentroid"},
            },
        }
    }
    monkeypatch.syspath_prepend(str(_dist_info(tmp_path / "site", pyproject)))
    fresh = Registry()  # the process-wide one has read its entry points already
    assert "mlp" in fresh.names("backbone") and "nearest_centroid" in fresh.names("head")
    head = fresh.build("head", "nearest_centroid", {"shrink": 0.0})
    f = torch.tensor([[0.0, 0.0], [0.0, 1.0], [4.0, 4.0], [4.0, 5.0]])
    y = torch.tensor([3, 3, 7, 7])
    assert head.fit(f, y).predict(torch.tensor([[0.5, 0.5], [3.5, 4.0]])).tolist() == [3, 7]
    net = fresh.build("backbone", "mlp", {"hidden": 8, "feature_dim": 4}).build(num_classes=2)
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 2) and net.features(torch.rand(5, 3, 32, 32)).shape == (5, 4)
