"""Stencil bodies of MAC (staggered) advection and interpolation (DESIGN.md §6), written once for both Numba
targets.

The functions below are plain Python. :func:`build` compiles them with a decorator of the caller's choice,
``numba.njit`` for the ``cpu`` backend (whose loops LLVM inlines them into) or ``numba.cuda.jit(device=True)``
for ``numba-cuda``, binding every helper a body calls to its compiled version. Each body computes one output
entry (gather form: it reads its neighbours and writes nothing), so the same body runs in a CPU loop and in
one CUDA thread. ``build(..., inside=True)`` compiles the same bodies for entries away from the boundary, with
reads that skip the ghost rules.

Conventions (the layouts of :mod:`gpudp.backends.base`): grids are padded to three axes; ``n = (n0, n1, n2)``
cells, ``bc`` boundary codes (0 periodic, 1 dirichlet, 2 neumann), ``off = 3 - ndim`` (axes ``a < off`` are
padding and never touched). Arrays are flat; an entry is addressed by a base offset (its field) and
coordinates ``(x0, x1, x2)``. The face array of axis ``a`` has ``n_a + 1`` entries along ``a`` when the axis is
not periodic, ``n_a`` when it is; face ``f`` lies between cells ``f − e_a`` and ``f``. ``c = (c0, c1, c2)`` are
``Δt/Δx_a`` in the arrays' dtype.

``read`` resolves a coordinate one step outside an array by the ghost rule of that axis (periodic wraps,
dirichlet is 0, neumann repeats the boundary entry); ``read_g`` reads an adjoint array, whose entries outside
the domain are 0 unless the axis wraps. With ``up(w, lo, hi) = w·lo if w > 0 else w·hi``::

    cell field:   q'_i = q_i − Σ_a c_a (F_a[i + e_a] − F_a[i]),   F_a[f] = up(u_a[f], q_{f−e_a}, q_f)
    face field a: U'[f] = U[f] − c_a (G[f] − G[f − e_a]) − Σ_{b≠a} c_b (H_b[f + e_b] − H_b[f])
                  G[i]   = up(½(u_a[i] + u_a[i + e_a]), U[i], U[i + e_a])          (cell i)
                  H_b[f] = up(½(u_b[f − e_a] + u_b[f]), U[f − e_b], U[f])          (edge below face f along b)
                  boundary faces of a non-periodic axis a keep their value

Adjoints, with ``λ`` the gradient of a flux (``λ = c (ḡ_above − ḡ_below)`` of the entries it feeds):
``∂up/∂lo = max(w, 0)``, ``∂up/∂hi = min(w, 0)``, ``∂up/∂w = lo`` for ``w ≥ 0`` (the ``w > 0`` branch at
``w = 0``, DESIGN.md §6), ``hi`` otherwise; a neumann ghost that repeats the entry itself adds the other
branch. The velocity gradient of a face collects ``λ ∂up/∂w`` from every flux whose velocity it enters (``½``
for the averaged velocities of the staggered scheme).
"""
from __future__ import annotations

import builtins
import hashlib
import pathlib
import types

import numpy as np

#: Typed constants: float32 arithmetic stays float32 (float64 operands promote them).
ZERO = np.float32(0.0)
HALF = np.float32(0.5)


# -- indexing ------------------------------------------------------------------------------------------------

def face_dims(a, n, bc):
    """Dims of the face array of padded axis ``a`` (one more entry along ``a`` when it is not periodic)."""
    e = 1 if bc[a] != 0 else 0
    return (n[0] + e if a == 0 else n[0], n[1] + e if a == 1 else n[1], n[2] + e if a == 2 else n[2])


def flat(x0, x1, x2, m):
    """Flat index of ``(x0, x1, x2)`` in an array of dims ``m``."""
    return (x0 * m[1] + x1) * m[2] + x2


