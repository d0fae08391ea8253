"""Launch wrappers of MAC (staggered) advection and interpolation (``kernels/mac.cu``; formulas in its header).

Layouts are those of the interface in ``gpudp/backends/base.py``. Face-valued results of every axis come from
one launch (the kernels number the faces of all axes one component after another); the kernels take one
pointer per padded axis, padding axes getting a stand-in that is never read.

``steps > 1`` for a cell-centred field launches one kernel per step on the current stream and never
synchronises with the host: the forward pass ping-pongs between two buffers (the last step lands in the
output) and, when asked, the forward kernel itself copies each saved step's input state into its slot of
``states`` (every step, or every ``save_every``-th for checkpoints); the adjoint runs the transposed steps in
reverse order the same way: per step, ``mac_cells_adjoint_u`` adds the step's velocity gradient into ``gu``
(when asked: zeros, or the array a checkpointed backward pass carries from segment to segment) and ``mac_cells_adjoint_q`` writes the gradient of the step's
input into the other buffer (skipped for the first step's input when ``q`` needs no gradient).
"""
from __future__ import annotations

import numpy as np

from ._module import grid_1d

_FILE = "mac.cu"


def _geometry(geom):
    """``(n0, n1, n2, ndim, b0, b1, b2)`` as the kernels' int32 parameters."""
    i32 = np.int32
    return (*(i32(n) for n in geom.shape3), i32(geom.ndim), *(i32(b) for b in geom.bc))


def _coef(dtype, dt, geom):
    """``c_a = dt / dx_a`` per padded axis, in the kernels' float type."""
    T = np.dtype(dtype).type
    return tuple(T(float(dt) / h) for h in geom.spacing)


def _per_axis(arrays, ndim):
    """One array per padded axis from the ``ndim`` real ones (padding axes get the first as a stand-in)."""
    arrays = list(arrays)
    return [arrays[0]] * (3 - ndim) + arrays


def _contiguous(cp, arrays):
    return tuple(cp.ascontiguousarray(a) for a in arrays)


def _face_total(geom):
    return sum(geom.face_count(a) for a in geom.axes)


def _empty_faces(cp, lead, geom, dtype):
    return tuple(cp.empty(lead + (geom.face_count(a),), dtype) for a in geom.axes)


# -- cell-centred fields ------------------------------------------------------------------------------------

