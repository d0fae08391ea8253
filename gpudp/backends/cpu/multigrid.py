"""The multigrid V-cycle's kernels (``gpudp.ops.multigrid``) as Numba CPU loops.

The formulas are those of :mod:`gpudp.backends.mg_stencils` (the ``numba-cuda`` backend compiles its bodies as
device functions), here in row form: each kernel loops over the rows (along the last axis) of all systems of a
batch, in parallel (``prange``) when the level is large and serially otherwise (a parallel region costs more
than a small level's whole sweep); every iteration writes the row it owns (gather form). A row's interior is a
branch-free loop over row views; its end cells take the per-cell body ``apply_at``, and the rows a transfer
reads are chosen with the bodies' ``restrict_pick`` / ``prolong_pick``.
"""
from __future__ import annotations

import hashlib
import pathlib
import types

import numpy as np
from numba import njit, prange

from .. import mg_stencils
from .difference import PARALLEL_MIN_CELLS

_S = mg_stencils.build(njit(_nrt=False))
_apply_at = _S.apply_at


#: Bound to a constant in every compiled variant (see :func:`_variant`): the kernel's mode (0 ``A x``, 1 the
#: residual, 2 a sweep, 3 the first sweep) and the row function compiled for it.
MODE = 0
OPS_ROW = None


def _row(t, n):
    """System, first and second coordinate of row ``t`` of a batch (rows of ``n[2]`` cells)."""
    t = np.int64(t)   # a parallel loop's index is unsigned: keep the index arithmetic signed
    rows = n[0] * n[1]
    s = t // rows
    q = t - s * rows
    return s, q // n[1], q % n[1]


def _near(i, m, b, d):
    """Neighbour ``i + d`` (``d = ±1``) of index ``i`` on an axis of ``m`` cells: wraps when periodic, −1 when
    it lies outside."""
    j = i + d
    if j < 0 or j >= m:
        return (j + m) % m if b == 0 else -1
    return j


