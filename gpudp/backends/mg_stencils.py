"""Stencil bodies of the multigrid V-cycle (``gpudp.ops.multigrid``), written once for both Numba targets.

The functions below are plain Python. :func:`build` compiles them with a decorator of the caller's choice,
``numba.njit`` for the ``cpu`` backend or ``numba.cuda.jit(device=True)`` for ``numba-cuda``, binding every
helper a body calls to its compiled version (the scheme of :mod:`gpudp.backends.mac_stencils`). Each body
computes one output entry in gather form (it reads its neighbours and writes nothing), so the same body runs
in a CPU loop and in one CUDA thread. The CUDA C kernels of ``kernels/multigrid.cu`` implement the same
formulas.

Conventions: grids padded to three axes, ``n = (n0, n1, n2)`` cells, ``bc`` boundary codes (0 periodic,
1 dirichlet, 2 neumann), ``off = 3 - ndim`` (axes ``a < off`` are padding and never touched). Arrays are
flat; a system's entries start at a base offset. A level's operator is given by one *coupling* array per
axis, a face array (``n_a + 1`` entries along ``a`` when the axis is not periodic, ``n_a`` when it is; face
``f`` lies between cells ``f − e_a`` and ``f``)::

    (A x)_i = Σ_a  w_a[lower face of i] (x_i − x_{i−e_a}) + w_a[upper face of i] (x_i − x_{i+e_a})

with ``x`` outside a non-periodic axis read as 0 (a dirichlet face's weight couples the cell to a ghost of
value 0; a neumann face has weight 0). Transfers between a level and the next coarser one act per axis
``a`` that is coarsened (``k_a = 1``: ``n_c = ⌈n_f / 2⌉``; fine cells ``2I`` and ``2I + 1`` lie in coarse cell
``I``, a missing ``2I + 1`` of an odd axis is a *phantom* cell that holds nothing):

    prolongation (cell-centred linear):  fine i gets ¾ of its coarse cell I = ⌊i/2⌋ and ¼ of the neighbour
                                         J = I − 1 (i even) or I + 1 (i odd); J outside the axis: periodic
                                         wraps, neumann clamps to I, dirichlet drops the ¼;
    restriction = ½ × the transpose per coarsened axis (coarse I gathers fine 2I − 1, 2I, 2I + 1, 2I + 2 with
                                         ⅛, ⅜, ⅜, ⅛; periodic indices wrap modulo 2 n_c, neumann reflects −1 to 0
                                         and 2 n_c to 2 n_c − 1, phantom and outside cells hold nothing).
"""
from __future__ import annotations

import builtins
import hashlib
import pathlib
import types

import numpy as np

from .mac_stencils import face_dims, flat, shift  # noqa: F401  (compiled by build() with the bodies below)

#: Typed constants: float32 arithmetic stays float32 (float64 operands promote them); all exact in float32.
ZERO = np.float32(0.0)
ONE = np.float32(1.0)
P_NEAR = np.float32(0.75)
P_FAR = np.float32(0.25)
R_NEAR = np.float32(0.375)
R_FAR = np.float32(0.125)


# -- indexing ------------------------------------------------------------------------------------------------

def coord(a, x0, x1, x2):
    """``(x0, x1, x2)[a]``."""
    if a == 0:
        return x0
    if a == 1:
        return x1
    return x2


# -- the level operator --------------------------------------------------------------------------------------

def axis_term(x, xb, w, a, x0, x1, x2, n, bc, xi):
    """Axis ``a``'s share of ``(A x)_i`` at cell ``(x0, x1, x2)`` (``xi`` its value)."""
    m = face_dims(a, n, bc)
    na = n[a]
    ia = coord(a, x0, x1, x2)
    wl = w[flat(x0, x1, x2, m)]
    up = ia + 1
    if up == na and bc[a] == 0:
        up = 0
    u0, u1, u2 = shift(x0, x1, x2, a, up - ia)
    wu = w[flat(u0, u1, u2, m)]
    xl = xi - xi
    lo = ia - 1
    if lo < 0 and bc[a] == 0:
        lo = na - 1
    if lo >= 0:
        l0, l1, l2 = shift(x0, x1, x2, a, lo - ia)
        xl = x[xb + flat(l0, l1, l2, n)]
    xu = xi - xi
    hi = ia + 1
    if hi == na and bc[a] == 0:
        hi = 0
    if hi < na:
        h0, h1, h2 = shift(x0, x1, x2, a, hi - ia)
        xu = x[xb + flat(h0, h1, h2, n)]
    return wl * (xi - xl) + wu * (xi - xu)


def apply_at(x, xb, w0, w1, w2, x0, x1, x2, n, bc, off):
    """``(A x)_i`` at cell ``(x0, x1, x2)`` of the system starting at ``xb``."""
    xi = x[xb + flat(x0, x1, x2, n)]
    acc = axis_term(x, xb, w2, 2, x0, x1, x2, n, bc, xi)
    if off <= 1:
        acc += axis_term(x, xb, w1, 1, x0, x1, x2, n, bc, xi)
    if off <= 0:
        acc += axis_term(x, xb, w0, 0, x0, x1, x2, n, bc, xi)
    return acc


def smooth_at(x, r, xb, w0, w1, w2, dinv, omega, first, x0, x1, x2, n, bc, off):
    """One damped-Jacobi update at a cell: ``x_i + ω d⁻¹_i (r_i − (A x)_i)``, or ``ω d⁻¹_i r_i`` when
    ``first`` (the sweep that starts from ``x = 0``; ``x`` is not read)."""
    i = flat(x0, x1, x2, n)
    if first:
        return omega * dinv[i] * r[xb + i]
    return x[xb + i] + omega * dinv[i] * (r[xb + i] - apply_at(x, xb, w0, w1, w2, x0, x1, x2, n, bc, off))


