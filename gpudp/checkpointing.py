"""Long rollouts (DESIGN.md §8): :func:`checkpoint` and :func:`rollout`.

Both record one node on the tape that keeps only its inputs (``checkpoint``) or a few states (``rollout``)
and, in the backward pass, runs the function again on an inner tape and differentiates that. The inner
sweeps continue the outer tape's gradient sums in the order the recorded operators would have used (the
node receives the sums of its inputs so far and hands them back), so gradients with checkpointing are the
same bits as without.

``rollout`` reverses ``T`` steps with ``c`` stored states on the binomial schedule of Griewank and Walther
(Revolve; "Algorithm 799", ACM TOMS 26, 2000): with ``r`` the least number such that
``β(c, r) = (c + r)! / (c! r!) ≥ T``, no step is run more than ``r`` times, and the number of recomputed
steps is the least possible for ``c`` states. The forward pass places the first checkpoints as it goes
(one sweep); the backward pass splits each segment at the binomially optimal step, recursively.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from collections import namedtuple

from . import _pytree, arrays
from . import tape as _tape
from .errors import TapeError
from .tape import Context, Operator, Tape, Tensor, _Node, current_tape

__all__ = ["RolloutInfo", "checkpoint", "revolve_counts", "rollout"]


# -- recording machinery ---------------------------------------------------------------------------------------

class _Discovery(Tape):
    """The forward pass of a checkpointed function: operators save nothing; the tensors requiring a gradient
    that the function reads without having produced them (its inputs and closed-over tensors) are noted."""

    discovering = True

    def __init__(self):
        super().__init__()
        self.produced = set()
        self.external = {}

    def _note(self, inputs, outputs):
        for t in inputs:
            if t is not None and t.requires_grad and t._uid not in self.produced:
                self.external.setdefault(t._uid, t)
        for o in outputs:
            o._node = True
            self.produced.add(o._uid)


@contextlib.contextmanager
def _recording(tape):
    """Make ``tape`` the recording tape of this thread for the block (the previous one is restored)."""
    prev = _tape.current_tape()
    _tape._active.tape = tape
    tape._recording = True
    try:
        yield tape
    finally:
        tape._recording = False
        _tape._active.tape = prev


def _tensors(flat):
    """The distinct Tensors among ``flat``, in order."""
    seen, out = set(), []
    for x in flat:
        if isinstance(x, Tensor) and x._uid not in seen:
            seen.add(x._uid)
            out.append(x)
    return out


def _signature(flat):
    """Shapes and dtypes of the array leaves (``None`` for other leaves)."""
    out = []
    for x in flat:
        a = x.data if isinstance(x, Tensor) else x
        out.append((tuple(a.shape), a.dtype) if arrays.is_array(a) else None)
    return out


def _describe_leaf(sig):
    return "a non-array value" if sig is None else f"shape {sig[0]}, dtype {sig[1]}"


def _node_inputs(explicit, disc, out_flat):
    """A node's inputs: the tensors passed to it, the tensors its function read from elsewhere (noted by the
    discovery pass) and tensors requiring a gradient that it returned without computing them."""
    inputs = _tensors(explicit)
    uids = {t._uid for t in inputs}
    for uid, t in disc.external.items():
        if uid not in uids:
            uids.add(uid)
            inputs.append(t)
    for x in out_flat:
        if isinstance(x, Tensor) and x.requires_grad and x._uid not in disc.produced and x._uid not in uids:
            uids.add(x._uid)
            inputs.append(x)
    return inputs


def _node_outputs(flat, inputs):
    """Replace, in the output leaves ``flat``, every Tensor that is one of the ``inputs`` by a new tensor on the
    same data (a node's outputs must be new); returns the new leaves and the indices of the node's outputs."""
    uids = {t._uid for t in inputs}
    leaves, index = list(flat), []
    for i, x in enumerate(flat):
        if isinstance(x, Tensor) and x.requires_grad:
            if x._uid in uids:
                x = Tensor(x.data, requires_grad=True)
                leaves[i] = x
            x._node = True
            index.append(i)
    return leaves, index


def _record(tape, op, ctx, inputs, outputs):
    ctx.needs_input_grad = tuple([t.requires_grad for t in inputs])
    tape._record(_Node(op, ctx, inputs, outputs))


def _inner_sweep(tape, outs, seeds, targets, acc):
    """Differentiate the inner ``tape`` from ``outs`` seeded with ``seeds``; the gradients of the tensors with
    ids in ``targets`` continue the sums in ``acc`` (updated in place). Returns the gradient dict."""
    pairs = [(o, g) for o, g in zip(outs, seeds) if g is not None and isinstance(o, Tensor)]
    init = {uid: acc.pop(uid) for uid in targets if uid in acc}
    grads = tape._run([o for o, _ in pairs], [g for _, g in pairs], False,
                      lambda t: t is not None and t._uid in targets, init=init)
    for uid in targets:
        if uid in grads:
            acc[uid] = grads[uid]
    return grads


# -- checkpoint --------------------------------------------------------------------------------------------------

class _Checkpoint(Operator):
    """The node of :func:`checkpoint`; see there."""

    accumulates = True

    @staticmethod
    def backward_accumulate(ctx, g_out, acc):
        ctx.saved  # raises when a backward pass freed this tape
        fn, args, kwargs, out_index, out_sig, inputs = ctx.params
        needs = ctx.needs_input_grad
        targets = {t._uid for t, need in zip(inputs, needs) if need}
        inner = Tape()
        with _recording(inner):
            out = fn(*args, **kwargs)
        flat, structure = _pytree.flatten(out)
        if structure != ctx.structure or _signature(flat) != out_sig:
            raise TapeError(f"checkpoint: the recomputation of {_name(fn)} returned other outputs than the forward "
                            f"pass ({_mismatch(structure, flat, ctx.structure, out_sig)}); a checkpointed "
                            f"function must be deterministic in the structure, shapes and dtypes it returns")
        outs = [flat[i] for i in out_index]
        for i, o in zip(out_index, outs):
            if not isinstance(o, Tensor):
                raise TapeError(f"checkpoint: the recomputation of {_name(fn)} returned a {type(o).__name__} for "
                                f"output {i}, which was a Tensor in the forward pass")
        _inner_sweep(inner, outs, g_out, targets, acc)
        return acc


def _name(fn):
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _mismatch(structure, flat, ref_structure, ref_sig):
    if structure != ref_structure:
        return f"structure {_pytree.describe(structure)} instead of {_pytree.describe(ref_structure)}"
    for i, (a, b) in enumerate(zip(_signature(flat), ref_sig)):
        if a != b:
            return f"leaf {i}: {_describe_leaf(a)} instead of {_describe_leaf(b)}"
    return "different leaves"


def checkpoint(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, recorded as one node that keeps only its inputs (like ``jax.checkpoint`` and
    ``torch.utils.checkpoint``).

    Inside a :class:`gpudp.Tape`, ``fn`` runs once without saving anything for the backward pass; the
    backward pass runs it again on an inner tape and differentiates that, so the memory of everything ``fn``
    computes is held only while its own gradient is computed. ``fn`` may be any gpudp function (operators,
    Tensor arithmetic, ``project``, user :class:`gpudp.Operator` s, nested ``checkpoint`` or ``rollout``);
    tensors among ``args``/``kwargs`` (also inside tuples, lists and dicts) and tensors ``fn`` reads from its
    closure receive gradients. Its outputs may be a Tensor or a tuple, list or dict of them. Gradients are the
    same bits as those of ``fn`` recorded directly; the recomputation must return the same structure, shapes
    and dtypes (else :class:`gpudp.TapeError`). Without a tape, or when no input requires a gradient, this is
    ``fn(*args, **kwargs)``.
    """
    if not callable(fn):
        raise TypeError(f"checkpoint: fn must be callable, got {type(fn).__name__}")
    tape = current_tape()
    if tape is None or tape.discovering:
        return fn(*args, **kwargs)
    disc = _Discovery()
    with _recording(disc):
        out = fn(*args, **kwargs)
    in_flat, _ = _pytree.flatten((args, kwargs))
    flat, structure = _pytree.flatten(out)
    inputs = _node_inputs(in_flat, disc, flat)
    if not any(t.requires_grad for t in inputs):
        return out
    leaves, out_index = _node_outputs(flat, inputs)
    if not out_index:
        return out
    ctx = Context(())
    ctx.save_for_backward(*[t.data for t in inputs])
    ctx.params = (fn, args, kwargs, tuple(out_index), _signature(flat), inputs)
    ctx.structure = structure
    _record(tape, _Checkpoint, ctx, inputs, [leaves[i] for i in out_index])
    return _pytree.unflatten(structure, leaves)


# -- the binomial schedule ---------------------------------------------------------------------------------------

def _beta(s, r):
    return math.comb(s + r, s) if r >= 0 else 0


def _repetitions(t, s):
    """The least ``r`` with ``β(s, r) ≥ t``."""
    r, b = 0, 1
    while b < t:
        r += 1
        b = b * (s + r) // r
    return r


def _split(t, s, first_sweep):
    """Where to place the next checkpoint when reversing ``t ≥ 2`` steps holding ``s ≥ 2`` states (the one
    at the start included): an offset in ``[1, t)`` that minimises the recomputed steps. ``first_sweep``: the
    steps up to the end are run anyway (the forward pass), so advancing to the split is free."""
    r = _repetitions(t, s)
    lo = max(_beta(s, r - 2) if r >= 2 else 1, t - _beta(s - 1, r) + (1 if first_sweep else 0))
    return min(max(lo, 1), t - 1)


def _first_checkpoints(steps, checkpoints):
    """The steps after which the forward pass stores a state (the states at 0 … are the first checkpoints)."""
    out, i, s = [], 0, checkpoints
    while steps - i > 1 and s >= 2:
        i += _split(steps - i, s, True)
        out.append(i)
        s -= 1
    return out


def _reverse_counts(t, s, first_sweep):
    """``(recomputed steps, peak states)`` of reversing ``t`` steps with ``s`` states (start included)."""
    if t <= 1:
        return 0, 1
    if s <= 1:
        return t * (t - 1) // 2, 1
    m = _split(t, s, first_sweep)
    right, peak_right = _reverse_counts(t - m, s - 1, first_sweep)
    left, peak_left = _reverse_counts(m, s, False)
    return (0 if first_sweep else m) + right + left, max(1 + peak_right, peak_left)


RolloutInfo = namedtuple("RolloutInfo", ["steps", "checkpoints", "recomputed_steps", "peak_states", "peak_bytes"])
RolloutInfo.__doc__ = """The schedule of a checkpointed :func:`rollout`.

``recomputed_steps``: steps run again in the backward pass (besides the forward pass's ``steps`` and the one
recorded run of each step); ``peak_states``: the most states held at once (the initial state included);
``peak_bytes``: the most bytes held at once during the backward pass (states plus the inner tape of one step),
``None`` until a backward pass ran."""


def revolve_counts(steps, checkpoints):
    """The :class:`RolloutInfo` counts of reversing ``steps`` steps holding at most ``checkpoints`` states
    (``peak_bytes`` is ``None``): the least number of recomputed steps for that memory."""
    steps = _check_count("revolve_counts", "steps", steps, 0)
    checkpoints = _check_count("revolve_counts", "checkpoints", checkpoints, 1)
    if steps == 0:
        return RolloutInfo(0, checkpoints, 0, 1, None)
    recomputed, peak = _reverse_counts(steps, checkpoints, True)
    return RolloutInfo(steps, checkpoints, recomputed, peak, None)


def _check_count(fn, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return value


# -- rollout -----------------------------------------------------------------------------------------------------

class _Rollout(Operator):
    """The node of a checkpointed :func:`rollout`; see there."""

    accumulates = True

    @staticmethod
    def backward_accumulate(ctx, g_out, acc):
        ctx.saved  # raises when a backward pass freed this tape
        run = ctx.run
        seeds = [None] * run.n_leaves
        for i, g in zip(run.out_index, g_out):
            seeds[i] = g
        saved, n = ctx.saved, run.n_leaves
        run.backward({j: list(saved[k * n:(k + 1) * n]) for k, j in enumerate(run.snapshot_steps)}, seeds,
                     ctx.needs_input_grad, acc)
        ctx.rollout_info = run.info
        return acc


class _Run:
    """State, schedule and counters of one checkpointed rollout."""

    def __init__(self, step, params, steps, checkpoints, structure, leaves0, sig, state_requires, outer):
        self.step, self.params, self.steps, self.c = step, params, steps, checkpoints
        self.structure, self.sig = structure, sig
        self.n_leaves = len(sig)
        self.leaves0 = leaves0                # the initial state's leaves as given (Tensors or arrays)
        self.state_requires = state_requires  # per leaf: a Tensor requiring a gradient after a step
        self.outer = outer                    # the node's inputs: initial-state, parameter and closure tensors
        self.snapshots = {}                   # step -> raw leaves of the state there
        self.recomputed = 0
        self.peak_states = 1
        self.peak_bytes = 0
        self.state_bytes = sum(arrays.nbytes(x.data if isinstance(x, Tensor) else x) for x in leaves0
                               if arrays.is_array(x.data if isinstance(x, Tensor) else x))
        self.info = None

    def predicted(self):
        return revolve_counts(self.steps, self.c)

    # one step, checked
    def call(self, leaves, t):
        new = self.step(_pytree.unflatten(self.structure, leaves), **self.params)
        flat, structure = _pytree.flatten(new)
        if structure != self.structure or _signature(flat) != self.sig:
            raise ValueError(f"rollout: step {t} returned a state of another structure than it was given "
                             f"({_mismatch(structure, flat, self.structure, self.sig)}); the step must return the "
                             f"state's structure, shapes and dtypes")
        return flat

    def _raw(self, flat):
        return [x.data if isinstance(x, Tensor) else x for x in flat]

    def _leaves_at(self, j, raw):
        if j == 0:
            return list(self.leaves0)
        return [Tensor(x, requires_grad=True) if req else x for x, req in zip(raw, self.state_requires)]

    def advance(self, i, j):
        """The raw state at step ``j`` from the snapshot at ``i`` (no recording)."""
        raw = self.snapshots[i]
        leaves = list(self.leaves0) if i == 0 else [Tensor(x) if req else x
                                                     for x, req in zip(raw, self.state_requires)]
        for t in range(i, j):
            leaves = self.call(leaves, t)
        self.recomputed += j - i
        return self._raw(leaves)

    def held(self):
        n = len(self.snapshots)
        self.peak_states = max(self.peak_states, n)
        return n * self.state_bytes

    def backward(self, snapshots, seeds, needs, acc):
        self.targets = {t._uid for t, need in zip(self.outer, needs) if need}
        self.snapshots = snapshots
        self.recomputed, self.peak_states, self.peak_bytes = 0, 1, 0
        try:
            self.reverse(0, self.steps, self.c, True, seeds, acc)
        finally:
            self.snapshots = {}
        self.info = RolloutInfo(self.steps, self.c, self.recomputed, self.peak_states, self.peak_bytes)

    def record(self, j, raw, seeds, acc):
        """Record step ``j`` from the raw state ``raw`` on an inner tape and differentiate it: the gradient
        w.r.t. the state at ``j``, per leaf."""
        leaves = self._leaves_at(j, raw)
        inner = Tape()
        with _recording(inner):
            flat = self.call(leaves, j)
        self.peak_bytes = max(self.peak_bytes, self.held() + inner.memory_bytes)
        if j == 0:   # the initial state's tensors are the node's inputs: their gradients stay in acc
            _inner_sweep(inner, flat, seeds, self.targets, acc)
            return None
        own = {x._uid for x in leaves if isinstance(x, Tensor)}
        _inner_sweep(inner, flat, seeds, self.targets | own, acc)
        return [acc.pop(x._uid, None) if isinstance(x, Tensor) else None for x in leaves]

    def reverse(self, i0, i1, s, first_sweep, seeds, acc):
        if i1 - i0 == 1:
            return self.record(i0, self.snapshots[i0], seeds, acc)
        if s <= 1:
            for j in range(i1 - 1, i0 - 1, -1):
                raw = self.snapshots[i0] if j == i0 else self.advance(i0, j)
                seeds = self.record(j, raw, seeds, acc)
            return seeds
        m = i0 + _split(i1 - i0, s, first_sweep)
        if not first_sweep:
            self.snapshots[m] = self.advance(i0, m)
        seeds = self.reverse(m, i1, s - 1, first_sweep, seeds, acc)
        del self.snapshots[m]
        return self.reverse(i0, m, s, False, seeds, acc)


def rollout(step, state, steps, *, checkpoints=None, **params):
    """``state ← step(state, **params)``, ``steps`` times; returns the final state.

    ``state`` is a Tensor (or array) or a tuple, list or dict of them; every step must return the same
    structure, shapes and dtypes (else ``ValueError``). Tensors among ``params`` and tensors ``step`` reads from
    its closure (a velocity, network weights) are inputs of the rollout and receive gradients like ``state``.

    ``checkpoints=None`` records every step on the tape (memory grows with ``steps``). ``checkpoints=c``
    (an int ``>= 1``) records one node that holds at most ``c`` states (the initial one included) and, in the
    backward pass, recomputes the others on the binomial (Revolve) schedule: the fewest recomputed steps for
    ``c`` states (:func:`revolve_counts`; ``c ≈ √steps`` costs about two extra forward sweeps, ``c = 1``
    recomputes quadratically). Gradients are the same bits as with ``checkpoints=None``. The schedule's
    counts are in :attr:`gpudp.Tape.rollouts` after the backward pass.
    """
    if not callable(step):
        raise TypeError(f"rollout: step must be callable, got {type(step).__name__}")
    steps = _check_count("rollout", "steps", steps, 0)
    if checkpoints is not None:
        checkpoints = _check_count("rollout", "checkpoints", checkpoints, 1)
    leaves0, structure = _pytree.flatten(state)
    sig = _signature(leaves0)
    for i, s in enumerate(sig):
        if s is None:
            raise TypeError(f"rollout: the state must hold Tensors or arrays (in tuples, lists or dicts); leaf {i} "
                            f"of {_pytree.describe(structure)} is a {type(leaves0[i]).__name__}")
    run = _Run(step, params, steps, checkpoints, structure, leaves0, sig, None, None)
    tape = current_tape()
    if checkpoints is None or tape is None or tape.discovering or steps == 0:
        flat = leaves0
        for t in range(steps):
            flat = run.call(flat, t)
        return _pytree.unflatten(structure, flat)

    first = set(_first_checkpoints(steps, checkpoints))
    snapshots = {0: run._raw(leaves0)}
    requires = [False] * len(sig)
    disc = _Discovery()
    flat = leaves0
    with _recording(disc):
        for t in range(steps):
            flat = run.call(flat, t)
            for i, x in enumerate(flat):
                requires[i] = requires[i] or (isinstance(x, Tensor) and x.requires_grad)
            if t + 1 in first:
                snapshots[t + 1] = run._raw(flat)
    p_flat, _ = _pytree.flatten(params)
    inputs = _node_inputs(list(leaves0) + list(p_flat), disc, flat)
    if not any(t.requires_grad for t in inputs):
        return _pytree.unflatten(structure, flat)
    leaves, out_index = _node_outputs(flat, inputs)
    if not out_index:
        return _pytree.unflatten(structure, flat)
    run.state_requires, run.outer, run.out_index = requires, inputs, out_index
    run.snapshot_steps = sorted(snapshots)
    ctx = Context(())
    ctx.save_for_backward(*[a for j in run.snapshot_steps for a in snapshots[j]])
    ctx.run = run
    ctx.rollout_info = None
    _record(tape, _Rollout, ctx, inputs, [leaves[i] for i in out_index])
    return _pytree.unflatten(structure, leaves)
