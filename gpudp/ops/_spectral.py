"""The ``"spectral"`` preconditioner: the exact inverse of ``−laplace`` on gpudp's grids, applied through
per-axis eigenbases, inside conjugate gradients.

gpudp's Laplacian has constant coefficients and one boundary rule per axis, so it is a sum of 1-D operators
``A = Σ_a c_a T_a`` (``c_a = 1/Δx_a²``, each ``T_a`` acting along axis ``a``), and every ``T_a`` has a known
orthonormal eigenbasis ``T_a = Q_a diag(λ_a) Q_aᵀ``:

- periodic: the real Fourier basis (``1``, ``cos``/``sin`` pairs, ``(−1)^i``), ``λ_k = 2 − 2 cos(2πk/n)``;
- neumann (the ghost cell repeats the boundary cell): DCT-II, ``cos(πk(i + ½)/n)``, ``λ_k = 2 − 2 cos(πk/n)``;
- dirichlet (the ghost cell is 0): DST-I, ``sin(π(k + 1)(i + 1)/(n + 1))``, ``λ_k = 2 − 2 cos(π(k + 1)/(n + 1))``.

Hence ``A⁺ r = Q (Λ⁺ ∘ (Qᵀ r))`` with ``Q = Q_0 ⊗ Q_1 ⊗ Q_2`` and ``Λ = Σ_a c_a λ_a``; ``Λ⁺`` is ``1/Λ`` except
on the constant mode of a singular operator, where it is 0 (so the preconditioned residual stays zero-mean).
The bases are applied as dense matrix products along each axis (BLAS on the CPU, cuBLAS on the GPU):
``2 · N · Σ_a n_a`` multiply-adds per application, against ``maxiter``-bound CG iterations of a plain or
Jacobi preconditioner whose count grows with the grid's width. Conjugate gradients with this preconditioner
converge in one or two iterations (rounding); the stopping test and the reported residual are those of the
other preconditioners, and the final residual is recomputed from ``x`` (``b − A x``), not taken from the
recurrence.

Works on every backend: the arithmetic is array code on the backend's array module (NumPy or CuPy) and the
operator is the backend's own ``laplace`` kernel; a backend without an array module (Numba device arrays)
solves on the host with the CPU backend's kernels.
"""
from __future__ import annotations

import math
import threading

import numpy as np

_BC_NAMES = ("periodic", "dirichlet", "neumann")
_cache = {}
_cache_lock = threading.Lock()