def _ops_row(x, r, out, w0, w1, w2, dinv, omega, zero, s, i0, i1, n, bc, off):
    """One row of ``A x`` (``mode`` 0: ``out = A x``; 1: ``out = r − A x``; 2: ``out = x + ω D⁻¹ (r − A x)``).

    The interior of the row is a branch-free loop over row views (its neighbour rows resolved once: the
    adjacent row, the wrapped one, or a row of zeros outside a non-periodic axis); the two end cells take the
    per-cell stencil body."""
    n0, n1, n2 = n
    N = n0 * n1 * n2
    e0 = 1 if bc[0] != 0 else 0
    e1 = 1 if bc[1] != 0 else 0
    e2 = 1 if bc[2] != 0 else 0
    xb = s * N
    cell = (i0 * n1 + i1) * n2
    xr = x[xb + cell:xb + cell + n2]
    rr = r[xb + cell:xb + cell + n2]
    orow = out[xb + cell:xb + cell + n2]
    dr = dinv[cell:cell + n2]
    f2 = (i0 * n1 + i1) * (n2 + e2)
    wl2 = w2[f2:f2 + n2]
    wu2 = w2[f2 + 1:f2 + 1 + n2]
    # axis 1 (when real): neighbour rows and face rows
    xl1 = zero
    xu1 = zero
    wl1 = zero
    wu1 = zero
    if off <= 1:
        j = _near(i1, n1, bc[1], -1)
        if j >= 0:
            xl1 = x[xb + (i0 * n1 + j) * n2:xb + (i0 * n1 + j) * n2 + n2]
        j = _near(i1, n1, bc[1], 1)
        if j >= 0:
            xu1 = x[xb + (i0 * n1 + j) * n2:xb + (i0 * n1 + j) * n2 + n2]
        fl = (i0 * (n1 + e1) + i1) * n2
        fu = (i0 * (n1 + e1) + (i1 + 1 if (i1 + 1 < n1 or e1 == 1) else 0)) * n2
        wl1 = w1[fl:fl + n2]
        wu1 = w1[fu:fu + n2]
    xl0 = zero
    xu0 = zero
    wl0 = zero
    wu0 = zero
    if off == 0:
        j = _near(i0, n0, bc[0], -1)
        if j >= 0:
            xl0 = x[xb + (j * n1 + i1) * n2:xb + (j * n1 + i1) * n2 + n2]
        j = _near(i0, n0, bc[0], 1)
        if j >= 0:
            xu0 = x[xb + (j * n1 + i1) * n2:xb + (j * n1 + i1) * n2 + n2]
        fl = (i0 * n1 + i1) * n2
        fu = ((i0 + 1 if (i0 + 1 < n0 or e0 == 1) else 0) * n1 + i1) * n2
        wl0 = w0[fl:fl + n2]
        wu0 = w0[fu:fu + n2]
    lo = 1 if n2 >= 3 else n2
    hi = n2 - 1 if n2 >= 3 else n2
    if off == 2:
        for i in range(lo, hi):
            xi = xr[i]
            ax = wl2[i] * (xi - xr[i - 1]) + wu2[i] * (xi - xr[i + 1])
            if MODE == 0:
                orow[i] = ax
            elif MODE == 1:
                orow[i] = rr[i] - ax
            else:
                orow[i] = xi + omega * dr[i] * (rr[i] - ax)
    elif off == 1:
        for i in range(lo, hi):
            xi = xr[i]
            ax = (wl2[i] * (xi - xr[i - 1]) + wu2[i] * (xi - xr[i + 1])
                  + (wl1[i] * (xi - xl1[i]) + wu1[i] * (xi - xu1[i])))
            if MODE == 0:
                orow[i] = ax
            elif MODE == 1:
                orow[i] = rr[i] - ax
            else:
                orow[i] = xi + omega * dr[i] * (rr[i] - ax)
    else:
        for i in range(lo, hi):
            xi = xr[i]
            ax = (wl2[i] * (xi - xr[i - 1]) + wu2[i] * (xi - xr[i + 1])
                  + (wl1[i] * (xi - xl1[i]) + wu1[i] * (xi - xu1[i]))
                  + (wl0[i] * (xi - xl0[i]) + wu0[i] * (xi - xu0[i])))
            if MODE == 0:
                orow[i] = ax
            elif MODE == 1:
                orow[i] = rr[i] - ax
            else:
                orow[i] = xi + omega * dr[i] * (rr[i] - ax)
    # the end cells (all cells of a row shorter than three)
    for i in range(n2):
        if lo <= i < hi:
            continue
        ax = _apply_at(x, xb, w0, w1, w2, i0, i1, i, n, bc, off)
        if MODE == 0:
            orow[i] = ax
        elif MODE == 1:
            orow[i] = rr[i] - ax
        else:
            orow[i] = xr[i] + omega * dr[i] * (rr[i] - ax)


def _ops(x, r, out, w0, w1, w2, dinv, omega, zero, B, n, bc, off):
    N = n[0] * n[1] * n[2]
    if MODE == 3:   # the first sweep, from x = 0: out = ω D⁻¹ r
        for t in prange(B * n[0] * n[1]):
            s, i0, i1 = _row(t, n)
            c = (i0 * n[1] + i1) * n[2]
            b = s * N + c
            for i in range(n[2]):
                out[b + i] = omega * dinv[c + i] * r[b + i]
        return
    for t in prange(B * n[0] * n[1]):
        s, i0, i1 = _row(t, n)
        OPS_ROW(x, r, out, w0, w1, w2, dinv, omega, zero, s, i0, i1, n, bc, off)


