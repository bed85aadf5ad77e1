"""Linear heads on frozen features: sklearn's LinearSVC (the paper's head) and a batched torch solver of the same
objective, both returned as a ``LinearHead`` (tensors) so that attacks can differentiate through them.

The objective (liblinear's L2-regularised L2-loss SVC, primal, one-vs-rest, ``intercept_scaling=1``), for each
binary problem with labels s_i in {-1, +1}::

    min_{w, b}  0.5 * (||w||^2 + b^2) + C * sum_i max(0, 1 - s_i (w . x_i + b))^2

The bias is regularised like a weight (liblinear appends a constant feature 1 to every sample). Multiclass: one
problem per class (class k against the rest); two classes: one problem, positive class ``classes[1]`` (as sklearn),
stored as two rows ``[-w, w]``.

``torch_svm`` minimises exactly this objective with a batched truncated-Newton method (Keerthi & DeCoste's
modified finite Newton for the squared hinge): at each iteration the generalised Hessian
``I + 2C X_A^T X_A`` (A: samples with positive hinge) is inverted approximately by Jacobi-preconditioned
conjugate gradients, then an exact line search along the direction finds the minimum of the piecewise-quadratic
objective. Everything is batched over heads x classes with plain matmuls, so a hundred heads (Poison Frog's one
poisoned training set per target) fit in one call on a GPU. It stops when every problem's gradient norm is below
``tol`` times its norm at w = 0, a tighter criterion than liblinear's, so its objective is at or below LinearSVC's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from adapters.heads.linear import LinearHead
from benchmark.core.errors import DataError
from benchmark.core.registry import REGISTRY, Params

ArrayLike = torch.Tensor | np.ndarray


# ----------------------------------------------------------------------------------------------------------------
# Parameters


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


# ----------------------------------------------------------------------------------------------------------------
# Helpers


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


def _fold_scaling(coef: torch.Tensor, intercept: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor):  # noqa: ANN202
    """Scores on standardised features ``(f - mean) / scale`` as a linear function of raw ``f``."""
    w = coef / scale
    b = intercept - w @ mean
    return w, b


def _scaler_stats(x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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


# ----------------------------------------------------------------------------------------------------------------
# sklearn LinearSVC


@REGISTRY.register(
    "head", "linear_svc", "sklearn LinearSVC (liblinear, squared hinge, one-vs-rest), the paper's head", LinearSVCParams
)
class LinearSVCHead:
    def __init__(self, params: LinearSVCParams | None = None, device: torch.device | str | None = None) -> None:
        self.params = params or LinearSVCParams()

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
            coef, intercept = _fold_scaling(coef, intercept, mean, scale)
        assert torch.equal(torch.from_numpy(svc.classes_).long(), classes)
        return head_from_rows(coef, intercept, classes)

    def fit_many(self, problems: Sequence[tuple[ArrayLike, ArrayLike]]) -> list[LinearHead]:
        return [self.fit(f, y) for f, y in problems]


# ----------------------------------------------------------------------------------------------------------------
# Batched torch solver


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


def _newton_svm(
    x: torch.Tensor,
    s: torch.Tensor,
    mask: torch.Tensor,
    C: float,
    max_iter: int,
    tol: float,
    solver: str = "cholesky",
    cg_max_iter: int = 200,
    chunk_bytes: int = 256 * 2**20,
    w0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Solve T x Q squared-hinge SVMs at once by generalised Newton with exact line search.

    x: (T, N, D1) features with the constant 1 column appended (0 rows for padding); s: (T, N, Q) labels in
    {-1, +1}; mask: (T, N) True for real rows. Returns W (T, D1, Q) and the number of Newton steps taken.
    ``solver="cholesky"`` solves each Newton system exactly (cost N * D1^2 per problem and step, best for
    D1 up to a few thousand); ``"cg"`` uses Jacobi-preconditioned conjugate gradients (cost ~4 N D1 per CG
    iteration, memory-light). Problems that have converged are frozen while the others go on. ``w0``: a warm
    start (T, D1, Q); the stopping rule stays relative to the gradient at w = 0.
    """
    T, N, D1 = x.shape
    Q = s.shape[2]
    dt = x.dtype
    tiny = torch.finfo(dt).tiny
    m = mask.to(dt).unsqueeze(-1)  # (T, N, 1)
    twoC = 2.0 * C
    xt = x.transpose(1, 2)  # (T, D1, N), a view

    w = torch.zeros(T, D1, Q, dtype=dt, device=x.device) if w0 is None else w0.to(x.device, dt).clone()
    g0 = -twoC * (xt @ (s * m))  # gradient at w = 0: every sample active, z = 0
    g0_norm = g0.norm(dim=1, keepdim=True).clamp(min=tiny)
    direct = _DirectSolver(x, Q, twoC, chunk_bytes, store_bytes=8 * chunk_bytes) if solver == "cholesky" else None
    steps = 0
    z = x @ w  # (T, N, Q) scores, updated along the line search and recomputed every 10 steps
    for _ in range(max_iter):
        active = ((1.0 - s * z) > 0).to(dt) * m  # (T, N, Q)
        g = w + twoC * (xt @ (active * (z - s)))
        g_norm = g.norm(dim=1, keepdim=True)
        done = g_norm <= tol * g0_norm  # (T, 1, Q)
        if bool(done.all()):
            break
        if direct is not None:
            d = direct.direction(active, g, done)
            xd = x @ d
        else:
            d, xd = _cg_direction(x, active, g, g_norm, g0_norm, done, twoC, cg_max_iter)
        t = exact_line_search(w, d, z, xd, s, m, twoC) * (~done).to(dt)
        w = w + t * d
        steps += 1
        z = x @ w if steps % 10 == 0 else z + t * xd
    return w, steps


