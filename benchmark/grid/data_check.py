"""Every dataset a suite needs, checked (and fetched on request) before any cell runs.

A missing torchvision dataset or npz file is one ``DataError`` line naming the suite key, the folder searched and
the command that gets it, so that ``validate`` and ``run`` stop with exit 2 before a single run is created; the
contents are checked later, when a cell opens the files. Generated and bundled datasets need nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adapters.datasets import torchvision_sets as tv
from adapters.datasets.base import data_root as default_data_root
from benchmark import COMMAND
from benchmark.core.errors import DataError
from benchmark.suite import Suite


@dataclass(frozen=True)
class Missing:
    key: str  # the suite key, e.g. datasets.cifar.external
    name: str  # the dataset component
    where: Path  # the folder (torchvision root) or file (npz) searched


def find_missing(suite: Suite, data_root: str | Path | None = None, labels: set[str] | None = None) -> list[Missing]:
    """The datasets of ``suite`` (those labelled ``labels``, default all) whose files are not where the cells will
    look for them."""
    out = []
    for label, task in suite.datasets.items():
        if labels is not None and label not in labels:
            continue
        for role in ("external", "target"):
            spec = getattr(task, role).resolved()
            key = f"datasets.{label}.{role}"
            if spec.name in tv.TORCHVISION_SETS:
                root = tv.root_of(tv.TorchvisionParams(**spec.params), default_data_root(data_root))
                if tv.missing_files(spec.name, root):
                    out.append(Missing(key, spec.name, root))
            elif spec.name == "npz":
                path = Path(spec.params["path"]).expanduser()
                path = path if path.is_absolute() else Path.cwd() / path
                if not path.is_file():
                    out.append(Missing(key, "npz", path))
    return out


def ensure_data(
    suite: Suite,
    source: str,
    data_root: str | Path | None = None,
    download: bool = False,
    labels: set[str] | None = None,
) -> None:
    """Raise a one-line DataError for missing data; torchvision datasets are downloaded first when ``download``
    (or the dataset's own ``download: true``) asks for it."""
    missing = find_missing(suite, data_root, labels)
    fetched: set[tuple[str, Path]] = set()
    for m in missing:
        wants = download or _own_download_flag(suite, m.key)
        if m.name in tv.TORCHVISION_SETS and wants and (m.name, m.where) not in fetched:
            print(f"downloading {m.name} into {m.where}")
            tv.download(m.name, m.where)
            fetched.add((m.name, m.where))
    left = find_missing(suite, data_root, labels) if fetched else missing
    if left:
        raise DataError(_message(source, left, data_root))


def _own_download_flag(suite: Suite, key: str) -> bool:
    _, label, role = key.split(".")
    return bool(getattr(suite.datasets[label], role).params.get("download", False))


def _message(source: str, missing: list[Missing], data_root: str | Path | None) -> str:
    first = missing[0]
    if first.name == "npz":
        return (
            f"{source}: {first.key}.params.path: npz file {first.where} not found (relative paths are read from "
            f"the folder the command runs in, {Path.cwd()}); fix the path, or write one with numpy.savez(path, "
            "x_train=..., y_train=..., x_test=..., y_test=...) (README, Data)"
        )
    names = sorted({m.name for m in missing if m.name != "npz"}, key=[m.name for m in missing].index)
    flag = f" --data-root {first.where}" if first.where != default_data_root() else ""
    more = f"; also missing: {', '.join(f'{m.key} ({m.name})' for m in missing[1:])}" if len(missing) > 1 else ""
    return (
        f"{source}: {first.key}: dataset '{first.name}' not found in {first.where}{more}; get "
        f"{'it' if len(names) == 1 else 'them'} with `{COMMAND} data download {' '.join(names)}{flag}` "
        "(or add --download to run), or point --data-root / $BENCHMARK_DATA at a folder that has "
        f"{'it' if len(names) == 1 else 'them'}"
    )
