"""The kernel interface every backend implements.

A backend owns one array type and one set of compiled kernels. Operators (``gpudp.ops``) validate their
inputs, bring them into a canonical layout and call the methods below; the methods receive only contiguous
arrays of the backend's own type and plain Python scalars.

Canonical layout of the advection kernels (``shape3`` is the grid shape padded with leading 1s to three
axes; ``ndim`` is the number of real axes, the last ``ndim`` of ``shape3``; ``N = prod(shape3)``):

- ``d``: ``(Bu, F, N)``: ``F`` advected fields per velocity field, ``Bu`` velocity fields;
- ``u``: ``(Bu, ndim, N)``; component ``k`` belongs to padded axis ``3 - ndim + k``;
- ``coef``: three floats ``Δt / Δx_a`` per padded axis (padded axes are never touched);
- ``bc``: three boundary codes per padded axis (0 periodic, 1 dirichlet, 2 neumann).
"""
from __future__ import annotations

import numpy as np


class Backend:
    """Base class of the backends. Subclasses set ``name`` and implement the kernel methods."""

    name = "base"
    #: Array namespace for glue code (``numpy`` or ``cupy``); ``None`` where arrays are Numba device arrays.
    xp = None
    #: Human-readable device description.
    device = ""

    # -- arrays -------------------------------------------------------------------------------------------
    def is_own(self, x):
        """True when ``x`` is an array this backend's kernels may be given."""
        raise NotImplementedError

    def array_type_name(self):
        raise NotImplementedError

    def asarray(self, x, dtype=None):
        """Move or convert ``x`` (anything NumPy accepts, or another backend's array) to this backend."""
        raise NotImplementedError

    def to_numpy(self, x):
        raise NotImplementedError

    def empty(self, shape, dtype):
        raise NotImplementedError

    def zeros(self, shape, dtype):
        raise NotImplementedError

    def ascontiguous(self, x):
        """``x`` itself when C-contiguous, else a contiguous copy."""
        raise NotImplementedError

    def synchronize(self):
        """Wait until all queued kernels of this backend have finished."""

    def max_abs_per_row(self, x):
        """Host NumPy float64 array of ``max |x|`` over the last axis of a 2-D array (a host sync)."""
        return np.abs(self.to_numpy(x)).max(axis=-1).astype(np.float64)

    def max_abs(self, x):
        """``max |x|`` over all of ``x`` as a Python float (NaN when ``x`` holds a NaN; a host sync): the value
        :meth:`max_abs_per_row` gives for ``x`` as one row."""
        return float(self.max_abs_per_row(self.ascontiguous(x).reshape(1, x.size))[0])

    # -- advection (gpudp.ops.advection) ----------------------------------------------------------------
    def advect_forward(self, d, u, coef, bc, shape3, ndim, steps, save_states, save_every=1, out=None,
                       states=None):
        """Apply ``steps`` upwind steps to ``d``. Returns ``(d_T, states)``; ``states`` is ``None`` unless
        ``save_states``, then an array ``(ceil(steps / save_every), Bu, F, N)`` holding ``d^t`` for
        ``t = 0, k, 2k, … < steps`` (``k = save_every``): ``d^0 … d^{T-1}`` for ``k = 1``, the checkpoints of a
        checkpointed rollout for ``k > 1``.

        ``out`` (``(Bu, F, N)``) and ``states`` (the shape above), when given, are contiguous arrays of this
        backend, overlapping neither ``d`` nor each other, that receive the results (and are returned) in place
        of new ones: a checkpointed backward pass recomputes a segment's states into one reused buffer this
        way. Results are bitwise those of a call without them."""
        raise NotImplementedError

    def advect_adjoint(self, g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u, gu=None):
        """Vector–Jacobian product of ``steps`` upwind steps. ``g`` is the gradient w.r.t. ``d_T``
        (``(Bu, F, N)``), ``states`` the saved ``d^0 … d^{T-1}`` (``None`` allowed when not ``need_u``).
        Returns ``(grad_d or None, grad_u or None)``; ``grad_u`` has the shape of ``u`` and sums over the
        ``F`` fields and all steps.

        ``gu`` (with ``need_u``): a contiguous array shaped like ``u`` that every step's velocity gradient is
        added into, in the order in which a single call adds the steps after its first; it is returned as
        ``grad_u``. Splitting ``T`` steps into calls over consecutive segments, last segment first, each
        given the previous call's ``grad_d`` as ``g`` (and ``need_d`` for all but the first segment) and,
        after the first call, its ``grad_u`` as ``gu``, gives bitwise the gradients of the single call."""
        raise NotImplementedError

    def advect_launcher(self, coef, bc, shape3, ndim, dtype, size):
        """Optional: an object whose ``forward(d, u, Bu, F, steps, save_states)`` and ``adjoint(g, states, u, Bu,
        F, steps, need_d, need_u)`` return what :meth:`advect_forward` (with ``save_every = 1``) and
        :meth:`advect_adjoint` (without ``gu``) return for these scalar arguments and ``size = Bu F N`` elements of
        ``dtype``, taking arrays of any shape that hold the canonical layout in C order and giving ``out`` and
        ``gd`` in the shape of ``d`` (or ``g``) and ``gu`` in that of ``u``; ``forward`` returns a third value,
        ``max |u|`` as :meth:`max_abs` gives it where the attribute ``max_abs_u`` is true, else None. ``None`` (the
        default): the operator calls the two methods. A backend whose per-call set-up costs more than its
        kernels' launch provides one."""
        return None

    # -- staggered difference operators and the Poisson solve (gpudp.ops.difference / poisson) -----------
    #
    # Canonical layout: cell arrays ``(B, N)``; a staggered field is a tuple of ``ndim`` face arrays, the
    # component for padded axis ``a = 3 - ndim + k`` shaped ``(B, M_k)`` where ``M_k`` is the product of
    # ``shape3`` with ``n_a + 1`` along ``a`` when ``bc[a] != 0`` (non-periodic) and ``n_a`` when periodic.
    # ``inv_dx`` holds ``1/Δx_a`` per padded axis (padded axes are never touched).

    def stag_divergence(self, faces, inv_dx, bc, shape3, ndim):
        """``div_i = Σ_k (u_k[i + e_k] − u_k[i]) / Δx_k`` → ``(B, N)``."""
        raise NotImplementedError

    def stag_divergence_adjoint(self, g, inv_dx, bc, shape3, ndim):
        """Transpose of :meth:`stag_divergence`: ``(B, N)`` → tuple of face arrays."""
        raise NotImplementedError

    def stag_gradient(self, p, inv_dx, bc, shape3, ndim):
        """``grad_k[f] = (p_f − p_{f−e_k}) / Δx_k`` with ghost values; 0 on neumann boundary faces →
        tuple of face arrays."""
        raise NotImplementedError

    def stag_gradient_adjoint(self, faces_g, inv_dx, bc, shape3, ndim):
        """Transpose of :meth:`stag_gradient`: tuple of face arrays → ``(B, N)``."""
        raise NotImplementedError

    def laplace(self, p, inv_dx, bc, shape3, ndim):
        """``Σ_k (p_{i+e_k} − 2 p_i + p_{i−e_k}) / Δx_k²`` with ghost values → ``(B, N)`` (symmetric)."""
        raise NotImplementedError

    def cg_solve(self, b, x0, inv_dx, bc, shape3, ndim, tol, maxiter, singular, preconditioner, check_every):
        """Preconditioned conjugate gradients on ``A = −laplace`` for the ``B`` systems ``laplace(x) = b``.

        ``b``: ``(B, N)``; ``x0``: ``(B, N)`` or ``None`` (zeros); ``singular``: the operator has the constant
        null space (remove the mean of ``b`` and keep iterates zero-mean); ``preconditioner``: ``None`` or
        ``"jacobi"``; ``check_every``: GPU backends test convergence on the host only every that many
        iterations. Stops when every system has ``‖b − Ax‖ / ‖b‖ ≤ tol`` or after ``maxiter`` iterations.
        Returns ``(x, iterations, residual)``: ``iterations`` an int (the largest over the batch) and
        ``residual`` the largest relative residual as a Python float (0 for a zero right-hand side, whose
        solution is 0). Never raises for non-convergence: the operator decides."""
        raise NotImplementedError

    # Optional: ``cg_solve_masked(b, x0, obstacles, tol, maxiter, preconditioner, check_every)``, the Poisson
    # solve on a grid with obstacles (``obstacles``: ``gpudp.ops.obstacles.ObstacleFacts``; contract of
    # ``cg_solve`` with the null space of DESIGN.md §6). A backend without it gets the conjugate gradients that
    # ``gpudp.ops.masked_cg.composed_cg`` composes from its difference kernels and array module.

    # -- MAC (staggered) advection and interpolation (gpudp.ops.mac, DESIGN.md §6) --------------------------
    #
    # ``geom`` is a :class:`gpudp.geometry.Geometry` (padded shape, ndim, boundary codes, spacing). Layouts:
    # cell fields ``(Bu, F, N)``: ``F`` advected fields per velocity field, ``Bu`` velocity fields; a velocity
    # is a tuple of ``ndim`` face arrays, the component of padded axis ``a = 3 - ndim + k`` shaped
    # ``(Bu, M_a)`` with ``M_a = geom.face_count(a)``; an advected staggered field is a tuple of ``ndim``
    # face arrays shaped ``(Bu, F, M_a)``. ``dt`` is a Python float. The solid mask of ``geom`` is ignored
    # (DESIGN.md §6). Adjoints gather (no atomics); ``gu`` sums over the ``F`` fields (and the steps).

    def mac_advect_cells(self, q, u, dt, geom, steps, save_states, save_every=1, out=None, states=None):
        """``steps`` donor-cell (flux-form upwind) steps of the cell fields ``q`` by the staggered ``u``.
        Returns ``(q_T, states)``; ``states`` is ``None`` unless ``save_states``, then
        ``(ceil(steps / save_every), Bu, F, N)`` holding ``q^t`` for ``t = 0, k, 2k, … < steps``
        (``k = save_every``). ``out`` and ``states``: given arrays that receive the results, as in
        :meth:`advect_forward`."""
        raise NotImplementedError

    def mac_advect_cells_adjoint(self, g, states, u, dt, geom, steps, need_q, need_u, gu=None):
        """Vector–Jacobian product of :meth:`mac_advect_cells`; ``g`` is ``(Bu, F, N)``, ``states`` the saved
        ``q^0 … q^{T-1}`` (``None`` allowed when not ``need_u``). Returns ``(gq or None, gu or None)``, ``gu`` a
        tuple shaped like ``u``. ``gu`` given (with ``need_u``): a tuple of contiguous arrays shaped like ``u``
        that every step's velocity gradient is added into, as in :meth:`advect_adjoint` (segments of a
        checkpointed backward pass give bitwise the single call's gradients)."""
        raise NotImplementedError

    def mac_advect_faces(self, q, u, dt, geom):
        """One step of the staggered fields ``q`` (tuple of ``(Bu, F, M_a)``) by ``u``; returns a tuple shaped
        like ``q``. Boundary faces of a non-periodic axis ``a`` in component ``a`` keep their value."""
        raise NotImplementedError

    def mac_advect_faces_adjoint(self, g, q, u, dt, geom, need_q, need_u):
        """Vector–Jacobian product of :meth:`mac_advect_faces`: ``g`` shaped like ``q``; returns
        ``(gq or None, gu or None)``, tuples shaped like ``q`` and ``u``. For self-advection the caller passes the
        same arrays as ``q`` and ``u`` and adds the two gradients."""
        raise NotImplementedError

    def mac_at_centers(self, u, geom):
        """``c[k]_i = ½(u_k[i] + u_k[i + e_k])``: tuple of ``(B, M_a)`` → ``(B, ndim, N)``."""
        raise NotImplementedError

    def mac_at_centers_adjoint(self, g, geom):
        """Transpose of :meth:`mac_at_centers`: ``(B, ndim, N)`` → tuple of ``(B, M_a)``."""
        raise NotImplementedError

    def mac_at_faces(self, c, geom):
        """Face ``f`` of axis ``a``: ``½(c_{f−e_a} + c_f)`` with the ghost rules at boundary faces:
        ``(B, N)`` → tuple of ``(B, M_a)``."""
        raise NotImplementedError

    def mac_at_faces_adjoint(self, g, geom):
        """Transpose of :meth:`mac_at_faces`: tuple of ``(B, M_a)`` → ``(B, N)``."""
        raise NotImplementedError

    # -- the multigrid V-cycle (gpudp.ops.multigrid) ----------------------------------------------------------
    #
    # ``level`` is a :class:`gpudp.ops.multigrid.Level` whose arrays (the three coupling face arrays ``w`` and
    # ``dinv``) live on this backend in the dtype of the data; cell arrays are ``(B, N)`` with ``N =
    # level.size``; ``coarse`` is the next coarser level. The formulas are those of
    # :mod:`gpudp.backends.mg_stencils`. Outputs never overlap inputs (``mg_prolong_add`` updates ``x`` in place).
    # Nothing is read back to the host: on GPUs a V-cycle is a queue of launches.

    def mg_smooth(self, x, r, out, level, omega, first):
        """One damped-Jacobi sweep ``out = x + ω D⁻¹ (r − A x)``; ``first``: ``out = ω D⁻¹ r`` (``x`` unused,
        may be ``None``). ``omega`` is a scalar of the data's dtype."""
        raise NotImplementedError

    def mg_residual(self, x, r, out, level):
        """``out = r − A x``."""
        raise NotImplementedError

    def mg_apply(self, x, out, level):
        """``out = A x`` (at level 0: ``−laplace`` with the grid's obstacles)."""
        raise NotImplementedError

    def mg_restrict(self, fine, out, level, coarse):
        """``out = R fine``: cell-centred full weighting, ``R = Pᵀ / 2`` per coarsened axis."""
        raise NotImplementedError

    def mg_prolong_add(self, e, x, level, coarse):
        """``x += P e``: cell-centred linear prolongation of the coarse ``e``."""
        raise NotImplementedError

    def mg_coarse_solve(self, r, pinv, out):
        """``out = r M`` with ``M`` (``pinv``, ``(N_c, N_c)``, symmetric) the coarsest level's pseudo-inverse."""
        raise NotImplementedError
