"""``uv run python -m benchmark report``: tables and figures from a suite's MLflow runs (nothing is re-run).

source (read MLflow) -> aggregate (over seeds; expected vs missing vs failed) -> tables / plots -> document
(Markdown) and html (self-contained) -> files in DIR/<suite>/, also logged under ``report/`` of the parent run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmark import COMMAND
from benchmark.core.errors import BenchmarkError
from benchmark.core.files import unwritable
from benchmark.report.aggregate import Aggregate, SuiteGrid, aggregate
from benchmark.report.answer import answer_blocks
from benchmark.report.document import (
    Block,
    Bullets,
    Heading,
    Image,
    Text,
    to_markdown_document,
)
from benchmark.report.html import to_html
from benchmark.report.plots import figures
from benchmark.report.source import RunSet, download, load_runs
from benchmark.report.tables import (
    failed_table,
    full_table,
    missing_lines,
    reference_tables,
)
from benchmark.store.tracking import redact, retry

ARTIFACT_DIR = "report"
FIGURES = "figures"
GALLERY_ARTIFACT = "poison_examples.png"


@dataclass
class ReportResult:
    directory: Path
    files: list[Path]
    parent_id: str
    logged: bool
    aggregate: Aggregate


def main(args: argparse.Namespace) -> int:
    out = getattr(args, "out", None) or "reports"
    check_out(out)  # before the runs are read: a report that cannot be written is one line, not a traceback
    try:
        result = build_report(
            suite=getattr(args, "suite", None),
            run_id=getattr(args, "run_id", None),
            out=out,
            tracking_uri=getattr(args, "tracking_uri", None),
        )
    except OSError as err:  # the folder changed under the report (disk full, removed): still one line
        raise BenchmarkError(f"--out {out}: cannot write the report ({err.strerror or err}: {err.filename})") from None
    agg = result.aggregate
    print(
        f"report: {len(agg.groups)} groups, {len(agg.failed)} failed and {len(agg.missing)} missing cells; "
        f"wrote {result.directory / 'report.md'}, {result.directory / 'report.html'} and "
        f"{sum(1 for f in result.files if f.suffix == '.png')} figures (PNG, and SVG beside the charts)"
    )
    if result.logged:
        print(f"report: logged under '{ARTIFACT_DIR}/' of parent run {result.parent_id} (`{COMMAND} ui`)")
    return 0


def check_out(out: str | Path) -> None:
    """``--out`` is a folder this process can write in (created when missing), else one BenchmarkError line."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise BenchmarkError(f"--out {out}: a file, not a folder; name a folder for the report")
    reason = unwritable(path)
    if reason:
        raise BenchmarkError(f"--out {out}: the report cannot be written there ({reason})")


