"""CIFAR-10, CIFAR-100, MNIST and SVHN through torchvision, as raw uint8 arrays.

The folder is the ``root`` you would give torchvision itself (so an existing torchvision data folder works as is):
the dataset's ``root`` parameter, else ``--data-root`` / $BENCHMARK_DATA, else ~/.cache/robust-poison-bench/data.
Nothing is downloaded unless asked (``download: true``, ``run --download`` or ``benchmark data download``);
``missing_files`` lets a suite be checked before any cell runs, ``download`` fetches with torchvision's progress bar.

``train_records`` / ``test_records`` declare a subset by position in the official files (``"train[0:1102]"``:
records 0 to 1,101 of the official training files, Python slice notation), so that a CPU-sized suite reads exactly
the images it names, whoever downloaded them. CIFAR records are read from the python pickles that hold them (the
training set is ``data_batch_1`` to ``_5`` of 10,000 records each, in order); the other sets are sliced after
torchvision opened them.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
from pydantic import field_validator

from adapters.datasets.base import DataSource, RawData
from adapters.datasets.base import data_root as default_data_root
from benchmark.core.errors import DataError
from benchmark.core.registry import Params, register


class TorchvisionParams(Params):
    download: bool = False  # fetch the files from the internet when missing
    root: str | None = None  # the torchvision root folder; None: --data-root / $BENCHMARK_DATA / ~/.cache/...
    # which records of the official files make each split, e.g. "train[0:1102]"; None: the official split itself
    train_records: str | None = None
    test_records: str | None = None

    @field_validator("train_records", "test_records")
    @classmethod
    def _records(cls, v: str | None) -> str | None:
        if v is not None:
            parse_records(v)
        return v


_RECORDS = re.compile(r"^(train|test)\[(\d+):(\d+)\]$")


def parse_records(text: str) -> tuple[str, int, int]:
    """``"train[0:1102]"`` -> ("train", 0, 1102): the official split and a half-open range of record positions."""
    m = _RECORDS.match(text.replace(" ", "").replace(",", "").replace("_", ""))
    if m is None:
        raise ValueError(f"'{text}' is not SPLIT[START:END] with SPLIT train or test, e.g. 'train[0:1102]'")
    split, start, end = m.group(1), int(m.group(2)), int(m.group(3))
    if end <= start:
        raise ValueError(f"'{text}': END must be larger than START")
    return split, start, end


# name -> (torchvision class name, what torchvision expects under the root, description)
_SETS = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "CIFAR-10 (torchvision): 50k/10k 32x32 RGB, 10 classes"),
    "cifar100": ("CIFAR100", "cifar-100-python", "CIFAR-100 (torchvision): 50k/10k 32x32 RGB, 100 fine classes"),
    "mnist": ("MNIST", "MNIST/raw", "MNIST (torchvision): 60k/10k 28x28 grey digits"),
    "svhn": ("SVHN", "train_32x32.mat and test_32x32.mat", "SVHN (torchvision): 73k/26k 32x32 RGB digits (no extra)"),
}


def _root(params: TorchvisionParams, data_root: Path | None) -> Path:
    if params.root:
        return Path(params.root).expanduser()
    return default_data_root(data_root)


def _expected(root: Path, name: str) -> Path:
    layout = _SETS[name][1]
    return root / layout if name != "svhn" else root


TORCHVISION_SETS = tuple(_SETS)


def root_of(params: TorchvisionParams, data_root: Path | None) -> Path:
    """The torchvision root a dataset's params and the data root point at."""
    return _root(params, data_root)


