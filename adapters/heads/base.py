"""The head interface: a ``Head`` fits a ``LinearHead`` (plain tensors, so attacks can differentiate through it) on
frozen features. Each head is one class whose ``fit`` is its solver: ``linear_svc.py`` (sklearn's LinearSVC, the
paper's head), ``torch_svm.py`` (the same objective, batched in torch). This module also holds the helpers they share
and the functions the cell calls (``fit_head``, ``fit_heads``, ``accuracy``).

The objective of both built-ins (liblinear's L2-regularised L2-loss SVC, primal, one-vs-rest,
``intercept_scaling=1``), for each binary problem with labels s_i in {-1, +1}::

    min_{w, b}  0.5 * (||w||^2 + b^2) + C * sum_i max(0, 1 - s_i (w . x_i + b))^2

The bias is regularised like a weight. Multiclass: one problem per class (class k against the rest); two classes: one
problem, positive class ``classes[1]`` (as sklearn), stored as two rows ``[-w, w]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from adapters.heads.linear import LinearHead
from benchmark.core.errors import DataError
from benchmark.core.registry import Configurable, Params, make
from benchmark.core.stats import accuracy

if TYPE_CHECKING:
    from adapters.heads.refit import RowEdit

ArrayLike = torch.Tensor | np.ndarray


class Head(Configurable):
    """Base class of every head: subclasses set ``name``, ``description``, ``Params`` and implement ``fit``.

    ``fit_many`` (many training sets) and ``refit`` (many edits of one training set) loop over ``fit`` unless a head
    solves them together; ``to(device)`` says where a head that computes in torch works.
    """

    kind = "head"
    device = torch.device("cpu")
    last_iterations = 0  # solver iterations of the last fit, for heads that count them

    def to(self, device: torch.device | str | None) -> Head:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        return self

    def fit(self, features: ArrayLike, labels: ArrayLike) -> LinearHead:
        """The head fitted on features (N, D) with labels (N,) (original label ids); returned on the CPU."""
        raise NotImplementedError

    def fit_many(
        self, problems: Sequence[tuple[ArrayLike, ArrayLike]], init: LinearHead | Sequence[LinearHead] | None = None
    ) -> list[LinearHead]:
        """One head per (features, labels) pair. ``init``: a warm start, for heads that take one (else ignored)."""
        return [self.fit(f, y) for f, y in problems]

    def refit(
        self,
        base_features: torch.Tensor,
        base_labels: torch.Tensor,
        edits: Sequence[RowEdit],
        init: LinearHead | None = None,
    ) -> list[LinearHead]:
        """One head per edit of the base training set (``adapters/heads/refit.py``); the default builds each set."""
        return self.fit_many([e.apply(base_features, base_labels) for e in edits], init=init)


# ----------------------------------------------------------------------------------------------------------------
# Helpers the heads share


def as_tensor(a: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t.to(dtype) if dtype is not None else t


def check_problem(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The sorted classes of one training problem; DataError when its shapes or classes cannot make a head."""
    if features.ndim != 2:
        raise DataError(f"features must be a (N, D) matrix; got shape {tuple(features.shape)}")
    if labels.ndim != 1 or len(labels) != len(features):
        raise DataError(f"labels must be (N,) with N = {len(features)}; got shape {tuple(labels.shape)}")
    classes = torch.unique(labels.long().cpu())
    if len(classes) < 2:
        raise DataError(f"a linear head needs at least 2 classes in its training set; got {classes.tolist()}")
    return classes


def head_from_rows(coef: torch.Tensor, intercept: torch.Tensor, classes: torch.Tensor) -> LinearHead:
    """coef (Q, D), intercept (Q,); Q == 1 for a binary problem (positive class = classes[1])."""
    coef = coef.detach().cpu().double()
    intercept = intercept.detach().cpu().double()
    if len(classes) == 2:
        coef = torch.cat([-coef[:1], coef[:1]])
        intercept = torch.cat([-intercept[:1], intercept[:1]])
    return LinearHead(
        weight=coef.float().contiguous(),
        bias=intercept.float().contiguous(),
        classes=classes.long().cpu().clone(),
    )


