"""Reverse-mode tape: :class:`Tensor`, :class:`Operator`, :class:`Tape`.

The whole reverse mode in a few ideas (micrograd-sized on purpose):

- An :class:`Operator` subclass supplies ``forward(ctx, *inputs)`` and ``backward(ctx, *grad_outputs)``.
  ``Operator.apply`` unwraps tensors, runs ``forward`` on raw arrays and, while a :class:`Tape` is active and
  some input requires a gradient, appends a node to the tape.
- Recording order is a topological order, so ``backward`` walks the nodes in reverse with a dict of
  gradients keyed by tensor ids, calling each node's ``backward`` with ``ctx.needs_input_grad`` set to the
  inputs that lead to a requested leaf (greedy derivatives: nothing else is computed).
- The tape keeps only what ``ctx.save_for_backward`` saved; ``memory_bytes`` counts those arrays (each
  array once). Inputs are referenced weakly, for the version check and for delivering leaf gradients.

The tape knows nothing about backends; gradient accumulation uses :mod:`gpudp.arrays`.
"""
from __future__ import annotations

import itertools
import threading
import weakref

from numpy import empty as _empty
from numpy import ndarray as _ndarray  # the common array type, tested before the general test

from . import _pytree, arrays
from .errors import TapeError

_uid = itertools.count(1)


class _Active(threading.local):
    tape = None  # the recording tape of this thread


_active = _Active()


def current_tape():
    """The :class:`Tape` recording in this thread, or ``None``."""
    return _active.tape


class Tensor:
    """A backend array with an optional gradient.

    ``data`` is the wrapped array; ``grad`` the accumulated gradient (``None`` until a backward pass delivers
    one; like PyTorch, backward passes *add* to it: reset it with :meth:`zero_grad`). Changing the tensor
    through its own API (``t.data = …``, ``t[idx] = …``, ``t += …``, :meth:`copy_`, :meth:`fill_`) bumps a
    version counter: a tape that recorded the tensor before such a change refuses to differentiate.
    """

    __slots__ = ("_data", "grad", "requires_grad", "_version", "_uid", "_node", "__weakref__")
    __array_priority__ = 1000  # make ``ndarray + Tensor`` call Tensor.__radd__

    def __init__(self, data, requires_grad=False):
        if type(data) is not _ndarray:
            if isinstance(data, Tensor):
                data = data.data
            if not arrays.is_array(data):
                raise TypeError(f"Tensor: data must be a NumPy, CuPy or Numba device array, got "
                                f"{type(data).__name__}; use gpudp.tensor(x) to convert")
        if requires_grad:
            if data.dtype.kind != "f":
                raise TypeError(f"Tensor: only floating-point tensors can require gradients, got dtype {data.dtype}")
            self.requires_grad = True
        else:
            self.requires_grad = False
        self._data = data
        self.grad = None
        self._version = 0
        self._uid = next(_uid)
        self._node = None  # True when produced by a recorded operator

    def __reduce__(self):
        """Pickle the data and ``requires_grad`` only, as PyTorch does: the copy is a new leaf tensor, on no
        tape, without ``grad`` (a tape and its saved arrays never travel to another process)."""
        return (Tensor, (self._data, self.requires_grad))

    # -- data and in-place changes ----------------------------------------------------------------------
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        if isinstance(value, Tensor):
            value = value.data
        if not arrays.is_array(value):
            raise TypeError(f"Tensor.data: expected an array, got {type(value).__name__}")
        self._data = value
        self._version += 1

    @property
    def version(self):
        """Number of in-place changes made through the Tensor API."""
        return self._version

    def __setitem__(self, index, value):
        value = value.data if isinstance(value, Tensor) else value
        self._data[index] = value
        self._version += 1

    def copy_(self, value):
        value = value.data if isinstance(value, Tensor) else value
        self._data[...] = value
        self._version += 1
        return self

    def fill_(self, value):
        self._data[...] = value
        self._version += 1
        return self

    def _inplace(self, other, fn):
        other = other.data if isinstance(other, Tensor) else other
        self._data = arrays.apply(fn, self._data, other)
        self._version += 1
        return self

    def __iadd__(self, other):
        return self._inplace(other, lambda xp, a, b: a + b)

    def __isub__(self, other):
        return self._inplace(other, lambda xp, a, b: a - b)

    def __imul__(self, other):
        return self._inplace(other, lambda xp, a, b: a * b)

    def __itruediv__(self, other):
        return self._inplace(other, lambda xp, a, b: a / b)

    def zero_grad(self):
        """Forget the accumulated gradient (``grad = None``)."""
        self.grad = None

    def detach(self):
        """A new tensor sharing ``data`` that requires no gradient and has no history."""
        return Tensor(self._data)

    # -- array-like properties --------------------------------------------------------------------------
    shape = property(lambda self: tuple(self._data.shape))
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: len(self._data.shape))
    size = property(lambda self: int(self._data.size))

    def __len__(self):
        return self._data.shape[0]

    def numpy(self):
        """The data as a NumPy array (a copy from device memory on GPU backends)."""
        return arrays.to_numpy(self._data)

    def item(self):
        if self.size != 1:
            raise ValueError(f"Tensor.item: only one-element tensors convert to a scalar, shape is {self.shape}")
        return self.numpy().reshape(()).item()

    def __float__(self):
        return float(self.item())

    def __repr__(self):
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({arrays.to_numpy(self._data)!r}{flag})"

    # -- arithmetic (differentiable; defined in gpudp.ops.elementwise) --------------------------------------
    def __add__(self, other):
        from .ops import elementwise as E
        return E.add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        from .ops import elementwise as E
        return E.sub(self, other)

    def __rsub__(self, other):
        from .ops import elementwise as E
        return E.sub(other, self)

    def __mul__(self, other):
        from .ops import elementwise as E
        return E.mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        from .ops import elementwise as E
        return E.div(self, other)

    def __rtruediv__(self, other):
        from .ops import elementwise as E
        return E.div(other, self)

    def __neg__(self):
        from .ops import elementwise as E
        return E.neg(self)

    def __pow__(self, exponent):
        from .ops import elementwise as E
        return E.power(self, exponent)

    def __getitem__(self, index):
        from .ops import elementwise as E
        return E.getitem(self, index)

    def sum(self, axis=None):
        from .ops import elementwise as E
        return E.sum(self, axis=axis)

    def mean(self, axis=None):
        from .ops import elementwise as E
        return E.mean(self, axis=axis)

    def reshape(self, *shape):
        from .ops import elementwise as E
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return E.reshape(self, shape)


