"""The multigrid V-cycle's kernels (``gpudp.ops.multigrid``) as ``numba.cuda.jit`` kernels.

The per-cell formulas are the stencil bodies of :mod:`gpudp.backends.mg_stencils`, compiled here as CUDA device
functions (the ``cpu`` backend compiles the same bodies with ``numba.njit``). Every kernel is a grid-stride loop
with one thread per output entry (gather form, no atomics); the V-cycle queues them on one stream and never
waits for them.

``mg_ops``          ``A x``, ``r − A x``, a damped-Jacobi sweep or the first sweep ``ω D⁻¹ r`` (``mode`` 0–3);
``mg_restrict``     one thread per coarse cell;
``mg_prolong_add``  ``x += P e``, one thread per fine cell;
``mg_dense``        the coarsest level's product ``r M``, one thread per output entry.
"""
from __future__ import annotations

from numba import cuda

from .. import mg_stencils
from ._common import blocks_for
from .mac import _coords

_S = mg_stencils.build(cuda.jit(device=True))
_apply_at, _smooth_at, _restrict_at, _prolong_at = _S.apply_at, _S.smooth_at, _S.restrict_at, _S.prolong_at


@cuda.jit
def _ops_kernel(x, r, out, w0, w1, w2, dinv, omega, mode, B, n0, n1, n2, b0, b1, b2, off):
    n, bc = (n0, n1, n2), (b0, b1, b2)
    N = n0 * n1 * n2
    for idx in range(cuda.grid(1), B * N, cuda.gridsize(1)):
        s = idx // N
        i = idx - s * N
        x0, x1, x2 = _coords(i, n1, n2)
        xb = s * N
        if mode == 3:
            out[idx] = omega * dinv[i] * r[idx]
        elif mode == 2:
            out[idx] = _smooth_at(x, r, xb, w0, w1, w2, dinv, omega, False, x0, x1, x2, n, bc, off)
        else:
            ax = _apply_at(x, xb, w0, w1, w2, x0, x1, x2, n, bc, off)
            out[idx] = ax if mode == 0 else r[idx] - ax


@cuda.jit
def _restrict_kernel(f, out, B, f0, f1, f2, c0, c1, c2, b0, b1, b2, k0, k1, k2, off):
    nf, nc, bc, k = (f0, f1, f2), (c0, c1, c2), (b0, b1, b2), (k0, k1, k2)
    Nf = f0 * f1 * f2
    Nc = c0 * c1 * c2
    for idx in range(cuda.grid(1), B * Nc, cuda.gridsize(1)):
        s = idx // Nc
        X0, X1, X2 = _coords(idx - s * Nc, c1, c2)
        out[idx] = _restrict_at(f, s * Nf, X0, X1, X2, nf, nc, bc, k, off)


@cuda.jit
def _prolong_add_kernel(e, x, B, f0, f1, f2, c0, c1, c2, b0, b1, b2, k0, k1, k2, off):
    nc, bc, k = (c0, c1, c2), (b0, b1, b2), (k0, k1, k2)
    Nf = f0 * f1 * f2
    Nc = c0 * c1 * c2
    for idx in range(cuda.grid(1), B * Nf, cuda.gridsize(1)):
        s = idx // Nf
        x0, x1, x2 = _coords(idx - s * Nf, f1, f2)
        x[idx] += _prolong_at(e, s * Nc, x0, x1, x2, nc, bc, k, off)


@cuda.jit
def _dense_kernel(r, m, out, B, N):
    for idx in range(cuda.grid(1), B * N, cuda.gridsize(1)):
        s = idx // N
        j = idx - s * N
        acc = r[s * N] * 0
        for q in range(N):
            acc += r[s * N + q] * m[q * N + j]
        out[idx] = acc


def _level(level):
    return (*(int(v) for v in level.shape3), *(int(b) for b in level.bc))


def _ops(be, x, r, out, level, omega, mode):
    w0, w1, w2 = (be.dev(w) for w in level.w)
    B = out.shape[0]
    be.launch("mg_ops", _ops_kernel, blocks_for(out.size),
              (be.dev(x), be.dev(r), be.dev(out), w0, w1, w2, be.dev(level.dinv), omega, mode, B, *_level(level),
               level.off))


def smooth(be, x, r, out, level, omega, first):
    _ops(be, r if first else x, r, out, level, omega, 3 if first else 2)


def residual(be, x, r, out, level):
    _ops(be, x, r, out, level, out.dtype.type(0), 1)


def apply(be, x, out, level):
    _ops(be, x, x, out, level, out.dtype.type(0), 0)


def restrict(be, fine, out, level, coarse):
    be.launch("mg_restrict", _restrict_kernel, blocks_for(out.size),
              (be.dev(fine), be.dev(out), out.shape[0], *level.shape3, *coarse.shape3, *level.bc, *level.coarsen,
               level.off))


def prolong_add(be, e, x, level, coarse):
    be.launch("mg_prolong_add", _prolong_add_kernel, blocks_for(x.size),
              (be.dev(e), be.dev(x), x.shape[0], *level.shape3, *coarse.shape3, *level.bc, *level.coarsen,
               level.off))


def coarse_solve(be, r, pinv, out):
    B, N = out.shape
    be.launch("mg_dense", _dense_kernel, blocks_for(out.size), (be.dev(r), be.dev(pinv), be.dev(out), B, N))