def residual_at(x, r, xb, w0, w1, w2, x0, x1, x2, n, bc, off):
    """``r_i − (A x)_i``."""
    return r[xb + flat(x0, x1, x2, n)] - apply_at(x, xb, w0, w1, w2, x0, x1, x2, n, bc, off)


# -- transfers -----------------------------------------------------------------------------------------------

def restrict_source(j, nf, nc, b):
    """Fine index that restriction candidate ``j`` (in ``[2I − 1, 2I + 2]``) of a coarsened axis reads, or −1."""
    if b == 0:
        j = j % (2 * nc)
    elif b == 2:
        if j < 0:
            j = 0
        elif j == 2 * nc:
            j = 2 * nc - 1
    if j < 0 or j >= nf:
        return -1
    return j


def restrict_pick(X, t, nf, nc, b, k):
    """Restriction candidate ``t`` of coarse index ``X`` on one axis: ``(fine index or −1, weight)``; an axis that
    is not coarsened (``k`` false) has the one candidate ``(X, 1)``."""
    if not k:
        return X, ONE
    return restrict_source(2 * X - 1 + t, nf, nc, b), (R_FAR if (t == 0 or t == 3) else R_NEAR)


def restrict_at(f, fb, X0, X1, X2, nf, nc, bc, k, off):
    """Coarse cell ``(X0, X1, X2)`` of the restriction of the fine system at ``fb`` (dims ``nf``; coarse dims
    ``nc``; ``k`` the coarsened flags)."""
    acc = f[fb] - f[fb]
    c0 = 4 if (off <= 0 and k[0]) else 1
    c1 = 4 if (off <= 1 and k[1]) else 1
    c2 = 4 if k[2] else 1
    for t0 in range(c0):
        j0, w0 = restrict_pick(X0, t0, nf[0], nc[0], bc[0], c0 == 4)
        if j0 < 0:
            continue
        for t1 in range(c1):
            j1, w1 = restrict_pick(X1, t1, nf[1], nc[1], bc[1], c1 == 4)
            if j1 < 0:
                continue
            for t2 in range(c2):
                j2, w2 = restrict_pick(X2, t2, nf[2], nc[2], bc[2], c2 == 4)
                if j2 < 0:
                    continue
                acc += w0 * w1 * w2 * f[fb + flat(j0, j1, j2, nf)]
    return acc


def prolong_source(i, nc, b, t):
    """Coarse index of prolongation candidate ``t`` (0: the parent, 1: the neighbour) of fine index ``i`` of a
    coarsened axis, or −1."""
    J = i // 2
    if t == 0:
        return J
    J = J - 1 if i % 2 == 0 else J + 1
    if J < 0 or J >= nc:
        if b == 0:
            return J % nc
        if b == 2:
            return i // 2
        return -1
    return J


def prolong_pick(i, t, nc, b, k):
    """Prolongation candidate ``t`` (0: the parent, 1: the neighbour) of fine index ``i`` on one axis:
    ``(coarse index or −1, weight)``; an axis that is not coarsened has the one candidate ``(i, 1)``."""
    if not k:
        return i, ONE
    return prolong_source(i, nc, b, t), (P_NEAR if t == 0 else P_FAR)


def prolong_at(e, eb, x0, x1, x2, nc, bc, k, off):
    """``(P e)_i`` at fine cell ``(x0, x1, x2)`` for the coarse system at ``eb`` (coarse dims ``nc``)."""
    acc = e[eb] - e[eb]
    c0 = 2 if (off <= 0 and k[0]) else 1
    c1 = 2 if (off <= 1 and k[1]) else 1
    c2 = 2 if k[2] else 1
    for t0 in range(c0):
        J0, w0 = prolong_pick(x0, t0, nc[0], bc[0], c0 == 2)
        if J0 < 0:
            continue
        for t1 in range(c1):
            J1, w1 = prolong_pick(x1, t1, nc[1], bc[1], c1 == 2)
            if J1 < 0:
                continue
            for t2 in range(c2):
                J2, w2 = prolong_pick(x2, t2, nc[2], bc[2], c2 == 2)
                if J2 < 0:
                    continue
                acc += w0 * w1 * w2 * e[eb + flat(J0, J1, J2, nc)]
    return acc


# -- compilation -----------------------------------------------------------------------------------------------

#: Every function above, compiled by :func:`build`.
NAMES = ("face_dims", "flat", "shift", "coord", "axis_term", "apply_at", "smooth_at", "residual_at",
         "restrict_source", "restrict_pick", "restrict_at", "prolong_source", "prolong_pick", "prolong_at")

#: A short digest of this file (the CPU kernels put it into the names of their disk-cached compilations).
DIGEST = hashlib.sha1(pathlib.Path(__file__).read_bytes()).hexdigest()[:10]


def build(jit):
    """The stencil bodies compiled with ``jit``, as a namespace of the names in :data:`NAMES`; each body is
    rebound to a globals dict holding the compiled functions, so calls between them stay compiled."""
    scope = {"__builtins__": builtins, "__name__": __name__, "ZERO": ZERO, "ONE": ONE, "P_NEAR": P_NEAR,
             "P_FAR": P_FAR, "R_NEAR": R_NEAR, "R_FAR": R_FAR}
    for name in NAMES:
        fn = globals()[name]
        copy = types.FunctionType(fn.__code__, scope, name, fn.__defaults__, fn.__closure__)
        copy.__qualname__ = fn.__qualname__
        copy.__doc__ = fn.__doc__
        scope[name] = jit(copy)
    return types.SimpleNamespace(**{name: scope[name] for name in NAMES})
