"""Datasets: torchvision sets, user npz files, sklearn digits and generated data, behind one ``load_data``.

Importing this package registers the built-in dataset components (registry kind ``"dataset"``): each a
``DataSource`` whose ``load`` returns the raw arrays.
"""

from adapters.datasets import npz, synthetic, torchvision_sets  # noqa: F401  (register built-ins)
from adapters.datasets.base import (
    Dataset,
    DataSource,
    DataSpec,
    RawData,
    Split,
    data_root,
    load_data,
)

__all__ = ["DataSource", "DataSpec", "Dataset", "RawData", "Split", "data_root", "load_data"]
