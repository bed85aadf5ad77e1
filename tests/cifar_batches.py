"""The CIFAR files of ../shared/data written as torchvision's CIFAR pickles, to run the real-data suites offline.

``cifar10_dev.npz`` holds the first 1,102 records of the official ``data_batch_1`` and the first 1,017 of
``data_batch_2`` (../shared/data/README.md): they are written as those two files, so that records 0-1,101 and
10,000-11,016 of the training set (what suites/cifar-cpu.yaml declares) are where the official files have them.
The other files of the layout are written empty: a suite's records never reach them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR10_NPZ = SHARED / "cifar10_dev.npz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_NPZ = SHARED / "cifar100_subset.npz"


def _batch(path: Path, x: np.ndarray, y: np.ndarray, labels: str = "labels", **extra: list[int]) -> None:
    """One pickle as the official ones are: ``data`` (N, 3072) uint8 channel-major rows, the labels a list."""
    rows = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), 3072)
    with open(path, "wb") as f:
        pickle.dump({"batch_label": path.name, labels: [int(v) for v in y], "data": rows, "filenames": [], **extra}, f)


def write_cifar10_batches(root: Path, npz: Path = CIFAR10_NPZ) -> Path:
    """``root``/cifar-10-batches-py/ from the dev npz (train part -> data_batch_1, test part -> data_batch_2)."""
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    empty_x, empty_y = np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0,), np.int64)
    with np.load(npz) as d:
        _batch(folder / "data_batch_1", d["x_train"], d["y_train"])
        _batch(folder / "data_batch_2", d["x_test"], d["y_test"])
        names = [str(n) for n in d["class_names"]] if "class_names" in d else [str(i) for i in range(10)]
    for name in ("data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        _batch(folder / name, empty_x, empty_y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": 10_000, "num_vis": 3072}, f)
    return root


def write_cifar100_files(root: Path, npz: Path = CIFAR100_NPZ) -> Path:
    """``root``/cifar-100-python/{train,test,meta} from the CIFAR-100 subset (the first records of each file)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(npz) as d:
        for part in ("train", "test"):
            coarse = [int(v) for v in d[f"y_{part}_coarse"]]
            _batch(folder / part, d[f"x_{part}"], d[f"y_{part}"], "fine_labels", coarse_labels=coarse)
        names = [str(n) for n in d["class_names"]]
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": [str(i) for i in range(20)]}, f)
    return root