def tensor(x, requires_grad=False, dtype=None):
    """A :class:`Tensor` holding ``x`` on the active backend.

    This is the explicit move: host data (lists, NumPy arrays) and other backends' arrays are copied to the
    active backend. ``dtype`` converts; integer data needs a float ``dtype`` to require gradients."""
    from .backends import get_backend
    if isinstance(x, Tensor):
        x = x.data
    data = get_backend().asarray(x, dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)


class Context:
    """What an operator's ``forward`` hands to its ``backward``.

    ``save_for_backward(*arrays)`` stores arrays (counted by :attr:`Tape.memory_bytes`); any other
    attribute may hold small metadata. ``needs_input_grad`` is a tuple of bools, one per positional input:
    during ``forward`` which inputs require gradients at all; during ``backward`` which gradients this
    backward pass actually wants (compute only those; return ``None`` for the rest)."""

    saved_arrays = ()  # until save_for_backward (None once a backward pass freed them)

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad

    def save_for_backward(self, *saved):
        self.saved_arrays = saved

    @property
    def saved(self):
        if self.saved_arrays is None:
            raise TapeError("the saved arrays of this operator were freed by an earlier backward pass; "
                            "pass retain=True to backward() to differentiate a tape more than once")
        return self.saved_arrays


class _Ctx(Context):
    """A :class:`Context` made without a call of ``__init__`` (the tape sets ``needs_input_grad``)."""

    __init__ = object.__init__


