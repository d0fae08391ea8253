"""Batched preconditioned conjugate gradients on ``A = −laplace`` (``kernels/poisson.cu``).

One iteration is four launches and no host synchronisation::

    cg_apply    p ← M⁻¹r + β p,  q ← A p,  partial sums of p·q      (one pass; p ping-pongs between 2 buffers)
    cg_alpha    α ← r·z / p·q                                        (per system, on the device)
    cg_update   x ← x + α p,  r ← r − α q,  partial sums of r·z, r·r  (one pass)
    cg_beta     β ← r·z_new / r·z;  active ← ‖r‖² > tol² ‖b‖²          (per system, on the device)

``M`` is ``diag(A)`` (Jacobi; computed from the cell position, never stored) or the identity; ``z = M⁻¹r``
is never stored either. The host reads the per-system ``active`` flags every ``check_every`` iterations, so
up to ``check_every − 1`` extra iterations may be queued after the last system converged; they skip the
converged systems and change nothing. The stopping test and the reported residual use CG's recursively
updated residual ``‖r‖ / ‖b‖`` (float64 sums), the largest over the batch; iterations are counted per system.

Singular operator (no dirichlet axis; constant null space): the mean of ``b`` is removed per system, the
initial guess is made zero-mean and so is the result (the pseudo-inverse solution). A system with a zero
(mean-free) right-hand side gets ``x = 0`` and residual 0.
"""
from __future__ import annotations

import numpy as np

from . import difference
from ._module import BLOCK

_FILE = "poisson.cu"

# Columns of the per-system scalar table ``sc`` (kernels/poisson.cu, SC_*).
SC_RZ, SC_PAP, SC_RR, SC_BB, SC_ALPHA, SC_BETA, SC_ACTIVE, SC_ITERS = range(8)
SC_WIDTH = 8

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
    rhs = (_mean(cp, b) - b).astype(dtype) if singular else -b
    bb = (rhs.astype(f64) ** 2).sum(axis=1)
    if x0 is None:
        x = cp.zeros_like(b)
        r = rhs.copy()
    else:
        x = cp.array(x0, dtype=dtype, order="C", copy=True)
        if singular:
            x -= _mean(cp, x).astype(dtype)
        r = rhs + difference.laplace(be, x, inv_dx, bc, shape3, ndim)
    p_old = cp.zeros_like(b)
    p_new = cp.zeros_like(b)
    q = cp.zeros_like(b)
    sc = cp.zeros((B, SC_WIDTH), f64)   # alpha = 0: the first cg_update only sums r·z and r·r
    sc[:, SC_BB] = bb
    sc[:, SC_ACTIVE] = 1.0

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

    update_and_beta(r, p_new, init=True)   # r·z, r·r, beta = 0 and the active flags of the start value
    it = 0
    active = bool(sc[:, SC_ACTIVE].any())                             # host sync
    while active and it < maxiter:
        for _ in range(min(check_every, maxiter - it)):
            apply_and_alpha(r, p_old, p_new)
            update_and_beta(r, p_new, init=False)
            p_old, p_new = p_new, p_old          # this direction is the next cg_apply's p_old
            it += 1
        active = bool(sc[:, SC_ACTIVE].any())                         # host sync every check_every iterations

    if singular:   # the zero-mean representative (iterates may drift along the constants)
        x -= _mean(cp, x).astype(dtype)
    x = cp.where((bb > 0)[:, None], x, cp.zeros((), dtype))
    table = cp.asnumpy(sc)
    bbh = table[:, SC_BB]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(bbh > 0, np.sqrt(table[:, SC_RR] / np.where(bbh > 0, bbh, 1.0)), 0.0)
    return x, int(table[:, SC_ITERS].max()), float(rel.max())


def _mean(cp, a):
    """Per-row mean of ``(B, N)`` accumulated in float64, shape ``(B, 1)``."""
    return a.mean(axis=1, keepdims=True, dtype=cp.float64)
