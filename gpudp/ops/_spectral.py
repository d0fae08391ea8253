"""The ``"spectral"`` preconditioner: the exact pseudo-inverse of ``−laplace`` on gpudp's obstacle-free grids,
applied through fast transforms (FFT, DCT-II, DST-I), and the Poisson solve built on it.

gpudp's Laplacian has constant coefficients and one boundary rule per axis, so it is a sum of 1-D operators
``A = Σ_a c_a T_a`` (``c_a = 1/Δx_a²``, each ``T_a`` acting along axis ``a``), and every ``T_a`` is
diagonalised by a fast transform ``F_a`` (``T_a = F_a⁻¹ diag(λ_a) F_a``, :func:`eigenbasis` gives the same
bases as dense matrices):

- periodic: the discrete Fourier transform, ``λ_k = 2 − 2 cos(2πk/n)``;
- neumann (the ghost cell repeats the boundary cell): the orthonormal DCT-II (inverse DCT-III),
  ``λ_k = 2 − 2 cos(πk/n)``;
- dirichlet (the ghost cell is 0): the orthonormal DST-I (its own inverse),
  ``λ_k = 2 − 2 cos(π(k + 1)/(n + 1))``.

Hence ``A⁺ r = F⁻¹ (Λ⁺ ∘ F r)`` with ``F = F_0 ⊗ F_1 ⊗ F_2`` and ``Λ = Σ_a c_a λ_a``; ``Λ⁺`` is ``1/Λ`` except
on the constant mode of a singular operator (no dirichlet axis), where it is 0, so ``A⁺ r`` has zero mean.
:class:`SpectralInverse` applies the real transforms along the non-periodic axes, then a real-input FFT
(``rfftn``) over the periodic ones, multiplies by ``Λ⁺`` (stored once per grid, dtype and device for the
half spectrum: at most ``N`` numbers, nothing else is kept) and transforms back: ``O(N log N)`` work and
``O(N)`` memory per application, batched over the ``B`` rows of a ``(B, N)`` array, in the array's own
precision (float32 through complex64, float64 through complex128).

Transforms: ``scipy.fft`` for NumPy arrays, ``cupyx.scipy.fft`` (cuFFT) for CuPy arrays. CuPy has no DST-I;
:func:`dst1` builds it from a real FFT of the odd extension, written for any array module and FFT module (the
same code runs, and is tested, on NumPy). A backend without an array module (Numba device arrays) solves on
the host with the CPU backend.

:func:`cg_solve` starts from ``x = A⁺ b̃`` (one application: the solution up to rounding), computes the true
residual ``b̃ − A x`` once with the backend's own ``laplace`` kernel, and only when that misses ``tol`` (a
tolerance near rounding) continues with conjugate gradients preconditioned by ``A⁺``; the stopping test and the
reported residual are those of the other preconditioners, the residual recomputed from ``x``.
:class:`DenseSpectralInverse` is the same operator through dense per-axis eigenbases (``Σ n_a²`` stored
numbers), kept as a reference; the solver does not use it.
"""
from __future__ import annotations

import math
import os
import threading

import numpy as np

_BC_NAMES = ("periodic", "dirichlet", "neumann")
_cache = {}
_cache_lock = threading.Lock()
_CACHE_SIZE = 16
#: ``workers`` for ``scipy.fft`` (its threads split the independent 1-D transforms of a multi-axis array).
WORKERS = os.cpu_count() or 1


def eigenbasis(n, bc):
    """``(Q, λ)`` in float64: ``T = Q diag(λ) Qᵀ`` for the 1-D operator ``T`` of ``−laplace`` (unit
    spacing) on ``n`` cells with boundary code ``bc`` (0 periodic, 1 dirichlet, 2 neumann); ``Q`` orthonormal,
    its columns the eigenvectors."""
    i = np.arange(n, dtype=np.float64)[:, None]
    if bc == 2:  # neumann: DCT-II
        k = np.arange(n, dtype=np.float64)[None, :]
        Q = np.cos(np.pi * k * (i + 0.5) / n) * np.where(k == 0, math.sqrt(1.0 / n), math.sqrt(2.0 / n))
        lam = _eigenvalues(n, n, bc)
    elif bc == 1:  # dirichlet: DST-I
        k = np.arange(1, n + 1, dtype=np.float64)[None, :]
        Q = math.sqrt(2.0 / (n + 1)) * np.sin(np.pi * k * (i + 1.0) / (n + 1))
        lam = _eigenvalues(n, n, bc)
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


