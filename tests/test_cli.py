"""The command line end to end: the smoke suite into a temporary MLflow store, and the one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Run suites/smoke.yaml twice into a private store: first in this process (`main`, as `python -m benchmark`
    calls it), then with --rerun through the CLI in a subprocess, as a user would (its exit code and its quiet
    stderr are the process's own)."""
    import contextlib
    import io
    import os

    base = tmp_path_factory.mktemp("smoke")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(base),
        "MLFLOW_TRACKING_URI": uri,
        "BENCHMARK_CACHE": str(base / "cache"),
    }
    args = ["run", "suites/smoke.yaml", "--quiet"]
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for key, value in env.items():
            mp.setenv(key, value)
        mp.chdir(ROOT)
        code = main(args)
    first = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    cmd = [sys.executable, "-m", "benchmark", *args, "--rerun"]
    second = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    return uri, first, second


def _runs(uri: str):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("benchmark.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("benchmark.role") == "cell"]
    return client, parents, children


def test_smoke_run_lands_in_mlflow(smoke_run):
    uri, first, _ = smoke_run
    assert first.returncode == 0, first.stderr[-3000:]
    assert "results: MLflow store" in first.stdout
    client, parents, children = _runs(uri)
    parent = min(parents, key=lambda r: r.info.start_time)
    mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
    assert len(mine) == 4
    assert {(c.data.tags["defense"], c.data.tags["attack"]) for c in mine} == {
        ("naive", "none"), ("naive", "label_flip"), ("pgd", "none"), ("pgd", "label_flip")
    }
    assert all(c.info.status == "FINISHED" for c in mine)
    for c in mine:
        for metric in ("clean_accuracy", "poisoned_accuracy", "accuracy_drop", "robust_accuracy", "external_accuracy",
                       "attack_seconds", "perturbation_linf_max"):
            assert metric in c.data.metrics, (metric, c.data.tags)
        assert 0.0 <= c.data.metrics["clean_accuracy"] <= 1.0
        assert c.data.params["defense"] == c.data.tags["defense"]
        assert c.data.params["seed"] == "0"
        assert c.data.params["budget_check"] == "passed"
        assert c.data.tags["dataset"] == "synthetic" and c.data.tags["backbone"] == "small_cnn"
    lf = next(c for c in mine if c.data.tags["attack"] == "label_flip" and c.data.tags["defense"] == "pgd")
    assert lf.data.params["attack.rate"] == "0.1"
    assert lf.data.params["defense.eps"] == "0.03137"
    assert lf.data.metrics["poisons_per_trial"] == 40  # 10% of 400 training images
    history = client.get_metric_history(lf.info.run_id, "curve.train_loss")
    assert len(history) >= 1 and [m.step for m in history] == list(range(len(history)))
    artifacts = {a.path for a in client.list_artifacts(lf.info.run_id)}
    assert {"poisons.npz", "budget_check.txt", "cell_log.txt", "label_flips.csv", "label_flips.png"} <= artifacts
    assert "poison_examples.png" not in artifacts  # label flip changes no image
    # what the MLflow UI shows first: names that lead with what differs, the headline, the experiment's kind
    assert lf.info.run_name == "pgd · label_flip"  # one seed, dataset and backbone: no suffix repeated in every row
    assert lf.data.tags["mlflow.note.content"].startswith("clean ")
    assert "→ poisoned" in lf.data.tags["mlflow.note.content"]
    for c in mine:  # rounded to 6 significant digits: no float32 tail such as 0.92500001
        assert all(v == float(f"{v:.6g}") for v in c.data.metrics.values())
    exp = client.get_experiment_by_name("smoke")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"].startswith("Naive vs PGD adversarial training")
    note = parent.data.tags["mlflow.note.content"]  # the parent's description: its cells and their headlines
    assert "| pgd · label_flip | FINISHED | clean " in note
    # the parent carries the suite file, versions and the commit
    assert "smoke.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.params["version.torch"]
    assert parent.data.params["suite"] == "smoke"
    assert "version.art" in parent.data.params and "version.torchattacks" in parent.data.params


def test_second_run_reuses_the_cache(smoke_run):
    uri, _, second = smoke_run
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr == "", "--quiet prints only the summary (no log line, no MLflow INFO line)"
    _, parents, children = _runs(uri)
    assert len(parents) == 2 and len(children) == 8
    latest = max(parents, key=lambda r: r.info.start_time).info.run_id
    again = [c for c in children if c.data.tags["mlflow.parentRunId"] == latest]
    assert [c.data.metrics["backbone_cached"] for c in again] == [1.0] * 4


def test_second_run_gives_identical_metrics(smoke_run):
    """Determinism on CPU: the same suite and seed give identical metrics (the cache aside, nothing differs)."""
    uri, _, _ = smoke_run
    _, parents, children = _runs(uri)
    by_parent: dict[str, dict[str, dict]] = {}
    for c in children:
        by_parent.setdefault(c.data.tags["mlflow.parentRunId"], {})[c.data.tags["benchmark.cell_key"]] = c.data.metrics
    a, b = by_parent.values()
    keys = ("clean_accuracy", "poisoned_accuracy", "robust_accuracy", "external_accuracy")
    assert {k: {m: v[m] for m in keys} for k, v in a.items()} == {k: {m: v[m] for m in keys} for k, v in b.items()}


def test_resume_skips_finished_cells(tmp_path, smoke_dict, capsys):
    suite = write_suite(tmp_path, tiny_suite(smoke_dict))  # naive x (none, label_flip), 16x16 images, one epoch
    assert main(["run", str(suite), "--quiet", "--only", "attack=none"]) == 0
    assert main(["run", str(suite), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 cells, 1 already finished, 1 to run" in out


def test_dry_run_prints_grid(capsys):
    assert main(["run", str(ROOT / "suites/smoke.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells" in out
    assert out.count(" · s0 · synthetic/small_cnn\n") == 0  # one seed, dataset and backbone: not in the names
    assert "pgd · label_flip\n" in out


@pytest.mark.parametrize("argv", [["run", "--help"], ["validate", "--help"], ["list", "--help"], ["ui", "--help"],
                                  ["report", "--help"], ["cache", "--help"]])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_validate_broken_suite_prints_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text((ROOT / "suites/smoke.yaml").read_text().replace("rate: 0.1", "rate: 2.0"))
    assert main(["validate", str(bad)]) == 2  # `python -m benchmark` exits with main's code (tests/test_main.py)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "broken.yaml" in lines[0] and "attacks.label_flip.params.rate" in lines[0]
    assert "Traceback" not in err


def test_validate_good_suite(capsys):
    assert main(["validate", str(ROOT / "suites/smoke.yaml")]) == 0
    assert "valid suite 'smoke', 4 cells" in capsys.readouterr().out


def test_list_shows_components_with_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("label_flip", "poison_frog", "adv_poison", "pgd", "fgsm", "naive", "synthetic", "npz", "small_cnn",
                 "vgg13", "resnet18", "linear_svc", "trades", "fast_at", "free_at", "robustbench", "timm", "knn_label",
                 "art_activation_clustering", "art_spectral_signature"):
        assert f"  {name} " in out, name
    assert "rate = 0.02" in out


def test_unreachable_tracking_uri_is_one_line(tmp_path, smoke_dict, capsys):
    suite = write_suite(tmp_path, smoke_dict)
    code = main(["run", str(suite), "--quiet", "--tracking-uri", "http://127.0.0.1:9/"])
    err = capsys.readouterr().err
    assert code == 2
    assert "tracking URI http://127.0.0.1:9/ cannot be reached" in err


def test_report_command_answers(capsys, tmp_path):
    code = main(["report", "--suite", "no-such-suite", "--out", str(tmp_path)])
    assert code in (1, 2)
    captured = capsys.readouterr()
    assert captured.out.strip() or captured.err.strip()


def test_every_argument_has_help_and_list_prints_short_floats(capsys):
    from benchmark.cli.commands import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"`{name} {'/'.join(action.option_strings) or action.dest}` has no help text"
    dry = next(a for a in sub.choices["run"]._actions if a.dest == "dry_run")
    assert "estimate" in dry.help and "data" in dry.help
    only = next(a for a in sub.choices["run"]._actions if a.dest == "only")
    assert "filter" in only.help
    assert main(["list", "attack"]) == 0
    out = capsys.readouterr().out
    assert "eps = 0.0313725" in out and "0.03137254901960784" not in out
