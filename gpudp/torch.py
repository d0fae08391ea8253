"""PyTorch interop: gpudp functions as ``torch.autograd.Function``\\ s.

    import torch, gpudp
    from gpudp.torch import wrap

    grid = gpudp.Grid(128, spacing=1 / 128)
    rollout = wrap(lambda d, u: gpudp.advect_upwind(d, u, 0.002, grid, steps=100))
    d_T = rollout(d0, u)            # torch tensors in, torch tensors out
    loss = ((d_T - target) ** 2).sum()
    loss.backward()                 # u.grad from gpudp's hand-written adjoint kernels

:func:`wrap` turns any function of gpudp tensors (one operator, or a user function that chains several, such as
a ``T``-step rollout with its loss) into a function of ``torch.Tensor``\\ s. Its forward pass converts the torch
inputs to arrays of the active gpudp backend, runs the function on a gpudp :class:`~gpudp.Tape` and converts
the results back; its backward pass seeds that tape with PyTorch's output gradients and runs gpudp's reverse
sweep once for all outputs. Gradients flow torch → gpudp → torch, so a network and a solver train together.

Conversions share memory, nothing is copied when the layout allows it:

- ``cpu`` backend: CPU tensors through NumPy (``Tensor.numpy()`` / ``torch.from_numpy``);
- ``cupy`` backend, and ``numba-cuda`` where CuPy is usable: CUDA tensors through DLPack (``cupy.from_dlpack``
  / ``torch.from_dlpack``). CuPy's current stream is set to PyTorch's current CUDA stream for the call, and
  both backends queue their kernels on CuPy's current stream: gpudp's work is ordered with PyTorch's without
  any synchronisation or host round trip;
- ``numba-cuda`` without CuPy: CUDA tensors through ``__cuda_array_interface__``; the call waits for
  PyTorch's stream before and for the device after.

A tensor on the wrong device for the active backend (a CUDA tensor while the backend is ``cpu``, or the
reverse) raises :class:`gpudp.BackendError`. This module imports PyTorch; ``import gpudp`` does not.
"""
from __future__ import annotations

import contextlib
import functools
import sys

import numpy as np
import torch

from . import arrays
from .backends import get_backend, use_backend
from .errors import BackendError
from ._interop import Recording, flatten, is_array_leaf
from .tape import Tensor

__all__ = ["wrap", "from_torch", "to_torch"]


# -- conversions ---------------------------------------------------------------------------------------------

def _is_gpu(backend):
    return backend.name != "cpu"


def _uses_cupy(backend):
    cp = sys.modules.get("cupy")
    return cp is not None and getattr(backend, "xp", None) is cp


def _device_error(what, t, backend):
    if _is_gpu(backend):
        fix = "move it with .cuda(), or select the cpu backend with gpudp.use_backend('cpu')"
        want = "CUDA tensors"
    else:
        fix = "move it with .cpu(), or select a GPU backend with gpudp.use_backend('cupy')"
        want = "CPU tensors"
    return BackendError(f"gpudp.torch: {what} is on device {t.device} but the active gpudp backend "
                        f"{backend.name!r} takes {want}; {fix}")


def from_torch(t, backend=None, what="tensor"):
    """An array of ``backend`` (default: the active one) sharing memory with the torch tensor ``t``.

    The tensor is detached; a non-contiguous tensor is copied to a contiguous one first. Raises
    :class:`gpudp.BackendError` when ``t`` is on the wrong device for the backend."""
    backend = backend or get_backend()
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"gpudp.torch.from_torch: expected a torch.Tensor, got {type(t).__name__}")
    t = t.detach()
    if t.is_cuda != _is_gpu(backend) or t.device.type not in ("cpu", "cuda"):
        raise _device_error(what, t, backend)
    if t.dtype in (torch.bfloat16, torch.complex32) or t.is_quantized or t.layout != torch.strided:
        raise TypeError(f"gpudp.torch: {what} has dtype {t.dtype} and layout {t.layout}; gpudp takes dense "
                        f"float32/float64 tensors (convert with .to(torch.float32))")
    t = t.resolve_conj().resolve_neg().contiguous()
    if not _is_gpu(backend):
        return t.numpy()
    if _uses_cupy(backend):
        import cupy
        if t.device.index != cupy.cuda.runtime.getDevice():
            raise BackendError(f"gpudp.torch: {what} is on {t.device} but CuPy's current device is "
                               f"{cupy.cuda.runtime.getDevice()}; use one device for both")
        return cupy.from_dlpack(t)
    from numba import cuda
    return cuda.as_cuda_array(t)


