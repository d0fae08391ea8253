"""Replayed gradients: ``value_and_grad(fn, replay=True)``.

The first calls of a signature (the arguments' types, shapes, dtypes and strides, the values of the other
arguments, the active backend) run ``fn`` on a tape as usual and note every recorded operator with its raw
inputs and parameters. When two such calls in a row record the same program (the same operators, parameters
and constants, each input coming from the same argument, constant or earlier output), later calls of that
signature replay it: each operator's ``forward`` runs on the new arguments, then the backward pass runs the
recorded operators' ``backward`` in the order and with the accumulation the tape uses (the same bits), without
running ``fn``'s Python, the public functions' argument checks (which depend only on the signature) or the
tape's bookkeeping. Operators opt in with ``replayable = True``: their ``forward`` depends only on its inputs
and parameters and raises every data-dependent error itself (a CFL violation, a failed solve).

As with ``jax.jit``, ``fn`` must be a function of its arguments: arrays it reads from elsewhere are read again
on every call (the same array objects), but Python decisions it takes from array values, or arrays it computes
outside gpudp operators, are those of the recorded calls.
"""
from __future__ import annotations

from numpy import empty as _empty
from numpy import ndarray as _ndarray

from . import _pytree, arrays
from .tape import Tensor, _active, _Ctx

_MAX_SIGNATURES = 64   # programs kept per function (all forgotten when full)
MAX_MISMATCHES = 2    # recorded calls that differ from the previous one before a signature stops trying


class NotReplayable(Exception):
    """Why a recorded call cannot become a program (kept as the signature's state)."""


def _leaf_key(x):
    t = type(x)
    if t is _ndarray:
        return (t, x.shape, x.dtype, x.strides)
    if t is Tensor:
        d = x._data
        return (t, x.requires_grad, type(d), d.shape, d.dtype, getattr(d, "strides", None))
    if arrays.is_array(x):
        return (t, tuple(x.shape), x.dtype, getattr(x, "strides", None))
    hash(x)  # (TypeError: unhashable, no signature)
    return (t, x)


def signature(backend, args, kwargs):
    """The replay key of a call, or None when an argument has no hashable form."""
    try:
        if not kwargs and len(args) == 1 and type(args[0]) is _ndarray:  # the common case: one array
            a = args[0]
            return backend, (_ndarray, a.shape, a.dtype, a.strides)
        flat, structure = _pytree.flatten((args, kwargs))
        key = (backend, structure, tuple([_leaf_key(x) for x in flat]))
        hash(key)
        return key
    except TypeError:
        return None


def _same(a, b):
    """Whether two recorded constants or parameters are the same: arrays and Tensors by identity, containers
    element by element, anything else by ``==`` (a comparison that fails or is not a plain truth value: not
    the same)."""
    if a is b:
        return True
    if type(a) is not type(b) or isinstance(a, Tensor) or arrays.is_array(a):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return (a == b) is True
    except Exception:  # noqa: BLE001 - a comparison that raises: not the same
        return False