def label_signs(labels: torch.Tensor, classes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One-vs-rest targets in {-1, +1}: (N, 1) for a binary task (positive class ``classes[1]``), else (N, K)."""
    classes = classes.to(labels.device)
    if len(classes) == 2:
        return torch.where(labels == classes[1], 1.0, -1.0).to(dtype).unsqueeze(-1)
    return torch.where(labels.unsqueeze(-1) == classes, 1.0, -1.0).to(dtype)


def head_rows(
    head: LinearHead, classes: torch.Tensor, dtype: torch.dtype, device: torch.device, what: str = "init head"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A head's weights (q, D) and biases (q,) as the solvers' problems (a binary head's positive row only)."""
    if not torch.equal(head.classes.cpu().long(), classes):
        raise DataError(f"{what} has classes {head.classes.tolist()}, the data {classes.tolist()}")
    weight, bias = head.weight.to(device, dtype), head.bias.to(device, dtype)
    return (weight[1:], bias[1:]) if len(classes) == 2 else (weight, bias)


def fold_scaling(
    coef: torch.Tensor, intercept: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores on standardised features ``(f - mean) / scale`` as a linear function of raw ``f``."""
    w = coef / scale
    b = intercept - w @ mean
    return w, b


def scaler_stats(x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """StandardScaler's mean and scale (population std, 1 where the std is 0), over rows where ``mask``."""
    if mask is None:
        mean = x.mean(dim=-2)
        var = ((x - mean.unsqueeze(-2)) ** 2).mean(dim=-2)
    else:
        m = mask.unsqueeze(-1).to(x.dtype)
        n = m.sum(dim=-2).clamp(min=1)
        mean = (x * m).sum(dim=-2) / n
        var = (((x - mean.unsqueeze(-2)) * m) ** 2).sum(dim=-2) / n
    scale = var.sqrt()
    # sklearn's _handle_zeros_in_scale: constant features (std ~ 0) are left unscaled
    eps = 10 * torch.finfo(x.dtype).eps
    scale = torch.where(scale < eps, torch.ones_like(scale), scale)
    return mean, scale


def svm_objective(
    features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, C: float,
    classes: torch.Tensor | None = None,
) -> float:
    """The LinearSVC objective (summed over its one-vs-rest problems) of a head given as coef rows.

    ``weight`` (Q, D), ``bias`` (Q,) are sklearn's ``coef_``/``intercept_`` (Q = 1 for binary) or a LinearHead's
    rows (binary heads' two rows are reduced to the positive one). Computed in float64.
    """
    x = features.double()
    classes = torch.unique(labels.long()) if classes is None else classes.long()
    w, b = weight.double(), bias.double()
    if len(classes) == 2 and w.shape[0] == 2:
        w, b = w[1:], b[1:]
    if len(classes) == 2:
        s = torch.where(labels.long() == classes[1], 1.0, -1.0).double().unsqueeze(1)
    else:
        s = torch.where(labels.long().unsqueeze(1) == classes.unsqueeze(0), 1.0, -1.0).double()
    z = x @ w.T + b
    hinge = (1 - s * z).clamp(min=0)
    return float(0.5 * ((w**2).sum() + (b**2).sum()) + C * (hinge**2).sum())


# ----------------------------------------------------------------------------------------------------------------
# What the cell calls


def make_head(
    head_name: str, params: Params | dict[str, Any] | None = None, device: torch.device | str | None = None
) -> Head:
    """The head registered as ``head_name`` (or a ``module:Class`` path) with ``params``, working on ``device``."""
    return make("head", head_name, params).to(device)


def fit_head(
    features: ArrayLike,
    labels: ArrayLike,
    head_name: str = "linear_svc",
    params: Params | dict[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> LinearHead:
    """Fit one linear head on (features (N, D), labels (N,) original labels); returned on the CPU."""
    return make_head(head_name, params, device).fit(features, labels)


def fit_heads(
    problems: Sequence[tuple[ArrayLike, ArrayLike]],
    head_name: str = "linear_svc",
    params: Params | dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    init: LinearHead | Sequence[LinearHead] | None = None,
) -> list[LinearHead]:
    """Fit one head per (features, labels) pair, as the head solves many (a loop for linear_svc, one batched solve
    for torch_svm). ``init``: a warm start (e.g. the clean head for poisoned variants), for heads that take one."""
    return make_head(head_name, params, device).fit_many(list(problems), init=init)


def head_accuracy(head: LinearHead, features: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of rows whose label ``head`` predicts from ``features`` equals ``labels`` (original labels)."""
    with torch.no_grad():
        return accuracy(head.predict(as_tensor(features).float()), as_tensor(labels).long())
