"""Upwind advection: forward and adjoint (DESIGN.md §3).

One step along each axis ``k`` (``Δt`` the time step, ``Δx_k`` the spacing)::

    d'_i = d_i − Δt Σ_k [ min(u_k,i, 0) (d_{i+e_k} − d_i) / Δx_k + max(u_k,i, 0) (d_i − d_{i−e_k}) / Δx_k ]

``steps = T`` applies ``T`` steps with the same ``u`` as one operator: the forward loop runs inside one
compiled call (CPU) or without host round trips (GPU), and the adjoint runs the ``T`` transposed steps,
accumulating the velocity gradient ``Σ_t (∂d^{t+1}/∂u)ᵀ ḡ^{t+1}``. The states ``d^0 … d^{T-1}`` are stored
only when ``u`` needs a gradient (the ``d``-adjoint is linear and needs only ``u``).
"""
from __future__ import annotations

from ..backends import get_backend
from ..errors import ShapeError, StabilityError
from ..tape import Operator
from . import _validate as V

_FN = "advect_upwind"


class AdvectUpwind(Operator):
    """The monolithic ``T``-step upwind advection operator; inputs ``(d, u)``."""

    @staticmethod
    def forward(ctx, d, u, *, dt, grid, steps, backend, layout):
        Bu, F, D, N = layout
        shape3, ndim, bc = V.padded(grid)
        coef = (0.0,) * (3 - ndim) + tuple([dt / h for h in grid.spacing])
        dc = backend.ascontiguous(d).reshape(Bu, F, N)
        uc = backend.ascontiguous(u).reshape(Bu, D, N)
        need_u = ctx.needs_input_grad[1]
        save_states = need_u and steps > 1
        out, states = backend.advect_forward(dc, uc, coef, bc, shape3, ndim, steps, save_states)
        if need_u:
            ctx.save_for_backward(u, states if steps > 1 else d)
        elif ctx.needs_input_grad[0]:
            ctx.save_for_backward(u, None)
        ctx.params = (coef, bc, shape3, ndim, steps, backend, layout, tuple(d.shape))
        return out.reshape(d.shape)

    @staticmethod
    def backward(ctx, g):
        coef, bc, shape3, ndim, steps, backend, (Bu, F, D, N), d_shape = ctx.params
        u, states = ctx.saved
        need_d, need_u = ctx.needs_input_grad
        if g is None or not (need_d or need_u):
            return None, None
        gc = backend.ascontiguous(g).reshape(Bu, F, N)
        uc = backend.ascontiguous(u).reshape(Bu, D, N)
        st = None
        if need_u:
            st = backend.ascontiguous(states).reshape(steps, Bu, F, N)
        gd, gu = backend.advect_adjoint(gc, st, uc, coef, bc, shape3, ndim, steps, need_d, need_u)
        return (gd.reshape(d_shape) if need_d else None), (gu.reshape(u.shape) if need_u else None)


def advect_upwind(d, u, dt, grid, steps=1, check_cfl=True):
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

    Returns the advected field (a Tensor when an input is a Tensor, else an array of the active backend).
    Gradients flow to ``d`` and ``u``; the derivative at ``u = 0`` exactly takes the ``u > 0`` branch.
    Inputs are never modified.
    """
    backend = get_backend()
    V.check_grid(_FN, grid)
    da = V.check_array(_FN, "d", d, backend)
    ua = V.check_array(_FN, "u", u, backend)
    if da.dtype != ua.dtype:
        V.check_same_dtype(_FN, d=da, u=ua)
    dt = V.check_scalar(_FN, "dt", dt, nonnegative=True)
    steps = V.check_int(_FN, "steps", steps, 1)
    (_, D, _), N, spacing = V.grid_facts(grid)
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
    if check_cfl:
        _check_cfl(backend, ua, Bu, D, N, dt, grid, spacing)
    return AdvectUpwind.apply(d, u, dt=dt, grid=grid, steps=steps, backend=backend, layout=(Bu, F, D, N))


def _check_cfl(backend, u, Bu, D, N, dt, grid, spacing):
    umax = backend.max_abs_per_row(backend.ascontiguous(u).reshape(Bu * D, N))
    if Bu == 1:
        # one velocity field: its D maxima as Python floats, cheaper than NumPy calls (same arithmetic)
        m, h = umax.tolist(), grid.spacing
        cfl = m[0] * dt / h[0]
        for k in range(1, D):
            cfl += m[k] * dt / h[k]
    else:
        umax = umax.reshape(Bu, D)
        cfl = float((umax * dt / spacing).sum(axis=1).max())
    # a NaN or inf in u makes cfl NaN or inf (inf * 0 is NaN for dt = 0), so finite inputs pass one test
    if not cfl <= 1.0:
        if not (umax == umax).all() or (umax == float("inf")).any():
            raise ValueError(f"{_FN}: u contains non-finite values (NaN or inf)")
        if cfl > 1.0:
            raise StabilityError(f"{_FN}: CFL number dt * sum_k max|u_k| / dx_k = {cfl:.4g} exceeds 1 (dt = {dt}, "
                                 f"spacing {grid.spacing}); reduce dt, or pass check_cfl=False to skip the check")
