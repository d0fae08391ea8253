"""Obstacles (solid cells) of a grid: the facts the operators derive from ``grid.solid``, computed once per grid.

DESIGN.md §6: a face is *closed* when it touches a solid cell or is a ``neumann`` boundary face, *open*
otherwise (a ``dirichlet`` boundary face is open unless its cell is solid; a periodic face joins the two cells
it wraps between). With the open-face mask ``W`` (a diagonal 0/1 matrix on the faces), the obstacle-aware
operators are

    spatial_gradient = W G          divergence = D (unchanged)          laplace = D W G

and ``D W = −Gᵀ W`` on every face (``D = −Gᵀ`` off the neumann walls, which ``W`` closes), so ``laplace =
−Gᵀ W G`` is symmetric and zero in solid cells. Fluid cells joined through open faces form connected
*regions*; a region that touches no open dirichlet boundary face is *sealed*: ``laplace`` has its indicator
as a null vector. The Poisson solve removes each sealed region's mean from the right-hand side and returns
the solution with zero mean there (``gpudp.ops.poisson``), i.e. ``x = laplace⁺ b`` (Moore–Penrose).

:func:`obstacle_facts` computes the host facts (masks, region labels) once per grid and keeps them on it;
:meth:`ObstacleFacts.device` keeps each backend's copies (per dtype), built once. :class:`MaskFaces` is the
differentiable multiplication of a staggered field by a face mask (self-adjoint).
"""
from __future__ import annotations

import threading

import numpy as np

from .. import arrays
from ..geometry import geometry
from ..tape import Operator

_lock = threading.RLock()


class ObstacleFacts:
    """What the operators need to know about the solid cells of one grid (host NumPy arrays, read-only).

    ``fluid``       bool, ``grid.shape``: not solid;
    ``open_faces``  tuple of bool arrays, component ``k`` of ``grid.face_shape(k)``: the open faces;
    ``closed_faces``  their complement;
    ``region``      int32, ``grid.shape``: connected fluid region of each cell (``-1`` for solid cells);
    ``n_regions``   number of fluid regions;
    ``sealed``      int32, ``grid.shape``: index of the sealed region of each cell, ``-1`` for solid cells and
                    for cells of regions that touch an open dirichlet boundary face;
    ``n_sealed``    number of sealed regions; ``sealed_sizes``: their cell counts (int64);
    ``geom``        the grid's :class:`gpudp.geometry.Geometry`.
    """

    __slots__ = ("fluid", "open_faces", "closed_faces", "region", "n_regions", "sealed", "n_sealed",
                 "sealed_sizes", "geom", "_cache")

    def __init__(self, grid):
        solid = grid.solid
        shape, bnd = grid.shape, grid.boundary
        fluid = np.ones(shape, bool) if solid is None else ~solid
        open_faces, edges, dirichlet_cells = [], [], []
        index = np.arange(grid.size, dtype=np.int64).reshape(shape)
        for k, n in enumerate(shape):
            # the cells below and above every face of axis k (face j lies between cells j − 1 and j)
            if bnd[k] == "periodic":
                below = np.roll(fluid, 1, axis=k)
                op = fluid & below
                edges.append((np.roll(index, 1, axis=k)[op], index[op]))
            else:
                pad = [(0, 0)] * len(shape)
                pad[k] = (1, 1)
                ext = np.pad(fluid, pad)  # a ghost layer of "not fluid"
                lo = _take(ext, k, slice(0, n + 1))
                hi = _take(ext, k, slice(1, n + 2))
                op = lo & hi
                inner = op.copy()
                if bnd[k] == "dirichlet":  # a boundary face is open where its cell is fluid
                    first, last = _take(fluid, k, slice(0, 1)), _take(fluid, k, slice(n - 1, n))
                    _put(op, k, 0, first)
                    _put(op, k, n, last)
                    dirichlet_cells += [_take(index, k, slice(0, 1))[first], _take(index, k, slice(n - 1, n))[last]]
                sel = _take(inner, k, slice(1, n))  # interior faces 1 … n − 1 join cells j − 1 and j
                edges.append((_take(index, k, slice(0, n - 1))[sel], _take(index, k, slice(1, n))[sel]))
            op = np.ascontiguousarray(op)
            op.flags.writeable = False
            open_faces.append(op)
        closed = tuple(_readonly(~o) for o in open_faces)

        if solid is None:   # one region, every cell
            region, n_regions = np.zeros(grid.size, np.int32), 1
        else:
            region, n_regions = _components(grid.size, edges, fluid.reshape(-1))
        touches = np.zeros(n_regions, bool)
        if dirichlet_cells:
            cells = np.concatenate(dirichlet_cells)
            touches[region[cells]] = True
        sealed_ids = np.flatnonzero(~touches)
        remap = np.full(n_regions + 1, -1, np.int32)
        remap[sealed_ids] = np.arange(sealed_ids.size, dtype=np.int32)
        sealed = remap[region]  # region −1 (solid) picks remap[−1] = −1
        self.fluid = _readonly(fluid)
        self.open_faces = tuple(open_faces)
        self.closed_faces = closed
        self.region = _readonly(region.astype(np.int32).reshape(shape))
        self.n_regions = int(n_regions)
        self.sealed = _readonly(sealed.reshape(shape))
        self.n_sealed = int(sealed_ids.size)
        self.sealed_sizes = _readonly(np.bincount(sealed[sealed >= 0], minlength=self.n_sealed).astype(np.int64))
        self.geom = geometry(grid)
        self._cache = {}

    def cached(self, name, make):
        """``make()``, computed on first use and kept under ``name`` (values derived from these facts: host
        values such as the multigrid hierarchy, and the backends' copies of :meth:`device`)."""
        value = self._cache.get(name)
        if value is None:
            with _lock:
                value = self._cache.get(name)
                if value is None:
                    value = make()
                    self._cache[name] = value
        return value

    def device(self, backend, dtype, build):
        """The copies ``build(backend, dtype, self)`` makes for one backend and dtype, built on first use and
        kept (per backend class, dtype and ``build``, a module-level function: the masks go to each backend
        once per grid)."""
        dtype = np.dtype(dtype)
        return self.cached((backend.name, type(backend), dtype.str, build), lambda: build(backend, dtype, self))


