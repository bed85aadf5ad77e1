"""Ctrl-C and SIGTERM during `benchmark run`: both stop the grid the same way (cells KILLED, exit 128 + signal).

``handled()`` makes SIGTERM raise like Ctrl-C, as ``Interrupted`` (a KeyboardInterrupt that knows its signal), and
counts real signals, so code can tell a user's Ctrl-C from a KeyboardInterrupt that an attack raised itself.
``deferred()`` holds signals for the length of a store call and raises them after it; ``shielded()`` holds them
for good during clean-up, so a second Ctrl-C cannot cut the clean-up short. All of it acts in the main thread
only and leaves a caller's own handlers alone.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: object) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def received() -> int:
    """How many real signals ``handled()`` has seen in this process."""
    return len(_received)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` inside the block."""
    if not _main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _ours(signum: int, handler: object) -> bool:
    return handler is _raise or (signum == signal.SIGINT and handler is signal.default_int_handler)


@contextmanager
def _held(raise_after: bool) -> Iterator[None]:
    handlers = {s: signal.getsignal(s) for s in SIGNALS} if _main_thread() else {}
    mine = [s for s, h in handlers.items() if _ours(s, h)]
    pending: list[int] = []
    for s in mine:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s in mine:
            signal.signal(s, handlers[s])
        if pending and raise_after:
            if handlers[pending[0]] is _raise:
                _raise(pending[0], None)
            raise KeyboardInterrupt


def deferred() -> AbstractContextManager[None]:
    """Signals that arrive inside the block are raised when it ends (a store call is never cut in half)."""
    return _held(raise_after=True)


def shielded() -> AbstractContextManager[None]:
    """Signals that arrive inside the block are dropped: the process is already stopping."""
    return _held(raise_after=False)
