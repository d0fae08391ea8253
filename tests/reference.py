"""Independent float64 NumPy references for the tests (written from DESIGN.md's formulas, not from kernels)."""
import numpy as np


def shift(a, k, axis, boundary):
    """``a`` at index ``i + k`` along ``axis`` (k = ±1) with the ghost rule of ``boundary``."""
    if boundary == "periodic":
        return np.roll(a, -k, axis=axis)
    n = a.shape[axis]
    out = np.empty_like(a)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    edge = [slice(None)] * a.ndim
    if k == 1:
        dst[axis], src[axis], edge[axis] = slice(0, n - 1), slice(1, n), slice(n - 1, n)
    else:
        dst[axis], src[axis], edge[axis] = slice(1, n), slice(0, n - 1), slice(0, 1)
    out[tuple(dst)] = a[tuple(src)]
    out[tuple(edge)] = 0.0 if boundary == "dirichlet" else a[tuple(edge)]
    return out


def advect_step(d, u, dt, spacing, boundary):
    """One upwind step. d: (..., *shape); u: (D, *shape) broadcastable against d's trailing axes."""
    D = len(spacing)
    d = np.asarray(d, np.float64)
    u = np.asarray(u, np.float64)
    out = d.copy()
    for k in range(D):
        ax = d.ndim - D + k
        uk = u[..., k, *(slice(None),) * D] if u.ndim > D + 1 else u[k]
        dp = shift(d, +1, ax, boundary[k])
        dm = shift(d, -1, ax, boundary[k])
        out -= dt * (np.minimum(uk, 0) * (dp - d) + np.maximum(uk, 0) * (d - dm)) / spacing[k]
    return out


def advect(d, u, dt, spacing, boundary, steps=1):
    for _ in range(steps):
        d = advect_step(d, u, dt, spacing, boundary)
    return d
