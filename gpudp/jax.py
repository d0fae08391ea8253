"""JAX interop: gpudp functions as ``jax.custom_vjp`` functions, through host callbacks.

    import jax, jax.numpy as jnp, gpudp
    from gpudp.jax import wrap

    grid = gpudp.Grid(128, spacing=1 / 128)
    loss = wrap(lambda d0, u, target: gpudp.l2_loss(gpudp.advect_upwind(d0, u, 0.002, grid, steps=100), target))
    g = jax.jit(jax.grad(loss, argnums=1))(d0, u, target)

:func:`wrap` is deliberately simple: the forward pass and the vector–Jacobian product are each one
``jax.pure_callback`` that hands host (NumPy) arrays to gpudp's active backend, so it works inside ``jax.jit``,
``jax.grad`` and ``jax.vmap`` (one call per batch item), on the CPU. Costs of that simplicity:

- every call copies its arrays between JAX and gpudp (no zero-copy, also not on GPU backends);
- the backward pass recomputes the forward pass on a gpudp tape (the tape cannot travel through JAX as a
  residual), so a gradient costs two forward rollouts and one adjoint;
- the output shapes are learnt by calling the function once on zeros per input signature (shapes, dtypes
  and the non-array arguments), and only array outputs are allowed.

For training networks with gpudp in the loop, :mod:`gpudp.torch` (zero-copy, one forward per step) is the
full-featured adapter. This module imports JAX; ``import gpudp`` does not.
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from . import arrays
from ._interop import Recording, flatten, is_array_leaf
from .backends import current_backend_name, get_backend, use_backend
from .tape import Tensor

__all__ = ["wrap"]


def _is_input(x):
    return isinstance(x, (jax.Array, np.ndarray))


def _is_float(dtype):
    return np.dtype(dtype).kind == "f"


def wrap(fn):
    """Turn a gpudp function into a JAX-differentiable function (``jax.custom_vjp`` + host callbacks).

    JAX and NumPy arrays anywhere in the positional or keyword arguments (also inside tuples, lists and dicts)
    become gpudp Tensors of the active backend; other arguments (``dt``, a :class:`~gpudp.Grid`, ints) are
    static and must not be traced. ``fn`` must return a gpudp Tensor or array, or a tuple, list or dict of
    them; the wrapped function returns the same structure of JAX arrays. Gradients flow to the floating-point
    array arguments.
    """
    signatures = {}

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        leaves, rebuild = flatten((args, kwargs))
        pos = [i for i, x in enumerate(leaves) if _is_input(x)]
        xs = [jax.numpy.asarray(leaves[i]) for i in pos]
        backend = current_backend_name()
        for i, x in enumerate(leaves):
            if i not in pos and isinstance(x, jax.core.Tracer):
                raise TypeError("gpudp.jax.wrap: a traced non-array argument; pass dt, grid and other "
                                "non-array arguments as static (Python) values")

        def run(host_xs, record):
            """``(recording, input tensors)`` of ``fn`` on host arrays moved to the backend."""
            new = list(leaves)
            inputs = []
            for i, a in zip(pos, host_xs):
                data = get_backend().asarray(np.asarray(a))
                new[i] = Tensor(data, requires_grad=record and _is_float(data.dtype))
                inputs.append(new[i])
            a, k = rebuild(new)
            return Recording(fn, a, k, record), inputs

        def outputs(rec):
            bad = [type(o).__name__ for o in rec.leaves if not is_array_leaf(o)]
            if bad:
                raise TypeError(f"gpudp.jax.wrap: {getattr(fn, '__name__', 'fn')} must return only gpudp "
                                f"Tensors or arrays, got {', '.join(bad)}")
            return [arrays.to_numpy(o.data if isinstance(o, Tensor) else o) for o in rec.leaves]

        # the result's structure, shapes and dtypes, once per signature
        static = tuple(x for i, x in enumerate(leaves) if i not in pos)
        key = (backend, tuple((x.shape, str(x.dtype)) for x in xs), static)
        try:
            sig = signatures.get(key)
        except TypeError:  # an unhashable static argument: no caching
            key, sig = None, None
        if sig is None:
            with use_backend(backend):
                rec, _ = run([np.zeros(x.shape, x.dtype) for x in xs], record=False)
                outs = outputs(rec)
            sig = ([jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outs], rec.rebuild)
            if key is not None:
                signatures[key] = sig
        out_spec, out_rebuild = sig
        float_out = [k for k, s in enumerate(out_spec) if _is_float(s.dtype)]
        float_in = [k for k, x in enumerate(xs) if _is_float(x.dtype)]

        def host_forward(*host_xs):
            with use_backend(backend):
                outs = outputs(run(host_xs, record=False)[0])
            return tuple(np.asarray(o, dtype=s.dtype) for o, s in zip(outs, out_spec))

        def host_vjp(*host):
            host_xs, cts = host[:len(xs)], host[len(xs):]
            with use_backend(backend):
                rec, inputs = run(host_xs, record=True)
                seeds = {k: get_backend().asarray(np.asarray(c)) for k, c in zip(float_out, cts)}
                grads = rec.gradient(seeds, [inputs[k] for k in float_in]) if float_in else []
            res = []
            for k, g in zip(float_in, grads):
                res.append(np.zeros(xs[k].shape, xs[k].dtype) if g is None
                           else np.asarray(arrays.to_numpy(g), dtype=xs[k].dtype))
            return tuple(res)

        @jax.custom_vjp
        def f(*xs_):
            return jax.pure_callback(host_forward, tuple(out_spec), *xs_, vmap_method="sequential")

        def f_fwd(*xs_):
            return f(*xs_), xs_

        def f_bwd(saved, cts):
            spec = tuple(jax.ShapeDtypeStruct(xs[k].shape, xs[k].dtype) for k in float_in)
            g = jax.pure_callback(host_vjp, spec, *saved, *[cts[k] for k in float_out],
                                  vmap_method="sequential")
            out = [np.zeros(x.shape, jax.dtypes.float0) for x in xs]
            for k, gk in zip(float_in, g):
                out[k] = gk
            return tuple(out)

        f.defvjp(f_fwd, f_bwd)
        return out_rebuild(list(f(*xs)))

    return wrapped