def eigenbasis(n, bc):
    """``(Q, λ)`` in float64: ``T = Q diag(λ) Qᵀ`` for the 1-D operator ``T`` of ``−laplace`` (unit
    spacing) on ``n`` cells with boundary code ``bc`` (0 periodic, 1 dirichlet, 2 neumann); ``Q`` orthonormal,
    its columns the eigenvectors."""
    i = np.arange(n, dtype=np.float64)[:, None]
    if bc == 2:  # neumann: DCT-II
        k = np.arange(n, dtype=np.float64)[None, :]
        Q = np.cos(np.pi * k * (i + 0.5) / n) * np.where(k == 0, math.sqrt(1.0 / n), math.sqrt(2.0 / n))
        lam = 2.0 - 2.0 * np.cos(np.pi * k[0] / n)
    elif bc == 1:  # dirichlet: DST-I
        k = np.arange(1, n + 1, dtype=np.float64)[None, :]
        Q = math.sqrt(2.0 / (n + 1)) * np.sin(np.pi * k * (i + 1.0) / (n + 1))
        lam = 2.0 - 2.0 * np.cos(np.pi * k[0] / (n + 1))
    elif bc == 0:  # periodic: real Fourier basis
        cols, lams = [np.full((n, 1), math.sqrt(1.0 / n))], [0.0]
        for k in range(1, (n - 1) // 2 + 1):
            angle = 2.0 * np.pi * k * i / n
            cols += [math.sqrt(2.0 / n) * np.cos(angle), math.sqrt(2.0 / n) * np.sin(angle)]
            lams += [2.0 - 2.0 * math.cos(2.0 * math.pi * k / n)] * 2
        if n % 2 == 0 and n > 1:
            cols.append(np.where(i % 2 == 0, 1.0, -1.0) / math.sqrt(n))
            lams.append(4.0)
        Q, lam = np.concatenate(cols, axis=1), np.asarray(lams)
    else:
        raise ValueError(f"boundary code {bc!r} is not one of 0, 1, 2 ({', '.join(_BC_NAMES)})")
    return Q, np.maximum(lam, 0.0)


class SpectralInverse:
    """``r ↦ A⁺ r`` for ``A = −laplace`` on one padded grid, for arrays of one dtype on one array module."""

    def __init__(self, xp, dtype, inv_dx, bc, shape3, ndim):
        self.xp, self.shape3, self.ndim = xp, tuple(shape3), ndim
        dtype = np.dtype(dtype)
        axes, lam = [], np.zeros(tuple(shape3), np.float64)
        for a in range(3 - ndim, 3):
            n = shape3[a]
            Q, la = eigenbasis(n, bc[a])
            shape = [1, 1, 1]
            shape[a] = n
            lam = lam + (float(inv_dx[a]) ** 2) * la.reshape(shape)
            # Qᵀ r along the axis is a left product with Qᵀ (middle axes) or a right product with Q (last)
            axes.append((a, xp.asarray(Q.astype(dtype)), xp.asarray(np.ascontiguousarray(Q.T).astype(dtype))))
        singular = all(bc[a] != 1 for a in range(3 - ndim, 3))
        # the constant mode (λ = 0 exactly: every axis' k = 0) of a singular operator has no inverse: 0
        inv = np.zeros_like(lam)
        nonzero = lam > 0.0
        inv[nonzero] = 1.0 / lam[nonzero]
        if singular:
            inv.reshape(-1)[0] = 0.0
        self.axes = axes
        self.inv_lambda = xp.asarray(inv.reshape(1, -1).astype(dtype))

    def _transform(self, x, forward):
        """``Qᵀ x`` (``forward``) or ``Q x`` along every real axis of ``x`` shaped ``(B, N)``."""
        xp = self.xp
        n0, n1, n2 = self.shape3
        B = x.shape[0]
        y = x
        for a, Q, Qt in self.axes:
            if a == 2:  # last axis: rows times Q (forward) or Qᵀ
                y = xp.matmul(y.reshape(B * n0 * n1, n2), Q if forward else Qt)
            elif a == 1:
                y = xp.matmul(Qt if forward else Q, y.reshape(B * n0, n1, n2))
            else:
                y = xp.matmul(Qt if forward else Q, y.reshape(B, n0, n1 * n2))
        return y.reshape(B, -1)

    def __call__(self, r):
        """``A⁺ r`` for ``r`` shaped ``(B, N)``."""
        return self._transform(self._transform(r, True) * self.inv_lambda, False)


def spectral_inverse(xp, dtype, inv_dx, bc, shape3, ndim, device=None):
    """A cached :class:`SpectralInverse` (bases are built once per grid, dtype and device)."""
    key = (id(xp), np.dtype(dtype).str, tuple(inv_dx), tuple(bc), tuple(shape3), ndim, device)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is None:
        hit = SpectralInverse(xp, dtype, inv_dx, bc, shape3, ndim)
        with _cache_lock:
            if len(_cache) >= 16:  # a handful of grids at a time; the bases of a 4096-wide axis hold 128 MiB
                _cache.pop(next(iter(_cache)))
            _cache[key] = hit
    return hit


def _device_key(xp):
    if xp is np:
        return None
    try:
        return int(xp.cuda.runtime.getDevice())
    except Exception:  # noqa: BLE001 - any array module without devices
        return None


def cg_solve(backend, b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular):
    """Conjugate gradients on ``A = −laplace`` preconditioned by ``A⁺``; the contract of
    :meth:`gpudp.backends.base.Backend.cg_solve` (``b``, ``x0``: ``(B, N)`` arrays of ``backend``)."""
    xp = backend.xp
    if xp is None:  # Numba device arrays: solve on the host with the CPU kernels
        from ..backends.cpu import CpuBackend

        host = CpuBackend()
        x, its, res = cg_solve(host, backend.to_numpy(b), None if x0 is None else backend.to_numpy(x0),
                               inv_dx, bc, shape3, ndim, tol, maxiter, singular)
        return backend.asarray(x), its, res
    M = spectral_inverse(xp, b.dtype, inv_dx, bc, shape3, ndim, _device_key(xp))

    def A(v):
        return -backend.laplace(v, inv_dx, bc, shape3, ndim)

    def dots(u, v):  # per system, in float64
        return xp.sum(u.astype(xp.float64) * v.astype(xp.float64), axis=1)

    # laplace(x) = b is A x = −b
    rhs = (b.mean(axis=1, keepdims=True) - b) if singular else -b
    bnorm = xp.sqrt(dots(rhs, rhs))
    if x0 is None:
        x = xp.zeros_like(b)
        r = rhs.copy()
    else:
        x = x0 - x0.mean(axis=1, keepdims=True) if singular else x0.copy()
        r = rhs - A(x)
    zero = bnorm == 0
    scale = xp.where(zero, 1.0, bnorm)

    def relative(res):
        rel = xp.sqrt(dots(res, res)) / scale
        return xp.where(zero, 0.0, rel)  # a zero right-hand side: the solution is 0, residual 0

    rel = relative(r)
    its = 0
    # restarts from the true residual guard against the recurrence drifting (a few at most in float32)
    while its < maxiter and float(rel.max()) > tol:
        z = M(r)
        p = z
        rz = dots(r, z)
        while its < maxiter:
            q = A(p)
            pq = dots(p, q)
            alpha = xp.where(pq > 0, rz / xp.where(pq > 0, pq, 1.0), 0.0).astype(b.dtype)[:, None]
            x += alpha * p
            r -= alpha * q
            its += 1
            if float(relative(r).max()) <= tol or not bool((pq > 0).any()):
                break
            z = M(r)
            rz_new = dots(r, z)
            beta = xp.where(rz > 0, rz_new / xp.where(rz > 0, rz, 1.0), 0.0).astype(b.dtype)[:, None]
            rz = rz_new
            p = z + beta * p
        r = rhs - A(x)
        new = relative(r)
        if not bool((new < rel).any()):  # no progress (breakdown or rounding floor): stop, the residual tells
            rel = new
            break
        rel = new
    if singular:
        x -= x.mean(axis=1, keepdims=True)
    x[zero] = 0.0
    res = float(rel.max())
    return x, its, (res if math.isfinite(res) else float("nan"))
