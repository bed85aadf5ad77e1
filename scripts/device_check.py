"""The device check: every GPU figure of docs/performance.md in one process, one call (scripts/gpu_check.sh).

``python scripts/device_check.py OUT_DIR [--device cuda|cpu] [--quick] [--skip SECTION ...]`` writes
``figures.json`` (every figure, with the card, versions and date), ``calibration.json`` (the throughputs
``run --dry-run`` reads; copy it to ``benchmark/grid/calibration/<card>.json``), ``store.tar.gz`` (the MLflow store of
``suites/gpu-check.yaml``, its report included), ``cuda-tests.xml`` and ``check.log``. Each measurement is a short
timed window after a warm-up; sections run in order of importance and one that would pass the time budget is
recorded as skipped, so the check ends in time on any card. ``--quick`` shrinks every size (the CPU rehearsal).
The sections live in ``device_check_training.py`` (training figures) and ``device_check_sections.py`` (the rest).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's package, not an installed copy (``python scripts/device_check.py``)
    sys.path.insert(0, str(ROOT))

from device_check_sections import (  # noqa: E402
    section_attacks,
    section_peak,
    section_refits,
    section_suite,
    section_tests,
)
from device_check_training import (  # noqa: E402
    QUICK,
    Sizes,
    make_trainer,
    section_compile,
    section_flops,
    section_grouped,
    section_processes,
    section_training,
    window_batches,
)

log = logging.getLogger("device_check")
SECTIONS = ("tests", "peak", "training", "flops", "attacks", "refits", "suite", "processes", "grouped", "compile")


class Check:
    """Runs the sections and collects their figures; a section that raises is recorded, the others go on."""

    def __init__(self, out: Path, device: torch.device, sizes: Sizes, quick: bool) -> None:
        self.out, self.device, self.sizes, self.quick = out, device, sizes, quick
        self.start = time.perf_counter()
        self.figures: dict[str, Any] = {"meta": _meta(device, quick), "sizes": asdict(sizes), "skipped": {}}

    def left(self) -> float:
        return self.sizes.budget_s - (time.perf_counter() - self.start)

    def section(self, name: str, fn: Callable[[], Any], need_s: float = 0.0) -> None:
        if self.left() < need_s:
            self.figures["skipped"][name] = f"time budget: {self.left():.0f} s left, needs ~{need_s:.0f} s"
            log.warning("skip %s: %s", name, self.figures["skipped"][name])
            return
        t0 = time.perf_counter()
        log.info("== %s (%.0f s left)", name, self.left())
        try:
            self.figures[name] = fn()
        except Exception as err:  # one broken section must not cost the figures of the others
            log.exception("section %s failed", name)
            self.figures["skipped"][name] = f"failed: {type(err).__name__}: {err}"
        self.figures.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        self.save()

    def save(self) -> None:
        (self.out / "figures.json").write_text(json.dumps(self.figures, indent=1, default=str))


def card_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"


def card_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _meta(device: torch.device, quick: bool) -> dict[str, Any]:
    meta = {
        "card": card_name(device),
        "device": device.type,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "quick": quick,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
    return meta


def worker(args: argparse.Namespace) -> int:
    """One of N processes sharing the card: warm up, wait for the others, train for a window, print images/s."""
    sizes = QUICK if args.quick else Sizes()
    device = torch.device(args.device)
    run = make_trainer(args.backbone, args.defense, args.batch, sizes.precisions[-1], False, device, sizes,
                       seed=args.rank)
    n = window_batches(run, args.batch, sizes.window_s / 2)
    ready = Path(args.ready)
    (ready / f"{args.rank}.ready").touch()
    deadline = time.time() + 300
    while len(list(ready.glob("*.ready"))) < args.of and time.time() < deadline:
        time.sleep(0.05)
    seconds = done = 0.0
    while seconds < 2 * sizes.window_s:
        seconds += run(n)
        done += n * args.batch
    print(json.dumps({"images_per_second": done / seconds, "seconds": seconds}))
    return 0


def calibration(figures: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """What ``run --dry-run`` reads: forward+backward passes per second per backbone, from PGD training at the
    paper's batch in the main precision (the suites' defaults: batch 64, bf16 autocast on CUDA, eager)."""
    key = f"batch{sizes.paper_batch}_{sizes.precisions[-1]}_eager"
    rates = {}
    for name, row in figures.get("training", {}).items():
        backbone, defense = name.split("/")
        if defense == "pgd" and isinstance(row, dict) and key in row:
            rates[backbone] = row[key]["passes_per_second"]
    meta = figures["meta"]
    return {"card": meta["card"], "date": meta["date"], "torch": meta["torch"], "quick": meta["quick"],
            "setting": f"PGD-{sizes.pgd_steps} training, {key}", "passes_per_second": rates,
            "written_by": "scripts/gpu_check.sh (scripts/device_check.py)"}


def paper_estimate(cal: dict[str, Any], path: Path) -> list[str]:
    """``run suites/paper.yaml --dry-run``'s GPU estimate from the throughputs just measured."""
    from benchmark.grid.estimate import Calibration, estimate_lines
    from benchmark.suite import expand, load_suite

    suite = load_suite(ROOT / "suites" / "paper.yaml")
    measured = Calibration(cal["card"], cal["date"], path, cal["passes_per_second"])
    return estimate_lines(suite, expand(suite), "cuda", calibration=measured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/device_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="output folder (created)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CPU rehearsal, about a minute")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for opt in ("--backbone", "--defense", "--ready"):
        parser.add_argument(opt, help=argparse.SUPPRESS)
    for opt in ("--batch", "--of", "--rank"):
        parser.add_argument(opt, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.out is None:
        parser.error("OUT_DIR is required")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available here; use --device cpu", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(out / "check.log")])
    for noisy in ("mlflow", "alembic", "matplotlib", "PIL", "benchmark.cell.training"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    device = torch.device(args.device)
    sizes = QUICK if args.quick else Sizes()
    if device.type == "cpu":
        sizes = replace(sizes, precisions=("float32",))  # bf16 on a CPU depends on its matrix units: not the point
    check = Check(out, device, sizes, args.quick)
    figs = check.figures
    plan: list[tuple[str, Callable[[], Any], float]] = [
        ("tests", lambda: section_tests(out), 0),
        ("peak", lambda: section_peak(device, sizes), 0),
        ("training", lambda: section_training(device, sizes), 30),
        ("flops", lambda: section_flops(device, sizes, figs), 5),
        ("attacks", lambda: section_attacks(device, sizes), 5),
        ("refits", lambda: section_refits(device, sizes), 5),
        ("suite", lambda: section_suite(out, device, sizes, args.quick), 20),
        ("grouped", lambda: section_grouped(device, sizes, figs), 10),
        ("processes", lambda: section_processes(device, sizes), 20),
        ("compile", lambda: section_compile(device, sizes, figs), 20),
    ]
    if device.type == "cpu":  # inductor's CPU compile takes minutes on 2 cores and is not the question here
        args.skip.append("compile")
    for name, fn, need in plan:
        if name in args.skip:
            figs["skipped"][name] = "--skip" if name != "compile" or device.type != "cpu" else "not on the CPU"
            continue
        check.section(name, fn, need)
    cal = calibration(figs, sizes)
    (out / "calibration.json").write_text(json.dumps(cal, indent=1))
    if cal["passes_per_second"]:
        figs["paper_estimate"] = paper_estimate(cal, out / "calibration.json")
    figs["total_seconds"] = round(time.perf_counter() - check.start, 1)
    check.save()
    log.info("figures: %s; calibration: %s (copy it to benchmark/grid/calibration/%s.json)", out / "figures.json",
             out / "calibration.json", card_slug(cal["card"]))
    failed = [k for k, v in figs["skipped"].items() if str(v).startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
