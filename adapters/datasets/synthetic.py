"""Generated class-conditional images: a CPU-sized stand-in for CIFAR/MNIST that needs no download.

A fixed bank of primitives (Gaussian blobs, oriented gratings) is shared by every synthetic dataset; the seed
(``load_data``'s seed hashed with ``seed_offset``) decides how classes combine them, so features learned on one
synthetic dataset transfer to another, as CIFAR-100's do to CIFAR-10. Recipes, the training split and the test
split come from three generators derived from the seed, so changing ``n_train`` leaves the test set as it was.
Images are float32 NCHW in [0, 1]. The design in full and what was measured on it: docs/components.md.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from adapters.datasets.base import DataSource, RawData
from benchmark.core.registry import Params, register


class SyntheticParams(Params):
    num_classes: int = Field(4, ge=2, le=1000)
    n_train: int = Field(512, ge=1)
    n_test: int = Field(256, ge=1)
    image_size: int = Field(32, ge=8, le=512)
    channels: Literal[1, 3] = 3  # 1 (grey) or 3 (RGB)
    noise: float = Field(0.25, ge=0.0)  # std of the Gaussian pixel noise (images in [0, 1])
    seed_offset: int = 0  # combined with the run's seed; give external and target data different offsets


# ---- the shared vocabulary (fixed: never depends on a seed) ---------------------------------------------------------
_ORIENTATIONS = 8
_FREQS = (1.5, 3.0)  # cycles per unit length; the image spans [-1, 1]
_GRATING_SIGMAS = (0.25, 0.45)  # envelope std
_BLOB_SIGMAS = (0.15, 0.3)
_PALETTE = torch.tensor(
    [  # shared colours (RGB, each a direction the pattern moves a pixel away from the background)
        [1.0, 0.2, 0.2],
        [0.2, 1.0, 0.2],
        [0.2, 0.3, 1.0],
        [1.0, 1.0, 0.2],
        [1.0, 0.2, 1.0],
        [0.2, 1.0, 1.0],
        [1.0, 1.0, 1.0],
        [-0.8, -0.8, -0.8],
    ]
)


def primitive_bank() -> torch.Tensor:
    """The fixed vocabulary: rows of (kind, theta, freq, sigma); kind 0 = blob, 1 = grating."""
    rows = [(0.0, 0.0, 0.0, s) for s in _BLOB_SIGMAS]
    for k in range(_ORIENTATIONS):
        theta = math.pi * k / _ORIENTATIONS
        for f in _FREQS:
            for s in _GRATING_SIGMAS:
                rows.append((1.0, theta, f, s))
    return torch.tensor(rows, dtype=torch.float32)


_BANK = primitive_bank()

# ---- recipes ---------------------------------------------------------------------------------------------------------
_PROTOS_PER_CLASS = 2
_PARTS_PER_PROTO = 2
_MAX_SHIFT = 0.35  # random whole-pattern shift, in units of the half image width
_BLOB_AMP_SCALE = 0.5  # blobs (linear cues) weaker than gratings (non-linear cues)
_AMP = (0.6, 1.0)  # part amplitude range (per class recipe)
_DISTRACTOR_AMP = (0.15, 0.3)
_JITTER = 0.04  # per-part position noise (std)


def _generator(seed: int, seed_offset: int, stream: str) -> torch.Generator:
    """A generator for one stream ("recipes", "train", "test"); seed and offset are hashed, not added."""
    digest = hashlib.sha256(f"synthetic:{seed}:{seed_offset}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _recipes(num_classes: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per class, prototype and part: primitive index, centre, colour, amplitude.

    Part 0 of every prototype is a blob at half amplitude (a cue a linear model on pixels can use), the other parts
    are gratings (cues that need a non-linear feature). A fixed structure keeps the difficulty similar across seeds:
    with parts drawn freely, a seed whose classes happen to have no blob was much harder for a linear model.
    """
    shape = (num_classes, _PROTOS_PER_CLASS, _PARTS_PER_PROTO)
    n_blobs = len(_BLOB_SIGMAS)
    is_blob = torch.zeros(shape, dtype=torch.bool)
    is_blob[..., 0] = True
    prim = torch.where(
        is_blob,
        torch.randint(0, n_blobs, shape, generator=gen),
        torch.randint(n_blobs, len(_BANK), shape, generator=gen),
    )
    amp = _AMP[0] + (_AMP[1] - _AMP[0]) * torch.rand(shape, generator=gen)
    return {
        "prim": prim,
        "centre": (torch.rand(*shape, 2, generator=gen) * 2 - 1) * 0.5,
        "colour": _PALETTE[torch.randint(0, len(_PALETTE), shape, generator=gen)],
        "amp": torch.where(is_blob, amp * _BLOB_AMP_SCALE, amp),
    }


