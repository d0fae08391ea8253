"""Input checks shared by the operators. Messages name the function, the argument, what was given and
what was expected."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import arrays
from ..errors import BackendError, ShapeError
from ..grid import Grid
from ..tape import Tensor

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def raw(x):
    return x.data if isinstance(x, Tensor) else x


def check_array(fn, name, x, backend):
    """``x`` (a Tensor or array) must be a float32/float64 array of ``backend``."""
    a = raw(x)
    if not arrays.is_array(a):
        raise TypeError(f"{fn}: {name} must be a gpudp.Tensor or a {backend.array_type_name()}, got "
                        f"{type(a).__name__}; convert with gpudp.asarray({name}) or gpudp.tensor({name})")
    if not backend.is_own(a):
        raise BackendError(
            f"{fn}: {name} is a {arrays.type_name(a)} but the active backend {backend.name!r} expects "
            f"{backend.array_type_name()}; move it explicitly with gpudp.asarray({name}) / gpudp.tensor({name}), "
            f"or select the matching backend with gpudp.use_backend(...)")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}; expected float32 or float64 "
                        f"(convert with .astype(numpy.float64))")
    return a


def check_same_dtype(fn, **named):
    items = list(named.items())
    n0, a0 = items[0]
    for n, a in items[1:]:
        if a.dtype != a0.dtype:
            raise TypeError(f"{fn}: dtype mismatch: {n0} is {a0.dtype} but {n} is {a.dtype}; all arrays of one "
                            f"call must share one dtype")


def check_grid(fn, grid):
    if not isinstance(grid, Grid):
        raise TypeError(f"{fn}: grid must be a gpudp.Grid, got {type(grid).__name__}")


def check_scalar(fn, name, value, positive=False, nonnegative=False):
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        if not (hasattr(value, "shape") and value.shape == () and np.dtype(value.dtype).kind == "f"):
            raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{fn}: {name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{fn}: {name} must be > 0, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{fn}: {name} must be >= 0, got {v}")
    return v


def check_int(fn, name, value, minimum):
    if type(value) is int and value >= minimum:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def padded(grid):
    """``(shape3, ndim, bc3)``: the grid padded with leading unit axes to three dimensions."""
    return grid_facts(grid)[0]


def grid_facts(grid):
    """``(padded(grid), grid.size, spacing)`` with ``spacing`` a read-only float64 NumPy array, computed once
    per grid and kept on it (a grid is immutable)."""
    try:
        facts = grid._derived
    except AttributeError:  # a grid unpickled from a version without the slot
        facts = None
    if facts is None:
        pad = 3 - grid.ndim
        spacing = np.asarray(grid.spacing, np.float64)
        spacing.flags.writeable = False
        facts = (((1,) * pad + grid.shape, grid.ndim, (0,) * pad + grid.boundary_codes), grid.size, spacing)
        grid._derived = facts
    return facts


def shape_error(fn, name, got, expected):
    return ShapeError(f"{fn}: {name} has shape {tuple(got)}; expected {expected}")
