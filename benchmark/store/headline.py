"""What a user sees first of a run in the MLflow UI: metric values without float32 noise, and one headline line.

MLflow's runs table shows a run's name and its description (the ``mlflow.note.content`` tag) without any column
being added by hand, while its 100-odd metrics hide behind a column picker: the headline puts the few numbers that
answer the benchmark's question (clean vs poisoned accuracy, attack success, robust accuracy) into that description.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

NOTE_TAG = "mlflow.note.content"  # MLflow's run and experiment description
# the metrics that answer the benchmark's question, each with the short name a table gives it: the runs table's
# columns, the terminal's summary table and the headline line all show these
HEADLINE_METRICS = {
    "clean_accuracy": "clean",
    "poisoned_accuracy": "poisoned",
    "accuracy_drop": "drop",
    "attack_success_rate": "success",
    "robust_accuracy": "robust",
}
SIGNIFICANT_DIGITS = 6  # float32 carries ~7 digits; 6 drop the noise (0.92500001 -> 0.925) and keep the value


def rounded(value: float) -> float:
    """``value`` as a Python float with 6 significant digits (NaN and infinities unchanged)."""
    v = float(value)
    return v if not math.isfinite(v) else float(f"{v:.{SIGNIFICANT_DIGITS}g}")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def headline(metrics: Mapping[str, float]) -> str:
    """One line of the headline metrics a cell has, e.g. ``clean 92.5% → poisoned 90.0% (drop 2.5 pts) · robust
    41.0%``; empty when the cell has none of them (a failed cell)."""
    parts = []
    if "clean_accuracy" in metrics and "poisoned_accuracy" in metrics:
        drop = 100 * (metrics["clean_accuracy"] - metrics["poisoned_accuracy"])
        parts.append(
            f"clean {_pct(metrics['clean_accuracy'])} → poisoned {_pct(metrics['poisoned_accuracy'])} "
            f"(drop {drop:.1f} pts)"
        )
    if "attack_success_rate" in metrics:
        wins, trials = metrics.get("attack_successes"), metrics.get("num_trials")
        count = f" ({wins:.0f}/{trials:.0f} targets)" if wins is not None and trials else ""
        parts.append(f"success {_pct(metrics['attack_success_rate'])}{count}")
    if "robust_accuracy" in metrics:
        parts.append(f"robust {_pct(metrics['robust_accuracy'])}")
    return " · ".join(parts)