def _factors(
    prim: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, phase: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Separable form of the primitives ``prim`` (M,) centred at (cx, cy) with grating phase ``phase``.

    Every primitive is an envelope exp(-(dx^2 + dy^2) / 2 sigma^2) times either 1 (blob) or cos(a(x) + b(y)) with
    a = 2 pi f dx cos(theta) + phase, b = 2 pi f dy sin(theta) (grating), so map = Y1 (x) X1 - Y2 (x) X2 with 1-D
    factors of length ``size``: rendering costs O(M * size) transcendental functions instead of O(M * size^2).
    """
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    kind, theta, freq, sigma = (t.unsqueeze(-1) for t in _BANK[prim].unbind(-1))
    dx = coords - cx.unsqueeze(-1)  # (M, size)
    dy = coords - cy.unsqueeze(-1)
    ex = torch.exp(-dx * dx / (2 * sigma * sigma))
    ey = torch.exp(-dy * dy / (2 * sigma * sigma))
    a = 2 * math.pi * freq * torch.cos(theta) * dx + phase.unsqueeze(-1)
    b = 2 * math.pi * freq * torch.sin(theta) * dy
    x1 = ex * (kind * torch.cos(a) + (1 - kind))
    x2 = ex * kind * torch.sin(a)
    y1 = ey * (kind * torch.cos(b) + (1 - kind))
    y2 = ey * kind * torch.sin(b)
    return y1, x1, y2, x2


def _render(prim: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, phase: torch.Tensor, size: int) -> torch.Tensor:
    """Maps (M, size, size) of the primitives (for inspection and tests; sampling uses the factors directly)."""
    y1, x1, y2, x2 = _factors(prim, cx, cy, phase, size)
    return torch.einsum("mh,mw->mhw", y1, x1) - torch.einsum("mh,mw->mhw", y2, x2)


def _samples(
    labels: torch.Tensor, rec: dict[str, torch.Tensor], p: SyntheticParams, gen: torch.Generator
) -> torch.Tensor:
    n, size = labels.shape[0], p.image_size
    P, Q = _PROTOS_PER_CLASS, _PARTS_PER_PROTO
    # Mixture weights: one dominant prototype, the others faint.
    dominant = torch.randint(0, P, (n,), generator=gen)
    w = 0.3 * torch.rand(n, P, generator=gen)
    w[torch.arange(n), dominant] = 0.8 + 0.4 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 1, 1, 2, generator=gen) * 2 - 1) * _MAX_SHIFT
    jitter = torch.randn(n, P, Q, 2, generator=gen) * _JITTER
    centre = rec["centre"][labels] + shift + jitter  # (n, P, Q, 2)
    prim = rec["prim"][labels]  # (n, P, Q)
    phase = torch.rand(n, P, Q, generator=gen) * 2 * math.pi
    amp = rec["amp"][labels] * w.unsqueeze(-1)  # (n, P, Q)
    colour = rec["colour"][labels]  # (n, P, Q, 3)
    # A class-independent distractor: any primitive, anywhere, any palette colour.
    d_prim = torch.randint(0, len(_BANK), (n, 1), generator=gen)
    d_centre = (torch.rand(n, 1, 2, generator=gen) * 2 - 1) * 0.7
    d_phase = torch.rand(n, 1, generator=gen) * 2 * math.pi
    d_amp = _DISTRACTOR_AMP[0] + (_DISTRACTOR_AMP[1] - _DISTRACTOR_AMP[0]) * torch.rand(n, 1, generator=gen)
    d_colour = _PALETTE[torch.randint(0, len(_PALETTE), (n, 1), generator=gen)]

    prim_all = torch.cat([prim.reshape(n, -1), d_prim], 1)  # (n, K)
    centre_all = torch.cat([centre.reshape(n, -1, 2), d_centre], 1)
    phase_all = torch.cat([phase.reshape(n, -1), d_phase], 1)
    amp_all = torch.cat([amp.reshape(n, -1), d_amp], 1)
    colour_all = torch.cat([colour.reshape(n, -1, 3), d_colour], 1)  # (n, K, 3)
    k = prim_all.shape[1]

    y1, x1, y2, x2 = (
        t.view(n, k, size)
        for t in _factors(
            prim_all.reshape(-1),
            centre_all[..., 0].reshape(-1),
            centre_all[..., 1].reshape(-1),
            phase_all.reshape(-1),
            size,
        )
    )
    weight = colour_all * amp_all.unsqueeze(-1)  # (n, K, 3)
    # img[n, c] = sum_k weight[n, k, c] * (y1 (x) x1 - y2 (x) x2)[n, k]: one batched matmul over k.
    left = torch.cat([y1, -y2], 1).unsqueeze(1) * torch.cat([weight, weight], 1).transpose(1, 2).unsqueeze(-1)
    img = torch.matmul(left.reshape(n * 3, 2 * k, size).transpose(1, 2), torch.cat([x1, x2], 1).repeat_interleave(3, 0))
    img = img.view(n, 3, size, size)
    background = 0.3 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen)
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
    img = background + contrast * img
    if p.channels == 1:
        img = img.mean(dim=1, keepdim=True)
    if p.noise > 0:
        img = img + p.noise * torch.randn(img.shape, generator=gen)
    return img.clamp_(0.0, 1.0)


def _labels(n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Balanced labels in a seeded order: the first draw of a split's generator, before any image."""
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]


def labels_only(p: SyntheticParams, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The train and test labels ``generate`` gives, without drawing a pixel (for checks before a grid runs)."""
    return tuple(_labels(n, p.num_classes, _generator(seed, p.seed_offset, part))  # type: ignore[return-value]
                 for part, n in (("train", p.n_train), ("test", p.n_test)))


def generate(p: SyntheticParams, seed: int = 0) -> RawData:
    """Train and test splits; labels balanced and shuffled; deterministic for (seed, seed_offset)."""
    rec = _recipes(p.num_classes, _generator(seed, p.seed_offset, "recipes"))
    out = {}
    for part, n in (("train", p.n_train), ("test", p.n_test)):
        gen = _generator(seed, p.seed_offset, part)
        labels = _labels(n, p.num_classes, gen)
        chunks = [_samples(labels[i : i + 1024], rec, p, gen) for i in range(0, n, 1024)]
        out[f"x_{part}"] = torch.cat(chunks)
        out[f"y_{part}"] = labels
    return RawData(**out)


@register
class Synthetic(DataSource):
    name = "synthetic"
    description = (
        "generated class-conditional images (blobs and oriented gratings); external/target differ by seed_offset"
    )
    Params = SyntheticParams

    def load(self, seed: int = 0, data_root: Path | None = None) -> RawData:
        return generate(self.params, seed)
