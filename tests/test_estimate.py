"""The --dry-run time estimate: grows with the work, and counts a cached backbone once."""

from __future__ import annotations

import copy

from benchmark.estimate import estimate, estimate_lines
from benchmark.suite import expand, parse_suite


def _suite(smoke: dict, **changes):
    raw = copy.deepcopy(smoke)
    raw.update(changes)
    suite = parse_suite(raw)
    return suite, expand(suite)


def test_more_epochs_cost_more(smoke_dict):
    base = estimate(*_suite(smoke_dict), gpu=True)
    longer = copy.deepcopy(smoke_dict)
    for d in longer["defenses"].values():
        d["params"]["max_epochs"] *= 3
    more = estimate(*_suite(longer), gpu=True)
    assert more.seconds["training"] > 2.9 * base.seconds["training"]
    assert more.total > base.total
    # PGD's steps make its training dearer than naive training of the same length
    pgd_only = estimate(*_suite(smoke_dict, defenses={"pgd": smoke_dict["defenses"]["pgd"]}), gpu=True)
    naive_only = estimate(*_suite(smoke_dict, defenses={"naive": smoke_dict["defenses"]["naive"]}), gpu=True)
    assert pgd_only.seconds["training"] > naive_only.seconds["training"]


def test_cached_backbone_counted_once(smoke_dict):
    one_attack = estimate(*_suite(smoke_dict, attacks={"none": {}}), gpu=False)
    two_attacks = estimate(*_suite(smoke_dict), gpu=False)  # none + label_flip share each backbone
    assert one_attack.backbones == two_attacks.backbones == len(smoke_dict["defenses"])
    assert two_attacks.seconds["training"] == one_attack.seconds["training"]
    assert two_attacks.cells == 2 * one_attack.cells
    two_seeds = estimate(*_suite(smoke_dict, seeds=[0, 1]), gpu=False)  # a seed is part of the backbone's key
    assert two_seeds.backbones == 2 * two_attacks.backbones
    assert abs(two_seeds.seconds["training"] - 2 * two_attacks.seconds["training"]) < 1e-9


def test_attack_steps_cost_time(smoke_dict):
    pf = {"pf": {"name": "poison_frog", "params": {"target_class": 0, "base_class": 1, "num_targets": 10}}}
    cheap = estimate(*_suite(smoke_dict, attacks=pf), gpu=True)
    pf["pf"]["params"]["steps"] = 400
    dear = estimate(*_suite(smoke_dict, attacks=pf), gpu=True)
    assert dear.seconds["attacks"] > 5 * cheap.seconds["attacks"] > 0


def test_lines_name_the_device(smoke_dict):
    suite, cells = _suite(smoke_dict)
    gpu = estimate_lines(suite, cells, "cuda")
    assert gpu[0].startswith("estimated time:") and "GPU" in gpu[0] and "assumed" in gpu[0]
    cpu = estimate_lines(suite, cells, "cpu")
    assert "CPU" in cpu[0] and "GPU" not in cpu[0]
    assert len(estimate_lines(suite, cells, "auto")) == 3  # both estimates, then what was counted


def test_torch_svm_refits_cost_less_than_linearsvc_fits(smoke_dict):
    pf = {"pf": {"name": "poison_frog", "params": {"target_class": 0, "base_class": 1, "num_targets": 100}}}
    sk = estimate(*_suite(smoke_dict, attacks=pf), gpu=False)
    torch_head = estimate(*_suite(smoke_dict, attacks=pf, head={"name": "torch_svm"}), gpu=False)
    assert 0 < torch_head.seconds["heads"] < sk.seconds["heads"] / 10
    assert torch_head.seconds["attacks"] == sk.seconds["attacks"]