def build_report(
    suite: str | None = None,
    run_id: str | None = None,
    out: str | Path = "reports",
    tracking_uri: str | None = None,
    log_artifacts: bool = True,
) -> ReportResult:
    """Read the runs, write report.md, report.html and figures into ``out/<suite>/``, log them to the parent."""
    rs = load_runs(tracking_uri, suite, run_id)
    agg = aggregate(rs.runs, SuiteGrid.from_raw(rs.suite_raw))
    outdir = Path(out) / (_slug(rs.suite).lstrip(".") or "_")  # an experiment named "../x" stays inside --out
    figdir = outdir / FIGURES
    shutil.rmtree(figdir, ignore_errors=True)  # only our own figures folder: stale gallery images must not linger
    figdir.mkdir(parents=True, exist_ok=True)

    images = [Image(f.title, f"{FIGURES}/{f.name}", f.png, f.svg) for f in figures(agg)]
    answer = answer_blocks(rs, agg)  # curves, paired tests, claims
    curves = [b for b in answer if isinstance(b, Image)]
    gallery = _gallery(rs, agg)
    files = []
    for img in images + curves + gallery:
        path = outdir / img.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(img.png)
        files.append(path)
        if img.svg:
            (outdir / img.svg_path).write_bytes(img.svg)
            files.append(outdir / img.svg_path)
    blocks = _document(rs, agg, images, gallery, answer)
    md, html = outdir / "report.md", outdir / "report.html"
    md.write_text(to_markdown_document(blocks))
    html.write_text(to_html(blocks, f"Report: {rs.suite}"))
    files = [md, html, *files]

    logged = False
    if log_artifacts:
        try:
            retry(lambda: rs.tracker.client.log_artifacts(rs.parent_id, str(outdir), artifact_path=ARTIFACT_DIR))
            logged = True
        except Exception as err:  # the files on disk are the report; the MLflow copy is a convenience
            print(f"report: could not log the report to run {rs.parent_id}: {redact(str(err))}", file=sys.stderr)
    return ReportResult(outdir, files, rs.parent_id, logged, agg)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _gallery(rs: RunSet, agg: Aggregate) -> list[Image]:
    """One poison picture per (dataset, attack, defense): from the first backbone and seed that has one."""
    picked: dict[tuple[str, str, str], Image] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, group in agg.groups.items():
            dataset, backbone, defense, attack, _ = key  # poisons do not depend on the filter
            slot = (dataset, attack, defense)
            linf = group.stats.get("perturbation_linf_max")
            if slot in picked or linf is None or linf.mean <= 0:  # no attack, or labels only: nothing to see
                continue
            for run in group.runs:
                path = download(rs.tracker, run.run_id, GALLERY_ARTIFACT, Path(tmp))
                if path is not None and path.is_file():
                    name = _slug(f"{dataset}_{attack}_{defense}") + ".png"
                    picked[slot] = Image(
                        f"{attack} on {dataset} / {backbone} / {defense} (seed {run.seed}): original, poison, |diff|",
                        f"{FIGURES}/gallery/{name}",
                        path.read_bytes(),
                    )
                    break
    return sorted(picked.values(), key=lambda img: img.path)


def _document(
    rs: RunSet, agg: Aggregate, images: list[Image], gallery: list[Image], answer: list[Block]
) -> list[Block]:
    finished = sum(g.n for g in agg.groups.values())
    expected = sum(agg.expected.values())
    blocks: list[Block] = [
        Heading(f"Report: suite {rs.suite}", 1),
        Text(
            f"Parent run {rs.parent_name} ({rs.parent_id}) in {rs.tracker.shown_uri}; suite file: "
            f"{rs.suite_file or 'not found among the parent run artifacts'}. "
            f"{finished} finished cells"
            + (f" of {expected} expected" if expected else "")
            + f", {len(agg.failed)} failed, {len(agg.missing)} missing. Generated {time.strftime('%Y-%m-%d %H:%M:%S')}."
        ),
    ]
    tables = reference_tables(agg)
    if tables:
        blocks += [
            Heading("Published vs measured"),
            Text(
                "Each published number beside the measured value of the cells it belongs to: mean over seeds "
                "± half-width of the 95% interval (n = seeds); rates and accuracies in percent, accuracy drops "
                "in percentage points. 'missing': the cells were expected but have no finished run; 'not run': "
                "the suite's grid has no such cell."
            ),
            *tables,
        ]
    blocks += answer
    blocks += [Heading("All groups"), full_table(agg)]
    blocks.append(Heading("Failed and missing cells"))
    failed = failed_table(agg)
    if failed.rows:
        blocks += [Text(f"Failed cells ({len(failed.rows)}): no finished run; the latest run's status, error."), failed]
    else:
        blocks.append(Text("Failed cells: none."))
    if agg.grid is None:
        blocks.append(Text("Missing cells: unknown (the suite file was not found among the parent run's artifacts)."))
    elif agg.missing:
        blocks += [Text(f"Missing cells ({len(agg.missing)}): expected by the suite's grid, no run."),
                   Bullets(missing_lines(agg))]
    else:
        blocks.append(Text("Missing cells: none."))
    if images:
        blocks += [Heading("Figures"), *images]
    if gallery:
        blocks += [Heading("Poisons"), *gallery]
    return blocks


__all__ = ["ReportResult", "build_report", "main"]
