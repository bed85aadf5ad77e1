"""Refit many linear heads whose training sets are one base set with a few rows replaced (one per poison trial).

A targeted attack yields one poisoned training set per target, each equal to the clean set except for a handful of
replaced rows. Fitting each from scratch repeats the same work a hundred times. ``refit_heads`` takes the clean
set once plus the edits (``RowEdit``: which rows, their new features and labels) and:

- ``linear_svc`` (and any head without a ``refit`` of its own): builds each poisoned set and fits it, one after the
  other (the paper's way);
- ``torch_svm``: its ``refit`` solves all the problems together here (``fit_shared``), with the same objective and
  stopping rule as its ``fit`` (adapters/heads/newton.py), exploiting what they share:

  * scores and gradients of every problem come from one matrix product with the shared features
    (``X0 @ W`` for all heads at once) plus a small correction for the replaced rows, instead of T copies of X;
  * the Newton systems ``H_t = I + 2C X_t^T A_t X_t`` of all problems differ from one reference Hessian
    ``H_ref`` (shared rows, the majority active set) by the rows whose activity differs from the reference and the
    replaced rows: a low-rank difference ``U_t^T S_t U_t`` (S = +1 added, -1 removed). One Cholesky factor of
    ``H_ref`` per class then gives every problem's exact Newton direction by the Woodbury identity,
    ``H_t^-1 g = H_ref^-1 g - H_ref^-1 U^T (S / 2C + U H_ref^-1 U^T)^-1 U H_ref^-1 g``, at the cost of a few
    triangular solves per problem instead of forming and factoring a D x D matrix per problem.

  The line search is the one of ``torch_svm``. When the difference has more columns than the feature dimension
  (many rows replaced, or an active set far from the reference), that problem's Hessian is formed from ``H_ref``
  plus the difference and factored directly, which is still exact.

Sets whose classes differ from the base set's, ``scale: true`` (per-set standardisation is not a row edit) and a
single edit fall back to building the sets and calling the head's ordinary fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from adapters.heads.base import (
    ArrayLike,
    as_tensor,
    check_problem,
    head_from_rows,
    head_rows,
    label_signs,
    make_head,
)
from adapters.heads.linear import LinearHead
from adapters.heads.newton import exact_line_search
from benchmark.core.errors import DataError
from benchmark.core.registry import Params

if TYPE_CHECKING:
    from adapters.heads.torch_svm import TorchSVMParams


@dataclass(frozen=True)
class RowEdit:
    """Rows ``indices`` of the base training set replaced by ``features`` (M, D) with labels ``labels`` (M,)."""

    indices: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor

    def apply(self, base_features: torch.Tensor, base_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The edited training set (copies; the base is not modified)."""
        f, y = base_features.clone(), base_labels.clone()
        if len(self.indices):
            f[self.indices] = self.features.to(f.dtype)
            y[self.indices] = self.labels.to(y.dtype)
        return f, y


def _check_edits(n: int, d: int, edits: Sequence[RowEdit]) -> None:
    for k, e in enumerate(edits):
        m = len(e.indices)
        if e.features.shape != (m, d) or e.labels.shape != (m,):
            raise DataError(
                f"edit {k}: {m} indices need features ({m}, {d}) and labels ({m},); got "
                f"{tuple(e.features.shape)} and {tuple(e.labels.shape)}"
            )
        if m and (int(e.indices.min()) < 0 or int(e.indices.max()) >= n):
            raise DataError(f"edit {k}: row indices must be in [0, {n}); got {e.indices.min()}..{e.indices.max()}")
        if len(torch.unique(e.indices)) != m:
            raise DataError(f"edit {k}: a row is replaced twice")


def same_classes(base_labels: torch.Tensor, classes: torch.Tensor, edits: Sequence[RowEdit]) -> bool:
    """Whether every edited set has exactly the base set's classes (counted, not by building the sets)."""
    counts = torch.bincount(torch.searchsorted(classes, base_labels), minlength=len(classes))
    for e in edits:
        new = e.labels.long().cpu()
        pos = torch.searchsorted(classes, new).clamp(max=len(classes) - 1)
        if not bool((classes[pos] == new).all()):
            return False
        c = counts.clone()
        c -= torch.bincount(torch.searchsorted(classes, base_labels[e.indices]), minlength=len(classes))
        c += torch.bincount(pos, minlength=len(classes))
        if bool((c == 0).any()):
            return False
    return True


