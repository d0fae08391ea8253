"""The ``numba-cuda`` backend: ``numba.cuda.jit`` kernels.

Arrays are CuPy arrays when CuPy is usable on a real device (then ``xp`` is ``cupy`` and the kernels get
zero-copy Numba views of them through ``__cuda_array_interface__``, launched on CuPy's current stream), else
Numba device arrays (``xp`` is ``None``; glue code such as tensor arithmetic then takes the host path of
:mod:`gpudp.arrays`). Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) it always uses Numba device
arrays, so CI without a GPU executes the kernels' indexing logic.

``launches`` counts kernel launches by kernel name (``"advect_forward"``, ``"advect_adjoint_d"``,
``"advect_adjoint_du"``, ``"laplace"``, ``"cg_stencil_dot"``, …) for tests and profiling.
"""
from __future__ import annotations

import collections
import warnings

import numpy as np
from numba import cuda

from ..base import Backend
from . import _common, advection, difference, poisson
from ._common import SIMULATOR, TPB, blocks_for

# Small grids trip Numba's low-occupancy warning at every launch; it says nothing useful about these kernels.
warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU under-utilization")


def _cupy_usable():
    """The ``cupy`` module when CuPy can run on a real device (never under the simulator), else None."""
    if SIMULATOR:
        return None
    # the probe functions, not backend_info(): this runs while gpudp.backends holds its registry lock
    from .. import _probe_cupy
    if not _probe_cupy()[0]:
        return None
    import cupy
    return cupy


def _is_numba_array(x):
    """A Numba device array (or the simulator's stand-in for one)."""
    return hasattr(x, "copy_to_host") and bool(getattr(type(x), "__cuda_ndarray__", False))


