"""Hostile or careless suites are refused at load, cheaply: one line naming the file and the key, exit 2, nothing
in the store. YAML aliases are counted before anything is built, grid limits are checked before any sweep is
expanded, and a value echoed in a message is cut to a short prefix."""

from __future__ import annotations

import os

import pytest
import yaml
from conftest import one_error_line, tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main
from benchmark.core.errors import SHOWN_CHARS

MAX_LINE = 600  # a one-line message: the file, the key, what is wrong; never the value it was given in full


def _nothing_stored(name: str) -> None:
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(name)
    assert exp is None or client.search_runs([exp.experiment_id]) == []


def _bomb(levels: int, width: int = 9) -> str:
    """A top-level ``x-anchors:`` holding anchors a0..a<levels>, each a list of ``width`` aliases of the one before
    (width^levels leaves). The key is not the schema's, but the alias count is checked before the schema."""
    lines = ["  a0: &a0 [x]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "x-anchors:\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "levels, key",
    [
        (9, "references.0.value"),  # 9^9 leaves: before, no answer in 150 s and 2.7 GB of memory
        (6, "attacks.label_flip.params.rate"),  # 9^6: before, the right key in a 39 MB line
        (6, "grid.exclude.0.seed"),
    ],
)
def test_alias_bombs_are_refused_before_expansion(tmp_path, smoke_dict, capsys, levels, key):
    d = tiny_suite(smoke_dict, "bomb")
    d["references"] = [{"match": {"defense": "naive"}, "metric": "accuracy_drop", "value": 0.5}]
    d["grid"] = {"exclude": [{"seed": 0}]}
    where = d
    *head, last = key.split(".")
    for part in head:
        where = where[int(part)] if part.isdigit() else where[part]
    where[last] = "BOMB"
    text = _bomb(levels) + yaml.safe_dump(d, sort_keys=False).replace("BOMB", f"*a{levels}")
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    line = one_error_line(capsys, MAX_LINE)
    assert f"{path}: {key} (line" in line and f"alias *a{levels}" in line and "expands to more than" in line, line
    assert main(["run", str(path), "--quiet"]) == 2
    assert one_error_line(capsys, MAX_LINE) == line
    _nothing_stored("bomb")


def test_a_large_value_under_the_alias_limit_is_echoed_as_a_short_prefix(tmp_path, smoke_dict, capsys):
    d = tiny_suite(smoke_dict, "echo")
    d["attacks"]["label_flip"]["params"]["rate"] = [[list(range(50))] * 50] * 40  # 100,000 values, no alias
    assert main(["validate", str(write_suite(tmp_path, d))]) == 2
    line = one_error_line(capsys, MAX_LINE)
    assert "attacks.label_flip.params.rate" in line
    assert "(got [[[0, 1, 2" in line and len(line) < 200 + SHOWN_CHARS, line


def test_a_recursive_alias_is_refused(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text("name: loop\nseeds: &s [0, *s]\n")
    assert main(["validate", str(path)]) == 2
    line = one_error_line(capsys, MAX_LINE)
    assert "line 2" in line and "recursive alias" in line, line


def test_a_huge_sweep_is_refused_by_arithmetic(tmp_path, smoke_dict, capsys):
    """100 x 100 x 100 variants: refused from the list lengths (before: 158 s of expansion on shared cores)."""
    d = tiny_suite(smoke_dict, "sweep")
    d["attacks"]["label_flip"] = {"sweep": {"rate": [i / 1000 for i in range(100)], "seed_offset": list(range(100)),
                                            "x": list(range(100))}}
    assert main(["validate", str(write_suite(tmp_path, d))]) == 2
    assert "grid: 1000001 cells before exclusions, above the limit of 10000" in one_error_line(capsys, MAX_LINE)


def test_100000_seeds_are_refused_in_linear_time(tmp_path, smoke_dict, capsys):
    """Quadratic work on 100,000 seeds (``seeds.count`` per seed: 10^10 comparisons) would make this test take
    minutes; it runs in seconds (its speed is measured in benchmarks/test_bench_validate.py)."""
    d = tiny_suite(smoke_dict, "seeds")
    d["seeds"] = "SEEDS"  # written as one flow list: yaml.safe_dump of 100,000 items alone takes seconds
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(d).replace("SEEDS", "[" + ", ".join(map(str, range(100_000))) + "]"))
    assert main(["validate", str(path)]) == 2
    assert "grid: 200000 cells before exclusions" in one_error_line(capsys, MAX_LINE)


def test_repeated_seeds_are_found_by_one_count():
    from benchmark.suite.load import _check_seeds

    seeds = list(range(10_000)) + [5, 7, 7]
    with pytest.raises(ValueError, match=r"seeds: \[5, 7\] repeated"):
        _check_seeds(seeds)


SMALL = {
    "empty-label": ({"attacks.''": {"name": "none"}}, "label '': a label must not be empty"),
    "multi-line-label": ({"attacks.a\nb": {"name": "none"}}, "a label is one line of printable characters"),
    "seed-true": ({"seeds": [True]}, "seeds.0: Input should be a valid integer (got True)"),
    "num-gpus-1e9": ({"resources": {"num_gpus": 1e9}}, "resources.num_gpus: Input should be less than or equal to 64"),
    "exclude-empties-grid": ({"grid": {"exclude": [{"defense": "naive"}]}},
                             "grid.exclude: the rules exclude all 2 cells of the grid; nothing would run"),
    "spectral-removes-all": ({"filters": {"ss": {"name": "art_spectral_signature",
                                                 "params": {"expected_poison_fraction": 0.5, "eps_multiplier": 2}}}},
                             "filters.ss.params: filter 'art_spectral_signature': eps_multiplier x "
                             "expected_poison_fraction = 1 removes every row"),
}


@pytest.mark.parametrize("case", list(SMALL))
def test_small_mistakes_are_refused_at_load(case, tmp_path, smoke_dict, capsys):
    changes, expected = SMALL[case]
    d = tiny_suite(smoke_dict, "small")
    for key, value in changes.items():
        section, _, label = key.partition(".")
        if label:
            d[section][label.strip("'")] = value
        else:
            d[section] = value
    suite = write_suite(tmp_path, d)
    assert main(["validate", str(suite)]) == 2
    line = one_error_line(capsys, MAX_LINE)
    assert line.startswith(f"error: {suite}: ") and expected in line, line
    assert main(["run", str(suite), "--quiet"]) == 2
    assert one_error_line(capsys, MAX_LINE) == line
    _nothing_stored("small")