def refit_heads(
    base_features: ArrayLike,
    base_labels: ArrayLike,
    edits: Sequence[RowEdit],
    head_name: str = "linear_svc",
    params: Params | dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    init: LinearHead | None = None,
) -> list[LinearHead]:
    """One head per edit, each fitted on the base set (N, D) with that edit's rows replaced.

    ``init`` (torch_svm): a warm start for every problem, typically the head fitted on the base set.
    """
    f0 = as_tensor(base_features).detach().cpu()
    y0 = as_tensor(base_labels).detach().cpu().long()
    check_problem(f0, y0)
    _check_edits(len(f0), f0.shape[1], edits)
    if not edits:
        return []
    return make_head(head_name, params, device).refit(f0, y0, edits, init)


# ----------------------------------------------------------------------------------------------------------------
# The shared-base solver


def fit_shared(
    f0: torch.Tensor,
    y0: torch.Tensor,
    classes: torch.Tensor,
    edits: Sequence[RowEdit],
    init: LinearHead | None,
    p: TorchSVMParams,
    dev: torch.device,
) -> tuple[list[LinearHead], int]:
    """``torch_svm``'s heads (its params ``p``, on ``dev``) for the edits of one base set whose edited sets all have
    the base set's classes; and the Newton steps taken."""
    dt = torch.float64 if p.dtype == "float64" else torch.float32
    N, D = f0.shape
    D1, T = D + 1, len(edits)
    Q = 1 if len(classes) == 2 else len(classes)
    M = max(1, max(len(e.indices) for e in edits))

    x0 = torch.cat([f0.to(dev, dt), torch.ones(N, 1, dtype=dt, device=dev)], dim=1)  # (N, D1)
    s0 = label_signs(y0.to(dev), classes, dt)  # (N, Q)
    # replacement rows, padded to M per problem: position (t, j) holds edit t's j-th row
    sizes = torch.tensor([len(e.indices) for e in edits])
    t_of = torch.repeat_interleave(torch.arange(T), sizes).to(dev)
    j_of = (torch.arange(int(sizes.sum())) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)).to(dev)
    rows = torch.cat([e.indices.long() for e in edits]).to(dev)
    xr = torch.zeros(T, M, D1, dtype=dt, device=dev)
    xr[t_of, j_of] = torch.cat(
        [torch.cat([e.features.detach() for e in edits]).to(dev, dt), torch.ones(len(rows), 1, dtype=dt, device=dev)],
        dim=1,
    )
    sr = torch.ones(T, M, Q, dtype=dt, device=dev)
    sr[t_of, j_of] = label_signs(torch.cat([e.labels.long() for e in edits]).to(dev), classes, dt)
    emask = torch.zeros(T, M, dtype=torch.bool, device=dev)
    emask[t_of, j_of] = True
    keep = torch.ones(N, T, dtype=torch.bool, device=dev)  # base rows present in each problem
    keep[rows, t_of] = False

    w = torch.zeros(T, D1, Q, dtype=dt, device=dev)
    if init is not None:
        wt, bt = head_rows(init, classes, dt, dev)
        w[:, :D, :] = wt.T
        w[:, D, :] = bt

    solver = _SharedNewton(x0, s0, keep, xr, sr, emask, p.C)
    tol = max(p.tol, 100 * torch.finfo(dt).eps)
    w, steps = solver.solve(w, p.max_iter, tol)
    return [head_from_rows(w[t, :D, :].T, w[t, D, :], classes) for t in range(T)], steps


