"""The ``"multigrid"`` preconditioner: a symmetric geometric-multigrid V-cycle inside conjugate gradients
(MGPCG, after McAdams, Sifakis and Teran 2010), valid with obstacles and every boundary rule.

Levels. Level 0 is the grid's operator ``A = −laplace = Gᵀ W G`` (DESIGN.md §6) written with one *coupling*
per face: ``w_f = 1/Δx_a²`` on an open face of axis ``a``, 0 on a closed one (a neumann wall, a face touching a
solid cell), so that ``(A x)_i = Σ_faces w_f (x_i − x_across)`` with 0 across a dirichlet face (the layout of
:mod:`gpudp.backends.mg_stencils`). Each coarser level halves every axis that has more than two cells
(``n_c = ⌈n/2⌉``; an odd axis gets a *phantom* half cell), until at most :data:`COARSEST_CELLS` cells are
left. Its couplings are *rediscretised*: a coarse face's coupling is the mean of the fine couplings of the
fine faces it covers (0 for phantom cells), divided by 4 along a coarsened axis (the spacing doubles), so a
coarse face is closed only where the obstacles close every fine face under it and partly open where they
close some. A dirichlet boundary face keeps the zero value where the finest grid has it, half a cell outside
the boundary: its coupling at a level with cells ``s`` fine cells wide is ``1 / (s Δx · (s + 1) Δx / 2)``.
Transfers are cell-centred linear prolongation ``P`` and restriction ``R = Pᵀ / 2`` per coarsened axis
(formulas in :mod:`gpudp.backends.mg_stencils`). The coarsest level is solved with the dense pseudo-inverse of
its matrix (computed once, float64, on the host).

The V-cycle ``z = M⁻¹ r``: on every level but the coarsest, ``ν`` damped-Jacobi sweeps from ``x = 0``
(``x ← x + ω D⁻¹ (r − A x)``; ``D`` the diagonal of the level's ``A``, ``D⁻¹ = 0`` where ``D = 0``, i.e. in solid
cells), the residual restricted to the next level, the V-cycle there, its result prolongated and added, and
``ν`` more sweeps. Pre- and post-smoothing are the same symmetric polynomial, the coarse correction is
``P M_c⁻¹ R`` with ``R ∝ Pᵀ`` and ``M_c⁻¹`` symmetric positive semidefinite (by induction; the pseudo-inverse at
the bottom), and ``ω < 1`` makes the sweeps convergent (``D⁻¹A`` has its spectrum in ``[0, 2]``), so ``M⁻¹`` is
symmetric and positive definite on the cells with ``D > 0``: CG with ``z = Π M⁻¹ r`` (``Π`` as in
:mod:`gpudp.ops.masked_cg`) stays exact, and so does the implicit gradient. On a 2-D grid with 20 % of random
solid discs the CG iteration count at ``tol = 1e-6`` is about 10–15 and does not grow with the grid's width.

Everything on the host is built once per grid (:func:`hierarchy`, kept with the grid's obstacle facts) and
copied once per backend and dtype (:func:`device_hierarchy`). The V-cycle (:func:`vcycle`) queues the
backend's kernels (``mg_smooth``, ``mg_residual``, ``mg_restrict``, ``mg_prolong_add``, ``mg_coarse_solve``)
and never reads a value back, so on GPUs it runs without host synchronisation.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np

from ..backends.mac_stencils import face_dims
from .obstacles import obstacle_facts

#: The coarsest level has at most this many cells (its dense pseudo-inverse is applied as a matrix product).
COARSEST_CELLS = 512
#: Damped-Jacobi weight by number of dimensions (the classic smoothing optima 2/3, 4/5, 6/7; all < 1).
OMEGA = {1: 2.0 / 3.0, 2: 0.8, 3: 6.0 / 7.0}
#: Jacobi sweeps before and after the coarse correction on each level.
SWEEPS = 1


class Level(NamedTuple):
    """One level of a hierarchy, as the backends' multigrid kernels receive it.

    ``shape3`` cells per padded axis; ``bc`` boundary codes; ``off = 3 - ndim``; ``coarsen``: per padded axis,
    1 when the next coarser level halves it (0 on the coarsest level); ``w``: the three coupling face arrays
    (padded axes: one zero); ``dinv``: ``1/D`` per cell (0 where ``D = 0``). Arrays live on one backend (host
    NumPy float64 in :class:`Hierarchy`)."""

    shape3: Tuple[int, int, int]
    bc: Tuple[int, int, int]
    off: int
    coarsen: Tuple[int, int, int]
    w: tuple
    dinv: object

    @property
    def size(self):
        return self.shape3[0] * self.shape3[1] * self.shape3[2]


class Hierarchy:
    """The levels of one grid (host, float64) and the pseudo-inverse of the coarsest level's matrix."""

    def __init__(self, facts):
        geom = facts.geom
        bc, ndim, off = geom.bc, geom.ndim, 3 - geom.ndim
        n = tuple(geom.shape3)
        w = fine_couplings(facts)
        widths = [1, 1, 1]   # cell width of the level, in fine cells, per axis
        levels = []
        while True:
            flags = tuple(int(a >= off and n[a] > 2) for a in range(3))
            N = n[0] * n[1] * n[2]
            last = N <= COARSEST_CELLS or not any(flags)
            if last:
                flags = (0, 0, 0)
            levels.append(Level(n, bc, off, flags, w, inverse_diagonal(w, n, bc, off)))
            if last:
                break
            w, n = coarsen(w, n, bc, off, flags, widths)
            widths = [widths[a] * 2 if flags[a] else widths[a] for a in range(3)]
        self.levels = levels
        self.ndim = ndim
        self.omega = OMEGA[ndim]
        self.pinv = np.linalg.pinv(dense_matrix(levels[-1]), hermitian=True)


