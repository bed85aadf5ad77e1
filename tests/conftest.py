from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist_subset.npz"


@pytest.fixture(autouse=True)
def _isolated_stores(tmp_path_factory, monkeypatch):
    """Every test gets its own cache and MLflow store unless it sets them itself."""
    base = tmp_path_factory.mktemp("stores")
    monkeypatch.setenv("BENCHMARK_CACHE", str(base / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")
    monkeypatch.setenv("BENCHMARK_DATA", str(base / "data"))


@pytest.fixture
def smoke_dict() -> dict:
    return yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())


def write_suite(tmp_path: Path, data: dict, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(copy.deepcopy(data), sort_keys=False))
    return path


def mnist_path() -> Path:
    if not SHARED_MNIST.exists():
        pytest.skip(f"real MNIST subset not found at {SHARED_MNIST} (it ships in ../shared/data beside the repo)")
    return SHARED_MNIST


def tiny_suite(smoke: dict, name: str = "tiny", attacks: tuple[str, ...] = ("none", "label_flip")) -> dict:
    """The smoke suite shrunk to seconds per cell: 16x16 images, a few hundred of them, one epoch, one defense."""
    d = copy.deepcopy(smoke)
    d["name"] = name
    for role, n_train, n_test in (("external", 160, 40), ("target", 60, 30)):
        spec = d["datasets"]["synthetic"][role]
        spec["params"].update(n_train=n_train, n_test=n_test, image_size=16)
        spec["image_size"] = 16
    d["backbones"]["small_cnn"]["params"] = {"width": 4, "feature_dim": 16}
    d["defenses"] = {"naive": {"params": {"max_epochs": 1, "lr": 0.002}}}
    d["attacks"] = {k: v for k, v in d["attacks"].items() if k in attacks}
    d["evaluation"].update(robust_steps=2, robust_samples=10)
    return d


def one_error_line(capsys, max_len: int | None = None) -> str:
    """What a refused input printed: one line on stderr starting "error: ", no traceback; returns that line."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[:2000]
    if max_len is not None:
        assert len(lines[0]) < max_len, lines[0][:2000]
    return lines[0]


def set_key(d: dict, path: str, value, sep: str = ".", create: bool = False) -> None:
    """Set a nested key of a suite dict by its path ("attacks.lf.params.rate"). The levels above it must exist (a
    KeyError then names a mistyped path in the test itself) unless ``create`` adds a section the suite lacks."""
    *head, last = path.split(sep)
    for key in head:
        d = d.setdefault(key, {}) if create else d[key]
    d[last] = value


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread is faster, and much faster on a busy shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


MAX_WORKERS = 4  # each worker imports torch and MLflow (about 1 GB); more than this buys little


def pytest_xdist_auto_num_workers(config):  # noqa: ARG001
    """``-n auto`` (pyproject's addopts): one worker per core, at most MAX_WORKERS (one more than cores measured
    slower: 402 s vs 394 s on 2 cores, every worker imports torch and MLflow to collect)."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_configure(config):  # noqa: ARG001
    """Under xdist, split the cores between workers: torch's own threads would otherwise oversubscribe them, and
    the suites that tests start in subprocesses inherit the same share through OMP_NUM_THREADS."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        import torch

        torch.set_num_threads(share)


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    """Tests marked ``cuda`` skip where no CUDA device is (CI); the device check runs them on a card."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run on a GPU by scripts/gpu_check.sh)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
