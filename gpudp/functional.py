"""JAX-style functional forms of the tape: :func:`vjp` and :func:`value_and_grad`."""
from __future__ import annotations

import functools

from .tape import Tape, Tensor


def _leaf(x):
    return Tensor(x.data if isinstance(x, Tensor) else x, requires_grad=True)


def vjp(fn, *inputs):
    """Run ``fn(*inputs)`` on a tape and return ``(output, vjp_fn)``.

    ``output`` is the raw array; ``vjp_fn(cotangent)`` returns a tuple with one gradient array per input
    (``cotangent`` has the output's shape). ``vjp_fn`` may be called several times."""
    leaves = [_leaf(x) for x in inputs]
    with Tape() as tape:
        out = fn(*leaves)
    if not isinstance(out, Tensor):
        raise TypeError(f"vjp: fn must return a gpudp Tensor computed from its inputs, got {type(out).__name__}")

    def vjp_fn(cotangent):
        return tuple(tape.gradient(out, leaves, grad=cotangent, retain=True))

    return out.data, vjp_fn


def value_and_grad(fn, argnums=0):
    """Return a function computing ``(fn(*args), gradient)`` for a scalar-valued ``fn``.

    ``argnums`` (an int or a tuple of ints) selects the arguments to differentiate; the gradient is one
    array, or a tuple for a tuple ``argnums``. Other arguments are passed through unchanged."""
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        args = list(args)
        for i in nums:
            if i >= len(args):
                raise TypeError(f"value_and_grad: argnums {argnums} but only {len(args)} positional arguments")
            args[i] = _leaf(args[i])
        with Tape() as tape:
            out = fn(*args, **kwargs)
        if not isinstance(out, Tensor):
            raise TypeError(f"value_and_grad: fn must return a scalar gpudp Tensor, got {type(out).__name__}")
        grads = tape.gradient(out, [args[i] for i in nums])
        return out.data, (grads[0] if single else tuple(grads))

    return wrapped