class NumbaCudaBackend(Backend):
    name = "numba-cuda"

    def __init__(self):
        from .. import _probe_numba_cuda
        self.device = _probe_numba_cuda()[1]
        self._cp = _cupy_usable()
        self.xp = self._cp
        #: Kernel launches by kernel name.
        self.launches = collections.Counter()
        self._streams = {}

    # -- arrays -------------------------------------------------------------------------------------------
    def is_own(self, x):
        if self._cp is not None and isinstance(x, self._cp.ndarray):
            return True
        return _is_numba_array(x)

    def array_type_name(self):
        if self._cp is not None:
            return "cupy.ndarray (or a Numba device array)"
        return "Numba device array (numba.cuda.cudadrv.devicearray.DeviceNDArray)"

    def asarray(self, x, dtype=None):
        from ...arrays import is_array, to_numpy
        cp = self._cp
        if cp is not None:
            if isinstance(x, cp.ndarray) or _is_numba_array(x):
                return cp.asarray(x, dtype=dtype)
            return cp.asarray(np.asarray(to_numpy(x) if is_array(x) else x, dtype=dtype))
        if _is_numba_array(x):
            if dtype is None or np.dtype(dtype) == x.dtype:
                return x
            x = x.copy_to_host()
        host = to_numpy(x) if is_array(x) else x
        return cuda.to_device(np.asarray(host, dtype=dtype, order="C"))  # keeps 0-d arrays 0-d

    def to_numpy(self, x):
        if isinstance(x, np.ndarray):
            return x
        if self._cp is not None and isinstance(x, self._cp.ndarray):
            return x.get()
        return x.copy_to_host()

    def empty(self, shape, dtype):
        if self._cp is not None:
            return self._cp.empty(shape, dtype)
        return cuda.device_array(shape, dtype=np.dtype(dtype))

    def zeros(self, shape, dtype):
        if self._cp is not None:
            return self._cp.zeros(shape, dtype)
        x = cuda.device_array(shape, dtype=np.dtype(dtype))
        if x.size:
            self.launch("fill", _common.fill_kernel, blocks_for(x.size), (self.dev(x), np.dtype(dtype).type(0)))
        return x

    def ascontiguous(self, x):
        if self._cp is not None and isinstance(x, self._cp.ndarray):
            return x if x.flags.c_contiguous else self._cp.ascontiguousarray(x)
        if x.is_c_contiguous():
            return x
        # a strided Numba device array (e.g. a slice): a copy through host memory, glue code only
        return cuda.to_device(np.asarray(x.copy_to_host(), order="C"))

    def synchronize(self):
        if self._cp is not None:
            self._cp.cuda.get_current_stream().synchronize()
        cuda.synchronize()

    def max_abs_per_row(self, x):
        rows, ncol = x.shape
        if self._cp is not None and isinstance(x, self._cp.ndarray):
            m = self._cp.abs(x).max(axis=-1)
            return np.asarray(m.get(), np.float64)
        out = self.empty((rows,), np.float64)
        self.launch("max_abs_rows", _common.max_abs_rows_kernel, max(1, min(rows, 65535)),
                    (self.dev(x), self.dev(out), ncol))
        return self.to_numpy(out)

    # -- kernel plumbing ----------------------------------------------------------------------------------
    def dev(self, x):
        """A flat Numba device view of the contiguous own array ``x`` (no copy, no synchronisation)."""
        if self._cp is not None and isinstance(x, self._cp.ndarray):
            x = cuda.as_cuda_array(x, sync=False)
        return x.reshape(x.size)

    def _stream(self):
        if self._cp is None:
            return None
        ptr = self._cp.cuda.get_current_stream().ptr
        st = self._streams.get(ptr)
        if st is None:
            st = cuda.legacy_default_stream() if ptr == 0 else cuda.external_stream(ptr)
            self._streams[ptr] = st
        return st

    def launch(self, name, kernel, griddim, args, blockdim=TPB):
        """Launch ``kernel[griddim, blockdim]`` on the current stream and count it under ``name``."""
        self.launches[name] += 1
        stream = self._stream()
        if stream is None:
            kernel[griddim, blockdim](*args)
        else:
            kernel[griddim, blockdim, stream](*args)

    # -- advection ----------------------------------------------------------------------------------------
    def advect_forward(self, d, u, coef, bc, shape3, ndim, steps, save_states, save_every=1, out=None,
                       states=None):
        return advection.advect_forward(self, d, u, coef, bc, shape3, ndim, steps, save_states, save_every, out,
                                        states)

    def advect_adjoint(self, g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu=None):
        return advection.advect_adjoint(self, g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu)

    # -- staggered differences and the Poisson solve -------------------------------------------------------
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
        return poisson.cg_solve(self, b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular, preconditioner,
                                check_every)

    # -- MAC advection and interpolation (gpudp.ops.mac; kernels in mac.py) ---------------------------------
    def mac_advect_cells(self, q, u, dt, geom, steps, save_states, save_every=1, out=None, states=None):
        from . import mac
        return mac.advect_cells(self, q, u, dt, geom, steps, save_states, save_every, out, states)

    def mac_advect_cells_adjoint(self, g, states, u, dt, geom, steps, need_q, need_u, gu=None):
        from . import mac
        return mac.advect_cells_adjoint(self, g, states, u, dt, geom, steps, need_q, need_u, gu)

    def mac_advect_faces(self, q, u, dt, geom):
        from . import mac
        return mac.advect_faces(self, q, u, dt, geom)

    def mac_advect_faces_adjoint(self, g, q, u, dt, geom, need_q, need_u):
        from . import mac
        return mac.advect_faces_adjoint(self, g, q, u, dt, geom, need_q, need_u)

    def mac_at_centers(self, u, geom):
        from . import mac
        return mac.at_centers(self, u, geom)

    def mac_at_centers_adjoint(self, g, geom):
        from . import mac
        return mac.at_centers_adjoint(self, g, geom)

    def mac_at_faces(self, c, geom):
        from . import mac
        return mac.at_faces(self, c, geom)

    def mac_at_faces_adjoint(self, g, geom):
        from . import mac
        return mac.at_faces_adjoint(self, g, geom)

    # -- multigrid V-cycle (gpudp.ops.multigrid) --------------------------------------------------------------
    def mg_smooth(self, x, r, out, level, omega, first):
        from . import multigrid
        multigrid.smooth(self, x, r, out, level, omega, first)

    def mg_residual(self, x, r, out, level):
        from . import multigrid
        multigrid.residual(self, x, r, out, level)

    def mg_apply(self, x, out, level):
        from . import multigrid
        multigrid.apply(self, x, out, level)

    def mg_restrict(self, fine, out, level, coarse):
        from . import multigrid
        multigrid.restrict(self, fine, out, level, coarse)

    def mg_prolong_add(self, e, x, level, coarse):
        from . import multigrid
        multigrid.prolong_add(self, e, x, level, coarse)

    def mg_coarse_solve(self, r, pinv, out):
        from . import multigrid
        multigrid.coarse_solve(self, r, pinv, out)