def _eigenvalues(m, n, bc):
    """The first ``m`` eigenvalues of the unit-spacing 1-D operator on ``n`` cells with boundary code ``bc``, in
    the order of its transform's outputs (``m = n // 2 + 1`` for the half spectrum of a real FFT)."""
    k = np.arange(m, dtype=np.float64)
    if bc == 0:
        return 2.0 - 2.0 * np.cos(2.0 * np.pi * k / n)
    if bc == 2:
        return 2.0 - 2.0 * np.cos(np.pi * k / n)
    if bc == 1:
        return 2.0 - 2.0 * np.cos(np.pi * (k + 1.0) / (n + 1))
    raise ValueError(f"boundary code {bc!r} is not one of 0, 1, 2 ({', '.join(_BC_NAMES)})")


def dst1(x, axis, xp, fft, **kw):
    """The orthonormal DST-I of ``x`` along ``axis`` (``scipy.fft.dst(x, type=1, axis=axis, norm="ortho")``,
    its own inverse) from one real FFT of length ``2(n + 1)``, in the precision of ``x``.

    ``xp`` is the array module of ``x`` and ``fft`` a module with ``rfft(x, axis=...)`` (``scipy.fft``,
    ``cupyx.scipy.fft``); ``kw`` goes to ``fft.rfft``. With ``v = [0, x_0, …, x_{n−1}, 0, …, 0]`` (length
    ``2(n + 1)``), ``Im(FFT(v))_k = −Σ_j x_j sin(π k (j + 1)/(n + 1))``, so
    ``DST-I(x)_k = −√(2/(n + 1)) · Im(FFT(v))_{k+1}``. (The odd extension ``[0, x, 0, −x reversed]`` has
    twice that imaginary part and no real part; the zero-padded ``v`` needs one copy less.)"""
    axis = axis % x.ndim
    n = x.shape[axis]
    ext = list(x.shape)
    ext[axis] = 2 * (n + 1)
    v = xp.zeros(tuple(ext), x.dtype)
    lo = [slice(None)] * x.ndim
    lo[axis] = slice(1, n + 1)
    lo = tuple(lo)
    v[lo] = x
    V = fft.rfft(v, axis=axis, overwrite_x=True, **kw)
    y = V.imag[lo]
    return y * -math.sqrt(2.0 / (n + 1))      # a Python float keeps float32 float32


def _fft_module(xp):
    """``(fft module, its keyword arguments, whether it has a DST-I)`` for the array module ``xp``."""
    if xp is np:
        import scipy.fft

        return scipy.fft, {"workers": WORKERS}, True
    if getattr(xp, "__name__", "") == "cupy":
        import cupyx.scipy.fft

        return cupyx.scipy.fft, {}, False
    raise TypeError(f"spectral preconditioner: no FFT module for the array module {getattr(xp, '__name__', xp)!r}; "
                    f"expected numpy or cupy")


