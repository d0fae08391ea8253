"""Finite-difference gradient check, the package's own test utility (like ``torch.autograd.gradcheck``)."""
from __future__ import annotations

import numpy as np

from . import arrays
from .errors import GradcheckError
from .functional import vjp
from .tape import Tensor


def gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, max_elements=64, n_directions=8, seed=0,
              raise_exception=True):
    """Compare the tape's gradient of ``fn`` with central finite differences in float64.

    ``fn(*inputs)`` may return a tensor of any shape; it is reduced to a scalar with a fixed random weight
    ``w`` (``L = ⟨w, fn(x)⟩``) and ``∂L/∂x`` from the tape is compared with ``(L(x + εv) − L(x − εv)) / 2ε``:
    element by element for inputs with at most ``max_elements`` entries, along ``n_directions`` random
    directions ``v`` otherwise. A check passes when ``|tape − fd| ≤ atol + rtol·|fd|``.

    ``inputs`` are float64 arrays or tensors of the active backend. Returns True, or raises
    :class:`gpudp.GradcheckError` (returns False when ``raise_exception=False``)."""
    xs = [x.data if isinstance(x, Tensor) else x for x in inputs]
    for i, x in enumerate(xs):
        if not arrays.is_array(x) or x.dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} must be a float64 array or Tensor, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
    rng = np.random.default_rng(seed)
    out, vjp_fn = vjp(fn, *xs)
    w_host = rng.standard_normal(tuple(out.shape))
    w = arrays.apply(lambda xp, o: xp.asarray(w_host, dtype=o.dtype), out)
    grads = [arrays.to_numpy(g) for g in vjp_fn(w)]

    def scalar(perturbed):
        y = fn(*[Tensor(p) for p in perturbed])
        return float(np.sum(arrays.to_numpy(y.data if isinstance(y, Tensor) else y) * w_host))

    def shifted(i, v_host, sign):
        def f(xp, x):
            return x + xp.asarray(sign * eps * v_host)
        return [arrays.apply(f, x) if j == i else x for j, x in enumerate(xs)]

    failures = []
    for i, x in enumerate(xs):
        n = int(x.size)
        if n <= max_elements:
            directions = (np.eye(n)[k].reshape(x.shape) for k in range(n))
            labels = [f"element {np.unravel_index(k, x.shape)}" for k in range(n)]
        else:
            directions = (rng.standard_normal(x.shape) for _ in range(n_directions))
            labels = [f"random direction {k}" for k in range(n_directions)]
        for label, v in zip(labels, directions):
            fd = (scalar(shifted(i, v, +1)) - scalar(shifted(i, v, -1))) / (2 * eps)
            ana = float(np.sum(grads[i] * v))
            if not abs(ana - fd) <= atol + rtol * abs(fd):
                failures.append(f"input {i}, {label}: tape {ana:.10g} vs finite differences {fd:.10g}")
    if failures:
        if raise_exception:
            more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
            raise GradcheckError("gradcheck failed:\n  " + "\n  ".join(failures[:5]) + more)
        return False
    return True
