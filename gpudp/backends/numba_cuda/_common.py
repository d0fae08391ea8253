"""Launch configuration and device helpers shared by the ``numba-cuda`` kernels.

All kernels work on flat (1-D, C-contiguous) device arrays in the canonical layouts of
:mod:`gpudp.backends.base`. Cells are addressed ``cell = (i0 * n1 + i1) * n2 + i2`` in the grid padded to
three axes; a padded axis ``a < 3 - ndim`` has extent 1 and is never touched.
"""
from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np
from numba import cuda, float64

#: True when the kernels run under Numba's CUDA simulator (threads are Python threads there).
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")



def _lock_simulator_shared_arrays():
    """Make the simulator's ``cuda.shared.array`` allocation atomic.

    The simulator runs a block's threads as Python threads and gives every ``cuda.shared.array`` call site
    one NumPy array per launch, created by the first thread that reaches it. In numba-cuda 0.30 that
    check-then-create is not locked: two threads can each create an array, and then they write their partial
    sums to different "shared" memory, so block reductions come out wrong at random (a solve that stalls
    or converges to the wrong answer once in many runs). This replaces the allocation with the same scheme
    under a lock: one array per call site (file and line) per launch, dynamic shared memory (shape 0) as a
    view of the launch's buffer. Idempotent; only installed under the simulator.
    """
    from numba.cuda.simulator import kernelapi

    cls = kernelapi.FakeCUDAShared
    if getattr(cls.array, "_gpudp_locked", False):
        return
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None:
            raise RuntimeError("Array alignment is not supported in cudasim")
        if not isinstance(dtype, np.dtype):  # a Numba type (float64, int32, …) as the kernels pass it
            dtype = kernelapi.numpy_support.as_dtype(dtype) if isinstance(dtype, kernelapi.types.Type) \
                else np.dtype(dtype)
        if shape == 0:
            return np.frombuffer(self._dynshared.data, dtype=dtype, count=self._dynshared_size // dtype.itemsize)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            res = self._allocations.get(key)
            if res is None:
                res = self._allocations[key] = np.empty(shape, dtype)
        return res

    array._gpudp_locked = True
    cls.array = array


if SIMULATOR:
    _lock_simulator_shared_arrays()

#: Threads per block (a power of two: the block reductions halve it). The simulator runs every thread as a
#: Python thread, so there it gets few small blocks (still several, so grid-stride loops and multi-block
#: partial sums are exercised).
TPB = 8 if SIMULATOR else 256

#: Block count cap of the elementwise kernels (they loop over the rest with a grid stride).
MAX_BLOCKS = 4 if SIMULATOR else 1 << 16

#: Cap of the per-system block count of the reduction kernels (bounds the size of the partial sums).
MAX_REDUCE_BLOCKS = 2 if SIMULATOR else 1024


def blocks_for(total):
    """Number of blocks of :data:`TPB` threads for ``total`` work items (at least one)."""
    return max(1, min((total + TPB - 1) // TPB, MAX_BLOCKS))


def reduce_blocks_for(n):
    """Blocks per system of the kernels that also write per-block partial sums."""
    return max(1, min((n + TPB - 1) // TPB, MAX_REDUCE_BLOCKS))


# -- device helpers ----------------------------------------------------------------------------------------

@cuda.jit(device=True)
def sel3(a, x0, x1, x2):
    """``(x0, x1, x2)[a]``."""
    if a == 0:
        return x0
    if a == 1:
        return x1
    return x2


@cuda.jit(device=True)
def cell_stride(a, n1, n2):
    """Distance between neighbouring cells along padded axis ``a``."""
    if a == 0:
        return n1 * n2
    if a == 1:
        return n2
    return 1


@cuda.jit(device=True)
def upper(arr, idx, i, n, s, bc, center, zero):
    """Value of the upper neighbour (``+e_a``) of the cell at ``arr[idx]`` (position ``i`` of ``n`` along an
    axis with stride ``s``), with the ghost rules: periodic wraps, dirichlet 0, neumann repeats ``center``."""
    if i + 1 < n:
        return arr[idx + s]
    if bc == 0:
        return arr[idx - (n - 1) * s]
    if bc == 1:
        return zero
    return center


@cuda.jit(device=True)
def lower(arr, idx, i, n, s, bc, center, zero):
    """Value of the lower neighbour (``−e_a``) of the cell at ``arr[idx]``; ghost rules as :func:`upper`."""
    if i > 0:
        return arr[idx - s]
    if bc == 0:
        return arr[idx + (n - 1) * s]
    if bc == 1:
        return zero
    return center


# -- small utility kernels -----------------------------------------------------------------------------

@cuda.jit
def fill_kernel(x, value):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] = value


@cuda.jit
def max_abs_rows_kernel(x, out, ncol):
    """``out[row] = max |x[row, :]|`` of a flat ``(rows, ncol)`` array, one block per row; NaN counts as
    +inf (the caller only needs to know that a row is not finite)."""
    sh = cuda.shared.array(TPB, dtype=float64)
    tid = cuda.threadIdx.x
    for row in range(cuda.blockIdx.x, out.size, cuda.gridDim.x):
        m = 0.0
        for j in range(tid, ncol, TPB):
            a = abs(x[row * ncol + j])
            if a != a:
                a = math.inf
            if a > m:
                m = a
        sh[tid] = m
        cuda.syncthreads()
        h = TPB // 2
        while h > 0:
            if tid < h and sh[tid + h] > sh[tid]:
                sh[tid] = sh[tid + h]
            cuda.syncthreads()
            h //= 2
        if tid == 0:
            out[row] = sh[0]
        cuda.syncthreads()
