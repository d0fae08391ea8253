"""Uniform Cartesian grids and their boundary conditions."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import GridError

#: Boundary kinds and the integer codes the kernels use.
BOUNDARY_CODES = {"periodic": 0, "dirichlet": 1, "neumann": 2}


class Grid:
    """A uniform Cartesian grid of 1, 2 or 3 dimensions.

    Parameters
    ----------
    shape : int or tuple of int
        Number of cells along each axis (each >= 1; an int means a 1-D grid).
    spacing : float or tuple of float
        Cell size ``Δx_k`` (> 0, finite), one value for all axes or one per axis.
    boundary : str or tuple of str
        ``"periodic"``, ``"dirichlet"`` (ghost value 0) or ``"neumann"`` (ghost repeats the boundary cell,
        zero normal gradient); one for all axes or one per axis.
    solid : array of ``shape`` or None
        Obstacle mask, ``True`` (or 1) for a solid cell (DESIGN.md §6): boolean, or integer/float holding only
        0 and 1; not every cell may be solid. The grid keeps a read-only host copy (``grid.solid``); the
        operators honour it (closed faces, the Poisson solve on the fluid cells).

    A grid is an immutable value object: equal parameters (the mask by content) compare and hash equal.
    """

    # _derived: values the operators derive from the grid on every call, computed once (see
    # gpudp.ops._validate.grid_facts); not part of the grid's value
    # _solid: the read-only bool mask or None; _solid_key: its packed bits (bytes) or None, part of the value;
    # _hash: computed once; _obstacles: gpudp.ops.obstacles.ObstacleFacts (per-grid facts and device copies);
    # _advect_plans: what gpudp.ops.advection derives per backend, time step, dtype and layout (a dict or None)
    __slots__ = ("_shape", "_spacing", "_boundary", "_derived", "_geometry", "_solid", "_solid_key", "_hash",
                 "_obstacles", "_advect_plans")

    def __init__(self, shape, spacing=1.0, boundary="periodic", solid=None):
        if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
            shape = (int(shape),)
        try:
            shape = tuple(shape)
        except TypeError:
            raise GridError(f"Grid: shape must be an int or a tuple of 1 to 3 ints, got {shape!r}") from None
        if not 1 <= len(shape) <= 3:
            raise GridError(f"Grid: shape must have 1, 2 or 3 entries, got {len(shape)} ({shape!r})")
        for n in shape:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise GridError(f"Grid: shape entries must be positive ints, got {shape!r}")
        shape = tuple(int(n) for n in shape)
        ndim = len(shape)

        spacing = self._per_axis(spacing, ndim, "spacing")
        out = []
        for h in spacing:
            if isinstance(h, bool) or not isinstance(h, numbers.Real):
                raise GridError(f"Grid: spacing must be a positive finite float or tuple of them, got {spacing!r}")
            h = float(h)
            if not (math.isfinite(h) and h > 0):
                raise GridError(f"Grid: spacing must be positive and finite, got {spacing!r}")
            out.append(h)
        spacing = tuple(out)

        boundary = self._per_axis(boundary, ndim, "boundary")
        for b in boundary:
            if b not in BOUNDARY_CODES:
                raise GridError(
                    f"Grid: unknown boundary {b!r}; expected one of {sorted(BOUNDARY_CODES)} or a tuple of "
                    f"{ndim} of them")
        self._shape = shape
        self._spacing = spacing
        self._boundary = tuple(boundary)
        self._solid = None if solid is None else self._check_solid(solid, shape)
        self._solid_key = None if self._solid is None else np.packbits(self._solid).tobytes()
        self._hash = hash(self._key())
        self._derived = None
        self._geometry = None
        self._obstacles = None
        self._advect_plans = None

    @staticmethod
    def _check_solid(solid, shape):
        """A read-only bool copy of the obstacle mask ``solid`` (never the caller's array)."""
        try:
            a = np.asarray(solid)
        except Exception as exc:
            raise GridError(f"Grid: solid must be a boolean array of shape {shape}, got {type(solid).__name__} "
                            f"({exc})") from None
        if a.dtype == object or a.dtype.kind not in "biuf":
            raise GridError(f"Grid: solid has dtype {a.dtype}; expected a boolean array of shape {shape} "
                            f"(True = solid cell), or an integer/float array holding only 0 and 1")
        if a.shape != shape:
            raise GridError(f"Grid: solid has shape {a.shape}; expected the grid's shape {shape}")
        if a.dtype.kind == "b":
            mask = np.array(a, dtype=bool, order="C", copy=True)
        else:
            ok = (a == 0) | (a == 1)
            if not ok.all():
                bad = a[~ok].reshape(-1)[:4].tolist()
                raise GridError(f"Grid: solid has dtype {a.dtype} with values other than 0 and 1 (e.g. {bad}); "
                                f"expected a boolean mask, or 0/1 values (1 = solid cell)")
            mask = np.ascontiguousarray(a == 1)
        if mask.all():
            raise GridError(f"Grid: solid marks all {mask.size} cells as solid; at least one fluid cell "
                            f"(False) is needed")
        mask.flags.writeable = False
        return mask

    @staticmethod
    def _per_axis(value, ndim, name):
        if isinstance(value, (str, numbers.Number)):
            return (value,) * ndim
        try:
            value = tuple(value)
        except TypeError:
            raise GridError(f"Grid: {name} must be a scalar or a tuple of {ndim} values, got {value!r}") from None
        if len(value) != ndim:
            raise GridError(f"Grid: {name} has {len(value)} entries but the grid has {ndim} dimensions ({value!r})")
        return value

    shape = property(lambda self: self._shape, doc="Cells per axis.")
    spacing = property(lambda self: self._spacing, doc="Cell size per axis.")
    boundary = property(lambda self: self._boundary, doc="Boundary kind per axis.")
    ndim = property(lambda self: len(self._shape), doc="Number of dimensions (1, 2 or 3).")
    size = property(lambda self: math.prod(self._shape), doc="Number of cells.")
    solid = property(lambda self: self._solid,
                     doc="The obstacle mask (read-only host NumPy bool array of ``shape``, True = solid), or None.")

    @property
    def boundary_codes(self):
        """Boundary kind per axis as the integer codes the kernels use (0 periodic, 1 dirichlet, 2 neumann)."""
        return tuple(BOUNDARY_CODES[b] for b in self._boundary)

    @property
    def is_singular(self):
        """True when the Poisson problem on this grid has a null space besides the solid cells: without
        obstacles, when no axis is dirichlet; with obstacles, when some connected fluid region touches no open
        dirichlet boundary face (a sealed region, DESIGN.md §6)."""
        if self._solid is None:
            return all(b != "dirichlet" for b in self._boundary)
        from .ops.obstacles import obstacle_facts
        return obstacle_facts(self).n_sealed > 0

    def face_shape(self, axis):
        """Shape of the staggered (MAC) component normal to ``axis``: ``n_k`` entries along a periodic axis,
        ``n_k + 1`` along a non-periodic one."""
        shape = list(self._shape)
        if self._boundary[axis] != "periodic":
            shape[axis] += 1
        return tuple(shape)

    def cell_centers(self, axis=0):
        """Cell-centre coordinates ``(i + 1/2)·Δx`` along ``axis`` as a float64 NumPy array."""
        return (np.arange(self._shape[axis]) + 0.5) * self._spacing[axis]

    def _key(self):
        return (self._shape, self._spacing, self._boundary, self._solid_key)

    def __eq__(self, other):
        return isinstance(other, Grid) and (self is other or (self._hash == other._hash
                                                              and self._key() == other._key()))

    def __hash__(self):
        return self._hash

    def __reduce__(self):
        # the value only: the cached facts and device copies are rebuilt where the grid is used
        return (Grid, (self._shape, self._spacing, self._boundary, self._solid))

    def __repr__(self):
        solid = "" if self._solid is None else f", solid=<{int(self._solid.sum())} of {self._solid.size} cells>"
        return f"Grid(shape={self._shape}, spacing={self._spacing}, boundary={self._boundary}{solid})"
