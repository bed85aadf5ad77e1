"""Results keyed by what they are: a cell FINISHED by any run of any version of a suite is reused, not rerun.

A cell's key (its resolved configuration and the stage versions, ``Cell.key``) is looked up over the suite's whole
experiment. The latest FINISHED run of each key of the suite file last run carries the tag ``benchmark.current``;
the experiment's stored view and ``report`` show those runs, so one table holds every cell of the current suite,
whichever invocation produced it, and nothing from cells the suite no longer has. Each parent run logs
``cells.json``: which cells it ran and which it reused (by run id).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmark.store.tracking import (
    CELL_KEY,
    CURRENT,
    PARENT,
    ROLE,
    Tracker,
    default_tracking_uri,
    local_sqlite_dir,
    retry,
)

CURRENT_FILTER = f"tags.`{CURRENT}` = 'true'"
CELLS_FILE = "cells.json"


def finished_by_key(tracker: Tracker, experiment_id: str) -> dict[str, Any]:
    """The latest FINISHED cell run of each key in the experiment."""
    runs = retry(
        lambda: tracker.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ROLE}` = 'cell' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"],
            max_results=50000,
        )
    )
    return {r.data.tags[CELL_KEY]: r for r in runs if CELL_KEY in r.data.tags}  # later runs overwrite earlier ones


def finished_keys_of_suite(tracking_uri: str | None, suite_name: str) -> set[str]:
    """The keys FINISHED in a suite's experiment (``run --dry-run``); none where the store or the experiment does
    not exist yet (nothing is created)."""
    uri = default_tracking_uri(tracking_uri)
    if local_sqlite_dir(uri) is not None and not Path(uri[len("sqlite:///"):]).is_file():
        return set()
    tracker = Tracker(uri, read_only=True)
    exp = retry(lambda: tracker.client.get_experiment_by_name(suite_name))
    return set(finished_by_key(tracker, exp.experiment_id)) if exp is not None else set()


def current_runs(tracker: Tracker, experiment_id: str) -> list[Any]:
    """The runs marked current: one per cell of the suite file last run."""
    return retry(
        lambda: tracker.client.search_runs([experiment_id], filter_string=CURRENT_FILTER, max_results=50000)
    )


def mark_current(tracker: Tracker, experiment_id: str, keys: Iterable[str]) -> int:
    """Mark the latest FINISHED run of each of ``keys`` current, and no other run; returns how many are marked."""
    latest = finished_by_key(tracker, experiment_id)
    wanted = {latest[k].info.run_id for k in keys if k in latest}
    marked = {r.info.run_id for r in current_runs(tracker, experiment_id)}
    for rid in marked - wanted:
        retry(lambda r=rid: tracker.client.delete_tag(r, CURRENT))
    for rid in wanted - marked:
        retry(lambda r=rid: tracker.client.set_tag(r, CURRENT, "true"))
    return len(wanted)


def mark_finished(tracker: Tracker, experiment_id: str, key: str, run_id: str) -> None:
    """A cell run just FINISHED: it is its key's current run from now on (an older run of the key no longer is)."""
    for r in tracker.cell_runs(None, experiment_id, key):
        if r.info.run_id != run_id and CURRENT in r.data.tags:
            retry(lambda rid=r.info.run_id: tracker.client.delete_tag(rid, CURRENT))
    retry(lambda: tracker.client.set_tag(run_id, CURRENT, "true"))


def cell_record(tracker: Tracker, experiment_id: str, parent_id: str, keys: Iterable[str]) -> dict[str, Any]:
    """Per cell key of the suite: the run that holds it, and whether this parent ran it or reused another's."""
    latest = finished_by_key(tracker, experiment_id)
    out: dict[str, Any] = {"ran": {}, "reused": {}, "not_finished": []}
    for key in keys:
        run = latest.get(key)
        if run is None:
            out["not_finished"].append(key)
        elif run.data.tags.get(PARENT) == parent_id:
            out["ran"][key] = run.info.run_id
        else:
            out["reused"][key] = {"run": run.info.run_id, "parent": run.data.tags.get(PARENT, "")}
    return out


def log_cell_record(tracker: Tracker, parent_id: str, record: dict[str, Any]) -> None:
    """``cells.json`` on the parent run, and its counts as the metrics ``cells_ran`` and ``cells_reused``."""
    from mlflow.entities import Metric

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CELLS_FILE
        path.write_text(json.dumps(record, indent=1, sort_keys=True))
        retry(lambda: tracker.client.log_artifact(parent_id, str(path)))
    now = int(time.time() * 1000)
    metrics = [Metric(f"cells_{k}", len(record[k]), now, 0) for k in ("ran", "reused")]
    retry(lambda: tracker.client.log_batch(parent_id, metrics=metrics))
