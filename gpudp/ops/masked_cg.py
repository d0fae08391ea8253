"""The Poisson solve on a grid with obstacles: preconditioned conjugate gradients on the fluid cells.

``A = −laplace = Gᵀ W G`` (``gpudp.ops.obstacles``) is symmetric positive semidefinite; its null space is
spanned by the solid cells' unit vectors and the indicators of the sealed fluid regions. With ``Π`` the
orthogonal projection onto its range (zero in solid cells, each sealed region's mean removed), the solve
returns ``x = laplace⁺ b``: CG on ``A x = −Π b`` with the preconditioned residual projected, ``z = Π M⁻¹ r``
(``M⁻¹`` the identity, the inverse diagonal of ``A`` (``"jacobi"``), the pseudo-inverse ``A_box⁺`` of the
obstacle-free Laplacian through per-axis fast transforms (``"spectral"``, :mod:`gpudp.ops._spectral`) or the
multigrid V-cycle (``"multigrid"``, :mod:`gpudp.ops.multigrid`), restricted to the fluid cells: ``Π M⁻¹ Π`` is
symmetric and positive definite on the range in every case — for ``A_box⁺`` because its only null vector, the
constant of a box without dirichlet axes, is not zero on the solid cells), so the iterates stay in the range;
the final ``x`` is projected once more (rounding). With ``"multigrid"`` the operator is applied with the
V-cycle's level-0 kernel (``backend.mg_apply``), one pass instead of three.

:func:`cg_solve` picks the backend's own compiled driver where it has one (``backend.cg_solve_masked``, the
``cpu`` backend) and otherwise runs :func:`composed_cg`: the same iteration written with the backend's
difference kernels (``laplace = divergence ∘ W ∘ spatial_gradient``) and its array module (NumPy or CuPy;
where the backend has none, e.g. Numba device arrays under the CUDA simulator, the vector arithmetic runs on
host copies and only the kernels run on the device). The ``B`` systems of a batch iterate together; a
converged system is frozen (``α = 0``), and the host looks at the convergence flags every ``check_every``
iterations only (every iteration where the arrays are host NumPy arrays: there the test costs nothing).
"""
from __future__ import annotations

import numpy as np

from . import _spectral
from . import multigrid
from .obstacles import obstacle_facts, open_masks, masked_laplace


def cg_solve(backend, b, x0, grid, tol, maxiter, preconditioner, check_every):
    """Solve ``laplace(x) = b`` for canonical ``(B, N)`` arrays on ``grid`` (which has obstacles).
    Returns ``(x, iterations, residual)`` with the contract of :meth:`gpudp.backends.base.Backend.cg_solve`."""
    facts = obstacle_facts(grid)
    own = getattr(backend, "cg_solve_masked", None)
    if own is not None and preconditioner in (None, "jacobi"):
        return own(b, x0, facts, tol, maxiter, preconditioner, check_every)
    return composed_cg(backend, b, x0, grid, tol, maxiter, preconditioner, check_every)


class _Projection:
    """``Π`` and ``M⁻¹`` of one grid on one array module and dtype (built once, kept with the grid's facts)."""

    __slots__ = ("fluid", "dinv", "nseal", "order", "ends", "label", "counts", "seal")

    def __init__(self, xp, dtype, facts, inv_dx, bc, shape3, ndim):
        N = facts.fluid.size
        self.fluid = xp.asarray(facts.fluid.reshape(1, N).astype(dtype))
        self.dinv = xp.asarray(_inverse_diagonal(facts, inv_dx, bc, shape3, ndim).reshape(1, N).astype(dtype))
        self.nseal = facts.n_sealed
        lab = facts.sealed.reshape(-1)
        self.seal = None
        if self.nseal == 1:  # one sealed region (a closed box): a masked mean, no sorting
            self.seal = xp.asarray((lab == 0).reshape(1, N).astype(dtype))
            self.counts = float(facts.sealed_sizes[0])
        elif self.nseal:
            order = np.argsort(lab, kind="stable")
            order = order[lab[order] >= 0]                # the sealed cells, grouped by region
            self.order = xp.asarray(order)
            self.ends = xp.asarray(np.cumsum(facts.sealed_sizes) - 1)
            self.label = xp.asarray(np.where(lab >= 0, lab, self.nseal))   # −1 → a column of zeros
            self.counts = xp.asarray(facts.sealed_sizes.astype(np.float64))

    def __call__(self, xp, v):
        """``Π v`` for ``(B, N)`` ``v`` (a new array)."""
        v = v * self.fluid
        if not self.nseal:
            return v
        if self.seal is not None:
            mean = (v * self.seal).sum(axis=1, keepdims=True, dtype=np.float64) / self.counts
            return v - mean.astype(v.dtype) * self.seal
        cs = xp.cumsum(v[:, self.order], axis=1, dtype=np.float64)
        ends = cs[:, self.ends]
        sums = ends - xp.concatenate([xp.zeros_like(ends[:, :1]), ends[:, :-1]], axis=1)
        means = xp.concatenate([sums / self.counts, xp.zeros_like(sums[:, :1])], axis=1)
        return v - means[:, self.label].astype(v.dtype)


