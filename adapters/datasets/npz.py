"""Datasets from files: a user's own ``.npz`` and scikit-learn's bundled 8x8 digits (real tiny data for tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adapters.datasets.base import DataSource, RawData
from benchmark.core.errors import DataError
from benchmark.core.registry import Params, register

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class NpzParams(Params):
    # A relative path is resolved against the current working directory (where the command runs).
    path: str


@register
class Npz(DataSource):
    name = "npz"
    description = (
        "your own data: an .npz with x_train, y_train, x_test, y_test (uint8 images NHW, NHWC or NCHW; int labels)"
    )
    Params = NpzParams

    def load(self, seed: int = 0, data_root: Path | None = None) -> RawData:
        path = Path(self.params.path).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.is_file():
            raise DataError(f"npz dataset file {path} does not exist")
        problem = not_an_archive(path)
        if problem:
            raise DataError(f"npz dataset file {path} {problem}")
        arrays = _read_arrays(path)
        _check_arrays(path, arrays)
        return RawData(**arrays)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of the archive at ``path``; DataError, one line, whatever is wrong with it."""
    arrays = {}
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(
                f"npz dataset file {path} holds a single array, not an .npz archive with {', '.join(NPZ_KEYS)}"
            )
        with archive as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise DataError(
                    f"npz dataset file {path} lacks key(s) {', '.join(missing)} "
                    f"(needs {', '.join(NPZ_KEYS)}; has {', '.join(f.files) or 'none'})"
                )
            for key in NPZ_KEYS:
                try:
                    arrays[key] = f[key]
                except Exception as err:  # a damaged member, or an object array that would need pickle
                    raise DataError(
                        f"npz dataset file {path}, key {key}: cannot be read ({_one_line(err)})"
                    ) from None
    except DataError:
        raise
    except Exception as err:  # not a zip, truncated, unreadable: whatever numpy/zipfile/zlib raise
        raise DataError(
            f"npz dataset file {path} is not a readable .npz archive ({_one_line(err)})"
        ) from None
    return arrays


def _check_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for key in ("x_train", "x_test"):
        if arrays[key].ndim not in (3, 4):
            raise DataError(f"npz dataset file {path}, key {key}: images must be NHW, NHWC or NCHW, "
                            f"got shape {arrays[key].shape}")
    for key in ("y_train", "y_test"):
        if not np.issubdtype(arrays[key].dtype, np.integer):
            raise DataError(f"npz dataset file {path}, key {key}: labels must be integers, got {arrays[key].dtype}")


ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive of .npy members
NPY_MAGIC = b"\x93NUMPY"


def not_an_archive(path: Path) -> str | None:
    """Why ``path`` (followed through links) is not an .npz archive, from its first bytes; None when it may be.

    Checked before numpy reads it: given any other file, ``np.load`` answers that it "contains pickled data"."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if head.startswith(ZIP_MAGIC):
        return None
    shown = f" (a link to {path.resolve()})" if path.is_symlink() else ""
    if head.startswith(NPY_MAGIC):
        return f"{shown} holds a single .npy array, not an .npz archive with {', '.join(NPZ_KEYS)}".lstrip()
    return f"{shown} is not an .npz archive (a zip of {', '.join(NPZ_KEYS)}); it starts with {head!r}".lstrip()


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@register
class Digits(DataSource):
    name = "digits"
    description = (
        "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); first 80% train, last 20% test"
    )

    def load(self, seed: int = 0, data_root: Path | None = None) -> RawData:
        data = digits_table()
        x = data[:, :-1].reshape(-1, 8, 8)
        y = data[:, -1].astype(np.int64)
        # Pixel values are 0..16: scale to uint8 0..255.
        x = np.rint(x * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (1797, 8, 8)
        n_train = int(round(0.8 * len(y)))  # deterministic split; the file's order cycles through the classes
        return RawData(x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])


def digits_table() -> np.ndarray:
    """The (1797, 65) table behind ``sklearn.datasets.load_digits`` (64 pixels, then the label).

    Read straight from the file scikit-learn ships, because importing ``sklearn.datasets`` pulls in scipy and
    pandas (seconds on a small machine); falls back to ``load_digits`` if the file is not where it used to be.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return np.loadtxt(path, delimiter=",", dtype=np.float64)
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return np.concatenate([bunch.data, bunch.target[:, None]], axis=1)
