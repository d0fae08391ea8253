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

The kernels work on rows along the last padded axis (contiguous in memory); one call runs all steps, and
the steps of one call are parallel over rows. A row whose neighbour rows along the other axes are cells of
the array (interior rows, and every row of a periodic axis) takes the fast path: its interior cells run a
branch-free loop over row views that LLVM vectorises, and only its two end cells apply the ghost rules.
Rows at a dirichlet or neumann boundary of another axis take the per-cell path with the ghost rules.
float32 data is computed in float32 (as the CUDA kernels do), float64 in float64. The forward pass with
saved states writes each saved step straight into its slot of ``states`` (every step, or every ``save_every``-th
for checkpoints); the adjoint's first step overwrites the uninitialised velocity gradient, so no pass zeroes it,
and its overwriting loops never read it; given a velocity gradient to accumulate into (a checkpointed backward
pass, one call per segment), every step adds to it, as a single call's later steps do.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .difference import step_output

# Cells per step below which the serial driver is used: the parallel region's start-up cost dominates small
# problems such as the 128-cell demo.
_PARALLEL_MIN_CELLS = 1 << 15

# The zero of ``min(w, 0)`` / ``max(w, 0)``: a float32 constant, so that float32 kernels compute in float32
# (like the CUDA kernels, and twice the SIMD width) while float64 ones promote it and stay in float64. The
# wrappers pass the coefficients ``c_a`` in the arrays' dtype for the same reason.
_ZERO = np.float32(0.0)


@njit(inline="always")
def _upper(d, base, i, n, stride, bc, center):
    """Value of the upper neighbour of cell ``i`` (position along the axis) with ghost rules."""
    if i + 1 < n:
        return d[base + stride]
    if bc == 0:
        return d[base - (n - 1) * stride]
    if bc == 1:
        return _ZERO
    return center


@njit(inline="always")
def _lower(d, base, i, n, stride, bc, center):
    if i > 0:
        return d[base - stride]
    if bc == 0:
        return d[base + (n - 1) * stride]
    if bc == 1:
        return _ZERO
    return center


@njit(inline="always")
def _flux(c, w, up, v, lo):
    """``c (min(w, 0) (up − v) + max(w, 0) (v − lo))``: one axis' upwind term of the forward step."""
    return c * (min(w, _ZERO) * (up - v) + max(w, _ZERO) * (v - lo))


@njit(inline="always")
def _gu_term(c, gv, w, up, v, lo):
    """One field's contribution ``− c g (upwind difference)`` to the velocity gradient."""
    return -(c * gv * ((up - v) if w < _ZERO else (v - lo)))


@njit(inline="always")
def _neighbour_rows(i, n, stride, bc):
    """Offsets ``(upper, lower)`` of the rows next to row position ``i`` along a strided axis, and whether
    both are rows of the array (interior, or wrapped on a periodic axis) rather than ghost rows."""
    up = stride if i + 1 < n else -(n - 1) * stride
    lo = -stride if i > 0 else (n - 1) * stride
    return up, lo, bc == 0 or (0 < i and i + 1 < n)


@njit(inline="always")
def _row_position(r, n0, n1):
    """``(i0, i1, k)`` of row ``r = (k n0 + i0) n1 + i1`` (no integer divisions on 1-D grids)."""
    if n0 == 1 and n1 == 1:
        return 0, 0, r
    i1 = r % n1
    q = r // n1
    return q % n0, i1, q // n0


# -- forward ------------------------------------------------------------------------------------------------

@njit(inline="always")
def _forward_cell(src, dst, u, base, ucell, i0, i1, i2, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2):
    """One cell with the ghost rules; ``base``: its index in ``src``, ``ucell``: in component 0 of ``u``."""
    N = n0 * n1 * n2
    v = src[base]
    acc = _ZERO
    if ndim == 3:
        acc += _flux(c0, u[ucell], _upper(src, base, i0, n0, n1 * n2, b0, v), v,
                     _lower(src, base, i0, n0, n1 * n2, b0, v))
    if ndim >= 2:
        acc += _flux(c1, u[ucell + (ndim - 2) * N], _upper(src, base, i1, n1, n2, b1, v), v,
                     _lower(src, base, i1, n1, n2, b1, v))
    acc += _flux(c2, u[ucell + (ndim - 1) * N], _upper(src, base, i2, n2, 1, b2, v), v,
                 _lower(src, base, i2, n2, 1, b2, v))
    dst[base] = v - acc


