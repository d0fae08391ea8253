"""Upwind advection, forward and adjoint, as ``numba.cuda.jit`` kernels (gather form, no atomics).

The formulas and ghost rules are those of :mod:`gpudp.backends.cpu.advection`. One step along padded axis
``a`` with ``c_a = Δt/Δx_a``, ``m = min(u_a, 0)``, ``p = max(u_a, 0)``::

    d'_i = d_i − Σ_a c_a [ m_i (d_{i+e_a} − d_i) + p_i (d_i − d_{i−e_a}) ]

Kernels:

``advect_forward``     one thread per ``(velocity b, field f, cell)``: one step ``src → dst``; optionally also
                       copies ``src`` into a saved-state buffer (the first step of a recorded rollout).
``advect_adjoint_d``   one thread per ``(b, f, cell)``: the adjoint of one step w.r.t. ``d`` (gathers what
                       the neighbours sent).
``advect_adjoint_du``  one thread per ``(b, cell)``: the ``d``-adjoint of all ``F`` fields of that velocity
                       and the velocity gradient at the cell, summed over the ``F`` fields and accumulated
                       over the steps in place (each thread owns its velocity entries: no atomics).

A ``steps = T`` call launches one kernel per step into ping-pong device buffers on one stream; the host never
waits in between. Arithmetic is in the arrays' dtype: ``coef`` and a typed ``zero`` are passed as scalars of
that dtype.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ._common import blocks_for, lower, upper


@cuda.jit(device=True)
def _flux(src, idx, v, w, i, n, s, bc, c, zero):
    up = upper(src, idx, i, n, s, bc, v, zero)
    lo = lower(src, idx, i, n, s, bc, v, zero)
    return c * (min(w, zero) * (up - v) + max(w, zero) * (v - lo))


@cuda.jit
def _forward_kernel(src, dst, keep, do_keep, u, F, N, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, zero):
    total = src.size
    s0 = n1 * n2
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        cell = idx % N
        b = idx // N // F
        i2 = cell % n2
        i1 = (cell // n2) % n1
        i0 = cell // s0
        v = src[idx]
        if do_keep:
            keep[idx] = v
        ub = b * ndim * N + cell
        acc = zero
        if ndim == 3:
            acc += _flux(src, idx, v, u[ub], i0, n0, s0, b0, c0, zero)
        if ndim >= 2:
            acc += _flux(src, idx, v, u[ub + (ndim - 2) * N], i1, n1, n2, b1, c1, zero)
        acc += _flux(src, idx, v, u[ub + (ndim - 1) * N], i2, n2, 1, b2, c2, zero)
        dst[idx] = v - acc


@cuda.jit(device=True)
def _adj_d_axis(g, u, gidx, uidx, gv, i, n, s, bc, c, zero):
    """One axis' part of the ``d``-adjoint at a cell, without the identity term."""
    w = u[uidx]
    t = (min(w, zero) - max(w, zero)) * gv
    # lower neighbour L: its upper neighbour is this cell
    if i > 0:
        t -= min(u[uidx - s], zero) * g[gidx - s]
    elif bc == 0:
        t -= min(u[uidx + (n - 1) * s], zero) * g[gidx + (n - 1) * s]
    elif bc == 2:
        t += max(w, zero) * gv  # the lower ghost repeats this cell
    # upper neighbour U: its lower neighbour is this cell
    if i + 1 < n:
        t += max(u[uidx + s], zero) * g[gidx + s]
    elif bc == 0:
        t += max(u[uidx - (n - 1) * s], zero) * g[gidx - (n - 1) * s]
    elif bc == 2:
        t -= min(w, zero) * gv  # the upper ghost repeats this cell
    return c * t


@cuda.jit(device=True)
def _adj_d_cell(g, u, idx, ub, gv, i0, i1, i2, N, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, zero):
    s = gv
    if ndim == 3:
        s += _adj_d_axis(g, u, idx, ub, gv, i0, n0, n1 * n2, b0, c0, zero)
    if ndim >= 2:
        s += _adj_d_axis(g, u, idx, ub + (ndim - 2) * N, gv, i1, n1, n2, b1, c1, zero)
    s += _adj_d_axis(g, u, idx, ub + (ndim - 1) * N, gv, i2, n2, 1, b2, c2, zero)
    return s


@cuda.jit(device=True)
def _du(d, idx, v, w, i, n, s, bc, zero):
    """``∂(flux)/∂u / c``: the upwind difference that multiplies ``u`` (``u ≥ 0`` branch at 0)."""
    if w < zero:
        return upper(d, idx, i, n, s, bc, v, zero) - v
    return v - lower(d, idx, i, n, s, bc, v, zero)


