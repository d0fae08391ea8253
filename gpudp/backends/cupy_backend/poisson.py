"""Batched preconditioned conjugate gradients on ``A = −laplace`` (``kernels/poisson.cu``).

One iteration is four launches and no host synchronisation::

    cg_apply    p ← M⁻¹r + β p,  q ← A p,  partial sums of p·q      (one pass; p ping-pongs between 2 buffers)
    cg_alpha    α ← r·z / p·q                                        (per system, on the device)
    cg_update   x ← x + α p,  r ← r − α q,  partial sums of r·z, r·r  (one pass)
    cg_beta     β ← r·z_new / r·z;  active ← ‖r‖² > tol² ‖b‖²          (per system, on the device)

``M`` is ``diag(A)`` (Jacobi) or the identity. The host reads the per-system ``active`` flags every
``check_every`` iterations. When every system has stopped, the true residual ``b − A x`` is computed; where
the recursively updated residual drifted from it (float32), CG restarts from the current ``x`` with the true
residual, while iterations are left and the restart helps. The reported residual is always the true one.

Singular operator (no dirichlet axis; constant null space): the mean of ``b`` is removed per system, the
initial guess is made zero-mean and so is the result (the pseudo-inverse solution). A system with a zero
(mean-free) right-hand side gets ``x = 0`` and residual 0.
"""
from __future__ import annotations

import math

import numpy as np

from . import difference
from ._module import BLOCK

_FILE = "poisson.cu"

# Columns of the per-system scalar table ``sc`` (kernels/poisson.cu, SC_*).
SC_RZ, SC_PAP, SC_RR, SC_BB, SC_ALPHA, SC_BETA, SC_ACTIVE, SC_ITERS = range(8)
SC_WIDTH = 8

#: Most restarts from the true residual in one solve.
MAX_RESTARTS = 8
_MAX_GRID_Y = 65535


def _blocks_per_system(be, N, B):
    """Blocks along x of the vector kernels: enough to fill the device, no more than the cells need."""
    need = -(-N // BLOCK)
    fill = -(-8 * be.sm_count() // min(B, _MAX_GRID_Y))
    return int(max(1, min(need, fill, 4096)))


def cg_solve(be, b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular, preconditioner, check_every):
    cp = be.cp
    B, N = b.shape
    dtype = b.dtype
    f64 = cp.float64
    maxiter = int(maxiter) if maxiter is not None else max(10 * N, 100)
    check_every = max(1, int(check_every or 1))
    jacobi = np.int32(1 if preconditioner == "jacobi" else 0)
    if preconditioner not in (None, "jacobi"):
        raise ValueError(f"cg_solve: unknown preconditioner {preconditioner!r}; expected None or 'jacobi'")

    b = cp.ascontiguousarray(b)
    if b.size == 0:
        return cp.zeros_like(b), 0, 0.0
    # laplace(x) = b  <=>  A x = rhs with A = -laplace, rhs = -b (mean-free when singular); r = rhs - A x
    rhs = (b.mean(axis=1, keepdims=True) - b) if singular else -b
    bb = (rhs.astype(f64) ** 2).sum(axis=1)
    if x0 is None:
        x = cp.zeros_like(b)
        r = rhs.copy()
    else:
        x = cp.array(x0, dtype=dtype, order="C", copy=True)
        if singular:
            x -= x.mean(axis=1, keepdims=True)
        r = rhs + difference.laplace(be, x, inv_dx, bc, shape3, ndim)
    p_old = cp.zeros_like(b)
    p_new = cp.zeros_like(b)
    q = cp.zeros_like(b)
    sc = cp.zeros((B, SC_WIDTH), f64)
    sc[:, SC_BB] = bb

    nblk = _blocks_per_system(be, N, B)
    gy = min(B, _MAX_GRID_Y)
    partial = cp.empty(B * nblk, f64)
    partial2 = cp.empty(B * nblk * 2, f64)
    geo = difference.geometry(shape3, ndim, bc)
    inv = tuple(np.float64(v) for v in inv_dx)
    i32 = np.int32

    def apply_and_alpha(r, p_old, p_new):
        be.launch(_FILE, "cg_apply", dtype, (nblk, gy),
                  (r, p_old, p_new, q, partial, sc, i32(B), *geo, *inv, jacobi))
        be.launch(_FILE, "cg_alpha", None, (gy,), (partial, sc, i32(B), i32(nblk)))

    def update_and_beta(r, p, init):
        be.launch(_FILE, "cg_update", dtype, (nblk, gy),
                  (x, r, p, q, partial2, sc, i32(B), *geo, *inv, jacobi))
        be.launch(_FILE, "cg_beta", None, (gy,),
                  (partial2, sc, i32(B), i32(nblk), np.float64(tol) ** 2, i32(1 if init else 0)))

    def start(r):
        """Initialise r·z, r·r, β = 0 and the active flags from the current r (x unchanged: α = 0)."""
        sc[:, SC_ACTIVE] = 1.0
        sc[:, SC_ALPHA] = 0.0
        update_and_beta(r, p_new, init=True)

    start(r)
    it = 0
    restarts = 0
    previous = math.inf
    while True:
        active = bool(sc[:, SC_ACTIVE].any())                         # host sync
        while active and it < maxiter:
            for _ in range(min(check_every, maxiter - it)):
                apply_and_alpha(r, p_old, p_new)
                update_and_beta(r, p_new, init=False)
                p_old, p_new = p_new, p_old      # this direction is the next cg_apply's p_old
                it += 1
            active = bool(sc[:, SC_ACTIVE].any())                     # host sync every check_every iterations
        r_true = rhs + difference.laplace(be, x, inv_dx, bc, shape3, ndim)
        rel = _relative(cp, r_true, bb)
        worst = float(rel.max())
        if (worst <= tol or it >= maxiter or restarts >= MAX_RESTARTS or not math.isfinite(worst)
                or worst > 0.5 * previous):
            break
        previous = worst                 # the recursive residual drifted from the true one: restart from it
        restarts += 1
        r = r_true
        start(r)

    if singular:
        x -= x.mean(axis=1, keepdims=True)
    x = cp.where((bb > 0)[:, None], x, cp.zeros((), dtype))
    iterations = int(sc[:, SC_ITERS].max().item())
    return x, iterations, worst


def _relative(cp, r, bb):
    """Host float64 array of ``‖r‖ / ‖b‖`` per system (0 where ``b`` is 0)."""
    rr = (r.astype(cp.float64) ** 2).sum(axis=1)
    rel = cp.where(bb > 0, cp.sqrt(rr / cp.where(bb > 0, bb, 1.0)), 0.0)
    return cp.asnumpy(rel)
