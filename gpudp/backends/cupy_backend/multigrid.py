"""Launch wrappers of the multigrid V-cycle's kernels (``kernels/multigrid.cu``; formulas in its header and in
:mod:`gpudp.backends.mg_stencils`).

Arrays are ``(B, N)`` batches of one level (``gpudp.ops.multigrid.Level``: shape, boundary codes, ``off``,
coarsen flags, coupling face arrays and ``1/D`` on the device, in the batch's dtype). Outputs are written in
place, so they must be C-contiguous arrays of the right shape and dtype (a ``ValueError`` / ``TypeError`` says
what was given otherwise). Each call is one kernel launch on the current stream (the coarse solve one matrix
product); nothing is read back to the host.
"""
from __future__ import annotations

import numpy as np

from ._module import grid_1d

_FILE = "multigrid.cu"


def _level_args(level):
    """``(n0, n1, n2, b0, b1, b2, off)`` as the kernels' int32 parameters."""
    i32 = np.int32
    return (*(i32(n) for n in level.shape3), *(i32(b) for b in level.bc), i32(level.off))


def _transfer_args(B, fine, coarse):
    """``(B, nf0, nf1, nf2, nc0, nc1, nc2, b0, b1, b2, k0, k1, k2, off)`` for the transfer kernels."""
    i32 = np.int32
    return (i32(B), *(i32(n) for n in fine.shape3), *(i32(n) for n in coarse.shape3), *(i32(b) for b in fine.bc),
            *(i32(k) for k in fine.coarsen), i32(fine.off))


def _check(what, level, dtype, arrays, outputs=(), B=None):
    """Every array of ``arrays`` (name → array) is ``(B, level.size)`` of ``dtype`` (``B`` that of the first
    one unless given); the ``outputs`` among them are C-contiguous. Returns ``B``."""
    for name, a in arrays.items():
        shape = tuple(a.shape)
        if len(shape) != 2 or shape[1] != level.size or (B is not None and shape[0] != B):
            want = f"({'B' if B is None else B}, {level.size})"
            raise ValueError(f"{what}: {name} has shape {shape}; expected {want} for a level of shape "
                             f"{tuple(level.shape3)}")
        B = shape[0]
        if a.dtype != dtype:
            raise TypeError(f"{what}: {name} has dtype {a.dtype}; expected {dtype} (the level's dtype)")
        if name in outputs and not a.flags.c_contiguous:
            raise ValueError(f"{what}: {name} is written in place and must be C-contiguous")
    return B


def _level_dtype(what, level):
    dtype = np.dtype(level.dinv.dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{what}: the level's arrays have dtype {dtype}; expected float32 or float64")
    for a, w in enumerate(level.w):
        if np.dtype(w.dtype) != dtype:
            raise TypeError(f"{what}: the level's couplings of axis {a} have dtype {w.dtype}; expected {dtype} "
                            f"(the dtype of its inverse diagonal)")
    return dtype


def _ops(be, kernel, x, r, out, level, omega):
    """One launch of ``mg_apply`` / ``mg_residual`` / ``mg_smooth`` / ``mg_smooth_first`` (shared signature;
    ``x`` or ``r`` may be ``None`` where the kernel does not read it)."""
    what = f"cupy {kernel}"
    dtype = _level_dtype(what, level)
    cp = be.cp
    arrays = {}
    if x is not None:
        arrays["x"] = x = cp.ascontiguousarray(x)
    if r is not None:
        arrays["r"] = r = cp.ascontiguousarray(r)
    arrays["out"] = out
    B = _check(what, level, dtype, arrays, outputs=("out",))
    x = r if x is None else x          # a stand-in pointer the kernel never reads
    r = x if r is None else r
    w0, w1, w2 = (cp.ascontiguousarray(w) for w in level.w)
    T = dtype.type
    be.launch(_FILE, kernel, dtype, grid_1d(out.size),
              (x, r, out, w0, w1, w2, level.dinv, T(omega), np.int32(B), *_level_args(level)))


def smooth(be, x, r, out, level, omega, first):
    """``out = x + ω D⁻¹ (r − A x)``; ``first``: ``out = ω D⁻¹ r`` (``x`` unused, may be ``None``)."""
    if first:
        _ops(be, "mg_smooth_first", None, r, out, level, omega)
    else:
        _ops(be, "mg_smooth", x, r, out, level, omega)


def residual(be, x, r, out, level):
    """``out = r − A x``."""
    _ops(be, "mg_residual", x, r, out, level, 0.0)


def apply(be, x, out, level):
    """``out = A x``."""
    _ops(be, "mg_apply", x, None, out, level, 0.0)


def restrict(be, fine, out, level, coarse):
    """``out = R fine`` (``fine`` on ``level``, ``out`` on the next coarser level ``coarse``)."""
    what = "cupy mg_restrict"
    dtype = _level_dtype(what, level)
    fine = be.cp.ascontiguousarray(fine)
    B = _check(what, level, dtype, {"fine": fine})
    _check(what, coarse, dtype, {"out": out}, outputs=("out",), B=B)
    be.launch(_FILE, "mg_restrict", dtype, grid_1d(out.size), (fine, out, *_transfer_args(B, level, coarse)))


def prolong_add(be, e, x, level, coarse):
    """``x += P e`` in place (``x`` on ``level``, ``e`` on the next coarser level ``coarse``)."""
    what = "cupy mg_prolong_add"
    dtype = _level_dtype(what, level)
    e = be.cp.ascontiguousarray(e)
    B = _check(what, level, dtype, {"x": x}, outputs=("x",))
    _check(what, coarse, dtype, {"e": e}, B=B)
    be.launch(_FILE, "mg_prolong_add", dtype, grid_1d(x.size), (e, x, *_transfer_args(B, level, coarse)))


def coarse_solve(be, r, pinv, out):
    """``out = r M`` for the coarsest level's symmetric pseudo-inverse ``M`` (one matrix product of the
    backend's array module: cuBLAS on CuPy)."""
    be.xp.matmul(r, pinv, out=out)
    be.launches["mg_coarse_solve"] += 1
