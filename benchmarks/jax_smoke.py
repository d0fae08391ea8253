"""An independent JAX implementation of the smoke simulation of issue 9 (DESIGN.md §6), the baseline of the
``mac_*`` and ``smoke_*`` benchmark cases and the reference of ``tests/test_smoke_jax.py``.

Written from DESIGN.md §6 with ``jax.numpy`` array expressions (no gpudp code), for a closed box: every axis
``neumann``, 2-D or 3-D, any size and spacing, with an optional solid mask. gpudp's conventions: face ``i``
of axis ``k`` is the lower face of cell ``i``; a component normal to a non-periodic axis has ``n_k + 1``
faces, ``0`` and ``n_k`` on the walls.

- ``advect_cells``: donor-cell upwind in flux form, ``q'_i = q_i − Δt Σ_k (F_k[i+e_k] − F_k[i]) / Δx_k``,
  ``F_k[f] = up(u_k[f], q_{f−e_k}, q_f)``, the ghost cell outside a wall repeating the boundary cell.
- ``advect_faces``: the same on the control volumes of the faces (fluxes along the component's own axis at
  cell centres, along the other axes at edges, with the averaged advecting velocity); the tangential
  component's ghost outside a wall repeats the boundary face (free slip); the wall faces of the normal
  component keep their value.
- ``up(w, a, b)`` is ``w·a`` for ``w ≥ 0`` and ``w·b`` otherwise: the value at ``w = 0`` is 0 either way, and
  JAX's derivative there is that of the ``w·a`` branch, gpudp's tie rule.
- ``at_faces``: ``½(c_{f−e_k} + c_f)``, the wall faces using the repeated boundary cell.
- ``project``: faces on the walls or touching a solid cell are closed and set to 0; the pressure solves
  ``laplace(p) = divergence(u)`` on the fluid cells, the Laplacian being ``divergence ∘ spatial_gradient`` with
  the gradient 0 on closed faces (so 0 in solid cells). Each connected fluid region is sealed, so the mean of
  the right-hand side over each region is removed and ``p`` has zero mean there (and is 0 in solid cells);
  then ``u − spatial_gradient(p)``.
- The solve is ``jax.scipy.sparse.linalg.cg`` (plain CG, relative residual ``tol``) on ``−laplace``. JAX
  differentiates it **implicitly**: ``cg`` is a ``lax.custom_linear_solve`` whose transpose is one more CG
  solve with the (symmetric) operator, as gpudp's adjoint; nothing is differentiated through the iterations.

The smoke step (every term with the velocity of the start of the step)::

    d ← advect_cells(d, u);  w ← advect_faces(u, u);  w_y ← w_y + Δt·β·at_faces(d)[1];  u ← project(w)

and the inverse problem's loss ``Σ (d_T − target)²`` of ``T`` steps from ``project(u0)``, with its gradient by
``jax.value_and_grad`` of a ``lax.scan`` over the steps, jitted. ``python -m benchmarks.jax_smoke`` runs the
issue's whole inverse problem (64², 100 steps, 100 gradient-descent updates) and prints its loss history and
time per iteration.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .baselines import jax_module

# The issue's smoke inverse problem
N = 64
DT = 1.0
BETA = 0.02
STEPS = 100
UPDATES = 100
LEARNING_RATE = 0.002
U_MAX = 0.15
SEED = 2
TOL = 1e-6


# -- the problem (host, NumPy) ----------------------------------------------------------------------------------


def centres(n):
    """Cell-centre coordinates ``(x, y)`` of an ``n × n`` grid of spacing 1, each of shape ``(n, n)``."""
    c = np.arange(n) + 0.5
    return np.meshgrid(c, c, indexing="ij")


def obstacle(n=N):
    """The solid disc of cells with ``(x − 32)² + (y − 34)² < 6²``, scaled to an ``n × n`` grid."""
    s = n / N
    x, y = centres(n)
    return (x - 32 * s) ** 2 + (y - 34 * s) ** 2 < (6 * s) ** 2


def initial_density(n=N):
    """``exp(−((x − 32)² + (y − 12)²) / (2·4²))``, scaled to an ``n × n`` grid."""
    s = n / N
    x, y = centres(n)
    return np.exp(-((x - 32 * s) ** 2 + (y - 12 * s) ** 2) / (2 * (4 * s) ** 2))


def hidden_velocity(n=N, seed=SEED, u_max=U_MAX):
    """The hidden initial velocity: a stream function ``ψ`` on the ``(n+1)²`` nodes, ``ψ = Σ_{kx,ky=1..3}
    c_{kx,ky} sin(π kx X/n) sin(π ky Y/n) / (kx² + ky²)`` with ``c`` from ``default_rng(seed)`` (kx outer),
    differenced onto the faces (``u_x[i, j] = ψ[i, j+1] − ψ[i, j]``, ``u_y[i, j] = −(ψ[i+1, j] − ψ[i, j])``)
    and scaled so that the larger of ``max|u_x|``, ``max|u_y|`` is ``u_max``. Returns ``(u_x, u_y)`` of shapes
    ``(n+1, n)`` and ``(n, n+1)``."""
    rng = np.random.default_rng(seed)
    X, Y = np.meshgrid(np.arange(n + 1.0), np.arange(n + 1.0), indexing="ij")
    psi = np.zeros((n + 1, n + 1))
    for kx in range(1, 4):
        for ky in range(1, 4):
            c = rng.standard_normal()
            psi += c * np.sin(np.pi * kx * X / n) * np.sin(np.pi * ky * Y / n) / (kx * kx + ky * ky)
    ux = psi[:, 1:] - psi[:, :-1]
    uy = -(psi[1:, :] - psi[:-1, :])
    scale = u_max / max(np.abs(ux).max(), np.abs(uy).max())
    return ux * scale, uy * scale


def fluid_regions(fluid):
    """The connected fluid regions (cells joined through shared faces) as a ``(R, *shape)`` boolean array."""
    fluid = np.asarray(fluid, bool)
    try:
        from scipy import ndimage
        labels, count = ndimage.label(fluid)
    except ImportError:  # a plain flood fill
        labels = np.zeros(fluid.shape, int)
        count = 0
        for start in zip(*np.nonzero(fluid)):
            if labels[start]:
                continue
            count += 1
            labels[start] = count
            stack = [start]
            while stack:
                cell = stack.pop()
                for k in range(fluid.ndim):
                    for s in (-1, 1):
                        nb = list(cell)
                        nb[k] += s
                        nb = tuple(nb)
                        if 0 <= nb[k] < fluid.shape[k] and fluid[nb] and not labels[nb]:
                            labels[nb] = count
                            stack.append(nb)
    return np.stack([labels == r for r in range(1, count + 1)])


# -- the simulation (JAX) ---------------------------------------------------------------------------------------


def _sl(x, axis, start, stop):
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(start, stop)
    return x[tuple(idx)]


class SmokeJax:
    """The smoke simulation on a closed box (every axis ``neumann``) of ``shape`` (2-D or 3-D) with the solid
    mask ``solid`` (``None``: no obstacle), in JAX.

    The methods are ``jax.numpy`` functions of JAX arrays (jit them, or call the jitted ``step_fn``,
    ``loss_fn``, ``value_and_grad_fn``). Staggered fields are tuples of face arrays, component ``k`` of shape
    ``shape`` with ``n_k + 1`` along axis ``k``; the last axis is "up" (buoyancy acts on its component).
    """

    def __init__(self, shape, solid=None, spacing=1.0, tol=TOL, maxiter=None, dtype=np.float64, device=None):
        mods, reason = jax_module()
        if mods is None:
            raise ImportError(reason)
        self.jax, self.jnp = mods
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) not in (2, 3):
            raise ValueError(f"SmokeJax: shape must be 2-D or 3-D, got {self.shape}")
        self.ndim = len(self.shape)
        self.spacing = tuple(float(h) for h in (spacing if np.ndim(spacing) else (spacing,) * self.ndim))
        self.tol = float(tol)
        self.maxiter = int(maxiter) if maxiter is not None else 10 * math.prod(self.shape)
        self.dtype = np.dtype(dtype)
        self.device = device
        solid = np.zeros(self.shape, bool) if solid is None else np.asarray(solid, bool)
        if solid.shape != self.shape:
            raise ValueError(f"SmokeJax: solid has shape {solid.shape}, expected {self.shape}")
        fluid = ~solid
        if not fluid.any():
            raise ValueError("SmokeJax: every cell is solid")
        regions = fluid_regions(fluid)
        open_faces = []
        for k, n in enumerate(self.shape):
            m = np.zeros(self.face_shape(k), bool)
            idx = [slice(None)] * self.ndim
            idx[k] = slice(1, n)
            m[tuple(idx)] = _sl(fluid, k, 0, n - 1) & _sl(fluid, k, 1, n)
            open_faces.append(m)
        put = self.put
        #: geometry as JAX arrays: fluid (1/0), open faces per axis, region masks ``(R, N)`` and their cell counts
        self.geometry = {"fluid": put(fluid), "open": tuple(put(m) for m in open_faces),
                         "regions": put(regions.reshape(len(regions), -1)),
                         "counts": put(regions.reshape(len(regions), -1).sum(axis=1))}
        self.regions = len(regions)
        jax = self.jax
        self.step_fn = jax.jit(self.step)
        self.loss_fn = jax.jit(self.loss, static_argnames=("steps",))
        self.value_and_grad_fn = jax.jit(jax.value_and_grad(self.loss, argnums=1), static_argnames=("steps",))

    def face_shape(self, k):
        s = list(self.shape)
        s[k] += 1
        return tuple(s)

    def put(self, a):
        """A host array as a JAX array of the simulation's dtype (on its device)."""
        a = np.asarray(a, self.dtype)
        return self.jax.device_put(a, self.device) if self.device is not None else self.jnp.asarray(a)

    # -- §6 stencils -------------------------------------------------------------------------------------------

    def _ghost(self, x, axis):
        """``x`` with one ghost entry at each end of ``axis``, repeating the boundary entry (neumann)."""
        return self.jnp.concatenate([_sl(x, axis, 0, 1), x, _sl(x, axis, -1, None)], axis=axis)

    def _up(self, w, a, b):
        return self.jnp.where(w >= 0, w * a, w * b)

    def advect_cells(self, q, u, dt):
        """One donor-cell step of the cell-centred ``q`` by the staggered ``u``."""
        out = q
        for k, n in enumerate(self.shape):
            qg = self._ghost(q, k)
            flux = self._up(u[k], _sl(qg, k, 0, n + 1), _sl(qg, k, 1, n + 2))
            out = out - (dt / self.spacing[k]) * (_sl(flux, k, 1, None) - _sl(flux, k, 0, -1))
        return out

    def advect_faces(self, U, u, dt):
        """One step of the staggered ``U`` by the staggered ``u`` (``advect_faces(u, u, dt)``: self-advection)."""
        jnp = self.jnp
        out = []
        for a, na in enumerate(self.shape):
            Ua = U[a]
            # along a: fluxes at the cell centres, averaged advecting velocity, donors the faces either side
            wa = 0.5 * (_sl(u[a], a, 0, na) + _sl(u[a], a, 1, na + 1))
            G = self._up(wa, _sl(Ua, a, 0, na), _sl(Ua, a, 1, na + 1))
            acc = (_sl(G, a, 1, None) - _sl(G, a, 0, -1)) / self.spacing[a]
            inner = _sl(Ua, a, 1, na)  # the faces that are advected (not on the walls of axis a)
            for b, nb in enumerate(self.shape):
                if b == a:
                    continue
                # along b: fluxes at the edges f_b = 0..n_b below the faces, advecting velocity averaged
                # over the two cells either side of the face along a, donors with free-slip ghosts
                wb = 0.5 * (_sl(u[b], a, 0, na - 1) + _sl(u[b], a, 1, na))
                Ug = self._ghost(inner, b)
                H = self._up(wb, _sl(Ug, b, 0, nb + 1), _sl(Ug, b, 1, nb + 2))
                acc = acc + (_sl(H, b, 1, None) - _sl(H, b, 0, -1)) / self.spacing[b]
            out.append(jnp.concatenate([_sl(Ua, a, 0, 1), inner - dt * acc, _sl(Ua, a, na, None)], axis=a))
        return tuple(out)

    def at_faces(self, c):
        """The cell-centred ``c`` averaged onto the faces of every axis."""
        out = []
        for k, n in enumerate(self.shape):
            cg = self._ghost(c, k)
            out.append(0.5 * (_sl(cg, k, 0, n + 1) + _sl(cg, k, 1, n + 2)))
        return tuple(out)

    # -- projection with obstacles ---------------------------------------------------------------------------------

    def divergence(self, u):
        return sum((_sl(c, k, 1, None) - _sl(c, k, 0, -1)) / self.spacing[k] for k, c in enumerate(u))

    def gradient(self, p, geometry):
        """``(p_f − p_{f−e_k}) / Δx_k`` on open faces, 0 on closed ones."""
        out = []
        for k, m in enumerate(geometry["open"]):
            pg = self._ghost(p, k)
            out.append(m * (_sl(pg, k, 1, None) - _sl(pg, k, 0, -1)) / self.spacing[k])
        return tuple(out)

    def laplace(self, p, geometry):
        return self.divergence(self.gradient(p, geometry))

    def _remove_region_means(self, x, geometry):
        """``x`` on the fluid cells less its mean over each fluid region; 0 in solid cells."""
        R = geometry["regions"]
        flat = x.reshape(-1)
        means = (R @ flat) / geometry["counts"]
        return (flat * geometry["fluid"].reshape(-1) - means @ R).reshape(x.shape)

    def solve(self, b, geometry):
        """The pseudo-inverse solution of ``laplace(p) = b`` on the fluid cells (CG on ``−laplace``)."""
        from jax.scipy.sparse.linalg import cg
        b = self._remove_region_means(b, geometry)
        x, _ = cg(lambda p: -self.laplace(p, geometry), -b, tol=self.tol, atol=0.0, maxiter=self.maxiter)
        return self._remove_region_means(x, geometry)

    def project(self, u, geometry):
        closed = tuple(c * m for c, m in zip(u, geometry["open"]))
        p = self.solve(self.divergence(closed), geometry)
        return tuple(c - g for c, g in zip(closed, self.gradient(p, geometry)))

    # -- the smoke step, rollout and loss ------------------------------------------------------------------------

    def step(self, geometry, d, u, dt=DT, beta=BETA):
        """One smoke step: ``(d, u) → (d', u')``."""
        d_new = self.advect_cells(d, u, dt)
        w = list(self.advect_faces(u, u, dt))
        w[-1] = w[-1] + (dt * beta) * self.at_faces(d_new)[-1]
        return d_new, self.project(tuple(w), geometry)

    def rollout(self, geometry, u0, d0, steps, dt=DT, beta=BETA):
        """``(d_T, u_T)`` after ``steps`` steps from ``(d0, project(u0))``."""
        u = self.project(tuple(u0), geometry)

        def body(carry, _):
            d, u = carry
            return self.step(geometry, d, u, dt, beta), None

        (d, u), _ = self.jax.lax.scan(body, (d0, u), None, length=steps)
        return d, u

    def loss(self, geometry, u0, d0, target, steps=STEPS):
        """``Σ (d_T − target)²``."""
        d, _ = self.rollout(geometry, u0, d0, steps)
        r = d - target
        return self.jnp.sum(r * r)


