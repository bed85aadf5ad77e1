"""`cache clear` removes only what the cache wrote; entries are readable by the other users of a shared cache."""

from __future__ import annotations

import os
import stat

import torch

from benchmark.cli.commands import main
from benchmark.store.cache import Cache


def _filled(tmp_path):
    root = tmp_path / "somewhere"
    cache = Cache(root)
    cache.save("backbone", "0123456789abcdef", {"w": torch.zeros(2)})
    cache.save("features", "fedcba9876543210", {"f": torch.ones(2)})
    (root / "notes.txt").write_text("mine")
    (root / "backbone" / "weights-i-trained.pt").write_bytes(b"x")
    (root / "backbone" / "config.json").write_text("{}")  # a .json the cache did not write
    (root / "features" / ".0123456789abcdef.pt.abc123.tmp").write_bytes(b"half")  # a crashed write of ours
    return root, cache


def test_clear_removes_only_its_own_entries(tmp_path, capsys):
    root, cache = _filled(tmp_path)
    assert main(["cache", "clear", "--cache-dir", str(root)]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert left == ["backbone/config.json", "backbone/weights-i-trained.pt", "notes.txt"]
    assert not (root / "features").exists()  # emptied folders of ours go


def test_clear_of_one_kind_and_of_an_unrelated_folder(tmp_path, capsys):
    root, cache = _filled(tmp_path)
    assert cache.clear("features") == 1
    assert cache.load("backbone", "0123456789abcdef") is not None
    other = tmp_path / "home"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    assert main(["cache", "clear", "--cache-dir", str(other)]) == 0
    assert (other / "thesis.tex").read_text() == "years of work"


def test_entries_have_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o002)  # a group-shared filesystem
    try:
        path = Cache(tmp_path).save("backbone", "0123456789abcdef", {"w": torch.zeros(1)})
    finally:
        os.umask(old)
    for p in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o664
