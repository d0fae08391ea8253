"""MAC (staggered) advection and interpolation, forward and adjoint, as ``numba.cuda.jit`` kernels
(DESIGN.md §6).

The per-entry formulas are the stencil bodies of :mod:`gpudp.backends.mac_stencils`, compiled here as CUDA
device functions (the ``cpu`` backend compiles the same bodies with ``numba.njit``). Every kernel is a
grid-stride loop with one thread per output entry (gather form, no atomics):

``mac_cells_forward``     one step of the cell fields, thread per ``(velocity b, field f, cell)``; optionally
                          also copies its input into a saved-state buffer.
``mac_cells_adjoint_q``   the step's gradient w.r.t. the cell fields, thread per ``(b, f, cell)``.
``mac_cells_adjoint_u``   the velocity gradient of one axis, thread per ``(b, face)``, summed over the ``F``
                          fields and added to the steps before it in place (each thread owns its face).
``mac_faces_forward``     one step of a staggered component, thread per ``(b, f, face)``.
``mac_faces_adjoint_q``   its gradient w.r.t. that component, thread per ``(b, f, face)``.
``mac_faces_adjoint_u``   the velocity gradient of one axis, thread per ``(b, face)``, over fields and components.
``mac_at_centers`` …      interpolation and its transpose, thread per output entry.

A ``steps = T`` call queues one launch per step (and axis) on one stream; the host never waits in between.
Arithmetic is in the arrays' dtype (``Δt/Δx`` passed as scalars of that dtype).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from .. import mac_stencils
from ._common import blocks_for

_S = mac_stencils.build(cuda.jit(device=True))
face_dims, flat = _S.face_dims, _S.flat
cell_update, cell_adjoint_q, cell_adjoint_u = _S.cell_update, _S.cell_adjoint_q, _S.cell_adjoint_u
face_update, face_adjoint_q, face_adjoint_u = _S.face_update, _S.face_adjoint_q, _S.face_adjoint_u
center_value, center_adjoint = _S.center_value, _S.center_adjoint
face_value, face_value_adjoint = _S.face_value, _S.face_value_adjoint


@cuda.jit(device=True)
def _coords(j, m1, m2):
    """Coordinates of flat index ``j`` in dims ``(·, m1, m2)``."""
    x2 = j % m2
    t = j // m2
    return t // m1, t % m1, x2


# -- cell-centred fields ------------------------------------------------------------------------------------

@cuda.jit
def _cells_forward_kernel(src, dst, keep, do_keep, u0, u1, u2, Bu, F, n0, n1, n2, b0, b1, b2, c0, c1, c2, off):
    n, bc, c = (n0, n1, n2), (b0, b1, b2), (c0, c1, c2)
    N = n0 * n1 * n2
    M0, M1, M2 = u0.size // Bu, u1.size // Bu, u2.size // Bu
    for idx in range(cuda.grid(1), Bu * F * N, cuda.gridsize(1)):
        bf = idx // N
        b = bf // F
        x0, x1, x2 = _coords(idx % N, n1, n2)
        if do_keep:
            keep[idx] = src[idx]
        dst[idx] = cell_update(src, bf * N, u0, u1, u2, b * M0, b * M1, b * M2, x0, x1, x2, n, bc, c, off)


@cuda.jit
def _cells_adjoint_q_kernel(g, gout, u0, u1, u2, Bu, F, n0, n1, n2, b0, b1, b2, c0, c1, c2, off):
    n, bc, c = (n0, n1, n2), (b0, b1, b2), (c0, c1, c2)
    N = n0 * n1 * n2
    M0, M1, M2 = u0.size // Bu, u1.size // Bu, u2.size // Bu
    for idx in range(cuda.grid(1), Bu * F * N, cuda.gridsize(1)):
        bf = idx // N
        b = bf // F
        x0, x1, x2 = _coords(idx % N, n1, n2)
        gout[idx] = cell_adjoint_q(g, bf * N, u0, u1, u2, b * M0, b * M1, b * M2, x0, x1, x2, n, bc, c, off)


@cuda.jit
def _cells_adjoint_u_kernel(g, q, ua, gua, a, accumulate, Bu, F, n0, n1, n2, b0, b1, b2, ca):
    n, bc = (n0, n1, n2), (b0, b1, b2)
    N = n0 * n1 * n2
    m = face_dims(a, n, bc)
    M = m[0] * m[1] * m[2]
    for idx in range(cuda.grid(1), Bu * M, cuda.gridsize(1)):
        b = idx // M
        x0, x1, x2 = _coords(idx % M, m[1], m[2])
        v = cell_adjoint_u(g, q, b * F * N, F, N, ua, b * M, a, x0, x1, x2, n, bc, ca)
        gua[idx] = gua[idx] + v if accumulate else v


# -- staggered fields ---------------------------------------------------------------------------------------
# Component ``a`` with its velocity ``ua`` and the velocities ``u1``, ``u2`` of the other axes ``b1 < b2``.

@cuda.jit
def _faces_forward_kernel(qa, oa, a, ua, b1, u1, b2, u2, Bu, F, n0, n1, n2, bc0, bc1, bc2, c0, c1, c2, off):
    n, bc, c = (n0, n1, n2), (bc0, bc1, bc2), (c0, c1, c2)
    M, M1, M2 = ua.size // Bu, u1.size // Bu, u2.size // Bu
    m = face_dims(a, n, bc)
    for idx in range(cuda.grid(1), Bu * F * M, cuda.gridsize(1)):
        bf = idx // M
        b = bf // F
        x0, x1, x2 = _coords(idx % M, m[1], m[2])
        oa[idx] = face_update(qa, bf * M, a, ua, b * M, b1, u1, b * M1, b2, u2, b * M2, x0, x1, x2, n, bc, c, off)


@cuda.jit
def _faces_adjoint_q_kernel(ga, gqa, a, ua, b1, u1, b2, u2, Bu, F, n0, n1, n2, bc0, bc1, bc2, c0, c1, c2, off):
    n, bc, c = (n0, n1, n2), (bc0, bc1, bc2), (c0, c1, c2)
    M, M1, M2 = ua.size // Bu, u1.size // Bu, u2.size // Bu
    m = face_dims(a, n, bc)
    for idx in range(cuda.grid(1), Bu * F * M, cuda.gridsize(1)):
        bf = idx // M
        b = bf // F
        x0, x1, x2 = _coords(idx % M, m[1], m[2])
        gqa[idx] = face_adjoint_q(ga, bf * M, a, ua, b * M, b1, u1, b * M1, b2, u2, b * M2, x0, x1, x2, n, bc, c,
                                  off)


@cuda.jit
def _faces_adjoint_u_kernel(gua, k, uk, qk, gk, a1, q1, g1, a2, q2, g2, Bu, F, n0, n1, n2, bc0, bc1, bc2, c0, c1,
                            c2, off):
    n, bc, c = (n0, n1, n2), (bc0, bc1, bc2), (c0, c1, c2)
    Mk = uk.size // Bu
    M1, M2 = q1.size // (Bu * F), q2.size // (Bu * F)  # stand-ins of padding axes are never read
    m = face_dims(k, n, bc)
    for idx in range(cuda.grid(1), Bu * Mk, cuda.gridsize(1)):
        b = idx // Mk
        x0, x1, x2 = _coords(idx % Mk, m[1], m[2])
        gua[idx] = face_adjoint_u(k, uk, b * Mk, qk, gk, b * F * Mk, Mk, a1, q1, g1, b * F * M1, M1, a2, q2, g2,
                                  b * F * M2, M2, F, x0, x1, x2, n, bc, c, off)


# -- interpolation ------------------------------------------------------------------------------------------

@cuda.jit
def _at_centers_kernel(u0, u1, u2, out, B, n0, n1, n2, b0, b1, b2, off):
    n, bc = (n0, n1, n2), (b0, b1, b2)
    N = n0 * n1 * n2
    D = 3 - off
    M0, M1, M2 = u0.size // B, u1.size // B, u2.size // B
    for idx in range(cuda.grid(1), B * D * N, cuda.gridsize(1)):
        row = idx // N  # b * D + (a - off)
        a = off + row % D
        b = row // D
        x0, x1, x2 = _coords(idx % N, n1, n2)
        if a == 0:
            out[idx] = center_value(u0, b * M0, 0, x0, x1, x2, n, bc)
        elif a == 1:
            out[idx] = center_value(u1, b * M1, 1, x0, x1, x2, n, bc)
        else:
            out[idx] = center_value(u2, b * M2, 2, x0, x1, x2, n, bc)


@cuda.jit
def _at_centers_adjoint_kernel(g, oa, a, B, n0, n1, n2, b0, b1, b2, off):
    n, bc = (n0, n1, n2), (b0, b1, b2)
    N = n0 * n1 * n2
    D = 3 - off
    m = face_dims(a, n, bc)
    M = m[0] * m[1] * m[2]
    for idx in range(cuda.grid(1), B * M, cuda.gridsize(1)):
        b = idx // M
        x0, x1, x2 = _coords(idx % M, m[1], m[2])
        oa[idx] = center_adjoint(g, (b * D + a - off) * N, a, x0, x1, x2, n, bc)


@cuda.jit
def _at_faces_kernel(q, oa, a, B, n0, n1, n2, b0, b1, b2):
    n, bc = (n0, n1, n2), (b0, b1, b2)
    N = n0 * n1 * n2
    m = face_dims(a, n, bc)
    M = m[0] * m[1] * m[2]
    for idx in range(cuda.grid(1), B * M, cuda.gridsize(1)):
        b = idx // M
        x0, x1, x2 = _coords(idx % M, m[1], m[2])
        oa[idx] = face_value(q, b * N, a, x0, x1, x2, n, bc)


@cuda.jit
def _at_faces_adjoint_kernel(g0, g1, g2, out, B, n0, n1, n2, b0, b1, b2, off):
    n, bc = (n0, n1, n2), (b0, b1, b2)
    N = n0 * n1 * n2
    M0, M1, M2 = g0.size // B, g1.size // B, g2.size // B
    for idx in range(cuda.grid(1), B * N, cuda.gridsize(1)):
        b = idx // N
        x0, x1, x2 = _coords(idx % N, n1, n2)
        out[idx] = face_value_adjoint(g0, g1, g2, b * M0, b * M1, b * M2, x0, x1, x2, n, bc, off)


# -- launch wrappers (the backend methods) --------------------------------------------------------------------

def _grid(geom):
    return (*(int(n) for n in geom.shape3), *(int(b) for b in geom.bc))


def _coef(dt, geom, dtype):
    t = np.dtype(dtype).type
    return tuple(t(dt / h) for h in geom.spacing)


def _slots(be, arrays, ndim, dummy):
    """Flat device views of per-component arrays at their padded axes; ``dummy`` (never read: its axis is
    padding) fills the others. A dummy has size 0 or the stand-in's size; the kernels only use the sizes of
    real axes."""
    views = [dummy] * 3
    for k, x in enumerate(arrays):
        views[3 - ndim + k] = be.dev(x)
    return views


def _others(a):
    """The two padded axes other than ``a``, in order."""
    return (1, 2) if a == 0 else ((0, 2) if a == 1 else (0, 1))


def _velocities(a, ud):
    """Kernel arguments ``a, u_a, b1, u_b1, b2, u_b2`` of component ``a``."""
    b1, b2 = _others(a)
    return (a, ud[a], b1, ud[b1], b2, ud[b2])


def _face_arrays(be, lead, geom, dtype):
    return tuple(be.empty(lead + (geom.face_count(a),), dtype) for a in geom.axes)


def advect_cells(be, q, u, dt, geom, steps, save_states, save_every=1, out=None, states=None):
    q = be.ascontiguous(q)
    Bu, F, N = q.shape
    size = Bu * F * N
    dtype = q.dtype
    off = 3 - geom.ndim
    n_saved = (steps + save_every - 1) // save_every
    if out is None:
        out = be.empty((Bu, F, N), dtype)
    if not save_states:
        states = None
    elif states is None:
        states = be.empty((n_saved, Bu, F, N), dtype)
    qd, od = be.dev(q), be.dev(out)
    sd = be.dev(states).reshape(n_saved, size) if save_states else None
    buf = be.dev(be.empty((size,), dtype)) if (steps > 1 and (not save_states or save_every > 1)) else None
    ud = _slots(be, [be.ascontiguous(x) for x in u], geom.ndim, od)
    tail = (Bu, F, *_grid(geom), *_coef(dt, geom, dtype), off)
    nb = blocks_for(size)
    src = qd
    for t in range(steps):
        if save_states and t < steps - 1 and (t + 1) % save_every == 0:
            dst = sd[(t + 1) // save_every]  # a saved state is written straight into its slot
        else:  # alternate so that the last step lands in out (never the step's input)
            dst = od if (steps - 1 - t) % 2 == 0 else buf
        # the first step also keeps q^0
        keep, do_keep = (sd[0], True) if (save_states and t == 0) else (dst, False)
        be.launch("mac_cells_forward", _cells_forward_kernel, nb, (src, dst, keep, do_keep, *ud) + tail)
        src = dst
    return out, states


def advect_cells_adjoint(be, g, states, u, dt, geom, steps, need_q, need_u, gu=None):
    g = be.ascontiguous(g)
    Bu, F, N = g.shape
    size = Bu * F * N
    dtype = g.dtype
    off = 3 - geom.ndim
    grid, coef = _grid(geom), _coef(dt, geom, dtype)
    gq = be.empty((Bu, F, N), dtype) if (need_q or steps > 1) else None
    buf = be.dev(be.empty((size,), dtype)) if steps > 1 else None
    gd = be.dev(g)
    ud = _slots(be, [be.ascontiguous(x) for x in u], geom.ndim, gd)
    acc_u = need_u and gu is not None  # add every step to the given gu (else the first step overwrites)
    if not need_u:
        gu = None
    elif gu is None:
        gu = _face_arrays(be, (Bu,), geom, dtype)
    sd = be.dev(be.ascontiguous(states)).reshape(steps, size) if need_u else None
    gqd = be.dev(gq) if gq is not None else None
    cur = gd
    for k in range(steps):
        t = steps - 1 - k
        if need_u:  # reads the step's output gradient before the q-adjoint of this step moves on
            for j, a in enumerate(geom.axes):
                be.launch("mac_cells_adjoint_u", _cells_adjoint_u_kernel, blocks_for(gu[j].size),
                          (cur, sd[t], ud[a], be.dev(gu[j]), a, k > 0 or acc_u, Bu, F) + grid + (coef[a],))
        if need_q or t > 0:
            dst = gqd if t % 2 == 0 else buf  # the gradient of q^0 lands in gq
            be.launch("mac_cells_adjoint_q", _cells_adjoint_q_kernel, blocks_for(size),
                      (cur, dst, *ud, Bu, F) + grid + coef + (off,))
            cur = dst
    return (gq if need_q else None), gu


def advect_faces(be, q, u, dt, geom):
    q = [be.ascontiguous(x) for x in q]
    Bu, F = q[0].shape[:2]
    dtype = q[0].dtype
    off = 3 - geom.ndim
    out = _face_arrays(be, (Bu, F), geom, dtype)
    ud = _slots(be, [be.ascontiguous(x) for x in u], geom.ndim, be.dev(q[0]))
    tail = (Bu, F, *_grid(geom), *_coef(dt, geom, dtype), off)
    for j, a in enumerate(geom.axes):
        be.launch("mac_faces_forward", _faces_forward_kernel, blocks_for(out[j].size),
                  (be.dev(q[j]), be.dev(out[j])) + _velocities(a, ud) + tail)
    return out


def advect_faces_adjoint(be, g, q, u, dt, geom, need_q, need_u):
    g = [be.ascontiguous(x) for x in g]
    Bu, F = g[0].shape[:2]
    dtype = g[0].dtype
    off = 3 - geom.ndim
    dummy = be.dev(g[0])
    ud = _slots(be, [be.ascontiguous(x) for x in u], geom.ndim, dummy)
    tail = (Bu, F, *_grid(geom), *_coef(dt, geom, dtype), off)
    gq = gu = None
    if need_q:
        gq = _face_arrays(be, (Bu, F), geom, dtype)
        for j, a in enumerate(geom.axes):
            be.launch("mac_faces_adjoint_q", _faces_adjoint_q_kernel, blocks_for(gq[j].size),
                      (be.dev(g[j]), be.dev(gq[j])) + _velocities(a, ud) + tail)
    if need_u:
        gu = _face_arrays(be, (Bu,), geom, dtype)
        gd = _slots(be, g, geom.ndim, dummy)
        qd = _slots(be, [be.ascontiguous(x) for x in q], geom.ndim, dummy)
        for j, k in enumerate(geom.axes):
            a1, a2 = _others(k)
            be.launch("mac_faces_adjoint_u", _faces_adjoint_u_kernel, blocks_for(gu[j].size),
                      (be.dev(gu[j]), k, ud[k], qd[k], gd[k], a1, qd[a1], gd[a1], a2, qd[a2], gd[a2]) + tail)
    return gq, gu


def at_centers(be, u, geom):
    u = [be.ascontiguous(x) for x in u]
    B = u[0].shape[0]
    out = be.empty((B, geom.ndim, geom.size), u[0].dtype)
    od = be.dev(out)
    be.launch("mac_at_centers", _at_centers_kernel, blocks_for(out.size),
              (*_slots(be, u, geom.ndim, od), od, B, *_grid(geom), 3 - geom.ndim))
    return out


def at_centers_adjoint(be, g, geom):
    g = be.ascontiguous(g)
    B = g.shape[0]
    out = _face_arrays(be, (B,), geom, g.dtype)
    gd = be.dev(g)
    for j, a in enumerate(geom.axes):
        be.launch("mac_at_centers_adjoint", _at_centers_adjoint_kernel, blocks_for(out[j].size),
                  (gd, be.dev(out[j]), a, B, *_grid(geom), 3 - geom.ndim))
    return out


def at_faces(be, c, geom):
    c = be.ascontiguous(c)
    B = c.shape[0]
    out = _face_arrays(be, (B,), geom, c.dtype)
    cd = be.dev(c)
    for j, a in enumerate(geom.axes):
        be.launch("mac_at_faces", _at_faces_kernel, blocks_for(out[j].size),
                  (cd, be.dev(out[j]), a, B, *_grid(geom)))
    return out


def at_faces_adjoint(be, g, geom):
    g = [be.ascontiguous(x) for x in g]
    B = g[0].shape[0]
    out = be.empty((B, geom.size), g[0].dtype)
    od = be.dev(out)
    be.launch("mac_at_faces_adjoint", _at_faces_adjoint_kernel, blocks_for(out.size),
              (*_slots(be, g, geom.ndim, od), od, B, *_grid(geom), 3 - geom.ndim))
    return out
