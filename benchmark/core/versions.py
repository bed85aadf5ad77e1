"""The version of each stage's behaviour, hashed into every key that depends on it.

Bump a stage's version when its code changes what it produces for the same configuration; every cache entry and
finished cell built on the old behaviour is then rebuilt or rerun, and nothing else is:

- ``data``: loading, class subsets, limits and transforms (``adapters/datasets``): backbones, features, cells;
- ``models``: the architectures (``adapters/backbones``): backbones, features, cells;
- ``training``: the training loop and the defenses (``benchmark/cell/training.py``, ``adapters/defenses``): backbones,
  features, cells;
- ``features``: feature extraction: features, cells;
- ``cell``: attacks, heads and metrics, what a finished cell's results mean: cached attacks, cells.
"""

from __future__ import annotations

STAGE_VERSIONS: dict[str, str] = {
    "data": "data-v1",
    "models": "models-v2",
    "training": "1",
    "features": "1",
    "cell": "1",
}

BACKBONE_STAGES = ("data", "models", "training")
FEATURE_STAGES = (*BACKBONE_STAGES, "features")
ATTACK_STAGES = (*FEATURE_STAGES, "cell")  # the attack has no version of its own: "cell" covers attacks


def versions(stages: tuple[str, ...] | None = None) -> dict[str, str]:
    """The versions of ``stages`` (all by default), read when called so a change is seen at once."""
    return {s: STAGE_VERSIONS[s] for s in (stages or STAGE_VERSIONS)}
