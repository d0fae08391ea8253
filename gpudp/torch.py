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
- ``cupy`` backend: CUDA tensors through DLPack (``cupy.from_dlpack`` / ``torch.from_dlpack``). gpudp's
  kernels are queued on PyTorch's current CUDA stream, so no synchronisation and no host round trip is needed;
- ``numba-cuda`` backend: CUDA tensors through DLPack (or ``__cuda_array_interface__`` without CuPy). Numba
  launches on its own stream, so the call waits for PyTorch's stream before and for the device after.

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
from .tape import Operator, Tape, Tensor

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

    CuPy launches on its current stream, so it is pointed at PyTorch's current stream. Numba kernels launch on
    their own stream: wait for PyTorch's stream first and for the device afterwards."""
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


# -- pytrees of tuples, lists and dicts ------------------------------------------------------------------------

def _flatten(tree):
    """``(leaves, rebuild)``: the leaves of nested tuples, lists and dicts, and a function rebuilding the
    structure from a list of new leaves."""
    if isinstance(tree, (tuple, list)):
        parts = [_flatten(x) for x in tree]
        kind = type(tree)
    elif isinstance(tree, dict):
        keys = list(tree)
        parts = [_flatten(tree[k]) for k in keys]
        kind = None
    else:
        return [tree], lambda leaves: leaves[0]
    leaves, sizes = [], []
    for sub, _ in parts:
        leaves.extend(sub)
        sizes.append(len(sub))

    def rebuild(new):
        out, pos = [], 0
        for (_, sub_rebuild), n in zip(parts, sizes):
            out.append(sub_rebuild(new[pos:pos + n]))
            pos += n
        if kind is None:
            return dict(zip(keys, out))
        if kind is tuple or kind is list:
            return kind(out)
        return kind(*out)  # namedtuple
    return leaves, rebuild


# -- the autograd.Function -------------------------------------------------------------------------------------

class _Join(Operator):
    """Joins a function's differentiable outputs into one scalar node, so that one reverse sweep of the tape
    carries PyTorch's gradients for all outputs at once: its backward returns those gradients unchanged."""

    @staticmethod
    def forward(ctx, *outputs, holder):
        ctx.holder = holder
        return arrays.apply(lambda xp, a: xp.zeros((), dtype=a.dtype), outputs[0])

    @staticmethod
    def backward(ctx, g):
        return tuple(ctx.holder.seeds)


class _Call:
    """One call of a wrapped function: the function, its argument leaves and, after the forward pass, how
    to rebuild its result."""

    def __init__(self, fn, leaves, rebuild, tensor_pos):
        self.fn, self.leaves, self.rebuild, self.tensor_pos = fn, leaves, rebuild, tensor_pos
        self.seeds = ()
        self.result_leaves = self.result_rebuild = self.array_pos = None


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
        backend = get_backend()
        device = _common_device(tensors, backend)
        needs = ctx.needs_input_grad[1:]
        ctx.set_materialize_grads(False)
        with _on_torch_stream(backend, device):
            inputs = []
            for i, (t, need) in enumerate(zip(tensors, needs)):
                a = from_torch(t, backend, what=f"tensor argument {i}")
                inputs.append(Tensor(a, requires_grad=bool(need) and a.dtype.kind == "f"))
            leaves = list(call.leaves)
            for pos, x in zip(call.tensor_pos, inputs):
                leaves[pos] = x
            args, kwargs = call.rebuild(leaves)
            call.leaves = None
            tape = None
            if any(x.requires_grad for x in inputs):
                with Tape() as tape:
                    result = call.fn(*args, **kwargs)
                    out_leaves, out_rebuild = _flatten(result)
                    diff = [o for o in out_leaves if isinstance(o, Tensor) and o.requires_grad]
                    join = _Join.apply(*diff, holder=call) if diff else None
            else:
                result = call.fn(*args, **kwargs)
                out_leaves, out_rebuild = _flatten(result)
                diff = []

            array_pos = [i for i, o in enumerate(out_leaves) if isinstance(o, Tensor) or arrays.is_array(o)]
            if not array_pos:
                raise TypeError(f"gpudp.torch.wrap: {getattr(call.fn, '__name__', 'fn')} returned no gpudp "
                                f"Tensor or array (got {type(result).__name__})")
            in_arrays = [x.data for x in inputs]
            outs, seed_index = [], []
            diff_ids = {id(o): k for k, o in enumerate(diff)}
            for i in array_pos:
                o = out_leaves[i]
                a = o.data if isinstance(o, Tensor) else o
                if _shares_memory(a, in_arrays):
                    a = arrays.copy(a)  # a torch output must not alias a torch input behind autograd's back
                outs.append(to_torch(a, device))
                seed_index.append(diff_ids.get(id(o)))

        call.result_leaves, call.result_rebuild, call.array_pos = out_leaves, out_rebuild, array_pos
        for t, k in zip(outs, seed_index):
            if k is None or not t.is_floating_point():
                ctx.mark_non_differentiable(t)
        # torch checks these for in-place changes before backward (gpudp's tape may hold views of them)
        ctx.save_for_backward(*tensors, *outs)
        ctx.gpudp = (backend, device, tape, join if tape is not None else None, inputs, diff, seed_index, call)
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        ctx.saved_tensors  # noqa: B018  (raises if an input or output was modified in place)
        backend, device, tape, join, inputs, diff, seed_index, call = ctx.gpudp
        needs = ctx.needs_input_grad[1:]
        none = (None,) * (1 + len(inputs))
        sources = [x for x, need in zip(inputs, needs) if need and x.requires_grad]
        if tape is None or not sources or all(g is None for g in grads):
            return none
        with _on_torch_stream(backend, device), use_backend(backend.name):
            seeds = [None] * len(diff)
            for g, k in zip(grads, seed_index):
                if k is not None and g is not None:
                    a = from_torch(g, backend, what="output gradient")
                    if a.dtype != diff[k].dtype:
                        a = a.astype(diff[k].dtype)
                    seeds[k] = a
            call.seeds = seeds
            try:
                g_in = tape.gradient(join, sources, retain=True)
            finally:
                call.seeds = ()
            result = [None]
            it = iter(g_in)
            for t, x, need in zip(ctx.saved_tensors, inputs, needs):
                if not (need and x.requires_grad):
                    result.append(None)
                    continue
                g = next(it)
                if _shares_memory(g, [s for s in seeds if s is not None]):
                    g = arrays.copy(g)
                gt = to_torch(g, device)
                result.append(gt if gt.dtype == t.dtype else gt.to(t.dtype))
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
        leaves, rebuild = _flatten((args, kwargs))
        tensor_pos = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        call = _Call(fn, leaves, rebuild, tensor_pos)
        outs = _GpudpFunction.apply(call, *[leaves[i] for i in tensor_pos])
        result = list(call.result_leaves)
        for i, t in zip(call.array_pos, outs):
            result[i] = t
        return call.result_rebuild(result)

    return wrapped
