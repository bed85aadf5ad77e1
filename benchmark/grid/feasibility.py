"""What the data decides before a grid runs: every class a suite names exists, a limit leaves a task of two or more
classes, and every attack and filter can do what its parameters say with the rows and images it will get.

Labels are read without images where that is cheap (synthetic data regenerates its label order from the seed,
``digits`` ships its table, an ``npz`` file's label arrays are read alone); torchvision sets are checked when a
cell loads them. A parameter the data cannot honour is refused here, one line naming the suite key; the cell's own
check (a FAILED cell) remains for what cannot be known in advance, so a number is never silently lowered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.errors import DataError, ParamError, short
from benchmark.grid.estimate import KNOWN_SIZES
from benchmark.suite import Cell, Suite

NATIVE_SIDE = {"mnist": 28, "cifar10": 32, "cifar100": 32, "svhn": 32, "digits": 8}
MAX_SEEDS_CHECKED = 1_000  # a limit makes synthetic label order seed-dependent: the first seeds are checked here


@dataclass(frozen=True)
class Labels:
    """One dataset role's labels as a cell gets them (class subset and limits applied); None where unknown."""

    train: np.ndarray | None
    present: list[int] | None  # every class of the source data, before the subset
    side: int | None  # image side after resize


def check_feasible(suite: Suite, cells: list[Cell], source: str) -> None:
    """Raise a one-line ParamError or DataError (``source: key: ...``) for the first thing the data cannot do."""
    labels: dict[tuple[str, str, int], Labels] = {}
    seeds = sorted({c.seed for c in cells})[:MAX_SEEDS_CHECKED]
    seen: set[tuple[Any, ...]] = set()
    for cell in cells:
        if cell.seed not in seeds:
            continue
        for role in ("external", "target"):
            key = (cell.dataset, role, _seed_key(getattr(cell, role), cell.seed))
            if key not in labels:
                labels[key] = _labels_of(suite, cell.dataset, role, cell.seed, source)
        target = labels[(cell.dataset, "target", _seed_key(cell.target, cell.seed))]
        combo = (cell.dataset, _seed_key(cell.target, cell.seed), cell.attack.label, cell.filter.label)
        if combo not in seen:
            seen.add(combo)
            _check_cell(cell, target, source)


def _seed_key(spec: Any, seed: int) -> int:
    """Only generated data under a limit has a seed-dependent label set."""
    limited = spec.train_limit is not None or spec.test_limit is not None
    return seed if spec.name == "synthetic" and limited else -1


def _labels_of(suite: Suite, label: str, role: str, seed: int, source: str) -> Labels:
    spec = getattr(suite.datasets[label], role).resolved()
    where = f"{source}: datasets.{label}.{role}"
    raw = _raw_labels(spec, seed, f"{where}.params.path")
    if raw is None:
        total = KNOWN_SIZES.get(spec.name)
        present = list(range(total[2])) if total else None
        _check_classes(spec, present, where)
        return Labels(None, present, _side(spec, None))
    (y_train, y_test), side = raw
    present = sorted(set(np.unique(y_train).tolist()) | set(np.unique(y_test).tolist()))
    _check_classes(spec, sorted(set(np.unique(y_train).tolist())), where)
    train = _limited(y_train, spec.classes, spec.train_limit, "train", where, seed)
    _limited(y_test, spec.classes, spec.test_limit, "test", where, seed)
    return Labels(train, present, _side(spec, side))


def _raw_labels(spec: Any, seed: int, path_key: str) -> tuple[tuple[np.ndarray, np.ndarray], int | None] | None:
    """(train and test labels, native image side) of the source data, or None where they cost a full load."""
    if spec.name == "synthetic":
        from adapters.datasets.synthetic import SyntheticParams, labels_only

        params = SyntheticParams(**spec.params)
        y_train, y_test = labels_only(params, seed)
        return (y_train.numpy(), y_test.numpy()), params.image_size
    if spec.name == "digits":
        from adapters.datasets.npz import digits_table

        y = digits_table()[:, -1].astype(np.int64)
        n_train = int(round(0.8 * len(y)))  # as load_digits splits it
        return (y[:n_train], y[n_train:]), 8
    if spec.name == "npz":
        return _npz_labels(Path(spec.params["path"]), path_key), None
    return None