def issue_problem(n=N, with_obstacle=True, tol=TOL, device=None, steps=STEPS):
    """The issue's inverse problem (scaled to ``n × n``): ``(sim, d0, target, u_init)`` with JAX arrays;
    ``u_init`` is the zero initial velocity of the optimisation."""
    sim = SmokeJax((n, n), obstacle(n) if with_obstacle else None, tol=tol, device=device)
    d0 = sim.put(initial_density(n))
    hidden = tuple(sim.put(c) for c in hidden_velocity(n))
    target, _ = sim.jax.jit(sim.rollout, static_argnames=("steps",))(sim.geometry, hidden, d0, steps=steps)
    u_init = tuple(sim.put(np.zeros(sim.face_shape(k))) for k in range(2))
    return sim, d0, target, u_init


def optimise(n=N, updates=UPDATES, lr=LEARNING_RATE, steps=STEPS, tol=TOL, log=print):
    """Plain gradient descent from ``u0 = 0``; returns ``(losses, seconds per iteration)``."""
    sim, d0, target, u = issue_problem(n, tol=tol, steps=steps)
    vg = sim.value_and_grad_fn
    t0 = time.perf_counter()
    loss, grad = sim.jax.block_until_ready(vg(sim.geometry, u, d0, target, steps=steps))
    compile_s = time.perf_counter() - t0
    losses = []
    t0 = time.perf_counter()
    for it in range(updates + 1):
        if it:
            loss, grad = vg(sim.geometry, u, d0, target, steps=steps)
        losses.append(float(loss))
        if it % 10 == 0 or it == updates:
            log(f"  {it:4d}  loss {losses[-1]:.6e}  ({losses[-1] / losses[0]:.4f} of the start)")
        if it < updates:
            u = tuple(c - lr * g for c, g in zip(u, grad))
    per_it = (time.perf_counter() - t0) / (updates + 1)
    log(f"JAX: {per_it * 1e3:.1f} ms per iteration ({compile_s:.1f} s first call, compile included)")
    return losses, per_it


if __name__ == "__main__":  # pragma: no cover
    optimise()
