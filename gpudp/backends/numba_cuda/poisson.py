"""Batched, matrix-free preconditioned conjugate gradients on ``A = −laplace`` as ``numba.cuda.jit`` kernels.

``B`` independent systems ``laplace(x_b) = b_b`` (i.e. ``A x_b = −b_b``) iterate together. Every per-system
scalar (``r·z``, ``α``, ``β``, ``‖r‖²``, the active flag, the iteration count) lives in device arrays: the host
launches a fixed sequence of kernels per iteration and looks at the flags only every ``check_every``
iterations. One iteration is four launches:

``cg_stencil_dot``  ``p ← (z − z̄) + β p`` computed on the fly for the cell and its neighbours (ping-pong
                    ``p`` buffers), ``Ap = −laplace(p)`` and per-block partial sums of ``p·Ap``;
``cg_reduce``       one block per system sums the partials and sets ``α = r·z / p·Ap``;
``cg_update_dot``   ``x += α p``, ``r −= α Ap``, ``z = M⁻¹ r`` and the partial sums of ``r·z``, ``r·r``,
                    ``Σz``, ``Σr``;
``cg_reduce``       sets ``β``, ``r·r``, and deactivates a system once ``‖r‖ ≤ tol ‖b‖``.

A deactivated system's blocks return at once, so converged systems cost nothing while others go on.
Reductions accumulate in float64; vectors keep the arrays' dtype, and the scalars that enter vector updates
are also stored in that dtype so that every thread computes bit-identical ``p`` values for a cell.

Singular operators (every axis periodic or neumann): the mean of ``b`` is removed, ``x0`` is made zero-mean,
``z`` is projected to zero mean inside the recurrences (``z̄ = Σz/N``; ``r·(z − z̄) = Σ rz − z̄ Σ r``) so the
search directions and iterates stay zero-mean, and the final ``x`` has its (rounding-level) mean removed.

When the recurrences report convergence, the true residual ``b − A x`` is recomputed (the ``cg_init``
kernel); a system whose true residual still misses the tolerance is restarted from its current ``x`` while
iterations remain. The reported residual is always the true one.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from ._common import TPB, blocks_for, cell_stride, lower, reduce_blocks_for, sel3, upper

# per-system float64 scalars (sc[b, ·])
RZ, PAP, RR, BB, ACTIVE, ITERS, THR, NSC = 0, 1, 2, 3, 4, 5, 6, 7
# per-system scalars in the vectors' dtype (scd[b, ·])
D_ALPHA, D_BETA, D_ZBAR, D_MEANB, D_MEANX, NSCD = 0, 1, 2, 3, 4, 5
# partial sums per block
NPS = 5
# cg_reduce modes
MODE_MEANS, MODE_INIT, MODE_ALPHA, MODE_BETA, MODE_MEANX = 0, 1, 2, 3, 4


@cuda.jit(device=True)
def _block_sums(part, bsys, v0, v1, v2, v3, v4, ns):
    """Sum ``v0 … v{ns-1}`` over the block's threads into ``part[bsys, blockIdx.x, ·]``."""
    sh = cuda.shared.array((NPS, TPB), dtype=float64)
    tid = cuda.threadIdx.x
    sh[0, tid] = v0
    sh[1, tid] = v1
    sh[2, tid] = v2
    sh[3, tid] = v3
    sh[4, tid] = v4
    cuda.syncthreads()
    h = TPB // 2
    while h > 0:
        if tid < h:
            for k in range(ns):
                sh[k, tid] += sh[k, tid + h]
        cuda.syncthreads()
        h //= 2
    if tid < ns:
        part[bsys, cuda.blockIdx.x, tid] = sh[tid, 0]
    cuda.syncthreads()


@cuda.jit(device=True)
def _diag(i0, i1, i2, n0, n1, n2, ndim, q0, q1, q2, b0, b1, b2, zero):
    """Diagonal of ``A = −laplace`` at a cell: ``Σ_a q_a (2 − #sides whose ghost repeats the cell)``."""
    d = zero
    for a in range(3 - ndim, 3):
        n = sel3(a, n0, n1, n2)
        i = sel3(a, i0, i1, i2)
        bc = sel3(a, b0, b1, b2)
        q = sel3(a, q0, q1, q2)
        rep_self = bc == 2 or (bc == 0 and n == 1)
        if not (i == 0 and rep_self):
            d += q
        if not (i == n - 1 and rep_self):
            d += q
    return d


@cuda.jit(device=True)
def _pval(z, p, j, zbar, beta):
    return (z[j] - zbar) + beta * p[j]