class Program:
    """What one signature replays: ``steps`` (operator, input indices, parameters, forward needs, outputs),
    ``consts`` (values appended after the arguments' leaves), the output and aux indices, the backward
    schedule, and the leaf indices and structures of the differentiated arguments."""

    __slots__ = ("steps", "consts", "out", "aux", "backward", "sources", "structures", "single")

    def __init__(self):
        self.aux = None

    def same_as(self, other):
        if len(self.steps) != len(other.steps) or len(self.consts) != len(other.consts):
            return False
        for (op, idx, params, needs, n_out), (op2, idx2, params2, needs2, n_out2) in zip(self.steps, other.steps):
            if op is not op2 or idx != idx2 or needs != needs2 or n_out != n_out2 or not _same(params, params2):
                return False
        return (all(_same(a, b) for a, b in zip(self.consts, other.consts)) and self.out == other.out
                and _same(self.aux, other.aux))

    def run(self, args, kwargs, has_aux):
        """``(value, gradient)`` of the recorded program on new arguments of the same signature."""
        flat, _ = _pytree.flatten((args, kwargs)) if kwargs or len(args) != 1 or type(args[0]) is not _ndarray \
            else ([args[0]], None)
        vals = [x._data if type(x) is Tensor else x for x in flat]
        for c in self.consts:
            vals.append(c._data if type(c) is Tensor else c)
        ctxs = []
        for op, idx, params, needs, n_out in self.steps:
            ctx = _Ctx()
            ctx.needs_input_grad = needs
            out = op.forward(ctx, *[vals[i] for i in idx], **params)
            ctxs.append(ctx)
            if n_out:
                vals.extend(out)
            else:
                vals.append(out)
        o = vals[self.out]
        if type(o) is _ndarray:  # the seed 1 (as Tape.gradient makes it)
            seed = _empty(o.shape, o.dtype)
            seed.fill(1)
        else:
            seed = arrays.ones_like(o)
        grads = {self.out: seed}
        for k, idx, needs, outs in self.backward:
            if len(outs) == 1:
                g = grads.pop(outs[0], None)
                if g is None:  # no gradient reached this operator's output
                    continue
                g_out = [g]
            else:
                g_out = [grads.pop(i, None) for i in outs]
                if all(g is None for g in g_out):
                    continue
            ctx = ctxs[k]
            ctx.needs_input_grad = needs
            g_in = self.steps[k][0].backward(ctx, *g_out)
            if not isinstance(g_in, tuple):
                g_in = (g_in,)
            for p, i in enumerate(idx):
                g = g_in[p]
                if g is not None and needs[p] and i >= 0:
                    grads[i] = g if i not in grads else arrays.add(grads[i], g)
        res = []
        for leaves, structure in zip(self.sources, self.structures):
            gl = [grads[i] if i in grads else arrays.zeros_like(vals[i]) for i in leaves]
            res.append(gl[0] if structure is None else _pytree.unflatten(structure, gl))
        grad = res[0] if self.single else tuple(res)
        value = o
        if has_aux:
            structure, idx = self.aux
            value = (o, _pytree.unflatten(structure, [vals[i] for i in idx]))
        return value, grad


