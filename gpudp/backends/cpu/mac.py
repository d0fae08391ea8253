"""MAC (staggered) advection and interpolation, forward and adjoint, as Numba CPU kernels (DESIGN.md §6).

The per-entry formulas are the stencil bodies of :mod:`gpudp.backends.mac_stencils` (the ``numba-cuda`` backend
compiles the same bodies as device functions), compiled here twice with ``numba.njit``: as written, with the
ghost rules, and with reads that skip them (``inside=True``) for the entries one cell away from every boundary,
which are all but a thin layer of the grid. LLVM inlines the bodies into the loops. This module holds the
drivers: loops over contiguous chunks of one field's entries (so every grid shape parallelises, 1-D included),
run with ``prange`` when the work is large and serially otherwise (a parallel region costs more than a small
grid's whole step), compiled once per grid dimension (see :func:`_compile`). A ``steps = T`` call of the
cell-centred operator runs all steps, forward or adjoint, inside one compiled call.

Gather form throughout: each loop iteration writes the entries it owns and reads its neighbours. The cell
adjoint is one pass per step over the cells of each velocity field: a cell writes the ``q``-gradient of its
``F`` fields and the velocity gradient of its lower faces (and of the upper boundary face of a non-periodic
axis), summed over the fields and accumulated over the steps in place (no atomics).
"""
from __future__ import annotations

import builtins
import types

import numpy as np
from numba import njit, prange

from .. import mac_stencils
from .difference import CHUNK, PARALLEL_MIN_CELLS, advance, coords, step_output

_S = mac_stencils.build(njit(_nrt=False))            # every entry, with the ghost rules
_I = mac_stencils.build(njit(_nrt=False), inside=True)  # entries one cell away from every boundary
face_dims, flat, shift = _S.face_dims, _S.flat, _S.shift
_S_cell_adjoint_q, _I_cell_adjoint_q = _S.cell_adjoint_q, _I.cell_adjoint_q
_S_cell_adjoint_u, _I_cell_adjoint_u = _S.cell_adjoint_u, _I.cell_adjoint_u
_S_cell_update, _I_cell_update = _S.cell_update, _I.cell_update
_S_center_adjoint, _I_center_adjoint = _S.center_adjoint, _I.center_adjoint
_S_center_value, _I_center_value = _S.center_value, _I.center_value
_S_face_value, _I_face_value = _S.face_value, _I.face_value
_S_face_value_adjoint, _I_face_value_adjoint = _S.face_value_adjoint, _I.face_value_adjoint


@njit
def _inside(x0, x1, x2, n, off):
    """Whether every neighbour of entry ``x`` (a cell, or a face of the same coordinates) lies inside the
    arrays: ``1 <= x_k <= n_k - 2`` along every real axis."""
    return ((off > 0 or (x0 >= 1 and x0 <= n[0] - 2)) and (off > 1 or (x1 >= 1 and x1 <= n[1] - 2))
            and x2 >= 1 and x2 <= n[2] - 2)


# each entry: the variant without ghost rules inside, the general one near the boundary

@njit(inline="always")
def cell_update(q, qb, u0, u1, u2, ub0, ub1, ub2, x0, x1, x2, n, bc, c, off):
    if _inside(x0, x1, x2, n, off):
        return _I_cell_update(q, qb, u0, u1, u2, ub0, ub1, ub2, x0, x1, x2, n, bc, c, off)
    return _S_cell_update(q, qb, u0, u1, u2, ub0, ub1, ub2, x0, x1, x2, n, bc, c, off)


@njit(inline="always")
def cell_adjoint_q(g, gb, u0, u1, u2, ub0, ub1, ub2, x0, x1, x2, n, bc, c, off):
    if _inside(x0, x1, x2, n, off):
        return _I_cell_adjoint_q(g, gb, u0, u1, u2, ub0, ub1, ub2, x0, x1, x2, n, bc, c, off)
    return _S_cell_adjoint_q(g, gb, u0, u1, u2, ub0, ub1, ub2, x0, x1, x2, n, bc, c, off)


@njit(inline="always")
def cell_adjoint_u(g, q, qb, F, N, ua, uab, a, f0, f1, f2, n, bc, ca, off):
    if _inside(f0, f1, f2, n, off):
        return _I_cell_adjoint_u(g, q, qb, F, N, ua, uab, a, f0, f1, f2, n, bc, ca)
    return _S_cell_adjoint_u(g, q, qb, F, N, ua, uab, a, f0, f1, f2, n, bc, ca)


