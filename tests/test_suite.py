"""Suite loading, validation messages, and grid expansion."""

from __future__ import annotations

import copy

import pytest
from conftest import ROOT, write_suite

from benchmark.core.errors import SuiteError
from benchmark.suite import expand, load_suite, parse_only


def test_every_shipped_suite_validates():
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        suite = load_suite(path)
        assert expand(suite), path


def test_smoke_grid_is_two_by_two(smoke_dict, tmp_path):
    cells = expand(load_suite(write_suite(tmp_path, smoke_dict)))
    assert len(cells) == 4
    assert {(c.defense.label, c.attack.label) for c in cells} == {
        ("naive", "none"), ("naive", "label_flip"), ("pgd", "none"), ("pgd", "label_flip")
    }
    # every parameter is resolved, defaults included
    lf = next(c for c in cells if c.attack.label == "label_flip")
    assert lf.attack.params["rate"] == 0.1 and lf.attack.params["mode"] == "random"
    assert lf.defense.params["batch_size"] == 64
    assert len({c.key for c in cells}) == 4


def test_keys_are_stable_and_change_with_parameters(smoke_dict, tmp_path):
    a = expand(load_suite(write_suite(tmp_path, smoke_dict, "a.yaml")))
    b = expand(load_suite(write_suite(tmp_path, smoke_dict, "b.yaml")))
    assert [c.key for c in a] == [c.key for c in b]
    changed = copy.deepcopy(smoke_dict)
    changed["attacks"]["label_flip"]["params"]["rate"] = 0.2
    c = expand(load_suite(write_suite(tmp_path, changed, "c.yaml")))
    assert {x.key for x in a if x.attack.label == "none"} == {x.key for x in c if x.attack.label == "none"}
    assert {x.key for x in a if x.attack.label != "none"}.isdisjoint({x.key for x in c})


def test_exclude_and_only(smoke_dict, tmp_path):
    d = copy.deepcopy(smoke_dict)
    d["seeds"] = [0, 1, 2]
    d["grid"] = {"exclude": [{"defense": "naive", "attack": "label_flip"}, {"seed": [1, 2], "attack": "none"}]}
    suite = load_suite(write_suite(tmp_path, d))
    cells = expand(suite)
    # 2 defenses x 2 attacks x 3 seeds = 12, minus naive+lf (3) minus seeds 1,2 with none (2 defenses x 2) = 5
    assert len(cells) == 12 - 3 - 4
    assert not any(c.defense.label == "naive" and c.attack.label == "label_flip" for c in cells)
    only = expand(suite, parse_only(["defense=pgd", "seed=0,1"]))
    assert {(c.defense.label, c.seed) for c in only} == {("pgd", 0), ("pgd", 1)}
    assert len(only) == 3  # pgd: none@0, lf@0, lf@1


@pytest.mark.parametrize("arg", ["defense", "colour=red", "defense="])
def test_only_rejects_bad_slices(arg):
    with pytest.raises(SuiteError, match="--only"):
        parse_only([arg])


def test_only_rejects_unknown_label(smoke_dict, tmp_path):
    suite = load_suite(write_suite(tmp_path, smoke_dict))
    with pytest.raises(SuiteError, match="--only defense=fgsm: not in the suite"):
        expand(suite, parse_only(["defense=fgsm"]))


def _mutate(d: dict, path: str, value):
    keys = path.split(".")
    node = d
    for k in keys[:-1]:
        node = node[k]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


DELETE = object()

INVALID = [
    # (key path to change, new value, expected message fragment)
    ("colour", "red", "colour: unknown key"),
    ("datasets", DELETE, "datasets: required key is missing"),
    ("seeds", [], "seeds: List should have at least 1 item"),
    ("device", "tpu", "device: Input should be 'auto', 'cpu' or 'cuda'"),
    ("attacks.label_flip.name", "label_flop", "attacks.label_flip.name: unknown attack 'label_flop'; known: "),
    ("attacks.label_flip.params.rate", 2.0, "attacks.label_flip.params.rate: Input should be less than or equal to 1"),
    ("attacks.label_flip.params.rate", -0.1, "attacks.label_flip.params.rate: Input should be greater than or equal to 0"),
    ("attacks.label_flip.params.colour", 1, "attacks.label_flip.params.colour: unknown key"),
    ("defenses.pgd.params.eps", 2.0, "defenses.pgd.params.eps"),
    ("defenses.naive.name", "mixup", "defenses.naive.name: unknown defense 'mixup'; known: fast_at, fgsm, free_at, naive, pgd, trades"),
    ("backbones.small_cnn.name", "vgg99", "backbones.small_cnn.name: unknown backbone 'vgg99'"),
    ("datasets.synthetic.target.classes", [], "datasets.synthetic.target.classes"),
    ("datasets.synthetic.target.name", "imagenet", "datasets.synthetic.target.name: unknown dataset 'imagenet'"),
    ("datasets.synthetic.external.train_limit", 0, "datasets.synthetic.external.train_limit"),
    ("grid", {"exclude": [{"colour": "red"}]}, "grid.exclude.0: unknown axis 'colour'"),
    ("grid", {"exclude": [{"defense": "fgsm"}]}, "grid.exclude.0.defense: 'fgsm' is not one of"),
    ("name", "my suite!", "name: use letters, digits"),
    ("evaluation.robust_eps", 3, "evaluation.robust_eps: Input should be less than or equal to 1"),
]


@pytest.mark.parametrize("path,value,message", INVALID, ids=[i[0] + ":" + str(i[1])[:12] for i in INVALID])
def test_invalid_suite_message(smoke_dict, tmp_path, path, value, message):
    d = copy.deepcopy(smoke_dict)
    _mutate(d, path, value)
    file = write_suite(tmp_path, d)
    with pytest.raises(SuiteError) as info:
        load_suite(file)
    text = str(info.value)
    assert text.startswith(f"{file}: "), text
    assert message in text, text
    assert "\n" not in text


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseeds: [0\nattacks: {}\n")
    with pytest.raises(SuiteError, match=r"bad\.yaml: line \d+, column \d+: malformed YAML"):
        load_suite(bad)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(SuiteError, match="nope.yaml: suite file not found"):
        load_suite(tmp_path / "nope.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(SuiteError, match="a suite is a YAML mapping"):
        load_suite(lst)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SuiteError, match="malformed YAML"):
        load_suite(evil)


def test_references_stay_on_the_suite_and_leave_cell_keys_alone(smoke_dict, tmp_path):
    d = copy.deepcopy(smoke_dict)
    d["references"] = [
        {"match": {"defense": "pgd", "attack": "label_flip"}, "metric": "accuracy_drop", "value": 0.11, "source": "T3"}
    ]
    suite = load_suite(write_suite(tmp_path, d))
    assert suite.references[0].value == 0.11 and suite.references[0].match == {"defense": "pgd", "attack": "label_flip"}
    cells = expand(suite)
    # references do not change the cell key (a resumed run keeps its cells); the report matches them to groups
    plain = {c.title(): c.key for c in expand(load_suite(write_suite(tmp_path, smoke_dict, "p.yaml")))}
    assert all(plain[c.title()] == c.key for c in cells)
