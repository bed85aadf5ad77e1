"""The runner trains the backbones a grid needs in groups before the cells (``resources.group_backbones``); the
cells find them cached and report what they would have without grouping; a backbone that cannot join a group
trains alone in its cell, and the log says why."""

from __future__ import annotations

import logging

import pytest
from conftest import tiny_suite, write_suite

from benchmark.core.errors import SuiteError
from benchmark.grid.pretrain import grouping_on
from benchmark.grid.runner import run_suite

pytestmark = pytest.mark.usefixtures("one_thread")


def _suite(smoke: dict, group: bool) -> dict:
    d = tiny_suite(smoke, name="grouped", attacks=("none",))
    d["backbones"]["bn"] = {"name": "small_cnn", "params": {"width": 4, "feature_dim": 16, "batch_norm": True}}
    common = {"max_epochs": 2, "lr": 0.002, "stop_at": 1.0}
    d["defenses"] = {"naive": {"params": common}, "pgd": {"params": {**common, "eps": 0.03, "steps": 2}}}
    d["resources"] = {"group_backbones": group}
    return d


def _run(tmp_path, smoke: dict, group: bool) -> dict[str, tuple]:
    where = tmp_path / str(group)
    where.mkdir()
    summary = run_suite(write_suite(where, _suite(smoke, group)), device="cpu",
                        tracking_uri=f"sqlite:///{where}/mlflow.db", cache_dir=str(where / "cache"), echo=lambda *_: None)
    assert summary.failed == 0
    return {cell.title(): (rec.metrics, rec.curves) for cell, rec in summary.records}


def test_grouped_backbones_are_pretrained_and_reused(tmp_path, caplog, smoke_dict):
    with caplog.at_level(logging.INFO, logger="benchmark.grid.pretrain"):
        grouped = _run(tmp_path, smoke_dict, True)
    alone = _run(tmp_path, smoke_dict, False)
    assert grouped.keys() == alone.keys() and len(grouped) == 4
    for title, (metrics, curves) in grouped.items():
        by_group = "small_cnn" in title
        assert metrics["train_group_size"] == (2 if by_group else 1), title
        assert metrics["backbone_cached"] == float(by_group), title  # the cell found it cached
        ref_metrics, ref_curves = alone[title]
        assert ref_metrics["train_group_size"] == 1
        assert curves["train_loss"] == pytest.approx(ref_curves["train_loss"], rel=1e-4), title
        for name in ("external_accuracy", "clean_accuracy", "robust_accuracy"):
            assert metrics[name] == pytest.approx(ref_metrics[name], abs=1e-9), (title, name)
    fallback = [r.getMessage() for r in caplog.records if "train alone in their cells" in r.getMessage()]
    assert len(fallback) == 1 and fallback[0].count("BatchNorm2d") == 2


def test_group_backbones_setting_resolves_or_refuses():
    assert grouping_on("auto", "cuda", "local") and not grouping_on("auto", "cpu", "local")
    assert grouping_on(True, "cpu", "local") and not grouping_on(False, "cuda", "local")
    assert not grouping_on("auto", "cuda", "ray")
    with pytest.raises(SuiteError, match="local executor"):
        grouping_on(True, "cuda", "ray")


def test_a_group_out_of_memory_is_split(tmp_path, smoke_dict, monkeypatch, caplog):
    import torch

    from benchmark.cell.pipeline import RunOptions
    from benchmark.grid import pretrain
    from benchmark.store.cache import Cache
    from benchmark.suite import expand, parse_suite

    d = _suite(smoke_dict, True)
    del d["backbones"]["bn"]
    cells = expand(parse_suite(d))
    assert len(cells) == 2  # naive and PGD of one architecture and settings: one group

    def no_room(members, *args, **kwargs):
        raise torch.OutOfMemoryError("no room")

    monkeypatch.setattr(pretrain, "train_backbones", no_room)
    with caplog.at_level(logging.INFO, logger="benchmark.grid.pretrain"):
        pretrain.pretrain_backbones(cells, RunOptions(cache_dir=str(tmp_path / "cache")))
    lines = [r.getMessage() for r in caplog.records]
    assert any("2 backbones do not fit on cpu together; trying 1 and 1" in line for line in lines)
    assert sum("trains alone in its cell (out of memory in a group)" in line for line in lines) == 2
    assert not Cache(str(tmp_path / "cache")).entries()  # left to the cells
