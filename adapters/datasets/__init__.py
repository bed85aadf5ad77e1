"""Datasets: torchvision sets, user npz files, sklearn digits and generated data, behind one ``load_data``.

Importing this package registers the built-in dataset components (registry kind ``"dataset"``).
"""

from adapters.datasets import npz, synthetic, torchvision_sets  # noqa: F401  (register built-ins)
from adapters.datasets.base import (
    Dataset,
    DataSpec,
    RawData,
    Split,
    data_root,
    load_data,
)

__all__ = ["DataSpec", "Dataset", "RawData", "Split", "data_root", "load_data"]
