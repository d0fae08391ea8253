"""Launch wrappers of the staggered difference operators and the Laplacian (``kernels/difference.cu``).

Face-valued results are computed one axis per launch; cell-valued results in one launch that reads every
axis's face array. Layouts and formulas: ``gpudp/backends/base.py`` and the header of ``difference.cu``.
"""
from __future__ import annotations

import numpy as np

from ._module import grid_1d

_FILE = "difference.cu"


def geometry(shape3, ndim, bc):
    """``(n0, n1, n2, ndim, b0, b1, b2)`` as the kernels' int32 parameters."""
    i32 = np.int32
    return (i32(shape3[0]), i32(shape3[1]), i32(shape3[2]), i32(ndim), i32(bc[0]), i32(bc[1]), i32(bc[2]))


def face_count(shape3, bc, axis):
    """Entries of one system's face array of padded ``axis`` (``n_axis + 1`` along it when non-periodic)."""
    m = list(shape3)
    if bc[axis] != 0:
        m[axis] += 1
    return m[0] * m[1] * m[2]


def _axes(ndim):
    return range(3 - ndim, 3)


def _face_pointers(cp, faces, ndim):
    """One array per padded axis for the kernels' f0, f1, f2 (padded axes get a never-read stand-in)."""
    real = [cp.ascontiguousarray(f) for f in faces]
    return [real[0]] * (3 - ndim) + real


def stag_divergence(be, faces, inv_dx, bc, shape3, ndim):
    B = faces[0].shape[0]
    dtype = faces[0].dtype
    T = dtype.type
    out = be.cp.empty((B, shape3[0] * shape3[1] * shape3[2]), dtype)
    f0, f1, f2 = _face_pointers(be.cp, faces, ndim)
    be.launch(_FILE, "stag_divergence", dtype, grid_1d(out.size),
              (f0, f1, f2, out, np.int32(B), *geometry(shape3, ndim, bc), T(inv_dx[0]), T(inv_dx[1]), T(inv_dx[2])))
    return out


def stag_divergence_adjoint(be, g, inv_dx, bc, shape3, ndim):
    return _faces_from_cells(be, "stag_divergence_adjoint", g, inv_dx, bc, shape3, ndim)


def stag_gradient(be, p, inv_dx, bc, shape3, ndim):
    return _faces_from_cells(be, "stag_gradient", p, inv_dx, bc, shape3, ndim)


def _faces_from_cells(be, kernel, c, inv_dx, bc, shape3, ndim):
    B = c.shape[0]
    cp = be.cp
    T = c.dtype.type
    c = cp.ascontiguousarray(c)
    out = []
    for a in _axes(ndim):
        f = cp.empty((B, face_count(shape3, bc, a)), c.dtype)
        be.launch(_FILE, kernel, c.dtype, grid_1d(f.size),
                  (c, f, np.int32(B), np.int32(a), *geometry(shape3, ndim, bc), T(inv_dx[a])))
        out.append(f)
    return tuple(out)


def stag_gradient_adjoint(be, faces_g, inv_dx, bc, shape3, ndim):
    B = faces_g[0].shape[0]
    dtype = faces_g[0].dtype
    T = dtype.type
    out = be.cp.empty((B, shape3[0] * shape3[1] * shape3[2]), dtype)
    f0, f1, f2 = _face_pointers(be.cp, faces_g, ndim)
    be.launch(_FILE, "stag_gradient_adjoint", dtype, grid_1d(out.size),
              (f0, f1, f2, out, np.int32(B), *geometry(shape3, ndim, bc), T(inv_dx[0]), T(inv_dx[1]), T(inv_dx[2])))
    return out


def laplace(be, p, inv_dx, bc, shape3, ndim, out=None):
    """``laplace(p)`` of ``(B, N)`` cells into ``out`` (allocated when ``None``)."""
    cp = be.cp
    T = p.dtype.type
    p = cp.ascontiguousarray(p)
    if out is None:
        out = cp.empty_like(p)
    be.launch(_FILE, "laplace", p.dtype, grid_1d(p.size),
              (p, out, np.int32(p.shape[0]), *geometry(shape3, ndim, bc), T(inv_dx[0]), T(inv_dx[1]), T(inv_dx[2])))
    return out
