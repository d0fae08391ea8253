"""gpudp: differentiable physics on GPUs.

Numerical solvers as differentiable operators: every solver step is one monolithic operator with a
hand-written forward kernel and a hand-written adjoint kernel, chained by a small reverse-mode tape.
Backends: ``cupy`` (CUDA C kernels), ``numba-cuda`` (Numba CUDA kernels) and ``cpu`` (Numba JIT).
"""
from .backends import (BackendInfo, available_backends, current_backend_name, get_backend, set_backend,
                       use_backend)
from .checkpointing import RolloutInfo, checkpoint, revolve_counts, rollout
from .errors import (BackendError, GpudpError, GradcheckError, GridError, ProblemError, ShapeError, SolveError,
                     StabilityError, TapeError)
from .functional import value_and_grad, vjp
from .gradcheck import gradcheck
from .grid import Grid
from .ops.advection import advect_upwind
from .ops.difference import divergence, laplace, spatial_gradient
from .ops.losses import l2_loss, mse
from .ops.mac import advect_mac, at_centers, at_faces
from .ops.poisson import SolveInfo, last_solve_info, poisson_solve
from .ops.projection import project
from .tape import Operator, Tape, Tensor, tensor

__version__ = "0.1.0"


def asarray(x, dtype=None):
    """``x`` as an array of the active backend (copied from host or another backend when needed)."""
    if isinstance(x, Tensor):
        x = x.data
    return get_backend().asarray(x, dtype=dtype)


def to_numpy(x):
    """A NumPy array with the values of ``x`` (a Tensor or any backend's array)."""
    from .arrays import to_numpy as _to_numpy
    return _to_numpy(x.data if isinstance(x, Tensor) else x)


__all__ = [
    "BackendError", "BackendInfo", "GpudpError", "GradcheckError", "Grid", "GridError", "Operator", "ProblemError",
    "ShapeError", "RolloutInfo", "SolveError", "SolveInfo", "StabilityError", "Tape", "TapeError", "Tensor", "advect_mac", "advect_upwind",
    "asarray", "at_centers", "at_faces", "available_backends", "checkpoint", "current_backend_name", "divergence", "get_backend",
    "gradcheck", "l2_loss", "laplace", "last_solve_info", "mse", "poisson_solve", "project", "revolve_counts", "rollout", "set_backend",
    "spatial_gradient", "tensor", "to_numpy", "use_backend", "value_and_grad", "vjp",
]
