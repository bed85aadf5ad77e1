"""Attacks cannot cheat the budget check: they work on copies, labels are checked against the task, and what they
raise (sys.exit, a KeyboardInterrupt of their own) fails their cell, never the grid."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from pydantic import Field

from adapters.attacks.base import Attack, PoisonResult, PoisonTrial, run_attack
from benchmark.core import signals
from benchmark.core.errors import AttackError, BudgetError
from benchmark.core.registry import Params

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters"))
from toy_context import make_ctx  # noqa: E402  (the adapter tests' tiny context)

EPS = 0.03


class EpsParams(Params):
    eps: float = Field(EPS, ge=0.0, le=1.0)


class _Base(Attack):
    name = "hostile"
    Params = EpsParams

    def max_poisons(self, n_train: int) -> int:
        return 3


class EditsItsInputs(_Base):
    """Moves three training images far away, then returns them 'unchanged' relative to the edited tensors."""

    def forward(self, ctx):
        idx = torch.arange(3)
        ctx.x_train[idx] = 1.0 - ctx.x_train[idx]  # in place: the check would compare against these
        ctx.f_train.zero_()
        for p in ctx.extractor.parameters():
            p.data.zero_()
        ctx.head.weight.zero_()
        return PoisonResult(trials=[PoisonTrial(indices=idx, y=ctx.y_train[idx].clone(), x=ctx.x_train[idx].clone())])


class InventsLabels(_Base):
    def forward(self, ctx):
        idx = torch.arange(2)
        return PoisonResult(trials=[PoisonTrial(indices=idx, y=torch.tensor([0, 7]), x=ctx.x_train[idx].clone())])


class RaisesEvents(_Base):
    what: BaseException = SystemExit(3)

    def forward(self, ctx):
        raise self.what


class RaisesBudgetAfter(_Base):
    """Claims a larger budget once it has run."""

    def forward(self, ctx):
        self.max_poisons = lambda n: 10_000
        idx = torch.arange(10)
        return PoisonResult(trials=[PoisonTrial(indices=idx, y=ctx.y_train[idx].clone(), x=ctx.x_train[idx].clone())])


@pytest.fixture
def ctx():
    return make_ctx(n_train=40, n_test=20, size=8)


def test_in_place_edits_do_not_reach_the_check_or_the_cell(ctx):
    pristine = {k: getattr(ctx, k).clone() for k in ("x_train", "f_train")}
    weights = [p.clone() for p in ctx.extractor.parameters()]
    head_w = ctx.head.weight.clone()
    with pytest.raises(BudgetError, match="exceeds eps"):
        run_attack(EditsItsInputs(), ctx, classes=[0, 1])
    assert torch.equal(ctx.x_train, pristine["x_train"]) and torch.equal(ctx.f_train, pristine["f_train"])
    assert all(torch.equal(a, b) for a, b in zip(weights, ctx.extractor.parameters(), strict=True))
    assert torch.equal(ctx.head.weight, head_w)


def test_labels_outside_the_task_are_refused(ctx):
    with pytest.raises(BudgetError, match=r"labels \[7\] are not classes of the task"):
        run_attack(InventsLabels(), ctx, classes=[0, 1])


def test_budget_is_read_before_the_attack_runs(ctx):
    with pytest.raises(BudgetError, match="10 changed samples exceed the budget of 3"):
        run_attack(RaisesBudgetAfter(), ctx, classes=[0, 1])


@pytest.mark.parametrize("what", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()], ids=repr)
def test_exits_and_fake_interrupts_fail_the_cell(ctx, what):
    attack = RaisesEvents()
    attack.what = what
    with signals.handled(), pytest.raises(AttackError, match=type(what).__name__):
        run_attack(attack, ctx, classes=[0, 1])


def test_a_real_ctrl_c_during_an_attack_still_stops_the_grid(ctx):
    class SlowAttack(_Base):
        def forward(self, ctx):
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while the attack runs
            raise AssertionError("not reached: the signal raises first")

    with signals.handled(), pytest.raises(KeyboardInterrupt):
        run_attack(SlowAttack(), ctx, classes=[0, 1])


def test_an_exiting_attack_fails_its_cell_and_the_grid_goes_on(tmp_path, smoke_dict, capsys, monkeypatch):
    """End to end: a plugin attack calling sys.exit() is one FAILED cell; the run exits 1, not 3."""
    from conftest import tiny_suite, write_suite

    from benchmark.cli.commands import main

    plugin = tmp_path / "exiting_attack.py"
    plugin.write_text(
        "import sys\nfrom adapters.attacks.base import Attack\n"
        "class Exits(Attack):\n    name = 'exits'\n    def forward(self, ctx):\n        sys.exit(0)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    d = tiny_suite(smoke_dict, "exiting")
    d["attacks"] = {"none": {}, "exits": {"name": "exiting_attack:Exits"}}
    assert main(["run", str(write_suite(tmp_path, d)), "--quiet", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "exits" in out and "AttackError: attack 'exits' raised SystemExit" in out
    assert "naive · none: ok" in out
    assert sys.exc_info() == (None, None, None)