class SpectralInverse:
    """``r ↦ A⁺ r`` for ``A = −laplace`` on one obstacle-free grid, for ``(B, N)`` arrays of one dtype on one
    array module, through fast transforms (module docstring). Keeps the inverse eigenvalues ``Λ⁺`` of the
    transformed (half-spectrum) array only: ``inv_lambda``, at most ``N`` numbers."""

    def __init__(self, xp, dtype, inv_dx, bc, shape3, ndim):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"spectral preconditioner: dtype {dtype} is not supported; expected float32 or float64")
        if ndim not in (1, 2, 3):
            raise ValueError(f"spectral preconditioner: ndim must be 1, 2 or 3, got {ndim!r}")
        self.xp, self.dtype = xp, dtype
        self.fft, self.kw, native_dst = _fft_module(xp)
        real = range(3 - ndim, 3)                       # padded axes (size 1) stay untouched
        self.shape = tuple(int(shape3[a]) for a in real)
        self.size = int(np.prod(self.shape))
        codes = [int(bc[a]) for a in real]
        for c in codes:
            if c not in (0, 1, 2):
                raise ValueError(f"boundary code {c!r} is not one of 0, 1, 2 ({', '.join(_BC_NAMES)})")
        # axes of the (B, *shape) array
        self.neumann = tuple(k + 1 for k, c in enumerate(codes) if c == 2)
        self.dirichlet = tuple(k + 1 for k, c in enumerate(codes) if c == 1)
        self.periodic = tuple(k + 1 for k, c in enumerate(codes) if c == 0)
        self.periodic_sizes = tuple(self.shape[a - 1] for a in self.periodic)
        self.native_dst = native_dst
        half = self.periodic[-1] if self.periodic else None   # rfftn halves the last of its axes
        lam = np.zeros((1,) * (ndim + 1))
        for k, (n, c) in enumerate(zip(self.shape, codes)):
            m = n // 2 + 1 if k + 1 == half else n
            shape = [1] * (ndim + 1)
            shape[k + 1] = m
            lam = lam + (float(inv_dx[3 - ndim + k]) ** 2) * _eigenvalues(m, n, c).reshape(shape)
        # Λ = 0 only on the constant mode of a singular operator (every axis' first output): no inverse, 0
        positive = lam > 0.0
        self.inv_lambda = xp.asarray(np.where(positive, 1.0 / np.where(positive, lam, 1.0), 0.0).astype(dtype))

    def _dst(self, y, overwrite):
        if self.native_dst:
            return self.fft.dstn(y, type=1, axes=self.dirichlet, norm="ortho", overwrite_x=overwrite, **self.kw)
        for a in self.dirichlet:
            y = dst1(y, a, self.xp, self.fft, **self.kw)
        return y

    def __call__(self, r):
        """``A⁺ r`` for ``r`` shaped ``(B, N)`` (not modified): a new ``(B, N)`` array of ``r``'s dtype."""
        fft, kw = self.fft, self.kw
        B = r.shape[0]
        y = r.reshape((B,) + self.shape)
        own = False                                   # y is a temporary of ours (may be overwritten)
        if self.neumann:
            y = fft.dctn(y, type=2, axes=self.neumann, norm="ortho", overwrite_x=own, **kw)
            own = True
        if self.dirichlet:
            y = self._dst(y, own)
            own = True
        if self.periodic:
            y = fft.rfftn(y, axes=self.periodic, overwrite_x=own, **kw)
        y *= self.inv_lambda
        if self.periodic:
            y = fft.irfftn(y, s=self.periodic_sizes, axes=self.periodic, overwrite_x=True, **kw)
        if self.dirichlet:
            y = self._dst(y, True)
        if self.neumann:
            y = fft.idctn(y, type=2, axes=self.neumann, norm="ortho", overwrite_x=True, **kw)
        return y.reshape(B, self.size)


class DenseSpectralInverse:
    """``r ↦ A⁺ r`` like :class:`SpectralInverse`, through the dense per-axis eigenbases of
    :func:`eigenbasis` applied as matrix products (``2 · N · Σ_a n_a`` multiply-adds and ``2 Σ_a n_a²`` stored
    numbers). A reference for tests and benchmarks; the solver uses :class:`SpectralInverse`."""

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
    """A cached :class:`SpectralInverse` (``Λ⁺`` is computed once per grid, dtype and device; a few grids are
    kept, each ``O(N)``)."""
    key = (id(xp), np.dtype(dtype).str, tuple(float(v) for v in inv_dx), tuple(int(c) for c in bc),
           tuple(int(n) for n in shape3), int(ndim), device)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is None:
        hit = SpectralInverse(xp, dtype, inv_dx, bc, shape3, ndim)
        with _cache_lock:
            if len(_cache) >= _CACHE_SIZE:
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


def _dots(xp, u, v):
    """``Σ u v`` per row of ``(B, N)`` arrays, accumulated in float64."""
    if xp is np:  # no temporaries: einsum's product-sum loop (float32 rows are cast in small buffers)
        return np.einsum("ij,ij->i", u, v, dtype=np.float64)
    return xp.sum(u * v, axis=1, dtype=xp.float64)


