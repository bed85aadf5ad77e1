"""What the suite's own data decides is refused before any cell runs (one line naming the file and the key, exit 2,
nothing in the store): classes that do not exist, a limit that leaves one class, more poisons than the base class
has rows, a trigger larger than the image, a k-NN filter with more neighbours than rows, an npz path that is not
an npz. What only a cell can know is refused by the cell (FAILED), never silently lowered: the number in the store
is the number used."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import ROOT, one_error_line, set_key, tiny_suite, write_suite
from mlflow.tracking import MlflowClient

from benchmark.cli.commands import main
from benchmark.core.errors import ParamError
from benchmark.core.registry import make

pytestmark = pytest.mark.usefixtures("one_thread")


CASES = {
    # the tiny suite's target: synthetic, 4 classes, 60 training rows, 4 classes of 15 training rows each, 16x16
    "class-absent": ({"datasets/synthetic/target/classes": [0, 7]},
                     "datasets.synthetic.target.classes: [7] not in the data (its classes: [0, 1, 2, 3])"),
    "limit-one-class": ({"datasets/synthetic/target/train_limit": 1},
                        "datasets.synthetic.target.train_limit: 1 keeps only class"),
    "wb-num-poisons": ({"attacks/wb": {"name": "witches_brew", "params": {"num_poisons": 5000, "num_targets": 1}}},
                       "attacks.wb.params.num_poisons: 5000 needs 5000 training rows of class 1; "
                       "datasets.synthetic.target has"),
    "cp-swept-num-poisons": ({"attacks/cp": {"name": "convex_polytope", "sweep": {"num_poisons": [5, 5000]}}},
                             "attacks.cp.sweep.num_poisons (cp[num_poisons=5000]): 5000 needs 5000 training rows"),
    "attack-class-absent": ({"attacks/wb": {"name": "witches_brew", "params": {"target_class": 7}}},
                            "attacks.wb.params: the attack's classes [7] are not in datasets.synthetic.target"),
    "patch-larger-than-image": ({"attacks/bd": {"name": "art_clean_label_backdoor", "params": {"patch_size": 40}}},
                                "attacks.bd.params.patch_size: 40 does not fit the 16x16 images"),
    "knn-k-above-rows": ({"filters/knn": {"name": "knn_label", "params": {"k": 5000}}},
                         "filters.knn.params.k: 5000 needs 5001 training rows; the task of attack 'none'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_data_decides_before_the_grid(case, tmp_path, smoke_dict, capsys):
    changes, expected = CASES[case]
    d = tiny_suite(smoke_dict, "decided", attacks=("none",))
    for path, value in changes.items():
        set_key(d, path, value, sep="/", create=True)
    suite = write_suite(tmp_path, d)
    assert main(["validate", str(suite)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {suite}: ") and expected in line, line
    assert main(["run", str(suite), "--quiet", "--device", "cpu"]) == 2
    assert one_error_line(capsys) == line
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("decided")
    assert exp is None or client.search_runs([exp.experiment_id]) == []


def test_an_npz_path_linking_to_something_else_is_refused_at_validate(tmp_path, smoke_dict, capsys):
    (tmp_path / "notes.txt").write_text("not an archive\n")
    (tmp_path / "data.npz").symlink_to(tmp_path / "notes.txt")
    d = tiny_suite(smoke_dict, "link", attacks=("none",))
    d["datasets"]["synthetic"]["target"] = {"name": "npz", "params": {"path": str(tmp_path / "data.npz")}}
    assert main(["validate", str(write_suite(tmp_path, d))]) == 2
    line = one_error_line(capsys)
    assert "datasets.synthetic.target.params.path:" in line and f"(a link to {tmp_path / 'notes.txt'})" in line
    assert "is not an .npz archive" in line and "pickled" not in line, line


def test_a_feasible_suite_still_validates(tmp_path, smoke_dict, capsys):
    d = tiny_suite(smoke_dict, "fine", attacks=("none",))
    d["attacks"]["wb"] = {"name": "witches_brew", "params": {"num_poisons": 15}}
    d["filters"] = {"none": {}, "knn": {"name": "knn_label", "params": {"k": 29}}}
    assert main(["validate", str(write_suite(tmp_path, d))]) == 0
    assert "valid suite 'fine', 4 cells" in capsys.readouterr().out


# --- at run time: what the preflight cannot know is refused by the cell, never lowered ---------------------------


def test_a_targeted_attack_refuses_more_poisons_than_base_rows(monkeypatch):
    from adapters.attacks.witches_brew import WitchesBrew

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "adapters"))
    from toy_context import make_ctx

    ctx = make_ctx(n_train=40, n_test=40)
    base_rows = int((ctx.y_train == 1).sum())
    attack = WitchesBrew(num_poisons=base_rows + 1, num_targets=1, steps=1, restarts=1)
    with pytest.raises(ParamError, match=f"num_poisons {base_rows + 1} exceeds the {base_rows} training rows"):
        attack.forward(ctx)


def test_the_knn_filter_refuses_a_k_its_rows_cannot_honour():

    features, labels = torch.randn(10, 4), torch.tensor([0, 1] * 5)
    assert make("filter", "knn_label", {"k": 9}).keep(features, labels, 0).shape == (10,)
    with pytest.raises(ParamError, match="k 10 needs 11 training rows"):
        make("filter", "knn_label", {"k": 10}).keep(features, labels, 0)