@njit(inline="always")
def center_value(ua, uab, a, x0, x1, x2, n, bc, off):
    if _inside(x0, x1, x2, n, off):
        return _I_center_value(ua, uab, a, x0, x1, x2, n, bc)
    return _S_center_value(ua, uab, a, x0, x1, x2, n, bc)


@njit(inline="always")
def center_adjoint(g, gb, a, x0, x1, x2, n, bc, off):
    if _inside(x0, x1, x2, n, off):
        return _I_center_adjoint(g, gb, a, x0, x1, x2, n, bc)
    return _S_center_adjoint(g, gb, a, x0, x1, x2, n, bc)


@njit(inline="always")
def face_value(q, qb, a, x0, x1, x2, n, bc, off):
    if _inside(x0, x1, x2, n, off):
        return _I_face_value(q, qb, a, x0, x1, x2, n, bc)
    return _S_face_value(q, qb, a, x0, x1, x2, n, bc)


@njit(inline="always")
def face_value_adjoint(g0, g1, g2, gb0, gb1, gb2, x0, x1, x2, n, bc, off):
    if _inside(x0, x1, x2, n, off):
        return _I_face_value_adjoint(g0, g1, g2, gb0, gb1, gb2, x0, x1, x2, n, bc, off)
    return _S_face_value_adjoint(g0, g1, g2, gb0, gb1, gb2, x0, x1, x2, n, bc, off)


# -- per-axis variants of the staggered entries ----------------------------------------------------------------
#
# A staggered entry takes its component's axis and the two other axes as arguments. Each variant below fixes
# them: the entry's own body is inlined into a three-line template whose axes are constants, so the axis tests
# of the stencils it calls fold away (LLVM does not inline the large entries into the drivers' loops, where the
# axes would otherwise stay run-time values).

def _face_update_t(U, Ub, ua, uab, u1, u1b, u2, u2b, x0, x1, x2, n, bc, c, off):
    return ENTRY(U, Ub, A, ua, uab, B1, u1, u1b, B2, u2, u2b, x0, x1, x2, n, bc, c, off)


def _face_adjoint_q_t(g, gb, ua, uab, u1, u1b, u2, u2b, x0, x1, x2, n, bc, c, off):
    return ENTRY(g, gb, A, ua, uab, B1, u1, u1b, B2, u2, u2b, x0, x1, x2, n, bc, c, off)


def _face_adjoint_u_t(uk, ukb, qk, gk, qkb, Mk, q1, g1, q1b, M1, q2, g2, q2b, M2, F, x0, x1, x2, n, bc, c, off):
    return ENTRY(A, uk, ukb, qk, gk, qkb, Mk, B1, q1, g1, q1b, M1, B2, q2, g2, q2b, M2, F, x0, x1, x2, n, bc, c,
                 off)


def _axis_variants(template, entry, ns):
    """``template`` compiled for axes 0, 1, 2 around the body of the stencil ``entry`` of the namespace ``ns``."""
    scope = dict(vars(ns), __builtins__=builtins, ZERO=mac_stencils.ZERO, HALF=mac_stencils.HALF)
    body = njit(inline="always", _nrt=False)(
        types.FunctionType(getattr(mac_stencils, entry).__code__, scope, entry))
    out = []
    for a, (b1, b2) in enumerate(((1, 2), (0, 2), (0, 1))):
        consts = {"__builtins__": builtins, "ENTRY": body, "A": a, "B1": b1, "B2": b2}
        out.append(njit(_nrt=False)(types.FunctionType(template.__code__, consts, f"{entry}_{a}")))
    return out


_FU_S0, _FU_S1, _FU_S2 = _axis_variants(_face_update_t, "face_update", _S)
_FU_I0, _FU_I1, _FU_I2 = _axis_variants(_face_update_t, "face_update", _I)
_FQ_S0, _FQ_S1, _FQ_S2 = _axis_variants(_face_adjoint_q_t, "face_adjoint_q", _S)
_FQ_I0, _FQ_I1, _FQ_I2 = _axis_variants(_face_adjoint_q_t, "face_adjoint_q", _I)
_FW_S0, _FW_S1, _FW_S2 = _axis_variants(_face_adjoint_u_t, "face_adjoint_u", _S)
_FW_I0, _FW_I1, _FW_I2 = _axis_variants(_face_adjoint_u_t, "face_adjoint_u", _I)


