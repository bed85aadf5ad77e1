"""Whether a folder can be written, asked before any work that would write there is done."""

from __future__ import annotations

import tempfile
from pathlib import Path


def unwritable(folder: str | Path) -> str | None:
    """Why a file cannot be created in ``folder`` (created when missing): a file in the way, no permission, a full
    or read-only disk; None when it can."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check."):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None
