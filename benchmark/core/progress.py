"""Progress bars that switch off with --quiet or when output is not a terminal, and a log handler that writes
above them (through tqdm's writer), so that no log line is glued to a half-drawn bar."""

from __future__ import annotations

import logging
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


def echo(line: str) -> None:
    """Print a line to stdout above any progress bar (tqdm clears bars on stdout and stderr alike)."""
    tqdm.write(line, file=sys.stdout)


class TqdmLogHandler(logging.StreamHandler):
    """Log records written with ``tqdm.write``: the bars are cleared, the line printed, the bars redrawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)