def cg_solve(backend, b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular, inverse=None):
    """Solve ``laplace(x) = b`` with ``A⁺`` (module docstring): the contract of
    :meth:`gpudp.backends.base.Backend.cg_solve` (``b``, ``x0``: ``(B, N)`` arrays of ``backend``; returns
    ``(x, iterations, residual)``; the direct application counts as one iteration). ``inverse`` replaces
    ``A⁺`` by another callable ``(B, N) → (B, N)`` (e.g. a :class:`DenseSpectralInverse`)."""
    xp = backend.xp
    if xp is None:  # Numba device arrays: solve on the host with the CPU kernels
        from ..backends.cpu import CpuBackend

        host = CpuBackend()
        x, its, res = cg_solve(host, backend.to_numpy(b), None if x0 is None else backend.to_numpy(x0),
                               inv_dx, bc, shape3, ndim, tol, maxiter, singular, inverse)
        return backend.asarray(x), its, res
    M = inverse if inverse is not None else spectral_inverse(xp, b.dtype, inv_dx, bc, shape3, ndim,
                                                             _device_key(xp))

    def A(v):
        q = backend.laplace(v, inv_dx, bc, shape3, ndim)
        return xp.negative(q, out=q)

    # laplace(x) = b is A x = −b
    rhs = (b.mean(axis=1, keepdims=True) - b) if singular else -b

    def residual(x):  # rhs − A x = rhs + laplace(x), in place on laplace's new array
        t = backend.laplace(x, inv_dx, bc, shape3, ndim)
        t += rhs
        return t

    bnorm = xp.sqrt(_dots(xp, rhs, rhs))
    zero = bnorm == 0
    if bool(zero.all()):  # the solution is 0, residual 0
        return xp.zeros_like(b), 0, 0.0
    scale = xp.where(zero, 1.0, bnorm)

    def relative(res):
        rel = xp.sqrt(_dots(xp, res, res)) / scale
        return xp.where(zero, 0.0, rel)  # a zero right-hand side: the solution is 0, residual 0

    its = 0
    if x0 is None:
        x, r = None, rhs
        rel = xp.where(zero, 0.0, 1.0)
    else:
        x = x0 - x0.mean(axis=1, keepdims=True) if singular else x0.copy()
        r = residual(x)
        rel = relative(r)
    if float(rel.max()) > tol:  # one application of A⁺: the solution up to rounding
        d = M(r)
        if x is None:
            x = d
        else:
            x += d
        its = 1
        r = residual(x)
        rel = relative(r)
    if x is None:  # tol ≥ 1: the start value 0 is good enough
        x = xp.zeros_like(b)
    # conjugate gradients preconditioned by A⁺, only for a tolerance near rounding; restarts from the true
    # residual guard against the recurrence drifting (a few at most in float32)
    cg = False
    while its < maxiter and float(rel.max()) > tol:
        cg = True
        z = M(r)
        p = z
        rz = _dots(xp, r, z)
        while its < maxiter:
            q = A(p)
            pq = _dots(xp, p, q)
            alpha = xp.where(pq > 0, rz / xp.where(pq > 0, pq, 1.0), 0.0).astype(b.dtype)[:, None]
            x += alpha * p
            r -= alpha * q
            its += 1
            if float(relative(r).max()) <= tol or not bool((pq > 0).any()):
                break
            z = M(r)
            rz_new = _dots(xp, r, z)
            beta = xp.where(rz > 0, rz_new / xp.where(rz > 0, rz, 1.0), 0.0).astype(b.dtype)[:, None]
            rz = rz_new
            p = z + beta * p
        r = residual(x)
        new = relative(r)
        if not bool((new < rel).any()):  # no progress (breakdown or rounding floor): stop, the residual tells
            rel = new
            break
        rel = new
    if cg and singular:  # A⁺ r has zero mean; the CG updates may leave a rounding-size mean
        x -= x.mean(axis=1, keepdims=True)
    if bool(zero.any()):
        x[zero] = 0.0
    res = float(rel.max())
    return x, its, (res if math.isfinite(res) else float("nan"))
