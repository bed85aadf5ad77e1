"""`python -m benchmark` outside the project's environment: one line saying to use `uv run`, no traceback."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_missing_dependency_says_to_use_uv_run():
    # -S: no site-packages at all, as a Python without the project's environment
    out = subprocess.run([sys.executable, "-S", "-m", "benchmark", "list"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and "is not installed" in line
    assert "`uv run python -m benchmark ...`" in line
