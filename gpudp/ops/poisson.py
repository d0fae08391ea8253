"""The Poisson solve ``laplace(x) = b`` by preconditioned conjugate gradients, with its implicit gradient.

Forward: CG on ``A = −laplace`` (symmetric positive definite, or semidefinite with the constants as null
space when no axis is dirichlet), matrix-free, the whole iteration in one backend call. Singular case: the
mean of ``b`` is removed and the zero-mean solution returned, i.e. ``x = L⁺ b`` with ``L⁺`` the
pseudo-inverse. The stopping test is the relative residual ``‖b̃ − laplace(x)‖ / ‖b̃‖ ≤ tol`` with ``b̃`` the
right-hand side after mean removal (``b`` itself when ``A`` is regular).

Backward (implicit, nothing of the forward iterations is kept): with ``Π`` the mean removal (identity when
regular), ``x = L⁺ Π b`` and ``L⁺``, ``Π`` symmetric and commuting, so

    ḃ = (L⁺ Π)ᵀ ẋ = Π L⁺ ẋ = L⁺ Π ẋ = poisson_solve(ẋ)

one more solve of the same system with the incoming gradient as right-hand side, same null-space handling.

Obstacles (``grid.solid``, DESIGN.md §6; ``gpudp.ops.masked_cg``): ``laplace`` is 0 in solid cells and every
sealed fluid region adds a null vector. ``Π`` then zeroes the solid cells and removes each sealed region's
mean; ``x = L⁺ Π b`` is 0 in solid cells with zero mean on every sealed region, the stopping test uses
``Π b``, and the backward pass is the same one solve (``L⁺`` and ``Π`` are still symmetric and commute).
"""
from __future__ import annotations

import threading
from collections import namedtuple

import numpy as np

from ..backends import get_backend
from ..errors import SolveError
from ..tape import Operator
from . import _spectral
from . import _validate as V
from .difference import check_cells, kernel_args
from . import masked_cg

_FN = "poisson_solve"
#: How often GPU backends test convergence on the host (iterations) when ``check_every`` is not given.
DEFAULT_CHECK_EVERY = 10
#: The accepted values of ``preconditioner`` (``"auto"`` resolves to ``"spectral"`` or ``"multigrid"``).
PRECONDITIONERS = ("auto", None, "jacobi", "spectral", "multigrid")


class SolveInfo(namedtuple("SolveInfo", ["iterations", "residual", "converged", "preconditioner"],
                           defaults=(None,))):
    """Statistics of one solve: CG ``iterations`` (the largest over a batch), the final relative
    ``residual`` (the largest over a batch; CG's recursively updated residual, the quantity the stopping test
    uses), whether every system ``converged`` (``residual ≤ tol``) and the ``preconditioner`` used (``None``,
    ``"jacobi"``, ``"spectral"`` or ``"multigrid"``: what ``"auto"`` chose)."""

    __slots__ = ()


_last = threading.local()


def last_solve_info():
    """:class:`SolveInfo` of the most recent Poisson solve in this thread, or ``None``.

    Covers the solves that run out of sight: the one inside :func:`gpudp.project` and the backward solves a
    ``tape.backward`` performs. A solve that raised :class:`gpudp.SolveError` is recorded too."""
    return getattr(_last, "info", None)


class _Solver:
    """One configured solver: grid, tolerances, preconditioner; used for the forward and backward solves."""

    __slots__ = ("grid", "backend", "tol", "maxiter", "preconditioner", "check_every", "throw")

    def __init__(self, grid, backend, tol, maxiter, preconditioner, check_every, throw):
        self.grid, self.backend, self.tol, self.maxiter = grid, backend, tol, maxiter
        self.preconditioner, self.check_every, self.throw = preconditioner, check_every, throw

    def _config(self):
        return (self.grid, id(self.backend), self.tol, self.maxiter, self.preconditioner, self.check_every,
                self.throw)

    def __eq__(self, other):  # (two solvers of one configuration solve alike: a replayed program may use either)
        return type(other) is _Solver and self._config() == other._config()

    def __hash__(self):
        return hash(self._config())

    def __call__(self, rhs, x0, lead, what):
        grid, backend = self.grid, self.backend
        B = lead[0] if lead else 1
        b = backend.ascontiguous(rhs).reshape(B, grid.size)
        x0c = None if x0 is None else backend.ascontiguous(x0).reshape(B, grid.size)
        if grid.solid is not None or self.preconditioner == "multigrid":
            x, iterations, residual = masked_cg.cg_solve(backend, b, x0c, grid, self.tol, self.maxiter,
                                                         self.preconditioner, self.check_every)
        elif self.preconditioner == "spectral":
            x, iterations, residual = _spectral.cg_solve(backend, b, x0c, *kernel_args(grid), self.tol,
                                                         self.maxiter, grid.is_singular)
        else:
            x, iterations, residual = backend.cg_solve(b, x0c, *kernel_args(grid), self.tol, self.maxiter,
                                                       grid.is_singular, self.preconditioner, self.check_every)
        converged = residual <= self.tol  # False for NaN
        info = SolveInfo(int(iterations), float(residual), bool(converged), self.preconditioner)
        _last.info = info
        if not converged and self.throw:
            raise SolveError(
                f"{_FN}: conjugate gradients did not converge{what}: relative residual {residual:.3e} > tol "
                f"{self.tol:g} after {iterations} iterations (maxiter {self.maxiter}, preconditioner "
                f"{self.preconditioner!r}, grid {grid.shape} {grid.boundary}); raise maxiter, loosen tol, or "
                f"pass throw=False to get the last iterate", iterations=int(iterations), residual=float(residual))
        return x.reshape(lead + grid.shape)


