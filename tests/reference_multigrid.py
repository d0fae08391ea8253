"""An independent float64 NumPy reference of the multigrid V-cycle's pieces (``gpudp.ops.multigrid``), for tests.

Written from the formulas of ``gpudp.backends.mg_stencils`` with whole-array NumPy (rolls and zero padding for
the level operator, explicit 1-D prolongation matrices applied per axis with ``tensordot`` for the transfers), not
from the kernels' index arithmetic. Arrays are ``(B, n0, n1, n2)`` (padded to three axes); a level is given by
``n`` (``shape3``), ``bc``, ``off`` and its coupling face arrays ``w`` (flat, as in ``gpudp.ops.multigrid.Level``).
"""
import numpy as np


def face_shape(n, bc, a):
    s = list(n)
    if bc[a] != 0:
        s[a] += 1
    return tuple(s)


def apply(x, n, bc, off, w):
    """``A x`` of a level (``x``: ``(B, *n)``)."""
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for a in range(off, 3):
        ax = a + 1
        W = np.asarray(w[a], np.float64).reshape(face_shape(n, bc, a))[None]
        m = n[a]
        if bc[a] == 0:
            xl, xu = np.roll(x, 1, ax), np.roll(x, -1, ax)
            wl, wu = W, np.roll(W, -1, ax)
        else:
            pad = [(0, 0)] * 4
            pad[ax] = (1, 1)
            xp = np.pad(x, pad)
            xl, xu = np.take(xp, range(0, m), axis=ax), np.take(xp, range(2, m + 2), axis=ax)
            wl, wu = np.take(W, range(0, m), axis=ax), np.take(W, range(1, m + 1), axis=ax)
        out += wl * (x - xl) + wu * (x - xu)
    return out


def dense(n, bc, off, w):
    """The level's ``A`` as a dense matrix."""
    N = int(np.prod(n))
    return apply(np.eye(N).reshape((N,) + tuple(n)), n, bc, off, w).reshape(N, N)


def prolongation_1d(m, b):
    """The ``m × ⌈m/2⌉`` cell-centred linear prolongation of one axis with boundary code ``b``."""
    mc = (m + 1) // 2
    P = np.zeros((m, mc))
    for i in range(m):
        I = i // 2
        P[i, I] += 0.75
        J = I - 1 if i % 2 == 0 else I + 1
        if b == 0:
            J %= mc
        elif b == 2:
            J = min(max(J, 0), mc - 1)
        elif not 0 <= J < mc:
            continue
        P[i, J] += 0.25
    return P


def prolong(e, n_fine, bc, coarsen):
    """``P e`` (``e``: ``(B, *n_coarse)``) → ``(B, *n_fine)``."""
    e = np.asarray(e, np.float64)
    for a in range(3):
        if coarsen[a]:
            P = prolongation_1d(n_fine[a], bc[a])
            e = np.moveaxis(np.tensordot(e, P, axes=([a + 1], [1])), -1, a + 1)
    return e


def restrict(f, n_fine, bc, coarsen):
    """``R f = Pᵀ f / 2`` per coarsened axis (``f``: ``(B, *n_fine)``)."""
    f = np.asarray(f, np.float64)
    for a in range(3):
        if coarsen[a]:
            P = prolongation_1d(n_fine[a], bc[a])
            f = np.moveaxis(np.tensordot(f, P / 2.0, axes=([a + 1], [0])), -1, a + 1)
    return f


def smooth(x, r, n, bc, off, w, dinv, omega, first):
    """One damped-Jacobi sweep ``x + ω D⁻¹ (r − A x)`` (``first``: ``ω D⁻¹ r``)."""
    d = np.asarray(dinv, np.float64).reshape((1,) + tuple(n))
    r = np.asarray(r, np.float64)
    if first:
        return omega * d * r
    return x + omega * d * (r - apply(x, n, bc, off, w))
