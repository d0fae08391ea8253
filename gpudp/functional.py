"""JAX-style functional forms of the tape: :func:`vjp` and :func:`value_and_grad`.

Inputs and outputs may be tensors or arrays, or tuples, lists and dicts of them (a staggered velocity is a
tuple of face arrays); gradients come back in the structure of the inputs, as in JAX.
"""
from __future__ import annotations

import functools

from . import _pytree, _replay
from .backends import get_backend
from .tape import Tape, Tensor


def _leaf(x):
    return Tensor(x.data if isinstance(x, Tensor) else x, requires_grad=True)


def _leaves(fn, kind, i, x):
    """``x`` (``kind`` ``i`` of ``fn``: an array/Tensor or a container of them) with every leaf a new tensor
    requiring a gradient."""
    try:
        if not isinstance(x, (tuple, list, dict)):  # one array or Tensor
            return Tensor(x._data if isinstance(x, Tensor) else x, True)
        flat, structure = _pytree.flatten(x)
        return _pytree.unflatten(structure, [_leaf(v) for v in flat])
    except TypeError as exc:
        raise TypeError(f"{fn}: {kind} {i} must be arrays or Tensors (or tuples, lists or dicts of them): {exc}") \
            from None


def _raw(x):
    flat, structure = _pytree.flatten(x)
    return _pytree.unflatten(structure, [v.data if isinstance(v, Tensor) else v for v in flat])


def _check_outputs(fn, out):
    flat, structure = _pytree.flatten(out)
    if not flat or not all(isinstance(v, Tensor) for v in flat):
        got = type(out).__name__ if _pytree.is_leaf(structure) else _pytree.describe(structure) + " holding " + \
            ", ".join(sorted({type(v).__name__ for v in flat}))
        raise TypeError(f"{fn}: fn must return a gpudp Tensor computed from its inputs (or a tuple, list or dict "
                        f"of them), got {got}")


def vjp(fn, *inputs):
    """Run ``fn(*inputs)`` on a tape and return ``(output, vjp_fn)``.

    ``output`` is the raw array (or the container of arrays ``fn`` returned: a tuple, list or dict of
    tensors); ``vjp_fn(cotangent)`` takes a cotangent of the output's structure and shapes and returns a tuple
    with one gradient per input, each in the structure of that input. ``vjp_fn`` may be called several times.

    >>> out, pullback = gpudp.vjp(lambda a, b: gpudp.project((a, b), grid), ux, uy)   # doctest: +SKIP
    >>> gx, gy = pullback((cx, cy))                                                    # doctest: +SKIP
    """
    leaves = [_leaves("vjp", "input", i, x) for i, x in enumerate(inputs)]
    with Tape() as tape:
        out = fn(*leaves)
    _check_outputs("vjp", out)

    def vjp_fn(cotangent):
        return tuple(tape.gradient(out, leaves, grad=cotangent, retain=True))

    return _raw(out), vjp_fn


def value_and_grad(fn, argnums=0, has_aux=False, *, replay=False):
    """Return a function computing ``(fn(*args), gradient)`` for a scalar-valued ``fn``.

    ``argnums`` (an int or a tuple of ints) selects the arguments to differentiate; each may be an array or
    a tuple, list or dict of arrays, and its gradient has the same structure. The gradient is that of one
    argument, or a tuple for a tuple ``argnums``. Other arguments are passed through unchanged. With
    ``has_aux=True``, ``fn`` returns ``(loss, aux)`` and the result is ``((loss, aux), gradient)``; tensors
    in ``aux`` come back as arrays.

    ``replay=True`` is the analogue of ``jax.jit``: calls with the same signature (the arguments' types,
    shapes, dtypes and strides, the values of non-array arguments, the active backend) whose tape records the
    same operators, parameters and constants twice in a row are afterwards replayed from that recording: the
    operators' forward and backward kernels run on the new arguments, with the same bits as a recorded call,
    while ``fn``'s Python, the argument checks (which depend only on the signature) and the tape's bookkeeping
    are skipped. Errors that depend on the values (a CFL violation, a solve that fails) still raise. Calls
    that use an operator without ``replayable = True`` (see :class:`gpudp.Operator`) simply run ``fn`` every
    time. As under ``jax.jit``, ``fn`` must compute its result from its arguments with gpudp operators: Python
    decisions on array values, and arrays computed outside gpudp operators, are those of the recorded calls.
    ``wrapped.replay_info()`` says, per signature, whether it is replayed and why not.
    """
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    cache = _replay.Cache() if replay else None

    def call(args, kwargs, trace=None):
        """``(value, gradient)`` from running ``fn`` on a tape (noting every operator call in ``trace``), and
        what a recording needs: the arguments with their leaves, the leaves per argument, the output, aux."""
        args = list(args)
        for i in nums:
            if i >= len(args):
                raise TypeError(f"value_and_grad: argnums {argnums} but only {len(args)} positional arguments")
            args[i] = _leaves("value_and_grad", "argument", i, args[i])
        tape = Tape()
        tape._trace = trace
        with tape:
            out = fn(*args, **kwargs)
        aux = None
        if has_aux:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError(f"value_and_grad: with has_aux=True fn must return a pair (loss, aux), got "
                                f"{type(out).__name__}")
            out, aux = out
        if not isinstance(out, Tensor):
            hint = "; pass has_aux=True if fn returns (loss, aux)" if isinstance(out, (tuple, list)) else ""
            raise TypeError(f"value_and_grad: fn must return a scalar gpudp Tensor, got "
                            f"{type(out).__name__}{hint}")
        if single:
            grad = tape.gradient(out, args[argnums])
        else:
            grad = tuple(tape.gradient(out, [args[i] for i in nums]))
        value = out._data if not has_aux else (out._data, _raw(aux))
        return (value, grad), (args, out, aux)

    def record(args, kwargs, key, state):
        """A call of a signature not (yet) replayed: run ``fn``, and compare its recording with the last."""
        if state is not None and state[0] == "no":
            return call(args, kwargs)[0]
        trace = []
        result, (largs, out, aux) = call(args, kwargs, trace)
        try:
            leaves = []
            for i in nums:
                a = largs[i]
                leaves.append(([a], None) if isinstance(a, Tensor) else _pytree.flatten(a))
            prog = _replay.build(trace, largs, kwargs, leaves, single, out, aux if has_aux else None)
        except _replay.NotReplayable as exc:
            cache.put(key, ("no", f"runs fn every time: {exc}"))
            return result
        if state is not None and state[1].same_as(prog):
            cache.put(key, ("replay", prog))
        else:
            misses = 0 if state is None else state[2] + 1
            if misses >= _replay.MAX_MISMATCHES:
                cache.put(key, ("no", "runs fn every time: its calls recorded different operators, parameters or "
                                      "constants"))
            else:
                cache.put(key, ("candidate", prog, misses))
        return result

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if cache is not None and _replay.active_tape() is None:
            key = _replay.signature(get_backend(), args, kwargs)
            if key is not None:
                state = cache.get(key)
                if state is not None and state[0] == "replay":
                    return state[1].run(args, kwargs, has_aux)
                return record(args, kwargs, key, state)
        return call(args, kwargs)[0]

    if cache is not None:
        wrapped.replay_info = cache.info
    return wrapped