def shift(x0, x1, x2, a, s):
    """``(x0, x1, x2) + s·e_a``."""
    return x0 + (s if a == 0 else 0), x1 + (s if a == 1 else 0), x2 + (s if a == 2 else 0)


def ghost(x, m, b):
    """Coordinate ``x`` (at most one step outside ``[0, m)``) after the ghost rule ``b``; −1 for a ghost of
    value 0 (dirichlet)."""
    if x < 0:
        return x + m if b == 0 else (0 if b == 2 else -1)
    if x >= m:
        return x - m if b == 0 else (m - 1 if b == 2 else -1)
    return x


def ghost_g(x, m, b):
    """As :func:`ghost` for adjoint arrays: outside the domain only a periodic axis has entries."""
    if x < 0:
        return x + m if b == 0 else -1
    if x >= m:
        return x - m if b == 0 else -1
    return x


def read(arr, base, x0, x1, x2, m, bc):
    """``arr`` at ``(x0, x1, x2)`` of an array of dims ``m`` with the ghost rules."""
    y0 = ghost(x0, m[0], bc[0])
    y1 = ghost(x1, m[1], bc[1])
    y2 = ghost(x2, m[2], bc[2])
    if y0 < 0 or y1 < 0 or y2 < 0:
        return ZERO
    return arr[base + flat(y0, y1, y2, m)]


def read_g(arr, base, x0, x1, x2, m, bc):
    """``arr`` at ``(x0, x1, x2)``; 0 outside the domain unless the axis wraps."""
    y0 = ghost_g(x0, m[0], bc[0])
    y1 = ghost_g(x1, m[1], bc[1])
    y2 = ghost_g(x2, m[2], bc[2])
    if y0 < 0 or y1 < 0 or y2 < 0:
        return ZERO
    return arr[base + flat(y0, y1, y2, m)]


def read_inside(arr, base, x0, x1, x2, m, bc):
    """:func:`read` (and :func:`read_g`) for coordinates inside the array: no ghost rule applies."""
    return arr[base + flat(x0, x1, x2, m)]


def upwind(w, lo, hi):
    """The donor value: ``lo`` for ``w ≥ 0``, else ``hi``; also ``∂up/∂w``, the ``w > 0`` branch at ``w = 0``.
    Callers load both values first, so that this is a select rather than a branch on the velocity's sign."""
    return lo if w >= ZERO else hi


def up(w, lo, hi):
    """Donor-cell flux: ``w·lo`` for ``w ≥ 0``, else ``w·hi`` (at ``w = 0`` both are 0, so this is DESIGN.md's
    ``w > 0`` rule)."""
    return w * upwind(w, lo, hi)


# -- cell-centred fields -------------------------------------------------------------------------------------
#
# Each per-axis term takes the arrays of its axis directly and the axis as an argument; the callers pass
# literal axes, so that after inlining the axis tests fold away (a per-axis variant per call site).

def cell_flux(q, qb, ua, uab, a, f0, f1, f2, n, bc):
    """``F_a[f] = up(u_a[f], q_{f−e_a}, q_f)``; ``f_a`` may be ``n_a`` (wraps when periodic)."""
    w = read(ua, uab, f0, f1, f2, face_dims(a, n, bc), bc)
    l0, l1, l2 = shift(f0, f1, f2, a, -1)
    return up(w, read(q, qb, l0, l1, l2, n, bc), read(q, qb, f0, f1, f2, n, bc))


def cell_term(q, qb, ua, uab, a, x0, x1, x2, n, bc):
    """``F_a[x + e_a] − F_a[x]``: the flux balance of cell ``x`` along ``a``."""
    h0, h1, h2 = shift(x0, x1, x2, a, 1)
    return cell_flux(q, qb, ua, uab, a, h0, h1, h2, n, bc) - cell_flux(q, qb, ua, uab, a, x0, x1, x2, n, bc)


