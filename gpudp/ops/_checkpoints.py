"""Checkpointed backward pass of the monolithic ``T``-step advection operators (``checkpoints=c``).

The forward pass keeps ``d^0, d^L, d^{2L}, …`` (``L = ceil(T / c)``, at most ``c`` states, one array) instead of
``d^0 … d^{T-1}``. The backward pass walks the segments from the last to the first: it recomputes the segment's
states from its checkpoint into one buffer of ``L`` states (allocated once per backward pass), runs the
adjoint kernels over the segment, and hands the state gradient and the running velocity gradient on to the
previous segment. The kernels add every step's velocity gradient in the order of a single ``T``-step adjoint
call, so the gradients are bitwise those of the stored-everything path.
"""
from __future__ import annotations

import numbers


def check(fn, checkpoints):
    """``checkpoints`` validated: ``None`` or an int ``>= 1`` (bool rejected)."""
    if checkpoints is None:
        return None
    if isinstance(checkpoints, bool) or not isinstance(checkpoints, numbers.Integral):
        raise TypeError(f"{fn}: checkpoints must be None or an int >= 1 (the number of states kept for the "
                        f"backward pass), got {checkpoints!r} of type {type(checkpoints).__name__}")
    if checkpoints < 1:
        raise ValueError(f"{fn}: checkpoints must be None or an int >= 1 (the number of states kept for the "
                         f"backward pass), got {checkpoints!r}")
    return int(checkpoints)


def segment_length(steps, checkpoints):
    """The segment length ``L = ceil(T / c)``, or ``None`` where every state is stored (``c`` None or ``>= T``)."""
    if checkpoints is None or checkpoints >= steps:
        return None
    return -(-steps // checkpoints)


def adjoint(g, saved, steps, L, buffer, recompute, adjoint_steps, need_first):
    """The gradients of ``steps`` steps from the checkpoints ``saved`` (``saved[s]`` the state ``d^{sL}``).

    ``buffer``: room for ``L`` states, indexed along its first axis. ``recompute(src, n, out, states)`` runs
    ``n`` forward steps from ``src`` with every state saved: ``states`` (``n`` slots) receives ``src`` and the
    next ``n − 1`` states, ``out`` the last one. ``adjoint_steps(g, states, n, need_g, gu)`` returns
    ``(gradient w.r.t. the segment's first state or None, gu)`` for its ``n`` steps, adding into ``gu`` unless it
    is ``None``. ``need_first``: whether the gradient w.r.t. ``d^0`` is wanted. Returns ``(gd or None, gu)``."""
    gd, gu = g, None
    for s in range((steps + L - 1) // L - 1, -1, -1):
        n = min(L, steps - s * L)
        if n > 1:
            recompute(saved[s], n - 1, buffer[n - 1], buffer[:n - 1])
            states = buffer[:n]
        else:
            states = saved[s:s + 1]
        gd, gu = adjoint_steps(gd, states, n, need_first or s > 0, gu)
    return gd, gu
