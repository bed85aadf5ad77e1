"""Bad input, each with its message and a check that nothing else was lost.

User errors found when the suite is loaded (YAML, keys, names, ranges) print one line and exit 2 before anything is
written. Errors that only show when a cell runs (its data file, its dataset folder, a full disk, a diverging loss)
fail that cell with a clear reason in its MLflow run; the grid goes on and the other cells' results are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_error_line, set_key, tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main

METRICS = ("clean_accuracy", "poisoned_accuracy", "robust_accuracy", "external_accuracy")


def _db() -> Path:
    return Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))


def _cells(suite_name: str) -> dict[str, object]:
    """Child runs by name (defense · attack · seed · dataset/backbone)."""
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(suite_name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {r.info.run_name: r for r in runs if r.data.tags.get("benchmark.role") == "cell"}


# --- caught when the suite is loaded: exit 2, one line, nothing written -------------------------------------------

CASES = {
    # id: (changes as {dotted.path: value}, strings the message must contain)
    "unknown-top-level-key": ({"atacks": {"none": {}}}, ["atacks: unknown key"]),
    "misspelt-section": ({"attacks": None, "atacks": {"none": {}}}, ["atacks: unknown key"]),
    "unknown-param": ({"attacks.lf": {"name": "label_flip", "params": {"rat": 0.1}}},
                      ["attacks.lf.params.rat: unknown key"]),
    "unknown-attack": ({"attacks.x": {"name": "nosuch"}},
                       ["attacks.x.name: unknown attack 'nosuch'", "known:", "label_flip", "poison_frog", "none"]),
    "unknown-defense": ({"defenses.x": {"name": "nosuch"}}, ["defenses.x.name: unknown defense 'nosuch'", "known:",
                                                              "fgsm", "naive", "pgd"]),
    "unknown-dataset": ({"datasets.synthetic.target.name": "nosuch"},
                        ["datasets.synthetic.target.name: unknown dataset 'nosuch'", "known:", "synthetic", "npz",
                         "cifar10"]),
    "defense-eps-above-1": ({"defenses.pgd": {"params": {"eps": 1.5}}}, ["defenses.pgd.params.eps", "[0, 1]", "1.5"]),
    "defense-eps-negative": ({"defenses.fgsm": {"params": {"eps": -0.1}}}, ["defenses.fgsm.params.eps", "-0.1"]),
    "attack-eps-above-1": ({"attacks.pf": {"name": "poison_frog", "params": {"eps": 2.0}}},
                           ["attacks.pf.params.eps", "less than or equal to 1", "2.0"]),
    "robust-eps-negative": ({"evaluation.robust_eps": -0.5}, ["evaluation.robust_eps", "greater than or equal to 0"]),
    "rate-above-1": ({"attacks.lf": {"name": "label_flip", "params": {"rate": 1.5}}},
                     ["attacks.lf.params.rate", "less than or equal to 1", "1.5"]),
    "rate-negative": ({"attacks.lf": {"name": "label_flip", "params": {"rate": -0.1}}},
                      ["attacks.lf.params.rate", "greater than or equal to 0", "-0.1"]),
    "adv-fraction-above-1": ({"defenses.pgd": {"params": {"adv_fraction": 2}}}, ["defenses.pgd.params.adv_fraction"]),
    "empty-class-subset": ({"datasets.synthetic.target.classes": []},
                           ["datasets.synthetic.target.classes", "at least one class"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_suite_is_one_line_exit_2(case, tmp_path, smoke_dict, capsys):
    changes, expected = CASES[case]
    d = tiny_suite(smoke_dict, "bad", attacks=("none",))
    for path, value in changes.items():
        if value is None:
            d.pop(path)
        else:
            set_key(d, path, value)
    suite = write_suite(tmp_path, d)
    assert main(["validate", str(suite)]) == 2
    line = one_error_line(capsys)
    assert str(suite) in line
    for s in expected:
        assert s in line, (s, line)
    assert main(["run", str(suite), "--quiet"]) == 2
    assert one_error_line(capsys) == line  # run refuses with the same message
    assert not _db().exists(), "a suite that does not validate must not create runs"
    assert not Path(os.environ["BENCHMARK_CACHE"]).exists()


@pytest.mark.parametrize(
    "text, where",
    [
        ("name: x\nseeds: [0, 1\ndatasets: {}\n", "line 3, column 9"),
        ("name: x\n  indented: wrongly\n", "line 2, column 11"),
        ("name: x\ndatasets:\n\t- tab\n", "line 3"),
    ],
)
def test_malformed_yaml(text, where, tmp_path, capsys):
    suite = tmp_path / "broken.yaml"
    suite.write_text(text)
    assert main(["run", str(suite), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert f"{suite}:" in line and "malformed YAML" in line and where in line, line
    assert not _db().exists()


def test_unreachable_tracking_uris(tmp_path, smoke_dict, capsys):
    suite = write_suite(tmp_path, tiny_suite(smoke_dict, "bad", attacks=("none",)))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for uri in (f"sqlite:///{blocker / 'mlflow.db'}", "http://127.0.0.1:9/"):
        assert main(["run", str(suite), "--quiet", "--tracking-uri", uri]) == 2
        line = one_error_line(capsys)
        assert line.startswith(f"error: tracking URI {uri} cannot be reached: "), line
    assert not Path(os.environ["BENCHMARK_CACHE"]).exists(), "nothing may run without a store to record it"


# --- found when a cell runs: that cell FAILS with the reason, the grid goes on ------------------------------------


def _damaged_npz(tmp_path: Path) -> tuple[Path, Path]:
    good = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    np.savez(good, x_train=rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8), y_train=np.arange(40) % 4,
             x_test=rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8), y_test=np.arange(20) % 4)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive" * 10)
    return truncated, garbage


@pytest.mark.parametrize("which", ["truncated", "garbage"])
def test_a_damaged_npz_is_refused_before_the_grid(which, tmp_path, smoke_dict, capsys):
    """An npz file is opened (its labels read) when the suite is checked: a damaged one stops `validate` and `run`
    with one line naming the suite key, before any run exists."""
    path = dict(zip(("truncated", "garbage"), _damaged_npz(tmp_path), strict=True))[which]
    d = tiny_suite(smoke_dict, "bad", attacks=("none",))
    d["datasets"]["synthetic"]["target"] = {"name": "npz", "params": {"path": str(path)}}
    suite = write_suite(tmp_path, d)
    for command in (["validate", str(suite)], ["run", str(suite), "--quiet"]):
        assert main(command) == 2
        line = one_error_line(capsys)
        assert f"datasets.synthetic.target.params.path: {path}" in line and "npz archive" in line, line
    assert not _db().exists()


def test_corrupt_data_fails_its_cells_only(tmp_path, smoke_dict, capsys):
    """Missing files stop the run before it starts (tests/data/test_data_check.py), and so do damaged npz files
    (above); a torchvision folder whose files are there but damaged shows when a cell opens it."""
    broken_mnist = tmp_path / "broken-mnist"
    raw = broken_mnist / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00" * 3)  # present, but not IDX files

    d = tiny_suite(smoke_dict, "bad", attacks=("none",))
    external = d["datasets"]["synthetic"]["external"]
    d["datasets"].update({
        "mnist": {"external": external, "target": {"name": "mnist", "params": {"root": str(broken_mnist)}}},
    })
    suite = write_suite(tmp_path, d)
    assert main(["run", str(suite), "--quiet"]) == 1  # some cells failed: not a user error of the whole suite
    captured = capsys.readouterr()
    assert "1 of 2 cells FAILED" in captured.err

    cells = _cells("bad")
    assert len(cells) == 2
    by_dataset = {r.data.tags["dataset"]: r for r in cells.values()}
    ok = by_dataset["synthetic"]
    assert ok.info.status == "FINISHED" and all(m in ok.data.metrics for m in METRICS)
    expected = {
        "mnist": ["dataset 'mnist'", str(broken_mnist)],
    }
    for name, parts in expected.items():
        run = by_dataset[name]
        assert run.info.status == "FAILED", name
        error = run.data.tags["benchmark.error"]
        assert error.startswith("DataError: "), error
        assert "\n" not in error
        for part in parts:
            assert part in error, (name, part, error)
        assert "clean_accuracy" not in run.data.metrics
        # the console line says the same, once
        assert f"{run.info.run_name}: FAILED (DataError: " in captured.out
        assert (captured.out + captured.err).count(error.removeprefix("DataError: ")) == 1, error


def test_nan_loss_fails_that_cell_with_the_reason(tmp_path, smoke_dict, capsys):
    d = tiny_suite(smoke_dict, "bad", attacks=("none",))
    d["defenses"]["blowup"] = {"name": "naive", "params": {"max_epochs": 1, "lr": 1e30}}
    suite = write_suite(tmp_path, d)
    assert main(["run", str(suite), "--quiet"]) == 1
    cells = {r.data.tags["defense"]: r for r in _cells("bad").values()}
    blown = cells["blowup"]
    assert blown.info.status == "FAILED"
    error = blown.data.tags["benchmark.error"]
    assert error.startswith("TrainingDiverged: ") and "lr=1e+30" in error, error
    assert "nan" in error.lower() or "inf" in error.lower(), error
    assert cells["naive"].info.status == "FINISHED"
    assert all(m in cells["naive"].data.metrics for m in METRICS)
    # the diverged weights were not cached: only the good backbone is there
    assert len(list((Path(os.environ["BENCHMARK_CACHE"]) / "backbone").glob("*.pt"))) == 1
    out = capsys.readouterr().out
    assert "blowup · none: FAILED (TrainingDiverged: " in out


def test_corrupt_cache_entry_is_detected_and_rebuilt(tmp_path, smoke_dict, monkeypatch, caplog):
    suite = write_suite(tmp_path, tiny_suite(smoke_dict, "bad", attacks=("none",)))
    assert main(["run", str(suite), "--quiet"]) == 0
    entries = list((Path(os.environ["BENCHMARK_CACHE"]) / "backbone").glob("*.pt"))
    assert len(entries) == 1
    entry = entries[0]
    good_bytes = entry.read_bytes()

    loaded: list[str] = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        if hasattr(f, "getvalue"):
            loaded.append(hashlib.sha256(f.getvalue()).hexdigest())
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    damaged = {
        "garbage": b"\x00garbage" * (len(good_bytes) // 8),  # same size, other bytes
        "truncated": good_bytes[: len(good_bytes) // 2],
    }
    for how, data in damaged.items():
        entry.write_bytes(data)
        caplog.clear()
        assert main(["run", str(suite), "--quiet", "--rerun"]) == 0, how
        # reported ...
        warnings = [r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage()]
        assert len(warnings) == 1 and entry.stem in warnings[0] and "checksum mismatch" in warnings[0], warnings
        # ... never loaded ...
        assert hashlib.sha256(data).hexdigest() not in loaded, how
        # ... and rebuilt: retrained into a valid entry again, with the same weights as before
        rebuilt = entry.read_bytes()
        assert json.loads(entry.with_suffix(".json").read_text())["sha256"] == hashlib.sha256(rebuilt).hexdigest()
        new, old = (real_load(io.BytesIO(b), weights_only=True)["state_dict"] for b in (rebuilt, good_bytes))
        assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new), how

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    runs = list(_cells_all(client, "bad"))
    assert len(runs) == 3
    first, *rebuilt = sorted(runs, key=lambda r: r.info.start_time)
    for r in rebuilt:
        assert r.info.status == "FINISHED"
        assert r.data.metrics["backbone_cached"] == 0.0  # trained again, not read from the damaged file
        assert {m: r.data.metrics[m] for m in METRICS} == {m: first.data.metrics[m] for m in METRICS}
        log_file = client.download_artifacts(r.info.run_id, "cell_log.txt", str(tmp_path))
        assert "is corrupt" in Path(log_file).read_text()  # the run's own log says so too


def _cells_all(client: MlflowClient, suite_name: str):
    exp = client.get_experiment_by_name(suite_name)
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        if r.data.tags.get("benchmark.role") == "cell":
            yield r