def missing_files(name: str, root: Path) -> list[Path]:
    """The files torchvision would need under ``root`` for both splits of ``name`` and does not find (their
    names come from torchvision's own classes; contents are checked when the dataset is opened)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _SETS[name][0])
    if name == "mnist":
        needed = [root / cls.__name__ / "raw" / Path(f).stem for f, _ in cls.resources]
    elif name == "svhn":
        needed = [root / cls.split_list[split][1] for split in ("train", "test")]
    else:
        names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        needed = [root / cls.base_folder / f for f in names]
    return [p for p in needed if not p.is_file()]


def download(name: str, root: Path) -> None:
    """Fetch both splits of ``name`` into ``root`` (torchvision shows a progress bar per file)."""
    params = TorchvisionParams(download=True, root=str(root))
    for train in (True, False):
        _open(name, params, None, train=train)


def _open(name: str, params: TorchvisionParams, data_root: Path | None, train: bool):
    import torchvision.datasets as tvd

    cls_name, layout, _ = _SETS[name]
    root = _root(params, data_root)
    cls = getattr(tvd, cls_name)
    kwargs = {"split": "train" if train else "test"} if name == "svhn" else {"train": train}
    try:
        return cls(root=str(root), download=params.download, **kwargs)
    except RuntimeError as err:
        if params.download:
            raise DataError(
                f"dataset '{name}': download into {root} failed or the files are corrupt ({_one_line(err)})"
            ) from None
        where = _expected(root, name)
        if (name != "svhn" and where.exists()) or (name == "svhn" and any(root.glob("*_32x32.mat"))):
            raise DataError(
                f"dataset '{name}' in {where} is incomplete or corrupt (torchvision's check failed: "
                f"{_one_line(err)}); remove it and set `download: true`, or point --data-root / BENCHMARK_DATA at a "
                "good copy"
            ) from None
        raise DataError(
            f"dataset '{name}' not found in {where} (torchvision layout: {layout} under {root}); "
            "set `download: true` in the dataset's params, or point --data-root / BENCHMARK_DATA at a folder "
            "that has it"
        ) from None
    except ImportError as err:  # SVHN needs scipy to read .mat files
        raise DataError(f"dataset '{name}' needs a package that is not installed ({_one_line(err)})") from None
    # network errors (URLError is an OSError), damaged files (torchvision asserts on a malformed MNIST file)
    except (OSError, ValueError, EOFError, AssertionError) as err:
        action = "download into" if params.download else "read from"
        raise DataError(f"dataset '{name}': could not {action} {root} ({_one_line(err)})") from None


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    x = ds.data
    y = getattr(ds, "targets", None)
    if y is None:
        y = ds.labels  # SVHN
    x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
    return x, y.astype(np.int64)


class TorchvisionSet(DataSource):
    """The torchvision set called ``name``: its official splits, or the records ``*_records`` name."""

    Params = TorchvisionParams

    def load(self, seed: int = 0, data_root: Path | None = None) -> RawData:
        p = self.params
        x_train, y_train = _split(self.name, p, data_root, "train", p.train_records)
        x_test, y_test = _split(self.name, p, data_root, "test", p.test_records)
        return RawData(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _split(
    name: str, params: TorchvisionParams, data_root: Path | None, part: str, records: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """One split of the dataset: the official one, or the records ``records`` declares."""
    if records is None:
        return _arrays(_open(name, params, data_root, train=part == "train"))
    split, start, end = parse_records(records)
    if name in _CIFAR_FILES:
        x, y = _cifar_records(name, _root(params, data_root), split, start, end)
    else:
        x, y = _arrays(_open(name, params, data_root, train=split == "train"))
        x, y = x[start:end], y[start:end]
    if len(y) != end - start:
        raise DataError(
            f"dataset '{name}': {part}_records '{records}' asks for records {start} to {end - 1} of the official "
            f"{split} files; {len(y)} of them are there"
        )
    return x, y


# CIFAR's official python pickles: (folder, files of the training set, of the test set, records per file, label key)
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], 10_000, "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], 50_000, "fine_labels"),
}


def _cifar_records(name: str, root: Path, split: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Records [start, end) of CIFAR's official ``split``, read from the pickles they live in (record r is record
    r mod n of file r div n), as NHWC uint8 images and int64 labels."""
    folder, train_files, test_files, per_file, label_key = _CIFAR_FILES[name]
    files = train_files if split == "train" else test_files
    xs, ys = [], []
    for i, fname in enumerate(files):
        lo, hi = max(start, i * per_file), min(end, (i + 1) * per_file)
        if lo >= hi:
            continue
        data, labels = _cifar_file(name, root / folder / fname, label_key)
        xs.append(data[lo - i * per_file : hi - i * per_file])
        ys.append(labels[lo - i * per_file : hi - i * per_file])
        if hi - lo > len(xs[-1]):  # a short file: the records after it are not where the positions say
            break
    x = np.concatenate(xs) if xs else np.zeros((0, 3072), np.uint8)
    y = np.concatenate(ys) if ys else np.zeros((0,), np.int64)
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y


def _cifar_file(name: str, path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"dataset '{name}' not found: {path} is missing (torchvision layout under {path.parent.parent})")
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3072)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as err:  # a truncated or foreign file: whatever unpickling or reshaping raised
        raise DataError(f"dataset '{name}': {path} is corrupt ({_one_line(err)}); remove it and download again") from None
    if len(data) != len(labels):
        raise DataError(f"dataset '{name}': {path} is corrupt ({len(data)} images, {len(labels)} labels)")
    return data, labels


@register
class CIFAR10(TorchvisionSet):
    name = "cifar10"
    description = _SETS[name][2]


@register
class CIFAR100(TorchvisionSet):
    name = "cifar100"
    description = _SETS[name][2]


@register
class MNIST(TorchvisionSet):
    name = "mnist"
    description = _SETS[name][2]


@register
class SVHN(TorchvisionSet):
    name = "svhn"
    description = _SETS[name][2]