def advect_cells(be, q, u, dt, geom, steps, save_states, save_every=1, out=None, states=None):
    cp = be.cp
    q = cp.ascontiguousarray(q)
    u = _contiguous(cp, u)
    Bu, F, N = q.shape
    if out is None:
        out = cp.empty_like(q)
    if not save_states:
        states = None
    elif states is None:
        states = cp.empty(((steps + save_every - 1) // save_every,) + q.shape, q.dtype)
    if steps == 0:
        out[...] = q
        return out, states
    buf = cp.empty_like(q) if steps > 1 else None
    rest = (*_per_axis(u, geom.ndim), np.int32(Bu), np.int32(F), *_geometry(geom), *_coef(q.dtype, dt, geom))
    grid = grid_1d(Bu * F * N)
    src = q
    for t in range(steps):
        dst = out if (steps - 1 - t) % 2 == 0 else buf   # the last step writes ``out``
        keep = save_states and t % save_every == 0        # the step's input is q^t of a saved slot
        save = states[t // save_every] if keep else dst   # not written when do_save == 0
        be.launch(_FILE, "mac_cells_forward", q.dtype, grid, (src, dst, save, np.int32(1 if keep else 0), *rest))
        src = dst
    return out, states


def advect_cells_adjoint(be, g, states, u, dt, geom, steps, need_q, need_u, gu=None):
    cp = be.cp
    g = cp.ascontiguousarray(g)
    u = _contiguous(cp, u)
    Bu, F, N = g.shape
    if need_u and gu is None:
        gu = tuple(cp.zeros_like(c) for c in u)  # every step adds to gu: a given one accumulates all of them
    elif not need_u:
        gu = None
    if steps == 0:
        return (g.copy() if need_q else None), gu
    if need_u:
        if states is None:
            raise ValueError("mac_advect_cells_adjoint: the velocity gradient needs the saved states "
                             "(states=None was given)")
        states = cp.ascontiguousarray(states)
    if not (need_q or need_u):
        return None, None
    gq = cp.empty_like(g) if need_q or steps > 1 else None
    buf = cp.empty_like(g) if steps > 1 else None
    uargs = _per_axis(u, geom.ndim)
    rest = (np.int32(Bu), np.int32(F), *_geometry(geom), *_coef(g.dtype, dt, geom))
    grid_q, grid_u = grid_1d(Bu * F * N), grid_1d(Bu * _face_total(geom))
    cur = g
    for k in range(steps):
        t = steps - 1 - k
        if need_u:
            be.launch(_FILE, "mac_cells_adjoint_u", g.dtype, grid_u,
                      (cur, states[t], *uargs, *_per_axis(gu, geom.ndim), *rest))
        if t > 0 or need_q:
            dst = gq if t % 2 == 0 else buf               # the gradient of q^0 lands in ``gq``
            be.launch(_FILE, "mac_cells_adjoint_q", g.dtype, grid_q, (cur, dst, *uargs, *rest))
            cur = dst
    return (gq if need_q else None), gu


# -- staggered fields ---------------------------------------------------------------------------------------

def advect_faces(be, q, u, dt, geom):
    cp = be.cp
    q = _contiguous(cp, q)
    u = _contiguous(cp, u)
    Bu, F = q[0].shape[:2]
    out = _empty_faces(cp, (Bu, F), geom, q[0].dtype)
    be.launch(_FILE, "mac_faces_forward", q[0].dtype, grid_1d(Bu * F * _face_total(geom)),
              (*_per_axis(q, geom.ndim), *_per_axis(out, geom.ndim), *_per_axis(u, geom.ndim), np.int32(Bu),
               np.int32(F), *_geometry(geom), *_coef(q[0].dtype, dt, geom)))
    return out


def advect_faces_adjoint(be, g, q, u, dt, geom, need_q, need_u):
    cp = be.cp
    g = _contiguous(cp, g)
    u = _contiguous(cp, u)
    Bu, F = g[0].shape[:2]
    dtype = g[0].dtype
    rest = (np.int32(Bu), np.int32(F), *_geometry(geom), *_coef(dtype, dt, geom))
    gq = gu = None
    if need_q:
        gq = _empty_faces(cp, (Bu, F), geom, dtype)
        be.launch(_FILE, "mac_faces_adjoint_q", dtype, grid_1d(Bu * F * _face_total(geom)),
                  (*_per_axis(g, geom.ndim), *_per_axis(gq, geom.ndim), *_per_axis(u, geom.ndim), *rest))
    if need_u:
        q = _contiguous(cp, q)
        gu = _empty_faces(cp, (Bu,), geom, dtype)
        be.launch(_FILE, "mac_faces_adjoint_u", dtype, grid_1d(Bu * _face_total(geom)),
                  (*_per_axis(g, geom.ndim), *_per_axis(q, geom.ndim), *_per_axis(u, geom.ndim),
                   *_per_axis(gu, geom.ndim), *rest))
    return gq, gu


# -- interpolation ------------------------------------------------------------------------------------------

def at_centers(be, u, geom):
    cp = be.cp
    u = _contiguous(cp, u)
    B = u[0].shape[0]
    out = cp.empty((B, geom.ndim, geom.size), u[0].dtype)
    be.launch(_FILE, "mac_at_centers", u[0].dtype, grid_1d(out.size),
              (*_per_axis(u, geom.ndim), out, np.int32(B), *_geometry(geom)))
    return out


def at_centers_adjoint(be, g, geom):
    cp = be.cp
    g = cp.ascontiguousarray(g)
    B = g.shape[0]
    out = _empty_faces(cp, (B,), geom, g.dtype)
    be.launch(_FILE, "mac_at_centers_adjoint", g.dtype, grid_1d(B * _face_total(geom)),
              (g, *_per_axis(out, geom.ndim), np.int32(B), *_geometry(geom)))
    return out


def at_faces(be, c, geom):
    cp = be.cp
    c = cp.ascontiguousarray(c)
    B = c.shape[0]
    out = _empty_faces(cp, (B,), geom, c.dtype)
    be.launch(_FILE, "mac_at_faces", c.dtype, grid_1d(B * _face_total(geom)),
              (c, *_per_axis(out, geom.ndim), np.int32(B), *_geometry(geom)))
    return out


def at_faces_adjoint(be, g, geom):
    cp = be.cp
    g = _contiguous(cp, g)
    B = g[0].shape[0]
    out = cp.empty((B, geom.size), g[0].dtype)
    be.launch(_FILE, "mac_at_faces_adjoint", g[0].dtype, grid_1d(out.size),
              (*_per_axis(g, geom.ndim), out, np.int32(B), *_geometry(geom)))
    return out
