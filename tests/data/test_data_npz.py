"""The generic npz dataset, the shared transforms it goes through, and sklearn's digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from adapters.datasets import DataSpec, load_data
from benchmark.core.errors import DataError, ParamError

SHARED_MNIST = Path(__file__).resolve().parents[2].parent / "shared/data/mnist_subset.npz"


def _write(path: Path, n_train=30, n_test=12, shape=(28, 28), classes=5, seed=0, **override) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test) % classes,
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def _spec(path, **kw) -> DataSpec:
    return DataSpec(name="npz", params={"path": str(path)}, **kw)


def test_npz_nhw_round_trip_keeps_values(tmp_path):
    path = _write(tmp_path / "d.npz")
    raw = np.load(path)
    d = load_data(_spec(path, image_size=None))
    assert d.train.x.shape == (30, 1, 28, 28) and d.test.x.shape == (12, 1, 28, 28)
    assert d.train.x.dtype == torch.float32 and d.train.y.dtype == torch.int64
    assert torch.allclose(d.train.x[:, 0] * 255, torch.from_numpy(raw["x_train"]).float(), atol=1e-3)
    assert torch.equal(d.test.y, torch.from_numpy(raw["y_test"]).long())
    assert d.classes == [0, 1, 2, 3, 4] and d.num_classes == 5


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npz_rgb_layouts_give_the_same_nchw(tmp_path, layout):
    rng = np.random.default_rng(1)
    nhwc = rng.integers(0, 256, (8, 10, 12, 3), dtype=np.uint8)
    x = nhwc if layout == "NHWC" else nhwc.transpose(0, 3, 1, 2)
    path = _write(tmp_path / "d.npz", x_train=x, y_train=np.arange(8) % 2, x_test=x[:4], y_test=np.arange(4) % 2)
    d = load_data(_spec(path, image_size=None))
    assert d.train.x.shape == (8, 3, 10, 12)
    expected = torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(d.train.x, expected)


def test_class_subset_keeps_original_labels_and_limits_take_first(tmp_path):
    path = _write(tmp_path / "d.npz", n_train=50, n_test=20)
    d = load_data(_spec(path, classes=[3, 1], train_limit=7, test_limit=4, image_size=None))
    assert d.classes == [1, 3]
    assert set(d.train.y.tolist()) == {1, 3} and set(d.test.y.tolist()) == {1, 3}
    assert len(d.train) == 7 and len(d.test) == 4
    raw = np.load(path)
    keep = np.isin(raw["y_train"], [1, 3])
    first = torch.from_numpy(raw["x_train"][keep][:7]).float() / 255
    assert torch.allclose(d.train.x[:, 0], first)  # the first 7 after filtering, in file order
    assert torch.equal(d.encode_labels(d.train.y), (d.train.y == 3).long())
    assert torch.equal(d.decode_labels(d.encode_labels(d.test.y)), d.test.y)


def test_class_absent_from_data_is_an_error(tmp_path):
    path = _write(tmp_path / "d.npz", classes=3)
    with pytest.raises(DataError, match=r"classes \[7\]"):
        load_data(_spec(path, classes=[1, 7]))


def test_limit_on_sorted_labels_is_refused(tmp_path):
    y = np.repeat(np.arange(3), 10)
    path = _write(tmp_path / "d.npz", y_train=y)
    with pytest.raises(DataError, match="sorted by"):
        load_data(_spec(path, train_limit=5))
    with pytest.warns(UserWarning, match=r"classes \[2\]"):
        load_data(_spec(path, train_limit=15))


def test_resize_28_to_32_and_channels(tmp_path):
    x = np.zeros((4, 28, 28), np.uint8)
    x[:, 10:18, 10:18] = 255
    path = _write(tmp_path / "d.npz", x_train=x, y_train=np.arange(4) % 2, x_test=x, y_test=np.arange(4) % 2)
    d = load_data(_spec(path))  # image_size defaults to 32
    assert d.train.x.shape == (4, 1, 32, 32)
    assert float(d.train.x.min()) >= 0.0 and float(d.train.x.max()) <= 1.0
    assert d.train.x[0, 0, 16, 16] > 0.99 and d.train.x[0, 0, 0, 0] < 0.01  # not padded: content scaled
    rgb = load_data(_spec(path, channels="rgb"))
    assert rgb.train.x.shape == (4, 3, 32, 32) and torch.equal(rgb.train.x[:, 0], rgb.train.x[:, 2])
    assert torch.allclose(rgb.train.x[:, :1], d.train.x)


def test_grey_is_the_channel_mean_repeated(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    path = _write(tmp_path / "d.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x, y_test=np.arange(6) % 2)
    d = load_data(_spec(path, channels="grey", image_size=None))
    mean = torch.from_numpy(x).float().div(255).mean(-1)
    assert d.train.x.shape == (6, 3, 8, 8)
    for c in range(3):
        assert torch.allclose(d.train.x[:, c], mean, atol=1e-6)


def test_relative_path_resolves_against_cwd(tmp_path, monkeypatch):
    _write(tmp_path / "rel.npz")
    monkeypatch.chdir(tmp_path)
    assert len(load_data(DataSpec(name="npz", params={"path": "rel.npz"})).train) == 30


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(DataError) as info:
        load_data(_spec(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_key_names_file_and_key(tmp_path):
    path = _write(tmp_path / "d.npz", y_test=None)
    with pytest.raises(DataError) as info:
        load_data(_spec(path))
    assert str(path) in str(info.value) and "y_test" in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "npy"])
def test_corrupt_file_names_it(tmp_path, damage):
    path = tmp_path / "bad.npz"
    if damage == "garbage":
        path.write_bytes(b"this is not a zip archive at all" * 10)
    elif damage == "truncated":
        good = _write(tmp_path / "good.npz").read_bytes()
        path.write_bytes(good[: len(good) // 2])
    else:
        with open(path, "wb") as f:
            np.save(f, np.zeros((3, 4)))
    with pytest.raises(DataError) as info:
        load_data(_spec(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_values_and_shapes_are_data_errors(tmp_path):
    path = _write(tmp_path / "f.npz", x_train=np.full((4, 8, 8), 2.0, np.float32), y_train=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_data(_spec(path))
    path = _write(tmp_path / "s.npz", x_train=np.zeros((4, 8), np.uint8), y_train=np.arange(4) % 2)
    with pytest.raises(DataError, match="x_train"):
        load_data(_spec(path))
    path = _write(tmp_path / "n.npz", y_train=np.arange(30) % 5 + 0.5)
    with pytest.raises(DataError, match="y_train"):
        load_data(_spec(path))
    path = _write(tmp_path / "m.npz", y_train=np.arange(29) % 5)
    with pytest.raises(DataError, match="30 images but y_train has 29"):
        load_data(_spec(path))


def test_spec_validation():
    with pytest.raises(ValidationError, match="classes"):
        DataSpec(name="npz", classes=[])
    with pytest.raises(ValidationError, match="train_limit"):
        DataSpec(name="npz", train_limit=0)
    with pytest.raises(ValidationError, match="channels"):
        DataSpec(name="npz", channels="bgr")
    with pytest.raises(ValidationError, match="unknown_key|extra"):
        DataSpec(name="npz", unknown_key=1)
    assert DataSpec(name="npz", classes=[3, 1]).classes == [1, 3]


def test_component_params_are_validated(tmp_path):
    with pytest.raises(ParamError, match="path"):
        load_data(DataSpec(name="npz", params={}))
    with pytest.raises(ParamError, match="colour"):
        load_data(DataSpec(name="npz", params={"path": "x.npz", "colour": True}))
    with pytest.raises(ParamError, match="unknown dataset"):
        load_data(DataSpec(name="no-such-set"))
    spec = DataSpec(name="synthetic", params={"n_train": 8}).resolved()
    assert spec.params["n_train"] == 8 and spec.params["num_classes"] == 4


def test_digits_is_real_tiny_data():
    d = load_data(DataSpec(name="digits", image_size=None))
    assert d.train.x.shape == (1438, 1, 8, 8) and d.test.x.shape == (359, 1, 8, 8)
    assert d.classes == list(range(10))
    assert float(d.train.x.max()) == 1.0 and float(d.train.x.min()) == 0.0
    big = load_data(DataSpec(name="digits", classes=[0, 1], channels="rgb"))
    assert big.train.x.shape[1:] == (3, 32, 32) and set(big.train.y.tolist()) == {0, 1}


def test_shared_mnist_subset_through_npz():
    if not SHARED_MNIST.is_file():
        pytest.skip(f"real MNIST subset not found at {SHARED_MNIST} (shared data folder absent)")
    raw = np.load(SHARED_MNIST)
    d = load_data(
        DataSpec(name="npz", params={"path": str(SHARED_MNIST)}, classes=[0, 1, 2, 3, 4], test_limit=1000)
    )
    n_train = int(np.isin(raw["y_train"], [0, 1, 2, 3, 4]).sum())
    assert d.train.x.shape == (n_train, 1, 32, 32) and d.test.x.shape == (1000, 1, 32, 32)
    assert d.classes == [0, 1, 2, 3, 4]
    assert set(d.train.y.tolist()) == {0, 1, 2, 3, 4}
    keep = np.isin(raw["y_test"], [0, 1, 2, 3, 4])
    assert torch.equal(d.test.y, torch.from_numpy(raw["y_test"][keep][:1000]).long())
    # Digits are bright strokes on black: a plausible ink fraction after resizing.
    assert 0.05 < float(d.train.x.mean()) < 0.25
