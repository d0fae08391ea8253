"""Preconditioned conjugate gradients for ``laplace(x) = b`` on a grid with obstacles, as one Numba CPU call.

The operator is ``A = −laplace = Gᵀ W G`` restricted to the fluid cells (``W``: the open faces, DESIGN.md §6;
``gpudp.ops.obstacles``). Written per cell, with ``w_f = 1/Δx_a²`` on an open face ``f`` of axis ``a`` and 0
on a closed one::

    (A p)_i = Σ_{faces f of i} w_f (p_i − p_{j(f)})        j(f): the cell across f (0 outside a dirichlet face)

A solid cell has only closed faces, so its row and column are 0. The systems run one after the other; for
each the whole iteration is one compiled loop (as in ``poisson.py``)::

    c ← −Π b                 Π: zero in solid cells, remove the mean of every sealed region
    r ← c − A x0 (x0 ← Π x0),   z ← Π M⁻¹ r,   p ← z
    repeat:  q ← A p,  pq ← p·q                                              (one pass over the rows)
             α ← rz / pq;  x ← x + α p;  r ← r − α q;  rr ← r·r;  sums for r·z   (one pass)
             stop when rr ≤ tol² ‖c‖²;  β ← rz' / rz;  p ← Π M⁻¹ r + β p       (one pass)
    x ← Π x

``M`` is the identity or the diagonal of ``A`` (Jacobi). ``Π M⁻¹ r`` needs the mean ``z̄_k`` of ``z = M⁻¹ r``
over each sealed region ``k``, and ``r·Π z = Σ r z − Σ_k z̄_k Σ_{i∈k} r_i``: the update pass accumulates ``Σ z``
and ``Σ r`` per region, with one sealed region (a closed box) as a masked sum inside the vectorised pass, with
several in a separate pass over the region labels. The identity needs no ``z``: ``z = r`` (0 outside the fluid).

Layout: every vector lives on the grid padded by one ghost cell on both sides of each real axis, so that
every stencil neighbour is at a fixed offset. Ghost cells hold 0 (their weights are those of the boundary
faces: a dirichlet face reads the ghost value 0, a neumann face has weight 0), except along periodic axes,
whose ghost cells are refreshed with the wrapped values before each product. ``w_a`` holds the weight of the
lower ``a``-face of each padded cell (the upper boundary face is the lower face of the upper ghost cell).
The products run row by row along the last axis over row views (vectorised); the update passes run over the
whole padded vectors (ghost entries of ``r`` and ``q`` are 0 and stay 0). Scalars accumulate in float64.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import difference


@njit(inline="always")
def _refresh(v, m1, m2, n0, n1, n2, per0, per1, per2, off):
    """Copy the wrapped values into the ghost cells of the periodic axes of the padded vector ``v``."""
    if off <= 0 and per0:
        s = m1 * m2
        for j in range(s):
            v[j] = v[n0 * s + j]
            v[(n0 + 1) * s + j] = v[s + j]
    if off <= 1 and per1:
        m0 = v.size // (m1 * m2)
        for i0 in range(m0):
            base = i0 * m1 * m2
            for j in range(m2):
                v[base + j] = v[base + n1 * m2 + j]
                v[base + (n1 + 1) * m2 + j] = v[base + m2 + j]
    if per2:
        for rw in range(v.size // m2):
            base = rw * m2
            v[base] = v[base + n2]
            v[base + n2 + 1] = v[base + 1]


@njit(inline="always")
def _row_base(rw, n1, m1, m2, off):
    """Padded index of the first interior cell of interior row ``rw`` (``rw = i0 n1 + i1``)."""
    row = np.int64(rw)  # a parallel loop's index is unsigned: keep the index arithmetic signed
    if off == 2:
        return np.int64(1)
    if off == 1:
        return (row + 1) * m2 + 1
    i1 = row % n1
    i0 = row // n1
    return ((i0 + 1) * m1 + (i1 + 1)) * m2 + 1


@njit(inline="always")
def _apply_row(p, q, w0, w1, w2, base, n2, s0, s1, off):
    """``q = A p`` on one interior row (``n2`` cells from padded index ``base``); returns its share of ``p·q``."""
    v = p[base:base + n2]
    o = q[base:base + n2]
    xl = p[base - 1:base - 1 + n2]
    xu = p[base + 1:base + 1 + n2]
    al = w2[base:base + n2]
    au = w2[base + 1:base + 1 + n2]
    acc = 0.0
    if off == 2:
        for i in range(n2):
            vi = v[i]
            qi = al[i] * (vi - xl[i]) + au[i] * (vi - xu[i])
            o[i] = qi
            acc += vi * qi
    elif off == 1:
        yl = p[base - s1:base - s1 + n2]
        yu = p[base + s1:base + s1 + n2]
        bl = w1[base:base + n2]
        bu = w1[base + s1:base + s1 + n2]
        for i in range(n2):
            vi = v[i]
            qi = (al[i] * (vi - xl[i]) + au[i] * (vi - xu[i])) + (bl[i] * (vi - yl[i]) + bu[i] * (vi - yu[i]))
            o[i] = qi
            acc += vi * qi
    else:
        yl = p[base - s1:base - s1 + n2]
        yu = p[base + s1:base + s1 + n2]
        bl = w1[base:base + n2]
        bu = w1[base + s1:base + s1 + n2]
        zl = p[base - s0:base - s0 + n2]
        zu = p[base + s0:base + s0 + n2]
        cl = w0[base:base + n2]
        cu = w0[base + s0:base + s0 + n2]
        for i in range(n2):
            vi = v[i]
            qi = ((al[i] * (vi - xl[i]) + au[i] * (vi - xu[i])) + (bl[i] * (vi - yl[i]) + bu[i] * (vi - yu[i]))
                  + (cl[i] * (vi - zl[i]) + cu[i] * (vi - zu[i])))
            o[i] = qi
            acc += vi * qi
    return acc


@njit(inline="always")
def _apply(p, q, w0, w1, w2, n0, n1, n2, m1, m2, per0, per1, per2, off):
    """``q = A p`` on every interior row (after refreshing the periodic ghosts of ``p``); returns ``p·q``."""
    _refresh(p, m1, m2, n0, n1, n2, per0, per1, per2, off)
    pq = 0.0
    for rw in prange(n0 * n1):
        pq += _apply_row(p, q, w0, w1, w2, _row_base(rw, n1, m1, m2, off), n2, m1 * m2, m2, off)
    return pq


@njit
def _region_means(v, lab, counts, nseal, out):
    """``out[k]`` = mean of ``v`` over sealed region ``k`` (``out[nseal] = 0``: the entry label −1 reads)."""
    for k in range(nseal + 1):
        out[k] = 0.0
    for i in range(v.size):
        lk = lab[i]
        if lk >= 0:
            out[lk] += v[i]
    for k in range(nseal):
        out[k] /= counts[k]


@njit
def _region_sums(r, d, lab, nseal, zs, rs):
    """``zs[k] = Σ d r`` and ``rs[k] = Σ r`` over sealed region ``k`` (several regions)."""
    for k in range(nseal + 1):
        zs[k] = 0.0
        rs[k] = 0.0
    for i in range(r.size):
        lk = lab[i]
        if lk >= 0:
            ri = r[i]
            zs[lk] += ri * d[i]
            rs[lk] += ri


@njit(inline="always")
def _mcg(b, x0, x, has_x0, w0, w1, w2, d, fl, lab, rm, counts, nseal, work, zb, rb,
         its, res, n0, n1, n2, per0, per1, per2, off, jacobi, tol, maxiter, chunk):
    """``d``: ``M⁻¹`` as a vector (the inverse diagonal for Jacobi, else the fluid mask: the identity on the
    fluid cells); ``jacobi`` a constant of each entry point (the identity needs no ``d`` in the iteration);
    ``rm``: the indicator of the sealed cells (used when ``nseal ≤ 1``)."""
    xv, r, p, q = work
    B = b.shape[0]
    m2 = n2 + 2
    m1 = n1 + 2 if off <= 1 else 1
    P = xv.size
    nch = (P + chunk - 1) // chunk
    tol2 = tol * tol
    for s in range(B):
        bs = b[s]
        xs = x[s]
        # c = −Π b into r; Π x0 into xv
        for rw in range(n0 * n1):
            base = _row_base(rw, n1, m1, m2, off)
            src = rw * n2
            for i in range(n2):
                k = base + i
                r[k] = -bs[src + i] * fl[k]
                xv[k] = x0[s, src + i] * fl[k] if has_x0 else 0.0
        if nseal > 0:
            _region_means(r, lab, counts, nseal, zb)
            for k in range(P):
                r[k] -= zb[lab[k]]
            if has_x0:
                _region_means(xv, lab, counts, nseal, zb)
                for k in range(P):
                    xv[k] -= zb[lab[k]]
        cc = 0.0
        for k in range(P):
            cc += r[k] * r[k]
        if cc == 0.0:  # zero right-hand side (after the projection): the solution is 0
            for i in range(xs.size):
                xs[i] = 0.0
            its[s] = 0
            res[s] = 0.0
            continue
        if has_x0:  # r = c − A x0 (q's ghost entries are 0 and stay 0)
            _apply(xv, q, w0, w1, w2, n0, n1, n2, m1, m2, per0, per1, per2, off)
            for k in range(P):
                r[k] -= q[k]
        # p = z = Π M⁻¹ r;  rz = r·z, rr = r·r
        rr = 0.0
        rz = 0.0
        for k in range(P):
            rk = r[k]
            zk = rk * d[k]
            p[k] = zk
            rr += rk * rk
            rz += rk * zk
        if nseal > 0:
            _region_means(p, lab, counts, nseal, zb)
            for k in range(P):
                zk = zb[lab[k]]
                rz -= zk * r[k]
                p[k] -= zk
        it = 0
        done = rr <= tol2 * cc
        while not done and it < maxiter:
            pq = _apply(p, q, w0, w1, w2, n0, n1, n2, m1, m2, per0, per1, per2, off)
            if not pq > 0.0:  # breakdown (p = 0 or non-finite values): stop, the residual tells
                break
            alpha = rz / pq
            rr = 0.0
            rzn = 0.0
            sz = 0.0
            sr = 0.0
            for w in prange(nch):
                lo = w * chunk
                hi = min(lo + chunk, P)
                xc = xv[lo:hi]
                pc = p[lo:hi]
                qc = q[lo:hi]
                rc = r[lo:hi]
                mc = rm[lo:hi]
                if jacobi:
                    dc = d[lo:hi]
                    for i in range(hi - lo):
                        xc[i] += alpha * pc[i]
                        ri = rc[i] - alpha * qc[i]
                        rc[i] = ri
                        zi = ri * dc[i]
                        rr += ri * ri
                        rzn += ri * zi
                        sz += zi * mc[i]
                        sr += ri * mc[i]
                else:  # z = r (r is 0 outside the fluid)
                    for i in range(hi - lo):
                        xc[i] += alpha * pc[i]
                        ri = rc[i] - alpha * qc[i]
                        rc[i] = ri
                        rr += ri * ri
                        sr += ri * mc[i]
            it += 1
            if rr <= tol2 * cc:
                done = True
                break
            if not jacobi:
                rzn = rr
                sz = sr
            # r·Π z = r·z − Σ_k z̄_k Σ_{i∈k} r_i  (z̄_k: region k's mean of z = M⁻¹ r)
            if nseal == 1:
                zb[0] = sz / counts[0]
                rzn -= zb[0] * sr
            elif nseal > 1:
                _region_sums(r, d, lab, nseal, zb, rb)
                for k in range(nseal):
                    zb[k] /= counts[k]
                    rzn -= zb[k] * rb[k]
            beta = rzn / rz
            rz = rzn
            # p = Π M⁻¹ r + β p
            zbar = zb[0] if nseal == 1 else 0.0
            for w in prange(nch):
                lo = w * chunk
                hi = min(lo + chunk, P)
                pc = p[lo:hi]
                rc = r[lo:hi]
                dc = d[lo:hi]
                if nseal > 1:
                    lc = lab[lo:hi]
                    for i in range(hi - lo):
                        pc[i] = ((rc[i] * dc[i] if jacobi else rc[i]) - zb[lc[i]]) + beta * pc[i]
                else:
                    mc = rm[lo:hi]
                    for i in range(hi - lo):
                        pc[i] = ((rc[i] * dc[i] if jacobi else rc[i]) - zbar * mc[i]) + beta * pc[i]
        # x = Π x, unpadded (0 in solid cells)
        if nseal > 0:
            _region_means(xv, lab, counts, nseal, zb)
        for rw in range(n0 * n1):
            base = _row_base(rw, n1, m1, m2, off)
            dst = rw * n2
            for i in range(n2):
                k = base + i
                xs[dst + i] = (xv[k] - (zb[lab[k]] if nseal > 0 else 0.0)) * fl[k]
        its[s] = it
        res[s] = math.sqrt(rr / cc)


# One entry point per dimension and preconditioner: the padding sizes, ``off`` and ``jacobi`` are constants
# there (as in ``poisson.py``), which removes the untaken branches from the loops. Each compiles on first use.
def _entry(ndim, jacobi):
    if ndim == 1:
        def entry(b, x0, x, has_x0, w0, w1, w2, d, fl, lab, rm, counts, nseal, xv, r, p, q, zb, rb,
                  its, res, n0, n1, n2, per0, per1, per2, tol, maxiter, chunk):
            _mcg(b, x0, x, has_x0, w0, w1, w2, d, fl, lab, rm, counts, nseal, (xv, r, p, q), zb, rb,
                 its, res, 1, 1, n2, False, False, per2, 2, jacobi, tol, maxiter, chunk)
    elif ndim == 2:
        def entry(b, x0, x, has_x0, w0, w1, w2, d, fl, lab, rm, counts, nseal, xv, r, p, q, zb, rb,
                  its, res, n0, n1, n2, per0, per1, per2, tol, maxiter, chunk):
            _mcg(b, x0, x, has_x0, w0, w1, w2, d, fl, lab, rm, counts, nseal, (xv, r, p, q), zb, rb,
                 its, res, 1, n1, n2, False, per1, per2, 1, jacobi, tol, maxiter, chunk)
    else:
        def entry(b, x0, x, has_x0, w0, w1, w2, d, fl, lab, rm, counts, nseal, xv, r, p, q, zb, rb,
                  its, res, n0, n1, n2, per0, per1, per2, tol, maxiter, chunk):
            _mcg(b, x0, x, has_x0, w0, w1, w2, d, fl, lab, rm, counts, nseal, (xv, r, p, q), zb, rb,
                 its, res, n0, n1, n2, per0, per1, per2, 0, jacobi, tol, maxiter, chunk)
    return entry


_DRIVERS = {}


def _driver(ndim, jacobi, parallel):
    """The compiled driver for ``ndim`` dimensions and preconditioner (compiled on first use). fastmath
    "reassoc" lets the dot products be summed in any order (vectorised); "contract" fuses multiply-adds."""
    key = (ndim, jacobi, parallel)
    fn = _DRIVERS.get(key)
    if fn is None:
        fn = _DRIVERS[key] = njit(parallel=parallel, fastmath={"reassoc", "contract"})(_entry(ndim, jacobi))
    return fn


class PaddedObstacles:
    """The padded per-cell arrays of one grid in one dtype (built once per grid and dtype, kept by
    :meth:`gpudp.ops.obstacles.ObstacleFacts.device`)."""

    __slots__ = ("w", "dinv", "fl", "lab", "rm", "counts", "nseal", "size", "periodic")


def padded_obstacles(backend, dtype, facts):
    """Build the :class:`PaddedObstacles` of ``facts`` (``gpudp.ops.obstacles.ObstacleFacts``)."""
    geom = facts.geom
    shape3, ndim, bc = geom.shape3, geom.ndim, geom.bc
    real = [a >= 3 - ndim for a in range(3)]
    m = tuple(n + 2 if real[a] else 1 for a, n in enumerate(shape3))
    inner = tuple(slice(1, n + 1) if real[a] else slice(None) for a, n in enumerate(shape3))
    c2 = tuple(1.0 / (h * h) for h in geom.spacing)
    out = PaddedObstacles()
    ws, diag = [], np.zeros(m)
    for a in range(3):
        if not real[a]:
            ws.append(np.zeros(0, dtype))
            continue
        k = a - (3 - ndim)
        n = shape3[a]
        op = facts.open_faces[k].reshape(tuple(shape3[b] if b != a else -1 for b in range(3)))
        if bc[a] == 0:  # the upper face of the last cell is face 0
            op = np.concatenate([op, _take(op, a, slice(0, 1))], axis=a)
        w = np.zeros(m)
        sl = list(inner)
        sl[a] = slice(1, n + 2)
        w[tuple(sl)] = op * c2[a]
        ws.append(np.ascontiguousarray(w.reshape(-1), dtype=dtype))
        if not (bc[a] == 0 and n == 1):  # a lone periodic cell's faces join it to itself: no diagonal share
            lo = list(inner)
            up = list(inner)
            up[a] = slice(2, n + 2)
            diag[inner] += w[tuple(lo)] + w[tuple(up)]
    fluid = np.zeros(m, bool)
    fluid[inner] = facts.fluid.reshape(shape3)
    d = np.where(diag > 0, diag, 1.0)
    out.w = tuple(ws)
    out.dinv = np.ascontiguousarray(np.where(fluid, 1.0 / d, 0.0).reshape(-1), dtype=dtype)
    out.fl = np.ascontiguousarray(fluid.reshape(-1), dtype=dtype)
    lab = np.full(m, -1, np.int32)
    lab[inner] = facts.sealed.reshape(shape3)
    out.lab = lab.reshape(-1)
    out.rm = np.ascontiguousarray((lab >= 0).reshape(-1), dtype=dtype)
    out.counts = facts.sealed_sizes.astype(np.float64)
    out.nseal = facts.n_sealed
    out.size = int(np.prod(m))
    out.periodic = tuple(bool(real[a] and bc[a] == 0) for a in range(3))
    return out


def _take(a, axis, sl):
    index = [slice(None)] * a.ndim
    index[axis] = sl
    return a[tuple(index)]


def cg_solve_masked(backend, b, x0, facts, tol, maxiter, preconditioner):
    """Masked PCG (module docstring) for the ``B`` systems ``b`` (``(B, N)``); ``x0`` ``(B, N)`` or None.
    Returns ``(x, iterations, residual)`` as :meth:`gpudp.backends.base.Backend.cg_solve`."""
    B, N = b.shape
    dtype = b.dtype
    geom = facts.geom
    po = facts.device(backend, dtype, padded_obstacles)
    x = np.empty_like(b)
    x0a = np.empty((0, 0), dtype) if x0 is None else np.ascontiguousarray(x0, dtype=dtype)
    P = po.size
    xv = np.zeros(P, dtype)
    r = np.zeros(P, dtype)
    p = np.zeros(P, dtype)
    q = np.zeros(P, dtype)
    zb = np.zeros(po.nseal + 1, np.float64)
    rb = np.zeros(po.nseal + 1, np.float64)
    its = np.zeros(B, np.int64)
    res = np.zeros(B, np.float64)
    jacobi = preconditioner == "jacobi"
    driver = _driver(geom.ndim, jacobi, N >= difference.PARALLEL_MIN_CELLS)
    d = po.dinv if jacobi else po.fl
    driver(b, x0a, x, x0 is not None, *po.w, d, po.fl, po.lab, po.rm, po.counts, po.nseal,
           xv, r, p, q, zb, rb, its, res, *geom.shape3, *po.periodic,
           float(tol), int(maxiter), difference.CHUNK)
    return x, int(its.max()), float(res.max())
