"""The shipped experiment suites: they validate, expand to the intended cell counts, and carry their references."""

from __future__ import annotations

import math

import pytest
from conftest import ROOT

from benchmark.cli.commands import main as cli_main
from benchmark.report.aggregate import matches
from benchmark.suite import expand, load_suite

SUITES = ROOT / "suites"


def _cells(name: str):
    suite = load_suite(SUITES / f"{name}.yaml")
    return suite, expand(suite)


def _paper_count(suite) -> int:
    """Each dataset gets its own three defenses (the `_svhn` labels for mnist) and its own AD attack."""
    total = 0
    for dataset in suite.datasets:
        defenses = [d for d in suite.defenses if d.endswith("_svhn") == (dataset == "mnist")]
        attacks = [a for a in suite.attacks if not a.startswith("ad_") or a == f"ad_{dataset}"]
        total += len(suite.backbones) * len(defenses) * len(attacks) * len(suite.seeds)
    return total


def test_paper_grid():
    suite, cells = _cells("paper")
    assert len(cells) == _paper_count(suite) == 2 * 2 * 3 * 4 * 3
    assert {c.backbone.params["pretrained"] for c in cells} == {"none"}
    for c in cells:  # each dataset with its own defenses and AD eps
        assert c.defense.label.endswith("_svhn") == (c.dataset == "mnist")
        if c.attack.name == "adv_poison":
            assert c.attack.label == f"ad_{c.dataset}"
            assert math.isclose(c.attack.params["eps"], (3 if c.dataset == "cifar" else 7) / 255, rel_tol=1e-6)
    svhn = next(c for c in cells if c.defense.label == "pgd_svhn")
    assert svhn.defense.name == "pgd" and svhn.defense.params["lr"] == 1e-5 and svhn.defense.params["max_epochs"] == 64
    pgd = next(c for c in cells if c.defense.label == "pgd")
    assert pgd.defense.params["steps"] == 40 and not pgd.defense.params["random_start"]
    assert math.isclose(pgd.defense.params["step_size"], 0.333 * 3 / 255, rel_tol=1e-4)


def test_paper_code_grid():
    suite, cells = _cells("paper-code")
    assert len(cells) == _paper_count(suite) == 2 * 1 * 3 * 4 * 1
    assert {c.backbone.params["pretrained"] for c in cells} == {"imagenet"}
    pf = {c.attack.params["variant"] for c in cells if c.attack.name == "poison_frog"}
    ad = {c.attack.params["variant"] for c in cells if c.attack.name == "adv_poison"}
    assert pf == ad == {"code"}
    mnist_ad = next(c for c in cells if c.attack.label == "ad_mnist")
    assert math.isclose(mnist_ad.attack.params["eps"], 10 / 255, rel_tol=1e-6)


# table id -> (metric, number of references) as in REFERENCE.md: T1 AD 2 datasets x 3 defenses, T2 PF 3 defenses,
# T3 LF 2 datasets x (naive, PGD), text: CIFAR PGD clean accuracy + MNIST LF clean/poisoned for naive and PGD.
PAPER_TABLES = {"T1": ("poisoned_accuracy", 6), "T2": ("attack_success_rate", 3), "T3": ("accuracy_drop", 4)}


def group_key(c):
    """A cell's report group: its labels on every axis but the seed."""
    return (c.dataset, c.backbone.label, c.defense.label, c.attack.label, c.filter.label)


@pytest.mark.parametrize("name", ["paper", "paper-code"])
def test_paper_references_attach_to_their_cells(name):
    suite, cells = _cells(name)
    for table, (metric, count) in PAPER_TABLES.items():
        refs = [r for r in suite.references if r.table == table]
        assert len(refs) == count and {r.metric for r in refs} == {metric}, table
    assert len([r for r in suite.references if r.table == "text"]) == 5
    def refs_of(c):  # the references the report attaches to a cell's group
        return [r for r in suite.references if matches(group_key(c), r.match)]

    for ref in suite.references:
        attached = [c for c in cells if ref in refs_of(c)]
        # every reference lands on the VGG13 cells of one (dataset, defense, attack), one per seed
        assert len(attached) == len(suite.seeds), ref
        assert {(c.dataset, c.backbone.label, c.defense.label, c.attack.label) for c in attached} == {
            (ref.match["dataset"], "vgg13", ref.match["defense"], ref.match["attack"])
        }
        assert 0 < ref.value < 1 and ref.source
    by_cell = {(c.dataset, c.defense.label, c.attack.label): c for c in cells if c.backbone.label == "vgg13"}
    t2 = {r.value for r in refs_of(by_cell[("cifar", "naive", "poison_frog")])}
    assert t2 == {0.85}
    lf = refs_of(by_cell[("cifar", "pgd", "label_flip")])
    assert [(r.metric, r.value) for r in lf] == [("accuracy_drop", 0.11)]
    mnist_lf = {(r.metric, r.value) for r in refs_of(by_cell[("mnist", "pgd_svhn", "label_flip")])}
    assert mnist_lf == {("accuracy_drop", 0.02), ("clean_accuracy", 0.96), ("poisoned_accuracy", 0.94)}
    ad = refs_of(by_cell[("mnist", "fgsm_svhn", "ad_mnist")])
    assert [(r.table, r.value) for r in ad] == [("T1", 0.93)]