# -- chunk loops (literal axes at every call: once inlined, each stencil folds its axis tests) ------------------

@njit(inline="always")
def _work(w, nch, chunk, size):
    """Work item ``w`` of ``(system, chunk)`` items: ``(system, start, end)``."""
    s = w // nch
    start = (w % nch) * chunk
    return s, start, min(start + chunk, size)


@njit(inline="always")
def _own_faces(gu, g, q, qb, F, N, ua, uab, a, x0, x1, x2, n, bc, ca, off, accumulate):
    """The velocity gradient of the faces of axis ``a`` that cell ``x`` owns: its lower face, and the upper
    boundary face after the last cell of a non-periodic axis."""
    m = face_dims(a, n, bc)
    j = uab + flat(x0, x1, x2, m)
    v = cell_adjoint_u(g, q, qb, F, N, ua, uab, a, x0, x1, x2, n, bc, ca, off)
    gu[j] = gu[j] + v if accumulate else v
    xa = x0 if a == 0 else (x1 if a == 1 else x2)
    if bc[a] != 0 and xa == n[a] - 1:
        h0, h1, h2 = shift(x0, x1, x2, a, 1)
        j = uab + flat(h0, h1, h2, m)
        v = cell_adjoint_u(g, q, qb, F, N, ua, uab, a, h0, h1, h2, n, bc, ca, off)
        gu[j] = gu[j] + v if accumulate else v


@njit(inline="always")
def _faces_chunk(qa, oa, a, ua, b1, u1, b2, u2, w, nch, Ms, F, n, bc, c, off, chunk, inner, outer):
    """Faces of component ``a`` in work item ``w``: ``oa[j] = entry(qa, ...)`` with the staggered entry
    (``face_update`` forward, ``face_adjoint_q`` for the q-gradient, ``qa`` then the incoming gradient) given as
    ``inner``/``outer``, its variants away from / near the boundary."""
    m = face_dims(a, n, bc)
    Ma = Ms[a]
    bf, start, end = _work(w, nch, chunk, Ma)
    b = bf // F
    base = bf * Ma
    ub, ub1, ub2 = b * Ma, b * Ms[b1], b * Ms[b2]
    x0, x1, x2 = coords(start, m[1], m[2])
    for j in range(start, end):
        if _inside(x0, x1, x2, n, off):
            oa[base + j] = inner(qa, base, ua, ub, u1, ub1, u2, ub2, x0, x1, x2, n, bc, c, off)
        else:
            oa[base + j] = outer(qa, base, ua, ub, u1, ub1, u2, ub2, x0, x1, x2, n, bc, c, off)
        x0, x1, x2 = advance(x0, x1, x2, m[1], m[2])


@njit(inline="always")
def _faces_adjoint_u_chunk(gua, k, uk, qk, gk, a1, q1, g1, a2, q2, g2, w, nch, Ms, F, n, bc, c, off, chunk, inner,
                           outer):
    m = face_dims(k, n, bc)
    Mk, M1, M2 = Ms[k], Ms[a1], Ms[a2]
    b, start, end = _work(w, nch, chunk, Mk)
    x0, x1, x2 = coords(start, m[1], m[2])
    for j in range(start, end):
        if _inside(x0, x1, x2, n, off):
            gua[b * Mk + j] = inner(uk, b * Mk, qk, gk, b * F * Mk, Mk, q1, g1, b * F * M1, M1, q2, g2, b * F * M2,
                                    M2, F, x0, x1, x2, n, bc, c, off)
        else:
            gua[b * Mk + j] = outer(uk, b * Mk, qk, gk, b * F * Mk, Mk, q1, g1, b * F * M1, M1, q2, g2, b * F * M2,
                                    M2, F, x0, x1, x2, n, bc, c, off)
        x0, x1, x2 = advance(x0, x1, x2, m[1], m[2])


