"""Preconditioned conjugate gradients for ``laplace(x) = b`` as one Numba CPU call.

The systems ``A x = c`` with ``A = −laplace`` (symmetric positive (semi)definite) and ``c = −b`` are solved
one after the other; for each, the whole iteration runs inside the compiled driver::

    c ← −(b − mean(b))   (singular operator)          r ← c − A x0,  z ← M⁻¹ r,  p ← Π z
    repeat:  q ← A p,  pq ← p·q                                          (one fused pass)
             α ← rz / pq;  x ← x + α p;  r ← r − α q;  rr ← r·r;  rz' ← r·M⁻¹r   (one fused pass)
             stop when rr ≤ tol² ‖c‖²;   β ← rz' / rz;   p ← Π M⁻¹ r + β p

``M`` is the identity or the diagonal of ``A`` (Jacobi; computed from the cell position, never stored).
``Π`` removes the mean when ``A`` has the constant null space (every axis periodic or neumann): the
preconditioned directions, hence the iterates, stay zero-mean, and the final ``x`` has its mean removed
exactly. ``z`` is never stored: the update pass only accumulates ``Σ z`` and ``r·z``, and the direction
update recomputes ``M⁻¹ r``. Work vectors: ``r``, ``p``, ``q`` (one system's size); scalars in float64.

The product ``A p`` runs row by row along the last axis: a branch-free loop over row views (vectorised) for
the interior cells, the ghost rules for the two end cells and for the rows on a dirichlet boundary (a
neumann ghost row is the row itself). The update passes run over contiguous chunks; all loops vectorise,
the dot products included (summed in any order, see ``fastmath`` below).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import difference
from .difference import advance, coords, laplace_at


@njit(inline="always")
def _stencil_rows(i, n, stride, bc):
    """Offsets of the rows above and below row position ``i`` along a strided axis as the Laplacian sees
    them: the neighbour row, the wrapped row (periodic) or the row itself (a neumann ghost repeats it); and
    False at a dirichlet boundary, whose ghost row is 0 (not a row of the array)."""
    up = stride if i + 1 < n else (-(n - 1) * stride if bc == 0 else 0)
    lo = -stride if i > 0 else ((n - 1) * stride if bc == 0 else 0)
    return up, lo, bc != 1 or (0 < i and i + 1 < n)


@njit(inline="always")
def _neg_laplace_row(p, q, rw, n0, n1, n2, b0, b1, b2, c0, c1, c2, off):
    """``q = −laplace(p)`` on row ``rw = i0 n1 + i1`` of one system; returns the row's share of ``p·q``.

    A row whose neighbour rows are rows of the array runs a branch-free loop over row views (vectorised);
    its two end cells, and every cell of a row on a dirichlet boundary, take the per-cell ghost rules."""
    row = np.int64(rw)  # a parallel loop's index is unsigned: keep the index arithmetic signed
    if n0 == 1:  # 1-D and 2-D grids: no integer division per row
        i0 = 0
        i1 = row
    else:
        i1 = row % n1
        i0 = row // n1
    base = row * n2
    up0, lo0, ok0 = _stencil_rows(i0, n0, n1 * n2, b0)
    up1, lo1, ok1 = _stencil_rows(i1, n1, n2, b1)
    fast = ok0 and ok1 and n2 >= 3
    acc = 0.0
    for i in range(0, n2, n2 - 1 if fast else 1):
        cell = base + i
        qi = -laplace_at(p, cell, i0, i1, i, n0, n1, n2, b0, b1, b2, c0, c1, c2, off)
        q[cell] = qi
        acc += p[cell] * qi
    if not fast:
        return acc
    v = p[base:base + n2]
    o = q[base:base + n2]
    if off == 2:
        for i in range(1, n2 - 1):
            vi = v[i]
            qi = -(c2 * (v[i + 1] - 2.0 * vi + v[i - 1]))
            o[i] = qi
            acc += vi * qi
    elif off == 1:
        yu = p[base + up1:base + up1 + n2]
        yl = p[base + lo1:base + lo1 + n2]
        for i in range(1, n2 - 1):
            vi = v[i]
            qi = -(c1 * (yu[i] - 2.0 * vi + yl[i]) + c2 * (v[i + 1] - 2.0 * vi + v[i - 1]))
            o[i] = qi
            acc += vi * qi
    else:
        xu = p[base + up0:base + up0 + n2]
        xl = p[base + lo0:base + lo0 + n2]
        yu = p[base + up1:base + up1 + n2]
        yl = p[base + lo1:base + lo1 + n2]
        for i in range(1, n2 - 1):
            vi = v[i]
            qi = -(c0 * (xu[i] - 2.0 * vi + xl[i]) + c1 * (yu[i] - 2.0 * vi + yl[i])
                   + c2 * (v[i + 1] - 2.0 * vi + v[i - 1]))
            o[i] = qi
            acc += vi * qi
    return acc


@njit(inline="always")
def _cg(b, lx0, x, dinv, r, p, q, its, res, n0, n1, n2, b0, b1, b2, c0, c1, c2, off, tol, maxiter, singular,
        jacobi, has_x0, chunk):
    B = b.shape[0]
    N = n0 * n1 * n2
    rows = n0 * n1
    nch = (N + chunk - 1) // chunk
    tol2 = tol * tol
    for s in range(B):
        bs = b[s]
        xs = x[s]
        # once per system (serial loops: cheap next to the iterations, and quick to compile)
        mb = 0.0
        if singular:
            sb = 0.0
            for i in range(N):
                sb += bs[i]
            mb = sb / N
        # r = c − A x0 = −(b − mean b) + laplace(x0);  accumulate ‖c‖², r·r, r·z, Σr, Σz  (z = M⁻¹ r)
        cc = 0.0
        rr = 0.0
        rz = 0.0
        sr = 0.0
        sz = 0.0
        for i in range(N):
            ci = -(bs[i] - mb)
            cc += ci * ci
            if has_x0:
                r[i] = ci + lx0[s, i]
            else:
                r[i] = ci
                xs[i] = 0.0
            ri = r[i]  # the stored (possibly float32) value
            zi = ri * dinv[i] if jacobi else ri
            rr += ri * ri
            rz += ri * zi
            sr += ri
            sz += zi
        if cc == 0.0:  # zero right-hand side (after mean removal): the solution is 0
            for i in range(N):
                xs[i] = 0.0
            its[s] = 0
            res[s] = 0.0
            continue

        k = 0
        done = rr <= tol2 * cc
        zm = sz / N if singular else 0.0
        rz -= zm * sr
        for i in range(N):
            p[i] = (r[i] * dinv[i] if jacobi else r[i]) - zm
        while not done and k < maxiter:
            # q = A p and p·q in one pass, row by row
            pq = 0.0
            for rw in prange(rows):
                pq += _neg_laplace_row(p, q, rw, n0, n1, n2, b0, b1, b2, c0, c1, c2, off)
            if not pq > 0.0:  # breakdown (p = 0 or non-finite values): stop, the residual tells
                break
            alpha = rz / pq
            # x, r updates with r·r, r·z, Σr, Σz in one pass (chunk views: vectorised loops)
            rr = 0.0
            rzn = 0.0
            sr = 0.0
            sz = 0.0
            for w in prange(nch):
                lo = w * chunk
                hi = min(lo + chunk, N)
                xv = xs[lo:hi]
                pv = p[lo:hi]
                qv = q[lo:hi]
                rv = r[lo:hi]
                if jacobi:
                    dv = dinv[lo:hi]
                    for i in range(hi - lo):
                        xv[i] += alpha * pv[i]
                        rv[i] -= alpha * qv[i]
                        ri = rv[i]
                        zi = ri * dv[i]
                        rr += ri * ri
                        rzn += ri * zi
                        sr += ri
                        sz += zi
                else:
                    for i in range(hi - lo):
                        xv[i] += alpha * pv[i]
                        rv[i] -= alpha * qv[i]
                        ri = rv[i]
                        rr += ri * ri
                        rzn += ri * ri
                        sr += ri
                        sz += ri
            k += 1
            if rr <= tol2 * cc:
                done = True
                break
            zm = sz / N if singular else 0.0
            rzn -= zm * sr
            beta = rzn / rz
            rz = rzn
            # p = Π M⁻¹ r + β p
            for w in prange(nch):
                lo = w * chunk
                hi = min(lo + chunk, N)
                pv = p[lo:hi]
                rv = r[lo:hi]
                if jacobi:
                    dv = dinv[lo:hi]
                    for i in range(hi - lo):
                        pv[i] = (rv[i] * dv[i] - zm) + beta * pv[i]
                else:
                    for i in range(hi - lo):
                        pv[i] = (rv[i] - zm) + beta * pv[i]
        if singular:  # the zero-mean representative, exactly
            sx = 0.0
            for i in range(N):
                sx += xs[i]
            mx = sx / N
            for i in range(N):
                xs[i] -= mx
        its[s] = k
        res[s] = math.sqrt(rr / cc)


# One entry point per dimension: the padded sizes and ``off`` are constants there, which removes the other
# dimensions' code from the row loop (a row of the 80 × 64 demo takes a few tens of nanoseconds; untaken
# branches and index arithmetic would add half of that). Each compiles on first use.
def _cg_1d(b, lx0, x, dinv, r, p, q, its, res, n0, n1, n2, b0, b1, b2, c0, c1, c2, off, tol, maxiter, singular,
           jacobi, has_x0, chunk):
    _cg(b, lx0, x, dinv, r, p, q, its, res, 1, 1, n2, 0, 0, b2, 0.0, 0.0, c2, 2, tol, maxiter, singular,
        jacobi, has_x0, chunk)


def _cg_2d(b, lx0, x, dinv, r, p, q, its, res, n0, n1, n2, b0, b1, b2, c0, c1, c2, off, tol, maxiter, singular,
           jacobi, has_x0, chunk):
    _cg(b, lx0, x, dinv, r, p, q, its, res, 1, n1, n2, 0, b1, b2, 0.0, c1, c2, 1, tol, maxiter, singular,
        jacobi, has_x0, chunk)


def _cg_3d(b, lx0, x, dinv, r, p, q, its, res, n0, n1, n2, b0, b1, b2, c0, c1, c2, off, tol, maxiter, singular,
           jacobi, has_x0, chunk):
    _cg(b, lx0, x, dinv, r, p, q, its, res, n0, n1, n2, b0, b1, b2, c0, c1, c2, 0, tol, maxiter, singular,
        jacobi, has_x0, chunk)


# fastmath "reassoc" only: the dot products may be summed in any order (vectorised, and per thread); no
# assumption about NaN or infinity is made, so a breakdown or overflow still shows in the residual.
# No cache=True: Numba's disk cache keys a function by name and signature, not by the parallel flag, so the
# serial and the parallel compilation of one function would load each other's code.
_CG = {(off, par): njit(parallel=par, fastmath={"reassoc"})(fn)
       for off, fn in ((2, _cg_1d), (1, _cg_2d), (0, _cg_3d)) for par in (False, True)}


def inverse_diagonal(shape3, ndim, bc, c):
    """``1 / diag(−laplace)`` per cell (1 where the diagonal is 0: a grid of one periodic cell), as a flat
    array of ``prod(shape3)`` float64 values. Along an axis a cell's diagonal share is ``c_a`` times two
    minus the neighbours that are the cell itself (neumann ghosts; both neighbours of a lone periodic cell)."""
    d = np.zeros(shape3)
    for a in range(3 - ndim, 3):
        n = shape3[a]
        own = np.zeros(n)
        if bc[a] == 2:
            own[0] += 1
            own[-1] += 1
        elif bc[a] == 0 and n == 1:
            own[0] = 2
        view = [1, 1, 1]
        view[a] = n
        d = d + (c[a] * (2.0 - own)).reshape(view)
    d[d == 0] = 1.0
    return (1.0 / d).reshape(-1)


def cg_solve(b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular, preconditioner, check_every):
    """See :meth:`gpudp.backends.base.Backend.cg_solve`. ``check_every`` does not apply: the convergence
    test costs nothing on the CPU and runs every iteration."""
    B, N = b.shape
    c = tuple(float(v) * float(v) for v in inv_dx)
    if x0 is None:
        x = np.empty_like(b)
        lx0 = np.empty((0, 0), b.dtype)
    else:
        x = np.array(x0, dtype=b.dtype, order="C", copy=True)
        if singular:
            x -= x.mean(axis=1, keepdims=True, dtype=np.float64).astype(b.dtype)
        lx0 = difference.laplace(x, inv_dx, bc, shape3, ndim)
    jacobi = preconditioner == "jacobi"
    dinv = inverse_diagonal(shape3, ndim, bc, c).astype(b.dtype) if jacobi else np.empty(0, b.dtype)
    r = np.empty(N, b.dtype)
    p = np.empty(N, b.dtype)
    q = np.empty(N, b.dtype)
    its = np.zeros(B, np.int64)
    res = np.zeros(B, np.float64)
    driver = _CG[3 - ndim, N >= difference.PARALLEL_MIN_CELLS]
    driver(b, lx0, x, dinv, r, p, q, its, res, *shape3, *bc, *c, 3 - ndim, float(tol), int(maxiter),
           bool(singular), jacobi, x0 is not None, difference.CHUNK)
    return x, int(its.max()), float(res.max())
