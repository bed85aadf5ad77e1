"""Artifacts of a cell's attack: the poison set (``poisons.npz``, a gallery of changed images) and, for label-only
attacks, which training rows were relabelled, from what to what.

A label-only attack (label flip) leaves every image as it was, so a gallery of its poisons shows nothing; these
show its work instead: ``label_flips.csv`` (one row per relabelled sample) and ``label_flips.png`` (a from -> to
count matrix over the classes).
"""

from __future__ import annotations

import csv
import io

import numpy as np
import torch

from adapters.attacks.base import PoisonResult

MAX_NPZ_ROWS = 10_000  # poison rows kept in the .npz artifact; more is noted as truncated


def pyplot():
    """matplotlib's pyplot on the Agg backend (cells and reports run headless: workers, servers, CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (80 dpi: artifacts are looked at in the MLflow UI), and closed."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    pyplot().close(fig)
    return buf.getvalue()


def label_flip_artifacts(y_clean: torch.Tensor, result: PoisonResult) -> dict[str, bytes]:
    """The relabelled rows of every trial as a CSV table and a from -> to picture; empty when no label changed."""
    rows = []
    for t_id, trial in enumerate(result.trials):
        if not len(trial.indices):
            continue
        before = y_clean[trial.indices]
        for i in torch.nonzero(before != trial.y).flatten().tolist():
            rows.append((t_id, int(trial.indices[i]), int(before[i]), int(trial.y[i])))
    if not rows:
        return {}
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(("trial", "index", "label", "poisoned_label"))
    writer.writerows(rows)
    classes = sorted(set(torch.unique(y_clean).tolist()) | {r[3] for r in rows})
    return {"label_flips.csv": text.getvalue().encode(), "label_flips.png": _flip_matrix(rows, classes)}


def _flip_matrix(rows: list[tuple[int, int, int, int]], classes: list[int]) -> bytes:
    plt = pyplot()
    pos = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=int)
    for _, _, before, after in rows:
        counts[pos[before], pos[after]] += 1
    size = 1.2 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(counts, cmap="Reds")
    if len(classes) <= 20:  # numbers stay legible up to here
        for i, j in zip(*np.nonzero(counts), strict=True):
            dark = counts[i, j] > counts.max() / 2
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ticks = range(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes], fontsize=7)
    ax.set_yticks(ticks, [str(c) for c in classes], fontsize=7)
    ax.set_xlabel("poisoned label")
    ax.set_ylabel("true label")
    ax.set_title(f"{len(rows)} labels flipped (from -> to)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="samples")
    return figure_png(fig)


def poison_artifacts(x_clean: torch.Tensor, result: PoisonResult) -> dict[str, bytes]:
    """The poison set as .npz (indices, images or features, labels, trial ids) and a picture of a few poisons."""
    rows = [(t_id, tr) for t_id, tr in enumerate(result.trials) if len(tr.indices)]
    if not rows:
        return {}
    out: dict[str, bytes] = {}
    idx = torch.cat([tr.indices for _, tr in rows])
    trial_id = torch.cat([torch.full((len(tr.indices),), t_id) for t_id, tr in rows])
    labels = torch.cat([tr.y for _, tr in rows])
    payload: dict[str, np.ndarray] = {
        "indices": idx.numpy(),
        "labels": labels.numpy(),
        "trial": trial_id.numpy(),
        "targets": np.array([-1 if tr.target_index is None else tr.target_index for tr in result.trials]),
    }
    truncated = len(idx) > MAX_NPZ_ROWS
    sel = slice(0, MAX_NPZ_ROWS)
    if result.space == "image":
        payload["images"] = torch.cat([tr.x for _, tr in rows])[sel].float().numpy()
    else:
        payload["features"] = torch.cat([tr.features for _, tr in rows])[sel].float().numpy()
    payload["truncated"] = np.array(truncated)
    buf = io.BytesIO()
    np.savez_compressed(buf, **payload)
    out["poisons.npz"] = buf.getvalue()
    if result.space == "image":
        # only rows whose image changed: a label-only attack's gallery would show untouched images
        changed = [
            (tr.indices[i], tr.x[i]) for _, tr in rows for i in range(len(tr.indices))
            if not torch.equal(tr.x[i], x_clean[int(tr.indices[i])])
        ][:6]
        png = poison_grid(x_clean, changed) if changed else b""
        if png:
            out["poison_examples.png"] = png
    return out


def poison_grid(x_clean: torch.Tensor, changed: list[tuple[torch.Tensor, torch.Tensor]]) -> bytes:
    plt = pyplot()
    n = len(changed)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5), squeeze=False)
    for j, (i, poison) in enumerate(changed):
        orig = x_clean[int(i)].float()
        diff = (poison.float() - orig).abs()
        scale = float(diff.max()) or 1.0
        for r, (img, title) in enumerate(
            ((orig, "original"), (poison.float(), "poison"), (diff / scale, f"|diff| x{1 / scale:.0f}"))
        ):
            ax = axes[r][j]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 or r == 2:
                ax.set_title(title, fontsize=7)
    return figure_png(fig)