@njit(inline="always")
def _to_faces_chunk(src, oa, a, kind, w, nch, Ma, N, D, off, n, bc, chunk):
    """Faces of axis ``a`` of one system: ``kind`` 0 interpolates the cells ``src`` to the faces, 1 is the
    transpose of the interpolation to the centres (``src`` then ``(B, D, N)``)."""
    m = face_dims(a, n, bc)
    b, start, end = _work(w, nch, chunk, Ma)
    x0, x1, x2 = coords(start, m[1], m[2])
    for j in range(start, end):
        if kind == 0:
            oa[b * Ma + j] = face_value(src, b * N, a, x0, x1, x2, n, bc, off)
        else:
            oa[b * Ma + j] = center_adjoint(src, (b * D + a - off) * N, a, x0, x1, x2, n, bc, off)
        x0, x1, x2 = advance(x0, x1, x2, m[1], m[2])


# -- drivers -------------------------------------------------------------------------------------------------
#
# Work items are (system, chunk) pairs of one component; the staggered drivers run the items of all components
# in one parallel loop, each branch calling its component's chunk loop with literal axes.

def _cells_forward(q, u0, u1, u2, out, states, buf, steps, Bu, F, n0, n1, n2, b0, b1, b2, c0, c1, c2, save, every,
                   chunk):
    """``steps`` steps of the ``(Bu, F, N)`` cell fields ``q`` into ``out``; with ``save``, ``states[t / every]``
    (flat) receives ``q^t`` for every ``t`` divisible by ``every``; ``buf`` is scratch of ``q``'s size when
    ``steps > 1``, unless ``save`` with ``every == 1``."""
    off = _OFF  # the variant's padding axes, a compile-time constant (see _compile)
    n0, n1 = (1 if off > 0 else n0), (1 if off > 1 else n1)
    n, bc, c = (n0, n1, n2), (b0, b1, b2), (c0, c1, c2)
    N = n0 * n1 * n2
    M0, M1, M2 = u0.size // Bu, u1.size // Bu, u2.size // Bu
    size = Bu * F * N
    nch = (N + chunk - 1) // chunk
    if save:
        first = states[0:size]
        for j in prange(size):
            first[j] = q[j]
    src = q
    for t in range(steps):
        dst = step_output(t, steps, save, every, size, out, buf, states)
        for w_ in prange(Bu * F * nch):
            bf, start, end = _work(np.int64(w_), nch, chunk, N)
            b = bf // F
            qb = bf * N
            x0, x1, x2 = coords(start, n1, n2)
            for cell in range(start, end):
                dst[qb + cell] = cell_update(src, qb, u0, u1, u2, b * M0, b * M1, b * M2, x0, x1, x2, n, bc, c, off)
                x0, x1, x2 = advance(x0, x1, x2, n1, n2)
        src = dst


def _cells_adjoint(g, states, u0, u1, u2, gq, buf, gu0, gu1, gu2, steps, Bu, F, n0, n1, n2, b0, b1, b2, c0, c1, c2,
                   need_q, need_u, acc_u, chunk):
    """The transposed steps in reverse order; ``gq`` receives the gradient of ``q^0`` (when ``need_q``), the
    ``gu`` the velocity gradient summed over fields and steps (when ``need_u``; ``states`` holds
    ``q^0 … q^{T-1}`` then), overwritten by the first step unless ``acc_u``, then added to; ``buf`` is scratch
    of ``g``'s size when ``steps > 1``."""
    off = _OFF  # the variant's padding axes, a compile-time constant (see _compile)
    n0, n1 = (1 if off > 0 else n0), (1 if off > 1 else n1)
    n, bc, c = (n0, n1, n2), (b0, b1, b2), (c0, c1, c2)
    N = n0 * n1 * n2
    M0, M1, M2 = u0.size // Bu, u1.size // Bu, u2.size // Bu
    size = Bu * F * N
    nch = (N + chunk - 1) // chunk
    cur = g
    for k in range(steps):
        t = steps - 1 - k
        need_g = need_q or t > 0
        dst = gq if t % 2 == 0 else buf  # alternate so that the gradient of q^0 lands in gq
        qs = states[t * size:(t + 1) * size] if need_u else g
        accumulate = k > 0 or acc_u  # the first step overwrites gu unless acc_u, later ones add to it
        for w_ in prange(Bu * nch):
            b, start, end = _work(np.int64(w_), nch, chunk, N)
            x0, x1, x2 = coords(start, n1, n2)
            for cell in range(start, end):
                if need_g:
                    for f in range(F):
                        base = (b * F + f) * N
                        dst[base + cell] = cell_adjoint_q(cur, base, u0, u1, u2, b * M0, b * M1, b * M2, x0, x1, x2,
                                                          n, bc, c, off)
                if need_u:
                    qb = b * F * N
                    if off <= 0:
                        _own_faces(gu0, cur, qs, qb, F, N, u0, b * M0, 0, x0, x1, x2, n, bc, c0, off, accumulate)
                    if off <= 1:
                        _own_faces(gu1, cur, qs, qb, F, N, u1, b * M1, 1, x0, x1, x2, n, bc, c1, off, accumulate)
                    _own_faces(gu2, cur, qs, qb, F, N, u2, b * M2, 2, x0, x1, x2, n, bc, c2, off, accumulate)
                x0, x1, x2 = advance(x0, x1, x2, n1, n2)
        if need_g:
            cur = dst