def test_toxic_transfer_grid():
    suite, cells = _cells("toxic-transfer")
    axes = (suite.datasets, suite.backbones, suite.defenses, suite.attacks, suite.seeds)
    # the pretrained RobustBench backbone is not trained: it appears with one defense only
    assert len(cells) == math.prod(len(a) for a in axes) - 3 * len(suite.attacks) == 40
    assert {c.defense.label for c in cells if c.backbone.name == "robustbench"} == {"naive"}
    assert {c.defense.label for c in cells} == {"naive", "fgsm", "pgd", "trades"}
    assert {c.target.train_limit for c in cells} == {2500}
    for c in cells:
        if c.attack.label != "none":
            p = c.attack.params  # the Toxic budget: 25 poisons in an 8/255 ball; 100 targets or 20 backdoor trials
            assert p["num_poisons"] == 25 and p.get("num_targets", 100) == 100 and p.get("num_trials", 20) == 20
            assert math.isclose(p["eps"], 8 / 255, rel_tol=1e-6)
    refs = {r.match["attack"]: r for r in suite.references}
    assert {a: r.value for a, r in refs.items()} == {  # the Toxic table's five rows, naive features
        "art_feature_collision": 0.22, "art_bullseye_polytope": 0.85, "convex_polytope": 0.33,
        "art_clean_label_backdoor": 0.05, "art_hidden_trigger": 0.10}
    for attack, ref in refs.items():
        attached = [c for c in cells if matches(group_key(c), ref.match)]
        where = [(c.defense.label, c.attack.label, c.backbone.label) for c in attached]
        assert where == [("naive", attack, "resnet18")]
        assert ref.table == "toxic" and ref.metric == "attack_success_rate"


def test_mnist_cpu_grid():
    suite, cells = _cells("mnist-cpu")
    assert len(cells) == math.prod(len(a) for a in suite.axis_labels().values()) == 30  # 3 defenses x 10 attacks
    cell = cells[0]
    assert cell.external.name == cell.target.name == "mnist"  # torchvision: a new user has no npz
    assert set(cell.external.classes).isdisjoint(cell.target.classes)
    assert suite.device == "cpu" and {c.backbone.name for c in cells} == {"small_cnn"}


# the suites that need a download, and the shared file each one's torchvision layout is written from offline
NEEDS = {"cifar-cpu": "cifar10", "toxic-cpu": "cifar10", "beyond-cpu": "mnist", "mnist-cpu": "mnist"}


def _shared_layout(root, dataset: str):
    """The torchvision layout of ``dataset`` written from ../shared/data (skips where that folder is absent)."""
    from cifar_batches import CIFAR10_NPZ, write_cifar10_batches
    from conftest import SHARED_MNIST
    from mnist_idx import write_mnist_raw

    npz = CIFAR10_NPZ if dataset == "cifar10" else SHARED_MNIST
    if not npz.is_file():
        pytest.skip(f"{npz} not found (../shared/data beside the repo)")
    return write_cifar10_batches(root) if dataset == "cifar10" else write_mnist_raw(npz, root)


@pytest.mark.parametrize(
    "name, count", [("paper", 144), ("paper-code", 24), ("toxic-transfer", 40), ("mnist-cpu", 30), ("cifar-cpu", 36),
                    ("toxic-cpu", 60), ("beyond-cpu", 20), ("digits-cpu", 8)]
)
def test_validate_and_dry_run_check_the_same_data(name, count, capsys):
    """With no data, `validate` and `run --dry-run` stop on the same one line (the dry run after its plan)."""
    suite, cells = _cells(name)
    assert len(cells) == count
    path = str(SUITES / f"{name}.yaml")
    needs_data = name != "digits-cpu"  # digits ship inside scikit-learn
    assert cli_main(["validate", path]) == (2 if needs_data else 0)
    refused = capsys.readouterr().err
    assert cli_main(["run", path, "--dry-run"]) == (2 if needs_data else 0)
    out, err = capsys.readouterr()
    # the plan comes first; a fresh store has nothing finished, so every cell is priced
    assert f"\n{count} cells: 0 already finished or reusable, {count} to run\n" in out and "estimated time:" in out
    assert err == refused
    if needs_data:
        assert "data download" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_real_data_cpu_suites_validate_on_the_torchvision_layout(name, tmp_path, capsys):
    """The suites read torchvision's files: written from ../shared/data, `validate` and `--dry-run` pass."""
    root = str(_shared_layout(tmp_path, NEEDS[name]))
    path = str(SUITES / f"{name}.yaml")
    assert cli_main(["validate", path, "--data-root", root]) == 0
    assert cli_main(["run", path, "--dry-run", "--data-root", root]) == 0
    assert "error" not in capsys.readouterr().err


def test_cifar_cpu_grid():
    suite, cells = _cells("cifar-cpu")
    assert {c.target.classes and tuple(c.target.classes) for c in cells} == {(0, 1)}  # airplane vs car
    assert set(cells[0].external.classes).isdisjoint(cells[0].target.classes)
    swept = {c.attack.label for c in cells if c.sweeps}
    assert "poison_frog[num_poisons=25]" in swept and "art_bullseye_polytope[num_poisons=25]" in swept
    assert suite.evaluation.sweep["robust_eps"][-1] == suite.evaluation.robust_eps
