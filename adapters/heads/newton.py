"""The batched solver behind ``torch_svm``: generalised Newton for many squared-hinge SVMs at once.

It minimises the objective of ``adapters/heads/base.py`` with a truncated-Newton method (Keerthi & DeCoste's modified
finite Newton for the squared hinge): at each iteration the generalised Hessian ``I + 2C X_A^T X_A`` (A: samples
with positive hinge) is inverted, exactly by Cholesky or approximately by Jacobi-preconditioned conjugate gradients,
then an exact line search along the direction finds the minimum of the piecewise-quadratic objective. Everything is
batched over heads x classes with plain matmuls, so a hundred heads (Poison Frog's one poisoned training set per
target) fit in one call on a GPU. It stops when every problem's gradient norm is below ``tol`` times its norm at
w = 0, a tighter criterion than liblinear's, so its objective is at or below LinearSVC's.
"""

from __future__ import annotations

import math

import torch


def newton_svm(
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

