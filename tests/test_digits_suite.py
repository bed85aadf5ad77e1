"""suites/digits-cpu.yaml, the Quick start's real-data suite, end to end with no download: shrunk to seconds (one
epoch, two steps) and sliced to its no-attack and adversarial-poisoning cells, it runs and its report checks the
paper's claims on them (T1, T4) and writes vector figures."""

from __future__ import annotations

import socket

import pytest
import yaml
from conftest import ROOT, write_suite

from benchmark.cli.commands import main
from benchmark.report import build_report


def _shrunk() -> dict:
    d = yaml.safe_load((ROOT / "suites" / "digits-cpu.yaml").read_text())
    for spec in d["defenses"].values():
        spec["params"].update(max_epochs=1)
    d["defenses"]["pgd"]["params"].update(steps=1)
    d["attacks"]["adv_poison"]["params"].update(steps=2)
    d["evaluation"].update(robust_steps=2, robust_samples=20)
    return d


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_digits_suite_runs_offline_and_its_report_checks_the_claims(tmp_path, one_thread, no_network, capsys):
    suite = write_suite(tmp_path, _shrunk(), "digits-cpu.yaml")
    assert main(["validate", str(suite)]) == 0  # nothing to download
    assert main(["run", str(suite), "--quiet", "--only", "attack=none,adv_poison"]) == 0
    assert capsys.readouterr().out.count("FINISHED") == 4
    result = build_report(suite="digits-cpu", out=tmp_path / "reports")
    report = (result.directory / "report.md").read_text()
    assert "## Claims" in report and "The paper's claims, checked" in report, report[:3000]
    assert "| T1 | digits/small_cnn |" in report and "| T4 | digits/small_cnn |" in report
    assert "is generated" not in report  # real digits: a claims table, not the synthetic data's note
    svgs = sorted(p.name for p in (result.directory / "figures").glob("*.svg"))
    assert "accuracy_clean_vs_poisoned.svg" in svgs and "heatmap_poisoned_accuracy.svg" in svgs
    assert "([SVG](figures/heatmap_poisoned_accuracy.svg))" in report
