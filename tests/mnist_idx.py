"""The MNIST subset written as torchvision's raw MNIST files, to exercise the torchvision path offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGES_MAGIC = 0x0803  # IDX: unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x0801  # IDX: unsigned bytes, 1 dimension


def _idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist_raw(npz: Path, root: Path) -> Path:
    """``root``/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte from the subset; returns ``root``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with np.load(npz) as d:
        for split, key in (("train", "train"), ("t10k", "test")):
            _idx(raw / f"{split}-images-idx3-ubyte", IMAGES_MAGIC, d[f"x_{key}"])
            _idx(raw / f"{split}-labels-idx1-ubyte", LABELS_MAGIC, d[f"y_{key}"])
    return root
