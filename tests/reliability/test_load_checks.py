"""Everything a suite or a plugin can get wrong is found when the suite is loaded: one line, exit 2, no traceback."""

from __future__ import annotations

import uuid

import pytest
from conftest import one_error_line, set_key, tiny_suite, write_suite

from benchmark.cli.commands import main


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: a\nname: b\n", ["line 2, column 1", "duplicate key 'name'"]),
        ("name: a\nattacks:\n  none: {}\n  none: {params: {}}\n", ["line 4, column 3", "duplicate key 'none'"]),
    ],
)
def test_duplicate_yaml_keys(tmp_path, capsys, text, expected):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    line = one_error_line(capsys)
    for s in expected:
        assert s in line


CASES = {
    "repeated-seed": ({"seeds": [0, 1, 0]}, "seeds: [0] repeated"),
    "negative-seed": ({"seeds": [-1]}, "seeds.0: -1 is outside"),
    "huge-seed": ({"seeds": [2**40]}, "seeds.0: 1099511627776 is outside"),
    "one-class-task": ({"datasets.synthetic.target.classes": [2]}, "target.classes: a classification task needs"),
    "ref-unknown-axis": ({"references": [{"match": {"defence": "naive"}, "metric": "accuracy_drop", "value": 0.1}]},
                         "references.0.match.defence: unknown axis"),
    "ref-unknown-label": ({"references": [{"match": {"defense": "pgd"}, "metric": "accuracy_drop", "value": 0.1}]},
                          "references.0.match.defense: 'pgd' is not one of ['naive']"),
    "ref-unknown-metric": ({"references": [{"match": {"defense": "naive"}, "metric": "acc", "value": 0.1}]},
                           "references.0.metric: unknown metric 'acc'"),
    "huge-image": ({"datasets.synthetic.target.image_size": 100_000}, "target.image_size: 100000 exceeds the limit"),
    "huge-synthetic": ({"datasets.synthetic.external.params.n_train": 10**9}, "external.params: n_train + n_test"),
    "huge-grid": ({"seeds": list(range(20_000))}, "grid: 40000 cells before exclusions, above the limit of 10000"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_suite_mistakes_fail_at_load(case, tmp_path, smoke_dict, capsys):
    changes, expected = CASES[case]
    d = tiny_suite(smoke_dict, "bad")
    for path, value in changes.items():
        set_key(d, path, value)
    assert main(["validate", str(write_suite(tmp_path, d))]) == 2
    assert expected in one_error_line(capsys)


PLUGINS = {
    "raises-on-import": ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
    "exits-on-import": ("import sys\nsys.exit(4)\n", "SystemExit: 4"),
    "syntax-error": ("def broken(:\n", "SyntaxError"),
    "params-not-pydantic": ("{base}\nclass A(Attack):\n    name = 'a'\n    Params = dict\n    def forward(self, ctx): ...\n",
                            "its Params is not a pydantic model"),
    "validator-raises-type-error": (
        "{base}\nfrom pydantic import field_validator\nclass P(Params):\n    k: int = 1\n"
        "    @field_validator('k')\n    @classmethod\n    def _k(cls, v):\n        raise TypeError('no k for you')\n"
        "class A(Attack):\n    name = 'a'\n    Params = P\n    def forward(self, ctx): ...\n",
        "TypeError: no k for you",
    ),
    "check-params-raises-key-error": (
        "{base}\nclass A(Attack):\n    name = 'a'\n    def _check_params(self):\n        raise KeyError('eps')\n"
        "    def forward(self, ctx): ...\n",
        "KeyError: 'eps'",
    ),
    "init-exits": (
        "{base}\nimport sys\nclass A(Attack):\n    name = 'a'\n    def __init__(self, **kw):\n        sys.exit('bye')\n"
        "    def forward(self, ctx): ...\n",
        "SystemExit: bye",
    ),
}
BASE = "from adapters.attacks.base import Attack\nfrom benchmark.core.registry import Params"


@pytest.mark.parametrize("case", list(PLUGINS))
def test_plugin_failures_fail_at_load(case, tmp_path, smoke_dict, capsys, monkeypatch):
    source, expected = PLUGINS[case]
    module = f"plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(source.replace("{base}", BASE))
    monkeypatch.syspath_prepend(str(tmp_path))
    d = tiny_suite(smoke_dict, "bad")
    d["attacks"] = {"p": {"name": f"{module}:A"}}
    suite = write_suite(tmp_path, d)
    assert main(["validate", str(suite)]) == 2
    line = one_error_line(capsys)
    assert expected in line and "attacks.p" in line, line
    assert main(["run", str(suite), "--quiet"]) == 2
    assert one_error_line(capsys) == line


def test_every_shipped_suite_still_loads(capsys):
    from conftest import ROOT

    from benchmark.suite import expand, load_suite

    for path in sorted((ROOT / "suites").glob("*.yaml")):  # the data checks of `validate` aside: no data here
        assert expand(load_suite(path)), path