def cell_update(q, qb, u0, u1, u2, ub0, ub1, ub2, x0, x1, x2, n, bc, c, off):
    """One step at cell ``x`` of the field at ``q[qb:]``; ``u0, u1, u2`` the velocity components (those of
    padding axes are never read), ``ub0, ub1, ub2`` the bases of the velocity field."""
    acc = ZERO
    if off <= 0:
        acc += c[0] * cell_term(q, qb, u0, ub0, 0, x0, x1, x2, n, bc)
    if off <= 1:
        acc += c[1] * cell_term(q, qb, u1, ub1, 1, x0, x1, x2, n, bc)
    acc += c[2] * cell_term(q, qb, u2, ub2, 2, x0, x1, x2, n, bc)
    return q[qb + flat(x0, x1, x2, n)] - acc


def cell_adjoint_term(g, gb, gv, ua, uab, a, x0, x1, x2, n, bc):
    """``Σ λ ∂F/∂q_x`` over the two faces of cell ``x`` along ``a`` (``gv = g`` at ``x``; without ``c_a``)."""
    xa = x0 if a == 0 else (x1 if a == 1 else x2)
    m = face_dims(a, n, bc)
    # lower face x: this cell is its upper (hi) cell; a neumann ghost below repeats it (lo too)
    w = read(ua, uab, x0, x1, x2, m, bc)
    l0, l1, l2 = shift(x0, x1, x2, a, -1)
    acc = (gv - read_g(g, gb, l0, l1, l2, n, bc)) * (w if (bc[a] == 2 and xa == 0) else min(w, ZERO))
    # upper face x + e_a: this cell is its lower (lo) cell; a neumann ghost above repeats it (hi too)
    h0, h1, h2 = shift(x0, x1, x2, a, 1)
    w = read(ua, uab, h0, h1, h2, m, bc)
    acc += (read_g(g, gb, h0, h1, h2, n, bc) - gv) * (w if (bc[a] == 2 and xa == n[a] - 1) else max(w, ZERO))
    return acc


def cell_adjoint_q(g, gb, u0, u1, u2, ub0, ub1, ub2, x0, x1, x2, n, bc, c, off):
    """Gradient w.r.t. ``q`` at cell ``x`` of one step, given ``g`` (gradient of the step's output)."""
    gv = g[gb + flat(x0, x1, x2, n)]
    acc = gv
    if off <= 0:
        acc += c[0] * cell_adjoint_term(g, gb, gv, u0, ub0, 0, x0, x1, x2, n, bc)
    if off <= 1:
        acc += c[1] * cell_adjoint_term(g, gb, gv, u1, ub1, 1, x0, x1, x2, n, bc)
    acc += c[2] * cell_adjoint_term(g, gb, gv, u2, ub2, 2, x0, x1, x2, n, bc)
    return acc


def cell_adjoint_u(g, q, qb, F, N, ua, uab, a, f0, f1, f2, n, bc, ca):
    """Gradient w.r.t. ``u_a`` at face ``f`` (in range), summed over the ``F`` fields at ``q[qb:]``,
    ``g[qb:]`` (``N`` cells apart): ``Σ λ_f ∂up/∂w``."""
    w = ua[uab + flat(f0, f1, f2, face_dims(a, n, bc))]
    l0, l1, l2 = shift(f0, f1, f2, a, -1)
    acc = ZERO
    for k in range(F):
        base = qb + k * N
        lam = read_g(g, base, f0, f1, f2, n, bc) - read_g(g, base, l0, l1, l2, n, bc)
        acc += lam * upwind(w, read(q, base, l0, l1, l2, n, bc), read(q, base, f0, f1, f2, n, bc))
    return ca * acc


# -- staggered fields ----------------------------------------------------------------------------------------
#
# Component ``a`` is advected by ``u_a`` (fluxes G along ``a``) and by the two other components ``u_b1``,
# ``u_b2`` (fluxes H along ``b1 < b2``, the axes other than ``a``; those below ``off`` are padding).