@njit(inline="always")
def _forward_row_body(src, dst, u, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2):
    """Row ``r = ((b F + f) n0 + i0) n1 + i1`` of one forward step."""
    N = n0 * n1 * n2
    i0, i1, bf = _row_position(r, n0, n1)
    row = (i0 * n1 + i1) * n2
    base = bf * N + row
    ub = (bf // F if F > 1 else bf) * ndim * N + row
    up0, lo0, ok0 = _neighbour_rows(i0, n0, n1 * n2, b0)
    up1, lo1, ok1 = _neighbour_rows(i1, n1, n2, b1)
    fast = ok0 and ok1 and n2 >= 3
    # with the ghost rules: every cell of a boundary row, else the two end cells of the row
    for i in range(0, n2, n2 - 1 if fast else 1):
        _forward_cell(src, dst, u, base + i, ub + i, i0, i1, i, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2)
    if not fast:
        return
    s = src[base:base + n2]
    o = dst[base:base + n2]
    wz = u[ub + (ndim - 1) * N:ub + (ndim - 1) * N + n2]
    if ndim == 1:
        for i in range(1, n2 - 1):
            v = s[i]
            o[i] = v - _flux(c2, wz[i], s[i + 1], v, s[i - 1])
    elif ndim == 2:
        wy = u[ub:ub + n2]
        sy_up = src[base + up1:base + up1 + n2]
        sy_lo = src[base + lo1:base + lo1 + n2]
        for i in range(1, n2 - 1):
            v = s[i]
            acc = _flux(c1, wy[i], sy_up[i], v, sy_lo[i])
            acc += _flux(c2, wz[i], s[i + 1], v, s[i - 1])
            o[i] = v - acc
    else:
        wx = u[ub:ub + n2]
        wy = u[ub + N:ub + N + n2]
        sx_up = src[base + up0:base + up0 + n2]
        sx_lo = src[base + lo0:base + lo0 + n2]
        sy_up = src[base + up1:base + up1 + n2]
        sy_lo = src[base + lo1:base + lo1 + n2]
        for i in range(1, n2 - 1):
            v = s[i]
            acc = _flux(c0, wx[i], sx_up[i], v, sx_lo[i])
            acc += _flux(c1, wy[i], sy_up[i], v, sy_lo[i])
            acc += _flux(c2, wz[i], s[i + 1], v, s[i - 1])
            o[i] = v - acc


@njit(cache=True)
def _forward_row(src, dst, u, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2):
    """:func:`_forward_row_body` compiled once, for any dimension."""
    _forward_row_body(src, dst, u, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2)


# -- adjoint ------------------------------------------------------------------------------------------------

@njit(inline="always")
def _adjoint_d_axis(g, u, gbase, ubase_k, cell, i, n, stride, bc, c):
    """Contribution of one axis to gd at ``cell`` (excluding the diagonal 1)."""
    w = u[ubase_k + cell]
    gv = g[gbase + cell]
    s = c * (min(w, _ZERO) - max(w, _ZERO)) * gv
    # lower neighbour cell L: its upper neighbour is this cell
    if i > 0:
        s -= c * min(u[ubase_k + cell - stride], _ZERO) * g[gbase + cell - stride]
    elif bc == 0:
        L = cell + (n - 1) * stride
        s -= c * min(u[ubase_k + L], _ZERO) * g[gbase + L]
    elif bc == 2:
        s += c * max(w, _ZERO) * gv  # lower ghost repeats this cell
    # upper neighbour cell U: its lower neighbour is this cell
    if i + 1 < n:
        s += c * max(u[ubase_k + cell + stride], _ZERO) * g[gbase + cell + stride]
    elif bc == 0:
        U = cell - (n - 1) * stride
        s += c * max(u[ubase_k + U], _ZERO) * g[gbase + U]
    elif bc == 2:
        s -= c * min(w, _ZERO) * gv  # upper ghost repeats this cell
    return s


@njit(inline="always")
def _adjoint_cell(g, gout, d, u, gu, b, cell, i0, i1, i2, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2,
                  need_g, need_u, accumulate):
    """All ``F`` fields of one cell of velocity field ``b``, with the ghost rules. ``gu`` is overwritten
    unless ``accumulate``."""
    N = n0 * n1 * n2
    ubase = b * ndim * N
    off = 3 - ndim
    gu0 = _ZERO
    gu1 = _ZERO
    gu2 = _ZERO
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
                gu0 += _gu_term(c0, gv, u[ubase + (0 - off) * N + cell], _upper(d, base, i0, n0, n1 * n2, b0, v),
                                v, _lower(d, base, i0, n0, n1 * n2, b0, v))
            if off <= 1:
                gu1 += _gu_term(c1, gv, u[ubase + (1 - off) * N + cell], _upper(d, base, i1, n1, n2, b1, v),
                                v, _lower(d, base, i1, n1, n2, b1, v))
            gu2 += _gu_term(c2, gv, u[ubase + (2 - off) * N + cell], _upper(d, base, i2, n2, 1, b2, v),
                            v, _lower(d, base, i2, n2, 1, b2, v))
    if need_u:
        if not accumulate:
            if off <= 0:
                gu[ubase + (0 - off) * N + cell] = 0.0
            if off <= 1:
                gu[ubase + (1 - off) * N + cell] = 0.0
            gu[ubase + (2 - off) * N + cell] = 0.0
        if off <= 0:
            gu[ubase + (0 - off) * N + cell] += gu0
        if off <= 1:
            gu[ubase + (1 - off) * N + cell] += gu1
        gu[ubase + (2 - off) * N + cell] += gu2


@njit(inline="always")
def _gd_term(c, gv, w, w_lo, g_lo, w_up, g_up):
    """One axis' share of ``gd`` (without the diagonal 1) at an interior cell: its own ``c (m − p) g``, the
    lower neighbour's ``− c m_L g_L`` and the upper neighbour's ``+ c p_U g_U``."""
    s = c * (min(w, _ZERO) - max(w, _ZERO)) * gv
    s -= c * min(w_lo, _ZERO) * g_lo
    s += c * max(w_up, _ZERO) * g_up
    return s


@njit(inline="always")
def _adjoint_d_interior(gr, o, g, u, base, ub, N, n2, ndim, up0, lo0, up1, lo1, c0, c1, c2):
    """``gd`` on cells ``1 … n2−2`` of a fast row (one field): views, no branches."""
    wz = u[ub + (ndim - 1) * N:ub + (ndim - 1) * N + n2]
    if ndim == 1:
        for i in range(1, n2 - 1):
            gv = gr[i]
            o[i] = gv + _gd_term(c2, gv, wz[i], wz[i - 1], gr[i - 1], wz[i + 1], gr[i + 1])
    elif ndim == 2:
        wy = u[ub:ub + n2]
        wy_up = u[ub + up1:ub + up1 + n2]
        wy_lo = u[ub + lo1:ub + lo1 + n2]
        gy_up = g[base + up1:base + up1 + n2]
        gy_lo = g[base + lo1:base + lo1 + n2]
        for i in range(1, n2 - 1):
            gv = gr[i]
            o[i] = (gv + _gd_term(c1, gv, wy[i], wy_lo[i], gy_lo[i], wy_up[i], gy_up[i])
                    + _gd_term(c2, gv, wz[i], wz[i - 1], gr[i - 1], wz[i + 1], gr[i + 1]))
    else:
        wx = u[ub:ub + n2]
        wx_up = u[ub + up0:ub + up0 + n2]
        wx_lo = u[ub + lo0:ub + lo0 + n2]
        gx_up = g[base + up0:base + up0 + n2]
        gx_lo = g[base + lo0:base + lo0 + n2]
        wy = u[ub + N:ub + N + n2]
        wy_up = u[ub + N + up1:ub + N + up1 + n2]
        wy_lo = u[ub + N + lo1:ub + N + lo1 + n2]
        gy_up = g[base + up1:base + up1 + n2]
        gy_lo = g[base + lo1:base + lo1 + n2]
        for i in range(1, n2 - 1):
            gv = gr[i]
            o[i] = (gv + _gd_term(c0, gv, wx[i], wx_lo[i], gx_lo[i], wx_up[i], gx_up[i])
                    + _gd_term(c1, gv, wy[i], wy_lo[i], gy_lo[i], wy_up[i], gy_up[i])
                    + _gd_term(c2, gv, wz[i], wz[i - 1], gr[i - 1], wz[i + 1], gr[i + 1]))


@njit(inline="always")
def _adjoint_du_interior(gr, o, g, d, u, gu, base, ub, N, n2, ndim, up0, lo0, up1, lo1, c0, c1, c2, assign):
    """Both gradients on cells ``1 … n2−2`` of a fast row in one pass (one field; ``gu`` overwritten when
    ``assign``, else added to): one step's adjoint with each input row read once."""
    dr = d[base:base + n2]
    kz = ub + (ndim - 1) * N
    wz = u[kz:kz + n2]
    qz = gu[kz:kz + n2]
    if ndim == 1:
        if assign:
            for i in range(1, n2 - 1):
                gv = gr[i]
                o[i] = gv + _gd_term(c2, gv, wz[i], wz[i - 1], gr[i - 1], wz[i + 1], gr[i + 1])
                qz[i] = _gu_term(c2, gv, wz[i], dr[i + 1], dr[i], dr[i - 1])
        else:
            for i in range(1, n2 - 1):
                gv = gr[i]
                o[i] = gv + _gd_term(c2, gv, wz[i], wz[i - 1], gr[i - 1], wz[i + 1], gr[i + 1])
                qz[i] += _gu_term(c2, gv, wz[i], dr[i + 1], dr[i], dr[i - 1])
    elif ndim == 2:
        wy = u[ub:ub + n2]
        qy = gu[ub:ub + n2]
        wy_up = u[ub + up1:ub + up1 + n2]
        wy_lo = u[ub + lo1:ub + lo1 + n2]
        gy_up = g[base + up1:base + up1 + n2]
        gy_lo = g[base + lo1:base + lo1 + n2]
        dy_up = d[base + up1:base + up1 + n2]
        dy_lo = d[base + lo1:base + lo1 + n2]
        if assign:  # separate loops: a branch inside would keep LLVM from vectorising
            for i in range(1, n2 - 1):
                gv = gr[i]
                o[i] = (gv + _gd_term(c1, gv, wy[i], wy_lo[i], gy_lo[i], wy_up[i], gy_up[i])
                        + _gd_term(c2, gv, wz[i], wz[i - 1], gr[i - 1], wz[i + 1], gr[i + 1]))
                qy[i], qz[i] = _gu_terms_2d(i, gr, dr, wy, wz, dy_up, dy_lo, c1, c2)
        else:
            for i in range(1, n2 - 1):
                gv = gr[i]
                o[i] = (gv + _gd_term(c1, gv, wy[i], wy_lo[i], gy_lo[i], wy_up[i], gy_up[i])
                        + _gd_term(c2, gv, wz[i], wz[i - 1], gr[i - 1], wz[i + 1], gr[i + 1]))
                ty, tz = _gu_terms_2d(i, gr, dr, wy, wz, dy_up, dy_lo, c1, c2)
                qy[i] += ty
                qz[i] += tz
    else:
        wx = u[ub:ub + n2]
        qx = gu[ub:ub + n2]
        wx_up = u[ub + up0:ub + up0 + n2]
        wx_lo = u[ub + lo0:ub + lo0 + n2]
        gx_up = g[base + up0:base + up0 + n2]
        gx_lo = g[base + lo0:base + lo0 + n2]
        dx_up = d[base + up0:base + up0 + n2]
        dx_lo = d[base + lo0:base + lo0 + n2]
        wy = u[ub + N:ub + N + n2]
        qy = gu[ub + N:ub + N + n2]
        wy_up = u[ub + N + up1:ub + N + up1 + n2]
        wy_lo = u[ub + N + lo1:ub + N + lo1 + n2]
        gy_up = g[base + up1:base + up1 + n2]
        gy_lo = g[base + lo1:base + lo1 + n2]
        dy_up = d[base + up1:base + up1 + n2]
        dy_lo = d[base + lo1:base + lo1 + n2]
        if assign:
            for i in range(1, n2 - 1):
                gv = gr[i]
                o[i] = (gv + _gd_term(c0, gv, wx[i], wx_lo[i], gx_lo[i], wx_up[i], gx_up[i])
                        + _gd_term(c1, gv, wy[i], wy_lo[i], gy_lo[i], wy_up[i], gy_up[i])
                        + _gd_term(c2, gv, wz[i], wz[i - 1], gr[i - 1], wz[i + 1], gr[i + 1]))
                qx[i], qy[i], qz[i] = _gu_terms_3d(i, gr, dr, wx, wy, wz, dx_up, dx_lo, dy_up, dy_lo, c0, c1, c2)
        else:
            for i in range(1, n2 - 1):
                gv = gr[i]
                o[i] = (gv + _gd_term(c0, gv, wx[i], wx_lo[i], gx_lo[i], wx_up[i], gx_up[i])
                        + _gd_term(c1, gv, wy[i], wy_lo[i], gy_lo[i], wy_up[i], gy_up[i])
                        + _gd_term(c2, gv, wz[i], wz[i - 1], gr[i - 1], wz[i + 1], gr[i + 1]))
                tx, ty, tz = _gu_terms_3d(i, gr, dr, wx, wy, wz, dx_up, dx_lo, dy_up, dy_lo, c0, c1, c2)
                qx[i] += tx
                qy[i] += ty
                qz[i] += tz


@njit(inline="always")
def _gu_terms_2d(i, gr, dr, wy, wz, dy_up, dy_lo, c1, c2):
    gv = gr[i]
    v = dr[i]
    return (_gu_term(c1, gv, wy[i], dy_up[i], v, dy_lo[i]),
            _gu_term(c2, gv, wz[i], dr[i + 1], v, dr[i - 1]))


@njit(inline="always")
def _gu_terms_3d(i, gr, dr, wx, wy, wz, dx_up, dx_lo, dy_up, dy_lo, c0, c1, c2):
    gv = gr[i]
    v = dr[i]
    return (_gu_term(c0, gv, wx[i], dx_up[i], v, dx_lo[i]),
            _gu_term(c1, gv, wy[i], dy_up[i], v, dy_lo[i]),
            _gu_term(c2, gv, wz[i], dr[i + 1], v, dr[i - 1]))


@njit(inline="always")
def _adjoint_u_interior(gr, d, u, gu, base, ub, N, n2, ndim, up0, lo0, up1, lo1, c0, c1, c2, assign):
    """``gu`` on cells ``1 … n2−2`` of a fast row (one field), overwritten when ``assign`` else added to
    (separate loops: the overwriting one never reads ``gu``)."""
    dr = d[base:base + n2]
    kz = ub + (ndim - 1) * N
    wz = u[kz:kz + n2]
    qz = gu[kz:kz + n2]
    if ndim == 1:
        if assign:
            for i in range(1, n2 - 1):
                qz[i] = _gu_term(c2, gr[i], wz[i], dr[i + 1], dr[i], dr[i - 1])
        else:
            for i in range(1, n2 - 1):
                qz[i] += _gu_term(c2, gr[i], wz[i], dr[i + 1], dr[i], dr[i - 1])
    elif ndim == 2:
        wy = u[ub:ub + n2]
        qy = gu[ub:ub + n2]
        dy_up = d[base + up1:base + up1 + n2]
        dy_lo = d[base + lo1:base + lo1 + n2]
        if assign:
            for i in range(1, n2 - 1):
                qy[i], qz[i] = _gu_terms_2d(i, gr, dr, wy, wz, dy_up, dy_lo, c1, c2)
        else:
            for i in range(1, n2 - 1):
                ty, tz = _gu_terms_2d(i, gr, dr, wy, wz, dy_up, dy_lo, c1, c2)
                qy[i] += ty
                qz[i] += tz
    else:
        wx = u[ub:ub + n2]
        qx = gu[ub:ub + n2]
        wy = u[ub + N:ub + N + n2]
        qy = gu[ub + N:ub + N + n2]
        dx_up = d[base + up0:base + up0 + n2]
        dx_lo = d[base + lo0:base + lo0 + n2]
        dy_up = d[base + up1:base + up1 + n2]
        dy_lo = d[base + lo1:base + lo1 + n2]
        if assign:
            for i in range(1, n2 - 1):
                qx[i], qy[i], qz[i] = _gu_terms_3d(i, gr, dr, wx, wy, wz, dx_up, dx_lo, dy_up, dy_lo, c0, c1, c2)
        else:
            for i in range(1, n2 - 1):
                tx, ty, tz = _gu_terms_3d(i, gr, dr, wx, wy, wz, dx_up, dx_lo, dy_up, dy_lo, c0, c1, c2)
                qx[i] += tx
                qy[i] += ty
                qz[i] += tz


@njit(inline="always")
def _adjoint_row_body(g, gout, d, u, gu, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_g, need_u,
                      accumulate):
    """One row of one step's adjoint for velocity field ``b``: all ``F`` fields of the row.

    ``r`` indexes rows of one velocity field: r = (b * n0 + i0) * n1 + i1."""
    N = n0 * n1 * n2
    i0, i1, b = _row_position(r, n0, n1)
    row = (i0 * n1 + i1) * n2
    ub = b * ndim * N + row
    up0, lo0, ok0 = _neighbour_rows(i0, n0, n1 * n2, b0)
    up1, lo1, ok1 = _neighbour_rows(i1, n1, n2, b1)
    fast = ok0 and ok1 and n2 >= 3
    # with the ghost rules: every cell of a boundary row, else the two end cells of the row
    for i in range(0, n2, n2 - 1 if fast else 1):
        _adjoint_cell(g, gout, d, u, gu, b, row + i, i0, i1, i, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2,
                      need_g, need_u, accumulate)
    if not fast:
        return
    for f in range(F):
        base = (b * F + f) * N + row
        gr = g[base:base + n2]
        assign = f == 0 and not accumulate
        if need_g and need_u:
            _adjoint_du_interior(gr, gout[base:base + n2], g, d, u, gu, base, ub, N, n2, ndim, up0, lo0, up1, lo1,
                                 c0, c1, c2, assign)
            continue
        if need_g:
            _adjoint_d_interior(gr, gout[base:base + n2], g, u, base, ub, N, n2, ndim, up0, lo0, up1, lo1,
                                c0, c1, c2)
        if need_u:
            _adjoint_u_interior(gr, d, u, gu, base, ub, N, n2, ndim, up0, lo0, up1, lo1, c0, c1, c2, assign)


@njit(cache=True)
def _adjoint_row(g, gout, d, u, gu, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_g, need_u, accumulate):
    """:func:`_adjoint_row_body` compiled once, for any dimension."""
    _adjoint_row_body(g, gout, d, u, gu, r, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_g, need_u, accumulate)


# -- max |x| per row (the CFL check) --------------------------------------------------------------------------

_MAX_ABS_CHUNK = 1 << 16


def _max_abs_bits(bits, out, rows, n, chunk, mask):
    """``out[r, c]``: the largest of ``bits & mask`` over chunk ``c`` of row ``r``. ``bits`` views the floats as
    integers and ``mask`` clears the sign bit: for IEEE floats without sign, the integer order is the float
    order with NaN above infinity, so the integer maximum (a reduction that vectorises) is ``max |x|`` and is
    NaN when any element is."""
    nch = out.shape[1]
    for w in prange(rows * nch):
        r = w // nch
        lo = r * n + (w % nch) * chunk
        hi = min(lo + chunk, (r + 1) * n)
        v = bits[lo:hi]
        m = v[0] & mask
        for i in range(hi - lo):
            m = max(m, v[i] & mask)
        out[r, w % nch] = m


_max_abs_bits_par = njit(parallel=True, cache=True)(_max_abs_bits)


@njit(cache=True)
def _max_abs_small(x, out):
    """``out[r] = max |x[r, :]|`` (NaN when the row has a NaN), serially: for small arrays, where a call costs
    less than NumPy's ``abs`` and ``max`` (about a microsecond each)."""
    rows, n = x.shape
    for r in range(rows):
        m = 0.0
        for i in range(n):
            a = abs(x[r, i])
            if not a <= m:  # larger, or NaN
                m = a
                if a != a:
                    break
        out[r] = m


@njit(cache=True)
def _max_abs_flat(x):
    """``max |x|`` of a 1-D array as a float64 (NaN when it has a NaN), as :func:`_max_abs_small` computes a row's."""
    m = 0.0
    for i in range(x.size):
        a = abs(x[i])
        if not a <= m:  # larger, or NaN
            m = a
            if a != a:
                break
    return m


def max_abs(x):
    """``max |x|`` over all of ``x`` as a Python float: the value :func:`max_abs_rows` gives for ``x`` as one row."""
    if x.size < _PARALLEL_MIN_CELLS:
        return _max_abs_flat(x.ravel())
    return float(max_abs_rows(x.reshape(1, -1))[0])


def max_abs_rows(x):
    """``max |x|`` over the last axis of a 2-D float array, as float64 (NaN where a row has a NaN): for large
    arrays one parallel read of ``x`` and no temporary (NumPy's ``abs`` then ``max`` writes and reads a
    temporary, single-threaded); small ones one serial pass."""
    x = np.ascontiguousarray(x)
    rows, n = x.shape
    if x.size < _PARALLEL_MIN_CELLS:
        out = np.empty(rows, np.float64)
        _max_abs_small(x, out)
        return out
    itype = np.int32 if x.dtype == np.float32 else np.int64
    mask = itype(np.iinfo(itype).max)  # all bits but the sign
    nch = (n + _MAX_ABS_CHUNK - 1) // _MAX_ABS_CHUNK
    out = np.empty((rows, nch), itype)
    _max_abs_bits_par(x.reshape(-1).view(itype), out, rows, n, _MAX_ABS_CHUNK, mask)
    return out.max(axis=1).view(x.dtype).astype(np.float64)


# -- drivers (all steps in one compiled call) ---------------------------------------------------------------
#
# The drivers call a row function (``row_fn``) per row, compiled once for any dimension. Small 1-D grids get
# serial drivers of their own (on the 128-cell demo a step takes about a hundred nanoseconds, and overheads
# that are nothing on large grids dominate), written out in full with no row function and, on the paths of a
# gradient (every state saved), no array views, since each view costs a pair of atomic reference-count
# updates. Both compute what depends on the velocity alone (the same for every step) once per call: the
# forward ``min(u, 0)`` and ``max(u, 0)``, the adjoint the products of ``c`` with them; the steps then use
# these values in the arithmetic of the generic drivers, in the same order (so the same bits).

@njit(inline="always")
def _forward_steps(d, u, out, states, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, save, every,
                   row_fn):
    rows = Bu * F * n0 * n1
    size = d.size
    if save:  # states[t / every] = d^t: a step whose output is saved writes it into its slot
        st = states[0:size]
        for j in prange(size):
            st[j] = d[j]
    buf = np.empty_like(d) if steps > 1 and (not save or every > 1) else out
    src = d
    for t in range(steps):
        dst = step_output(t, steps, save, every, size, out, buf, states)
        for r in prange(rows):
            row = np.int64(r)  # one compiled signature (a parallel loop's index is unsigned)
            row_fn(src, dst, u, row, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2)
        src = dst


@njit(inline="always")
def _adjoint_steps(g, states, u, gd, gu, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_d, need_u,
                   acc_u, row_fn):
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
        # the first step overwrites gu (allocated uninitialised) unless acc_u, later ones add to it
        accumulate = k > 0 or acc_u
        for r in prange(rows):
            row = np.int64(r)  # one compiled signature (a parallel loop's index is unsigned)
            row_fn(cur, dst, dstate, u, gu, row, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_g, need_u,
                   accumulate)
        cur = dst


@njit(inline="always")
def _end_neighbours(i, n, bc):
    """Positions of the lower and upper neighbours of end cell ``i`` of a 1-D row, ``-1`` for a ghost."""
    lo = i - 1 if i > 0 else (n - 1 if bc == 0 else -1)
    up = i + 1 if i + 1 < n else (0 if bc == 0 else -1)
    return lo, up


def _forward_serial(d, u, out, states, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, save, every):
    _forward_steps(d, u, out, states, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, save, every,
                   _forward_row)


@njit(inline="always")
def _end_cell_1d(src, s, dst, o, M, P, ucell, i, n2, c2, b2):
    """End cell ``i`` of a 1-D row (``src[s]`` to ``dst[o]``) with the ghost rules, as :func:`_forward_cell`
    computes it (``M``, ``P``: ``min(u, 0)`` and ``max(u, 0)``)."""
    v = src[s]
    if i + 1 < n2:
        up = src[s + 1]
    elif b2 == 0:
        up = src[s - (n2 - 1)]
    elif b2 == 1:
        up = _ZERO
    else:
        up = v
    if i > 0:
        lo = src[s - 1]
    elif b2 == 0:
        lo = src[s + (n2 - 1)]
    elif b2 == 1:
        lo = _ZERO
    else:
        lo = v
    acc = _ZERO
    acc += c2 * (M[ucell] * (up - v) + P[ucell] * (v - lo))
    dst[o] = v - acc


@njit(inline="always")
def _row_1d(src, soff, dst, doff, M, P, base, ub, n2, c2, b2):
    """One step of the 1-D row at ``base`` (velocity row at ``ub``): ``src[soff + base …]`` to
    ``dst[doff + base …]``, the arithmetic of :func:`_forward_row_body` (interior) and :func:`_forward_cell` (ends)."""
    if n2 < 3:
        for i in range(n2):
            _end_cell_1d(src, soff + base + i, dst, doff + base + i, M, P, ub + i, i, n2, c2, b2)
        return
    _end_cell_1d(src, soff + base, dst, doff + base, M, P, ub, 0, n2, c2, b2)
    _end_cell_1d(src, soff + base + n2 - 1, dst, doff + base + n2 - 1, M, P, ub + n2 - 1, n2 - 1, n2, c2, b2)
    # interior cells, unsigned indices (no negative-index wrap-around: LLVM vectorises the loop)
    one = np.uint64(1)
    sb = np.uint64(soff + base)
    db = np.uint64(doff + base)
    uu = np.uint64(ub)
    for j in range(1, n2 - 1):
        i = np.uint64(j)
        v = src[sb + i]
        dst[db + i] = v - c2 * (M[uu + i] * (src[sb + i + one] - v) + P[uu + i] * (v - src[sb + i - one]))


def _forward_serial_1d(d, u, out, states, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, save, every):
    """:func:`_forward_steps` on a 1-D grid, serially: the ``Bu F`` rows of each step written out, with the
    arithmetic of :func:`_forward_row_body` (interior cells) and :func:`_forward_cell` (end cells). With every
    state saved, each step reads its state's slot of ``states`` and writes the next one (the last step ``out``):
    no array views, whose reference counts cost more than a small step's arithmetic. Returns ``max |u|`` as a
    float64 (NaN when ``u`` has a NaN), the value :func:`max_abs` gives."""
    size = d.size
    nu = Bu * n2
    MP = np.empty(2 * nu, u.dtype)  # min(u, 0), max(u, 0)
    umax = 0.0
    for j in range(nu):
        w = u[j]
        MP[j] = min(w, _ZERO)
        MP[nu + j] = max(w, _ZERO)
        a = abs(w)
        if a > umax or a != a:  # larger, or NaN (which then stays)
            umax = a
    M = MP[:nu]
    P = MP[nu:]
    rows = Bu * F
    if save:  # states[t / every] = d^t: a step whose output is saved writes it into its slot
        for j in range(size):
            states[j] = d[j]
    if save and every == 1:
        for t in range(steps):
            soff = t * size
            if t + 1 < steps:
                for r in range(rows):
                    _row_1d(states, soff, states, soff + size, M, P, r * n2, (r // F if F > 1 else r) * n2, n2, c2, b2)
            else:
                for r in range(rows):
                    _row_1d(states, soff, out, 0, M, P, r * n2, (r // F if F > 1 else r) * n2, n2, c2, b2)
        return umax
    buf = np.empty_like(d) if steps > 1 and (not save or every > 1) else out
    src = d
    for t in range(steps):
        dst = step_output(t, steps, save, every, size, out, buf, states)
        for r in range(rows):
            _row_1d(src, 0, dst, 0, M, P, r * n2, (r // F if F > 1 else r) * n2, n2, c2, b2)
        src = dst
    return umax


def _forward_parallel(d, u, out, states, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, save, every):
    _forward_steps(d, u, out, states, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, save, every,
                   _forward_row)


def _adjoint_serial(g, states, u, gd, gu, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_d, need_u,
                    acc_u):
    _adjoint_steps(g, states, u, gd, gu, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_d, need_u,
                   acc_u, _adjoint_row)


def _adjoint_parallel(g, states, u, gd, gu, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_d,
                      need_u, acc_u):
    _adjoint_steps(g, states, u, gd, gu, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_d, need_u,
                   acc_u, _adjoint_row)


def _adjoint_serial_1d(g, states, u, gd, gu, steps, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, need_d,
                       need_u, acc_u):
    """The adjoint of :func:`_forward_serial_1d`: :func:`_adjoint_steps` with the 1-D rows written out (the
    same arithmetic in the same order as :func:`_adjoint_cell` and the row loops), indexing by offsets. The
    interior loops use unsigned indices: no negative-index wrap-around, so LLVM vectorises them."""
    size = g.size
    W = np.empty(2 * size, g.dtype)  # the gradient of the current and of the next state, side by side
    W[:size] = g
    D = states if need_u else W
    c = c2
    # c (min(u, 0) − max(u, 0)), c min(u, 0), c max(u, 0): the factors of the d-adjoint, the same for every step
    # (u's dtype: advect_adjoint calls this driver only when u and g share it, so these are the values the
    # generic drivers compute in each step)
    nu = Bu * n2
    K = np.empty(3 * nu, u.dtype)
    for j in range(nu):
        w = u[j]
        K[j] = c * (min(w, _ZERO) - max(w, _ZERO))
        K[nu + j] = c * min(w, _ZERO)
        K[2 * nu + j] = c * max(w, _ZERO)
    KA = K[0:nu]
    KM = K[nu:2 * nu]
    KP = K[2 * nu:3 * nu]
    one = np.uint64(1)
    cur = 0
    for k in range(steps):
        t = steps - 1 - k
        nxt = size - cur
        doff = t * size if need_u else 0
        need_g = need_d or t > 0
        accumulate = k > 0 or acc_u
        for r in range(Bu):
            ub = r * n2
            # end cells (every cell of rows shorter than 3) with the ghost rules
            if F == 1 and b2 == 0 and n2 >= 3:
                # one field on a periodic axis (the common case): the two end cells with their neighbours
                # wrapped, the arithmetic of the general branch below without its tests
                for e in range(2):
                    i = 0 if e == 0 else n2 - 1
                    lo = n2 - 1 if e == 0 else n2 - 2
                    up = 1 if e == 0 else 0
                    gv = W[cur + ub + i]
                    if need_g:
                        s = KA[ub + i] * gv
                        s -= KM[ub + lo] * W[cur + ub + lo]
                        s += KP[ub + up] * W[cur + ub + up]
                        W[nxt + ub + i] = gv + s
                    if need_u:
                        acc = _ZERO
                        acc += _gu_term(c, gv, u[ub + i], D[doff + ub + up], D[doff + ub + i], D[doff + ub + lo])
                        if not accumulate:
                            gu[ub + i] = 0.0
                        gu[ub + i] += acc
            else:
                for e in range(2 if n2 >= 3 else n2):
                    i = e if n2 < 3 or e == 0 else n2 - 1
                    lo, up = _end_neighbours(i, n2, b2)
                    w = u[ub + i]
                    acc = _ZERO
                    for f in range(F):
                        fb = (r * F + f) * n2
                        gv = W[cur + fb + i]
                        if need_g:
                            s = KA[ub + i] * gv
                            if lo >= 0:
                                s -= KM[ub + lo] * W[cur + fb + lo]
                            elif b2 == 2:
                                s += KP[ub + i] * gv
                            if up >= 0:
                                s += KP[ub + up] * W[cur + fb + up]
                            elif b2 == 2:
                                s -= KM[ub + i] * gv
                            W[nxt + fb + i] = gv + s
                        if need_u:
                            v = D[doff + fb + i]
                            dup = D[doff + fb + up] if up >= 0 else (_ZERO if b2 == 1 else v)
                            dlo = D[doff + fb + lo] if lo >= 0 else (_ZERO if b2 == 1 else v)
                            acc += _gu_term(c, gv, w, dup, v, dlo)
                    if need_u:
                        if not accumulate:
                            gu[ub + i] = 0.0
                        gu[ub + i] += acc
            if n2 < 3:
                continue
            ubu = np.uint64(ub)
            for f in range(F):
                fb = (r * F + f) * n2
                gb = np.uint64(cur + fb)
                ob = np.uint64(nxt + fb)
                db = np.uint64(doff + fb)
                if need_u and f == 0 and not accumulate:
                    if need_g:
                        for j in range(1, n2 - 1):
                            i = np.uint64(j)
                            gv = W[gb + i]
                            w = u[ubu + i]
                            W[ob + i] = gv + ((KA[ubu + i] * gv - KM[ubu + i - one] * W[gb + i - one])
                                              + KP[ubu + i + one] * W[gb + i + one])
                            gu[ubu + i] = _gu_term(c, gv, w, D[db + i + one], D[db + i], D[db + i - one])
                    else:
                        for j in range(1, n2 - 1):
                            i = np.uint64(j)
                            gu[ubu + i] = _gu_term(c, W[gb + i], u[ubu + i], D[db + i + one], D[db + i],
                                                   D[db + i - one])
                elif need_u:
                    if need_g:
                        for j in range(1, n2 - 1):
                            i = np.uint64(j)
                            gv = W[gb + i]
                            w = u[ubu + i]
                            W[ob + i] = gv + ((KA[ubu + i] * gv - KM[ubu + i - one] * W[gb + i - one])
                                              + KP[ubu + i + one] * W[gb + i + one])
                            gu[ubu + i] += _gu_term(c, gv, w, D[db + i + one], D[db + i], D[db + i - one])
                    else:
                        for j in range(1, n2 - 1):
                            i = np.uint64(j)
                            gu[ubu + i] += _gu_term(c, W[gb + i], u[ubu + i], D[db + i + one], D[db + i],
                                                    D[db + i - one])
                elif need_g:
                    for j in range(1, n2 - 1):
                        i = np.uint64(j)
                        gv = W[gb + i]
                        W[ob + i] = gv + ((KA[ubu + i] * gv - KM[ubu + i - one] * W[gb + i - one])
                                          + KP[ubu + i + one] * W[gb + i + one])
        cur = nxt
    if need_d:
        gd[:] = W[cur:cur + size]


# Drivers: parallel for large grids, serial (prange runs as range) for small ones, and serial for 1-D grids,
# which reference only the 1-D row functions (a 1-D problem such as the 128-cell demo never compiles the
# generic rows: a third of the compile time, and a cold first call). cache=True: compiled code is kept on
# disk (__pycache__), so only the first process pays the compile time. Distinct Python functions for the
# serial and the parallel driver: the disk cache does not tell compilations of one function with and without
# parallel=True apart.
_forward_par = njit(parallel=True, cache=True)(_forward_parallel)
_adjoint_par = njit(parallel=True, cache=True)(_adjoint_parallel)
_forward_ser = njit(cache=True)(_forward_serial)
_adjoint_ser = njit(cache=True)(_adjoint_serial)
_forward_ser_1d = njit(cache=True)(_forward_serial_1d)
_adjoint_ser_1d = njit(cache=True)(_adjoint_serial_1d)


def _coefficients(coef, dtype):
    """``coef`` in the arrays' dtype (Python floats are float64 to Numba: the same signature, cheaper)."""
    c0, c1, c2 = coef
    if dtype.type is np.float64:
        return float(c0), float(c1), float(c2)
    return dtype.type(c0), dtype.type(c1), dtype.type(c2)


# What the wrappers below derive from their scalar arguments, by (kernel kind, coef, bc, shape3, ndim, dtype,
# parallel): the driver and the kernels' scalar arguments. An operator passes the same ones on every call, and
# the wrappers run on every call.
_SETUPS = {}
_DRIVERS = {"forward": (_forward_par, _forward_ser, _forward_ser_1d),
            "adjoint": (_adjoint_par, _adjoint_ser, _adjoint_ser_1d)}


def _setup(kind, coef, bc, shape3, ndim, dtype, size):
    """``(driver, scalars)``: the ``kind`` driver for ``size`` cells (parallel for large problems, serial for small
    ones, the 1-D serial one on 1-D grids) and ``(n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2)``, the coefficients in
    the arrays' dtype."""
    parallel = size >= _PARALLEL_MIN_CELLS
    key = (kind, coef, bc, shape3, ndim, dtype, parallel)
    found = _SETUPS.get(key)
    if found is None:
        par, ser, ser_1d = _DRIVERS[kind]
        driver = par if parallel else ser_1d if ndim == 1 else ser
        found = (driver, (*shape3, ndim, *_coefficients(coef, dtype), *bc))
        if len(_SETUPS) >= 256:
            _SETUPS.clear()
        _SETUPS[key] = found
    return found


# The arrays are contiguous: they are passed flat with ravel() (a view, cheaper than reshape(-1)), and new ones
# come from np.empty (np.empty_like runs a Python dispatcher first).

# A zero-size array per dtype for the array arguments a call does not use (never written: it has no elements).
_NOTHING = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}


def _nothing(dtype):
    found = _NOTHING.get(dtype)
    return found if found is not None else np.empty(0, dtype)


def advect_forward(d, u, coef, bc, shape3, ndim, steps, save_states, save_every=1, out=None, states=None):
    Bu, F, N = shape = d.shape
    dtype = d.dtype
    if out is None:
        out = np.empty(shape, dtype)
    if not save_states:
        states = _nothing(dtype)
    elif states is None:
        states = np.empty(((steps + save_every - 1) // save_every, Bu, F, N), dtype)
    fwd, scalars = _setup("forward", coef, bc, shape3, ndim, dtype, Bu * F * N)
    fwd(d.ravel(), u.ravel(), out.ravel(), states.ravel(), steps, Bu, F, *scalars, save_states, save_every)
    return out, (states if save_states else None)


def advect_adjoint(g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu=None):
    Bu, F, N = shape = g.shape
    dtype = g.dtype
    adj, scalars = _setup("adjoint", coef, bc, shape3, ndim, dtype, Bu * F * N)
    if adj is _adjoint_ser_1d and u.dtype != dtype:  # (the 1-D driver's velocity factors take u's dtype)
        adj = _adjoint_ser
    nothing = _nothing(dtype)  # for the arrays a call does not use
    # the 1-D driver writes gd only when it is wanted; the others use it as a buffer
    gd = np.empty(shape, dtype) if need_d or adj is not _adjoint_ser_1d else nothing
    acc_u = need_u and gu is not None
    if not need_u:
        gu = nothing
    elif gu is None:
        gu = np.empty(u.shape, u.dtype)
    adj(g.ravel(), states.ravel() if need_u else nothing, u.ravel(), gd.ravel(), gu.ravel(), steps, Bu, F, *scalars,
        need_d, need_u, acc_u)
    return (gd if need_d else None), (gu if need_u else None)


class Launcher:
    """The 1-step-or-more forward and adjoint calls of :func:`advect_forward` and :func:`advect_adjoint` for one
    set of scalar arguments (coefficients, boundary codes, padded shape, dtype and size), the drivers and their
    scalars looked up once: what ``gpudp.ops.advection`` calls on every operator call.

    The arrays may have any shape holding the canonical layout in C order (``d`` and ``g``: ``Bu F N`` elements,
    ``u``: ``Bu D N``): they are passed flat (a copy where one is not C-contiguous), and the results come back in
    the shapes of ``d`` (``out``, ``gd``) and ``u`` (``gu``). Results are those of the two functions."""

    __slots__ = ("dtype", "launches", "max_abs_u", "_fwd", "_fwd_scalars", "_adj", "_adj_scalars")

    def __init__(self, coef, bc, shape3, ndim, dtype, size, launches):
        self.dtype = dtype
        self.launches = launches
        self._fwd, self._fwd_scalars = _setup("forward", coef, bc, shape3, ndim, dtype, size)
        self._adj, self._adj_scalars = _setup("adjoint", coef, bc, shape3, ndim, dtype, size)
        #: Whether :meth:`forward` returns ``max |u|`` (the value :func:`max_abs` gives) rather than None.
        self.max_abs_u = self._fwd is _forward_ser_1d

    def forward(self, d, u, Bu, F, steps, save_states):
        """``(out, states or None, max |u| or None)``: ``steps`` steps of ``d`` (every state saved when
        ``save_states``), and ``max |u|`` when :attr:`max_abs_u`."""
        self.launches["advect_forward"] += 1
        dtype = self.dtype
        out = np.empty(d.shape, dtype)
        if save_states:
            states = np.empty((steps, Bu, F, out.size // (Bu * F)), dtype)
        else:
            states = _NOTHING[dtype]
        umax = self._fwd(d.ravel(), u.ravel(), out.ravel(), states.ravel(), steps, Bu, F, *self._fwd_scalars,
                         save_states, 1)
        return out, (states if save_states else None), umax

    def adjoint(self, g, states, u, Bu, F, steps, need_d, need_u):
        """``(gd or None, gu or None)`` of ``steps`` steps (``states``: every state, or ``d`` for one step)."""
        self.launches["advect_adjoint_du" if need_u else "advect_adjoint_d"] += 1
        dtype = self.dtype
        adj = self._adj
        nothing = _NOTHING[dtype]
        gd = np.empty(g.shape, dtype) if need_d or adj is not _adjoint_ser_1d else nothing
        gu = np.empty(u.shape, dtype) if need_u else nothing
        adj(g.ravel(), states.ravel() if need_u else nothing, u.ravel(), gd.ravel(), gu.ravel(), steps, Bu, F,
            *self._adj_scalars, need_d, need_u, False)
        return (gd if need_d else None), (gu if need_u else None)

