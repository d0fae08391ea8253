"""Launch wrappers of the upwind advection kernels (``kernels/advection.cu``; formulas in its header).

Multi-step loops launch one kernel per step on the current stream and never synchronise with the host: the
forward pass ping-pongs between two buffers (the last step lands in the output) and, when asked, the forward
kernel itself copies each saved step's input state into its slot of ``states`` (every step, or every
``save_every``-th for checkpoints); the adjoint runs the transposed steps in reverse order the same way. Without a
velocity gradient only ``advect_adjoint_d`` runs; with one, ``advect_adjoint_du`` computes both gradients of a
step in one pass, adding the velocity gradient into ``gu`` (zeros, or the array a checkpointed backward pass
carries from segment to segment).
"""
from __future__ import annotations

import numpy as np

from ._module import grid_1d

_FILE = "advection.cu"


def _geometry(dtype, shape3, ndim, coef, bc):
    T = np.dtype(dtype).type
    i32 = np.int32
    n0, n1, n2 = shape3
    return (i32(n0), i32(n1), i32(n2), i32(ndim), T(coef[0]), T(coef[1]), T(coef[2]),
            i32(bc[0]), i32(bc[1]), i32(bc[2]))


def advect_forward(be, d, u, coef, bc, shape3, ndim, steps, save_states, save_every=1, out=None, states=None):
    cp = be.cp
    Bu, F, N = d.shape
    if out is None:
        out = cp.empty_like(d)
    buf = cp.empty_like(d) if steps > 1 else None
    if not save_states:
        states = None
    elif states is None:
        states = cp.empty(((steps + save_every - 1) // save_every,) + d.shape, d.dtype)
    geo = _geometry(d.dtype, shape3, ndim, coef, bc)
    grid = grid_1d(Bu * F * N)
    src = d
    for t in range(steps):
        dst = out if (steps - 1 - t) % 2 == 0 else buf   # the last step writes ``out``
        keep = save_states and t % save_every == 0        # the step's input is d^t of a saved slot
        save = states[t // save_every] if keep else dst   # not written when do_save == 0
        be.launch(_FILE, "advect_forward", d.dtype, grid,
                  (src, dst, save, np.int32(1 if keep else 0), u, np.int32(Bu), np.int32(F), *geo))
        src = dst
    return out, states


def advect_adjoint(be, g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu=None):
    cp = be.cp
    Bu, F, N = g.shape
    gd = cp.empty_like(g)
    buf = cp.empty_like(g) if steps > 1 else gd
    if need_u and gu is None:
        gu = cp.zeros_like(u)  # every step adds to gu: a given one accumulates all of them
    elif not need_u:
        gu = None
    geo = _geometry(g.dtype, shape3, ndim, coef, bc)
    cur = g
    for k in range(steps):
        t = steps - 1 - k
        dst = gd if t % 2 == 0 else buf                   # the gradient of d^0 lands in ``gd``
        if need_u:
            need_g = need_d or t > 0
            be.launch(_FILE, "advect_adjoint_du", g.dtype, grid_1d(Bu * N),
                      (cur, dst, np.int32(1 if need_g else 0), states[t], u, gu, np.int32(Bu), np.int32(F), *geo))
        else:
            be.launch(_FILE, "advect_adjoint_d", g.dtype, grid_1d(Bu * F * N),
                      (cur, dst, u, np.int32(Bu), np.int32(F), *geo))
        cur = dst
    return (gd if need_d else None), gu