class _SharedNewton:
    """Generalised Newton with exact line search for T x Q squared-hinge problems that share the base rows.

    Problem t has the base rows where ``keep[:, t]`` and its own replacement rows ``xr[t]`` where ``emask[t]``.
    """

    REBUILD_EVERY = 8
    CHUNK_BYTES = 256 << 20  # per-problem Newton blocks held at once

    def __init__(
        self,
        x0: torch.Tensor,
        s0: torch.Tensor,
        keep: torch.Tensor,
        xr: torch.Tensor,
        sr: torch.Tensor,
        emask: torch.Tensor,
        C: float,
    ) -> None:
        self.x0, self.s0, self.xr, self.sr, self.twoC = x0, s0, xr, sr, 2.0 * C
        self.keep = keep.to(x0.dtype).unsqueeze(-1)  # (N, T, 1)
        self.emask = emask.to(x0.dtype).unsqueeze(-1)  # (T, M, 1)
        self.ref_active: torch.Tensor | None = None  # (N, Q) active set H_ref was built from
        self.ref_hess: torch.Tensor | None = None  # (Q, D1, D1)
        self.ref_factor: torch.Tensor | None = None
        self.updates = 0

    # products with the rows of the problems in ``live`` (indices into T) --------------------------------------

    def scores(self, w: torch.Tensor, live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X_t w_t for the live problems (w: (L, D1, Q)): base rows (N, L, Q), replacement rows (L, M, Q)."""
        L, D1, Q = w.shape
        zb = (self.x0 @ w.permute(1, 0, 2).reshape(D1, L * Q)).view(-1, L, Q)
        return zb, torch.bmm(self.xr[live], w)

    def transposed(self, rb: torch.Tensor, re: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """X_t^T r_t for the live problems, from per-row weights rb (N, L, Q) and re (L, M, Q); (L, D1, Q)."""
        N, L, Q = rb.shape
        base = (self.x0.T @ rb.reshape(N, L * Q)).view(-1, L, Q).permute(1, 0, 2)
        return base + torch.bmm(self.xr[live].transpose(1, 2), re)

    # the loop -----------------------------------------------------------------------------------------------------

    def solve(self, w: torch.Tensor, max_iter: int, tol: float) -> tuple[torch.Tensor, int]:
        """Newton steps until every problem's gradient is below ``tol`` times its gradient at 0; a problem whose
        classes are all done leaves the batch (its weights stop changing), so late steps cost only what is left."""
        twoC, s0 = self.twoC, self.s0.unsqueeze(1)
        T = w.shape[0]
        tiny = torch.finfo(w.dtype).tiny
        live = torch.arange(T, device=w.device)
        # gradient at w = 0 (every row active, scores 0): the scale of the relative stopping rule
        g0 = -twoC * self.transposed(s0 * self.keep, self.sr * self.emask, live)
        g0_norm = g0.norm(dim=1, keepdim=True).clamp(min=tiny)  # (T, 1, Q)
        zb, ze = self.scores(w, live)  # kept up to date along the line searches
        w = w.clone()
        steps = 0
        for _ in range(max_iter):
            zb_l, ze_l = zb[:, live], ze[live]
            keep, emask, sr = self.keep[:, live], self.emask[live], self.sr[live]
            ab = ((1.0 - s0 * zb_l) > 0).to(w.dtype) * keep
            ae = ((1.0 - sr * ze_l) > 0).to(w.dtype) * emask
            g = w[live] + twoC * self.transposed(ab * (zb_l - s0), ae * (ze_l - sr), live)
            done = g.norm(dim=1, keepdim=True) <= tol * g0_norm[live]  # (L, 1, Q)
            running = ~done.all(dim=2).flatten()
            if not bool(running.any()):
                break
            if not bool(running.all()):
                live, zb_l, ze_l, keep, emask, sr = (
                    live[running], zb_l[:, running], ze_l[running], keep[:, running], emask[running], sr[running]
                )
                ab, ae, g, done = ab[:, running], ae[running], g[running], done[running]
            d = self.direction(ab, ae, g, done, live)
            xdb, xde = self.scores(d, live)
            # the line search sees each problem's rows as one (L, N + M, Q) block
            t = exact_line_search(
                w[live],
                d,
                torch.cat([zb_l.permute(1, 0, 2), ze_l], dim=1),
                torch.cat([xdb.permute(1, 0, 2), xde], dim=1),
                torch.cat([s0.expand(-1, len(live), -1).permute(1, 0, 2), sr], dim=1),
                torch.cat([keep.permute(1, 0, 2), emask], dim=1),
                twoC,
            ) * (~done).to(w.dtype)
            w[live] += t * d
            zb[:, live] = zb_l + t.permute(1, 0, 2) * xdb
            ze[live] = ze_l + t * xde
            steps += 1
        return w, steps

    # Newton directions -------------------------------------------------------------------------------------------

    def _update_reference(self, ab: torch.Tensor) -> None:
        """H_ref = I + 2C X0^T diag(a_ref) X0 per class, a_ref the majority active set of the live problems.

        Updated with the rows whose majority changed; rebuilt from all rows every ``REBUILD_EVERY`` updates (and
        whenever round-off made it lose positive definiteness) so that the updates cannot drift."""
        x0, twoC = self.x0, self.twoC
        majority = (ab.mean(dim=1) > 0.5).to(x0.dtype)  # (N, Q)
        if self.ref_active is not None and bool((majority == self.ref_active).all()):
            return
        if self.ref_hess is None or self.ref_active is None or self.updates % self.REBUILD_EVERY == 0:
            self._build_reference(majority)
        else:
            delta = majority - self.ref_active
            rows = (delta != 0).any(dim=1).nonzero().flatten()
            xs = x0[rows]
            for q in range(majority.shape[1]):
                self.ref_hess[q] += twoC * (xs * delta[rows, q : q + 1]).T @ xs
        self.updates += 1
        self.ref_active = majority
        factor, info = torch.linalg.cholesky_ex(self.ref_hess)
        if bool((info != 0).any()):
            self._build_reference(majority)
            factor = torch.linalg.cholesky(self.ref_hess)
        self.ref_factor = factor

    def _build_reference(self, active: torch.Tensor) -> None:
        x0 = self.x0
        eye = torch.eye(x0.shape[1], dtype=x0.dtype, device=x0.device)
        self.ref_hess = torch.stack(
            [eye + self.twoC * (x0 * active[:, q : q + 1]).T @ x0 for q in range(active.shape[1])]
        )

    def direction(
        self, ab: torch.Tensor, ae: torch.Tensor, g: torch.Tensor, done: torch.Tensor, live: torch.Tensor
    ) -> torch.Tensor:
        """-H_t^{-1} g_t for the live problems, exactly, from the shared reference factor (Woodbury)."""
        self._update_reference(ab)
        assert self.ref_active is not None
        D1 = self.x0.shape[1]
        L, _, Q = g.shape
        # columns of U_t: base rows whose activity differs from the reference (sign -1 / +1), then replacement rows
        sigma = (ab - self.ref_active.unsqueeze(1)).permute(1, 2, 0)  # (L, Q, N)
        sigma = sigma * (~done).permute(0, 2, 1).to(sigma.dtype)  # finished problems need no direction
        r = int((sigma != 0).sum(dim=2).max()) + ae.shape[1]
        # bound the per-problem blocks (U, and H_t when formed) held at once
        per_problem = Q * (r + (D1 if r > D1 else 0)) * D1 * self.x0.element_size()
        chunk = max(1, self.CHUNK_BYTES // per_problem)
        return torch.cat(
            [
                self._direction_chunk(sigma[c : c + chunk], ae[c : c + chunk], g[c : c + chunk], live[c : c + chunk])
                for c in range(0, L, chunk)
            ]
        )

    def _direction_chunk(
        self, sigma: torch.Tensor, ae: torch.Tensor, g: torch.Tensor, live: torch.Tensor
    ) -> torch.Tensor:
        assert self.ref_factor is not None and self.ref_hess is not None
        x0, twoC = self.x0, self.twoC
        D1 = x0.shape[1]
        T, _, Q = g.shape
        dt = x0.dtype
        r_base = int((sigma != 0).sum(dim=2).max())
        cols, signs = [], []
        if r_base:
            rows = torch.topk(sigma.abs(), r_base, dim=2).indices  # (T, Q, r_base), the differing rows first
            cols.append(x0[rows])  # (T, Q, r_base, D1); padding rows (sigma 0) are zeroed below
            signs.append(sigma.gather(2, rows))
        act_e = ae.permute(0, 2, 1)  # (T, Q, M)
        cols.append(self.xr[live].unsqueeze(1) * act_e.unsqueeze(-1))
        signs.append(act_e)
        u = torch.cat(cols, dim=2)  # (T, Q, r, D1)
        sgn = torch.cat(signs, dim=2)  # (T, Q, r) in {-1, 0, +1}
        u = u * (sgn != 0).unsqueeze(-1).to(dt)
        sgn = torch.where(sgn == 0, torch.ones_like(sgn), sgn)  # a zero column with sign +1 changes nothing
        r = u.shape[2]

        gq = g.permute(0, 2, 1)  # (T, Q, D1)
        if r > D1:  # the difference is not low-rank: form each H_t and factor it
            hess = self.ref_hess.unsqueeze(0) + twoC * (u.transpose(2, 3) * sgn.unsqueeze(2)) @ u
            sol = torch.cholesky_solve(gq.unsqueeze(-1), torch.linalg.cholesky(hess)).squeeze(-1)
            return -sol.permute(0, 2, 1)
        # one triangular solve per class for all problems' right-hand sides [g_t, U_t^T]
        rhs = torch.cat([gq.unsqueeze(-1), u.transpose(2, 3)], dim=3)  # (T, Q, D1, 1 + r)
        rhs = rhs.permute(1, 2, 0, 3).reshape(Q, D1, T * (1 + r))
        # two triangular solves: faster than cholesky_solve for many right-hand sides on the CPU
        half = torch.linalg.solve_triangular(self.ref_factor, rhs, upper=False)
        y = torch.linalg.solve_triangular(self.ref_factor.mT, half, upper=True)
        y = y.view(Q, D1, T, 1 + r).permute(2, 0, 1, 3)
        hg, hu = y[..., 0], y[..., 1:]  # H_ref^-1 g (T, Q, D1), H_ref^-1 U^T (T, Q, D1, r)
        cap = u @ hu  # (T, Q, r, r)
        cap = cap + torch.diag_embed(1.0 / (twoC * sgn))
        k = torch.linalg.solve(cap, (u @ hg.unsqueeze(-1)))  # (T, Q, r, 1)
        sol = hg - (hu @ k).squeeze(-1)
        return -sol.permute(0, 2, 1)
