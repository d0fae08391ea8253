"""Advection and interpolation on the MAC (staggered) grid (DESIGN.md §6), with exact adjoints.

First-order upwind in flux form (donor cell, conservative), the scheme of jax-cfd's ``advect_upwind``. With
face ``f`` of axis ``k`` between cells ``f − e_k`` and ``f`` and ``up(w, a, b) = w·a if w > 0 else w·b``::

    cell-centred q:   q'_i = q_i − Δt Σ_k (F_k[i + e_k] − F_k[i]) / Δx_k,  F_k[f] = up(u_k[f], q_{f−e_k}, q_f)
    face component a: U_a'[f] = U_a[f] − Δt [(G[f] − G[f − e_a]) / Δx_a
                                              + Σ_{b≠a} (H_b[f + e_b] − H_b[f]) / Δx_b]
                      G[i]   = up(½(u_a[i] + u_a[i + e_a]), U_a[i], U_a[i + e_a])       (at cell centres)
                      H_b[f] = up(½(u_b[f − e_a] + u_b[f]), U_a[f − e_b], U_a[f])      (at edges)

Values outside the arrays follow the grid's ghost rules (periodic wraps, dirichlet 0, neumann repeats: free slip
for a tangential velocity); the boundary faces of a non-periodic axis ``a`` in component ``a`` keep their
value. Every term uses the old velocity. Interpolation: ``at_centers(u)_k = ½(u_k[i] + u_k[i + e_k])``,
``at_faces(c)_k[f] = ½(c_{f−e_k} + c_f)``. The solid mask of the grid is ignored by all three.

Adjoints are hand-written gather-form kernels (``gpudp.backends.mac_stencils``): w.r.t. ``q`` they depend on
``u`` only (the scheme is linear in ``q``); w.r.t. ``u`` they need the state, and at ``w = 0`` exactly they take
the ``w > 0`` branch (``∂up/∂w = a``). ``steps = T`` for a cell-centred ``q`` is one operator whose adjoint runs
the ``T`` transposed steps, the states ``q^0 … q^{T-1}`` kept only when ``u`` needs a gradient (with
``checkpoints = c`` only every ``ceil(T/c)``-th, the others recomputed segment by segment). Each operator
takes the ``D`` face arrays of a staggered field as separate inputs (outputs), so self-advection
``advect_mac(u, u, …)`` passes the same tensors twice and the tape adds the two gradients.
"""
from __future__ import annotations

from ..backends import get_backend
from ..errors import ShapeError, StabilityError
from ..geometry import geometry
from ..tape import Operator
from . import _checkpoints
from . import _validate as V
from .difference import check_cells, check_staggered

_FN = "advect_mac"


def _faces(backend, arrays, lead):
    """Face arrays as ``(*lead, M)`` contiguous views."""
    return tuple(backend.ascontiguous(a).reshape(lead + (-1,)) for a in arrays)


class AdvectMacCells(Operator):
    """``T`` donor-cell steps of a cell-centred field; inputs ``(q, u_0, …, u_{D-1})``."""

    @staticmethod
    def forward(ctx, q, *u, dt, grid, steps, backend, layout, checkpoints=None):
        Bu, F = layout
        geom = geometry(grid)
        qc = backend.ascontiguous(q).reshape(Bu, F, geom.size)
        uc = _faces(backend, u, (Bu,))
        needs = ctx.needs_input_grad
        need_u = any(needs[1:])
        save_states = need_u and steps > 1
        # checkpointed: only q^0, q^L, q^2L, … (L = ceil(T / c)) are kept
        L = _checkpoints.segment_length(steps, checkpoints) if save_states else None
        out, states = backend.mac_advect_cells(qc, uc, dt, geom, steps, save_states, L or 1)
        if need_u:
            ctx.save_for_backward(*u, states if steps > 1 else q)
        elif needs[0]:
            ctx.save_for_backward(*u)
        ctx.params = (dt, grid, steps, L, backend, layout, tuple(q.shape))
        return out.reshape(q.shape)

    @staticmethod
    def backward(ctx, g):
        dt, grid, steps, L, backend, (Bu, F), q_shape = ctx.params
        needs = ctx.needs_input_grad
        need_q, need_u = needs[0], any(needs[1:])
        D = grid.ndim
        if g is None or not (need_q or need_u):
            return (None,) * (1 + D)
        geom = geometry(grid)
        saved = ctx.saved
        u = saved[:D]
        N = geom.size
        gc = backend.ascontiguous(g).reshape(Bu, F, N)
        uc = _faces(backend, u, (Bu,))
        if need_u and L is not None:
            def recompute(src, n, out, st):
                backend.mac_advect_cells(src, uc, dt, geom, n, True, 1, out, st)

            def adjoint(gs, st, n, need_g, gu):
                return backend.mac_advect_cells_adjoint(gs, st, uc, dt, geom, n, need_g, True, gu)

            buffer = backend.empty((L, Bu, F, N), gc.dtype)  # one segment's states, reused by every segment
            gq, gu = _checkpoints.adjoint(gc, saved[D], steps, L, buffer, recompute, adjoint, need_q)
        else:
            states = backend.ascontiguous(saved[D]).reshape(steps, Bu, F, N) if need_u else None
            gq, gu = backend.mac_advect_cells_adjoint(gc, states, uc, dt, geom, steps, need_q, need_u)
        return ((gq.reshape(q_shape) if need_q else None),
                *((gu[k].reshape(u[k].shape) if needs[1 + k] else None) for k in range(D)))