def face_updated(a, xa, n, bc):
    """Whether face ``xa`` (along ``a``) of component ``a`` is advected: not a boundary face of a
    non-periodic axis."""
    return bc[a] == 0 or (xa > 0 and xa < n[a])


def g_face(g, gb, a, x0, x1, x2, n, bc):
    """Adjoint of component ``a`` at face ``x``: 0 on boundary faces that are not advected and outside the
    domain (unless the axis wraps)."""
    xa = x0 if a == 0 else (x1 if a == 1 else x2)
    if bc[a] != 0 and (xa <= 0 or xa >= n[a]):
        return ZERO
    return read_g(g, gb, x0, x1, x2, face_dims(a, n, bc), bc)


def w_cell(ua, uab, a, i0, i1, i2, n, bc):
    """``½(u_a[i] + u_a[i + e_a])``: the velocity of the flux ``G`` at cell ``i`` (``i_a`` may be −1 when
    periodic)."""
    m = face_dims(a, n, bc)
    h0, h1, h2 = shift(i0, i1, i2, a, 1)
    return HALF * (read(ua, uab, i0, i1, i2, m, bc) + read(ua, uab, h0, h1, h2, m, bc))


def w_edge(ub_, ubb, a, b, f0, f1, f2, n, bc):
    """``½(u_b[f − e_a] + u_b[f])``: the velocity of the flux ``H_b`` at the edge below face ``f`` of
    component ``a`` along ``b``."""
    m = face_dims(b, n, bc)
    l0, l1, l2 = shift(f0, f1, f2, a, -1)
    return HALF * (read(ub_, ubb, l0, l1, l2, m, bc) + read(ub_, ubb, f0, f1, f2, m, bc))


def flux_g(U, Ub, ua, uab, a, i0, i1, i2, n, bc):
    """``G[i]`` of component ``a``."""
    m = face_dims(a, n, bc)
    h0, h1, h2 = shift(i0, i1, i2, a, 1)
    w = w_cell(ua, uab, a, i0, i1, i2, n, bc)
    return up(w, read(U, Ub, i0, i1, i2, m, bc), read(U, Ub, h0, h1, h2, m, bc))


def flux_h(U, Ub, ub_, ubb, a, b, f0, f1, f2, n, bc):
    """``H_b[f]`` of component ``a`` (``f_b`` in ``0 … n_b``)."""
    m = face_dims(a, n, bc)
    l0, l1, l2 = shift(f0, f1, f2, b, -1)
    w = w_edge(ub_, ubb, a, b, f0, f1, f2, n, bc)
    return up(w, read(U, Ub, l0, l1, l2, m, bc), read(U, Ub, f0, f1, f2, m, bc))


def face_h_term(U, Ub, ub_, ubb, a, b, x0, x1, x2, n, bc):
    """``H_b[x + e_b] − H_b[x]``: the flux balance of face ``x`` of component ``a`` along ``b``."""
    h0, h1, h2 = shift(x0, x1, x2, b, 1)
    return flux_h(U, Ub, ub_, ubb, a, b, h0, h1, h2, n, bc) - flux_h(U, Ub, ub_, ubb, a, b, x0, x1, x2, n, bc)


def face_update(U, Ub, a, ua, uab, b1, u1, u1b, b2, u2, u2b, x0, x1, x2, n, bc, c, off):
    """One step at face ``x`` of component ``a`` (the field at ``U[Ub:]``)."""
    v = U[Ub + flat(x0, x1, x2, face_dims(a, n, bc))]
    if not face_updated(a, x0 if a == 0 else (x1 if a == 1 else x2), n, bc):
        return v
    l0, l1, l2 = shift(x0, x1, x2, a, -1)
    acc = c[a] * (flux_g(U, Ub, ua, uab, a, x0, x1, x2, n, bc) - flux_g(U, Ub, ua, uab, a, l0, l1, l2, n, bc))
    if b1 >= off:
        acc += c[b1] * face_h_term(U, Ub, u1, u1b, a, b1, x0, x1, x2, n, bc)
    if b2 >= off:
        acc += c[b2] * face_h_term(U, Ub, u2, u2b, a, b2, x0, x1, x2, n, bc)
    return v - acc


