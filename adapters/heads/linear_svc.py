"""``linear_svc``: sklearn's LinearSVC (liblinear), the paper's head, fitted one training set at a time on the CPU."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from adapters.heads.base import (
    ArrayLike,
    Head,
    as_tensor,
    check_problem,
    fold_scaling,
    head_from_rows,
)
from adapters.heads.linear import LinearHead
from benchmark.core.registry import Params, register


class LinearSVCParams(Params):
    C: float = Field(1.0, gt=0)  # code: LinearSVC() defaults
    max_iter: int = Field(1000, ge=1)  # sklearn default
    tol: float = Field(1e-4, gt=0)  # sklearn default
    scale: bool = False  # code: raw, unscaled features; True: StandardScaler, folded into the weights
    dual: Literal["auto", True, False] = "auto"  # sklearn default
    # sklearn's default None shuffles the dual solver with numpy's global RNG, seeded from the OS at start-up, so two
    # runs of the same cell could give different heads; a fixed seed makes heads repeatable (the primal solver,
    # which "auto" picks when N > D, does not use it)
    random_state: int = 0


@register
class LinearSVCHead(Head):
    name = "linear_svc"
    description = "sklearn LinearSVC (liblinear, squared hinge, one-vs-rest), the paper's head"
    Params = LinearSVCParams

    def fit(self, features: ArrayLike, labels: ArrayLike) -> LinearHead:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        f = as_tensor(features).detach().cpu()
        y = as_tensor(labels).detach().cpu().long()
        classes = check_problem(f, y)
        p = self.params
        xn = f.double().numpy()
        mean = scale = None
        if p.scale:
            scaler = StandardScaler().fit(xn)
            xn = scaler.transform(xn)
            mean, scale = torch.from_numpy(scaler.mean_), torch.from_numpy(scaler.scale_)
        svc = LinearSVC(C=p.C, max_iter=p.max_iter, tol=p.tol, dual=p.dual, random_state=p.random_state)
        with warnings.catch_warnings():
            # liblinear often stops at max_iter on raw CNN features, as it did in the paper's code; not an error
            warnings.simplefilter("ignore", ConvergenceWarning)
            svc.fit(xn, y.numpy())
        coef = torch.from_numpy(np.asarray(svc.coef_, dtype=np.float64))
        intercept = torch.from_numpy(np.asarray(svc.intercept_, dtype=np.float64))
        if p.scale:
            coef, intercept = fold_scaling(coef, intercept, mean, scale)
        assert torch.equal(torch.from_numpy(svc.classes_).long(), classes)
        return head_from_rows(coef, intercept, classes)