def fine_couplings(facts):
    """Level 0's couplings: ``open / Δx_a²`` per face (host float64 face arrays; padded axes: one zero)."""
    geom = facts.geom
    off = 3 - geom.ndim
    w = [np.zeros(1), np.zeros(1), np.zeros(1)]
    for k in range(geom.ndim):
        a = off + k
        c = np.asarray(facts.open_faces[k], np.float64).reshape(-1) / (geom.spacing[a] ** 2)
        if geom.bc[a] == 0 and geom.shape3[a] == 1:
            c = np.zeros_like(c)   # a lone periodic cell is its own neighbour: no coupling
        w[a] = np.ascontiguousarray(c)
    return tuple(w)


def diagonal(w, n, bc, off):
    """``D_i``, the sum of the couplings of cell ``i``'s faces (flat)."""
    d = np.zeros(n)
    for a in range(off, 3):
        f = w[a].reshape(face_dims(a, n, bc))
        lower = np.take(f, np.arange(n[a]), axis=a)
        upper = np.take(f, (np.arange(n[a]) + 1) % f.shape[a], axis=a)
        d = d + lower + upper
    return d.reshape(-1)


def inverse_diagonal(w, n, bc, off):
    """``1/D`` (0 where ``D = 0``)."""
    d = diagonal(w, n, bc, off)
    return np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)