@cuda.jit
def _sums_kernel(a1, a2, two, part, B, N):
    """Partial sums of ``a1`` (and ``a2`` when ``two``) per block and system."""
    for bsys in range(cuda.blockIdx.y, B, cuda.gridDim.y):
        s1 = 0.0
        s2 = 0.0
        for cell in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, N, cuda.gridDim.x * TPB):
            s1 += a1[bsys * N + cell]
            if two:
                s2 += a2[bsys * N + cell]
        _block_sums(part, bsys, s1, s2, 0.0, 0.0, 0.0, 2)


@cuda.jit
def _init_kernel(b, xin, xout, write_x, r, z, precond, part, sc, scd, B, n0, n1, n2, ndim, q0, q1, q2,
                 b0, b1, b2, zero):
    """``r = −(b − b̄) + laplace(x)`` (the residual of ``A x = −b``), ``z = M⁻¹ r``; optionally
    ``xout = xin − x̄``; partial sums of ``‖b − b̄‖²``, ``r·z``, ``r·r``, ``Σz``, ``Σr``."""
    N = n0 * n1 * n2
    for bsys in range(cuda.blockIdx.y, B, cuda.gridDim.y):
        meanb = scd[bsys, D_MEANB]
        meanx = scd[bsys, D_MEANX]
        sbb = 0.0
        srz = 0.0
        srr = 0.0
        sz = 0.0
        sr = 0.0
        for cell in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, N, cuda.gridDim.x * TPB):
            idx = bsys * N + cell
            i2 = cell % n2
            i1 = (cell // n2) % n1
            i0 = cell // (n1 * n2)
            v = xin[idx]
            if write_x:
                xout[idx] = v - meanx
            lap = zero
            for a in range(3 - ndim, 3):
                n = sel3(a, n0, n1, n2)
                i = sel3(a, i0, i1, i2)
                bc = sel3(a, b0, b1, b2)
                s = cell_stride(a, n1, n2)
                up = upper(xin, idx, i, n, s, bc, v, zero)
                lo = lower(xin, idx, i, n, s, bc, v, zero)
                lap += sel3(a, q0, q1, q2) * ((up - v) + (lo - v))
            bh = b[idx] - meanb
            rv = lap - bh
            r[idx] = rv
            zv = rv
            if precond:
                dg = _diag(i0, i1, i2, n0, n1, n2, ndim, q0, q1, q2, b0, b1, b2, zero)
                if dg > zero:
                    zv = rv / dg
                z[idx] = zv
            sbb += float64(bh) * float64(bh)
            srz += float64(rv) * float64(zv)
            srr += float64(rv) * float64(rv)
            sz += float64(zv)
            sr += float64(rv)
        _block_sums(part, bsys, sbb, srz, srr, sz, sr, 5)


@cuda.jit
def _stencil_dot_kernel(z, p, pn, ap, part, sc, scd, B, n0, n1, n2, ndim, q0, q1, q2, b0, b1, b2, zero):
    """``pn = (z − z̄) + β p``; ``ap = −laplace(pn)``; partial sums of ``pn·ap``."""
    N = n0 * n1 * n2
    for bsys in range(cuda.blockIdx.y, B, cuda.gridDim.y):
        if sc[bsys, ACTIVE] == 0.0:
            continue  # uniform over the block: it belongs to one system
        beta = scd[bsys, D_BETA]
        zbar = scd[bsys, D_ZBAR]
        acc = 0.0
        for cell in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, N, cuda.gridDim.x * TPB):
            idx = bsys * N + cell
            i2 = cell % n2
            i1 = (cell // n2) % n1
            i0 = cell // (n1 * n2)
            v = _pval(z, p, idx, zbar, beta)
            pn[idx] = v
            lap = zero
            for a in range(3 - ndim, 3):
                n = sel3(a, n0, n1, n2)
                i = sel3(a, i0, i1, i2)
                bc = sel3(a, b0, b1, b2)
                s = cell_stride(a, n1, n2)
                if i + 1 < n:
                    up = _pval(z, p, idx + s, zbar, beta)
                elif bc == 0:
                    up = _pval(z, p, idx - (n - 1) * s, zbar, beta)
                elif bc == 1:
                    up = zero
                else:
                    up = v
                if i > 0:
                    lo = _pval(z, p, idx - s, zbar, beta)
                elif bc == 0:
                    lo = _pval(z, p, idx + (n - 1) * s, zbar, beta)
                elif bc == 1:
                    lo = zero
                else:
                    lo = v
                lap += sel3(a, q0, q1, q2) * ((up - v) + (lo - v))
            av = -lap
            ap[idx] = av
            acc += float64(v) * float64(av)
        _block_sums(part, bsys, acc, 0.0, 0.0, 0.0, 0.0, 1)


@cuda.jit
def _update_dot_kernel(x, r, z, pn, ap, precond, part, sc, scd, B, n0, n1, n2, ndim, q0, q1, q2,
                       b0, b1, b2, zero):
    """``x += α pn``, ``r −= α ap``, ``z = M⁻¹ r``; partial sums of ``r·z``, ``r·r``, ``Σz``, ``Σr``."""
    N = n0 * n1 * n2
    for bsys in range(cuda.blockIdx.y, B, cuda.gridDim.y):
        if sc[bsys, ACTIVE] == 0.0:
            continue
        alpha = scd[bsys, D_ALPHA]
        srz = 0.0
        srr = 0.0
        sz = 0.0
        sr = 0.0
        for cell in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, N, cuda.gridDim.x * TPB):
            idx = bsys * N + cell
            x[idx] += alpha * pn[idx]
            rv = r[idx] - alpha * ap[idx]
            r[idx] = rv
            zv = rv
            if precond:
                i2 = cell % n2
                i1 = (cell // n2) % n1
                i0 = cell // (n1 * n2)
                dg = _diag(i0, i1, i2, n0, n1, n2, ndim, q0, q1, q2, b0, b1, b2, zero)
                if dg > zero:
                    zv = rv / dg
                z[idx] = zv
            srz += float64(rv) * float64(zv)
            srr += float64(rv) * float64(rv)
            sz += float64(zv)
            sr += float64(rv)
        _block_sums(part, bsys, srz, srr, sz, sr, 0.0, 4)


@cuda.jit
def _reduce_kernel(part, nbx, sc, scd, mode, singular, first, tol2, N):
    """One block per system: sum the ``nbx`` block partials, then thread 0 updates the system's scalars."""
    sh = cuda.shared.array((NPS, TPB), dtype=float64)
    tid = cuda.threadIdx.x
    B = sc.shape[0]
    for bsys in range(cuda.blockIdx.x, B, cuda.gridDim.x):
        for k in range(NPS):
            s = 0.0
            for j in range(tid, nbx, TPB):
                s += part[bsys, j, k]
            sh[k, tid] = s
        cuda.syncthreads()
        h = TPB // 2
        while h > 0:
            if tid < h:
                for k in range(NPS):
                    sh[k, tid] += sh[k, tid + h]
            cuda.syncthreads()
            h //= 2
        if tid == 0:
            t0 = sh[0, 0]
            t1 = sh[1, 0]
            t2 = sh[2, 0]
            t3 = sh[3, 0]
            t4 = sh[4, 0]
            if mode == MODE_MEANS:
                scd[bsys, D_MEANB] = t0 / N
                scd[bsys, D_MEANX] = t1 / N
            elif mode == MODE_MEANX:
                scd[bsys, D_MEANX] = t0 / N
            elif mode == MODE_INIT:
                sc[bsys, BB] = t0
                sc[bsys, THR] = tol2 * t0
                rz = t1 - t3 * t4 / N if singular else t1
                sc[bsys, RZ] = rz
                sc[bsys, RR] = t2
                scd[bsys, D_ZBAR] = t3 / N if singular else 0.0
                scd[bsys, D_BETA] = 0.0
                if first:
                    sc[bsys, ITERS] = 0.0
                sc[bsys, ACTIVE] = 1.0 if (t0 > 0.0 and t2 > tol2 * t0 and rz > 0.0) else 0.0
            elif mode == MODE_ALPHA:
                if sc[bsys, ACTIVE] != 0.0:
                    sc[bsys, PAP] = t0
                    if t0 > 0.0 and not math.isinf(t0):
                        scd[bsys, D_ALPHA] = sc[bsys, RZ] / t0
                    else:  # breakdown: p = 0 (nothing left to reduce) or no longer finite
                        scd[bsys, D_ALPHA] = 0.0
                        sc[bsys, ACTIVE] = 0.0
            elif mode == MODE_BETA:
                if sc[bsys, ACTIVE] != 0.0:
                    sc[bsys, ITERS] += 1.0
                    rz = t0 - t2 * t3 / N if singular else t0
                    sc[bsys, RR] = t1
                    scd[bsys, D_ZBAR] = t2 / N if singular else 0.0
                    if not (t1 > sc[bsys, THR]) or not (rz > 0.0):  # converged (or NaN: stop, reported)
                        sc[bsys, ACTIVE] = 0.0
                    else:
                        scd[bsys, D_BETA] = rz / sc[bsys, RZ]
                        sc[bsys, RZ] = rz
        cuda.syncthreads()


@cuda.jit
def _finish_kernel(x, sc, scd, singular, B, N):
    """``x −= x̄`` (singular operators); ``x = 0`` for a zero right-hand side."""
    for idx in range(cuda.grid(1), B * N, cuda.gridsize(1)):
        bsys = idx // N
        if sc[bsys, BB] == 0.0:
            x[idx] = 0.0
        elif singular:
            x[idx] -= scd[bsys, D_MEANX]


def cg_solve(be, b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular, preconditioner, check_every):
    B, N = b.shape
    dtype = np.dtype(b.dtype)
    t = dtype.type
    if maxiter is None:
        maxiter = max(10 * N, 100)
    maxiter = int(maxiter)
    check_every = max(1, int(check_every or 1))
    precond = preconditioner == "jacobi"
    singular = bool(singular)
    geo = (B, *(int(n) for n in shape3), int(ndim), *(t(h * h) for h in inv_dx), *(int(c) for c in bc), t(0))

    nbx = reduce_blocks_for(N)
    gy = min(B, 65535)
    grid2 = (nbx, gy)
    gred = min(B, 65535)
    tol2 = float(tol) * float(tol)

    x = be.zeros((B, N), dtype) if x0 is None else be.empty((B, N), dtype)
    r = be.empty((B, N), dtype)
    z = be.empty((B, N), dtype) if precond else r
    p_a = be.zeros((B, N), dtype)  # p buffers start finite: β = 0 multiplies them in the first iteration
    p_b = be.zeros((B, N), dtype)
    ap = be.empty((B, N), dtype)
    part = be.empty((B, nbx, NPS), np.float64)
    sc = be.zeros((B, NSC), np.float64)
    scd = be.zeros((B, NSCD), dtype)
    bd, xd, rd, zd, ad = be.dev(b), be.dev(x), be.dev(r), be.dev(z), be.dev(ap)
    pa, pb = be.dev(p_a), be.dev(p_b)
    partd = be.dev(part).reshape(B, nbx, NPS)
    scv = be.dev(sc).reshape(B, NSC)
    scdv = be.dev(scd).reshape(B, NSCD)
    x0d = be.dev(x0) if x0 is not None else None

    def reduce(mode, first=False):
        be.launch("cg_reduce", _reduce_kernel, gred, (partd, nbx, scv, scdv, mode, singular, first, tol2, N))

    if singular:  # means of b (and x0) per system
        be.launch("cg_sums", _sums_kernel, grid2,
                  (bd, x0d if x0d is not None else bd, x0d is not None, partd, B, N))
        reduce(MODE_MEANS)  # without x0 the second column sums nothing: x̄ = 0

    it = 0
    first = True
    while True:
        if first and x0d is not None:
            xin, write_x = x0d, True
        else:
            xin, write_x = xd, False
        be.launch("cg_init", _init_kernel, grid2, (bd, xin, xd, write_x, rd, zd, precond, partd, scv, scdv) + geo)
        reduce(MODE_INIT, first)
        first = False
        if it >= maxiter or not be.to_numpy(sc)[:, ACTIVE].any():
            break
        pold, pnew = pa, pb
        while it < maxiter:
            for _ in range(min(check_every, maxiter - it)):
                be.launch("cg_stencil_dot", _stencil_dot_kernel, grid2, (zd, pold, pnew, ad, partd, scv, scdv) + geo)
                reduce(MODE_ALPHA)
                be.launch("cg_update_dot", _update_dot_kernel, grid2,
                          (xd, rd, zd, pnew, ad, precond, partd, scv, scdv) + geo)
                reduce(MODE_BETA)
                pold, pnew = pnew, pold
                it += 1
            if not be.to_numpy(sc)[:, ACTIVE].any():
                break
        # recurrences report convergence (or iterations ran out): verify with the true residual above

    if singular:
        be.launch("cg_sums", _sums_kernel, grid2, (xd, xd, False, partd, B, N))
        reduce(MODE_MEANX)
    be.launch("cg_finish", _finish_kernel, blocks_for(B * N), (xd, scv, scdv, singular, B, N))
    s = be.to_numpy(sc)
    bb = s[:, BB]
    rel = np.where(bb > 0, np.sqrt(np.maximum(s[:, RR], 0.0) / np.where(bb > 0, bb, 1.0)), 0.0)
    return x, int(s[:, ITERS].max()), float(rel.max())

