"""Sweeps in suites: labelled variants, validation, exclusion, --only, tags, dry-run."""

from __future__ import annotations

import copy

import pytest
from conftest import write_suite

from benchmark.cli.commands import main as cli_main
from benchmark.core.errors import SuiteError
from benchmark.report.aggregate import SuiteGrid
from benchmark.suite import expand, load_suite, parse_only, sweep_metric


@pytest.fixture
def swept(smoke_dict) -> dict:
    d = copy.deepcopy(smoke_dict)
    d["attacks"] = {
        "none": {},
        "pf": {"name": "poison_frog", "params": {"eps": 0.03, "num_targets": 3}, "sweep": {"num_poisons": [1, 5]}},
    }
    d["defenses"]["pgd"]["sweep"] = {"steps": [2, 5]}
    del d["defenses"]["pgd"]["params"]["steps"]
    d["evaluation"]["sweep"] = {"robust_eps": [0.01, 0.05]}
    d.pop("grid", None)
    return d


def test_sweep_expands_into_labelled_variants(swept, tmp_path):
    cells = expand(load_suite(write_suite(tmp_path, swept)))
    attacks = {c.attack.label for c in cells}
    defenses = {c.defense.label for c in cells}
    assert attacks == {"none", "pf[num_poisons=1]", "pf[num_poisons=5]"}
    assert defenses == {"naive", "pgd[steps=2]", "pgd[steps=5]"}
    assert len(cells) == 3 * 3
    pf5 = next(c for c in cells if c.attack.label == "pf[num_poisons=5]" and c.defense.label == "naive")
    assert pf5.attack.params["num_poisons"] == 5 and pf5.attack.params["eps"] == 0.03  # merged, defaults filled
    assert pf5.attack.name == "poison_frog"
    tags = pf5.tags()
    assert tags["attack"] == "pf[num_poisons=5]" and tags["attack.base"] == "pf"
    assert tags["sweep.attack.num_poisons"] == "5"
    assert "defense.base" not in tags  # naive is not swept
    assert len({c.key for c in cells}) == len(cells)


def test_unswept_keys_do_not_change_when_a_sibling_is_swept(swept, smoke_dict, tmp_path):
    plain = {c.title(): c.key for c in expand(load_suite(write_suite(tmp_path, smoke_dict, "a.yaml")))}
    d = copy.deepcopy(smoke_dict)
    d["attacks"]["label_flip"]["sweep"] = {"mode": ["random", "different"]}
    after = {c.title(): c.key for c in expand(load_suite(write_suite(tmp_path, d, "b.yaml")))}
    pgd_none = "pgd · none"
    assert after[pgd_none] == plain[pgd_none]


@pytest.mark.parametrize(
    ("sweep", "params", "message"),
    [
        ({"num_poisons": []}, {}, r"attacks\.pf\.sweep\.num_poisons: list at least one value"),
        ({"num_poisons": [1, 0]}, {}, r"attacks\.pf\.sweep\.num_poisons"),
        ({"num_poisons": [1, 2]}, {"num_poisons": 3}, r"attacks\.pf\.sweep\.num_poisons: also set in pf\.params"),
        ({"num_poison": [1, 2]}, {}, r"attacks\.pf\.sweep\.num_poison"),
        ({"num_poisons": 5}, {}, r"attacks\.pf\.sweep\.num_poisons"),
    ],
)
def test_bad_sweeps_name_the_key(swept, tmp_path, sweep, params, message):
    swept["attacks"]["pf"]["sweep"] = sweep
    swept["attacks"]["pf"]["params"].update(params)
    with pytest.raises(SuiteError, match=message):
        expand(load_suite(write_suite(tmp_path, swept)))


def test_bad_evaluation_sweep(swept, tmp_path):
    swept["evaluation"]["sweep"] = {"robust_eps": [0.1, 2.0]}
    with pytest.raises(SuiteError, match=r"evaluation\.sweep"):
        load_suite(write_suite(tmp_path, swept))
    swept["evaluation"]["sweep"] = {"robust_steps": [1, 2]}
    with pytest.raises(SuiteError, match=r"evaluation\.sweep"):
        load_suite(write_suite(tmp_path, swept))


def test_exclusion_and_only_by_written_label_or_variant(swept, tmp_path):
    swept["grid"] = {"exclude": [{"defense": "pgd", "attack": "pf[num_poisons=1]"}]}
    suite = load_suite(write_suite(tmp_path, swept))
    cells = expand(suite)
    assert not any(c.defense.label.startswith("pgd") and c.attack.label == "pf[num_poisons=1]" for c in cells)
    assert len(cells) == 9 - 2
    only = expand(suite, parse_only(["attack=pf"]))
    assert {c.attack.label for c in only} == {"pf[num_poisons=1]", "pf[num_poisons=5]"}


def test_only_keeps_commas_inside_a_variant_label(swept, tmp_path):
    swept["attacks"]["pf"]["sweep"] = {"num_poisons": [1, 5], "steps": [3, 4]}
    suite = load_suite(write_suite(tmp_path, swept))
    assert parse_only(["attack=pf[num_poisons=1,steps=3],none"]) == {"attack": ["pf[num_poisons=1,steps=3]", "none"]}
    cells = expand(suite, parse_only(["attack=pf[num_poisons=1,steps=3]", "defense=naive"]))
    assert [c.attack.label for c in cells] == ["pf[num_poisons=1,steps=3]"]


def test_report_grid_expands_sweeps_like_the_suite(swept, tmp_path):
    suite = load_suite(write_suite(tmp_path, swept))
    grid = SuiteGrid.from_raw(swept)
    assert grid.labels["attack"] == suite.axis_labels()["attack"]
    assert grid.name("attack", "pf[num_poisons=5]") == "poison_frog"
    assert len(grid.expected()) == len(expand(suite))


def test_dry_run_shows_sweeps(swept, tmp_path, capsys):
    assert cli_main(["run", str(write_suite(tmp_path, swept)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "pf[num_poisons=5]" in out and "pgd[steps=2]" in out
    assert "sweep attacks.pf: num_poisons [1, 5] -> 2 variants" in out
    assert "sweep evaluation.robust_eps: [0.01, 0.05]" in out


def test_sweep_metric_names_are_valid_mlflow_names():
    from mlflow.utils.validation import _validate_metric_name

    name = sweep_metric("robust_accuracy", "robust_eps", 0.0314)
    assert name == "robust_accuracy.robust_eps_0.0314"
    _validate_metric_name(name)