def _Node(op, ctx, inputs, outputs):
    """One recorded operator: the tuple ``(op, ctx, n_inputs, inputs, output_uids)`` of ``op`` applied to
    ``inputs`` (Tensors, or None for other values) giving ``outputs`` (a plain tuple, so that recording one is a
    single allocation).

    ``inputs`` holds one entry ``(position, id, weak reference, version when recorded, required)`` per tensor
    input (other inputs never get gradients); ``required`` says whether it required a gradient when recorded:
    only those inputs can ever receive one (the operator may have saved nothing for the others)."""
    return (op, ctx, len(inputs), _tensor_inputs(inputs, ctx.needs_input_grad), tuple([o._uid for o in outputs]))


def _tensor_inputs(inputs, required):
    """The ``inputs`` entries of a :func:`_Node` for the inputs ``inputs`` (Tensors or None)."""
    entries = []
    i = 0
    for t in inputs:
        if t is not None:
            entries.append((i, t._uid, _weakref(t), t._version, required[i]))
        i += 1
    return entries


_weakref = weakref.ref

# ``(False,) * n`` for the operator calls that record nothing
_NO_NEEDS = tuple((False,) * n for n in range(8))

_FREED = "Tape: cannot record on a tape whose backward pass freed it; call tape.reset()"


class Operator:
    """Base class of differentiable operators (like ``torch.autograd.Function``).

    Subclasses implement two static methods::

        class Scale(gpudp.Operator):
            @staticmethod
            def forward(ctx, x, *, factor):
                ctx.factor = factor
                return x * factor

            @staticmethod
            def backward(ctx, g):
                return (g * ctx.factor,)

        y = Scale.apply(x, factor=2.0)

    Positional arguments are the differentiable inputs (tensors or raw arrays, or other values that are
    never differentiated); keyword arguments are static parameters. ``forward`` receives raw arrays and
    returns one array or a tuple of arrays. ``backward`` receives one gradient per output (``None`` for an
    output no gradient reached) and returns one gradient (or ``None``) per positional input.

    Called with raw arrays (no tensors), ``apply`` is a plain function call returning arrays.
    """

    accumulates = False   # True for nodes that continue their inputs' gradient sums (gpudp.checkpointing)
    #: True when ``forward`` depends only on its inputs and parameters and raises every error that depends on
    #: the input values itself: ``value_and_grad(..., replay=True)`` may then replay it (gpudp._replay).
    replayable = False

    @staticmethod
    def forward(ctx, *inputs, **params):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        # one pass over the inputs: the tensors (None for other values), the raw values, who needs a gradient
        tensors, raw, needs = [], [], []
        has_tensor = any_need = False
        for x in inputs:
            if isinstance(x, Tensor):
                has_tensor = True
                tensors.append(x)
                raw.append(x._data)
                needs.append(x.requires_grad)
                any_need = any_need or x.requires_grad
            else:
                tensors.append(None)
                raw.append(x)
                needs.append(False)
        tape = _active.tape if any_need else None
        record = tape is not None
        if record and tape.discovering:
            # a checkpointed function's forward pass: nothing is saved, only the tensors it reads are noted
            ctx = _Ctx()
            ctx.needs_input_grad = (False,) * len(inputs)
            out = cls.forward(ctx, *raw, **params)
            outs = tuple([Tensor(o, requires_grad=True) for o in out]) if isinstance(out, tuple) \
                else (Tensor(out, requires_grad=True),)
            tape._note(tensors, outs)
            return outs if isinstance(out, tuple) else outs[0]
        if not record:
            ctx = _Ctx()
            n = len(inputs)
            ctx.needs_input_grad = _NO_NEEDS[n] if n < 8 else (False,) * n
            active = _active.tape
            if active is not None and active._trace is not None:
                return _traced(active, cls, ctx, tensors, raw, params, has_tensor, False)
            out = cls.forward(ctx, *raw, **params)
            if not has_tensor:
                return out
            return tuple([Tensor(o) for o in out]) if isinstance(out, tuple) else Tensor(out)
        ctx = _Ctx()
        ctx.needs_input_grad = needs = tuple(needs)
        if tape._trace is not None:
            return _traced(tape, cls, ctx, tensors, raw, params, True, True)
        out = cls.forward(ctx, *raw, **params)
        if tape._freed:
            raise TapeError(_FREED)
        if not isinstance(out, tuple):
            o = Tensor(out, True)
            o._node = True
            tape._nodes.append(_Node(cls, ctx, tensors, (o,)))
            return o
        outs = tuple([Tensor(o, True) for o in out])
        for o in outs:
            o._node = True
        tape._nodes.append(_Node(cls, ctx, tensors, outs))
        return outs


