"""Compare the latest run of a suite in two MLflow stores, cell by cell: every metric that is not a wall time.

    uv run python scripts/compare_stores.py SUITE URI_A URI_B [--tolerance 0]

Cells are matched on their axis tags (dataset, backbone, defense, attack, filter, seed), not on their keys, so a
change of the code that changes keys (a stage version, a renamed parameter) can be checked to leave the results alone.
Exit 0 when every matched metric agrees within the tolerance, 1 otherwise (the differences are printed).
"""

from __future__ import annotations

import argparse
import math
import sys

from mlflow.tracking import MlflowClient

AXES = ("dataset", "backbone", "defense", "attack", "filter", "seed")
TIMING = ("_seconds", "images_per_second", "backbone_cached", "train_group_size")  # how, not what, a cell computed


def latest_cells(uri: str, suite: str) -> dict[tuple[str, ...], dict[str, float]]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(suite)
    if exp is None:
        raise SystemExit(f"{uri}: no experiment named {suite!r}")
    parents = client.search_runs([exp.experiment_id], "tags.`benchmark.role` = 'parent'", order_by=["start_time DESC"])
    if not parents:
        raise SystemExit(f"{uri}: suite {suite!r} has no parent run")
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}' and attributes.status = 'FINISHED'"
    )
    return {
        tuple(r.data.tags.get(a, "none") for a in AXES): {k: v for k, v in r.data.metrics.items() if not k.endswith(TIMING)}
        for r in children
    }


def differences(a: dict, b: dict, tolerance: float) -> list[str]:
    out = [f"cell {cell} only in one store" for cell in sorted(set(a) ^ set(b))]
    for cell in sorted(set(a) & set(b)):
        for name in sorted(set(a[cell]) | set(b[cell])):
            x, y = a[cell].get(name), b[cell].get(name)
            same = x is not None and y is not None and (x == y or (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tolerance)
            if not same:
                out.append(f"{'/'.join(cell)}: {name} {x} vs {y}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("uri_a")
    ap.add_argument("uri_b")
    ap.add_argument("--tolerance", type=float, default=0.0)
    args = ap.parse_args(argv)
    a, b = latest_cells(args.uri_a, args.suite), latest_cells(args.uri_b, args.suite)
    diffs = differences(a, b, args.tolerance)
    for line in diffs:
        print(line)
    print(f"{len(set(a) & set(b))} cells compared, {len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
