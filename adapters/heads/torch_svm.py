"""``torch_svm``: LinearSVC's objective solved in torch by the batched Newton method of ``newton.py``, so that many
heads (one per poisoned training set) fit in one call, on the GPU when there is one. Its ``refit`` solves the edits
of one training set together from their shared rows (``refit.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from adapters.heads.base import (
    ArrayLike,
    Head,
    as_tensor,
    check_problem,
    fold_scaling,
    head_from_rows,
    head_rows,
    label_signs,
    scaler_stats,
)
from adapters.heads.linear import LinearHead
from adapters.heads.newton import newton_svm
from adapters.heads.refit import RowEdit, fit_shared, same_classes
from benchmark.core.errors import DataError
from benchmark.core.registry import Params, register


class TorchSVMParams(Params):
    C: float = Field(1.0, gt=0)  # same objective as LinearSVC(C=1.0), the code's head
    max_iter: int = Field(100, ge=1)  # Newton iterations (not liblinear's iterations); rarely more than ~30 needed
    # stop when ||grad|| <= tol * ||grad at w=0|| for every problem. Measurement: 1e-5 left the objective ~15% above
    # its minimum on separable data (C=1), 1e-7 within 1e-6, for a few more Newton steps. Floored at 100 x machine
    # epsilon of dtype (1.2e-5 in float32).
    tol: float = Field(1e-7, gt=0)
    scale: bool = False  # as linear_svc
    solver: Literal["auto", "cholesky", "cg"] = "auto"  # Newton systems: auto = cholesky when D <= 2048, else cg
    cg_max_iter: int = Field(200, ge=1)  # conjugate-gradient iterations per Newton step (solver cg)
    dtype: Literal["float32", "float64"] = "float64"  # float64 matches liblinear; float32 halves memory


@dataclass
class _Batch:
    """T training sets padded to N rows: features with the constant 1 column (T, N, D + 1), signs (T, N, Q), real
    rows (T, N); with ``scale``, the per-set mean and scale (T, D) the features were standardised with."""

    x: torch.Tensor
    s: torch.Tensor
    mask: torch.Tensor
    classes: list[torch.Tensor]
    mean: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return self.x.shape[2] - 1


@register
class TorchSVMHead(Head):
    name = "torch_svm"
    description = "LinearSVC's objective solved in torch (batched Newton-CG): many heads at once on the device"
    Params = TorchSVMParams

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self.params.dtype == "float64" else torch.float32

    def fit(self, features: ArrayLike, labels: ArrayLike) -> LinearHead:
        return self.fit_many([(features, labels)])[0]

    def fit_many(
        self,
        features: ArrayLike | Sequence[ArrayLike] | Sequence[tuple[ArrayLike, ArrayLike]],
        labels: ArrayLike | Sequence[ArrayLike] | None = None,
        init: LinearHead | Sequence[LinearHead] | None = None,
    ) -> list[LinearHead]:
        """Fit one head per training set, all in one batched solve.

        Either ``fit_many(features, labels)`` with features (T, N, D) or a list of (N_t, D), and labels (T, N) or a
        list of (N_t,); or ``fit_many([(features_t, labels_t), ...])``. Sets of different sizes are padded.
        ``init``: a warm start, one head for all sets or one per set (same classes), e.g. the clean head when the
        sets are poisoned variants of one training set; it changes the iterations, not the optimum.
        """
        feats, labs = _pairs(features, labels)
        if not feats:
            return []
        batch = self._batch(feats, labs)
        w0 = None if init is None else self._warm_start(batch, init)
        p = self.params
        D = batch.dim
        solver = p.solver if p.solver != "auto" else ("cholesky" if D + 1 <= 2049 else "cg")
        tol = max(p.tol, 100 * torch.finfo(self.dtype).eps)
        chunk_bytes = (1 << 30) if self.device.type == "cuda" else (256 << 20)  # Hessian work space per chunk
        w, self.last_iterations = newton_svm(
            batch.x, batch.s, batch.mask, p.C, p.max_iter, tol, solver, p.cg_max_iter, chunk_bytes, w0=w0
        )
        return [self._head(batch, w, t) for t in range(len(feats))]

    def refit(
        self,
        base_features: torch.Tensor,
        base_labels: torch.Tensor,
        edits: Sequence[RowEdit],
        init: LinearHead | None = None,
    ) -> list[LinearHead]:
        """The edits solved together from the rows they share, when they are edits of one problem: same classes
        as the base set and no per-set standardisation; else each set is built and fitted."""
        classes = check_problem(base_features, base_labels)
        if len(edits) < 2 or self.params.scale or not same_classes(base_labels, classes, edits):
            return super().refit(base_features, base_labels, edits, init)
        heads, self.last_iterations = fit_shared(
            base_features, base_labels, classes, edits, init, self.params, self.device
        )
        return heads

    def _batch(self, feats: list[torch.Tensor], labs: list[torch.Tensor]) -> _Batch:
        """The training sets as one padded batch on the device (standardised when ``scale``)."""
        dt, dev = self.dtype, self.device
        classes = [check_problem(f, y) for f, y in zip(feats, labs, strict=True)]
        dims = {f.shape[1] for f in feats}
        if len(dims) != 1:
            raise DataError(f"all feature sets must have the same dimension; got {sorted(dims)}")
        (D,) = dims
        T, N = len(feats), max(len(f) for f in feats)
        Q = max(1 if len(c) == 2 else len(c) for c in classes)
        x = torch.zeros(T, N, D + 1, dtype=dt, device=dev)
        s = -torch.ones(T, N, Q, dtype=dt, device=dev)
        mask = torch.zeros(T, N, dtype=torch.bool, device=dev)
        for t, (f, y, c) in enumerate(zip(feats, labs, classes, strict=True)):
            n = len(f)
            x[t, :n, :D] = f.detach().to(dev, dt)
            mask[t, :n] = True
            signs = label_signs(y.detach().long().to(dev), c, dt)
            s[t, :n, : signs.shape[1]] = signs
        batch = _Batch(x, s, mask, classes)
        if self.params.scale:
            batch.mean, batch.scale = scaler_stats(x[:, :, :D], mask)  # (T, D)
            x[:, :, :D] = (x[:, :, :D] - batch.mean.unsqueeze(1)) / batch.scale.unsqueeze(1)
            x[:, :, :D] *= mask.unsqueeze(-1).to(dt)
        x[:, :, D] = mask.to(dt)  # intercept_scaling = 1 (a constant feature, regularised like the others)
        return batch

    def _warm_start(self, batch: _Batch, init: LinearHead | Sequence[LinearHead]) -> torch.Tensor:
        """The solver's starting weights (T, D + 1, Q) from one head for every set or one head per set."""
        T, D, Q = len(batch.classes), batch.dim, batch.s.shape[2]
        inits = [init] * T if isinstance(init, LinearHead) else list(init)
        if len(inits) != T:
            raise DataError(f"init has {len(inits)} heads for {T} training sets")
        w0 = torch.zeros(T, D + 1, Q, dtype=self.dtype, device=self.device)
        for t, (h, c) in enumerate(zip(inits, batch.classes, strict=True)):
            wt, bt = head_rows(h, c, self.dtype, self.device, what=f"init head {t}")
            if batch.mean is not None and batch.scale is not None:  # the same scores on standardised features
                bt = bt + wt @ batch.mean[t]
                wt = wt * batch.scale[t]
            w0[t, :D, : len(wt)] = wt.T
            w0[t, D, : len(bt)] = bt
        return w0

    def _head(self, batch: _Batch, w: torch.Tensor, t: int) -> LinearHead:
        """Set ``t``'s solution as a head on raw features."""
        c, D = batch.classes[t], batch.dim
        q = 1 if len(c) == 2 else len(c)
        coef = w[t, :D, :q].T.double()
        intercept = w[t, D, :q].double()
        if batch.mean is not None and batch.scale is not None:
            coef, intercept = fold_scaling(coef, intercept, batch.mean[t].double(), batch.scale[t].double())
        return head_from_rows(coef, intercept, c)


def _pairs(
    features: ArrayLike | Sequence[ArrayLike] | Sequence[tuple[ArrayLike, ArrayLike]],
    labels: ArrayLike | Sequence[ArrayLike] | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``fit_many``'s two input forms as a list of feature sets and a list of label sets."""
    if labels is None:
        pairs = list(features)  # type: ignore[arg-type]
        feats = [as_tensor(f) for f, _ in pairs]
        labs = [as_tensor(y) for _, y in pairs]
    else:
        feats = [as_tensor(f) for f in features]  # type: ignore[union-attr]
        labs = [as_tensor(y) for y in labels]  # type: ignore[union-attr]
    if len(feats) != len(labs):
        raise DataError(f"{len(feats)} feature sets but {len(labs)} label sets")
    return feats, labs