def face_adjoint_h_term(g, gb, gx, ub_, ubb, a, b, x0, x1, x2, n, bc):
    """``Σ λ_H ∂H_b/∂U[x]`` over the edges below and above face ``x`` of component ``a`` along ``b``
    (``gx`` = the masked gradient at ``x``; without ``c_b``)."""
    xb = x0 if b == 0 else (x1 if b == 1 else x2)
    d0, d1, d2 = shift(x0, x1, x2, b, -1)
    e0, e1, e2 = shift(x0, x1, x2, b, 1)
    # the edge below: x is its hi entry (and its lo entry too where a neumann ghost repeats it)
    w = w_edge(ub_, ubb, a, b, x0, x1, x2, n, bc)
    acc = (gx - g_face(g, gb, a, d0, d1, d2, n, bc)) * (w if (bc[b] == 2 and xb == 0) else min(w, ZERO))
    # the edge above: x is its lo entry (and its hi entry too where a neumann ghost repeats it)
    w = w_edge(ub_, ubb, a, b, e0, e1, e2, n, bc)
    acc += (g_face(g, gb, a, e0, e1, e2, n, bc) - gx) * (w if (bc[b] == 2 and xb == n[b] - 1) else max(w, ZERO))
    return acc


def face_adjoint_q(g, gb, a, ua, uab, b1, u1, u1b, b2, u2, u2b, x0, x1, x2, n, bc, c, off):
    """Gradient w.r.t. component ``a`` at face ``x`` of one step, given ``g`` (its output gradient at
    ``g[gb:]``); depends on the velocity only."""
    xa = x0 if a == 0 else (x1 if a == 1 else x2)
    acc = g[gb + flat(x0, x1, x2, face_dims(a, n, bc))]
    # fluxes along a at the cells above (x is their lo face) and below (hi face)
    l0, l1, l2 = shift(x0, x1, x2, a, -1)
    h0, h1, h2 = shift(x0, x1, x2, a, 1)
    gx = g_face(g, gb, a, x0, x1, x2, n, bc)
    if bc[a] == 0 or xa < n[a]:
        w = w_cell(ua, uab, a, x0, x1, x2, n, bc)
        acc += c[a] * (g_face(g, gb, a, h0, h1, h2, n, bc) - gx) * max(w, ZERO)
    if bc[a] == 0 or xa > 0:
        w = w_cell(ua, uab, a, l0, l1, l2, n, bc)
        acc += c[a] * (gx - g_face(g, gb, a, l0, l1, l2, n, bc)) * min(w, ZERO)
    if face_updated(a, xa, n, bc):  # fluxes along the other axes (boundary faces have none)
        if b1 >= off:
            acc += c[b1] * face_adjoint_h_term(g, gb, gx, u1, u1b, a, b1, x0, x1, x2, n, bc)
        if b2 >= off:
            acc += c[b2] * face_adjoint_h_term(g, gb, gx, u2, u2b, a, b2, x0, x1, x2, n, bc)
    return acc


def _dflux_g(U, g, base, ua, uab, a, i0, i1, i2, n, bc):
    """``λ_G ∂G/∂w`` at cell ``i`` of component ``a`` (``i_a`` may be −1 when periodic; without ``c_a``)."""
    m = face_dims(a, n, bc)
    h0, h1, h2 = shift(i0, i1, i2, a, 1)
    lam = g_face(g, base, a, h0, h1, h2, n, bc) - g_face(g, base, a, i0, i1, i2, n, bc)
    w = w_cell(ua, uab, a, i0, i1, i2, n, bc)
    return lam * upwind(w, read(U, base, i0, i1, i2, m, bc), read(U, base, h0, h1, h2, m, bc))