def _npz_labels(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The label arrays of an npz file; a file that is not one (a link to something else included) is one line."""
    from adapters.datasets.npz import not_an_archive

    path = path.expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    shown = f"{path} (a link to {path.resolve()})" if path.is_symlink() else str(path)
    problem = not_an_archive(path)
    if problem:
        raise DataError(f"{key}: {path} {problem}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(f"{key}: {shown} holds a single array, not an .npz archive")
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive.files]
            if missing:
                raise DataError(f"{key}: {shown} lacks key(s) {', '.join(missing)}")
            y_train, y_test = archive["y_train"], archive["y_test"]
    except DataError:
        raise
    except Exception as err:  # not a zip, an object array, unreadable: whatever numpy and zipfile raise
        what = " ".join(str(err).split())[:120]
        raise DataError(f"{key}: {shown} is not a readable .npz archive ({type(err).__name__}: {what})") from None
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{key}: {shown}, key {name}: labels must be integers, got {y.dtype}")
    return y_train.reshape(-1), y_test.reshape(-1)


def _check_classes(spec: Any, present: list[int] | None, where: str) -> None:
    if spec.classes is None or present is None:
        return
    missing = [c for c in spec.classes if c not in set(present)]
    if missing:
        raise DataError(f"{where}.classes: {short(missing)} not in the data (its classes: {short(present)})")


def _limited(
    y: np.ndarray, classes: list[int] | None, limit: int | None, part: str, where: str, seed: int
) -> np.ndarray:
    """The labels a cell gets: the class subset in source order, then the first ``limit`` (as ``load_data``)."""
    if classes is not None:
        y = y[np.isin(y, classes)]
    if limit is None:
        return y
    before, after = sorted(np.unique(y).tolist()), sorted(np.unique(y[:limit]).tolist())
    if len(before) > 1 and len(after) < 2:
        raise DataError(f"{where}.{part}_limit: {limit} keeps only class {after} of {short(before)} (seed {seed}); "
                        "raise the limit")
    return y[:limit]


def _side(spec: Any, native: int | None) -> int | None:
    return spec.image_size if spec.image_size is not None else native or NATIVE_SIDE.get(spec.name)


def _check_cell(cell: Cell, target: Labels, source: str) -> None:
    from benchmark.core.registry import REGISTRY

    attack = REGISTRY.build("attack", cell.attack.name, cell.attack.params)
    data = f"datasets.{cell.dataset}.target"
    task = attack.task_classes()
    if task is not None and target.present is not None:
        have = target.present if cell.target.classes is None else cell.target.classes
        missing = [c for c in task if c not in have]
        if missing:
            raise ParamError(f"{source}: {_key(cell, 'attack', '')}: the attack's classes {missing} are not in "
                             f"{data} (its classes: {short(have)})")
    param, side = attack.min_image_side()
    if param and target.side is not None and side > target.side:
        raise ParamError(f"{source}: {_key(cell, 'attack', param)}: {side} does not fit the "
                         f"{target.side}x{target.side} images of {data}")
    if target.train is None:
        return
    seed = f" (seed {cell.seed})" if _seed_key(cell.target, cell.seed) >= 0 else ""
    for cls, (param, need) in attack.rows_needed().items():
        have = int((target.train == cls).sum())
        if need > have:
            raise ParamError(f"{source}: {_key(cell, 'attack', param)}: {need} needs {need} training rows of class "
                             f"{cls}; {data} has {have}{seed}")
    _check_filter(cell, target.train if task is None else target.train[np.isin(target.train, task)], source, seed)


def _check_filter(cell: Cell, rows: np.ndarray, source: str, seed: str) -> None:
    if not cell.filtered:
        return
    from benchmark.core.registry import REGISTRY

    param, need = REGISTRY.build("filter", cell.filter.name, cell.filter.params).rows_needed()
    if need > len(rows):
        raise ParamError(f"{source}: {_key(cell, 'filter', param)}: {cell.filter.params.get(param)} needs {need} "
                         f"training rows; the task of attack '{cell.attack.label}' on datasets.{cell.dataset}.target "
                         f"has {len(rows)}{seed}")


def _key(cell: Cell, axis: str, param: str) -> str:
    """The suite key of a component's parameter: ``attacks.wb.params.num_poisons``, or its sweep when swept."""
    comp = getattr(cell, axis)
    base, swept = cell.sweeps.get(axis, (comp.label, {}))
    if param in swept:
        return f"{axis}s.{base}.sweep.{param} ({comp.label})"
    return f"{axis}s.{base}.params" + (f".{param}" if param else "")
