"""Pressure projection (Chorin) of a staggered velocity field, composed of the differentiable pieces.

    ũ     = u with the normal velocity on neumann (wall) boundary faces set to 0
    p     = poisson_solve(divergence(ũ))
    u_new = ũ − spatial_gradient(p)

``divergence(u_new) = divergence(ũ) − laplace(p) ≈ 0`` to the solver tolerance; ``u_new`` is 0 on the wall
faces because the gradient is 0 there. Each piece records itself on the tape, so the vector–Jacobian
product runs the transposed pieces in reverse, with exactly one (implicit) solve. With the wall mask ``W``,
``divergence = D``, ``spatial_gradient = G`` and ``Gᵀ = −D W``, the projector ``P = W − G L⁺ D W`` is
symmetric: its vector–Jacobian product is the projection of the incoming gradient.

Obstacles (``grid.solid``, DESIGN.md §6): ``ũ`` is ``u`` with every closed face set to 0 (the neumann walls and
every face touching a solid cell: no flow through walls or obstacles), ``W`` is the open-face mask, the
gradient ``W G`` and the solve the obstacle-aware one; ``u_new`` is exactly 0 on closed faces and
``divergence(u_new) = divergence(ũ) − laplace(p)`` vanishes on the fluid cells to the solver tolerance (the flux
``divergence(ũ)`` of a sealed region sums to 0, so nothing of it is lost to the mean removal). The projector
``P = W − W G L⁺ D W`` is again symmetric.
"""
from __future__ import annotations

from .. import arrays
from ..backends import get_backend
from ..tape import Operator
from . import _validate as V
from . import elementwise as E
from .difference import Divergence, SpatialGradient, check_staggered
from .obstacles import MaskFaces
from .poisson import poisson_solve

_FN = "project"
_SOLVE_OPTIONS = ("tol", "maxiter", "x0", "preconditioner", "check_every", "return_info", "throw")


def _zero_walls(axis):
    def f(xp, a):
        out = a.copy()
        index = [slice(None)] * a.ndim
        for end in (0, -1):
            index[axis] = end
            out[tuple(index)] = 0
        return out
    return f


class ZeroWalls(Operator):
    """Sets the first and last faces along ``axis`` (an array axis) to 0; self-adjoint, saves nothing."""

    replayable = True

    @staticmethod
    def forward(ctx, u, *, axis):
        ctx.axis = axis
        return arrays.apply(_zero_walls(axis), u)

    @staticmethod
    def backward(ctx, g):
        return (None if g is None else arrays.apply(_zero_walls(ctx.axis), g),)


def project(u, grid, **solve_options):
    """Make the staggered velocity ``u`` divergence-free: ``u − spatial_gradient(p)`` with
    ``laplace(p) = divergence(u)``.

    Parameters
    ----------
    u : tuple of ``D`` Tensors or arrays
        Staggered field, component ``k`` of shape ``grid.face_shape(k)`` or ``(B, *grid.face_shape(k))``.
        Values on neumann (wall) boundary faces are ignored (they get zero gradient) and are 0 in the
        result: walls are impermeable. With obstacles (``grid.solid``) the same holds for every face that
        touches a solid cell.
    grid : gpudp.Grid
    **solve_options
        Passed to :func:`gpudp.poisson_solve`: ``tol``, ``maxiter``, ``x0`` (a start pressure), ``preconditioner``,
        ``check_every``, ``throw``; ``return_info=True`` makes ``project`` return ``(u_new, info)``.

    Returns the projected field as a tuple of ``D`` face arrays (Tensors when ``u`` holds Tensors). Gradients
    flow back through the recorded divergence, solve (one implicit solve) and gradient.
    """
    for key in solve_options:
        if key not in _SOLVE_OPTIONS:
            raise TypeError(f"{_FN}: unexpected keyword argument {key!r}; the solve options are "
                            f"{', '.join(_SOLVE_OPTIONS)}")
    V.check_grid(_FN, grid)
    backend = get_backend()
    _, lead = check_staggered(_FN, "u", u, grid, backend)
    if grid.solid is not None:
        masked = tuple(MaskFaces.apply(c, grid=grid, axis=k, backend=backend) for k, c in enumerate(u))
    else:
        masked = tuple(ZeroWalls.apply(c, axis=len(lead) + k) if grid.boundary[k] == "neumann" else c
                       for k, c in enumerate(u))
    div = Divergence.apply(*masked, grid=grid, backend=backend, lead=lead)
    solved = poisson_solve(div, grid, **solve_options)
    p, info = solved if solve_options.get("return_info") else (solved, None)
    grad = SpatialGradient.apply(p, grid=grid, backend=backend, lead=lead)
    out = tuple(E.sub(m, g) for m, g in zip(masked, grad))
    return (out, info) if solve_options.get("return_info") else out