class AdvectMacFaces(Operator):
    """One step of a staggered field; inputs ``(q_0, …, q_{D-1}, u_0, …, u_{D-1})``, outputs the ``D``
    advected components."""

    @staticmethod
    def forward(ctx, *arrays, dt, grid, backend, layout):
        Bu, F = layout
        D = grid.ndim
        geom = geometry(grid)
        q, u = arrays[:D], arrays[D:]
        out = backend.mac_advect_faces(_faces(backend, q, (Bu, F)), _faces(backend, u, (Bu,)), dt, geom)
        needs = ctx.needs_input_grad
        if any(needs[D:]):
            ctx.save_for_backward(*q, *u)
        elif any(needs[:D]):
            ctx.save_for_backward(*u)
        q_shapes = tuple(tuple(x.shape) for x in q)
        ctx.params = (dt, grid, backend, layout, q[0].dtype, q_shapes)
        return tuple(o.reshape(q_shapes[k]) for k, o in enumerate(out))

    @staticmethod
    def backward(ctx, *gs):
        dt, grid, backend, (Bu, F), dtype, q_shapes = ctx.params
        D = grid.ndim
        needs = ctx.needs_input_grad
        need_q, need_u = any(needs[:D]), any(needs[D:])
        if all(g is None for g in gs) or not (need_q or need_u):
            return (None,) * (2 * D)
        geom = geometry(grid)
        saved = ctx.saved
        u = saved[-D:]
        q = _faces(backend, saved[:D], (Bu, F)) if need_u else None
        g = tuple(backend.zeros((Bu, F, geom.face_count(a)), dtype) if gk is None
                  else backend.ascontiguous(gk).reshape(Bu, F, -1) for gk, a in zip(gs, geom.axes))
        gq, gu = backend.mac_advect_faces_adjoint(g, q, _faces(backend, u, (Bu,)), dt, geom, need_q, need_u)
        return (*((gq[k].reshape(q_shapes[k]) if needs[k] else None) for k in range(D)),
                *((gu[k].reshape(u[k].shape) if needs[D + k] else None) for k in range(D)))


class AtCenters(Operator):
    """Staggered → collocated; inputs the ``D`` components, one output ``(*lead, D, *grid.shape)``."""

    @staticmethod
    def forward(ctx, *u, grid, backend, lead):
        B = lead[0] if lead else 1
        geom = geometry(grid)
        out = backend.mac_at_centers(_faces(backend, u, (B,)), geom)
        ctx.params = (grid, backend, lead, tuple(tuple(x.shape) for x in u))
        return out.reshape(lead + (grid.ndim,) + grid.shape)

    @staticmethod
    def backward(ctx, g):
        grid, backend, lead, shapes = ctx.params
        if g is None:
            return (None,) * grid.ndim
        B = lead[0] if lead else 1
        geom = geometry(grid)
        gu = backend.mac_at_centers_adjoint(backend.ascontiguous(g).reshape(B, grid.ndim, geom.size), geom)
        return tuple(gu[k].reshape(shapes[k]) if need else None for k, need in enumerate(ctx.needs_input_grad))


class AtFaces(Operator):
    """Cells → faces; one input, ``D`` outputs."""

    @staticmethod
    def forward(ctx, c, *, grid, backend, lead):
        B = lead[0] if lead else 1
        geom = geometry(grid)
        out = backend.mac_at_faces(backend.ascontiguous(c).reshape(B, geom.size), geom)
        ctx.params = (grid, backend, lead, c.dtype)
        return tuple(o.reshape(lead + grid.face_shape(k)) for k, o in enumerate(out))

    @staticmethod
    def backward(ctx, *gs):
        grid, backend, lead, dtype = ctx.params
        if all(g is None for g in gs):
            return (None,)
        B = lead[0] if lead else 1
        geom = geometry(grid)
        g = tuple(backend.zeros((B, geom.face_count(a)), dtype) if gk is None
                  else backend.ascontiguous(gk).reshape(B, -1) for gk, a in zip(gs, geom.axes))
        return (backend.mac_at_faces_adjoint(g, geom).reshape(lead + grid.shape),)


