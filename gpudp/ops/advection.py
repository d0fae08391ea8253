"""Upwind advection: forward and adjoint (DESIGN.md §3).

One step along each axis ``k`` (``Δt`` the time step, ``Δx_k`` the spacing)::

    d'_i = d_i − Δt Σ_k [ min(u_k,i, 0) (d_{i+e_k} − d_i) / Δx_k + max(u_k,i, 0) (d_i − d_{i−e_k}) / Δx_k ]

``steps = T`` applies ``T`` steps with the same ``u`` as one operator: the forward loop runs inside one
compiled call (CPU) or without host round trips (GPU), and the adjoint runs the ``T`` transposed steps,
accumulating the velocity gradient ``Σ_t (∂d^{t+1}/∂u)ᵀ ḡ^{t+1}``. The states ``d^0 … d^{T-1}`` are stored
only when ``u`` needs a gradient (the ``d``-adjoint is linear and needs only ``u``); with ``checkpoints = c``
only every ``ceil(T/c)``-th of them, the others recomputed segment by segment (``gpudp.ops._checkpoints``).
"""
from __future__ import annotations

from ..backends import get_backend
from ..errors import ShapeError, StabilityError
from ..tape import Operator, Tensor
from . import _checkpoints
from . import _validate as V

_FN = "advect_upwind"


class AdvectUpwind(Operator):
    """The monolithic ``T``-step upwind advection operator; inputs ``(d, u)``."""

    replayable = True  # (the CFL check, the one that reads the values, is part of forward)

    @staticmethod
    def forward(ctx, d, u, *, plan):
        # plan: (coef, bc, shape3, ndim, launcher) of the grid, dt, dtype and size (see _grid_plan), steps, the
        # segment length of the checkpoints (None: every state), the backend, the layout (Bu, F, D, N) and
        # (dt, grid) for the CFL check (None: no check)
        (coef, bc, shape3, ndim, launcher), steps, L, backend, (Bu, F, D, N), cfl = plan
        need_d, need_u = ctx.needs_input_grad
        save_states = need_u and steps > 1
        # checkpointed: only d^0, d^L, d^2L, … (L = ceil(T / c)) are kept
        if not save_states:
            L = None
        if launcher is not None and L is None:
            # one velocity field on a 1-D grid: the kernel computes max |u|, checked after it (a failing check
            # raises before anything is recorded)
            after = cfl is not None and launcher.max_abs_u and Bu == 1
            if cfl is not None and not after:
                _check_cfl(backend, u, plan[4], cfl[0], cfl[1])
            out, states, umax = launcher.forward(d, u, Bu, F, steps, save_states)
            if after and not umax * cfl[0] / cfl[1].spacing[0] <= 1.0:  # (as _check_cfl computes it)
                _check_cfl(backend, u, plan[4], cfl[0], cfl[1])  # raises the error
        else:
            if cfl is not None:
                _check_cfl(backend, u, plan[4], cfl[0], cfl[1])
            dc = backend.ascontiguous(d).reshape(Bu, F, N)
            uc = backend.ascontiguous(u).reshape(Bu, D, N)
            out, states = backend.advect_forward(dc, uc, coef, bc, shape3, ndim, steps, save_states, L or 1)
            out = out.reshape(d.shape)
        if need_u:
            ctx.saved_arrays = (u, states if steps > 1 else d)
        elif need_d:
            ctx.saved_arrays = (u, None)
        ctx.params = (plan, L, d.shape)
        return out

    @staticmethod
    def backward(ctx, g):
        ((coef, bc, shape3, ndim, launcher), steps, _, backend, (Bu, F, D, N), _), L, d_shape = ctx.params
        u, states = ctx.saved
        need_d, need_u = ctx.needs_input_grad
        if g is None or not (need_d or need_u):
            return None, None
        if launcher is not None and L is None and type(g) is type(u) and g.dtype == launcher.dtype:
            # every state stored (steps > 1), or d itself (one step): the launcher takes them as they are
            gd, gu = launcher.adjoint(g, states, u, Bu, F, steps, need_d, need_u)
            return (gd.reshape(d_shape) if need_d else None), gu
        gc = backend.ascontiguous(g).reshape(Bu, F, N)
        uc = backend.ascontiguous(u).reshape(Bu, D, N)
        if need_u and L is not None:
            def recompute(src, n, out, st):
                backend.advect_forward(src, uc, coef, bc, shape3, ndim, n, True, 1, out, st)

            def adjoint(gs, st, n, need_g, gu):
                return backend.advect_adjoint(gs, st, uc, coef, bc, shape3, ndim, n, need_g, True, gu)

            buffer = backend.empty((L, Bu, F, N), gc.dtype)  # one segment's states, reused by every segment
            gd, gu = _checkpoints.adjoint(gc, states, steps, L, buffer, recompute, adjoint, need_d)
        else:
            st = None
            if need_u:  # (steps > 1: the states the kernel saved, already in its layout; else d itself)
                st = states if steps > 1 else backend.ascontiguous(states).reshape(1, Bu, F, N)
            gd, gu = backend.advect_adjoint(gc, st, uc, coef, bc, shape3, ndim, steps, need_d, need_u)
        return (gd.reshape(d_shape) if need_d else None), (gu.reshape(u.shape) if need_u else None)


