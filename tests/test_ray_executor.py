"""The Ray executor gives the same MLflow contents as the local one, trains each backbone once, and cleans up."""

from __future__ import annotations

import copy
import logging
import os
import time
from types import SimpleNamespace

import pytest
from conftest import ROOT, write_suite
from mlflow.tracking import MlflowClient

from benchmark.core.errors import BenchmarkError
from benchmark.grid.ray_executor import RayExecutor
from benchmark.grid.runner import run_suite

ray = pytest.importorskip("ray")

COMPARED = ("clean_accuracy", "poisoned_accuracy", "robust_accuracy", "external_accuracy")


def shrunk_smoke(smoke: dict) -> dict:
    """suites/smoke.yaml with its grid (2 defenses x 2 attacks, so 2 backbones of 2 cells each) on tiny data."""
    d = copy.deepcopy(smoke)
    d["name"] = "smoke-ray"
    for role, n_train, n_test in (("external", 200, 50), ("target", 80, 40)):
        spec = d["datasets"]["synthetic"][role]
        spec["params"].update(n_train=n_train, n_test=n_test, image_size=16)
        spec["image_size"] = 16
    d["backbones"]["small_cnn"]["params"] = {"width": 8, "feature_dim": 16}
    for name in d["defenses"]:
        d["defenses"][name]["params"]["max_epochs"] = 1
    d["defenses"]["pgd"]["params"]["steps"] = 2
    d["evaluation"].update(robust_steps=3, robust_samples=20)
    d["resources"] = {"num_cpus": 1, "num_gpus": 0}
    return d


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same suite through the local executor and through a local 2-CPU Ray instance, into separate stores."""
    import yaml

    base = tmp_path_factory.mktemp("ray")
    smoke = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())
    suite = write_suite(base, shrunk_smoke(smoke))
    out = {}
    logged: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("benchmark.grid.ray_executor")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "cpu_count", lambda: 2)  # the local instance takes os.cpu_count() CPUs: 2, as on a laptop
        mp.setattr(logger, "level", logging.INFO)
        logger.addHandler(handler)
        for name in ("local", "ray"):
            lines: list[str] = []
            t0 = time.perf_counter()
            summary = run_suite(
                suite,
                executor=name,
                device="cpu",
                tracking_uri=f"sqlite:///{base / name / 'mlflow.db'}",
                cache_dir=str(base / name / "cache"),
                echo=lines.append,
            )
            out[name] = SimpleNamespace(summary=summary, lines=lines, seconds=time.perf_counter() - t0,
                                        uri=f"sqlite:///{base / name / 'mlflow.db'}")
        logger.removeHandler(handler)
    out["ray"].logged = logged
    started = [line for line in logged if line.startswith("ray: started")]
    print(f"\nlocal executor {out['local'].seconds:.1f} s, ray executor {out['ray'].seconds:.1f} s ({started})")
    return out


def _contents(uri: str) -> dict[str, dict]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke-ray")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    cells = [r for r in runs if r.data.tags.get("benchmark.role") == "cell"]
    return {
        r.data.tags["benchmark.cell_key"]: {
            "status": r.info.status,
            "params": dict(r.data.params),
            "metrics": {m: r.data.metrics.get(m) for m in COMPARED},
            "backbone_cached": r.data.metrics.get("backbone_cached"),
            "defense": r.data.tags["defense"],
            "n_runs": 1,
        }
        for r in cells
    } | {"__count__": {"n": len(cells), "parents": len(runs) - len(cells)}}


def test_ray_matches_local(two_runs):
    local, remote = _contents(two_runs["local"].uri), _contents(two_runs["ray"].uri)
    assert local["__count__"] == {"n": 4, "parents": 1}
    assert remote["__count__"] == {"n": 4, "parents": 1}
    assert set(local) == set(remote)
    for key in local:
        if key == "__count__":
            continue
        a, b = local[key], remote[key]
        assert a["status"] == b["status"] == "FINISHED", key
        assert a["params"] == b["params"], key
        assert None not in a["metrics"].values(), a["metrics"]
        # CPU runs are deterministic: the same numbers to the last bit, whichever process ran the cell
        assert a["metrics"] == b["metrics"], (key, a["metrics"], b["metrics"])


def test_each_backbone_is_trained_once(two_runs):
    remote = _contents(two_runs["ray"].uri)
    remote.pop("__count__")
    by_defense: dict[str, list[float]] = {}
    for v in remote.values():
        by_defense.setdefault(v["defense"], []).append(v["backbone_cached"])
    # two cells per backbone: one trained it, the other (ordered after it by Ray) found it in the cache
    assert {d: sorted(v) for d, v in by_defense.items()} == {"naive": [0.0, 1.0], "pgd": [0.0, 1.0]}


def test_driver_logged_every_cell_once_and_shut_ray_down(two_runs):
    summary = two_runs["ray"].summary
    assert summary.total == 4 and summary.failed == 0 and len(summary.records) == 4
    assert len({c.key for c, _ in summary.records}) == 4
    assert sum("ok in" in line for line in two_runs["ray"].lines) == 4
    assert not ray.is_initialized(), "the executor must shut down the local instance it started"


def test_local_instance_has_the_machine_cpus(two_runs):
    started = [line for line in two_runs["ray"].logged if line.startswith("ray: started a local instance")]
    assert len(started) == 1 and " with 2 CPUs in " in started[0], two_runs["ray"].logged
    assert "ray: 4 cells in 2 backbone group(s) submitted" in two_runs["ray"].logged


def test_cells_that_cannot_fit_are_refused(caplog):
    fake = SimpleNamespace(nodes=lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])
    with pytest.raises(BenchmarkError, match=r"num_cpus=4 per cell, the largest Ray node has 2 CPUs"):
        RayExecutor(num_cpus=4)._check_fits(fake)
    with pytest.raises(BenchmarkError, match=r"num_gpus=1 per cell, the largest Ray node has 0 GPUs"):
        RayExecutor(num_gpus=1)._check_fits(fake)
    with caplog.at_level(logging.WARNING, logger="benchmark.grid.ray_executor"):  # a cluster may scale up: only warn
        RayExecutor(address="ray://head:10001", num_cpus=4)._check_fits(fake)
    assert "the largest Ray node has 2 CPUs" in caplog.text
    RayExecutor(num_cpus=2)._check_fits(fake)  # fits: no error
