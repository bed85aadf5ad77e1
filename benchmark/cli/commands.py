"""The command line: run, validate, list, report, ui, cache.

User errors (a bad suite, a missing dataset, an unreachable store) print one line and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from benchmark import COMMAND
from benchmark.core.errors import BenchmarkError

EPILOG = f"Results land in MLflow; open them with `{COMMAND} ui`."
RERUN_ALL = "*"  # what a bare --rerun stands for


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a suite: every cell of its grid becomes an MLflow run", epilog=EPILOG)
    p.add_argument("suite", help="suite YAML file, e.g. suites/smoke.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the expanded grid, the cell count and the time "
                   "estimate, and check that the data is there (as validate does); run nothing")
    p.add_argument(
        "--only", action="append", metavar="KEY=VALUE", help="run a slice: KEY is dataset|backbone|defense|attack|filter|seed; "
        "comma-separated values; repeatable (all must match)"
    )
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="overrides the suite's device")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite under ./mlruns)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, only the summary")
    p.add_argument("--rerun", action="append", nargs="?", const=RERUN_ALL, metavar="KEY=VALUE",
                   help="start a new parent run and rerun every cell, or only a slice (as --only; repeatable); "
                   "without it, cells finished by any earlier run of any version of the suite are reused")
    p.add_argument("--executor", choices=("local", "ray"), help="overrides the suite's executor")
    p.add_argument("--address", help="address of an existing Ray cluster (with --executor ray)")
    p.add_argument("--cache-dir", help="cache of trained backbones and features (default: $BENCHMARK_CACHE or "
                   "./.cache/benchmark)")
    p.add_argument("--data-root", help="where torchvision datasets live (default: $BENCHMARK_DATA or a cache folder)")
    p.add_argument("--download", action="store_true", help="download the suite's missing torchvision datasets into "
                   "the data root before the grid starts")
    p.add_argument("--yes", action="store_true", help="start a suite sized for a GPU on this machine's CPU anyway")


def _cmd_run(args: argparse.Namespace) -> int:
    from benchmark.core import progress
    from benchmark.grid.runner import print_table, run_suite

    rerun_all = RERUN_ALL in (args.rerun or [])
    if args.dry_run:
        return _dry_run(args, rerun_all)
    progress.set_enabled(False if args.quiet else None)
    if args.data_root:
        os.environ["BENCHMARK_DATA"] = args.data_root
    summary = run_suite(
        args.suite,
        only=args.only,
        device=args.device,
        tracking_uri=args.tracking_uri,
        resume=not rerun_all,
        rerun=None if rerun_all else args.rerun,
        executor=args.executor,
        address=args.address,
        cache_dir=args.cache_dir,
        data_root=args.data_root,
        progress=progress.enabled(),
        echo=progress.echo,
        download=args.download,
        yes=args.yes,
    )
    print_table(summary)
    print(
        f"results: MLflow store {summary.tracking_uri}, parent run {summary.parent_run_id}; "
        f"open with `{COMMAND} ui`"
    )
    if summary.failed:
        print(f"{summary.failed} of {len(summary.records)} cells FAILED (see their runs' error.txt)", file=sys.stderr)
        return 1
    return 0


def _dry_run(args: argparse.Namespace, rerun_all: bool) -> int:
    """The plan (cells, which are finished already in the store, sweeps, the estimate of the others), then the data
    check ``validate`` runs: a plan whose data is missing ends with the same one line and exit 2."""
    from benchmark.grid.data_check import ensure_data
    from benchmark.grid.estimate import estimate_lines
    from benchmark.grid.runner import rerun_keys
    from benchmark.store.reuse import finished_keys_of_suite
    from benchmark.suite import expand, load_suite, parse_only, sweep_lines

    suite = load_suite(args.suite)
    cells = expand(suite, parse_only(args.only))
    again = rerun_keys(suite, cells, not rerun_all, None if rerun_all else args.rerun)
    try:
        done = finished_keys_of_suite(args.tracking_uri, suite.name) - again
    except BenchmarkError as err:  # a dry run still prices the grid without the store
        print(f"note: {err}; every cell is priced")
        done = set()
    for cell in cells:
        print(f"{cell.key}  {cell.title()}{'  (finished: reused)' if cell.key in done else ''}")
    todo = [c for c in cells if c.key not in done]
    print(f"{len(cells)} cells: {len(cells) - len(todo)} already finished or reusable, {len(todo)} to run")
    for line in [*sweep_lines(suite), *estimate_lines(suite, todo, args.device, cache_dir=args.cache_dir)]:
        print(line)
    sys.stdout.flush()  # the plan before a data error on stderr
    ensure_data(suite, args.suite, args.data_root, labels={c.dataset for c in cells})
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from benchmark.grid.data_check import ensure_data
    from benchmark.grid.feasibility import check_feasible
    from benchmark.suite import expand, load_suite

    suite = load_suite(args.suite)
    ensure_data(suite, args.suite, args.data_root)
    cells = expand(suite)
    check_feasible(suite, cells, args.suite)
    print(f"{args.suite}: valid suite '{suite.name}', {len(cells)} cells")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from benchmark.core.registry import KINDS, REGISTRY

    for kind in KINDS:
        if args.kind and kind != args.kind:
            continue
        print(f"{kind}s:")
        for comp in REGISTRY.items(kind):
            print(f"  {comp.name:<24} {comp.description}")
            for key, value in comp.defaults().items():
                print(f"      {key} = {shown_default(value)}")
    return 0


def shown_default(value: object) -> str:
    """A default as ``list`` prints it: floats with 6 significant digits (8/255 is 0.0313725, not
    0.03137254901960784), everything else as Python writes it."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def _cmd_report(args: argparse.Namespace) -> int:
    from benchmark.report import main as report_main

    return report_main(args)


