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
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import difference
from .difference import advance, coords, laplace_at


def _cg(b, lx0, x, dinv, r, p, q, its, res, n0, n1, n2, b0, b1, b2, c0, c1, c2, off, tol, maxiter, singular,
        jacobi, has_x0, chunk):
    B = b.shape[0]
    N = n0 * n1 * n2
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
            # q = A p and p·q in one pass
            pq = 0.0
            for w in prange(nch):
                start = w * chunk
                i0, i1, i2 = coords(start, n1, n2)
                for i in range(start, min(start + chunk, N)):
                    qi = -laplace_at(p, i, i0, i1, i2, n0, n1, n2, b0, b1, b2, c0, c1, c2, off)
                    q[i] = qi
                    pq += p[i] * qi
                    i0, i1, i2 = advance(i0, i1, i2, n1, n2)
            if not pq > 0.0:  # breakdown (p = 0 or non-finite values): stop, the residual tells
                break
            alpha = rz / pq
            # x, r updates with r·r, r·z, Σr, Σz in one pass
            rr = 0.0
            rzn = 0.0
            sr = 0.0
            sz = 0.0
            for w in prange(nch):
                for i in range(w * chunk, min(w * chunk + chunk, N)):
                    xs[i] += alpha * p[i]
                    r[i] -= alpha * q[i]
                    ri = r[i]
                    zi = ri * dinv[i] if jacobi else ri
                    rr += ri * ri
                    rzn += ri * zi
                    sr += ri
                    sz += zi
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
                for i in range(w * chunk, min(w * chunk + chunk, N)):
                    p[i] = ((r[i] * dinv[i] if jacobi else r[i]) - zm) + beta * p[i]
        if singular:  # the zero-mean representative, exactly
            sx = 0.0
            for i in range(N):
                sx += xs[i]
            mx = sx / N
            for i in range(N):
                xs[i] -= mx
        its[s] = k
        res[s] = math.sqrt(rr / cc)


_cg_par = njit(parallel=True)(_cg)
_cg_ser = njit(_cg)


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
    driver = _cg_par if N >= difference.PARALLEL_MIN_CELLS else _cg_ser
    driver(b, lx0, x, dinv, r, p, q, its, res, *shape3, *bc, *c, 3 - ndim, float(tol), int(maxiter),
           bool(singular), jacobi, x0 is not None, difference.CHUNK)
    return x, int(its.max()), float(res.max())
