"""Tensor arithmetic for composing losses: ``+ - * /``, negation, powers, sums, means, indexing, reshape.

These are glue operators built on the arrays' own namespace (NumPy or CuPy), with NumPy broadcasting; the
adjoint of a broadcast sums the gradient back to the input's shape.
"""
from __future__ import annotations

import numbers

from .. import arrays
from ..tape import Operator, Tensor


def _check_operand(x, op):
    if isinstance(x, (Tensor, numbers.Number)) or arrays.is_array(x):
        return
    raise TypeError(f"gpudp {op}: operands must be Tensors, arrays or Python numbers, got {type(x).__name__}")


def _unbroadcast(g, shape):
    """Sum ``g`` down to ``shape`` (the adjoint of NumPy broadcasting)."""
    if g is None or tuple(g.shape) == tuple(shape):
        return g

    def f(xp, a):
        lead = a.ndim - len(shape)
        a = a.sum(axis=tuple(range(lead))) if lead else a
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
        return a.sum(axis=axes, keepdims=True) if axes else a
    return arrays.apply(f, g)


def _shape(x):
    return tuple(x.shape) if arrays.is_array(x) else ()


class Add(Operator):
    replayable = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return arrays.apply(lambda xp, x, y: x + y, a, b) if arrays.is_array(a) else \
            arrays.apply(lambda xp, y, x: x + y, b, a)

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        return (_unbroadcast(g, ctx.shapes[0]) if na else None,
                _unbroadcast(g, ctx.shapes[1]) if nb else None)


class Mul(Operator):
    replayable = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None, b if ctx.needs_input_grad[0] else None)
        ctx.shapes = (_shape(a), _shape(b))
        return arrays.apply(lambda xp, x, y: x * y, a, b) if arrays.is_array(a) else \
            arrays.apply(lambda xp, y, x: x * y, b, a)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        ga = _unbroadcast(arrays.apply(lambda xp, x, y: x * y, g, b), ctx.shapes[0]) if na else None
        gb = _unbroadcast(arrays.apply(lambda xp, x, y: x * y, g, a), ctx.shapes[1]) if nb else None
        return ga, gb


class Div(Operator):
    replayable = True

    @staticmethod
    def forward(ctx, a, b):
        out = arrays.apply(lambda xp, x, y: x / y, a, b) if arrays.is_array(a) else \
            arrays.apply(lambda xp, y, x: x / y, b, a)
        ctx.save_for_backward(b, out if ctx.needs_input_grad[1] else None)
        ctx.shapes = (_shape(a), _shape(b))
        return out

    @staticmethod
    def backward(ctx, g):
        b, out = ctx.saved
        na, nb = ctx.needs_input_grad
        ga = _unbroadcast(arrays.apply(lambda xp, x, y: x / y, g, b), ctx.shapes[0]) if na else None
        gb = _unbroadcast(arrays.apply(lambda xp, x, o, y: -x * o / y, g, out, b), ctx.shapes[1]) if nb else None
        return ga, gb


class Neg(Operator):
    replayable = True

    @staticmethod
    def forward(ctx, a):
        return arrays.apply(lambda xp, x: -x, a)

    @staticmethod
    def backward(ctx, g):
        return (arrays.apply(lambda xp, x: -x, g),)


class Power(Operator):
    replayable = True

    @staticmethod
    def forward(ctx, a, *, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return arrays.apply(lambda xp, x: x ** exponent, a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        p = ctx.exponent
        return (arrays.apply(lambda xp, x, y: x * p * y ** (p - 1), g, a),)


class Sum(Operator):
    replayable = True

    @staticmethod
    def forward(ctx, a, *, axis=None):
        ctx.shape, ctx.axis = tuple(a.shape), axis
        return arrays.apply(lambda xp, x: xp.asarray(x.sum(axis=axis)), a)

    @staticmethod
    def backward(ctx, g):
        shape, axis = ctx.shape, ctx.axis

        def f(xp, x):
            if axis is not None:
                x = xp.expand_dims(x, axis)
            return xp.broadcast_to(x, shape).copy()
        return (arrays.apply(f, g),)


class GetItem(Operator):
    replayable = True

    @staticmethod
    def forward(ctx, a, *, index):
        ctx.shape, ctx.index = tuple(a.shape), index
        out = arrays.apply(lambda xp, x: x[index], a)
        return arrays.apply(lambda xp, x: xp.array(x, copy=True), out)

    @staticmethod
    def backward(ctx, g):
        shape, index = ctx.shape, ctx.index

        def f(xp, x):
            z = xp.zeros(shape, x.dtype)
            if isinstance(index, tuple) or not hasattr(index, "dtype") or index.dtype != bool:
                # integer or slice indices may repeat: accumulate
                xp.add.at(z, index, x) if xp.__name__ == "numpy" else _cupy_add_at(xp, z, index, x)
            else:
                z[index] = x
            return z
        return (arrays.apply(f, g),)


def _cupy_add_at(xp, z, index, x):
    import cupyx
    cupyx.scatter_add(z, index, x)


class Reshape(Operator):
    replayable = True

    @staticmethod
    def forward(ctx, a, *, shape):
        ctx.shape = tuple(a.shape)
        return arrays.apply(lambda xp, x: x.reshape(shape), a)

    @staticmethod
    def backward(ctx, g):
        shape = ctx.shape
        return (arrays.apply(lambda xp, x: x.reshape(shape), g),)


def _unwrap_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def add(a, b):
    _check_operand(a, "+"), _check_operand(b, "+")
    return Add.apply(a, b)


def sub(a, b):
    _check_operand(a, "-"), _check_operand(b, "-")
    return Add.apply(a, neg(b) if not isinstance(b, numbers.Number) else -b)


def mul(a, b):
    _check_operand(a, "*"), _check_operand(b, "*")
    return Mul.apply(a, b)


def div(a, b):
    _check_operand(a, "/"), _check_operand(b, "/")
    return Div.apply(a, b)


def neg(a):
    return Neg.apply(a)


def power(a, exponent):
    if not isinstance(exponent, numbers.Real):
        raise TypeError(f"gpudp **: the exponent must be a real Python number, got {type(exponent).__name__}")
    return Power.apply(a, exponent=exponent)


def sum(a, axis=None):
    return Sum.apply(a, axis=axis)


def mean(a, axis=None):
    shape = tuple(a.shape)
    import math
    count = math.prod(shape) if axis is None else math.prod(
        shape[i] for i in ((axis,) if isinstance(axis, int) else axis))
    return mul(Sum.apply(a, axis=axis), 1.0 / count)


def getitem(a, index):
    return GetItem.apply(a, index=_unwrap_index(index))


def reshape(a, shape):
    return Reshape.apply(a, shape=tuple(shape))