# -- public functions ------------------------------------------------------------------------------------------

def advect_mac(q, u, dt, grid, steps=1, check_cfl=True, checkpoints=None):
    """Advect ``q`` by the staggered velocity ``u`` with ``steps`` donor-cell (flux-form upwind) steps of size
    ``dt`` on the MAC grid (DESIGN.md §6; on periodic grids jax-cfd's ``q + dt·advect_upwind(q, u)``).

    Parameters
    ----------
    q : Tensor or array, or a tuple of ``D`` of them
        A cell-centred field, shape ``(*lead, *grid.shape)`` (a scalar, a vector field whose components are
        advected alike, or a batch), or a staggered field: ``D`` face arrays, component ``k`` of shape
        ``grid.face_shape(k)`` or ``(B, *grid.face_shape(k))``.
    u : tuple of ``D`` Tensors or arrays
        The advecting staggered velocity, component ``k`` of shape ``grid.face_shape(k)``, or
        ``(B, *grid.face_shape(k))`` for a batch of ``B`` velocities; then item ``b`` of ``q`` moves with
        item ``b`` of ``u`` (``q`` of shape ``(B, *grid.shape)`` or ``(B, C, *grid.shape)``, or a staggered ``q``
        with the same batch). With an unbatched ``u`` every leading entry of ``q`` moves with ``u``.
        ``advect_mac(u, u, dt, grid)`` is self-advection (all components move with the old velocity).
    dt : float
        Time step (finite, >= 0).
    grid : gpudp.Grid
        Its solid mask, if any, is ignored (the next ``project`` removes momentum on closed faces).
    steps : int
        ``T >= 1`` steps with the same ``u``: one operator for a cell-centred ``q``, ``T`` recorded steps for a
        staggered one.
    check_cfl : bool
        Raise :class:`gpudp.StabilityError` when ``Δt Σ_k max|u_k| / Δx_k > 1`` (one host sync).
    checkpoints : int or None
        For a cell-centred ``q``: what the tape keeps of the ``T`` states when ``u`` needs a gradient.
        ``None`` (or ``c >= T``): all ``T`` states. An int ``c >= 1``: only ``q^0, q^L, q^{2L}, …`` with
        ``L = ceil(T / c)`` (at most ``c`` states, besides ``u``); the backward pass recomputes each segment's
        states from its checkpoint into one buffer of ``L`` states, about one extra forward pass in all. The
        gradients are bitwise those of ``checkpoints=None``. Without a velocity gradient nothing but ``u`` is
        kept either way.

    Returns the advected field: an array (a tuple of ``D`` for a staggered ``q``) of the active backend, or
    Tensors when an input is a Tensor. Gradients flow to ``q`` and ``u``; the velocity derivative at ``w = 0``
    exactly takes the ``w > 0`` branch. Inputs are never modified.
    """
    backend = get_backend()
    V.check_grid(_FN, grid)
    ua, u_lead = check_staggered(_FN, "u", u, grid, backend)
    dt = V.check_scalar(_FN, "dt", dt, nonnegative=True)
    steps = V.check_int(_FN, "steps", steps, 1)
    checkpoints = _checkpoints.check(_FN, checkpoints)
    Bu = u_lead[0] if u_lead else 1
    if isinstance(q, (tuple, list)):
        qa, q_lead = check_staggered(_FN, "q", q, grid, backend)
        if qa[0].dtype != ua[0].dtype:
            V.check_same_dtype(_FN, q=qa[0], u=ua[0])
        if u_lead and q_lead != u_lead:
            raise ShapeError(f"{_FN}: u is a batch of {Bu} velocity fields (component 0 of shape "
                             f"{tuple(ua[0].shape)}), so the staggered q must have the same batch: component 0 of "
                             f"shape {(Bu,) + grid.face_shape(0)}; got {tuple(qa[0].shape)}")
        F = 1 if u_lead or not q_lead else q_lead[0]
        if check_cfl:
            _check_cfl(backend, ua, Bu, dt, grid)
        return _staggered_steps(q, u, dt, grid, backend, (Bu, F), steps, checkpoints)
    qa = V.check_array(_FN, "q", q, backend)
    if qa.dtype != ua[0].dtype:
        V.check_same_dtype(_FN, q=qa, u=ua[0])
    gshape = grid.shape
    D = grid.ndim
    qshape = tuple(qa.shape)
    if len(qshape) < D or qshape[len(qshape) - D:] != gshape:
        raise V.shape_error(_FN, "q", qshape, f"a cell-centred field (..., *grid.shape) with trailing axes {gshape}, "
                                              f"or a staggered field (a tuple of {D} face arrays)")
    lead = qshape[:len(qshape) - D]
    if u_lead:
        if len(lead) not in (1, 2) or lead[0] != Bu:
            raise ShapeError(f"{_FN}: u is a batch of {Bu} velocity fields (component 0 of shape "
                             f"{tuple(ua[0].shape)}), so q must have shape ({Bu}, *grid.shape) or "
                             f"({Bu}, C, *grid.shape); got {qshape}")
        F = lead[1] if len(lead) == 2 else 1
    else:
        F = 1
        for n in lead:
            F *= n
    if F == 0:
        raise V.shape_error(_FN, "q", qshape, "at least one field (no zero-sized leading axes)")
    if check_cfl:
        _check_cfl(backend, ua, Bu, dt, grid)
    return AdvectMacCells.apply(q, *u, dt=dt, grid=grid, steps=steps, backend=backend, layout=(Bu, F),
                                checkpoints=checkpoints)