def _dflux_h(U, g, base, ub_, ubb, a, b, f0, f1, f2, n, bc):
    """``λ_H ∂H_b/∂w`` at the edge below face ``f`` of component ``a`` along ``b`` (without ``c_b``)."""
    m = face_dims(a, n, bc)
    l0, l1, l2 = shift(f0, f1, f2, b, -1)
    lam = g_face(g, base, a, f0, f1, f2, n, bc) - g_face(g, base, a, l0, l1, l2, n, bc)
    w = w_edge(ub_, ubb, a, b, f0, f1, f2, n, bc)
    return lam * upwind(w, read(U, base, l0, l1, l2, m, bc), read(U, base, f0, f1, f2, m, bc))


def _dflux_h_both(U, g, base, uk, ukb, a, k, x0, x1, x2, n, bc):
    """The edges of component ``a`` along ``k`` whose velocity ``u_k[x]`` enters: edge ``x`` (as
    ``u_b[f]``) and edge ``x + e_a`` (as ``u_b[f − e_a]``), where their face row along ``a`` is advected."""
    xa = x0 if a == 0 else (x1 if a == 1 else x2)
    acc = ZERO
    if bc[a] == 0 or xa > 0:
        acc += _dflux_h(U, g, base, uk, ukb, a, k, x0, x1, x2, n, bc)
    if bc[a] == 0 or xa + 1 < n[a]:
        h0, h1, h2 = shift(x0, x1, x2, a, 1)
        acc += _dflux_h(U, g, base, uk, ukb, a, k, h0, h1, h2, n, bc)
    return acc


def face_adjoint_u(k, uk, ukb, qk, gk, qkb, Mk, a1, q1, g1, q1b, M1, a2, q2, g2, q2b, M2, F, x0, x1, x2, n, bc,
                   c, off):
    """Gradient w.r.t. the velocity component ``u_k`` at its face ``x``, summed over the ``F`` staggered fields.
    ``qk, gk``: component ``k`` of the fields and of their output gradients (field ``j`` at ``qkb + j·Mk``);
    ``q1, g1`` and ``q2, g2`` the same for the components ``a1 < a2`` other than ``k`` (padding below
    ``off``)."""
    xk = x0 if k == 0 else (x1 if k == 1 else x2)
    l0, l1, l2 = shift(x0, x1, x2, k, -1)
    acc = ZERO
    for j in range(F):
        # the fluxes G of component k at the cells above and below the face: w = ½(u_k[i] + u_k[i + e_k])
        base = qkb + j * Mk
        if bc[k] == 0 or xk < n[k]:
            acc += _dflux_g(qk, gk, base, uk, ukb, k, x0, x1, x2, n, bc)
        if bc[k] == 0 or xk > 0:
            acc += _dflux_g(qk, gk, base, uk, ukb, k, l0, l1, l2, n, bc)
        # the fluxes H_k of the other components at the edges next to the face
        if a1 >= off:
            acc += _dflux_h_both(q1, g1, q1b + j * M1, uk, ukb, a1, k, x0, x1, x2, n, bc)
        if a2 >= off:
            acc += _dflux_h_both(q2, g2, q2b + j * M2, uk, ukb, a2, k, x0, x1, x2, n, bc)
    return HALF * c[k] * acc


# -- interpolation -------------------------------------------------------------------------------------------

def center_value(ua, uab, a, x0, x1, x2, n, bc):
    """``½(u_a[x] + u_a[x + e_a])`` at cell ``x``."""
    return w_cell(ua, uab, a, x0, x1, x2, n, bc)


def center_adjoint(g, gb, a, x0, x1, x2, n, bc):
    """Transpose of :func:`center_value` at face ``x`` of axis ``a``: ``½(ḡ_x + ḡ_{x−e_a})`` over the cells that
    exist (``g[gb:]`` the cell gradient of component ``a``)."""
    l0, l1, l2 = shift(x0, x1, x2, a, -1)
    return HALF * (read_g(g, gb, x0, x1, x2, n, bc) + read_g(g, gb, l0, l1, l2, n, bc))


