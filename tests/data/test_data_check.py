"""The data check before any cell runs: one line and exit 2 for missing data, no run created; downloads on request;
and suites/mnist-cpu.yaml on torchvision's MNIST reads the very images of the MNIST subset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import ROOT, mnist_path, one_error_line, tiny_suite, write_suite
from mlflow.tracking import MlflowClient
from mnist_idx import write_mnist_raw

from adapters.datasets import load_data
from adapters.datasets import torchvision_sets as tv
from benchmark.cli.commands import main
from benchmark.core.errors import BenchmarkError, DataError
from benchmark.grid.data_check import ensure_data, find_missing
from benchmark.grid.preflight import check_cpu_fallback
from benchmark.suite import expand, load_suite

MNIST_CPU = ROOT / "suites" / "mnist-cpu.yaml"
PAPER = ROOT / "suites" / "paper.yaml"


def _no_runs() -> bool:
    db = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    if not db.exists():
        return True
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    return not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_validate_names_key_folder_and_command_for_missing_torchvision_data(capsys):
    root = Path(os.environ["BENCHMARK_DATA"])
    assert main(["validate", str(MNIST_CPU)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {MNIST_CPU}: datasets.mnist.external: dataset 'mnist' not found in {root}")
    assert "also missing: datasets.mnist.target (mnist)" in line
    assert "`uv run python -m benchmark data download mnist`" in line
    assert not root.exists(), "checking must not create or download anything"


def test_run_without_data_leaves_the_store_untouched(capsys):
    assert main(["run", str(PAPER), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert "datasets.cifar.external: dataset 'cifar100' not found" in line
    assert "data download cifar100 cifar10 svhn mnist" in line
    assert _no_runs()
    assert not Path(os.environ["BENCHMARK_CACHE"]).exists()


def test_missing_npz_names_the_path_key(tmp_path, smoke_dict, capsys):
    d = tiny_suite(smoke_dict, "npzless")
    d["datasets"]["synthetic"]["target"] = {"name": "npz", "params": {"path": str(tmp_path / "absent.npz")}}
    suite = write_suite(tmp_path, d)
    assert main(["run", str(suite), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert f"datasets.synthetic.target.params.path: npz file {tmp_path / 'absent.npz'} not found" in line
    assert _no_runs()


def test_only_the_selected_datasets_are_checked(tmp_path, smoke_dict):
    d = tiny_suite(smoke_dict, "two")
    d["datasets"]["digits"] = {"external": {"name": "mnist"}, "target": {"name": "mnist"}}
    suite = load_suite(write_suite(tmp_path, d))
    assert [m.key for m in find_missing(suite)] == ["datasets.digits.external", "datasets.digits.target"]
    assert find_missing(suite, labels={"synthetic"}) == []


def test_download_fetches_missing_torchvision_data_once_before_the_grid(tmp_path, monkeypatch):
    npz = mnist_path()
    calls = []

    def fake_download(name: str, root: Path) -> None:  # no network here: "download" writes the files
        calls.append((name, root))
        write_mnist_raw(npz, root)

    monkeypatch.setattr(tv, "download", fake_download)
    suite = load_suite(MNIST_CPU)
    root = tmp_path / "data"
    with pytest.raises(DataError):
        ensure_data(suite, "mnist-cpu.yaml", root)
    assert calls == []
    ensure_data(suite, "mnist-cpu.yaml", root, download=True)
    assert calls == [("mnist", root)]  # both roles share one dataset: fetched once
    assert find_missing(suite, root) == []


def test_data_download_command_skips_what_is_there(tmp_path, capsys):
    root = write_mnist_raw(mnist_path(), tmp_path / "data")
    assert main(["data", "download", "mnist", "--data-root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == f"mnist: already in {root}"
    assert main(["data", "download", "imagenet"]) == 2
    assert "not a torchvision dataset" in one_error_line(capsys)


def test_mnist_cpu_on_torchvision_reads_the_subsets_images(tmp_path, capsys):
    """The suite's torchvision specs give the same tensors as the same specs over the npz subset."""
    npz = mnist_path()
    root = write_mnist_raw(npz, tmp_path / "data")
    assert main(["validate", str(MNIST_CPU), "--data-root", str(root)]) == 0
    assert "valid suite 'mnist-cpu', 30 cells" in capsys.readouterr().out
    cell = expand(load_suite(MNIST_CPU))[0]
    for spec in (cell.external, cell.target):
        assert spec.name == "mnist"
        via_torchvision = load_data(spec, data_root=root)
        via_npz = load_data(spec.model_copy(update={"name": "npz", "params": {"path": str(npz)}}))
        for part in ("train", "test"):
            a, b = getattr(via_torchvision, part), getattr(via_npz, part)
            assert len(a) == spec.train_limit if part == "train" else len(a) == spec.test_limit
            assert torch.equal(a.y, b.y) and torch.equal(a.x, b.x)


def test_a_gpu_suite_on_a_cpu_asks_first(monkeypatch, smoke_dict, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    paper = load_suite(PAPER)
    cells = expand(paper)
    with pytest.raises(BenchmarkError) as err:
        check_cpu_fallback(paper, cells, "suites/paper.yaml", None)
    msg = str(err.value)
    assert "sized for a GPU (device: auto)" in msg and "CPU-hours" in msg
    assert "--device cpu" in msg and "--yes" in msg and "--dry-run" in msg
    check_cpu_fallback(paper, cells, "suites/paper.yaml", "cpu")  # asked for explicitly: no question
    smoke = load_suite(write_suite(tmp_path, smoke_dict))
    check_cpu_fallback(smoke, expand(smoke), "smoke.yaml", None)  # minutes on a CPU: starts as is