def coarsen(w, n, bc, off, flags, widths):
    """The next level's couplings and shape (module docstring)."""
    nc = tuple((n[a] + 1) // 2 if flags[a] else n[a] for a in range(3))
    out = [np.zeros(1), np.zeros(1), np.zeros(1)]
    for a in range(off, 3):
        f = w[a].reshape(face_dims(a, n, bc))
        if flags[a]:
            if bc[a] == 0:
                pick = np.arange(nc[a]) * 2
                scale = np.full(nc[a], 0.25)
            else:
                pick = np.append(np.arange(nc[a]) * 2, n[a])
                scale = np.full(nc[a] + 1, 0.25)
                s = widths[a]
                # the zero value stays half a fine cell outside the boundary
                scale[0] = scale[-1] = (s + 1.0) / (2.0 * (2.0 * s + 1.0))
            view = [1, 1, 1]
            view[a] = -1
            f = np.take(f, pick, axis=a) * scale.reshape(view)
        for b in range(off, 3):
            if b == a or not flags[b]:
                continue
            pad = [(0, 0)] * 3
            pad[b] = (0, 2 * nc[b] - f.shape[b])   # the phantom cell of an odd axis holds 0
            f = np.pad(f, pad)
            shape = list(f.shape)
            shape[b:b + 1] = [nc[b], 2]
            f = f.reshape(shape).sum(axis=b + 1) * 0.5
        out[a] = np.ascontiguousarray(f.reshape(-1))
    return tuple(out), nc


def dense_matrix(level):
    """The level's ``A`` as a dense float64 matrix (only for the coarsest level: a few hundred cells): ``D`` on
    the diagonal, ``−w_f`` between the two cells of every face ``f`` inside the grid (both faces between two
    cells of a periodic axis of two)."""
    n, bc, off = level.shape3, level.bc, level.off
    A = np.diag(diagonal(level.w, n, bc, off))
    idx = np.arange(level.size).reshape(n)
    for a in range(off, 3):
        f = level.w[a].reshape(face_dims(a, n, bc))
        faces = np.arange(1, n[a]) if bc[a] != 0 else np.arange(n[a])   # face j joins cells j − 1 and j
        lo = np.take(idx, (faces - 1) % n[a], axis=a).reshape(-1)
        hi = np.take(idx, faces, axis=a).reshape(-1)
        c = np.take(f, faces, axis=a).reshape(-1)
        np.add.at(A, (lo, hi), -c)
        np.add.at(A, (hi, lo), -c)
    return A


def hierarchy(grid):
    """The :class:`Hierarchy` of ``grid``, built once and kept with its obstacle facts."""
    return _host_hierarchy(obstacle_facts(grid))


def _host_hierarchy(facts):
    return facts.cached("multigrid", lambda: Hierarchy(facts))


# -- device copies and the V-cycle ----------------------------------------------------------------------------

class DeviceHierarchy:
    """A hierarchy's levels as arrays of one backend and dtype, with its work buffers per batch size."""

    def __init__(self, backend, dtype, host):
        def put(a):
            return backend.asarray(np.ascontiguousarray(a, dtype=dtype))

        self.levels = [lv._replace(w=tuple(put(c) for c in lv.w), dinv=put(lv.dinv)) for lv in host.levels]
        self.pinv = put(host.pinv)
        self.omega = np.dtype(dtype).type(host.omega)
        self.dtype = np.dtype(dtype)
        self._work = {}

    def work(self, backend, B):
        """Per level: the right-hand side, two iterate buffers (kept per batch size ``B``)."""
        buf = self._work.get(B)
        if buf is None:
            buf = [tuple(backend.empty((B, lv.size), self.dtype) for _ in range(3)) for lv in self.levels]
            self._work.clear()   # one batch size at a time
            self._work[B] = buf
        return buf


def _device_build(backend, dtype, facts):
    return DeviceHierarchy(backend, dtype, _host_hierarchy(facts))


def device_hierarchy(backend, dtype, grid):
    """The :class:`DeviceHierarchy` of ``grid`` on ``backend`` for ``dtype`` (built once)."""
    return obstacle_facts(grid).device(backend, dtype, _device_build)


def vcycle(backend, dh, r, out):
    """``out = M⁻¹ r`` for the ``(B, N)`` arrays ``r`` and ``out`` (distinct) of ``backend`` (module docstring).
    Only kernel launches: no value is read back."""
    B = r.shape[0]
    work = dh.work(backend, B)
    levels = dh.levels
    L = len(levels)
    if L == 1:
        backend.mg_coarse_solve(r, dh.pinv, out)
        return out
    rhs = [r] + [work[l][0] for l in range(1, L)]
    xs = [None] * L
    omega = dh.omega
    # down: smooth from zero, restrict the residual
    for l in range(L - 1):
        lv = levels[l]
        _, a, b = work[l]
        backend.mg_smooth(None, rhs[l], a, lv, omega, True)
        for _ in range(SWEEPS - 1):
            backend.mg_smooth(a, rhs[l], b, lv, omega, False)
            a, b = b, a
        backend.mg_residual(a, rhs[l], b, lv)
        backend.mg_restrict(b, rhs[l + 1], lv, levels[l + 1])
        xs[l] = (a, b)
    # bottom: the pseudo-inverse
    coarse = work[L - 1][1]
    backend.mg_coarse_solve(rhs[L - 1], dh.pinv, coarse)
    # up: correct, smooth
    for l in range(L - 2, -1, -1):
        lv = levels[l]
        a, b = xs[l]
        backend.mg_prolong_add(coarse, a, lv, levels[l + 1])
        for s in range(SWEEPS):
            dst = out if (l == 0 and s == SWEEPS - 1) else b
            backend.mg_smooth(a, rhs[l], dst, lv, omega, False)
            a, b = dst, a
        coarse = a
    return out
