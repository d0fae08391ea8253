"""Staggered (MAC) difference operators and their transposes as Numba CPU kernels.

Layout (``gpudp.backends.base``): cells ``(B, N)`` over the padded shape ``(n0, n1, n2)``; the face
component of padded axis ``a`` is ``(B, M_a)`` over the same shape with ``n_a + 1`` entries along ``a`` when
the axis is not periodic (faces ``0`` and ``n_a`` are the boundary faces) and ``n_a`` when it is (face ``j`` is
the lower face of cell ``j``, the upper face of cell ``n_a − 1`` wraps to face ``0``). ``c_a = 1/Δx_a``.

    divergence_i    = Σ_a c_a (u_a[upper face of i] − u_a[lower face of i])
    divergenceᵀ_f   = c_a (g[cell below f] − g[cell above f])          (missing cells count as 0)
    gradient_a[f]   = c_a (p[cell above f] − p[cell below f])          (dirichlet ghost 0; 0 on neumann
                                                                          boundary faces)
    gradientᵀ_i     = Σ_a c_a (g_a[lower face of i] − g_a[upper face of i])   (neumann boundary faces
                                                                          carry no term)
    laplace_i       = Σ_a c_a² (p_{i+e_a} − 2 p_i + p_{i−e_a})            (ghost rules of DESIGN.md §2)

Loops run over contiguous chunks of one system's cells (or faces) so that every grid dimension
parallelises; the coordinates are advanced incrementally inside a chunk. Sums are accumulated in float64.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Total cells (or faces) below which the serial drivers run: a parallel region costs more than it saves.
PARALLEL_MIN_CELLS = 1 << 15
#: Cells per work item of the loops (a run argument of the kernels, so tests can make it tiny).
CHUNK = 4096


# -- index helpers ---------------------------------------------------------------------------------------
@njit(inline="always")
def coords(idx, n1, n2):
    """``(i0, i1, i2)`` of the flat index ``idx`` within one system."""
    i2 = idx % n2
    t = idx // n2
    return t // n1, t % n1, i2


@njit(inline="always")
def step_output(t, steps, save, every, size, out, buf, states):
    """Where step ``t`` of a ``steps``-step rollout writes: ``out`` for the last step; the state's slot of
    ``states`` (flat, ``size`` entries a slot) when ``save`` and step ``t + 1`` is a multiple of ``every``;
    else ``out`` and ``buf`` in turn, so that the last step lands in ``out`` and never on its own input."""
    if t == steps - 1:
        return out
    if save and (t + 1) % every == 0:
        s = (t + 1) // every
        return states[s * size:(s + 1) * size]
    return out if (steps - 1 - t) % 2 == 0 else buf


@njit(inline="always")
def advance(i0, i1, i2, n1, n2):
    """The coordinates of the next flat index."""
    i2 += 1
    if i2 == n2:
        i2 = 0
        i1 += 1
        if i1 == n1:
            i1 = 0
            i0 += 1
    return i0, i1, i2


@njit(inline="always")
def upper(p, cell, i, n, s, bc):
    """``p`` at the upper neighbour of ``cell`` (position ``i`` of ``n`` along an axis of stride ``s``)."""
    if i + 1 < n:
        return p[cell + s]
    if bc == 0:
        return p[cell - (n - 1) * s]
    if bc == 1:
        return 0.0
    return p[cell]


@njit(inline="always")
def lower(p, cell, i, n, s, bc):
    """``p`` at the lower neighbour of ``cell`` with the ghost rules."""
    if i > 0:
        return p[cell - s]
    if bc == 0:
        return p[cell + (n - 1) * s]
    if bc == 1:
        return 0.0
    return p[cell]


@njit(inline="always")
def laplace_at(p, cell, i0, i1, i2, n0, n1, n2, b0, b1, b2, c0, c1, c2, off):
    """``laplace(p)`` at ``cell`` (``c_a = 1/Δx_a²``; axes before ``off`` are padding)."""
    v = p[cell]
    acc = 0.0
    if off <= 0:
        acc += c0 * (upper(p, cell, i0, n0, n1 * n2, b0) - 2.0 * v + lower(p, cell, i0, n0, n1 * n2, b0))
    if off <= 1:
        acc += c1 * (upper(p, cell, i1, n1, n2, b1) - 2.0 * v + lower(p, cell, i1, n1, n2, b1))
    acc += c2 * (upper(p, cell, i2, n2, 1, b2) - 2.0 * v + lower(p, cell, i2, n2, 1, b2))
    return acc


@njit(inline="always")
def _face_dims(a, n0, n1, n2, bc):
    """Face-array dims of padded axis ``a``, the face stride along ``a``, and ``n_a``."""
    e = 1 if bc != 0 else 0
    if a == 0:
        return n0 + e, n1, n2, n1 * n2, n0
    if a == 1:
        return n0, n1 + e, n2, n2, n1
    return n0, n1, n2 + e, 1, n2


@njit(inline="always")
def _face_difference(f, base, a, i0, i1, i2, n0, n1, n2, bc, skip_walls):
    """``f`` at the upper minus ``f`` at the lower ``a``-face of cell ``(i0, i1, i2)`` (``base``: the
    system's offset in ``f``); with ``skip_walls`` the faces on a neumann boundary count as 0."""
    m0, m1, m2, s, n = _face_dims(a, n0, n1, n2, bc)
    i = i0 if a == 0 else (i1 if a == 1 else i2)
    lo = (i0 * m1 + i1) * m2 + i2
    up = lo + s if (bc != 0 or i + 1 < n) else lo - (n - 1) * s
    flo = f[base + lo]
    fup = f[base + up]
    if skip_walls and bc == 2:
        if i == 0:
            flo = 0.0
        if i == n - 1:
            fup = 0.0
    return fup - flo


# -- cells ← faces ----------------------------------------------------------------------------------------
def _divergence(f0, f1, f2, out, B, n0, n1, n2, b0, b1, b2, c0, c1, c2, off, sign_gradT, chunk):
    """Divergence (``sign_gradT = False``) or the transpose of the gradient (``True``: the negated
    divergence with the neumann boundary faces left out) of the faces ``f0, f1, f2``."""
    N = n0 * n1 * n2
    nch = (N + chunk - 1) // chunk
    M0 = f0.size // B if off <= 0 else 0
    M1 = f1.size // B if off <= 1 else 0
    M2 = f2.size // B
    for w in prange(B * nch):
        b = w // nch
        start = (w % nch) * chunk
        end = min(start + chunk, N)
        i0, i1, i2 = coords(start, n1, n2)
        for cell in range(start, end):
            acc = c2 * _face_difference(f2, b * M2, 2, i0, i1, i2, n0, n1, n2, b2, sign_gradT)
            if off <= 1:
                acc += c1 * _face_difference(f1, b * M1, 1, i0, i1, i2, n0, n1, n2, b1, sign_gradT)
            if off <= 0:
                acc += c0 * _face_difference(f0, b * M0, 0, i0, i1, i2, n0, n1, n2, b0, sign_gradT)
            out[b * N + cell] = -acc if sign_gradT else acc
            i0, i1, i2 = advance(i0, i1, i2, n1, n2)


# -- faces ← cells ----------------------------------------------------------------------------------------
def _to_faces(p, out, B, a, n0, n1, n2, bc, c, transpose_div, chunk):
    """The ``a``-faces of the gradient of ``p`` (``transpose_div = False``) or of the transposed
    divergence of ``p`` (``True``: dirichlet-style zero ghosts on every non-periodic boundary face, negated).
    """
    N = n0 * n1 * n2
    m0, m1, m2, _, n = _face_dims(a, n0, n1, n2, bc)
    M = m0 * m1 * m2
    s = n1 * n2 if a == 0 else (n2 if a == 1 else 1)  # cell stride along a
    nch = (M + chunk - 1) // chunk
    for w in prange(B * nch):
        b = w // nch
        start = (w % nch) * chunk
        end = min(start + chunk, M)
        j0, j1, j2 = coords(start, m1, m2)
        for f in range(start, end):
            j = j0 if a == 0 else (j1 if a == 1 else j2)
            cell = b * N + (j0 * n1 + j1) * n2 + j2  # the cell above the face (when j < n)
            if j < n:
                hi = p[cell]
            else:
                hi = 0.0
            if j > 0:
                lo = p[cell - s]
            elif bc == 0:
                lo = p[cell + (n - 1) * s]
            else:
                lo = 0.0
            if transpose_div:
                out[b * M + f] = c * (lo - hi)
            elif bc == 2 and (j == 0 or j == n):
                out[b * M + f] = 0.0
            else:
                out[b * M + f] = c * (hi - lo)
            j0, j1, j2 = advance(j0, j1, j2, m1, m2)


def _laplace(p, out, B, n0, n1, n2, b0, b1, b2, c0, c1, c2, off, chunk):
    N = n0 * n1 * n2
    nch = (N + chunk - 1) // chunk
    for w in prange(B * nch):
        b = w // nch
        start = (w % nch) * chunk
        end = min(start + chunk, N)
        i0, i1, i2 = coords(start, n1, n2)
        for cell in range(start, end):
            out[b * N + cell] = laplace_at(p, b * N + cell, i0, i1, i2, n0, n1, n2, b0, b1, b2, c0, c1, c2, off)
            i0, i1, i2 = advance(i0, i1, i2, n1, n2)


_divergence_par, _divergence_ser = njit(parallel=True)(_divergence), njit(_divergence)
_to_faces_par, _to_faces_ser = njit(parallel=True)(_to_faces), njit(_to_faces)
_laplace_par, _laplace_ser = njit(parallel=True)(_laplace), njit(_laplace)


def _pick(par, ser, work):
    return par if work >= PARALLEL_MIN_CELLS else ser


def _padded_faces(faces, ndim, dtype):
    """The face components as three flat arrays, one per padded axis (empty for padding axes)."""
    flat = [np.empty(0, dtype)] * 3
    for k, f in enumerate(faces):
        flat[3 - ndim + k] = f.reshape(-1)
    return flat


def _cells_from_faces(faces, inv_dx, bc, shape3, ndim, transpose_grad):
    B = faces[0].shape[0]
    N = shape3[0] * shape3[1] * shape3[2]
    out = np.empty((B, N), faces[0].dtype)
    f0, f1, f2 = _padded_faces(faces, ndim, faces[0].dtype)
    _pick(_divergence_par, _divergence_ser, B * N)(f0, f1, f2, out.reshape(-1), B, *shape3, *bc,
                                                     *map(float, inv_dx), 3 - ndim, transpose_grad, CHUNK)
    return out


def _faces_from_cells(p, inv_dx, bc, shape3, ndim, transpose_div):
    B = p.shape[0]
    flat = p.reshape(-1)
    out = []
    for a in range(3 - ndim, 3):
        shape = list(shape3)
        if bc[a] != 0:
            shape[a] += 1
        M = shape[0] * shape[1] * shape[2]
        f = np.empty((B, M), p.dtype)
        _pick(_to_faces_par, _to_faces_ser, B * M)(flat, f.reshape(-1), B, a, *shape3, bc[a],
                                                   float(inv_dx[a]), transpose_div, CHUNK)
        out.append(f)
    return tuple(out)


def stag_divergence(faces, inv_dx, bc, shape3, ndim):
    return _cells_from_faces(faces, inv_dx, bc, shape3, ndim, False)


def stag_divergence_adjoint(g, inv_dx, bc, shape3, ndim):
    return _faces_from_cells(g, inv_dx, bc, shape3, ndim, True)


def stag_gradient(p, inv_dx, bc, shape3, ndim):
    return _faces_from_cells(p, inv_dx, bc, shape3, ndim, False)


def stag_gradient_adjoint(faces_g, inv_dx, bc, shape3, ndim):
    return _cells_from_faces(faces_g, inv_dx, bc, shape3, ndim, True)


def laplace(p, inv_dx, bc, shape3, ndim):
    B, N = p.shape
    out = np.empty_like(p)
    c = tuple(float(v) * float(v) for v in inv_dx)
    _pick(_laplace_par, _laplace_ser, B * N)(p.reshape(-1), out.reshape(-1), B, *shape3, *bc, *c, 3 - ndim,
                                             CHUNK)
    return out