class PoissonSolve(Operator):
    """``x = L⁺ b``; one differentiable input ``b``. ``x0`` is a static start value (no gradient)."""

    replayable = True  # (the checks of the values, finite b and x0 and convergence, are part of forward)

    @staticmethod
    def forward(ctx, b, *, x0, solver, lead):
        B = lead[0] if lead else 1
        _check_finite(solver.backend, "b", b, B, solver.grid)
        if x0 is not None:
            _check_finite(solver.backend, "x0", x0, B, solver.grid)
        x = solver(b, x0, lead, "")
        ctx.params = (solver, lead)
        return x

    @staticmethod
    def backward(ctx, g):
        solver, lead = ctx.params
        if g is None or not ctx.needs_input_grad[0]:
            return (None,)
        gb = solver(g, None, lead, " in the backward pass (the solve with the incoming gradient)")
        return (gb,)


def poisson_solve(b, grid, tol=1e-6, maxiter=None, x0=None, preconditioner="auto", check_every=None,
                  return_info=False, throw=True):
    """Solve ``laplace(x) = b`` on ``grid`` by matrix-free preconditioned conjugate gradients.

    Parameters
    ----------
    b : Tensor or array, shape ``grid.shape`` or ``(B, *grid.shape)``
        Right-hand side; a batch holds ``B`` independent systems. Must be finite.
    grid : gpudp.Grid
        When no axis is dirichlet the Laplacian is singular (constants are its null space): the mean of
        ``b`` is removed and the zero-mean solution returned (the pseudo-inverse solution). With obstacles
        (``grid.solid``) the equation holds on the fluid cells: ``x`` is 0 in solid cells (``b`` there is
        ignored), and on every sealed fluid region (one that touches no open dirichlet boundary face) the
        mean of ``b`` is removed and ``x`` has zero mean: again the pseudo-inverse solution.
    tol : float
        Relative residual to reach, ``‖b − laplace(x)‖ / ‖b‖ ≤ tol`` (with ``b`` after mean removal in the
        singular case), for every system of a batch. Finite and > 0. The test uses CG's updated residual; in
        float32 the residual of the returned ``x`` itself cannot drop far below ``1e-6`` (rounding), so
        ``tol ≳ 1e-5`` is what float32 can deliver.
    maxiter : int or None
        Iteration limit (default ``10 · grid.size``, like SciPy's ``cg``).
    x0 : Tensor or array or None
        Start value, same shape and dtype as ``b`` (default zeros). It only changes where CG starts: **x0
        gets no gradient**, not even when it is a Tensor that requires one.
    preconditioner : "auto" (default), None, "jacobi", "spectral" or "multigrid"
        ``"auto"`` picks ``"spectral"`` on a grid without obstacles and ``"multigrid"`` on one with them (the
        choice is in ``SolveInfo.preconditioner``). ``None`` is plain CG. ``"jacobi"`` divides the residual by
        the diagonal of ``−laplace``. ``"spectral"`` applies the exact (pseudo-)inverse of ``−laplace``
        through fast transforms along each axis, by boundary rule (real FFT for periodic, orthonormal DCT-II
        for neumann, DST-I for dirichlet; ``scipy.fft`` on the CPU, cuFFT through ``cupyx.scipy.fft`` on
        CuPy): ``O(N log N)`` work, and only the ``N`` inverse
        eigenvalues are kept per grid. Without obstacles the solve is one application, ``x = A⁺(−b)``, and one
        residual check with ``laplace`` (about a forward and inverse transform pair in all, whatever the
        grid's width); only a tolerance near rounding adds CG iterations preconditioned by ``A⁺``. The
        reported residual is recomputed from the returned ``x``. With obstacles it is the
        obstacle-free inverse restricted to the fluid cells, ``Π R A_box⁺ Rᵀ Π`` (``Π`` the projection onto
        the range of the fluid Laplacian, see :mod:`gpudp.ops.masked_cg`): symmetric positive definite
        there, so CG stays exact; it is no longer the exact inverse, but close to it when the obstacles are
        small (a 64² box with a disc of radius 6: 8 iterations, against about 250 for plain CG).
        ``"multigrid"`` is a symmetric geometric-multigrid V-cycle (:mod:`gpudp.ops.multigrid`: damped-Jacobi
        smoothing, coarse levels with the obstacles' face openings averaged, the coarsest level solved by its
        pseudo-inverse): valid with obstacles and every boundary rule, about 10–15 CG iterations at
        ``tol = 1e-6`` whatever the grid's width (2-D grids with 20 % random solid discs). Its levels are built
        once per grid and kept.
    check_every : int or None
        GPU backends test convergence on the host every that many iterations (default 10); the CPU backend
        tests every iteration at no cost. Does not change the result beyond the iteration count.
    return_info : bool
        Also return a :class:`gpudp.SolveInfo` ``(iterations, residual, converged, preconditioner)``.
    throw : bool
        Raise :class:`gpudp.SolveError` (carrying ``iterations`` and ``residual``) when some system does not
        converge within ``maxiter`` (default), in the forward and in the backward solve. ``False`` returns
        the last iterate; check ``info.converged`` (or :func:`gpudp.last_solve_info` after a backward pass).

    Returns ``x`` (same shape and dtype as ``b``; a Tensor when ``b`` is a Tensor), or ``(x, info)``.
    :func:`gpudp.last_solve_info` also reports the most recent solve, including backward solves.

    Gradient: implicit. The backward pass is one more solve of the same system with the incoming gradient
    as right-hand side (the operator is symmetric; same tolerance, preconditioner and null-space handling);
    the tape stores nothing for it, whatever ``tol``.
    """
    backend = get_backend()
    V.check_grid(_FN, grid)
    ba, lead = check_cells(_FN, "b", b, grid, backend)
    tol = V.check_scalar(_FN, "tol", tol, positive=True)
    if maxiter is None:
        maxiter = 10 * grid.size
    maxiter = V.check_int(_FN, "maxiter", maxiter, 1)
    if check_every is None:
        check_every = DEFAULT_CHECK_EVERY
    check_every = V.check_int(_FN, "check_every", check_every, 1)
    preconditioner = resolve_preconditioner(_FN, preconditioner, grid)
    x0a = None
    if x0 is not None:
        x0a = V.check_array(_FN, "x0", x0, backend)
        if tuple(x0a.shape) != tuple(ba.shape):
            raise V.shape_error(_FN, "x0", x0a.shape, f"the shape of b, {tuple(ba.shape)}")
        V.check_same_dtype(_FN, b=ba, x0=x0a)
    solver = _Solver(grid, backend, tol, maxiter, preconditioner, check_every, bool(throw))
    x = PoissonSolve.apply(b, x0=x0a, solver=solver, lead=lead)
    return (x, last_solve_info()) if return_info else x


def resolve_preconditioner(fn, preconditioner, grid):
    """The preconditioner a solve on ``grid`` uses: ``"auto"`` is ``"spectral"`` without obstacles and
    ``"multigrid"`` with them; ``"none"`` is ``None``; names are case-insensitive."""
    name = preconditioner
    if isinstance(name, str):
        name = None if name.lower() == "none" else name.lower()
    if name not in PRECONDITIONERS:
        raise ValueError(f"{fn}: preconditioner must be 'auto', None, 'jacobi', 'spectral' or 'multigrid', "
                         f"got {preconditioner!r}")
    if name == "auto":
        name = "spectral" if grid.solid is None else "multigrid"
    return name


def _check_finite(backend, name, a, B, grid):
    m = backend.max_abs_per_row(backend.ascontiguous(a).reshape(B, grid.size))
    bad = np.flatnonzero(~np.isfinite(m))
    if bad.size:
        where = f" (batch items {bad[:8].tolist()})" if len(a.shape) > grid.ndim else ""
        raise ValueError(f"{_FN}: {name} contains non-finite values (NaN or inf){where}; expected finite values")
