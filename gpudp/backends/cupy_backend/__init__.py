"""The ``cupy`` backend: CuPy arrays and the CUDA C kernels of ``kernels/*.cu``, compiled with NVRTC.

Importing this package needs neither CuPy nor a GPU (``compile_check`` uses only ``nvcc``); creating
:class:`CupyBackend` does. Kernels run on CuPy's current device and stream; multi-step operators queue all
their launches without waiting for the host (see ``advection.py`` and ``poisson.py``).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..base import Backend
from . import _module, advection, difference, mac, multigrid, poisson


class CupyBackend(Backend):
    """Backend on ``cupy.ndarray``.

    ``launches`` counts kernel launches by kernel name (``advect_forward``, ``advect_adjoint_d``,
    ``advect_adjoint_du``, ``stag_divergence``, ``cg_apply``, ...) and Poisson solves (``cg_solve``); tests use
    it to see which kernels ran.

    Arrays of other kinds given to :meth:`asarray` are moved: NumPy arrays (and anything NumPy accepts) are
    copied to the device; arrays exposing ``__cuda_array_interface__`` (e.g. Numba device arrays) are wrapped
    without a copy where CuPy can, else copied through the host.
    """

    name = "cupy"

    def __init__(self):
        import cupy

        self.xp = cupy
        #: array namespace of the launch wrappers (advection.py, difference.py, poisson.py)
        self.cp = cupy
        self.launches = Counter()
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        self.device = f"{name} (device {dev.id})"

    # -- kernel launches (used by the wrappers) -----------------------------------------------------------
    def launch(self, filename, name, dtype, grid, args):
        """Launch ``name`` (``_f32``/``_f64`` by ``dtype``; ``None`` for dtype-free kernels) of
        ``kernels/<filename>`` with ``grid`` blocks of ``_module.BLOCK`` threads; counts it in ``launches``."""
        _module.launch(self.launches, filename, name, dtype, grid, args)

    def sm_count(self):
        return _module.sm_count()

    # -- arrays -------------------------------------------------------------------------------------------
    def is_own(self, x):
        return isinstance(x, self.cp.ndarray)

    def array_type_name(self):
        return "cupy.ndarray"

    def asarray(self, x, dtype=None):
        cp = self.cp
        if isinstance(x, cp.ndarray):
            return cp.asarray(x, dtype=dtype)
        if hasattr(x, "__cuda_array_interface__"):
            try:
                return cp.asarray(x, dtype=dtype)
            except Exception:  # e.g. a simulator array that only pretends to live on a device
                if hasattr(x, "copy_to_host"):
                    return cp.asarray(x.copy_to_host(), dtype=dtype)
                raise
        from ...arrays import is_array, to_numpy
        if is_array(x):
            x = to_numpy(x)
        return cp.asarray(np.asarray(x, dtype=dtype))

    def to_numpy(self, x):
        return self.cp.asnumpy(x)

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype)

    def zeros(self, shape, dtype):
        return self.cp.zeros(shape, dtype)

    def ascontiguous(self, x):
        return self.cp.ascontiguousarray(x)

    def synchronize(self):
        self.cp.cuda.get_current_stream().synchronize()

    def max_abs_per_row(self, x):
        cp = self.cp
        return cp.asnumpy(cp.abs(x).max(axis=-1).astype(cp.float64))

    # -- advection ----------------------------------------------------------------------------------------
    def advect_forward(self, d, u, coef, bc, shape3, ndim, steps, save_states, save_every=1, out=None,
                       states=None):
        return advection.advect_forward(self, d, u, coef, bc, shape3, ndim, steps, save_states, save_every, out,
                                        states)

    def advect_adjoint(self, g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu=None):
        return advection.advect_adjoint(self, g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu)

    # -- staggered differences and the Poisson solve ------------------------------------------------------
    def stag_divergence(self, faces, inv_dx, bc, shape3, ndim):
        return difference.stag_divergence(self, faces, inv_dx, bc, shape3, ndim)

    def stag_divergence_adjoint(self, g, inv_dx, bc, shape3, ndim):
        return difference.stag_divergence_adjoint(self, g, inv_dx, bc, shape3, ndim)

    def stag_gradient(self, p, inv_dx, bc, shape3, ndim):
        return difference.stag_gradient(self, p, inv_dx, bc, shape3, ndim)

    def stag_gradient_adjoint(self, faces_g, inv_dx, bc, shape3, ndim):
        return difference.stag_gradient_adjoint(self, faces_g, inv_dx, bc, shape3, ndim)

    def laplace(self, p, inv_dx, bc, shape3, ndim):
        return difference.laplace(self, p, inv_dx, bc, shape3, ndim)

    def cg_solve(self, b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular, preconditioner, check_every):
        self.launches["cg_solve"] += 1   # solves (each is many cg_* launches)
        return poisson.cg_solve(self, b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular,
                                preconditioner, check_every)

    # -- MAC (staggered) advection and interpolation (mac.py, kernels/mac.cu) ------------------------------
    def mac_advect_cells(self, q, u, dt, geom, steps, save_states, save_every=1, out=None, states=None):
        return mac.advect_cells(self, q, u, dt, geom, steps, save_states, save_every, out, states)

    def mac_advect_cells_adjoint(self, g, states, u, dt, geom, steps, need_q, need_u, gu=None):
        return mac.advect_cells_adjoint(self, g, states, u, dt, geom, steps, need_q, need_u, gu)

    def mac_advect_faces(self, q, u, dt, geom):
        return mac.advect_faces(self, q, u, dt, geom)

    def mac_advect_faces_adjoint(self, g, q, u, dt, geom, need_q, need_u):
        return mac.advect_faces_adjoint(self, g, q, u, dt, geom, need_q, need_u)

    def mac_at_centers(self, u, geom):
        return mac.at_centers(self, u, geom)

    def mac_at_centers_adjoint(self, g, geom):
        return mac.at_centers_adjoint(self, g, geom)

    def mac_at_faces(self, c, geom):
        return mac.at_faces(self, c, geom)

    def mac_at_faces_adjoint(self, g, geom):
        return mac.at_faces_adjoint(self, g, geom)

    # -- multigrid V-cycle (gpudp.ops.multigrid; multigrid.py, kernels/multigrid.cu) ----------------------
    def mg_smooth(self, x, r, out, level, omega, first):
        multigrid.smooth(self, x, r, out, level, omega, first)

    def mg_residual(self, x, r, out, level):
        multigrid.residual(self, x, r, out, level)

    def mg_apply(self, x, out, level):
        multigrid.apply(self, x, out, level)

    def mg_restrict(self, fine, out, level, coarse):
        multigrid.restrict(self, fine, out, level, coarse)

    def mg_prolong_add(self, e, x, level, coarse):
        multigrid.prolong_add(self, e, x, level, coarse)

    def mg_coarse_solve(self, r, pinv, out):
        multigrid.coarse_solve(self, r, pinv, out)