def to_torch(a, device=None):
    """A torch tensor sharing memory with the backend array ``a`` (NumPy, CuPy or Numba device array)."""
    if isinstance(a, Tensor):
        a = a.data
    if isinstance(a, (np.ndarray, np.generic)):
        a = np.asarray(a)
        if not a.flags.writeable or any(s < 0 for s in a.strides):
            a = a.copy()  # torch.from_numpy takes neither read-only nor negatively strided arrays
        return torch.from_numpy(a)
    if arrays.namespace(a) is not None:  # CuPy
        return torch.from_dlpack(a)
    return torch.as_tensor(a, device=device if device is not None else "cuda")


def _shares_memory(a, others):
    xp = arrays.namespace(a)
    if xp is None:  # Numba device array: compare the pointer ranges
        lo = a.__cuda_array_interface__["data"][0]
        hi = lo + arrays.nbytes(a)
        for b in others:
            blo = b.__cuda_array_interface__["data"][0]
            if blo < hi and lo < blo + arrays.nbytes(b):
                return True
        return False
    return any(arrays.namespace(b) is xp and xp.may_share_memory(a, b) for b in others)


@contextlib.contextmanager
def _on_torch_stream(backend, device):
    """Run gpudp's kernels in order with PyTorch's work on ``device``.

    Backends with CuPy arrays launch on CuPy's current stream, so it is pointed at PyTorch's current stream.
    Numba device arrays have no such stream: wait for PyTorch's stream first and for the device afterwards."""
    if not _is_gpu(backend) or device is None:
        yield
        return
    stream = torch.cuda.current_stream(device)
    if _uses_cupy(backend):
        import cupy
        with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream, device.index):
            yield
    else:
        stream.synchronize()
        yield
        backend.synchronize()


# -- the autograd.Function -------------------------------------------------------------------------------------