def build(trace, args, kwargs, leaves_by_arg, single, out, aux):
    """The :class:`Program` of one recorded call: ``trace`` as the tape noted it (per operator call: class, input
    tensors, raw inputs, parameters, forward needs, outputs, the input tensors' versions), the call's arguments (the differentiated
    ones replaced by their leaf tensors), ``leaves_by_arg`` (per differentiated argument: its leaf tensors and
    structure, None for one leaf), and the output and aux ``fn`` returned. Raises :class:`NotReplayable`."""
    flat, _ = _pytree.flatten((args, kwargs))
    n = len(flat)
    where = {}  # id of a tensor or array -> ("a", leaf index) or ("o", output number)
    for i, x in enumerate(flat):
        if type(x) is Tensor:
            where.setdefault(id(x), ("a", i))
            where.setdefault(id(x._data), ("a", i))
        elif arrays.is_array(x):
            where.setdefault(id(x), ("a", i))
    consts, const_of = [], {}
    recorded = []
    n_outputs = 0
    for cls, tensors, raw, params, needs, outs, versions in trace:
        if not getattr(cls, "replayable", False):
            raise NotReplayable(f"operator {cls.__name__} does not support replay (replayable = False)")
        srcs = []
        for t, r, version in zip(tensors, raw, versions):
            # a tensor changed in place (through the Tensor API) while fn ran: replay would miss the change
            if t is not None and (t._version != version or (version and where.get(id(t), ("a",))[0] == "o")):
                raise NotReplayable("fn changes a tensor in place")
            v = t if t is not None else r
            src = where.get(id(v)) if t is not None or arrays.is_array(r) else None
            if src is None:  # a constant (each object once)
                j = const_of.get(id(v))
                if j is None:
                    j = const_of[id(v)] = len(consts)
                    consts.append(v)
                src = ("c", j)
            srcs.append(src)
        for o in (outs if isinstance(outs, tuple) else (outs,)):
            where[id(o)] = ("o", n_outputs)
            if type(o) is Tensor:
                where[id(o._data)] = ("o", n_outputs)
            n_outputs += 1
        recorded.append((cls, srcs, tuple([t is not None for t in tensors]), params, needs,
                         len(outs) if isinstance(outs, tuple) else 0))
    base = n + len(consts)

    def index(src):
        kind, j = src
        return j if kind == "a" else n + j if kind == "c" else base + j

    def index_of(v, what):
        src = where.get(id(v))
        if src is None:
            raise NotReplayable(f"{what} is neither an argument nor computed by a recorded operator")
        return index(src)

    prog = Program()
    prog.consts = consts
    prog.steps = [(cls, tuple([index(s) for s in srcs]), params, needs, n_out)
                  for cls, srcs, _, params, needs, n_out in recorded]
    if not isinstance(out, Tensor) or where.get(id(out), ("a",))[0] != "o":
        raise NotReplayable("the output is not computed by a recorded operator")
    for v in [out] + (_pytree.flatten(aux)[0] if aux is not None else []):
        if isinstance(v, Tensor) and v._version and where.get(id(v), ("a",))[0] == "o":
            raise NotReplayable("fn changes a tensor in place")
    prog.out = index_of(out, "the output")
    prog.aux = None
    if aux is not None:
        aflat, astructure = _pytree.flatten(aux)
        for v in aflat:
            if not (isinstance(v, Tensor) or arrays.is_array(v)):
                raise NotReplayable(f"an aux value is a {type(v).__name__}, not a Tensor or an array")
        prog.aux = (astructure, tuple([index_of(v, "an aux value") for v in aflat]))
    prog.sources = [tuple([index_of(t, "a source") for t in leaves]) for leaves, _ in leaves_by_arg]
    prog.structures = [structure for _, structure in leaves_by_arg]
    prog.single = single
    # the backward schedule as Tape._run derives it: the tensor inputs that lead to a source (greedy
    # derivatives), the operators in reverse order; only tensor inputs ever receive gradients
    live = {i for s in prog.sources for i in s}
    sched = []
    start = base
    for k, ((cls, idx, params, needs, n_out), (_, _, is_tensor, _, _, _)) in enumerate(zip(prog.steps, recorded)):
        outs = tuple(range(start, start + (n_out or 1)))
        start += n_out or 1
        bneeds = None
        for p, i in enumerate(idx):
            if is_tensor[p] and i in live:
                if bneeds is None:
                    bneeds = [False] * len(idx)
                bneeds[p] = needs[p]
        if bneeds is not None:
            live.update(outs)
            if True in bneeds:
                sched.append((k, tuple([i if is_tensor[p] else -1 for p, i in enumerate(idx)]), tuple(bneeds),
                              outs))
    sched.reverse()
    prog.backward = tuple(sched)
    return prog


class Cache:
    """Per ``value_and_grad(..., replay=True)`` function: the state of each signature, ``("candidate", program,
    mismatches)``, ``("replay", program)`` or ``("no", reason)``. A pickled copy starts empty (programs hold
    arrays and kernel launchers of this process)."""

    def __init__(self):
        self._states = {}

    def __reduce__(self):
        return (Cache, ())

    def get(self, key):
        return self._states.get(key)

    def put(self, key, state):
        states = self._states
        if key not in states and len(states) >= _MAX_SIGNATURES:
            states.clear()
        states[key] = state

    def info(self):
        """Per signature (described as ``"backend: argument, …"``): ``"replaying"``, ``"recording"`` or why ``fn``
        runs every time."""
        return {describe(key): "replaying" if state[0] == "replay" else "recording" if state[0] == "candidate"
                else state[1] for key, state in list(self._states.items())}


def describe(key):
    """A signature key as text: the backend's name and, per argument leaf, ``dtype[shape]`` (``Tensor(…)`` for
    a tensor) or the value."""
    backend, leaves = key[0], (key[1:] if len(key) == 2 else key[2])

    def one(leaf):
        if leaf[0] is Tensor:
            return f"Tensor({leaf[4]}[{', '.join(map(str, leaf[3]))}])"
        if len(leaf) == 4:
            return f"{leaf[2]}[{', '.join(map(str, leaf[1]))}]"
        return repr(leaf[1])
    return f"{getattr(backend, 'name', backend)}: " + ", ".join(one(leaf) for leaf in leaves)


def active_tape():
    """The tape recording in this thread, or None (reached through this module so that the functions
    ``value_and_grad`` returns pickle: a closure naming the thread-local itself would not)."""
    return _active.tape