def _restrict_row(f, out, s, X0, X1, nf, nc, bc, k, off):
    """Coarse row ``(X0, X1)`` of system ``s``: every fine row it gathers (weights ⅛ ⅜ ⅜ ⅛ per coarsened axis,
    or the one row) is restricted along the last axis and added."""
    Nf = nf[0] * nf[1] * nf[2]
    fb = s * Nf
    m = nf[2]
    M = nc[2]
    Nc = nc[0] * nc[1] * nc[2]
    o = out[s * Nc + (X0 * nc[1] + X1) * M:s * Nc + (X0 * nc[1] + X1) * M + M]
    for i in range(M):
        o[i] = 0.0
    c0 = 4 if (off <= 0 and k[0]) else 1
    c1 = 4 if (off <= 1 and k[1]) else 1
    # interior coarse cells: fine 2I − 1 … 2I + 2 all inside the row
    hi = (m - 3) // 2 + 1
    for t0 in range(c0):
        j0, a0 = _restrict_pick(X0, t0, nf[0], nc[0], bc[0], c0 == 4)
        if j0 < 0:
            continue
        for t1 in range(c1):
            j1, b1 = _restrict_pick(X1, t1, nf[1], nc[1], bc[1], c1 == 4)
            if j1 < 0:
                continue
            a = a0 * b1
            row = f[fb + (j0 * nf[1] + j1) * m:fb + (j0 * nf[1] + j1) * m + m]
            if not k[2]:
                for i in range(m):
                    o[i] += a * row[i]
                continue
            a1 = a * 0.125
            a3 = a * 0.375
            for I in range(1, hi):
                o[I] += a1 * (row[2 * I - 1] + row[2 * I + 2]) + a3 * (row[2 * I] + row[2 * I + 1])
            for I in range(M):
                if 1 <= I < hi:
                    continue
                acc = 0.0
                for t in range(4):
                    j = _restrict_source(2 * I - 1 + t, m, M, bc[2])
                    if j >= 0:
                        acc += (a1 if (t == 0 or t == 3) else a3) * row[j]
                o[I] += acc


def _restrict(f, out, B, nf, nc, bc, k, off):
    for t in prange(B * nc[0] * nc[1]):
        s, X0, X1 = _row(t, nc)
        _restrict_row(f, out, s, X0, X1, nf, nc, bc, k, off)


def _prolong_row(e, x, s, i0, i1, nf, nc, bc, k, off):
    """Fine row ``(i0, i1)`` of system ``s``: every coarse row it reads (¾ parent, ¼ neighbour per coarsened
    axis, or the one row) is prolongated along the last axis and added."""
    Nc = nc[0] * nc[1] * nc[2]
    eb = s * Nc
    M = nc[2]
    Nf = nf[0] * nf[1] * nf[2]
    m = nf[2]
    xr = x[s * Nf + (i0 * nf[1] + i1) * m:s * Nf + (i0 * nf[1] + i1) * m + m]
    c0 = 2 if (off <= 0 and k[0]) else 1
    c1 = 2 if (off <= 1 and k[1]) else 1
    for t0 in range(c0):
        J0, a0 = _prolong_pick(i0, t0, nc[0], bc[0], c0 == 2)
        if J0 < 0:
            continue
        for t1 in range(c1):
            J1, b1 = _prolong_pick(i1, t1, nc[1], bc[1], c1 == 2)
            if J1 < 0:
                continue
            a = a0 * b1
            row = e[eb + (J0 * nc[1] + J1) * M:eb + (J0 * nc[1] + J1) * M + M]
            if not k[2]:
                for i in range(m):
                    xr[i] += a * row[i]
                continue
            a3 = a * 0.75
            a1 = a * 0.25
            # interior fine cells 2 … 2M − 3 read coarse I − 1 … I + 1 inside the row
            for I in range(1, M - 1):
                if 2 * I + 1 < m:
                    xr[2 * I] += a3 * row[I] + a1 * row[I - 1]
                    xr[2 * I + 1] += a3 * row[I] + a1 * row[I + 1]
            for i in range(m):
                I = i // 2
                if 1 <= I < M - 1 and 2 * I + 1 < m:
                    continue
                acc = a3 * row[I]
                J = _prolong_source(i, M, bc[2], 1)
                if J >= 0:
                    acc += a1 * row[J]
                xr[i] += acc


def _prolong_add(e, x, B, nf, nc, bc, k, off):
    for t in prange(B * nf[0] * nf[1]):
        s, i0, i1 = _row(t, nf)
        _prolong_row(e, x, s, i0, i1, nf, nc, bc, k, off)


