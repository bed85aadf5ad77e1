"""The MLflow layout: one experiment per suite, one parent run per invocation, one nested child run per cell.

Only the driver process writes here (executors return records), which keeps sqlite consistent; with
``benchmark.store.leases`` (a cell's child run is its claim, created under a lock) it makes "nothing lost, nothing
duplicated" hold across processes. A child run is created RUNNING when its cell is claimed and gets all of its
metrics in one batch when the cell ends, so a run killed mid-cell never leaves a FINISHED run with partial
metrics; the next invocation marks such orphans KILLED. Printed and written URIs go through ``redact``.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from benchmark.core.errors import BenchmarkError
from benchmark.core.files import unwritable
from benchmark.core.signals import deferred
from benchmark.store.headline import HEADLINE_METRICS, NOTE_TAG, headline, rounded

T = TypeVar("T")

ROLE = "benchmark.role"
CELL_KEY = "benchmark.cell_key"
SUITE = "benchmark.suite"
SUITE_HASH = "benchmark.suite_hash"
CURRENT = "benchmark.current"  # on the latest FINISHED run of each cell of the suite file last run (reuse.py)
PARENT = "mlflow.parentRunId"
# MLflow 3 opens an experiment by its kind; without this tag it may guess "GenAI" and show an empty traces page.
# Accepted values (MLflow 3.x UI): custom_model_development, genai_development, finetuning, forecasting, ...
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# A view of the runs table stored on the experiment (MLflow's "shared view"): cells only, flat, with the headline
# metrics as columns and each cell's description (its headline), largest accuracy drop first. `benchmark ui` prints
# the link that opens it (?viewStateShareKey=...).
VIEW_KEY = "benchmark"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
SORT_METRIC = "accuracy_drop"  # the damage every cell has; targeted attacks' success is a column beside it
DESCRIPTION_COLUMN = "attributes.`Description`"  # MLflow 3's key for the runs table's Description column


def redact(text: str) -> str:
    """Passwords in URIs (``scheme://user:password@host``) and ``password=...`` query values become ``***``."""
    text = _USERINFO.sub(r"\1***@", text)
    return _PASSWORD_PARAM.sub(r"\1***", text)


_USERINFO = re.compile(r"(//[^/:@\s]*:)[^@\s]*@")
_PASSWORD_PARAM = re.compile(r"((?:password|passwd|pwd|token)=)[^&\s;]*", re.IGNORECASE)


def default_tracking_uri(explicit: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite under ./mlruns."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path.cwd() / "mlruns"
    return f"sqlite:///{root / 'mlflow.db'}"


def local_sqlite_dir(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).parent
    return None


def retry(fn: Callable[[], T], attempts: int = 40) -> T:
    """sqlite allows one writer at a time: two `benchmark run` processes retry instead of losing a write."""
    for i in range(attempts):
        try:
            with deferred():  # a Ctrl-C inside SQLAlchemy would print its own traceback and half-write a run
                return fn()
        except Exception as err:
            if "locked" not in str(err).lower() or i == attempts - 1:
                raise
            time.sleep(0.25 + 0.05 * i)
    raise AssertionError("unreachable")


@contextmanager
def _store_lock(uri: str | None) -> Iterator[None]:
    """An exclusive lock beside a local sqlite store (a no-op for other stores), held while it is initialised."""
    path = uri[len("sqlite:///") :] if uri and uri.startswith("sqlite:///") else None
    if path in (None, "", ":memory:"):
        yield
        return
    import fcntl

    with open(f"{path}.init-lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist, key in (
        ("torch", "torch"),
        ("torchvision", "torchvision"),
        ("torchattacks", "torchattacks"),
        ("adversarial-robustness-toolbox", "art"),
        ("scikit-learn", "sklearn"),
        ("mlflow", "mlflow"),
        ("numpy", "numpy"),
    ):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = "not installed"
    return out


def backend_flags() -> dict[str, str]:
    import torch

    return {
        "cudnn.deterministic": str(torch.backends.cudnn.deterministic),
        "cudnn.benchmark": str(torch.backends.cudnn.benchmark),
        "cuda.matmul.allow_tf32": str(torch.backends.cuda.matmul.allow_tf32),
        "cudnn.allow_tf32": str(torch.backends.cudnn.allow_tf32),
        "deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()),
        "num_threads": str(torch.get_num_threads()),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    def __init__(self, uri: str | None = None, read_only: bool = False) -> None:
        """``read_only``: only read (``report``): a local store must exist, nothing is created beside it."""
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = default_tracking_uri(uri)
        # MLflow's default HTTP retries back off for minutes; an unreachable server should fail fast
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        local = local_sqlite_dir(self.uri)
        if read_only and local is not None and not Path(self.uri[len("sqlite:///") :]).is_file():
            raise BenchmarkError(f"tracking store {self.shown_uri} does not exist; run a suite first")
        try:
            if local is not None and not read_only:
                local.mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(self.uri)
            # opening a new sqlite store creates and migrates it: two runs started at once would both try
            with _store_lock(None if read_only else self.uri):
                self.client = MlflowClient(tracking_uri=self.uri)
                retry(lambda: self.client.search_experiments(max_results=1))
        except Exception as err:
            raise BenchmarkError(f"tracking URI {self.shown_uri} cannot be reached: {_first_line(err)[:200]}") from None
        self.artifact_root = local / "artifacts" if local is not None else None

    @property
    def shown_uri(self) -> str:
        """The URI as it may be printed or written: without its password."""
        return redact(self.uri)

    # experiments and parents
    def experiment_id(self, suite_name: str, description: str | None = None) -> str:
        """The suite's experiment, created as a model-training experiment; ``description`` becomes its note."""
        exp = retry(lambda: self.client.get_experiment_by_name(suite_name))
        if exp is None:
            location = (self.artifact_root / suite_name).resolve().as_uri() if self.artifact_root else None
            try:
                retry(lambda: self.client.create_experiment(suite_name, artifact_location=location))
            except Exception:  # another process created it first
                if retry(lambda: self.client.get_experiment_by_name(suite_name)) is None:
                    raise
            exp = retry(lambda: self.client.get_experiment_by_name(suite_name))
        wanted = {EXPERIMENT_KIND[0]: exp.tags.get(EXPERIMENT_KIND[0], EXPERIMENT_KIND[1]), VIEW_TAG: _cells_view()}
        if description:
            wanted[NOTE_TAG] = description.strip()
        for key, value in wanted.items():
            if exp.tags.get(key) != value:
                retry(lambda k=key, v=value: self.client.set_experiment_tag(exp.experiment_id, k, v))
        return exp.experiment_id

    def latest_parent(self, experiment_id: str, version: str | None = None) -> str | None:
        """The latest parent run (of one suite version, when given)."""
        where = f"tags.`{ROLE}` = 'parent'" + (f" and tags.`{SUITE_HASH}` = '{version}'" if version else "")
        runs = retry(
            lambda: self.client.search_runs(
                [experiment_id],
                filter_string=where,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        )
        return runs[0].info.run_id if runs else None

    def check_writable(self, experiment_id: str) -> None:
        """A write to the store and one to the experiment's artifact folder (when local), before any run exists."""
        try:
            retry(lambda: self.client.set_experiment_tag(experiment_id, "benchmark.last_write_check", str(time.time())))
        except Exception as err:
            raise BenchmarkError(f"tracking store {self.shown_uri} cannot be written: {_first_line(err)}") from None
        location = retry(lambda: self.client.get_experiment(experiment_id)).artifact_location or ""
        parsed = urlparse(location)
        if parsed.scheme not in ("", "file"):
            return  # a remote artifact store: its first write is the parent's suite file, checked in start_parent
        folder = Path(unquote(parsed.path))
        reason = unwritable(folder)
        if reason:
            raise BenchmarkError(f"artifact store {folder} cannot be written: {reason}")

    def start_parent(
        self,
        suite_name: str,
        suite_path: Path,
        device: str,
        extra: dict[str, Any],
        resume: bool,
        version: str,
        description: str | None = None,
    ) -> tuple[str, bool, str]:
        """The parent run to log into, whether it is resumed, and a note to print.

        Resuming takes the latest parent that ran this version of the suite (``version``: a hash of its content);
        an edited suite starts a new parent, so one parent never mixes two configurations.
        """
        exp = self.experiment_id(suite_name, description)
        note = ""
        if resume:
            parent = self.latest_parent(exp, version)
            if parent is not None:
                retry(lambda: self.client.update_run(parent, status="RUNNING"))
                return parent, True, note
            if self.latest_parent(exp) is not None:
                note = (f"{suite_path} differs from the suite its latest parent run ran: starting a new parent run "
                        "(cells that earlier runs finished are reused, not run again; --rerun runs them again)")
        tags = {ROLE: "parent", SUITE: suite_name, SUITE_HASH: version, "mlflow.source.git.commit": git_commit()}
        run = retry(
            lambda: self.client.create_run(exp, run_name=f"{suite_name} · {time.strftime('%Y-%m-%d %H:%M')}",
                                           tags=tags)
        )
        rid = run.info.run_id
        try:
            params = {"suite": suite_name, "device": device, "git_commit": tags["mlflow.source.git.commit"]}
            params.update({f"version.{k}": v for k, v in library_versions().items()})
            params.update({f"torch.backends.{k}": v for k, v in backend_flags().items()})
            params.update(extra)
            self._log_params(rid, params)
            retry(lambda: self.client.log_artifact(rid, str(suite_path)))
        except Exception as err:  # nothing ran yet: close the parent and stop with one line
            try:
                self.set_status(rid, "FAILED")
            except Exception:
                pass
            raise BenchmarkError(f"tracking store {self.shown_uri} cannot be written: {_first_line(err)}") from None
        return rid, False, note

    def end_parent(self, run_id: str, failed: int, total: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric("cells_failed", failed, now, 0), Metric("cells_total", total, now, 0)]
        retry(lambda: self.client.log_batch(run_id, metrics=metrics))
        run = retry(lambda: self.client.get_run(run_id))
        retry(lambda: self.client.set_tag(run_id, NOTE_TAG, self.parent_note(run_id, run.info.experiment_id)))
        retry(lambda: self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED"))

    def parent_note(self, parent_id: str, experiment_id: str) -> str:
        """The parent's description: a markdown table of its cells and their headlines, to compare at a glance."""
        rows = sorted(
            (r for r in self.children(parent_id, experiment_id) if r.data.tags.get(ROLE) == "cell"),
            key=lambda r: r.info.run_name or "",
        )
        lines = ["| cell | status | headline |", "|---|---|---|"]
        lines += [f"| {r.info.run_name} | {r.info.status} | {headline(r.data.metrics)} |" for r in rows]
        return "\n".join(lines)[:4900]

    def kill_parent(self, run_id: str) -> None:
        retry(lambda: self.client.set_terminated(run_id, "KILLED"))

    # children
    def children(self, parent_id: str, experiment_id: str) -> list[Any]:
        return retry(
            lambda: self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{PARENT}` = '{parent_id}'", max_results=50000
            )
        )

    def finished_keys(self, parent_id: str, experiment_id: str) -> dict[str, str]:
        return {
            r.data.tags[CELL_KEY]: r.info.run_id
            for r in self.children(parent_id, experiment_id)
            if r.info.status == "FINISHED" and CELL_KEY in r.data.tags
        }

    def cell_runs(self, parent_id: str | None, experiment_id: str, key: str) -> list[Any]:
        """Every run of one cell key under a parent (``None``: under any parent of the experiment)."""
        where = f"tags.`{CELL_KEY}` = '{key}'" + (f" and tags.`{PARENT}` = '{parent_id}'" if parent_id else "")
        return retry(lambda: self.client.search_runs([experiment_id], filter_string=where, max_results=50000))

    def set_status(self, run_id: str, status: str) -> None:
        retry(lambda: self.client.set_terminated(run_id, status))

    def mark_orphans(self, parent_id: str, experiment_id: str) -> int:
        """RUNNING children whose process is gone (see ``leases.owner_alive``) become KILLED; returns how many."""
        from benchmark.store.leases import owner_alive

        n = 0
        for r in self.children(parent_id, experiment_id):
            if r.info.status == "RUNNING" and not owner_alive(r.data.tags):
                self.set_status(r.info.run_id, "KILLED")
                n += 1
        return n

    def kill_own_children(self, parent_id: str, experiment_id: str) -> int:
        """Ctrl-C: every child of this parent that this process left RUNNING becomes KILLED; returns how many.

        Found by the pid/host tags rather than by the driver's bookkeeping, so a run whose creation the interrupt
        cut short is caught too, and a run that was already FINISHED is left alone.
        """
        from benchmark.store.leases import is_mine

        n = 0
        for r in self.children(parent_id, experiment_id):
            if r.info.status == "RUNNING" and is_mine(r.data.tags):
                retry(lambda rid=r.info.run_id: self.client.set_terminated(rid, "KILLED"))
                n += 1
        return n

    def start_child(self, parent_id: str, experiment_id: str, cell: Any) -> str:
        from benchmark.store.leases import owner_tags
        tags = {
            PARENT: parent_id,
            ROLE: "cell",
            CELL_KEY: cell.key,
            SUITE: cell.suite,
            **owner_tags(),
            **cell.tags(),
        }
        run = retry(lambda: self.client.create_run(experiment_id, run_name=cell.title(), tags=tags))
        rid = run.info.run_id
        self._log_params(rid, cell.flat_params())
        return rid

    def finish_child(self, run_id: str, record: Any, status: str | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(k, rounded(v), now, 0) for k, v in record.metrics.items()]
        for name, values in record.curves.items():
            metrics += [Metric(f"curve.{name}", rounded(v), now, step) for step, v in enumerate(values)]
        tags = [RunTag("benchmark.status", record.status)]
        note = headline(record.metrics) if record.status == "FINISHED" else f"FAILED: {record.error or 'see error.txt'}"
        tags.append(RunTag(NOTE_TAG, note[:4900]))
        if record.error:
            tags.append(RunTag("benchmark.error", record.error[:4900]))
        extra_params = record.results  # outcomes that are not numbers; the inputs were logged at the start
        for i in range(0, len(metrics), 900):
            chunk = metrics[i : i + 900]
            retry(lambda c=chunk: self.client.log_batch(run_id, metrics=c))
        retry(lambda: self.client.log_batch(run_id, tags=tags, params=[Param(k, str(v)) for k, v in extra_params.items()]))
        artifacts = dict(record.artifacts)
        if record.logs:
            artifacts["cell_log.txt"] = ("\n".join(record.logs) + "\n").encode()
        if record.error:
            artifacts["error.txt"] = (record.error + "\n").encode()
        if artifacts:
            with tempfile.TemporaryDirectory() as tmp:
                for name, data in artifacts.items():
                    (Path(tmp) / name).write_bytes(data)
                retry(lambda: self.client.log_artifacts(run_id, tmp))
        retry(lambda: self.client.set_terminated(run_id, status or record.status))

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 90):
            chunk = items[i : i + 90]
            retry(lambda c=chunk: self.client.log_batch(run_id, params=c))


def _cells_view() -> str:
    import json

    return json.dumps(
        {
            "selectedColumns": [DESCRIPTION_COLUMN, *(f"metrics.`{m}`" for m in HEADLINE_METRICS)],
            # a filter and a sort other than by start time make MLflow list the children flat, not folded;
            # one row per cell of the current suite, whichever parent ran it (benchmark/store/reuse.py)
            "searchFilter": f"tags.`{CURRENT}` = 'true'",
            "orderByKey": f"metrics.`{SORT_METRIC}`",
            "orderByAsc": False,
        }
    )


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5990] + "..."



def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return redact(text.splitlines()[0][:300] if text else type(err).__name__)
