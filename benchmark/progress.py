"""Progress bars that switch off with --quiet or when output is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_enabled: bool | None = None  # None: decide by whether stderr is a terminal


def set_enabled(enabled: bool | None) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False) -> Iterator[T]:
    """Wrap an iterable in a tqdm bar when bars are enabled."""
    if not enabled():
        yield from iterable
        return
    yield from tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True)