def face_value(q, qb, a, x0, x1, x2, n, bc):
    """``½(c_{x−e_a} + c_x)`` at face ``x`` of axis ``a`` with the ghost rules."""
    l0, l1, l2 = shift(x0, x1, x2, a, -1)
    return HALF * (read(q, qb, l0, l1, l2, n, bc) + read(q, qb, x0, x1, x2, n, bc))


def face_value_adjoint_term(ga, gab, a, x0, x1, x2, n, bc):
    """Transpose of :func:`face_value` of axis ``a`` at cell ``x``: its two faces, and the other half of a
    neumann boundary face, which repeats this cell."""
    xa = x0 if a == 0 else (x1 if a == 1 else x2)
    m = face_dims(a, n, bc)
    h0, h1, h2 = shift(x0, x1, x2, a, 1)
    lo = ga[gab + flat(x0, x1, x2, m)]
    hi = read(ga, gab, h0, h1, h2, m, bc)  # in range, or wraps when periodic
    acc = lo + hi
    if bc[a] == 2:
        if xa == 0:
            acc += lo
        if xa == n[a] - 1:
            acc += hi
    return HALF * acc


def face_value_adjoint(g0, g1, g2, gb0, gb1, gb2, x0, x1, x2, n, bc, off):
    """Transpose of :func:`face_value` at cell ``x`` (``g0, g1, g2`` the face gradients at bases ``gb*``)."""
    acc = ZERO
    if off <= 0:
        acc += face_value_adjoint_term(g0, gb0, 0, x0, x1, x2, n, bc)
    if off <= 1:
        acc += face_value_adjoint_term(g1, gb1, 1, x0, x1, x2, n, bc)
    acc += face_value_adjoint_term(g2, gb2, 2, x0, x1, x2, n, bc)
    return acc


# -- compilation -----------------------------------------------------------------------------------------------

#: Every function above, compiled by :func:`build`.
NAMES = ("face_dims", "flat", "shift", "ghost", "ghost_g", "read", "read_g", "upwind", "up",
         "cell_flux", "cell_term", "cell_update", "cell_adjoint_term", "cell_adjoint_q", "cell_adjoint_u",
         "face_updated", "g_face", "w_cell", "w_edge", "flux_g", "flux_h", "face_h_term", "face_update",
         "face_adjoint_h_term", "face_adjoint_q", "_dflux_g", "_dflux_h", "_dflux_h_both", "face_adjoint_u",
         "center_value", "center_adjoint", "face_value", "face_value_adjoint_term", "face_value_adjoint")

#: A short digest of this file: the CPU kernels put it into the names of their disk-cached compilations, so
#: that an edit here (which Numba's cache, keyed by the caller's file, would not see) compiles afresh.
DIGEST = hashlib.sha1(pathlib.Path(__file__).read_bytes()).hexdigest()[:10]


def build(jit, inside=False):
    """The stencil bodies compiled with ``jit``, as a namespace of the names in :data:`NAMES`. Each body is
    rebound to a globals dict holding the compiled functions, so calls between them stay compiled.

    ``inside=True`` compiles the variant for entries whose every neighbour lies inside the arrays (one cell away
    from every boundary): ``read`` and ``read_g`` become :func:`read_inside`, the same formulas without the
    ghost rules' branches."""
    scope = {"__builtins__": builtins, "__name__": __name__, "ZERO": ZERO, "HALF": HALF}
    for name in NAMES:
        fn = globals()["read_inside" if inside and name in ("read", "read_g") else name]
        copy = types.FunctionType(fn.__code__, scope, name, fn.__defaults__, fn.__closure__)
        copy.__qualname__ = fn.__qualname__
        copy.__doc__ = fn.__doc__
        scope[name] = jit(copy)
    return types.SimpleNamespace(**{name: scope[name] for name in NAMES})