def _traced(tape, cls, ctx, tensors, raw, params, has_tensor, record):
    """``Operator.apply`` on a tape that notes every call (``value_and_grad(..., replay=True)``, see
    gpudp._replay): the calls made directly by the traced function, recorded or not, are appended to
    ``tape._trace`` with their raw inputs and parameters; calls made inside an operator's ``forward`` are
    part of that operator."""
    top = tape._depth == 0
    tape._depth += 1
    try:
        out = cls.forward(ctx, *raw, **params)
    finally:
        tape._depth -= 1
    many = isinstance(out, tuple)
    if record:
        if tape._freed:
            raise TapeError(_FREED)
        outs = tuple([Tensor(o, True) for o in out]) if many else (Tensor(out, True),)
        for o in outs:
            o._node = True
        tape._nodes.append(_Node(cls, ctx, tensors, outs))
    elif has_tensor:
        outs = tuple([Tensor(o) for o in out]) if many else (Tensor(out),)
    else:
        outs = out if many else (out,)
    res = outs if many else outs[0]
    if top:
        versions = tuple([t._version if t is not None else None for t in tensors])
        tape._trace.append((cls, tensors, raw, params, ctx.needs_input_grad, res, versions))
    return res


class Tape:
    """Records operators applied inside ``with Tape() as tape:`` and differentiates them afterwards.

    ``backward(out)`` adds ``d out / d leaf`` to the ``.grad`` of every leaf tensor with ``requires_grad``;
    ``gradient(out, sources)`` returns the gradients as arrays without touching ``.grad``. Both free the
    saved arrays unless ``retain=True``. Nested tapes are an error.
    """

    discovering = False   # True for the forward pass of a checkpointed function (gpudp.checkpointing)
    _trace = None         # a list: every operator call is also noted there (gpudp._replay)
    _depth = 0            # while noting: how many operators' forward passes are running

    def __init__(self):
        self._nodes = []
        self._recording = False
        self._freed = False

    def __enter__(self):
        if _active.tape is not None:
            raise TapeError("Tape: tapes cannot be nested; finish the outer `with Tape()` block first "
                            "(use tape.gradient(..., retain=True) for several gradients of one recording)")
        _active.tape = self
        self._recording = True
        return self

    def __exit__(self, *exc):
        _active.tape = None
        self._recording = False
        return False

    def _record(self, node):
        if self._freed:
            raise TapeError(_FREED)
        self._nodes.append(node)

    @property
    def memory_bytes(self):
        """Bytes of the arrays the tape holds for the backward pass (each distinct array counted once)."""
        seen = {}
        for node in self._nodes:
            for a in node[1].saved_arrays or ():
                if a is not None and arrays.is_array(a):
                    seen[id(a)] = arrays.nbytes(a)
        return sum(seen.values())

    @property
    def rollouts(self):
        """One :class:`gpudp.RolloutInfo` per checkpointed :func:`gpudp.rollout` recorded on this tape: its
        schedule's counts, measured by the last backward pass (before one: the predicted counts, with
        ``peak_bytes = None``)."""
        out = []
        for node in self._nodes:
            run = getattr(node[1], "run", None)
            if run is not None:
                out.append(node[1].rollout_info or run.predicted())
        return out

    def __len__(self):
        return len(self._nodes)

    def reset(self):
        """Forget everything recorded; the tape can record again."""
        self._nodes = []
        self._freed = False

    # -- differentiation --------------------------------------------------------------------------------
    def backward(self, out, grad=None, retain=False):
        """Accumulate ``d out / d leaf`` (times the seed ``grad`` for a non-scalar ``out``) into ``.grad`` of
        every leaf tensor that requires a gradient.

        ``out`` may be a Tensor or a tuple, list or dict of them; ``grad`` then has the same structure (an
        entry ``None``: no cotangent for that output; ``grad=None``: every output is a scalar seeded with 1)."""
        leaves = {}

        def want(t):
            if t is not None and t.requires_grad and t._node is None:
                leaves[t._uid] = t
                return True
            return False

        outs, seeds = _seeds("Tape.backward", out, grad)
        grads = self._run(outs, seeds, retain, want)
        for uid, t in leaves.items():
            if uid in grads:
                t.grad = grads[uid] if t.grad is None else arrays.add(t.grad, grads[uid])

    def gradient(self, out, sources, grad=None, retain=False):
        """Gradients of ``out`` w.r.t. ``sources`` as arrays, in the structure of ``sources`` (a Tensor, or a
        tuple, list or dict of them); zeros for a source that ``out`` does not depend on. ``out`` and ``grad``
        may be containers as in :meth:`backward`."""
        if isinstance(sources, Tensor) and isinstance(out, Tensor):  # one source, one output: no containers
            if not sources.requires_grad:
                raise TapeError(f"Tape.gradient: source 0 (shape {sources.shape}) does not require a gradient; "
                                f"create it with requires_grad=True before recording")
            data = out._data
            if grad is None and type(data) is _ndarray and data.size == 1:  # the seed 1 of a NumPy scalar output
                seed = _empty(data.shape, data.dtype)
                seed.fill(1)
            else:
                seed = _seed("Tape.gradient", out, grad)
            uid = sources._uid
            uids = {uid}
            grads = self._run((out,), (seed,), retain, uids, uids)
            return grads[uid] if uid in grads else arrays.zeros_like(sources._data)
        single = isinstance(sources, Tensor)
        flat, structure = ([sources], None) if single else _pytree.flatten(sources)
        for s in flat:
            if not isinstance(s, Tensor):
                raise TypeError(f"Tape.gradient: sources must be Tensors, got {type(s).__name__}")
        for i, s in enumerate(flat):
            if not s.requires_grad:
                raise TapeError(f"Tape.gradient: source {i} (shape {s.shape}) does not require a gradient; "
                                f"create it with requires_grad=True before recording")
        uids = {s._uid for s in flat}
        outs, seeds = _seeds("Tape.gradient", out, grad)
        grads = self._run(outs, seeds, retain, uids, keep=uids)
        if single:
            return grads[sources._uid] if sources._uid in grads else arrays.zeros_like(sources._data)
        res = [grads[s._uid] if s._uid in grads else arrays.zeros_like(s.data) for s in flat]
        return _pytree.unflatten(structure, res)

    def _run(self, outs, seeds, retain, is_target, keep=(), init=None):
        """Reverse sweep from the tensors ``outs`` seeded with ``seeds`` (``None`` entries skipped) towards the
        tensors ``is_target`` accepts (a predicate on tensors, or a set of tensor ids). ``init`` maps tensor ids
        to gradients accumulated before this sweep (a checkpointed function's inputs). Returns the dict of
        gradients by tensor id."""
        if self._freed:
            raise TapeError("Tape.backward: this tape was already differentiated and its saved arrays freed; "
                            "pass retain=True to the first backward/gradient call to differentiate again")
        if self._recording:
            raise TapeError("Tape.backward: called inside the `with Tape()` block; call it after the block")

        # forward sweep: which tensors depend on a requested source (greedy derivatives), and so which inputs
        # of each node need a gradient: those that required one when recorded and lead to a source (None for
        # a node none of whose inputs leads to one)
        nodes = self._nodes
        by_id = isinstance(is_target, set)
        live = set(is_target) if by_id else set()  # (a source leads to itself)
        node_needs = []  # per node: the tuple of needs, or None (no input leads to a source or needs a gradient)
        for _, _, n_inputs, inputs, output_uids in nodes:
            needs = None
            for i, uid, ref, _, required in inputs:
                if uid in live or (not by_id and is_target(ref())):
                    if needs is None:
                        needs = [False] * n_inputs
                    needs[i] = required
            if needs is not None:
                live.update(output_uids)
                needs = tuple(needs) if True in needs else None
            node_needs.append(needs)

        grads = dict(init) if init else {}
        for o, seed in zip(outs, seeds):
            if seed is not None:
                grads[o._uid] = seed if o._uid not in grads else arrays.add(grads[o._uid], seed)
        k = len(nodes)
        while k:
            k -= 1
            op, ctx, n_inputs, inputs, output_uids = nodes[k]
            if len(output_uids) == 1:
                if output_uids[0] not in grads:
                    continue
            else:
                for uid in output_uids:
                    if uid in grads:
                        break
                else:  # no gradient reached this node's outputs
                    continue
            for _, _, ref, version, _ in inputs:
                t = ref()
                if t is not None and t._version != version:
                    raise TapeError(f"Tape.backward: a tensor of shape {t.shape} used by {op.__name__} was "
                                    f"modified in place after the tape recorded it (version {version} -> "
                                    f"{t._version}); the gradient would be wrong. Modify a copy instead")
            needs = node_needs[k]
            if needs is None:
                continue
            if len(output_uids) == 1:
                uid = output_uids[0]
                g_out = [grads.get(uid) if uid in keep else grads.pop(uid, None)]
            else:
                g_out = [grads.get(uid) if uid in keep else grads.pop(uid, None) for uid in output_uids]
            ctx.needs_input_grad = needs
            if op.accumulates:
                # a checkpointed function: it continues the accumulation of its inputs' gradients itself, in
                # the order the recorded operators would have (so that the sums are the same bits)
                acc = {}
                for i, uid, _, _, _ in inputs:
                    if needs[i] and uid in grads:
                        acc[uid] = grads.pop(uid)
                grads.update(op.backward_accumulate(ctx, g_out, acc))
                continue
            g_in = op.backward(ctx, *g_out)
            if not isinstance(g_in, tuple):
                g_in = (g_in,)
            if len(g_in) != n_inputs:
                raise TapeError(f"{op.__name__}.backward returned {len(g_in)} gradients for {n_inputs} inputs")
            for i, uid, _, _, _ in inputs:
                g = g_in[i]
                if g is not None and needs[i]:
                    grads[uid] = g if uid not in grads else arrays.add(grads[uid], g)
        if not retain:
            for node in nodes:
                node[1].saved_arrays = None
            self._freed = True
        return grads