def _faces_forward(q0, q1, q2, u0, u1, u2, o0, o1, o2, Bu, F, n0, n1, n2, b0, b1, b2, c0, c1, c2, chunk):
    """One step of the staggered fields ``q`` (component ``a`` flat ``(Bu, F, M_a)``) into ``o``."""
    off = _OFF  # the variant's padding axes, a compile-time constant (see _compile)
    n0, n1 = (1 if off > 0 else n0), (1 if off > 1 else n1)
    n, bc, c = (n0, n1, n2), (b0, b1, b2), (c0, c1, c2)
    Ms = (u0.size // Bu, u1.size // Bu, u2.size // Bu)  # 0 for padding axes
    n0c, n1c, n2c = (Ms[0] + chunk - 1) // chunk, (Ms[1] + chunk - 1) // chunk, (Ms[2] + chunk - 1) // chunk
    I0, I1 = Bu * F * n0c, Bu * F * n1c
    for w_ in prange(I0 + I1 + Bu * F * n2c):
        w = np.int64(w_)
        if w < I0:
            if _OFF <= 0:  # a real axis in this variant (else the branch is compiled away)
                _faces_chunk(q0, o0, 0, u0, 1, u1, 2, u2, w, n0c, Ms, F, n, bc, c, off, chunk, _FU_I0, _FU_S0)
        elif w < I0 + I1:
            if _OFF <= 1:  # a real axis in this variant (else the branch is compiled away)
                _faces_chunk(q1, o1, 1, u1, 0, u0, 2, u2, w - I0, n1c, Ms, F, n, bc, c, off, chunk, _FU_I1,
                                     _FU_S1)
        else:
            _faces_chunk(q2, o2, 2, u2, 0, u0, 1, u1, w - I0 - I1, n2c, Ms, F, n, bc, c, off, chunk, _FU_I2,
                                 _FU_S2)


def _faces_adjoint(g0, g1, g2, q0, q1, q2, u0, u1, u2, gq0, gq1, gq2, gu0, gu1, gu2, Bu, F, n0, n1, n2,
                   b0, b1, b2, c0, c1, c2, need_q, need_u, chunk):
    """Gradients of one staggered step w.r.t. the fields (``gq``) and the velocity (``gu``, summed over the
    ``F`` fields)."""
    off = _OFF  # the variant's padding axes, a compile-time constant (see _compile)
    n0, n1 = (1 if off > 0 else n0), (1 if off > 1 else n1)
    n, bc, c = (n0, n1, n2), (b0, b1, b2), (c0, c1, c2)
    Ms = (u0.size // Bu, u1.size // Bu, u2.size // Bu)
    n0c, n1c, n2c = (Ms[0] + chunk - 1) // chunk, (Ms[1] + chunk - 1) // chunk, (Ms[2] + chunk - 1) // chunk
    if need_q:
        I0, I1 = Bu * F * n0c, Bu * F * n1c
        for w_ in prange(I0 + I1 + Bu * F * n2c):
            w = np.int64(w_)
            if w < I0:
                if _OFF <= 0:  # a real axis in this variant (else the branch is compiled away)
                    _faces_chunk(g0, gq0, 0, u0, 1, u1, 2, u2, w, n0c, Ms, F, n, bc, c, off, chunk, _FQ_I0,
                                           _FQ_S0)
            elif w < I0 + I1:
                if _OFF <= 1:  # a real axis in this variant (else the branch is compiled away)
                    _faces_chunk(g1, gq1, 1, u1, 0, u0, 2, u2, w - I0, n1c, Ms, F, n, bc, c, off, chunk,
                                           _FQ_I1, _FQ_S1)
            else:
                _faces_chunk(g2, gq2, 2, u2, 0, u0, 1, u1, w - I0 - I1, n2c, Ms, F, n, bc, c, off, chunk,
                                       _FQ_I2, _FQ_S2)
    if need_u:
        I0, I1 = Bu * n0c, Bu * n1c
        for w_ in prange(I0 + I1 + Bu * n2c):
            w = np.int64(w_)
            if w < I0:
                if _OFF <= 0:  # a real axis in this variant (else the branch is compiled away)
                    _faces_adjoint_u_chunk(gu0, 0, u0, q0, g0, 1, q1, g1, 2, q2, g2, w, n0c, Ms, F, n, bc, c, off,
                                           chunk, _FW_I0, _FW_S0)
            elif w < I0 + I1:
                if _OFF <= 1:  # a real axis in this variant (else the branch is compiled away)
                    _faces_adjoint_u_chunk(gu1, 1, u1, q1, g1, 0, q0, g0, 2, q2, g2, w - I0, n1c, Ms, F, n, bc, c, off,
                                           chunk, _FW_I1, _FW_S1)
            else:
                _faces_adjoint_u_chunk(gu2, 2, u2, q2, g2, 0, q0, g0, 1, q1, g1, w - I0 - I1, n2c, Ms, F, n, bc, c,
                                       off, chunk, _FW_I2, _FW_S2)


def _at_centers(u0, u1, u2, out, B, n0, n1, n2, b0, b1, b2, chunk):
    """``out`` flat ``(B, D, N)``: component ``a - off`` at the cells."""
    off = _OFF  # the variant's padding axes, a compile-time constant (see _compile)
    n0, n1 = (1 if off > 0 else n0), (1 if off > 1 else n1)
    n, bc = (n0, n1, n2), (b0, b1, b2)
    N = n0 * n1 * n2
    D = 3 - off
    M0, M1, M2 = u0.size // B, u1.size // B, u2.size // B
    nch = (N + chunk - 1) // chunk
    for w_ in prange(B * D * nch):
        row, start, end = _work(np.int64(w_), nch, chunk, N)  # row = b * D + (a - off)
        a = off + row % D
        b = row // D
        x0, x1, x2 = coords(start, n1, n2)
        for cell in range(start, end):
            if a == 0:
                v = center_value(u0, b * M0, 0, x0, x1, x2, n, bc, off)
            elif a == 1:
                v = center_value(u1, b * M1, 1, x0, x1, x2, n, bc, off)
            else:
                v = center_value(u2, b * M2, 2, x0, x1, x2, n, bc, off)
            out[row * N + cell] = v
            x0, x1, x2 = advance(x0, x1, x2, n1, n2)


def _to_faces(src, o0, o1, o2, kind, B, n0, n1, n2, b0, b1, b2, chunk):
    """The faces ``o`` from the cells ``src``: ``kind`` 0 is :func:`at_faces`, 1 the transpose of
    :func:`at_centers`."""
    off = _OFF  # the variant's padding axes, a compile-time constant (see _compile)
    n0, n1 = (1 if off > 0 else n0), (1 if off > 1 else n1)
    n, bc = (n0, n1, n2), (b0, b1, b2)
    N = n0 * n1 * n2
    D = 3 - off
    M0, M1, M2 = o0.size // B, o1.size // B, o2.size // B
    n0c, n1c, n2c = (M0 + chunk - 1) // chunk, (M1 + chunk - 1) // chunk, (M2 + chunk - 1) // chunk
    I0, I1 = B * n0c, B * n1c
    for w_ in prange(I0 + I1 + B * n2c):
        w = np.int64(w_)
        if w < I0:
            if _OFF <= 0:  # a real axis in this variant (else the branch is compiled away)
                _to_faces_chunk(src, o0, 0, kind, w, n0c, M0, N, D, off, n, bc, chunk)
        elif w < I0 + I1:
            if _OFF <= 1:  # a real axis in this variant (else the branch is compiled away)
                _to_faces_chunk(src, o1, 1, kind, w - I0, n1c, M1, N, D, off, n, bc, chunk)
        else:
            _to_faces_chunk(src, o2, 2, kind, w - I0 - I1, n2c, M2, N, D, off, n, bc, chunk)


def _at_faces_adjoint(g0, g1, g2, out, B, n0, n1, n2, b0, b1, b2, chunk):
    off = _OFF  # the variant's padding axes, a compile-time constant (see _compile)
    n0, n1 = (1 if off > 0 else n0), (1 if off > 1 else n1)
    n, bc = (n0, n1, n2), (b0, b1, b2)
    N = n0 * n1 * n2
    M0, M1, M2 = g0.size // B, g1.size // B, g2.size // B
    nch = (N + chunk - 1) // chunk
    for w_ in prange(B * nch):
        b, start, end = _work(np.int64(w_), nch, chunk, N)
        x0, x1, x2 = coords(start, n1, n2)
        for cell in range(start, end):
            out[b * N + cell] = face_value_adjoint(g0, g1, g2, b * M0, b * M1, b * M2, x0, x1, x2, n, bc, off)
            x0, x1, x2 = advance(x0, x1, x2, n1, n2)


#: Padding axes of the driver variant being compiled: each variant binds its own value (see :func:`_compile`).
_OFF = 0


def _compile(fn):
    """The compilations of the driver ``fn``, cached on disk: ``{(ndim, parallel): dispatcher}``.

    One variant per dimension (``_OFF`` a constant in it, so the padding axes' code folds away) and per parallel
    flag (serial for small grids). ``_nrt=False``: the drivers allocate nothing (their callers pass every
    buffer), and without Numba's reference counting the arrays handed to the stencils cost no atomic count
    updates (they would dominate the arithmetic). Each variant gets its own name: Numba's disk cache tells
    neither the bound constants, the parallel flag nor an edit of the stencil module apart, so the names carry
    all three (the stencils' digest)."""
    out = {}
    for ndim in (1, 2, 3):
        scope = dict(fn.__globals__, _OFF=3 - ndim)
        for kind, parallel in (("serial", False), ("parallel", True)):
            variant = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
            variant.__qualname__ = f"{fn.__qualname__}_{ndim}d_{kind}_{mac_stencils.DIGEST}"
            out[ndim, parallel] = njit(parallel=parallel, cache=True, _nrt=False)(variant)
    return out


_CELLS_FORWARD = _compile(_cells_forward)
_CELLS_ADJOINT = _compile(_cells_adjoint)
_FACES_FORWARD = _compile(_faces_forward)
_FACES_ADJOINT = _compile(_faces_adjoint)
_AT_CENTERS = _compile(_at_centers)
_TO_FACES = _compile(_to_faces)
_AT_FACES_ADJOINT = _compile(_at_faces_adjoint)


def _pick(variants, work, geom):
    return variants[geom.ndim, work >= PARALLEL_MIN_CELLS]


# -- the backend methods -----------------------------------------------------------------------------------------

def _grid(geom):
    """``(n0, n1, n2, b0, b1, b2)`` of the geometry."""
    return (*geom.shape3, *geom.bc)


def _coef(dt, geom, dtype):
    """``Δt/Δx_a`` per padded axis in the arrays' dtype (float32 kernels compute in float32)."""
    t = float if dtype == np.float64 else dtype.type
    return tuple(t(dt / h) for h in geom.spacing)


def _slots(arrays, ndim, dtype):
    """Flat views of per-component arrays at their padded axes; empty arrays stand in for padding axes."""
    flat_ = [np.empty(0, dtype)] * 3
    for k, x in enumerate(arrays):
        flat_[3 - ndim + k] = np.ascontiguousarray(x).reshape(-1)
    return flat_


def _face_arrays(lead, geom, dtype):
    return tuple(np.empty(lead + (geom.face_count(a),), dtype) for a in geom.axes)


def advect_cells(q, u, dt, geom, steps, save_states, save_every=1, out=None, states=None):
    Bu, F, N = q.shape
    q = np.ascontiguousarray(q)
    dtype = q.dtype
    if out is None:
        out = np.empty_like(q)
    if not save_states:
        states = np.empty(0, dtype)
    elif states is None:
        states = np.empty(((steps + save_every - 1) // save_every,) + q.shape, dtype)
    buf = np.empty_like(q) if steps > 1 and (not save_states or save_every > 1) else out
    fn = _pick(_CELLS_FORWARD, q.size, geom)
    fn(q.reshape(-1), *_slots(u, geom.ndim, dtype), out.reshape(-1), states.reshape(-1), buf.reshape(-1), steps, Bu,
       F, *_grid(geom), *_coef(dt, geom, dtype), save_states, save_every, CHUNK)
    return out, (states if save_states else None)


def advect_cells_adjoint(g, states, u, dt, geom, steps, need_q, need_u, gu=None):
    Bu, F, N = g.shape
    g = np.ascontiguousarray(g)
    dtype = g.dtype
    gq = np.empty_like(g) if (need_q or steps > 1) else np.empty(0, dtype)
    buf = np.empty_like(g) if steps > 1 else gq
    acc_u = need_u and gu is not None
    if not need_u:
        gu = ()
    elif gu is None:
        gu = _face_arrays((Bu,), geom, dtype)
    st = np.ascontiguousarray(states).reshape(-1) if need_u else np.empty(0, dtype)
    fn = _pick(_CELLS_ADJOINT, g.size, geom)
    fn(g.reshape(-1), st, *_slots(u, geom.ndim, dtype), gq.reshape(-1), buf.reshape(-1),
       *_slots(gu, geom.ndim, dtype), steps, Bu, F, *_grid(geom), *_coef(dt, geom, dtype), need_q, need_u, acc_u,
       CHUNK)
    return (gq if need_q else None), (gu if need_u else None)


def advect_faces(q, u, dt, geom):
    Bu, F = q[0].shape[:2]
    dtype = q[0].dtype
    out = _face_arrays((Bu, F), geom, dtype)
    fn = _pick(_FACES_FORWARD, sum(x.size for x in q), geom)
    fn(*_slots(q, geom.ndim, dtype), *_slots(u, geom.ndim, dtype), *_slots(out, geom.ndim, dtype), Bu, F,
       *_grid(geom), *_coef(dt, geom, dtype), CHUNK)
    return out


def advect_faces_adjoint(g, q, u, dt, geom, need_q, need_u):
    Bu, F = g[0].shape[:2]
    dtype = g[0].dtype
    gq = _face_arrays((Bu, F), geom, dtype) if need_q else ()
    gu = _face_arrays((Bu,), geom, dtype) if need_u else ()
    qs = q if need_u else ()
    fn = _pick(_FACES_ADJOINT, sum(x.size for x in g), geom)
    fn(*_slots(g, geom.ndim, dtype), *_slots(qs, geom.ndim, dtype), *_slots(u, geom.ndim, dtype),
       *_slots(gq, geom.ndim, dtype), *_slots(gu, geom.ndim, dtype), Bu, F, *_grid(geom),
       *_coef(dt, geom, dtype), need_q, need_u, CHUNK)
    return (gq if need_q else None), (gu if need_u else None)


def at_centers(u, geom):
    B = u[0].shape[0]
    dtype = u[0].dtype
    out = np.empty((B, geom.ndim, geom.size), dtype)
    fn = _pick(_AT_CENTERS, out.size, geom)
    fn(*_slots(u, geom.ndim, dtype), out.reshape(-1), B, *_grid(geom), CHUNK)
    return out


def at_centers_adjoint(g, geom):
    B = g.shape[0]
    dtype = g.dtype
    out = _face_arrays((B,), geom, dtype)
    fn = _pick(_TO_FACES, g.size, geom)
    fn(np.ascontiguousarray(g).reshape(-1), *_slots(out, geom.ndim, dtype), 1, B, *_grid(geom), CHUNK)
    return out


def at_faces(c, geom):
    B = c.shape[0]
    dtype = c.dtype
    out = _face_arrays((B,), geom, dtype)
    fn = _pick(_TO_FACES, c.size * geom.ndim, geom)
    fn(np.ascontiguousarray(c).reshape(-1), *_slots(out, geom.ndim, dtype), 0, B, *_grid(geom), CHUNK)
    return out


def at_faces_adjoint(g, geom):
    B = g[0].shape[0]
    dtype = g[0].dtype
    out = np.empty((B, geom.size), dtype)
    fn = _pick(_AT_FACES_ADJOINT, out.size * geom.ndim, geom)
    fn(*_slots(g, geom.ndim, dtype), out.reshape(-1), B, *_grid(geom), CHUNK)
    return out
