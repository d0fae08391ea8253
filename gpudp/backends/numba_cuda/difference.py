"""Staggered (MAC) difference operators and their exact adjoints as ``numba.cuda.jit`` kernels.

Cell arrays are ``(B, N)``; the face array of padded axis ``a`` is ``(B, M_a)`` with ``n_a + e_a`` entries
along ``a`` (``e_a = 1`` on a non-periodic axis, 0 on a periodic one); face ``f`` is the lower face of cell
``f``, face ``n_a`` (non-periodic only) the upper boundary face. ``h_a = 1/Δx_a``::

    divergence       div_i   = Σ_a h_a (u_a[i + e_a] − u_a[i])            (upper face wraps if periodic)
    gradient         g_a[f]  = h_a (p_f − p_{f−e_a})                      periodic: p_{−1} = p_{n−1};
                                                                          boundary faces: dirichlet uses the
                                                                          ghost 0, neumann gives 0
    laplace          lap_i   = Σ_a h_a² (p_{i+e_a} − 2 p_i + p_{i−e_a})   ghost rules of DESIGN.md §2

Every kernel gathers (one thread per output entry, no atomics). Arithmetic is in the arrays' dtype.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ._common import blocks_for, cell_stride, lower, sel3, upper


@cuda.jit(device=True)
def _face_index(b, i0, i1, i2, a, n0, n1, n2, e):
    """Flat index of the face with coordinates ``(i0, i1, i2)`` in the face array of axis ``a``."""
    if a == 0:
        return ((b * (n0 + e) + i0) * n1 + i1) * n2 + i2
    if a == 1:
        return ((b * n0 + i0) * (n1 + e) + i1) * n2 + i2
    return ((b * n0 + i0) * n1 + i1) * (n2 + e) + i2


@cuda.jit
def _divergence_kernel(f0, f1, f2, out, B, n0, n1, n2, ndim, h0, h1, h2, b0, b1, b2, zero):
    N = n0 * n1 * n2
    for idx in range(cuda.grid(1), B * N, cuda.gridsize(1)):
        b = idx // N
        cell = idx % N
        i2 = cell % n2
        i1 = (cell // n2) % n1
        i0 = cell // (n1 * n2)
        acc = zero
        for a in range(3 - ndim, 3):
            f = sel3(a, f0, f1, f2)
            n = sel3(a, n0, n1, n2)
            i = sel3(a, i0, i1, i2)
            e = 1 if sel3(a, b0, b1, b2) != 0 else 0
            s = cell_stride(a, n1, n2)
            fi = _face_index(b, i0, i1, i2, a, n0, n1, n2, e)
            up = fi - (n - 1) * s if (e == 0 and i == n - 1) else fi + s
            acc += (f[up] - f[fi]) * sel3(a, h0, h1, h2)
        out[idx] = acc


@cuda.jit
def _divergence_adjoint_kernel(g, out, a, B, n0, n1, n2, h, bc, zero):
    """Faces of axis ``a``: ``out[f] = h (g[cell f−1] − g[cell f])`` with the cells that exist."""
    e = 1 if bc != 0 else 0
    m0 = n0 + e if a == 0 else n0
    m1 = n1 + e if a == 1 else n1
    m2 = n2 + e if a == 2 else n2
    n = sel3(a, n0, n1, n2)
    s = cell_stride(a, n1, n2)
    for fidx in range(cuda.grid(1), B * m0 * m1 * m2, cuda.gridsize(1)):
        j2 = fidx % m2
        j1 = (fidx // m2) % m1
        j0 = (fidx // (m1 * m2)) % m0
        b = fidx // (m0 * m1 * m2)
        f = sel3(a, j0, j1, j2)
        # cell index with coordinate 0 along a
        c0 = 0 if a == 0 else j0
        c1 = 0 if a == 1 else j1
        c2 = 0 if a == 2 else j2
        cbase = ((b * n0 + c0) * n1 + c1) * n2 + c2
        val = zero
        if f < n:
            val -= g[cbase + f * s]
        if f >= 1:
            val += g[cbase + (f - 1) * s]
        elif e == 0:
            val += g[cbase + (n - 1) * s]
        out[fidx] = val * h


@cuda.jit
def _gradient_kernel(p, out, a, B, n0, n1, n2, h, bc, zero):
    """Faces of axis ``a``: ``out[f] = h (p_f − p_{f−e_a})`` with ghost rules; 0 on neumann boundary faces."""
    e = 1 if bc != 0 else 0
    m0 = n0 + e if a == 0 else n0
    m1 = n1 + e if a == 1 else n1
    m2 = n2 + e if a == 2 else n2
    n = sel3(a, n0, n1, n2)
    s = cell_stride(a, n1, n2)
    for fidx in range(cuda.grid(1), B * m0 * m1 * m2, cuda.gridsize(1)):
        j2 = fidx % m2
        j1 = (fidx // m2) % m1
        j0 = (fidx // (m1 * m2)) % m0
        b = fidx // (m0 * m1 * m2)
        f = sel3(a, j0, j1, j2)
        c0 = 0 if a == 0 else j0
        c1 = 0 if a == 1 else j1
        c2 = 0 if a == 2 else j2
        cbase = ((b * n0 + c0) * n1 + c1) * n2 + c2
        if e == 0:
            val = p[cbase + f * s] - p[cbase + ((f - 1) if f >= 1 else (n - 1)) * s]
        elif f == 0:
            val = p[cbase] if bc == 1 else zero
        elif f == n:
            val = -p[cbase + (n - 1) * s] if bc == 1 else zero
        else:
            val = p[cbase + f * s] - p[cbase + (f - 1) * s]
        out[fidx] = val * h


@cuda.jit
def _gradient_adjoint_kernel(f0, f1, f2, out, B, n0, n1, n2, ndim, h0, h1, h2, b0, b1, b2, zero):
    """Cells: ``out_i = Σ_a h_a (g_a[face i] − g_a[face i+1])`` without the neumann boundary faces."""
    N = n0 * n1 * n2
    for idx in range(cuda.grid(1), B * N, cuda.gridsize(1)):
        b = idx // N
        cell = idx % N
        i2 = cell % n2
        i1 = (cell // n2) % n1
        i0 = cell // (n1 * n2)
        acc = zero
        for a in range(3 - ndim, 3):
            f = sel3(a, f0, f1, f2)
            n = sel3(a, n0, n1, n2)
            i = sel3(a, i0, i1, i2)
            bc = sel3(a, b0, b1, b2)
            e = 1 if bc != 0 else 0
            s = cell_stride(a, n1, n2)
            fi = _face_index(b, i0, i1, i2, a, n0, n1, n2, e)
            up = fi - (n - 1) * s if (e == 0 and i == n - 1) else fi + s
            t = zero
            if not (bc == 2 and i == 0):
                t += f[fi]
            if not (bc == 2 and i == n - 1):
                t -= f[up]
            acc += t * sel3(a, h0, h1, h2)
        out[idx] = acc


@cuda.jit
def _laplace_kernel(p, out, B, n0, n1, n2, ndim, q0, q1, q2, b0, b1, b2, zero):
    """``out_i = Σ_a q_a (p_{i+e_a} − 2 p_i + p_{i−e_a})`` with ``q_a = h_a²`` and ghost values."""
    N = n0 * n1 * n2
    for idx in range(cuda.grid(1), B * N, cuda.gridsize(1)):
        cell = idx % N
        i2 = cell % n2
        i1 = (cell // n2) % n1
        i0 = cell // (n1 * n2)
        v = p[idx]
        acc = zero
        for a in range(3 - ndim, 3):
            n = sel3(a, n0, n1, n2)
            i = sel3(a, i0, i1, i2)
            bc = sel3(a, b0, b1, b2)
            s = cell_stride(a, n1, n2)
            up = upper(p, idx, i, n, s, bc, v, zero)
            lo = lower(p, idx, i, n, s, bc, v, zero)
            acc += sel3(a, q0, q1, q2) * ((up - v) + (lo - v))
        out[idx] = acc


def face_shape(B, shape3, a, bc):
    """``(B, M_a)`` of the face array of padded axis ``a``."""
    m = [int(n) for n in shape3]
    if bc[a] != 0:
        m[a] += 1
    return (B, m[0] * m[1] * m[2])


def _slots(be, faces, ndim, dummy):
    """Flat device views of the face arrays placed at their padded axes (a dummy in unused slots)."""
    views = [dummy] * 3
    for k, f in enumerate(faces):
        views[3 - ndim + k] = be.dev(f)
    return views


def stag_divergence(be, faces, inv_dx, bc, shape3, ndim):
    B = faces[0].shape[0]
    dtype = faces[0].dtype
    t = np.dtype(dtype).type
    N = int(np.prod(shape3))
    out = be.empty((B, N), dtype)
    od = be.dev(out)
    f0, f1, f2 = _slots(be, faces, ndim, od)
    be.launch("stag_divergence", _divergence_kernel, blocks_for(B * N),
              (f0, f1, f2, od, B, *shape3, ndim, *(t(h) for h in inv_dx), *bc, t(0)))
    return out


def stag_divergence_adjoint(be, g, inv_dx, bc, shape3, ndim):
    B, N = g.shape
    t = np.dtype(g.dtype).type
    gd = be.dev(g)
    out = []
    for a in range(3 - ndim, 3):
        fa = be.empty(face_shape(B, shape3, a, bc), g.dtype)
        be.launch("stag_divergence_adjoint", _divergence_adjoint_kernel, blocks_for(fa.size),
                  (gd, be.dev(fa), a, B, *shape3, t(inv_dx[a]), int(bc[a]), t(0)))
        out.append(fa)
    return tuple(out)


def stag_gradient(be, p, inv_dx, bc, shape3, ndim):
    B, N = p.shape
    t = np.dtype(p.dtype).type
    pd = be.dev(p)
    out = []
    for a in range(3 - ndim, 3):
        fa = be.empty(face_shape(B, shape3, a, bc), p.dtype)
        be.launch("stag_gradient", _gradient_kernel, blocks_for(fa.size),
                  (pd, be.dev(fa), a, B, *shape3, t(inv_dx[a]), int(bc[a]), t(0)))
        out.append(fa)
    return tuple(out)


def stag_gradient_adjoint(be, faces_g, inv_dx, bc, shape3, ndim):
    B = faces_g[0].shape[0]
    dtype = faces_g[0].dtype
    t = np.dtype(dtype).type
    N = int(np.prod(shape3))
    out = be.empty((B, N), dtype)
    od = be.dev(out)
    f0, f1, f2 = _slots(be, faces_g, ndim, od)
    be.launch("stag_gradient_adjoint", _gradient_adjoint_kernel, blocks_for(B * N),
              (f0, f1, f2, od, B, *shape3, ndim, *(t(h) for h in inv_dx), *bc, t(0)))
    return out


def laplace(be, p, inv_dx, bc, shape3, ndim):
    B, N = p.shape
    t = np.dtype(p.dtype).type
    out = be.empty((B, N), p.dtype)
    be.launch("laplace", _laplace_kernel, blocks_for(B * N),
              (be.dev(p), be.dev(out), B, *shape3, ndim, *(t(h * h) for h in inv_dx), *bc, t(0)))
    return out
