"""Dense float64 reference matrices of the staggered operators, built entry by entry from DESIGN.md §2–3
(and §6 for obstacles), independent of the kernels: for tiny grids, ``D @ u``, ``G @ p``, ``L @ p`` and
``pinv(L)`` are the references of divergence, spatial_gradient, laplace and poisson_solve."""
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


# -- obstacles (DESIGN.md §6) ---------------------------------------------------------------------------------

def _face_cells(f, k, shape, boundary):
    """The cells below and above face ``f`` of axis ``k`` (``None`` outside the domain)."""
    n = shape[k]
    below, above = list(f), list(f)
    below[k] = f[k] - 1
    if boundary[k] == "periodic":
        below[k] %= n
    lo = tuple(below) if below[k] >= 0 else None
    hi = tuple(above) if above[k] < n else None
    return lo, hi


def open_face_mask(shape, boundary, solid):
    """1 on the open faces, 0 on the closed ones (stacked layout): a face is closed when it touches a solid
    cell or is a neumann boundary face; a dirichlet boundary face is open unless its cell is solid."""
    parts = []
    for k, fs in enumerate(face_shapes(shape, boundary)):
        m = np.zeros(fs)
        for f in itertools.product(*(range(s) for s in fs)):
            lo, hi = _face_cells(f, k, shape, boundary)
            if (lo is None or hi is None) and boundary[k] == "neumann":
                continue
            cells = [c for c in (lo, hi) if c is not None]
            if any(solid[c] for c in cells):
                continue
            m[f] = 1.0
        parts.append(m.reshape(-1))
    return np.concatenate(parts)


def solid_gradient_matrix(shape, spacing, boundary, solid):
    """``spatial_gradient`` with obstacles: the rows of the closed faces are 0."""
    return gradient_matrix(shape, spacing, boundary) * open_face_mask(shape, boundary, solid)[:, None]


def solid_laplace_matrix(shape, spacing, boundary, solid):
    """``laplace = divergence ∘ spatial_gradient`` with obstacles (``D W G``)."""
    return divergence_matrix(shape, spacing, boundary) @ solid_gradient_matrix(shape, spacing, boundary, solid)


def fluid_regions(shape, boundary, solid):
    """Connected fluid regions through open faces, by flood fill: ``(labels, sealed)`` with ``labels`` a
    flat int array (−1 for solid cells) and ``sealed[k]`` True when region ``k`` touches no open dirichlet
    boundary face."""
    N = int(np.prod(shape))
    fs = face_shapes(shape, boundary)
    om = split_faces(open_face_mask(shape, boundary, solid), shape, boundary)
    nbrs = [[] for _ in range(N)]
    touches = np.zeros(N, bool)
    for k in range(len(shape)):
        for f in itertools.product(*(range(s) for s in fs[k])):
            if not om[k][f]:
                continue
            lo, hi = _face_cells(f, k, shape, boundary)
            if lo is None or hi is None:  # an open boundary face: dirichlet
                touches[np.ravel_multi_index(lo if lo is not None else hi, shape)] = True
                continue
            a, b = np.ravel_multi_index(lo, shape), np.ravel_multi_index(hi, shape)
            nbrs[a].append(b)
            nbrs[b].append(a)
    labels = np.full(N, -1)
    flat_solid = np.asarray(solid).reshape(-1)
    sealed = []
    for start in range(N):
        if flat_solid[start] or labels[start] >= 0:
            continue
        k = len(sealed)
        labels[start] = k
        stack, touch = [start], False
        while stack:
            c = stack.pop()
            touch |= touches[c]
            for d in nbrs[c]:
                if labels[d] < 0:
                    labels[d] = k
                    stack.append(d)
        sealed.append(not touch)
    return labels, np.array(sealed, bool)


def solid_pseudo_inverse(shape, spacing, boundary, solid):
    """The pseudo-inverse of the obstacle Laplacian, region by region: the inverse of each region's block,
    or its pseudo-inverse when the region is sealed (then the block's null space is the region's constant);
    0 for solid cells."""
    L = solid_laplace_matrix(shape, spacing, boundary, solid)
    labels, sealed = fluid_regions(shape, boundary, solid)
    out = np.zeros_like(L)
    for k, is_sealed in enumerate(sealed):
        idx = np.flatnonzero(labels == k)
        block = L[np.ix_(idx, idx)]
        out[np.ix_(idx, idx)] = np.linalg.pinv(block) if is_sealed else np.linalg.inv(block)
    return out


def range_projection(shape, boundary, solid):
    """``Π``: zero on solid cells, each sealed region's mean removed (the orthogonal projection onto the range
    of the obstacle Laplacian)."""
    labels, sealed = fluid_regions(shape, boundary, solid)
    N = labels.size
    P = np.diag((labels >= 0).astype(float))
    for k, is_sealed in enumerate(sealed):
        if is_sealed:
            idx = np.flatnonzero(labels == k)
            P[np.ix_(idx, idx)] -= 1.0 / idx.size
    return P
