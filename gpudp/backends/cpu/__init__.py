"""The ``cpu`` backend: NumPy arrays and ``numba.njit(parallel=True)`` kernels."""
from __future__ import annotations

import numpy as np

from ..base import Backend
from . import advection


class CpuBackend(Backend):
    name = "cpu"
    xp = np

    def __init__(self):
        from . import _info
        self.device = _info()

    def is_own(self, x):
        return isinstance(x, np.ndarray)

    def array_type_name(self):
        return "numpy.ndarray"

    def asarray(self, x, dtype=None):
        from ...arrays import to_numpy, is_array
        if is_array(x):
            x = to_numpy(x)
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype)

    def ascontiguous(self, x):
        return np.ascontiguousarray(x)

    def max_abs_per_row(self, x):
        return np.abs(x).max(axis=-1).astype(np.float64)

    def advect_forward(self, d, u, coef, bc, shape3, ndim, steps, save_states):
        return advection.advect_forward(d, u, coef, bc, shape3, ndim, steps, save_states)

    def advect_adjoint(self, g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u):
        return advection.advect_adjoint(g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u)


def _info():
    import os
    import numba
    return f"CPU ({os.cpu_count()} cores, {numba.config.NUMBA_NUM_THREADS} Numba threads)"
