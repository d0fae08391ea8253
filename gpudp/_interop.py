"""What the framework adapters (:mod:`gpudp.torch`, :mod:`gpudp.jax`) share: nested arguments and results,
and a function run on a gpudp tape whose outputs are all seeded in one reverse sweep."""
from __future__ import annotations

from . import arrays
from .tape import Operator, Tape, Tensor


def flatten(tree):
    """``(leaves, rebuild)``: the leaves of nested tuples, lists (namedtuples too) and dicts, and a function
    that rebuilds the same structure from a list of new leaves."""
    if isinstance(tree, dict):
        keys = list(tree)
        parts = [flatten(tree[k]) for k in keys]
    elif isinstance(tree, (tuple, list)):
        parts = [flatten(x) for x in tree]
    else:
        return [tree], lambda new: new[0]
    leaves, sizes = [], []
    for sub, _ in parts:
        leaves.extend(sub)
        sizes.append(len(sub))
    kind = type(tree)

    def rebuild(new):
        out, pos = [], 0
        for (_, sub_rebuild), n in zip(parts, sizes):
            out.append(sub_rebuild(new[pos:pos + n]))
            pos += n
        if isinstance(tree, dict):
            return dict(zip(keys, out))
        if kind in (tuple, list):
            return kind(out)
        return kind(*out)  # a namedtuple

    return leaves, rebuild


def is_array_leaf(x):
    return isinstance(x, Tensor) or arrays.is_array(x)


class _Join(Operator):
    """Joins a function's differentiable outputs into one scalar node; its backward hands out the seeds put
    in ``box``, so one reverse sweep of the tape carries the gradients of all outputs at once."""

    @staticmethod
    def forward(ctx, *outputs, box):
        ctx.box = box
        return arrays.apply(lambda xp, a: xp.zeros((), dtype=a.dtype), outputs[0])

    @staticmethod
    def backward(ctx, g):
        return tuple(ctx.box)


class Recording:
    """``fn(*args, **kwargs)`` evaluated on a gpudp :class:`~gpudp.Tape` (only when ``record``).

    ``leaves``/``rebuild`` describe the result (see :func:`flatten`); :meth:`gradient` runs the reverse sweep
    for output seeds given per result leaf. The tape keeps its saved arrays (``retain=True``), so the
    gradient can be taken more than once; they are freed with the recording."""

    def __init__(self, fn, args, kwargs, record):
        self._box = []
        self.tape = self.join = None
        if record:
            with Tape() as tape:
                result = fn(*args, **kwargs)
                self.leaves, self.rebuild = flatten(result)
                self.diff = [o for o in self.leaves if isinstance(o, Tensor) and o.requires_grad]
                if self.diff:
                    self.join = _Join.apply(*self.diff, box=self._box)
            self.tape = tape
        else:
            result = fn(*args, **kwargs)
            self.leaves, self.rebuild = flatten(result)
            self.diff = []
        self.result = result
        index = {id(o): k for k, o in enumerate(self.diff)}
        #: for each result leaf, its position among the differentiable outputs (None: not differentiable)
        self.diff_index = [index.get(id(o)) if isinstance(o, Tensor) else None for o in self.leaves]

    def gradient(self, seeds, sources):
        """Gradients (arrays) w.r.t. the ``sources`` tensors, given ``seeds``: ``{result leaf index: array or
        None}``. ``None`` for every source when no seed reaches a differentiable output."""
        box = [None] * len(self.diff)
        for i, g in seeds.items():
            k = self.diff_index[i]
            if k is not None and g is not None:
                want = self.diff[k].dtype
                box[k] = g if g.dtype == want else arrays.apply(lambda xp, a: a.astype(want), g)
        if self.join is None or all(g is None for g in box):
            return [None] * len(sources)
        self._box[:] = box
        try:
            return self.tape.gradient(self.join, list(sources), retain=True)
        finally:
            self._box.clear()