def advect_upwind(d, u, dt, grid, steps=1, check_cfl=True, checkpoints=None):
    """Advect ``d`` with velocity ``u`` by ``steps`` first-order upwind steps of size ``dt``.

    Parameters
    ----------
    d : Tensor or array, shape ``(*grid.shape)``, ``(*lead, *grid.shape)`` or ``(B, C, *grid.shape)``
        Advected quantity: a scalar field, a vector field (every component is advected) or a batch of them.
    u : Tensor or array, shape ``(D, *grid.shape)`` or ``(B, D, *grid.shape)``
        Collocated velocity (component ``k`` along axis ``k``). With a batched ``u`` of batch ``B``, ``d``
        must be ``(B, *grid.shape)`` or ``(B, C, *grid.shape)`` and item ``b`` of ``d`` moves with ``u[b]``;
        with an unbatched ``u`` every leading entry of ``d`` moves with ``u``.
    dt : float
        Time step (finite, >= 0).
    grid : gpudp.Grid
    steps : int
        Number of steps ``T >= 1`` with the same ``u``, applied as one operator.
    check_cfl : bool
        Raise :class:`gpudp.StabilityError` when ``Δt Σ_k max|u_k| / Δx_k > 1`` (one host sync).
    checkpoints : int or None
        What the tape keeps of the ``T`` states when ``u`` needs a gradient. ``None`` (or ``c >= T``): all
        ``T`` states. An int ``c >= 1``: only ``d^0, d^L, d^{2L}, …`` with ``L = ceil(T / c)`` (at most ``c``
        states, besides ``u``); the backward pass recomputes each segment's states from its checkpoint into one
        buffer of ``L`` states, about one extra forward pass in all. The gradients are bitwise those of
        ``checkpoints=None``. Without a velocity gradient nothing but ``u`` is kept either way.

    Returns the advected field (a Tensor when an input is a Tensor, else an array of the active backend).
    Gradients flow to ``d`` and ``u``; the derivative at ``u = 0`` exactly takes the ``u > 0`` branch.
    Inputs are never modified.
    """
    backend = get_backend()
    ua = u._data if isinstance(u, Tensor) else u
    layout = _layout(backend, grid, d._data if isinstance(d, Tensor) else d, ua)
    # the common cases without a call: a finite float dt >= 0 and an int steps >= 1
    if type(dt) is not float or not 0.0 <= dt < _INF:
        dt = V.check_scalar(_FN, "dt", dt, nonnegative=True)
    if type(steps) is not int or steps < 1:
        steps = V.check_int(_FN, "steps", steps, 1)
    L = None
    if checkpoints is not None:
        L = _checkpoints.segment_length(steps, _checkpoints.check(_FN, checkpoints))
    geom = _grid_plan(backend, grid, dt, ua.dtype, layout)
    return AdvectUpwind.apply(d, u, plan=(geom, steps, L, backend, layout, (dt, grid) if check_cfl else None))


_INF = float("inf")

# The layouts (Bu, F, D, N) of the argument combinations already checked, keyed by everything the checks
# read: the backend, the grid's type and shape, and the arrays' types, dtypes and shapes. A repeated
# combination skips the checks (they would pass again); one that fails them raises and is never stored.
_LAYOUTS = {}
_LAYOUTS_MAX = 256


