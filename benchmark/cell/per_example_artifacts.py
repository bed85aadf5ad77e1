"""Per-target and per-test-image outcomes of one cell, kept as artifacts so the report can pair them across cells.

- ``per_target.csv`` (targeted attacks): one row per trial: the target's test row, its labels, the number of
  poisons, the mean L2 feature distance of the poisons to the target's clean feature before and after the attack,
  the same for the poisons' centroid (the quantity Bullseye Polytope minimises), and whether the attack succeeded;
- ``test_correct.npz`` (every cell): per test image of the cell's task, whether the clean head and each trial's
  poisoned head classify it correctly. The rows are the same images in every cell with the same target data and
  task, which is what makes the report's tests paired.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import torch

from adapters.attacks.base import PoisonResult
from adapters.heads.linear import LinearHead
from adapters.heads.refit import RowEdit

PER_TARGET = "per_target.csv"
TEST_CORRECT = "test_correct.npz"
PER_TARGET_COLUMNS = (
    "trial",
    "target_index",
    "target_label",
    "adversarial_label",
    "num_poisons",
    "initial_distance",
    "final_distance",
    "initial_centroid_distance",
    "final_centroid_distance",
    "success",
)


def target_successes(result: PoisonResult, heads: list[LinearHead], f_test: torch.Tensor) -> list[bool]:
    """Per trial: does its poisoned head give the target the attacker's label?"""
    out = []
    for head, trial in zip(heads, result.trials, strict=True):
        pred = int(head.predict(f_test[trial.target_index : trial.target_index + 1])[0])
        out.append(pred == trial.adversarial_label)
    return out


def per_target_csv(
    result: PoisonResult, edits: list[RowEdit], successes: list[bool], f_train: torch.Tensor, f_test: torch.Tensor
) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(PER_TARGET_COLUMNS)
    for t, (trial, edit, won) in enumerate(zip(result.trials, edits, successes, strict=True)):
        target = f_test[trial.target_index].float()
        before, after = f_train[edit.indices].float(), edit.features.float()
        if len(edit.indices):
            dist = [float((f - target).norm(dim=1).mean()) for f in (before, after)]
            centroid = [float((f.mean(0) - target).norm()) for f in (before, after)]
        else:
            dist = centroid = [float("nan"), float("nan")]
        writer.writerow(
            [t, trial.target_index, trial.target_label, trial.adversarial_label, len(edit.indices),
             *(f"{d:.6g}" for d in dist), *(f"{d:.6g}" for d in centroid), int(won)]
        )
    return buf.getvalue().encode()


def test_correct_npz(clean: LinearHead, heads: list[LinearHead], f_test: torch.Tensor, y_test: torch.Tensor) -> bytes:
    """``clean``: (N,) bool; ``poisoned``: (trials, N) bool, bit-packed along N (``np.unpackbits(..., count=N)``)."""
    y = y_test.cpu()
    poisoned = np.stack([(h.predict(f_test).cpu() == y).numpy() for h in heads]) if heads else np.zeros((0, len(y)))
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        clean=(clean.predict(f_test).cpu() == y).numpy(),
        poisoned=np.packbits(poisoned.astype(bool), axis=1),
        n=np.array(len(y)),
        labels=y.numpy(),
    )
    return buf.getvalue()


def load_test_correct(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(clean (N,), poisoned (trials, N)) booleans from a ``test_correct.npz``."""
    with np.load(io.BytesIO(data)) as f:
        n = int(f["n"])
        return f["clean"].astype(bool), np.unpackbits(f["poisoned"], axis=1, count=n).astype(bool)


def outcome_artifacts(
    result: PoisonResult,
    clean: LinearHead,
    heads: list[LinearHead],
    edits: list[RowEdit],
    f_train: torch.Tensor,
    f_test: torch.Tensor,
    y_test: torch.Tensor,
) -> tuple[dict[str, bytes], list[bool]]:
    """The artifacts of a cell's outcomes, and each trial's success (empty for an untargeted attack)."""
    out = {TEST_CORRECT: test_correct_npz(clean, heads, f_test, y_test)}
    wins: list[bool] = []
    if result.targeted:
        wins = target_successes(result, heads, f_test)
        out[PER_TARGET] = per_target_csv(result, edits, wins, f_train, f_test)
    return out, wins