class _DirectSolver:
    """Newton directions -H^{-1} g with H = I + 2C X_A^T X_A (A: active rows), by Cholesky, batched over problems.

    Only active rows enter H. The first call (and every ``refresh`` calls, to bound round-off drift) builds H from
    the active rows of each problem; later calls update the stored H with the rows that entered or left the
    active set, which near the solution are few. Problems are grouped by their row count (sorted) and each chunk
    gathers its rows, so the work is proportional to the rows involved, not to N. When the stored Hessians would
    exceed ``store_bytes`` they are rebuilt at every call instead.
    """

    def __init__(self, x: torch.Tensor, Q: int, twoC: float, chunk_bytes: int, store_bytes: int, refresh: int = 10):
        T, N, D1 = x.shape
        self.x, self.twoC, self.chunk_bytes, self.store_bytes, self.refresh = x, twoC, chunk_bytes, store_bytes, refresh
        self.store = T * Q * D1 * D1 * x.element_size() <= store_bytes
        self.hess: torch.Tensor | None = None  # (T, Q, D1, D1) when stored
        self.built_from: torch.Tensor | None = None  # (T, N, Q) active set the stored H corresponds to
        self.calls = 0

    def _accumulate(self, weights: torch.Tensor, todo: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        """For each problem (t, q) in todo: base + 2C X_t^T diag(weights[t, :, q]) X_t, over its nonzero rows."""
        x = self.x
        T, N, D1 = x.shape
        counts = (weights[todo[:, 0], :, todo[:, 1]] != 0).sum(dim=1)
        order = torch.argsort(counts, descending=True)
        todo, counts_list = todo[order], counts[order].tolist()
        out = torch.empty(len(todo), D1, D1, dtype=x.dtype, device=x.device)
        out_rows = order  # position in the caller's order
        i = 0
        while i < len(todo):
            k = int(counts_list[i])  # the largest count of this chunk
            per_problem = x.element_size() * (2 * max(k, 1) * D1 + 3 * D1 * D1)
            c = max(1, self.chunk_bytes // per_problem)
            ti, qi = todo[i : i + c, 0], todo[i : i + c, 1]
            start = base[out_rows[i : i + c]] if base is not None else None
            if k == 0:
                block = torch.zeros(len(ti), D1, D1, dtype=x.dtype, device=x.device)
            else:
                a = weights[ti, :, qi]  # (c, N)
                if k < N:
                    rows = torch.topk(a.abs(), k, dim=1).indices  # the nonzero rows first
                    xs = x[ti.unsqueeze(1), rows]  # (c, k, D1)
                    a = a.gather(1, rows)
                else:
                    xs = x[ti]
                block = self.twoC * torch.bmm((xs * a.unsqueeze(-1)).transpose(1, 2), xs)
            out[out_rows[i : i + c]] = block if start is None else start + block
            i += c
        return out

    def direction(self, active: torch.Tensor, g: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        x = self.x
        D1 = x.shape[2]
        todo_all = (~done[:, 0, :]).nonzero()  # (P, 2) rows (t, q)
        rebuild = not self.store or self.hess is None or self.calls % self.refresh == 0
        if self.store and self.hess is None:
            T, _, Q = active.shape
            self.hess = torch.zeros(T, Q, D1, D1, dtype=x.dtype, device=x.device)
            self.built_from = torch.zeros_like(active)
        self.calls += 1
        d = torch.zeros_like(g)
        group = max(1, min(1024, self.store_bytes // (D1 * D1 * x.element_size())))  # bounds the Hessians held
        for j in range(0, len(todo_all), group):
            todo = todo_all[j : j + group]
            ti, qi = todo[:, 0], todo[:, 1]
            if rebuild:
                hess = self._accumulate(active, todo, None)
                hess.diagonal(dim1=1, dim2=2).add_(1.0)
            else:
                assert self.hess is not None and self.built_from is not None
                hess = self._accumulate(active - self.built_from, todo, self.hess[ti, qi])
            if self.store:
                assert self.hess is not None and self.built_from is not None
                self.hess[ti, qi] = hess
                self.built_from[ti, :, qi] = active[ti, :, qi]
            rhs = -g[ti, :, qi].unsqueeze(-1)  # (c, D1, 1)
            factor, info = torch.linalg.cholesky_ex(hess)
            if bool((info != 0).any()):  # float32 round-off on an ill-conditioned system: solve in float64
                sol = torch.linalg.solve(hess.double(), rhs.double()).to(x.dtype)
            else:  # two triangular solves: much faster than cholesky_solve for batched vectors on the CPU
                half = torch.linalg.solve_triangular(factor, rhs, upper=False)
                sol = torch.linalg.solve_triangular(factor.transpose(1, 2), half, upper=True)
            d[ti, :, qi] = sol[:, :, 0]
        return d


def _cg_direction(
    x: torch.Tensor,
    active: torch.Tensor,
    g: torch.Tensor,
    g_norm: torch.Tensor,
    g0_norm: torch.Tensor,
    done: torch.Tensor,
    twoC: float,
    cg_max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inexact Newton direction by Jacobi-preconditioned CG; returns d and X d."""
    dt = x.dtype
    tiny = torch.finfo(dt).tiny
    xt = x.transpose(1, 2)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=1, keepdim=True)

    precond = 1.0 + twoC * ((xt * xt) @ active)  # diag(H)
    eta = torch.clamp(torch.sqrt(g_norm / g0_norm), max=0.1)  # forcing term: superlinear convergence
    cg_tol = eta * g_norm
    d = torch.zeros_like(g)
    xd = torch.zeros_like(active)
    res = -g
    zres = res / precond
    p = zres
    rz = dot(res, zres)
    live = (~done).to(dt)
    for _ in range(cg_max_iter):
        xp = x @ p
        hp = p + twoC * (xt @ (active * xp))
        php = dot(p, hp)
        alpha = torch.where(php > 0, rz / php.clamp(min=tiny), torch.zeros_like(php)) * live
        d = d + alpha * p
        xd = xd + alpha * xp
        res = res - alpha * hp
        live = live * (res.norm(dim=1, keepdim=True) > cg_tol).to(dt)
        if not bool(live.any()):
            break
        zres = res / precond
        rz_new = dot(res, zres)
        p = zres + (rz_new / rz.clamp(min=tiny)) * p
        rz = rz_new
    return d, xd


def exact_line_search(
    w: torch.Tensor, d: torch.Tensor, z: torch.Tensor, xd: torch.Tensor, s: torch.Tensor, m: torch.Tensor, twoC: float
) -> torch.Tensor:
    """argmin_{t >= 0} f(w + t d) per problem (T, 1, Q), exactly, without iterating.

    Along d the objective is piecewise quadratic: with u_i = 1 - s_i z_i and v_i = s_i (X d)_i, row i is active
    while u_i - t v_i > 0, and while active adds (z_i - s_i + t xd_i) xd_i to phi'(t) / 2C. So phi'(t) = A + t B
    on each interval between the breakpoints u_i / v_i, and (A, B) change by one row's terms at each breakpoint.
    Sorting the breakpoints and summing those changes gives every interval's (A, B); the minimum is in the first
    interval at whose end phi' is >= 0, at -A / B clamped to the interval (a kink when phi' jumps over zero).
    Rows: z, xd, s (T, R, Q); m (T, R, 1) or (T, R, Q), 1 for real rows.
    """
    dt = w.dtype
    wd = (w * d).sum(dim=1, keepdim=True)  # (T, 1, Q)
    dd = (d * d).sum(dim=1, keepdim=True)
    real = m > 0
    u = 1.0 - s * z
    v = s * xd
    alpha = twoC * (z - s) * xd
    beta = twoC * xd * xd
    active0 = real & ((u > 0) | ((u == 0) & (v < 0)))  # active just after t = 0
    leave = real & (u > 0) & (v > 0)
    enter = real & (u < 0) & (v < 0)
    times = torch.where(leave | enter, u / torch.where(v == 0, torch.ones_like(v), v), torch.full_like(u, math.inf))
    delta = leave.to(dt) * -1.0 + enter.to(dt)
    a0 = wd + (alpha * active0).sum(dim=1, keepdim=True)
    b0 = dd + (beta * active0).sum(dim=1, keepdim=True)
    times, order = torch.sort(times, dim=1)
    a = torch.cat([a0, a0 + torch.cumsum((alpha * delta).gather(1, order), dim=1)], dim=1)  # (T, R + 1, Q)
    b = torch.cat([b0, b0 + torch.cumsum((beta * delta).gather(1, order), dim=1)], dim=1)
    starts = torch.cat([torch.zeros_like(wd), times], dim=1)
    ends = torch.cat([times, torch.full_like(wd, math.inf)], dim=1)
    at_end = torch.where(torch.isinf(ends), torch.where(b > 0, math.inf, a), a + torch.nan_to_num(ends * b))
    k = torch.argmax((at_end >= 0).to(torch.int8), dim=1, keepdim=True)  # first interval where phi' reaches 0
    ak, bk = a.gather(1, k), b.gather(1, k)
    root = torch.where(bk > 0, -ak / bk.clamp(min=torch.finfo(dt).tiny), torch.zeros_like(ak))
    return torch.minimum(torch.maximum(root, starts.gather(1, k)), ends.gather(1, k)).clamp(min=0.0)


@REGISTRY.register(
    "head",
    "torch_svm",
    "LinearSVC's objective solved in torch (batched Newton-CG): many heads at once on the device",
    TorchSVMParams,
)
class TorchSVMHead:
    def __init__(self, params: TorchSVMParams | None = None, device: torch.device | str | None = None) -> None:
        self.params = params or TorchSVMParams()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.last_iterations = 0

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
        if labels is None:
            pairs = list(features)  # type: ignore[arg-type]
            feats = [as_tensor(f) for f, _ in pairs]
            labs = [as_tensor(y) for _, y in pairs]
        else:
            feats = [as_tensor(f) for f in features]  # type: ignore[union-attr]
            labs = [as_tensor(y) for y in labels]  # type: ignore[union-attr]
        if len(feats) != len(labs):
            raise DataError(f"{len(feats)} feature sets but {len(labs)} label sets")
        if not feats:
            return []
        p = self.params
        dt = torch.float64 if p.dtype == "float64" else torch.float32
        dev = self.device
        classes = [check_problem(f, y) for f, y in zip(feats, labs, strict=True)]
        dims = {f.shape[1] for f in feats}
        if len(dims) != 1:
            raise DataError(f"all feature sets must have the same dimension; got {sorted(dims)}")
        (D,) = dims
        T = len(feats)
        N = max(len(f) for f in feats)
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
        if p.scale:
            mean, scale = _scaler_stats(x[:, :, :D], mask)  # (T, D)
            x[:, :, :D] = (x[:, :, :D] - mean.unsqueeze(1)) / scale.unsqueeze(1)
            x[:, :, :D] *= mask.unsqueeze(-1).to(dt)
        x[:, :, D] = mask.to(dt)  # intercept_scaling = 1 (a constant feature, regularised like the others)

        w0 = None
        if init is not None:
            inits = [init] * T if isinstance(init, LinearHead) else list(init)
            if len(inits) != T:
                raise DataError(f"init has {len(inits)} heads for {T} training sets")
            w0 = torch.zeros(T, D + 1, Q, dtype=dt, device=dev)
            for t, (h, c) in enumerate(zip(inits, classes, strict=True)):
                wt, bt = head_rows(h, c, dt, dev, what=f"init head {t}")
                if p.scale:  # the same scores on standardised features
                    bt = bt + wt @ mean[t]
                    wt = wt * scale[t]
                w0[t, :D, : len(wt)] = wt.T
                w0[t, D, : len(bt)] = bt

        solver = p.solver if p.solver != "auto" else ("cholesky" if D + 1 <= 2049 else "cg")
        tol = max(p.tol, 100 * torch.finfo(dt).eps)
        chunk_bytes = (1 << 30) if dev.type == "cuda" else (256 << 20)  # Hessian work space per chunk of problems
        w, iters = _newton_svm(x, s, mask, p.C, p.max_iter, tol, solver, p.cg_max_iter, chunk_bytes, w0=w0)
        self.last_iterations = iters
        heads = []
        for t, c in enumerate(classes):
            q = 1 if len(c) == 2 else len(c)
            coef = w[t, :D, :q].T.double()
            intercept = w[t, D, :q].double()
            if p.scale:
                coef, intercept = _fold_scaling(coef, intercept, mean[t].double(), scale[t].double())
            heads.append(head_from_rows(coef, intercept, c))
        return heads


# ----------------------------------------------------------------------------------------------------------------
# Public API


def _resolve(head_name: str, params: Params | dict[str, Any] | None) -> Params:
    return REGISTRY.get("head", head_name).resolve(params)


def make_head_fitter(
    head_name: str, params: Params | dict[str, Any] | None = None, device: torch.device | str | None = None
) -> LinearSVCHead | TorchSVMHead:
    comp = REGISTRY.get("head", head_name)
    return comp.factory(_resolve(head_name, params), device)


def fit_head(
    features: ArrayLike,
    labels: ArrayLike,
    head_name: str = "linear_svc",
    params: Params | dict[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> LinearHead:
    """Fit one linear head on (features (N, D), labels (N,) original labels); returned on the CPU."""
    return make_head_fitter(head_name, params, device).fit(features, labels)


def fit_heads(
    problems: Sequence[tuple[ArrayLike, ArrayLike]],
    head_name: str = "linear_svc",
    params: Params | dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    init: LinearHead | Sequence[LinearHead] | None = None,
) -> list[LinearHead]:
    """Fit one head per (features, labels) pair: a loop for linear_svc, one batched solve for torch_svm.

    ``init`` (torch_svm only; ignored by linear_svc): warm start, e.g. the clean head for poisoned variants.
    """
    fitter = make_head_fitter(head_name, params, device)
    if isinstance(fitter, TorchSVMHead):
        return fitter.fit_many(list(problems), init=init)
    return fitter.fit_many(list(problems))


def accuracy(head: LinearHead, features: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of rows whose predicted label equals ``labels`` (original labels)."""
    f = as_tensor(features).float()
    y = as_tensor(labels).long()
    if len(y) == 0:
        return float("nan")
    with torch.no_grad():
        pred = head.predict(f).cpu()
    return float((pred == y.cpu()).float().mean())
