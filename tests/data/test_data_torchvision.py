"""torchvision datasets: a missing folder is a clean one-line DataError, and nothing touches the network."""

from __future__ import annotations

import gzip
import socket
import struct

import numpy as np
import pytest
import torch

from adapters.datasets import DataSpec, data_root, load_data
from benchmark.core.errors import DataError


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "svhn"])
def test_missing_dataset_names_the_folder(tmp_path, name, no_network):
    root = tmp_path / "empty root"
    with pytest.raises(DataError) as info:
        load_data(DataSpec(name=name, params={"root": str(root)}))
    msg = str(info.value)
    assert str(root) in msg and "download: true" in msg and "BENCHMARK_DATA" in msg
    assert "\n" not in msg


def test_data_root_precedence(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("BENCHMARK_DATA", str(tmp_path / "from-env"))
    assert data_root() == tmp_path / "from-env"
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"
    with pytest.raises(DataError, match="from-env"):
        load_data(DataSpec(name="cifar10"))
    with pytest.raises(DataError, match="explicit"):
        load_data(DataSpec(name="cifar10"), data_root=tmp_path / "explicit")
    monkeypatch.delenv("BENCHMARK_DATA")
    assert data_root() == data_root(None) and "robust-poison-bench" in str(data_root())


def _idx(path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # unsigned byte
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def test_mnist_folder_in_torchvision_layout_loads(tmp_path, no_network):
    """A (fake, tiny) MNIST in torchvision's raw idx layout goes through torchvision and our transforms."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y_train = (np.arange(20) % 10).astype(np.uint8)
    x_test = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    y_test = (np.arange(6) % 10).astype(np.uint8)
    _idx(raw / "train-images-idx3-ubyte", x_train)
    _idx(raw / "train-labels-idx1-ubyte", y_train)
    _idx(raw / "t10k-images-idx3-ubyte", x_test)
    _idx(raw / "t10k-labels-idx1-ubyte", y_test)
    d = load_data(DataSpec(name="mnist", classes=[2, 7], channels="rgb"), data_root=tmp_path)
    assert d.train.x.shape == (4, 3, 32, 32) and d.test.x.shape == (1, 3, 32, 32)
    assert d.train.y.tolist() == [2, 7, 2, 7] and d.classes == [2, 7]
    same = load_data(DataSpec(name="mnist", image_size=None), data_root=tmp_path)
    assert torch.allclose(same.train.x[:, 0] * 255, torch.from_numpy(x_train).float(), atol=1e-3)


def test_corrupt_folder_is_reported_as_corrupt(tmp_path, no_network):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataError) as info:
        load_data(DataSpec(name="cifar10"), data_root=tmp_path)
    msg = str(info.value)
    assert "corrupt" in msg and str(folder) in msg and "\n" not in msg
