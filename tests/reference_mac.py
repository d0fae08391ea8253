"""Dense float64 reference matrices of the staggered operators, built entry by entry from DESIGN.md §2–3
(independent of the kernels): for tiny grids, ``D @ u``, ``G @ p``, ``L @ p`` and ``pinv(L)`` are the
references of divergence, spatial_gradient, laplace and poisson_solve."""
import itertools

import numpy as np


def face_shapes(shape, boundary):
    out = []
    for k, n in enumerate(shape):
        s = list(shape)
        if boundary[k] != "periodic":
            s[k] = n + 1
        out.append(tuple(s))
    return out


def _offsets(shape, boundary):
    sizes = [int(np.prod(s)) for s in face_shapes(shape, boundary)]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int), sum(sizes)


def divergence_matrix(shape, spacing, boundary):
    """``div_i = Σ_k (u_k[i + e_k] − u_k[i]) / Δx_k``; the upper face of the last cell of a periodic axis
    is face 0."""
    N = int(np.prod(shape))
    off, M = _offsets(shape, boundary)
    fs = face_shapes(shape, boundary)
    D = np.zeros((N, M))
    for i in itertools.product(*(range(n) for n in shape)):
        row = np.ravel_multi_index(i, shape)
        for k, n in enumerate(shape):
            up = list(i)
            up[k] = (i[k] + 1) % n if boundary[k] == "periodic" else i[k] + 1
            D[row, off[k] + np.ravel_multi_index(tuple(up), fs[k])] += 1.0 / spacing[k]
            D[row, off[k] + np.ravel_multi_index(i, fs[k])] -= 1.0 / spacing[k]
    return D


def gradient_matrix(shape, spacing, boundary):
    """``grad_k[f] = (p_f − p_{f−e_k}) / Δx_k``: ghost 0 outside a dirichlet boundary, 0 on neumann
    boundary faces, periodic wrap."""
    N = int(np.prod(shape))
    off, M = _offsets(shape, boundary)
    fs = face_shapes(shape, boundary)
    G = np.zeros((M, N))
    for k, n in enumerate(shape):
        for f in itertools.product(*(range(m) for m in fs[k])):
            row = off[k] + np.ravel_multi_index(f, fs[k])
            j = f[k]
            if boundary[k] == "neumann" and j in (0, n):
                continue
            above, below = list(f), list(f)
            below[k] = j - 1
            if boundary[k] == "periodic":
                below[k] %= n
            if above[k] < n:
                G[row, np.ravel_multi_index(tuple(above), shape)] += 1.0 / spacing[k]
            if below[k] >= 0:
                G[row, np.ravel_multi_index(tuple(below), shape)] -= 1.0 / spacing[k]
    return G


def laplace_matrix(shape, spacing, boundary):
    """``Σ_k (p_{i+e_k} − 2 p_i + p_{i−e_k}) / Δx_k²`` with the ghost rules (periodic wrap, dirichlet 0,
    neumann repeats the cell)."""
    N = int(np.prod(shape))
    L = np.zeros((N, N))
    for i in itertools.product(*(range(n) for n in shape)):
        row = np.ravel_multi_index(i, shape)
        for k, n in enumerate(shape):
            c = 1.0 / spacing[k] ** 2
            L[row, row] -= 2 * c
            for step in (-1, 1):
                j = list(i)
                j[k] += step
                if 0 <= j[k] < n:
                    L[row, np.ravel_multi_index(tuple(j), shape)] += c
                elif boundary[k] == "periodic":
                    j[k] %= n
                    L[row, np.ravel_multi_index(tuple(j), shape)] += c
                elif boundary[k] == "neumann":
                    L[row, row] += c
    return L


def split_faces(vec, shape, boundary, lead=()):
    """Cut a stacked face vector (``(*lead, M)``) into the ``D`` face arrays."""
    off, _ = _offsets(shape, boundary)
    fs = face_shapes(shape, boundary)
    return tuple(vec[..., off[k]:off[k + 1]].reshape(lead + fs[k]) for k in range(len(shape)))


def stack_faces(faces, shape):
    """The inverse of :func:`split_faces` (``(*lead, M)``)."""
    D = len(shape)
    lead = faces[0].shape[:faces[0].ndim - D]
    return np.concatenate([np.asarray(f, np.float64).reshape(lead + (-1,)) for f in faces], axis=-1)


def wall_mask(shape, boundary):
    """1 on every face except the boundary faces of neumann axes (stacked layout)."""
    fs = face_shapes(shape, boundary)
    parts = []
    for k, n in enumerate(shape):
        m = np.ones(fs[k])
        if boundary[k] == "neumann":
            idx = [slice(None)] * len(shape)
            idx[k] = [0, n]
            m[tuple(idx)] = 0.0
        parts.append(m.reshape(-1))
    return np.concatenate(parts)
