"""Losses: ``l2_loss(x, target) = Σ (x − target)²`` (the seed's loss) and ``mse`` (its mean)."""
from __future__ import annotations

import numpy as np

from .. import arrays
from ..tape import Operator, Tensor


class L2Loss(Operator):
    """``Σ (x − y)²``; gradients ``2 (x − y)`` and ``−2 (x − y)``. Saves only the residual."""

    replayable = True

    @staticmethod
    def forward(ctx, x, y, *, scale):
        compiled = _compiled(x, y)
        if compiled is not None:
            r, loss = compiled.l2_forward(x, y, scale)
        else:
            r = arrays.apply(lambda xp, a, b: a - b, x, y)
            loss = arrays.apply(lambda xp, a: xp.asarray((a * a).sum() * scale, dtype=a.dtype), r)
        ctx.saved_arrays = (r,)
        ctx.params = (scale, compiled)
        return loss

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved
        s, compiled = ctx.params
        # the compiled path's residual is a small contiguous array; a 0-d NumPy g is contiguous
        if compiled is not None and type(g) is np.ndarray and g.dtype == r.dtype:
            gx = compiled.l2_backward(r, g, s)
        else:
            gx = arrays.apply(lambda xp, a, b: (2 * s) * b * a, r, g)
        nx, ny = ctx.needs_input_grad
        return (gx if nx else None), (arrays.apply(lambda xp, a: -a, gx) if ny else None)


_cpu_losses = None


def _compiled(a, b):
    """The compiled kernels of ``gpudp.backends.cpu.losses`` when they apply to ``a`` and ``b`` (small C-contiguous
    float32/float64 NumPy arrays), else None: other arrays take the array-namespace path (and never import Numba)."""
    global _cpu_losses
    if type(a) is not np.ndarray or type(b) is not np.ndarray or a.dtype.char not in "fd":
        return None
    if _cpu_losses is None:
        from ..backends.cpu import losses
        _cpu_losses = losses
    if a.size > _cpu_losses.BLOCK or not (a.flags.c_contiguous and b.flags.c_contiguous):
        return None
    return _cpu_losses


def _check(fn, x, target):
    a = x._data if isinstance(x, Tensor) else x
    b = target._data if isinstance(target, Tensor) else target
    if not ((type(a) is np.ndarray or arrays.is_array(a)) and (type(b) is np.ndarray or arrays.is_array(b))):
        name, v = ("x", a) if not arrays.is_array(a) else ("target", b)
        raise TypeError(f"{fn}: {name} must be a Tensor or array, got {type(v).__name__}")
    if a.shape != b.shape and tuple(a.shape) != tuple(b.shape):
        from ..errors import ShapeError
        raise ShapeError(f"{fn}: x has shape {tuple(a.shape)} but target has shape {tuple(b.shape)}; they must match")
    if a.dtype != b.dtype:
        raise TypeError(f"{fn}: dtype mismatch: x is {a.dtype} but target is {b.dtype}")
    return a


def l2_loss(x, target):
    """``Σ (x − target)²`` over all elements, a 0-d result."""
    _check("l2_loss", x, target)
    return L2Loss.apply(x, target, scale=1.0)


def mse(x, target):
    """Mean squared error ``Σ (x − target)² / x.size``."""
    a = _check("mse", x, target)
    return L2Loss.apply(x, target, scale=1.0 / a.size)