def obstacle_facts(grid):
    """The :class:`ObstacleFacts` of ``grid``, computed once and kept on it (a grid without a solid mask has
    every cell fluid and one region)."""
    facts = grid._obstacles
    if facts is None:
        with _lock:
            facts = grid._obstacles
            if facts is None:
                facts = ObstacleFacts(grid)
                grid._obstacles = facts
    return facts


def _take(a, axis, sl):
    index = [slice(None)] * a.ndim
    index[axis] = sl
    return a[tuple(index)]


def _put(a, axis, i, value):
    index = [slice(None)] * a.ndim
    index[axis] = slice(i, i + 1)
    a[tuple(index)] = value


def _readonly(a):
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _components(n, edges, fluid):
    """Connected components of the fluid cells joined by ``edges`` (pairs of flat cell indices): a label per
    cell (``-1`` for solid cells) and the number of components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([e[0] for e in edges]) if edges else np.zeros(0, np.int64)
    cols = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    # number the components of fluid cells 0, 1, … in order of their first cell; solid cells get −1
    fluid_labels = labels[fluid]
    _, first = np.unique(fluid_labels, return_index=True)
    order = np.argsort(first)
    remap = np.full(labels.max() + 1, -1, np.int64)
    remap[np.unique(fluid_labels)[order]] = np.arange(order.size)
    out = np.where(fluid, remap[labels], -1)
    return out.astype(np.int32), int(order.size)


# -- the face masks --------------------------------------------------------------------------------------------

def _open_copies(backend, dtype, facts):
    """The open-face masks as ``(1, M_k)`` 0/1 arrays of ``dtype`` on ``backend`` (host NumPy arrays where the
    backend has no array module: products with them take :func:`gpudp.arrays.apply`'s host path)."""
    def put(m):
        a = np.ascontiguousarray(m.reshape(1, -1), dtype=dtype)
        return backend.asarray(a) if backend.xp is not None else a
    return tuple(put(m) for m in facts.open_faces)


def open_masks(backend, dtype, grid):
    """The open-face masks of ``grid`` on ``backend``: a tuple of ``(1, M_k)`` 0/1 arrays of ``dtype``, made once
    per grid, backend and dtype."""
    return obstacle_facts(grid).device(backend, dtype, _open_copies)


def mask_faces(backend, faces, masks):
    """``faces[k] * masks[k]`` for canonical ``(B, M_k)`` face arrays (new arrays)."""
    if backend.xp is not None:
        return tuple(f * m for f, m in zip(faces, masks))
    return tuple(arrays.apply(_mul, f, m) for f, m in zip(faces, masks))


def _mul(xp, a, b):
    return a * b


def masked_laplace(backend, p, inv_dx, bc, shape3, ndim, masks):
    """``laplace = divergence ∘ (open mask) ∘ spatial_gradient`` on canonical ``(B, N)`` cells (symmetric)."""
    faces = backend.stag_gradient(p, inv_dx, bc, shape3, ndim)
    return backend.stag_divergence(mask_faces(backend, faces, masks), inv_dx, bc, shape3, ndim)


class MaskFaces(Operator):
    """Face component ``axis`` (shape ``grid.face_shape(axis)``, optionally batched) times the open-face mask:
    keeps the open faces, zeroes the closed ones. Self-adjoint; saves nothing."""

    replayable = True

    @staticmethod
    def forward(ctx, u, *, grid, axis, backend):
        ctx.params = (grid, axis, backend)
        return _keep_open(u, grid, axis, backend)

    @staticmethod
    def backward(ctx, g):
        return (None if g is None else _keep_open(g, *ctx.params),)


def _keep_open(u, grid, axis, backend):
    m = open_masks(backend, u.dtype, grid)[axis].reshape(grid.face_shape(axis))
    return arrays.apply(_mul, u, m)
