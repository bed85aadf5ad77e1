"""Work is never thrown away for a cache that cannot be written: a read-only cache, a cache path that is a file (or
under one), a disk that fills mid-grid. The trained backbone is kept in memory for the rest of the run (one warning,
the cells FINISH, the next cell of the same backbone reuses it); `cache list` on a file is an error, not "0 entries"."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from conftest import tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _cells(name: str) -> list:
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return sorted((r for r in runs if r.data.tags.get("benchmark.role") == "cell"), key=lambda r: r.info.start_time)


@pytest.fixture(autouse=True)
def _fresh_memory(monkeypatch):
    """Each test starts with nothing held in memory and no warning given (they are per process)."""
    from benchmark.store import cache

    monkeypatch.setattr(cache, "_IN_MEMORY", {})
    monkeypatch.setattr(cache, "_WARNED", set())


def _two_cells_one_backbone(tmp_path, smoke_dict, name: str) -> Path:
    return write_suite(tmp_path, tiny_suite(smoke_dict, name))  # attacks none and label_flip share the backbone


@pytest.mark.parametrize("where", ["a-file", "under-a-file"])
def test_a_cache_that_cannot_be_written_warns_once_and_loses_nothing(where, tmp_path, smoke_dict, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache should be\n")
    cache_dir = blocker if where == "a-file" else blocker / "cache"
    suite = _two_cells_one_backbone(tmp_path, smoke_dict, "nocache")
    assert main(["run", str(suite), "--quiet", "--device", "cpu", "--cache-dir", str(cache_dir)]) == 0
    err = capsys.readouterr().err
    assert err.count("cannot be written") == 1 and f"cache {cache_dir} cannot be written" in err, err
    assert "Traceback" not in err
    first, second = _cells("nocache")
    assert first.info.status == second.info.status == "FINISHED"
    assert first.data.metrics["backbone_cached"] == 0.0  # trained once ...
    assert second.data.metrics["backbone_cached"] == 1.0  # ... and reused from memory, not trained again
    assert blocker.read_text() == "a file where the cache should be\n"


def test_a_disk_that_fills_mid_grid_keeps_the_trained_backbone(tmp_path, smoke_dict, monkeypatch, capsys):
    """ENOSPC on the first backbone's write: before, that cell FAILED after training; now it FINISHES, no temp file
    is left, and the next cell of that backbone reuses it."""
    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to tell the cache's files apart")
    cache = Path(os.environ["BENCHMARK_CACHE"]).resolve()
    real_fsync = os.fsync
    failed: list[str] = []

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(str(cache / "backbone")) and not failed:
            failed.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    suite = _two_cells_one_backbone(tmp_path, smoke_dict, "diskfills")
    assert main(["run", str(suite), "--quiet", "--device", "cpu"]) == 0
    assert failed, "the simulated full disk was never hit"
    err = capsys.readouterr().err
    assert err.count("cannot be written (No space left on device)") == 1, err
    first, second = _cells("diskfills")
    assert first.info.status == second.info.status == "FINISHED"
    assert second.data.metrics["backbone_cached"] == 1.0
    assert not list((cache / "backbone").iterdir())  # no temp file and no half entry
    assert list((cache / "features").glob("*.pt"))  # the other writes still went to disk


@pytest.mark.parametrize("action", ["list", "clear"])
def test_cache_commands_on_a_file_are_one_line(action, tmp_path, capsys):
    blocker = tmp_path / "cache.txt"
    blocker.write_text("mine\n")
    assert main(["cache", action, "--cache-dir", str(blocker)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --cache-dir {blocker}: not a folder"]
    assert blocker.read_text() == "mine\n"
