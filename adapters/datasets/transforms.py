"""The one place where raw arrays become model input: float32 NCHW in [0, 1], resized, with the channels asked for.

Layouts accepted for images: NHW (grey), NHWC and NCHW with C in {1, 3}. A last dim of 1 or 3 means NHWC (numpy's
convention, also when dim 1 is 1 or 3); otherwise a dim 1 of 1 or 3 means NCHW.
Values: any integer dtype in [0, 255] (divided by 255), or floats already in [0, 1].
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.errors import DataError

_CHANNELS = (1, 3)
_RESIZE_CHUNK = 4096


def as_tensor(x: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """Images as a CPU tensor in their raw dtype; checks the number of dimensions."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise DataError(f"{what}: images must be a numeric array, got dtype object")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise DataError(f"{what}: images must be an array, got {type(x).__name__}")
    x = x.detach().cpu()
    if x.dim() not in (3, 4):
        raise DataError(f"{what}: images must be NHW, NHWC or NCHW, got shape {tuple(x.shape)}")
    return x


def as_labels(y: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """Labels as a 1-D int64 tensor of non-negative ids."""
    if isinstance(y, np.ndarray):
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise DataError(f"{what}: labels must be integers, got dtype {y.dtype}")
        y = torch.from_numpy(np.ascontiguousarray(y))
    elif isinstance(y, list | tuple):
        y = torch.as_tensor(y)
    elif not isinstance(y, torch.Tensor):
        raise DataError(f"{what}: labels must be an array, got {type(y).__name__}")
    y = y.detach().cpu().reshape(-1) if y.dim() == 2 and 1 in y.shape else y.detach().cpu()
    if y.dim() != 1:
        raise DataError(f"{what}: labels must be 1-D, got shape {tuple(y.shape)}")
    if y.is_floating_point():
        if y.numel() and not torch.equal(y, y.round()):
            raise DataError(f"{what}: labels must be whole numbers")
    y = y.long()
    if y.numel() and int(y.min()) < 0:
        raise DataError(f"{what}: labels must be non-negative, found {int(y.min())}")
    return y


def layout(shape: tuple[int, ...]) -> Literal["NHW", "NHWC", "NCHW"]:
    """Guess the layout of an image batch from its shape (see module docstring)."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        if shape[-1] in _CHANNELS:
            return "NHWC"
        if shape[1] in _CHANNELS:
            return "NCHW"
    raise DataError(f"images must be NHW, or NHWC/NCHW with 1 or 3 channels; got shape {tuple(shape)}")


def to_float_nchw(x: torch.Tensor, what: str = "images") -> torch.Tensor:
    """Raw images -> float32 (N, C, H, W) in [0, 1]."""
    try:
        kind = layout(tuple(x.shape))
    except DataError as err:
        raise DataError(f"{what}: {err}") from None
    if kind == "NHW":
        x = x.unsqueeze(1)
    elif kind == "NHWC":
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.bool:
        raise DataError(f"{what}: boolean images are not supported")
    if x.is_floating_point():
        x = x.float()
        if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0 or not torch.isfinite(x).all()):
            raise DataError(
                f"{what}: float images must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]"
            )
    else:
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > 255):
            raise DataError(f"{what}: integer images must lie in [0, 255], got [{int(x.min())}, {int(x.max())}]")
        x = x.float().div_(255.0)
    return x.contiguous()


def select_classes(x: torch.Tensor, y: torch.Tensor, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the examples whose label is in ``classes``, in their original order, labels unchanged."""
    mask = torch.isin(y, torch.tensor(classes, dtype=y.dtype))
    idx = mask.nonzero(as_tuple=True)[0]
    return x[idx], y[idx]


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of float NCHW images to size x size (no-op when already that size)."""
    if x.shape[-2:] == (size, size):
        return x
    if x.shape[0] == 0:
        return x.new_zeros((0, x.shape[1], size, size))
    out = [
        F.interpolate(x[i : i + _RESIZE_CHUNK], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        for i in range(0, x.shape[0], _RESIZE_CHUNK)
    ]
    return torch.cat(out).clamp_(0.0, 1.0)


def convert_channels(x: torch.Tensor, channels: Literal["grey", "rgb"] | None) -> torch.Tensor:
    """None keeps; "grey": mean over channels repeated to 3; "rgb": 1 channel repeated to 3 (3 channels kept)."""
    if channels is None:
        return x
    if channels == "grey":
        return x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    if channels == "rgb":
        if x.shape[1] == 3:
            return x
        return x.expand(-1, 3, -1, -1).contiguous()
    raise DataError(f"channels must be 'grey', 'rgb' or left out, got {channels!r}")
