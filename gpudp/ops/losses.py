"""Losses: ``l2_loss(x, target) = Σ (x − target)²`` (the seed's loss) and ``mse`` (its mean)."""
from __future__ import annotations

from .. import arrays
from ..tape import Operator, Tensor


class L2Loss(Operator):
    """``Σ (x − y)²``; gradients ``2 (x − y)`` and ``−2 (x − y)``. Saves only the residual."""

    @staticmethod
    def forward(ctx, x, y, *, scale):
        r = arrays.apply(lambda xp, a, b: a - b, x, y)
        ctx.save_for_backward(r)
        ctx.scale = scale
        return arrays.apply(lambda xp, a: xp.asarray((a * a).sum() * scale, dtype=a.dtype), r)

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved
        s = ctx.scale
        gx = arrays.apply(lambda xp, a, b: (2 * s) * b * a, r, g)
        nx, ny = ctx.needs_input_grad
        return (gx if nx else None), (arrays.apply(lambda xp, a: -a, gx) if ny else None)


def _check(fn, x, target):
    a = x.data if isinstance(x, Tensor) else x
    b = target.data if isinstance(target, Tensor) else target
    for name, v in (("x", a), ("target", b)):
        if not arrays.is_array(v):
            raise TypeError(f"{fn}: {name} must be a Tensor or array, got {type(v).__name__}")
    if tuple(a.shape) != tuple(b.shape):
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
