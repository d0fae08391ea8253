"""The ``cpu`` backend: NumPy arrays and ``numba.njit(parallel=True)`` kernels."""
from __future__ import annotations

import collections

import numpy as np

from ..base import Backend
from . import advection, difference, poisson


class CpuBackend(Backend):
    name = "cpu"
    xp = np

    def __init__(self):
        from . import _info
        self.device = _info()
        #: Kernel calls by kernel name ("advect_forward", "advect_adjoint_d", "advect_adjoint_du"), for tests
        #: and profiling; every backend keeps the same counter.
        self.launches = collections.Counter()

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

    # ``x`` itself when C-contiguous, else a contiguous copy; NumPy's function itself (no Python frame: the
    # operators call it several times per call)
    ascontiguous = staticmethod(np.ascontiguousarray)

    max_abs_per_row = staticmethod(advection.max_abs_rows)
    max_abs = staticmethod(advection.max_abs)

    def advect_forward(self, d, u, coef, bc, shape3, ndim, steps, save_states, save_every=1, out=None,
                       states=None):
        self.launches["advect_forward"] += 1
        return advection.advect_forward(d, u, coef, bc, shape3, ndim, steps, save_states, save_every, out, states)

    def advect_adjoint(self, g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu=None):
        self.launches["advect_adjoint_du" if need_u else "advect_adjoint_d"] += 1
        return advection.advect_adjoint(g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu)

    def advect_launcher(self, coef, bc, shape3, ndim, dtype, size):
        if dtype not in (np.float32, np.float64):
            return None
        return advection.Launcher(coef, bc, shape3, ndim, np.dtype(dtype), size, self.launches)

    def stag_divergence(self, faces, inv_dx, bc, shape3, ndim):
        self.launches["stag_divergence"] += 1
        return difference.stag_divergence(faces, inv_dx, bc, shape3, ndim)

    def stag_divergence_adjoint(self, g, inv_dx, bc, shape3, ndim):
        self.launches["stag_divergence_adjoint"] += 1
        return difference.stag_divergence_adjoint(g, inv_dx, bc, shape3, ndim)

    def stag_gradient(self, p, inv_dx, bc, shape3, ndim):
        self.launches["stag_gradient"] += 1
        return difference.stag_gradient(p, inv_dx, bc, shape3, ndim)

    def stag_gradient_adjoint(self, faces_g, inv_dx, bc, shape3, ndim):
        self.launches["stag_gradient_adjoint"] += 1
        return difference.stag_gradient_adjoint(faces_g, inv_dx, bc, shape3, ndim)

    def laplace(self, p, inv_dx, bc, shape3, ndim):
        self.launches["laplace"] += 1
        return difference.laplace(p, inv_dx, bc, shape3, ndim)

    def cg_solve(self, b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular, preconditioner, check_every):
        self.launches["cg_solve"] += 1
        return poisson.cg_solve(b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular, preconditioner,
                                check_every)

    def cg_solve_masked(self, b, x0, obstacles, tol, maxiter, preconditioner, check_every):
        """The Poisson solve with obstacles (``gpudp.ops.masked_cg``) as one compiled call."""
        from . import obstacles as _obstacles
        self.launches["cg_solve_masked"] += 1
        return _obstacles.cg_solve_masked(self, b, x0, obstacles, tol, maxiter, preconditioner)

    # -- MAC advection and interpolation (gpudp.ops.mac; kernels in mac.py) -------------------------------------
    def mac_advect_cells(self, q, u, dt, geom, steps, save_states, save_every=1, out=None, states=None):
        from . import mac
        self.launches["mac_cells_forward"] += 1
        return mac.advect_cells(q, u, dt, geom, steps, save_states, save_every, out, states)

    def mac_advect_cells_adjoint(self, g, states, u, dt, geom, steps, need_q, need_u, gu=None):
        from . import mac
        # one fused pass per step: counted under the gradients it computes
        if need_u:
            self.launches["mac_cells_adjoint_u"] += 1
        if need_q or steps > 1:
            self.launches["mac_cells_adjoint_q"] += 1
        return mac.advect_cells_adjoint(g, states, u, dt, geom, steps, need_q, need_u, gu)

    def mac_advect_faces(self, q, u, dt, geom):
        from . import mac
        self.launches["mac_faces_forward"] += 1
        return mac.advect_faces(q, u, dt, geom)

    def mac_advect_faces_adjoint(self, g, q, u, dt, geom, need_q, need_u):
        from . import mac
        if need_q:
            self.launches["mac_faces_adjoint_q"] += 1
        if need_u:
            self.launches["mac_faces_adjoint_u"] += 1
        return mac.advect_faces_adjoint(g, q, u, dt, geom, need_q, need_u)

    def mac_at_centers(self, u, geom):
        from . import mac
        self.launches["mac_at_centers"] += 1
        return mac.at_centers(u, geom)

    def mac_at_centers_adjoint(self, g, geom):
        from . import mac
        self.launches["mac_at_centers_adjoint"] += 1
        return mac.at_centers_adjoint(g, geom)

    def mac_at_faces(self, c, geom):
        from . import mac
        self.launches["mac_at_faces"] += 1
        return mac.at_faces(c, geom)

    def mac_at_faces_adjoint(self, g, geom):
        from . import mac
        self.launches["mac_at_faces_adjoint"] += 1
        return mac.at_faces_adjoint(g, geom)

    # -- multigrid V-cycle (gpudp.ops.multigrid) --------------------------------------------------------------
    def mg_smooth(self, x, r, out, level, omega, first):
        from . import multigrid
        multigrid.smooth(x, r, out, level, omega, first)

    def mg_residual(self, x, r, out, level):
        from . import multigrid
        multigrid.residual(x, r, out, level)

    def mg_apply(self, x, out, level):
        from . import multigrid
        multigrid.apply(x, out, level)

    def mg_restrict(self, fine, out, level, coarse):
        from . import multigrid
        multigrid.restrict(fine, out, level, coarse)

    def mg_prolong_add(self, e, x, level, coarse):
        from . import multigrid
        multigrid.prolong_add(e, x, level, coarse)

    def mg_coarse_solve(self, r, pinv, out):
        from . import multigrid
        multigrid.coarse_solve(r, pinv, out)


def _info():
    import os
    import numba
    return f"CPU ({os.cpu_count()} cores, {numba.config.NUMBA_NUM_THREADS} Numba threads)"