def _inverse_diagonal(facts, inv_dx, bc, shape3, ndim):
    """``1 / diag(A)`` on the fluid cells (1 where the diagonal is 0: a fluid cell with no open face), 0 on
    solid cells; a face joining a lone periodic cell to itself adds nothing."""
    d = np.zeros(shape3)
    for k in range(ndim):
        a = 3 - ndim + k
        n = shape3[a]
        if bc[a] == 0 and n == 1:
            continue
        op = facts.open_faces[k].reshape(tuple(shape3[b] if b != a else -1 for b in range(3))).astype(np.float64)
        lower = np.take(op, np.arange(n), axis=a)
        upper = np.take(op, (np.arange(n) + 1) % op.shape[a], axis=a)
        d += (lower + upper) * float(inv_dx[a]) ** 2
    d = d.reshape(-1)
    return np.where(facts.fluid.reshape(-1), 1.0 / np.where(d > 0, d, 1.0), 0.0)


def _build_projection(backend, dtype, facts):
    g = facts.geom
    return _Projection(backend.xp or np, dtype, facts, g.inv_dx, g.bc, g.shape3, g.ndim)


def composed_cg(backend, b, x0, grid, tol, maxiter, preconditioner, check_every):
    """Masked PCG from the backend's primitives (module docstring); same contract as :func:`cg_solve`."""
    facts = obstacle_facts(grid)
    geom = facts.geom
    host = backend.xp is None
    xp = np if host else backend.xp
    dtype = np.dtype(b.dtype)
    f64 = np.float64
    proj = facts.device(backend, dtype, _build_projection)
    masks = open_masks(backend, dtype, grid)
    args = (geom.inv_dx, geom.bc, geom.shape3, geom.ndim)

    mg = multigrid.device_hierarchy(backend, dtype, grid) if preconditioner == "multigrid" else None

    def A(v):  # −laplace, on the device; v and the result in xp
        vd = backend.asarray(v) if host else v
        if mg is not None:   # the same operator from the level-0 couplings: one kernel
            out = backend.empty(tuple(vd.shape), dtype)
            backend.mg_apply(vd, out, mg.levels[0])
            return backend.to_numpy(out) if host else out
        out = masked_laplace(backend, vd, *args, masks)
        return -(backend.to_numpy(out) if host else out)

    def vcycle(r):
        rd = backend.asarray(np.ascontiguousarray(r)) if host else r
        z = backend.empty(tuple(rd.shape), dtype)
        multigrid.vcycle(backend, mg, rd, z)
        return backend.to_numpy(z) if host else z

    def dot(u, v):
        return (u.astype(f64, copy=False) * v.astype(f64, copy=False)).sum(axis=1)

    if host:
        b = backend.to_numpy(b)
        x0 = None if x0 is None else backend.to_numpy(x0)
    jacobi = preconditioner == "jacobi"
    spectral = None
    if preconditioner == "spectral":
        spectral = _spectral.spectral_inverse(xp, dtype, *args, _spectral._device_key(xp))

    def precondition(r):  # z = Π M⁻¹ r (r lies in the range of Π)
        if mg is not None:
            return proj(xp, vcycle(r))
        if spectral is not None:
            return proj(xp, spectral(r))
        return proj(xp, r * proj.dinv if jacobi else r)

    if xp is np and not host:   # host arrays: testing convergence costs nothing, test every iteration
        check_every = 1
    B = b.shape[0]
    c = -proj(xp, b)
    cc = dot(c, c)
    if x0 is None:
        x = xp.zeros_like(c)
        r = c
    else:
        x = proj(xp, x0.astype(dtype))
        r = c - A(x)
    z = precondition(r)
    p = z
    rz = dot(r, z)
    rr = dot(r, r)
    thr = (float(tol) ** 2) * cc
    active = (rr > thr) & (cc > 0)
    iters = xp.zeros(B, np.int64)
    it = 0
    while it < maxiter and bool(active.any()):
        for _ in range(min(check_every, maxiter - it)):
            q = A(p)
            pq = dot(p, q)
            ok = active & (pq > 0)                     # pq ≤ 0: breakdown, the system stops
            alpha = xp.where(ok, rz / xp.where(ok, pq, 1.0), 0.0)
            a = alpha.astype(dtype)[:, None]
            x = x + a * p
            r = r - a * q
            rr = dot(r, r)
            iters = iters + ok
            z = precondition(r)
            rzn = dot(r, z)
            active = ok & (rr > thr) & (rzn > 0)
            beta = xp.where(active, rzn / xp.where(rz != 0, rz, 1.0), 0.0)
            rz = xp.where(active, rzn, rz)
            p = z + beta.astype(dtype)[:, None] * p
            it += 1
    x = proj(xp, x)
    x = xp.where((cc > 0)[:, None], x, xp.zeros((), dtype))
    ccs = _host(xp, cc)
    rel = np.where(ccs > 0, np.sqrt(_host(xp, rr) / np.where(ccs > 0, ccs, 1.0)), 0.0)
    if host:
        x = backend.asarray(np.ascontiguousarray(x))
    return x, int(_host(xp, iters).max()), float(rel.max())


def _host(xp, a):
    return a if xp is np else xp.asnumpy(a)