_restrict_source, _prolong_source = _S.restrict_source, _S.prolong_source
_restrict_pick, _prolong_pick = _S.restrict_pick, _S.prolong_pick
#: Digest of the formulas (this file and the stencil bodies): part of every disk-cached compilation's name, since
#: Numba's cache tells neither an edit of the stencil module, the bound mode nor the parallel flag apart.
_DIGEST = hashlib.sha1(pathlib.Path(__file__).read_bytes() + mg_stencils.DIGEST.encode()).hexdigest()[:10]


def _variant(fn, tag, parallel=None, **consts):
    """``fn`` with the globals ``consts`` bound to constants (their branches fold away), compiled with
    ``_nrt=False`` (no allocation inside; views cost no reference counting) and cached on disk under a name
    that carries ``tag``, the parallel flag and :data:`_DIGEST`."""
    scope = dict(globals(), **consts)
    variant = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    kind = "" if parallel is None else ("_parallel" if parallel else "_serial")
    variant.__qualname__ = f"{fn.__qualname__}_{tag}{kind}_{_DIGEST}"
    if parallel is None:
        return njit(cache=True, _nrt=False)(variant)
    return njit(parallel=parallel, cache=True, _nrt=False)(variant)


_row = _variant(_row, "row")
_near = _variant(_near, "near")
_restrict_row = _variant(_restrict_row, "row")
_prolong_row = _variant(_prolong_row, "row")
_KERNELS = {}
for _par in (False, True):
    _KERNELS[("restrict", _par)] = _variant(_restrict, "k", _par)
    _KERNELS[("prolong_add", _par)] = _variant(_prolong_add, "k", _par)
    for _mode in range(4):
        _KERNELS[("ops", _mode, _par)] = _variant(_ops, f"mode{_mode}", _par, MODE=_mode,
                                                  OPS_ROW=_variant(_ops_row, f"mode{_mode}", MODE=_mode))


def _kernel(name, cells):
    key = name if isinstance(name, tuple) else (name,)
    return _KERNELS[key + (cells >= PARALLEL_MIN_CELLS,)]


_ZEROS = {}


def _zero_row(n, dtype):
    """A row of zeros (the neighbour row outside a non-periodic axis; never written)."""
    key = (n, np.dtype(dtype).str)
    z = _ZEROS.get(key)
    if z is None:
        z = np.zeros(n, dtype)
        _ZEROS[key] = z
    return z


def _flat(a):
    return a.reshape(-1)


def _run_ops(x, r, out, level, omega, mode):
    w0, w1, w2 = level.w
    _kernel(("ops", mode), out.size)(_flat(x), _flat(r), _flat(out), w0, w1, w2, level.dinv, omega,
                                     _zero_row(level.shape3[2], out.dtype), out.shape[0],
                             level.shape3, level.bc, level.off)


def smooth(x, r, out, level, omega, first):
    """``out = x + ω D⁻¹ (r − A x)`` (``first``: ``out = ω D⁻¹ r``, ``x`` unused) on ``(B, N)`` arrays."""
    _run_ops(r if first else x, r, out, level, omega, 3 if first else 2)


def residual(x, r, out, level):
    """``out = r − A x`` on ``(B, N)`` arrays."""
    _run_ops(x, r, out, level, out.dtype.type(0), 1)


def apply(x, out, level):
    """``out = A x`` on ``(B, N)`` arrays."""
    _run_ops(x, x, out, level, out.dtype.type(0), 0)


def restrict(fine, out, level, coarse):
    """``out = R fine`` (``fine`` on ``level``, ``out`` on the next coarser level ``coarse``)."""
    _kernel("restrict", out.size)(_flat(fine), _flat(out), fine.shape[0], level.shape3, coarse.shape3,
                                  level.bc, level.coarsen, level.off)


def prolong_add(e, x, level, coarse):
    """``x += P e`` (``x`` on ``level``, ``e`` on the next coarser level ``coarse``)."""
    _kernel("prolong_add", x.size)(_flat(e), _flat(x), x.shape[0], level.shape3, coarse.shape3, level.bc,
                                   level.coarsen, level.off)


def coarse_solve(r, pinv, out):
    """``out = r M`` for the coarsest level's (symmetric) pseudo-inverse ``M``."""
    np.matmul(r, pinv, out=out)