def _seeds(fn, out, grad):
    """The output tensors and their seeds for a backward pass from ``out`` (a Tensor or a container of them)
    with the cotangent ``grad`` (``None``, or an array/Tensor or a container of the same structure)."""
    if isinstance(out, Tensor):
        return [out], [_seed(fn, out, grad)]
    if not isinstance(out, (tuple, list, dict)):
        raise TypeError(f"{fn}: expected the Tensor to differentiate (or a tuple, list or dict of Tensors), "
                        f"got {type(out).__name__}")
    outs, structure = _pytree.flatten(out)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"{fn}: every output to differentiate must be a Tensor; the output "
                            f"{_pytree.describe(structure)} holds a {type(o).__name__}")
    if not outs:
        raise TypeError(f"{fn}: the output {_pytree.describe(structure)} holds no Tensor to differentiate")
    if grad is None:
        return outs, [_seed(fn, o, None) for o in outs]
    gl, gstructure = _pytree.flatten(grad)
    if gstructure != structure:
        raise TapeError(f"{fn}: grad must have the structure of the output {_pytree.describe(structure)}, got "
                        f"{_pytree.describe(gstructure)}")
    return outs, [None if g is None else _seed(fn, o, g) for o, g in zip(outs, gl)]


def _seed(fn, out, grad):
    if grad is None:
        if out._data.size != 1:
            raise TapeError(f"{fn}: the output has shape {out.shape}; a non-scalar output needs "
                            f"a seed: backward(out, grad=array of shape {out.shape})")
        return arrays.ones_like(out.data)
    seed = grad.data if isinstance(grad, Tensor) else grad
    if not arrays.is_array(seed) or tuple(seed.shape) != out.shape:
        shape = getattr(seed, "shape", type(seed).__name__)
        raise TapeError(f"{fn}: grad must be an array of the output's shape {out.shape}, got {shape}")
    if seed.dtype != out.dtype:
        raise TypeError(f"{fn}: grad has dtype {seed.dtype} but the output has {out.dtype}")
    return seed
