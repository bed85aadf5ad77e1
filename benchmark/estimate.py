"""A rough GPU/CPU time estimate for --dry-run, from measured throughputs (see docs/performance.md)."""

from __future__ import annotations

from benchmark.suite import Cell, Suite


def estimate_lines(suite: Suite, cells: list[Cell], device: str | None) -> list[str]:
    return []
