"""Upwind advection, forward and adjoint, as Numba CPU kernels (gather form, no atomics).

One step along padded axis ``a`` with ``c_a = Δt/Δx_a``, ``m = min(u_a, 0)``, ``p = max(u_a, 0)``::

    d'_i = d_i − Σ_a c_a [ m_i (d_{i+e_a} − d_i) + p_i (d_i − d_{i−e_a}) ]

Adjoint w.r.t. ``d`` (gather form: every cell collects what its neighbours sent)::

    gd_j = g_j (1 + Σ_a c_a (m_j − p_j))
         + Σ_a [ − c_a m_L g_L   for the cell L = j − e_a whose upper neighbour is j
                 + c_a p_U g_U   for the cell U = j + e_a whose lower neighbour is j
                 + ghost terms: neumann repeats d_j outside, so − c_a m_j g_j at the upper end and
                   + c_a p_j g_j at the lower end; dirichlet ghosts are constants (no term) ]

Adjoint w.r.t. ``u_a`` (the ``u ≥ 0`` branch at ``u = 0`` exactly), summed over the fields of one velocity::

    gu_{a,i} = − c_a Σ_f g_{f,i} · (d_{f,i+e_a} − d_{f,i}  if u_{a,i} < 0  else  d_{f,i} − d_{f,i−e_a})

The kernels work on rows along the last padded axis; one call runs all steps.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Rows (cells / last-axis length) below which the serial driver is used: the parallel region's start-up
# cost dominates small problems such as the 128-cell demo.
_PARALLEL_MIN_CELLS = 1 << 15


@njit(inline="always")
def _upper(d, base, i, n, stride, bc, center):
    """Value of the upper neighbour of cell ``i`` (position along the axis) with ghost rules."""
    if i + 1 < n:
        return d[base + stride]
    if bc == 0:
        return d[base - (n - 1) * stride]
    if bc == 1:
        return 0.0
    return center


@njit(inline="always")
def _lower(d, base, i, n, stride, bc, center):
    if i > 0:
        return d[base - stride]
    if bc == 0:
        return d[base + (n - 1) * stride]
    if bc == 1:
        return 0.0
    return center


@njit(inline="always")
def _forward_row(src, dst, u, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2):
    N = n0 * n1 * n2
    i1 = r % n1
    i0 = (r // n1) % n0
    bf = r // (n0 * n1)
    b = bf // F
    fbase = bf * N
    ubase = b * ndim * N
    off = 3 - ndim
    row = (i0 * n1 + i1) * n2
    for i2 in range(n2):
        cell = row + i2
        base = fbase + cell
        v = src[base]
        acc = 0.0
        if off <= 0:
            w = u[ubase + (0 - off) * N + cell]
            up = _upper(src, base, i0, n0, n1 * n2, b0, v)
            lo = _lower(src, base, i0, n0, n1 * n2, b0, v)
            acc += c0 * (min(w, 0.0) * (up - v) + max(w, 0.0) * (v - lo))
        if off <= 1:
            w = u[ubase + (1 - off) * N + cell]
            up = _upper(src, base, i1, n1, n2, b1, v)
            lo = _lower(src, base, i1, n1, n2, b1, v)
            acc += c1 * (min(w, 0.0) * (up - v) + max(w, 0.0) * (v - lo))
        w = u[ubase + (2 - off) * N + cell]
        up = _upper(src, base, i2, n2, 1, b2, v)
        lo = _lower(src, base, i2, n2, 1, b2, v)
        acc += c2 * (min(w, 0.0) * (up - v) + max(w, 0.0) * (v - lo))
        dst[base] = v - acc


@njit(inline="always")
def _adjoint_d_axis(g, u, gbase, ubase_k, cell, i, n, stride, bc, c):
    """Contribution of one axis to gd at ``cell`` (excluding the diagonal 1)."""
    w = u[ubase_k + cell]
    gv = g[gbase + cell]
    s = c * (min(w, 0.0) - max(w, 0.0)) * gv
    # lower neighbour cell L: its upper neighbour is this cell
    if i > 0:
        s -= c * min(u[ubase_k + cell - stride], 0.0) * g[gbase + cell - stride]
    elif bc == 0:
        L = cell + (n - 1) * stride
        s -= c * min(u[ubase_k + L], 0.0) * g[gbase + L]
    elif bc == 2:
        s += c * max(w, 0.0) * gv  # lower ghost repeats this cell
    # upper neighbour cell U: its lower neighbour is this cell
    if i + 1 < n:
        s += c * max(u[ubase_k + cell + stride], 0.0) * g[gbase + cell + stride]
    elif bc == 0:
        U = cell - (n - 1) * stride
        s += c * max(u[ubase_k + U], 0.0) * g[gbase + U]
    elif bc == 2:
        s -= c * min(w, 0.0) * gv  # upper ghost repeats this cell
    return s


@njit(inline="always")
def _adjoint_row(g, gout, d, u, gu, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_g, need_u):
    """One row of one step's adjoint for velocity field ``b``: all ``F`` fields of the row.

    ``r`` indexes rows of one velocity field: r = (b * n0 + i0) * n1 + i1."""
    N = n0 * n1 * n2
    i1 = r % n1
    i0 = (r // n1) % n0
    b = r // (n0 * n1)
    ubase = b * ndim * N
    off = 3 - ndim
    row = (i0 * n1 + i1) * n2
    for i2 in range(n2):
        cell = row + i2
        gu0 = 0.0
        gu1 = 0.0
        gu2 = 0.0
        for f in range(F):
            fbase = (b * F + f) * N
            base = fbase + cell
            if need_g:
                s = g[base]
                if off <= 0:
                    s += _adjoint_d_axis(g, u, fbase, ubase + (0 - off) * N, cell, i0, n0, n1 * n2, b0, c0)
                if off <= 1:
                    s += _adjoint_d_axis(g, u, fbase, ubase + (1 - off) * N, cell, i1, n1, n2, b1, c1)
                s += _adjoint_d_axis(g, u, fbase, ubase + (2 - off) * N, cell, i2, n2, 1, b2, c2)
                gout[base] = s
            if need_u:
                v = d[base]
                gv = g[base]
                if off <= 0:
                    w = u[ubase + (0 - off) * N + cell]
                    if w < 0.0:
                        gu0 -= c0 * gv * (_upper(d, base, i0, n0, n1 * n2, b0, v) - v)
                    else:
                        gu0 -= c0 * gv * (v - _lower(d, base, i0, n0, n1 * n2, b0, v))
                if off <= 1:
                    w = u[ubase + (1 - off) * N + cell]
                    if w < 0.0:
                        gu1 -= c1 * gv * (_upper(d, base, i1, n1, n2, b1, v) - v)
                    else:
                        gu1 -= c1 * gv * (v - _lower(d, base, i1, n1, n2, b1, v))
                w = u[ubase + (2 - off) * N + cell]
                if w < 0.0:
                    gu2 -= c2 * gv * (_upper(d, base, i2, n2, 1, b2, v) - v)
                else:
                    gu2 -= c2 * gv * (v - _lower(d, base, i2, n2, 1, b2, v))
        if need_u:
            if off <= 0:
                gu[ubase + (0 - off) * N + cell] += gu0
            if off <= 1:
                gu[ubase + (1 - off) * N + cell] += gu1
            gu[ubase + (2 - off) * N + cell] += gu2


def _forward_steps(d, u, out, states, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, save):
    rows = Bu * F * n0 * n1
    size = d.size
    buf = np.empty_like(d) if steps > 1 else out
    src = d
    for t in range(steps):
        if save:
            st = states[t * size:(t + 1) * size]
            for j in prange(size):
                st[j] = src[j]
        # alternate between out and buf so that the last step lands in out
        dst = out if (steps - 1 - t) % 2 == 0 else buf
        for r in prange(rows):
            _forward_row(src, dst, u, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2)
        src = dst


def _adjoint_steps(g, states, u, gd, gu, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_d, need_u):
    rows = Bu * n0 * n1
    size = g.size
    buf = np.empty_like(g) if steps > 1 else gd
    cur = g
    for k in range(steps):
        t = steps - 1 - k
        need_g = need_d or t > 0
        # alternate between gd and buf so that the gradient of d^0 lands in gd
        dst = gd if t % 2 == 0 else buf
        dstate = states[t * size:(t + 1) * size] if need_u else g
        for r in prange(rows):
            _adjoint_row(cur, dst, dstate, u, gu, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2,
                         need_g, need_u)
        cur = dst


# Parallel drivers for large grids, serial ones (prange runs as range) for small ones.
_forward_par = njit(parallel=True)(_forward_steps)
_adjoint_par = njit(parallel=True)(_adjoint_steps)
_forward_ser = njit(_forward_steps)
_adjoint_ser = njit(_adjoint_steps)


def advect_forward(d, u, coef, bc, shape3, ndim, steps, save_states):
    Bu, F, N = d.shape
    out = np.empty_like(d)
    states = np.empty((steps,) + d.shape, d.dtype) if save_states else np.empty(0, d.dtype)
    fwd = _forward_par if d.size >= _PARALLEL_MIN_CELLS else _forward_ser
    fwd(d.reshape(-1), u.reshape(-1), out.reshape(-1), states.reshape(-1), steps, Bu, F, *shape3, ndim,
        *coef, *bc, save_states)
    return out, (states if save_states else None)


def advect_adjoint(g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u):
    Bu, F, N = g.shape
    gd = np.empty_like(g)
    gu = np.zeros_like(u) if need_u else np.empty(0, g.dtype)
    st = states.reshape(-1) if need_u else np.empty(0, g.dtype)
    adj = _adjoint_par if g.size >= _PARALLEL_MIN_CELLS else _adjoint_ser
    adj(g.reshape(-1), st, u.reshape(-1), gd.reshape(-1), gu.reshape(-1), steps, Bu, F, *shape3, ndim,
        *coef, *bc, need_d, need_u)
    return (gd if need_d else None), (gu if need_u else None)
