"""The small geometry value the kernel methods of the backends receive (``gpudp.backends.base``).

A :class:`Geometry` is a grid padded with leading unit axes to three dimensions, in the form the kernels use:
``shape3`` (cells per padded axis), ``ndim`` (the real axes are the last ``ndim``), ``bc`` (boundary code per
padded axis: 0 periodic, 1 dirichlet, 2 neumann), ``spacing`` (``Δx`` per padded axis; 1.0 on padding axes)
and ``solid`` (the obstacle mask padded to ``shape3`` as a read-only host NumPy bool array, or ``None``).
It is computed once per :class:`gpudp.Grid` (``geometry(grid)``) and kept on it, so passing it costs nothing.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np


class Geometry(NamedTuple):
    shape3: Tuple[int, int, int]
    ndim: int
    bc: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    solid: Optional[np.ndarray] = None

    @property
    def axes(self):
        """The padded indices of the real axes (``range(3 - ndim, 3)``)."""
        return range(3 - self.ndim, 3)

    @property
    def size(self):
        """Cells of one system, ``N``."""
        return self.shape3[0] * self.shape3[1] * self.shape3[2]

    @property
    def inv_dx(self):
        return tuple(1.0 / h for h in self.spacing)

    def face_shape3(self, a):
        """Padded shape of the face array of padded axis ``a`` (``n_a + 1`` along ``a`` when non-periodic)."""
        s = list(self.shape3)
        if self.bc[a] != 0:
            s[a] += 1
        return tuple(s)

    def face_count(self, a):
        """Entries of one system's face array of padded axis ``a``, ``M_a``."""
        s = self.face_shape3(a)
        return s[0] * s[1] * s[2]

    def __hash__(self):  # the mask is an array: hash by identity of the owning grid's value instead
        return hash((self.shape3, self.ndim, self.bc, self.spacing, None if self.solid is None else id(self.solid)))

    def __eq__(self, other):
        return self is other or (isinstance(other, Geometry) and self[:4] == other[:4]
                                 and (self.solid is other.solid or (self.solid is not None and other.solid is not None
                                                                    and np.array_equal(self.solid, other.solid))))

    def __ne__(self, other):
        return not self == other


def geometry(grid):
    """The :class:`Geometry` of ``grid``, computed once and kept on the grid (grids are immutable)."""
    g = getattr(grid, "_geometry", None)
    if g is None:
        pad = 3 - grid.ndim
        solid = getattr(grid, "solid", None)
        if solid is not None:
            solid = np.ascontiguousarray(np.asarray(solid, bool).reshape((1,) * pad + grid.shape))
            solid.flags.writeable = False
        g = Geometry((1,) * pad + grid.shape, grid.ndim, (0,) * pad + grid.boundary_codes,
                     (1.0,) * pad + grid.spacing, solid)
        grid._geometry = g
    return g
