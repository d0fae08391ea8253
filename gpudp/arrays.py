"""Array helpers that work on NumPy, CuPy and Numba device arrays alike.

The tape and the glue operators (tensor arithmetic, losses) use these so that they know nothing about
backends. NumPy and CuPy arrays are handled by their own namespace. Numba device arrays (the ``numba-cuda``
backend's arrays where CuPy is not usable, e.g. under the CUDA simulator) have no arithmetic of their own:
glue operations on them take a documented slow path through host memory. Solver kernels never do.
"""
from __future__ import annotations

import sys

import numpy as np


def _is_cupy(x):
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(x, cp.ndarray)


def _is_numba_device(x):
    # Numba's device arrays; the CUDA simulator's stand-ins have no __cuda_array_interface__
    return (hasattr(x, "copy_to_host") and hasattr(x, "shape") and hasattr(x, "dtype")
            and not isinstance(x, np.ndarray) and not _is_cupy(x))


def is_array(x):
    """True for the array types any backend uses."""
    return isinstance(x, np.ndarray) or _is_cupy(x) or _is_numba_device(x)


def namespace(x):
    """The array module (``numpy`` or ``cupy``) of ``x``; ``None`` for a Numba device array."""
    if isinstance(x, np.ndarray):
        return np
    if _is_cupy(x):
        return sys.modules["cupy"]
    if _is_numba_device(x):
        return None
    raise TypeError(f"expected a NumPy, CuPy or Numba device array, got {type(x).__name__}")


def type_name(x):
    """A user-facing name of an array's type (``numpy.ndarray``, ``cupy.ndarray``, ...)."""
    t = type(x)
    return f"{t.__module__.split('.')[0]}.{t.__name__}"


def to_numpy(x):
    """A NumPy copy (or view, for NumPy input) of any supported array."""
    if isinstance(x, np.ndarray):
        return x
    if _is_cupy(x):
        return x.get()
    if _is_numba_device(x):
        return x.copy_to_host()
    return np.asarray(x)


def apply(fn, *arrays):
    """Compute ``fn(xp, *arrays)`` with the arrays' own namespace.

    For Numba device arrays the computation runs on host copies and the result is moved back to the device:
    a slow path that only glue code on the CuPy-less ``numba-cuda`` backend takes.
    """
    ref = arrays[0]
    if isinstance(ref, np.ndarray):  # the common case, without the search below
        out = fn(np, *arrays)
        if isinstance(out, tuple):
            return tuple(_as_ndarray(o) for o in out)
        return np.asarray(out) if isinstance(out, np.generic) else out
    ref = next(a for a in arrays if is_array(a))
    xp = namespace(ref)
    if xp is not None:
        out = fn(xp, *arrays)
        if xp is np:
            # NumPy turns 0-d results of arithmetic into scalars (np.float64); keep them arrays
            out = tuple(_as_ndarray(o) for o in out) if isinstance(out, tuple) else _as_ndarray(out)
        return out
    from numba import cuda
    host = [to_numpy(a) if is_array(a) else a for a in arrays]
    out = fn(np, *host)
    # np.asarray(order="C") rather than np.ascontiguousarray, which turns 0-d results into shape (1,)
    if isinstance(out, tuple):
        return tuple(cuda.to_device(np.asarray(o, order="C")) for o in out)
    return cuda.to_device(np.asarray(out, order="C"))


def _as_ndarray(x):
    return np.asarray(x) if isinstance(x, np.generic) else x


def add(a, b):
    """``a + b`` as a new array (never in place)."""
    return apply(lambda xp, x, y: x + y, a, b)


def ones_like(a):
    """A new array of ones shaped like ``a``."""
    if isinstance(a, np.ndarray):  # without NumPy's ones(), which is Python code around empty() and copyto()
        out = np.empty(a.shape, a.dtype)
        out.fill(1)
        return out
    return apply(lambda xp, x: xp.ones(x.shape, x.dtype), a)


def zeros_like(a):
    return apply(lambda xp, x: xp.zeros_like(x), a)


def copy(a):
    return apply(lambda xp, x: x.copy(), a)


def nbytes(a):
    return int(a.nbytes) if hasattr(a, "nbytes") else int(a.size * a.dtype.itemsize)