def _cmd_ui(args: argparse.Namespace) -> int:
    from benchmark.cli.ui import check, serve
    from benchmark.store.tracking import default_tracking_uri, redact

    uri = default_tracking_uri(args.tracking_uri)
    check(uri, args.host, args.port)  # port, a program already on it, a store that does not answer: one line
    print(f"starting the MLflow UI on http://{args.host}:{args.port} over {redact(uri)} ...", flush=True)
    return serve(uri, args.host, args.port)


def _cmd_data(args: argparse.Namespace) -> int:
    from adapters.datasets import data_root
    from adapters.datasets import torchvision_sets as tv

    root = data_root(args.data_root)
    unknown = [n for n in args.names if n not in tv.TORCHVISION_SETS]
    if unknown:
        raise BenchmarkError(f"data download {' '.join(unknown)}: not a torchvision dataset; known: "
                             f"{', '.join(tv.TORCHVISION_SETS)}")
    for name in args.names:
        if not tv.missing_files(name, root):
            print(f"{name}: already in {root}")
            continue
        print(f"{name}: downloading into {root}")
        tv.download(name, root)
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from benchmark.store.cache import Cache

    cache = Cache(args.cache_dir)
    if args.action == "list":
        entries = cache.entries()
        for e in entries:
            desc = ", ".join(f"{k}={v}" for k, v in sorted(e.meta.items()) if k not in ("sha256", "kind", "key"))
            print(f"{e.kind:<9} {e.key}  {e.size / 1e6:8.2f} MB  {desc}")
        print(f"{len(entries)} entries under {cache.root}")
    else:
        n = cache.clear(args.kind)
        print(f"removed {n} entries from {cache.root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Benchmark of poisoning attacks against robust (adversarially trained) features.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    p = sub.add_parser("validate", help="check a suite file and that its data is there, without running it")
    p.add_argument("suite", help="suite YAML file, e.g. suites/digits-cpu.yaml")
    p.add_argument("--data-root", help="where torchvision datasets live (default: $BENCHMARK_DATA or a cache folder)")
    p = sub.add_parser("list", help="list attacks, defenses, filters, datasets, backbones and heads with their "
                       "parameters")
    p.add_argument("kind", nargs="?", choices=("dataset", "backbone", "defense", "attack", "head", "filter"),
                   help="only this kind of component (default: all)")
    p = sub.add_parser("report", help="tables and plots from the MLflow runs of a suite")
    p.add_argument("--suite", help="suite name (its MLflow experiment): one row per cell of the suite file "
                   "last run, whichever run finished it")
    p.add_argument("--run-id", help="a parent run id (instead of --suite)")
    p.add_argument("--out", default="reports", help="output folder (default: reports/); the report is also logged "
                   "under report/ of the parent run")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite under ./mlruns)")
    p = sub.add_parser("ui", help="start the MLflow UI over the project's store and print a link per suite")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite under ./mlruns)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000)")
    p = sub.add_parser("data", help="download torchvision datasets (MNIST, SVHN, CIFAR-10/100) into the data root")
    p.add_argument("action", choices=("download",), help="download: fetch the named datasets")
    p.add_argument("names", nargs="+", metavar="NAME", help="mnist, svhn, cifar10 or cifar100")
    p.add_argument("--data-root", help="where torchvision datasets live (default: $BENCHMARK_DATA or a cache folder)")
    p = sub.add_parser("cache", help="list or clear cached backbones, features and attacks")
    p.add_argument("action", choices=("list", "clear"), help="list: the entries and their sizes; clear: remove them")
    p.add_argument("--kind", choices=("backbone", "features", "attack"), help="with clear: only this kind")
    p.add_argument("--cache-dir", help="the cache folder (default: $BENCHMARK_CACHE or ./.cache/benchmark)")
    return parser


COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "list": _cmd_list,
    "report": _cmd_report,
    "ui": _cmd_ui,
    "data": _cmd_data,
    "cache": _cmd_cache,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(quiet=getattr(args, "quiet", False))
    try:
        return COMMANDS[args.command](args)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # Ctrl-C (130) or SIGTERM (143), see benchmark.core.signals
        for signum in (signal.SIGINT, signal.SIGTERM):  # stopping already: more Ctrl-Cs must not change the exit
            signal.signal(signum, signal.SIG_IGN)
        code = getattr(err, "exit_code", 130)
        print("terminated" if code == 143 else "interrupted", file=sys.stderr)
        return code


def _configure_logging(quiet: bool) -> None:
    """Our INFO lines (warnings only under --quiet) through tqdm's writer; other libraries' INFO lines never."""
    from benchmark.core.progress import TqdmLogHandler

    level = logging.WARNING if quiet else logging.INFO
    handler = TqdmLogHandler(sys.stderr)
    handler.setLevel(level)  # a logger set to INFO further down (a cell's log capture) must not get past --quiet
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, TqdmLogHandler)]:  # main() called again in one process
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # MLflow configures its own loggers when imported (after this): its level comes from this variable
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for noisy in ("mlflow", "alembic", "urllib3", "git", "matplotlib", "PIL", "ray", "art"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # a failing store (disk full) is said once, in the run's own line with its cause: not also as MLflow's logged
    # traceback per failed write, hundreds of lines before it
    for store_logger in ("mlflow.store.db.utils", "sqlalchemy"):
        logging.getLogger(store_logger).setLevel(logging.CRITICAL)


if __name__ == "__main__":
    raise SystemExit(main())