def _staggered_steps(q, u, dt, grid, backend, layout, steps, checkpoints):
    """``steps`` one-step operators of the staggered field ``q``: each recorded on the tape, or with
    ``checkpoints = c`` (validated by the caller) one :func:`gpudp.rollout` node holding at most ``c`` states
    (binomial schedule; the same gradient bits)."""
    def step(state):
        return AdvectMacFaces.apply(*state, *u, dt=dt, grid=grid, backend=backend, layout=layout)

    if checkpoints is not None and steps > 1:
        from ..checkpointing import rollout
        return rollout(step, tuple(q), steps, checkpoints=checkpoints)
    out = tuple(q)
    for _ in range(steps):
        out = step(out)
    return out


def _check_cfl(backend, u, Bu, dt, grid):
    """Raise :class:`StabilityError` when ``Δt Σ_k max|u_k| / Δx_k > 1`` for some velocity of the batch."""
    maxima = [backend.max_abs_per_row(backend.ascontiguous(x).reshape(Bu, -1)).tolist() for x in u]
    h = grid.spacing
    cfl = max(sum(m[b] * dt / h[k] for k, m in enumerate(maxima)) for b in range(Bu))
    # a NaN or inf in u makes cfl NaN or inf (inf * 0 is NaN for dt = 0), so finite inputs pass one test
    if not cfl <= 1.0:
        if any(not (v == v and v != float("inf")) for m in maxima for v in m):
            raise ValueError(f"{_FN}: u contains non-finite values (NaN or inf)")
        raise StabilityError(f"{_FN}: CFL number dt * sum_k max|u_k| / dx_k = {cfl:.4g} exceeds 1 (dt = {dt}, "
                             f"spacing {grid.spacing}); reduce dt, or pass check_cfl=False to skip the check")


def at_centers(u, grid):
    """The staggered field ``u`` interpolated to the cell centres: component ``k`` is ``½(u_k[i] + u_k[i + e_k])``
    (the upper face wraps on a periodic axis).

    ``u`` is a tuple of ``D`` face arrays (component ``k`` of shape ``grid.face_shape(k)``, or
    ``(B, *grid.face_shape(k))`` for a batch). Returns the collocated field of shape ``(D, *grid.shape)`` (or
    ``(B, D, *grid.shape)``), a Tensor when a component is a Tensor. Linear, with an exact adjoint kernel.
    """
    fn = "at_centers"
    V.check_grid(fn, grid)
    backend = get_backend()
    _, lead = check_staggered(fn, "u", u, grid, backend)
    return AtCenters.apply(*u, grid=grid, backend=backend, lead=lead)


def at_faces(c, grid):
    """The cell-centred scalar ``c`` interpolated to the faces: face ``f`` of axis ``k`` is ``½(c_{f−e_k} + c_f)``,
    with the ghost rules at boundary faces (dirichlet: half the boundary cell; neumann: the boundary cell).

    ``c`` has shape ``grid.shape`` or ``(B, *grid.shape)``; for a collocated vector field use
    ``at_faces(c[k], grid)[k]``. Returns a tuple of ``D`` face arrays (component ``k`` of shape
    ``grid.face_shape(k)``, with the same batch prefix), Tensors when ``c`` is a Tensor. Linear, with an exact
    adjoint kernel.
    """
    fn = "at_faces"
    V.check_grid(fn, grid)
    backend = get_backend()
    _, lead = check_cells(fn, "c", c, grid, backend)
    return AtFaces.apply(c, grid=grid, backend=backend, lead=lead)