def _layout(backend, grid, da, ua):
    """``(Bu, F, D, N)`` of the arrays ``d`` and ``u`` on ``grid``, after checking their types and shapes."""
    try:
        key = (backend, type(grid), grid._shape, type(da), type(ua), da.dtype, ua.dtype, da.shape, ua.shape)
        layout = _LAYOUTS.get(key)
    except (AttributeError, TypeError):  # not a grid and arrays: the checks below say which
        key = layout = None
    if layout is not None:
        return layout
    V.check_grid(_FN, grid)
    V.check_array(_FN, "d", da, backend)
    V.check_array(_FN, "u", ua, backend)
    if da.dtype != ua.dtype:
        V.check_same_dtype(_FN, d=da, u=ua)
    D, N = grid.ndim, grid.size
    gshape = grid.shape
    # velocity: (D, *shape) or (B, D, *shape)
    ushape = tuple(ua.shape)
    if ushape[-D:] != gshape or len(ushape) not in (D + 1, D + 2) or ushape[-D - 1] != D:
        raise V.shape_error(_FN, "u", ushape, f"(D, *grid.shape) = {(D,) + gshape} or (B, D, *grid.shape) "
                                              f"for a batch (grid {gshape})")
    dshape = tuple(da.shape)
    if len(dshape) < D or dshape[-D:] != gshape:
        raise V.shape_error(_FN, "d", dshape, f"(..., *grid.shape) with trailing axes {gshape}")
    lead = dshape[:-D]
    if len(ushape) == D + 2:
        Bu = ushape[0]
        if len(lead) not in (1, 2) or lead[0] != Bu:
            raise ShapeError(f"{_FN}: u is a batch of {Bu} velocity fields (shape {ushape}), so d must have shape "
                             f"({Bu}, *grid.shape) or ({Bu}, C, *grid.shape); got {dshape}")
        F = lead[1] if len(lead) == 2 else 1
    else:
        Bu = 1
        F = 1
        for n in lead:
            F *= n
    if F == 0 or Bu == 0:
        raise V.shape_error(_FN, "d", dshape, "at least one field (no zero-sized batch axes)")
    layout = (Bu, F, D, N)
    if key is not None:
        if len(_LAYOUTS) >= _LAYOUTS_MAX:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return layout


def _grid_plan(backend, grid, dt, dtype, layout):
    """``(coef, bc, shape3, ndim, launcher)``: the coefficients ``Δt / Δx_a`` per padded axis (0 on padded axes),
    the padded grid and the backend's launcher for them (``Backend.advect_launcher``; None: the operator calls
    ``advect_forward`` and ``advect_adjoint``)."""
    # kept on the grid (a grid is immutable), by (backend, dt, dtype, layout)
    plans = grid._advect_plans
    if plans is None:
        plans = grid._advect_plans = {}
    key = (backend, dt, dtype, layout)
    found = plans.get(key) if dt else None  # (dt = -0.0 and 0.0 differ in the sign of coef: not cached)
    if found is None:
        shape3, ndim, bc = V.padded(grid)
        coef = (0.0,) * (3 - ndim) + tuple([dt / h for h in grid.spacing])
        Bu, F, _, N = layout
        found = (coef, bc, shape3, ndim, backend.advect_launcher(coef, bc, shape3, ndim, dtype, Bu * F * N))
        if dt:
            if len(plans) >= _LAYOUTS_MAX:
                plans.clear()
            plans[key] = found
    return found


def _check_cfl(backend, u, layout, dt, grid):
    Bu, _, D, N = layout
    if Bu == 1 and D == 1:
        # one velocity field on a 1-D grid: max |u| as a Python float (the same value max_abs_per_row gives)
        cfl = backend.max_abs(u) * dt / grid.spacing[0]
        if cfl <= 1.0:
            return
    umax = backend.max_abs_per_row(backend.ascontiguous(u).reshape(Bu * D, N))
    if Bu == 1:
        # one velocity field: its D maxima as Python floats, cheaper than NumPy calls (same arithmetic)
        m, h = umax.tolist(), grid.spacing
        cfl = m[0] * dt / h[0]
        for k in range(1, D):
            cfl += m[k] * dt / h[k]
    else:
        umax = umax.reshape(Bu, D)
        cfl = float((umax * dt / V.grid_facts(grid)[2]).sum(axis=1).max())
    # a NaN or inf in u makes cfl NaN or inf (inf * 0 is NaN for dt = 0), so finite inputs pass one test
    if not cfl <= 1.0:
        if not (umax == umax).all() or (umax == float("inf")).any():
            raise ValueError(f"{_FN}: u contains non-finite values (NaN or inf)")
        if cfl > 1.0:
            raise StabilityError(f"{_FN}: CFL number dt * sum_k max|u_k| / dx_k = {cfl:.4g} exceeds 1 (dt = {dt}, "
                                 f"spacing {grid.spacing}); reduce dt, or pass check_cfl=False to skip the check")
