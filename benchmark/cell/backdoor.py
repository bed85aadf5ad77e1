"""Backdoor outcomes: how often a trial's trigger turns test images of the victim class into the attacker's class,
under that trial's poisoned head and under the clean head (the trigger alone, no poisons).

Counted images: the test images of the trial's ``target_label`` that the clean head classifies correctly without
the trigger (docs/metrics.md says why). ``backdoor_hits.npz`` keeps every image of that class, per trial, so the
report can pair two cells' images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from adapters.attacks.base import PoisonResult
from adapters.backbones import extract_features
from adapters.heads.linear import LinearHead
from benchmark.cell.artifacts import figure_png, pyplot
from benchmark.core.stats import wilson_interval

BACKDOOR_HITS = "backdoor_hits.npz"
TRIGGERED_EXAMPLES = "triggered_examples.png"
MAX_EXAMPLES = 6  # trials shown in the picture


def has_trigger(result: PoisonResult) -> bool:
    return any(trial.trigger is not None for trial in result.trials)


@dataclass
class TriggeredHits:
    """Per test image of the victim class: is it counted, and per trial, does each head give it the attacker's
    label once the trial's trigger is stamped on it."""

    rows: torch.Tensor  # (n,) test rows of the victim class
    counted: torch.Tensor  # (n,) bool: the clean head classifies the untriggered image correctly
    clean_head: torch.Tensor  # (trials, n) bool
    poisoned: torch.Tensor  # (trials, n) bool


def triggered_hits(
    result: PoisonResult,
    clean_head: LinearHead,
    heads: list[LinearHead],
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    f_test: torch.Tensor,
    extractor: torch.nn.Module,
    device: torch.device,
) -> TriggeredHits:
    """One batched pass of the extractor per trial over the victim class's triggered test images."""
    victims = {trial.target_label for trial in result.trials}
    if len(victims) != 1 or any(trial.trigger is None for trial in result.trials):
        raise ValueError(f"a backdoor attack's trials need one victim class and a trigger each, got {victims}")
    rows = torch.nonzero(y_test == victims.pop()).flatten()
    counted = clean_head.predict(f_test[rows]).cpu() == y_test[rows]
    clean, poisoned = [], []
    for trial, head in zip(result.trials, heads, strict=True):
        feats = extract_features(extractor, trial.trigger.apply(x_test[rows]), device)
        clean.append(clean_head.predict(feats).cpu() == trial.adversarial_label)
        poisoned.append(head.predict(feats).cpu() == trial.adversarial_label)
    return TriggeredHits(rows, counted, torch.stack(clean), torch.stack(poisoned))


def backdoor_metrics(hits: TriggeredHits) -> dict[str, float]:
    """Triggered success of the poisoned heads and of the clean head, pooled over trials, with Wilson intervals."""
    n = int(hits.counted.sum()) * len(hits.poisoned)
    wins = int(hits.poisoned[:, hits.counted].sum())
    base = int(hits.clean_head[:, hits.counted].sum())
    lo, hi = wilson_interval(wins, n)
    base_lo, base_hi = wilson_interval(base, n)
    return {
        "attack_success_rate": wins / n if n else float("nan"),
        "attack_success_ci_low": lo,
        "attack_success_ci_high": hi,
        "attack_successes": float(wins),
        "backdoor_success_clean_head": base / n if n else float("nan"),
        "backdoor_clean_head_ci_low": base_lo,
        "backdoor_clean_head_ci_high": base_hi,
        "backdoor_images_counted": float(n),
    }


def hits_npz(hits: TriggeredHits) -> bytes:
    """``rows``, ``counted`` (n,); ``clean_head`` and ``poisoned`` (trials, n) bit-packed along n (``np.unpackbits
    (..., axis=1, count=n)``)."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        rows=hits.rows.numpy(),
        counted=hits.counted.numpy(),
        clean_head=np.packbits(hits.clean_head.numpy(), axis=1),
        poisoned=np.packbits(hits.poisoned.numpy(), axis=1),
        n=np.array(len(hits.rows)),
    )
    return buf.getvalue()


def load_triggered_rates(data: bytes) -> dict[int, float]:
    """From ``backdoor_hits.npz``: test row -> share of trials whose poisoned head gave it the attacker's label once
    triggered, for the counted images (what the report pairs across cells)."""
    with np.load(io.BytesIO(data)) as f:
        poisoned = np.unpackbits(f["poisoned"], axis=1, count=int(f["n"])).astype(bool)
        rows, counted = f["rows"], f["counted"].astype(bool)
    rates = poisoned.mean(axis=0) if len(poisoned) else np.full(len(rows), np.nan)
    return {int(r): float(v) for r, v, c in zip(rows, rates, counted, strict=True) if c}


def triggered_png(result: PoisonResult, x_test: torch.Tensor, hits: TriggeredHits) -> bytes:
    """One victim-class test image without and with each of the first trials' triggers."""
    plt = pyplot()
    if not len(hits.rows):
        return b""
    image = x_test[int(hits.rows[0]) : int(hits.rows[0]) + 1].float()
    trials = result.trials[:MAX_EXAMPLES]
    fig, axes = plt.subplots(1, len(trials) + 1, figsize=(1.6 * (len(trials) + 1), 2), squeeze=False)
    shown = [(image[0], "clean")] + [(t.trigger.apply(image)[0], f"trial {i}") for i, t in enumerate(trials)]
    for ax, (img, title) in zip(axes[0], shown, strict=True):
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7)
    return figure_png(fig)


def backdoor_stage(
    result: PoisonResult,
    clean_head: LinearHead,
    heads: list[LinearHead],
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    f_test: torch.Tensor,
    extractor: torch.nn.Module,
    device: torch.device,
) -> tuple[dict[str, float], dict[str, bytes]]:
    """The triggered-success metrics of a backdoor cell and its artifacts (per-image hits, a picture)."""
    hits = triggered_hits(result, clean_head, heads, x_test, y_test, f_test, extractor, device)
    files = {BACKDOOR_HITS: hits_npz(hits)}
    png = triggered_png(result, x_test, hits)
    if png:
        files[TRIGGERED_EXAMPLES] = png
    return backdoor_metrics(hits), files