@cuda.jit
def _adjoint_d_kernel(g, gout, u, F, N, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, zero):
    total = g.size
    s0 = n1 * n2
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        cell = idx % N
        b = idx // N // F
        i2 = cell % n2
        i1 = (cell // n2) % n1
        i0 = cell // s0
        gout[idx] = _adj_d_cell(g, u, idx, b * ndim * N + cell, g[idx], i0, i1, i2, N, n0, n1, n2, ndim,
                                c0, c1, c2, b0, b1, b2, zero)


@cuda.jit
def _adjoint_du_kernel(g, gout, need_g, d, u, gu, Bu, F, N, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2, zero):
    total = Bu * N
    s0 = n1 * n2
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        cell = t % N
        b = t // N
        i2 = cell % n2
        i1 = (cell // n2) % n1
        i0 = cell // s0
        ub = b * ndim * N + cell
        w0 = u[ub]
        w1 = u[ub + (ndim - 2) * N] if ndim >= 2 else zero
        w2 = u[ub + (ndim - 1) * N]
        a0 = zero
        a1 = zero
        a2 = zero
        for f in range(F):
            idx = (b * F + f) * N + cell
            gv = g[idx]
            if need_g:
                gout[idx] = _adj_d_cell(g, u, idx, ub, gv, i0, i1, i2, N, n0, n1, n2, ndim,
                                        c0, c1, c2, b0, b1, b2, zero)
            v = d[idx]
            if ndim == 3:
                a0 -= gv * _du(d, idx, v, w0, i0, n0, s0, b0, zero)
            if ndim >= 2:
                a1 -= gv * _du(d, idx, v, w1, i1, n1, n2, b1, zero)
            a2 -= gv * _du(d, idx, v, w2, i2, n2, 1, b2, zero)
        if ndim == 3:
            gu[ub] += c0 * a0
        if ndim >= 2:
            gu[ub + (ndim - 2) * N] += c1 * a1
        gu[ub + (ndim - 1) * N] += c2 * a2


def _scalars(dtype, coef, bc, shape3, ndim):
    t = np.dtype(dtype).type
    return (*(int(n) for n in shape3), int(ndim), *(t(c) for c in coef), *(int(b) for b in bc), t(0))


def advect_forward(be, d, u, coef, bc, shape3, ndim, steps, save_states, save_every=1, out=None, states=None):
    Bu, F, N = d.shape
    size = Bu * F * N
    n_saved = (steps + save_every - 1) // save_every
    if out is None:
        out = be.empty((Bu, F, N), d.dtype)
    if not save_states:
        states = None
    elif states is None:
        states = be.empty((n_saved, Bu, F, N), d.dtype)
    tail = _scalars(d.dtype, coef, bc, shape3, ndim)
    dd, ud, od = be.dev(d), be.dev(u), be.dev(out)
    sd = be.dev(states).reshape(n_saved, size) if save_states else None
    buf = be.dev(be.empty((size,), d.dtype)) if (steps > 1 and (not save_states or save_every > 1)) else None
    nb = blocks_for(size)
    src = dd
    for t in range(steps):
        if save_states and t < steps - 1 and (t + 1) % save_every == 0:
            dst = sd[(t + 1) // save_every]  # a saved state is written straight into its slot
        else:  # alternate so that the last step lands in out (never the step's input)
            dst = od if (steps - 1 - t) % 2 == 0 else buf
        # step 0 also keeps d^0
        keep, do_keep = (sd[0], True) if (save_states and t == 0) else (dst, False)
        be.launch("advect_forward", _forward_kernel, nb, (src, dst, keep, do_keep, ud, F, N) + tail)
        src = dst
    return out, states


def advect_adjoint(be, g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu=None):
    Bu, F, N = g.shape
    size = Bu * F * N
    tail = _scalars(g.dtype, coef, bc, shape3, ndim)
    gd = be.empty((Bu, F, N), g.dtype) if (need_d or steps > 1) else None
    if need_u and gu is None:
        gu = be.zeros(u.shape, u.dtype)  # every step adds to gu: a given one accumulates all of them
    elif not need_u:
        gu = None
    gdd = be.dev(gd) if gd is not None else None
    buf = be.dev(be.empty((size,), g.dtype)) if steps > 1 else None
    ud = be.dev(u)
    gud = be.dev(gu) if need_u else None
    sd = be.dev(states).reshape(steps, size) if need_u else None
    cur = be.dev(g)
    nb_d = blocks_for(size)
    nb_u = blocks_for(Bu * N)
    for k in range(steps):
        t = steps - 1 - k
        need_g = need_d or t > 0
        # alternate so that the gradient w.r.t. d^0 lands in gd
        dst = gdd if t % 2 == 0 else buf
        if need_u:
            be.launch("advect_adjoint_du", _adjoint_du_kernel, nb_u,
                      (cur, dst if need_g else cur, need_g, sd[t], ud, gud, Bu, F, N) + tail)
        else:
            be.launch("advect_adjoint_d", _adjoint_d_kernel, nb_d, (cur, dst, ud, F, N) + tail)
        cur = dst
    return (gd if need_d else None), gu
