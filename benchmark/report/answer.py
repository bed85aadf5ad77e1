"""The report's answer to "do robust features resist poisoning?": budget curves, budget to break, robust accuracy
over eps, the paper's claims with verdicts, and the paired comparisons behind them, as document blocks."""

from __future__ import annotations

from typing import Any

from benchmark.report.aggregate import Aggregate
from benchmark.report.claims import ClaimCheck, check_claims, claims_table
from benchmark.report.curves import break_table, curve_figure, families, robust_figure
from benchmark.report.document import Block, Bullets, Heading, Image, Text
from benchmark.report.paired import fmt_effect, fmt_p, pairwise, pairwise_table
from benchmark.report.per_example import load_outcomes
from benchmark.report.source import RunSet

FIGURES = "figures"


def _evaluation(raw: dict[str, Any] | None) -> tuple[list[float], int]:
    ev = (raw or {}).get("evaluation") or {}
    eps = (ev.get("sweep") or {}).get("robust_eps") or []
    return [float(e) for e in eps], int(ev.get("robust_samples", 500))


def claim_sentence(ch: ClaimCheck) -> str:
    effects = ", ".join(f"{c.a} − {c.b} {fmt_effect(c.est)} pts (p {fmt_p(c.p_adj)})" for c in ch.comparisons)
    tail = f"; would decide at {ch.decide}" if ch.decide else ""
    return f"{ch.claim} on {ch.dataset}/{ch.backbone}, {ch.attack}: {ch.verdict} ({ch.measured}; {effects}{tail})."


def answer_blocks(rs: RunSet, agg: Aggregate) -> list[Block]:
    outcomes = load_outcomes(rs, agg)
    blocks: list[Block] = []
    fams = families(agg, outcomes)
    eps, samples = _evaluation(rs.suite_raw)
    robust = robust_figure(agg, eps, samples)
    if fams or robust:
        blocks.append(Heading("Budget curves"))
        for fam in fams:
            fig = curve_figure(agg, fam)
            blocks.append(Image(fig.title, f"{FIGURES}/{fig.name}", fig.png, fig.svg))
        if any(f.targeted for f in fams):
            blocks.append(break_table(agg, fams))
        if robust:
            blocks.append(Image(robust.title, f"{FIGURES}/{robust.name}", robust.png, robust.svg))
    blocks += claims_blocks(check_claims(agg, outcomes), generated_datasets(rs.suite_raw))
    comps = pairwise(agg, outcomes)
    if comps:
        blocks += [Heading("Paired comparisons"), pairwise_table(comps)]
    elif agg.groups and not outcomes:
        blocks.append(Text("Paired comparisons: none (the runs carry no per-target or per-test-image outcomes)."))
    return blocks


def generated_datasets(raw: dict[str, Any] | None) -> set[str]:
    """Labels of the suite's datasets whose external or target data is generated (the ``synthetic`` dataset)."""
    out = set()
    for label, task in ((raw or {}).get("datasets") or {}).items():
        roles = [task.get(r) for r in ("external", "target")] if isinstance(task, dict) else []
        if any(isinstance(spec, dict) and spec.get("name") == "synthetic" for spec in roles):
            out.add(str(label))
    return out


def claims_blocks(checks: list[ClaimCheck], generated: set[str]) -> list[Block]:
    """The claims table for the real datasets only: generated data shows that the machinery works, not whether
    robust features resist poisoning, so a verdict on it would be a claim about nothing."""
    real = [c for c in checks if c.dataset not in generated]
    if real:
        return [Heading("Claims"), claims_table(real), Bullets([claim_sentence(c) for c in real])]
    if not generated:
        return []
    return [
        Heading("Claims"),
        Text(
            f"No claims table: this suite's data ({', '.join(sorted(generated))}) is generated, so its numbers say "
            "that the pipeline works, not whether robust features resist poisoning. Suites on real images check "
            "the paper's claims: suites/digits-cpu.yaml (no download), mnist-cpu, cifar-cpu."
        ),
    ]
