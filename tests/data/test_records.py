"""Subsets of the torchvision datasets declared by record position: the CIFAR-10 layout written from
../shared/data gives, through the records suites/cifar-cpu.yaml declares, exactly the images of the npz."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from cifar_batches import (
    CIFAR10_NPZ,
    CIFAR100_NPZ,
    write_cifar10_batches,
    write_cifar100_files,
)
from conftest import ROOT

from adapters.datasets import DataSpec, load_data
from adapters.datasets.torchvision_sets import TorchvisionParams, parse_records
from benchmark.core.errors import DataError
from benchmark.core.registry import make


def _cifar_root(tmp_path):
    if not CIFAR10_NPZ.is_file():
        pytest.skip(f"real CIFAR-10 images not found at {CIFAR10_NPZ} (they ship in ../shared/data beside the repo)")
    return write_cifar10_batches(tmp_path)


def test_cifar_cpu_records_are_the_shared_npz_byte_for_byte(tmp_path):
    root = _cifar_root(tmp_path)
    suite = yaml.safe_load((ROOT / "suites" / "cifar-cpu.yaml").read_text())
    spec = suite["datasets"]["cifar10"]["target"]
    assert spec["name"] == "cifar10"
    raw = make("dataset", "cifar10", spec["params"]).load(data_root=root)
    with np.load(CIFAR10_NPZ) as d:
        for part in ("train", "test"):
            x, y = getattr(raw, f"x_{part}"), getattr(raw, f"y_{part}")
            assert x.dtype == np.uint8 and x.shape == d[f"x_{part}"].shape
            assert np.array_equal(x, d[f"x_{part}"]) and np.array_equal(y, d[f"y_{part}"])


def test_cifar100_records_are_the_shared_subset(tmp_path):
    """CIFAR-100 has one training and one test file: ``train[0:1117]`` and ``test[0:916]`` are the shared subset."""
    if not CIFAR100_NPZ.is_file():
        pytest.skip(f"CIFAR-100 subset not found at {CIFAR100_NPZ}")
    root = write_cifar100_files(tmp_path)
    records = {"train_records": "train[0:1117]", "test_records": "test[0:916]"}
    raw = make("dataset", "cifar100", records).load(data_root=root)
    with np.load(CIFAR100_NPZ) as d:
        assert np.array_equal(raw.x_train, d["x_train"]) and np.array_equal(raw.y_train, d["y_train"])
        assert np.array_equal(raw.x_test, d["x_test"]) and np.array_equal(raw.y_test, d["y_test"])


def test_records_beyond_the_files_are_one_line(tmp_path):
    root = _cifar_root(tmp_path)
    spec = DataSpec(name="cifar10", params={"train_records": "train[1000:1200]", "test_records": "train[10000:10010]"})
    with pytest.raises(DataError) as info:
        load_data(spec, data_root=root)
    msg = str(info.value)
    assert "train_records 'train[1000:1200]'" in msg and "102 of them are there" in msg and "\n" not in msg


@pytest.mark.parametrize("text", ["train[5:5]", "val[0:10]", "train[0:]", "0:10"])
def test_bad_records_are_refused(text):
    with pytest.raises(ValueError, match="train"):
        TorchvisionParams(train_records=text)


def test_records_parse_with_thousands_separators():
    assert parse_records("train[10_000:11_017]") == ("train", 10_000, 11_017)