def _common_device(tensors, backend):
    device = None
    for i, t in enumerate(tensors):
        if t.is_cuda != _is_gpu(backend) or t.device.type not in ("cpu", "cuda"):
            raise _device_error(f"tensor argument {i}", t, backend)
        if t.is_cuda:
            if device is not None and t.device != device:
                raise BackendError(f"gpudp.torch: tensor arguments are on {device} and {t.device}; "
                                   f"gpudp runs one call on one device")
            device = t.device
    if device is None and _is_gpu(backend):
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class _GpudpFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, call, *tensors):
        fn, leaves, rebuild, tensor_pos = call["fn"], call["leaves"], call["rebuild"], call["tensor_pos"]
        backend = get_backend()
        device = _common_device(tensors, backend)
        needs = ctx.needs_input_grad[1:]
        ctx.set_materialize_grads(False)
        with _on_torch_stream(backend, device):
            inputs = []
            for i, (t, need) in enumerate(zip(tensors, needs)):
                a = from_torch(t, backend, what=f"tensor argument {i}")
                inputs.append(Tensor(a, requires_grad=bool(need) and a.dtype.kind == "f"))
            leaves = list(leaves)
            for pos, x in zip(tensor_pos, inputs):
                leaves[pos] = x
            args, kwargs = rebuild(leaves)
            rec = Recording(fn, args, kwargs, record=any(x.requires_grad for x in inputs))
            array_pos = [i for i, o in enumerate(rec.leaves) if is_array_leaf(o)]
            if not array_pos:
                raise TypeError(f"gpudp.torch.wrap: {getattr(fn, '__name__', 'fn')} returned no gpudp Tensor "
                                f"or array (got {type(rec.result).__name__})")
            in_arrays = [x.data for x in inputs]
            outs = []
            for i in array_pos:
                o = rec.leaves[i]
                a = o.data if isinstance(o, Tensor) else o
                if _shares_memory(a, in_arrays):
                    a = arrays.copy(a)  # a torch output must not alias a torch input behind autograd's back
                outs.append(to_torch(a, device))

        for t, i in zip(outs, array_pos):
            if rec.diff_index[i] is None or not t.is_floating_point():
                ctx.mark_non_differentiable(t)
        # torch checks these for in-place changes before backward (gpudp's tape may hold views of them)
        ctx.save_for_backward(*tensors, *outs)
        ctx.gpudp = (backend, device, rec, inputs, array_pos)
        call["result"] = (rec.leaves, rec.rebuild, array_pos)
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        saved = ctx.saved_tensors  # raises if an input or output was modified in place since the forward pass
        backend, device, rec, inputs, array_pos = ctx.gpudp
        needs = ctx.needs_input_grad[1:]
        wanted = [k for k, (x, need) in enumerate(zip(inputs, needs)) if need and x.requires_grad]
        result = [None] * (1 + len(inputs))
        if rec.tape is None or not wanted or all(g is None for g in grads):
            return tuple(result)
        with _on_torch_stream(backend, device), use_backend(backend.name):
            seeds = {i: None if g is None else from_torch(g, backend, what="output gradient")
                     for i, g in zip(array_pos, grads)}
            g_in = rec.gradient(seeds, [inputs[k] for k in wanted])
            seed_arrays = [s for s in seeds.values() if s is not None]
            for k, g in zip(wanted, g_in):
                if g is None:
                    continue
                if _shares_memory(g, seed_arrays):
                    g = arrays.copy(g)  # PyTorch may accumulate into a gradient in place
                gt = to_torch(g, device)
                result[1 + k] = gt if gt.dtype == saved[k].dtype else gt.to(saved[k].dtype)
        return tuple(result)


def wrap(fn):
    """Turn a gpudp function into a differentiable function of ``torch.Tensor``\\ s.

    ``fn`` takes gpudp Tensors (and any other arguments) and returns a gpudp Tensor or array, or a tuple, list
    or dict of them. The wrapped function takes the same arguments with ``torch.Tensor``\\ s in place of the
    gpudp tensors, anywhere in its positional or keyword arguments (also inside tuples, lists and dicts, e.g. a
    staggered velocity ``(u_x, u_y)``), and returns the same structure with ``torch.Tensor``\\ s; other values
    (``dt``, a :class:`~gpudp.Grid`, ints, solver statistics) pass through unchanged.

    Each torch tensor becomes a gpudp :class:`~gpudp.Tensor` sharing its memory, with ``requires_grad`` where
    PyTorch wants its gradient. ``fn`` runs on a gpudp :class:`~gpudp.Tape` only when some input needs a
    gradient, and the backward pass returns ``None`` for inputs that need none. The tape's saved arrays live as
    long as PyTorch's graph (like attributes of any ``autograd.Function`` context), so the graph can be
    differentiated more than once (``retain_graph=True``, ``torch.autograd.gradcheck``). Second derivatives
    are not supported (``once_differentiable``).
    """
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        leaves, rebuild = flatten((args, kwargs))
        tensor_pos = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        call = {"fn": fn, "leaves": leaves, "rebuild": rebuild, "tensor_pos": tensor_pos}
        outs = _GpudpFunction.apply(call, *[leaves[i] for i in tensor_pos])
        result_leaves, result_rebuild, array_pos = call.pop("result")
        result_leaves = list(result_leaves)
        for i, t in zip(array_pos, outs):
            result_leaves[i] = t
        return result_rebuild(result_leaves)

    return wrapped
