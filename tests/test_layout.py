"""The layout's import rules, as each package's docstring states them: a module of a part imports only the parts
listed for it (imports inside functions included), and no module imports another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# part -> the parts it may import (itself always)
ALLOWED = {
    "benchmark.core": set(),
    "adapters": {"benchmark.core"},
    "benchmark.suite": {"benchmark.core", "adapters"},
    "benchmark.store": {"benchmark.core"},
    "benchmark.cell": {"benchmark.core", "benchmark.store", "benchmark.suite", "adapters"},
    "benchmark.grid": {"benchmark.core", "benchmark.store", "benchmark.suite", "benchmark.cell", "adapters"},
    "benchmark.report": {"benchmark.core", "benchmark.store", "benchmark.suite", "benchmark.cell", "adapters"},
    "benchmark.cli": {"benchmark", "adapters"},
}
MAX_LINES = 500


def _part(module: str) -> str | None:
    """The part a dotted module belongs to: the longest key of ALLOWED that prefixes it."""
    hits = [p for p in ALLOWED if module == p or module.startswith(p + ".")]
    return max(hits, key=len) if hits else None


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("benchmark", "adapters"):
        for path in sorted((ROOT / top).rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out.append((dotted, path))
    return out


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_follow_the_layout(module, path):
    part = _part(module)
    if part is None:  # benchmark/__init__ and __main__: the command's entry
        return
    for imported, names in _imports(path):
        if imported.split(".")[0] not in ("benchmark", "adapters") or imported == "benchmark":
            continue  # the package root holds only COMMAND, the command as a user types it
        target = _part(imported) or imported
        allowed = ALLOWED[part] | {part}
        assert target in allowed or any(target.startswith(a + ".") or target == a for a in allowed), (
            f"{module} imports {imported}: {part} may import {sorted(allowed)}")
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{module} imports private names {private} from {imported}"


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_no_module_over_500_lines(module, path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{module}: split it (one module, one responsibility)"
