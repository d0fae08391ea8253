"""The squared-error loss (``gpudp.ops.losses``) on small C-contiguous NumPy arrays as compiled calls (the
caller checks that the arrays are such, and of one float32 or float64 dtype and one shape).

For the small arrays a loss often sees (the end state of a small simulation), NumPy's separate subtract,
multiply and sum calls cost several times the arithmetic; one compiled call does all of it. The sum of squares
is NumPy's own for arrays of up to ``BLOCK`` elements (``numpy.add.reduce`` sums such a range with 8
accumulators, combines them pairwise, adds the rest in order and adds the result to 0), so the loss is the
value ``(r * r).sum()`` gives, in the arrays' dtype. Larger arrays take NumPy's path (where its per-call cost
is small next to the arithmetic).
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: The most elements NumPy's pairwise summation adds as one block (its ``PW_BLOCKSIZE``).
BLOCK = 128

# A float32 zero: float32 sums stay float32 (as NumPy's float32 sums do), float64 ones promote it.
_ZERO = np.float32(0.0)


@njit(cache=True, _nrt=False)
def _residual_squares(x, y, r):
    """``r = x − y`` (flat arrays of at most ``BLOCK`` elements) and ``Σ r²`` summed as NumPy sums it."""
    n = x.size
    for i in range(n):
        r[i] = x[i] - y[i]
    if n < 8:
        res = _ZERO
        for i in range(n):
            res += r[i] * r[i]
        return _ZERO + res
    a0 = r[0] * r[0]
    a1 = r[1] * r[1]
    a2 = r[2] * r[2]
    a3 = r[3] * r[3]
    a4 = r[4] * r[4]
    a5 = r[5] * r[5]
    a6 = r[6] * r[6]
    a7 = r[7] * r[7]
    m = n - n % 8
    for i in range(8, m, 8):
        a0 += r[i] * r[i]
        a1 += r[i + 1] * r[i + 1]
        a2 += r[i + 2] * r[i + 2]
        a3 += r[i + 3] * r[i + 3]
        a4 += r[i + 4] * r[i + 4]
        a5 += r[i + 5] * r[i + 5]
        a6 += r[i + 6] * r[i + 6]
        a7 += r[i + 7] * r[i + 7]
    res = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    for i in range(m, n):
        res += r[i] * r[i]
    return _ZERO + res


@njit(cache=True, _nrt=False)
def _scaled(k, r, out):
    """``out = k · r`` (flat arrays; ``k`` a scalar of their dtype, or a Python float for float64)."""
    for i in range(r.size):
        out[i] = k * r[i]


def l2_forward(x, y, scale):
    """``(r, loss)``: the residual ``x − y`` and the 0-d array ``Σ r² · scale`` of the arrays' dtype."""
    r = np.empty(x.shape, x.dtype)  # (np.empty_like runs a Python dispatcher first)
    s = _residual_squares(x.ravel(), y.ravel(), r.ravel())
    loss = np.array(s, x.dtype)
    return r, (loss if scale == 1.0 else np.asarray(loss * scale, x.dtype))


def l2_backward(r, g, scale):
    """``2 · scale · g · r`` (``g`` a 0-d array of ``r``'s dtype), rounded as NumPy's ``(2 * scale) * g * r``."""
    # the factor: Python floats multiply float64 values as NumPy does; float32 ones need NumPy's float32 product
    k = (2 * scale) * (float(g) if r.dtype.char == "d" else g)
    out = np.empty(r.shape, r.dtype)
    _scaled(k, r.ravel(), out.ravel())
    return out
