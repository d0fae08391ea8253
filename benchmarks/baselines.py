"""Baselines: the same computations written the straightforward way, to compare gpudp with.

- ``numpy`` (CPU) / ``cupy`` (GPU): array expressions, one function body for both (``xp`` is the module);
  the adjoints are the gather-form formulas written with shifts, the solver a textbook CG loop.
- ``jax`` (when installed): the same expressions under ``jax.jit``; gradients by ``jax.vjp`` /
  ``jax.value_and_grad``, time stepping by ``jax.lax.scan``, solves by ``jax.scipy.sparse.linalg.cg`` (whose
  gradient JAX derives implicitly).
- ``cupyx-cg`` (GPU): ``cupyx.scipy.sparse.linalg.cg`` with the Laplacian assembled as a CSR matrix.

Only the grids the suite uses are covered: advection on periodic grids, Poisson on 2-D dirichlet grids,
projection on 2-D periodic or all-neumann grids, all with spacing 1 unless given.
"""
from __future__ import annotations

import os

# -- shifts with ghost rules (NumPy, CuPy and jax.numpy alike) ---------------------------------------------


def shift(xp, a, k, axis, bc):
    """``a`` at index ``i + k`` (``k = ±1``) along ``axis`` with the ghost rule ``bc`` (``"periodic"``,
    ``"dirichlet"``: 0, ``"neumann"``: the boundary cell repeated)."""
    if bc == "periodic":
        return xp.roll(a, -k, axis=axis)
    n = a.shape[axis]
    idx = [slice(None)] * a.ndim
    if k == 1:
        idx[axis] = slice(1, n)
        inner = a[tuple(idx)]
        idx[axis] = slice(n - 1, n)
        edge = a[tuple(idx)]
        ghost = xp.zeros_like(edge) if bc == "dirichlet" else edge
        return xp.concatenate([inner, ghost], axis=axis)
    idx[axis] = slice(0, n - 1)
    inner = a[tuple(idx)]
    idx[axis] = slice(0, 1)
    edge = a[tuple(idx)]
    ghost = xp.zeros_like(edge) if bc == "dirichlet" else edge
    return xp.concatenate([ghost, inner], axis=axis)


# -- advection (periodic) --------------------------------------------------------------------------------------


def advect_step(xp, d, u, c):
    """One upwind step; ``u`` has a leading component axis, ``c = Δt/Δx`` per axis."""
    out = d
    for k in range(d.ndim):
        uk = u[k]
        dp = shift(xp, d, 1, k, "periodic")
        dm = shift(xp, d, -1, k, "periodic")
        out = out - c[k] * (xp.minimum(uk, 0) * (dp - d) + xp.maximum(uk, 0) * (d - dm))
    return out


def advect_adjoint(xp, d, u, g, c):
    """Gradients of one periodic upwind step w.r.t. ``d`` and ``u`` for the cotangent ``g``."""
    gd = g
    gu = []
    for k in range(d.ndim):
        uk = u[k]
        m = xp.minimum(uk, 0)
        p = xp.maximum(uk, 0)
        gd = gd + c[k] * ((m - p) * g - shift(xp, m * g, -1, k, "periodic") + shift(xp, p * g, 1, k, "periodic"))
        dp = shift(xp, d, 1, k, "periodic")
        dm = shift(xp, d, -1, k, "periodic")
        gu.append(-c[k] * g * xp.where(uk < 0, dp - d, d - dm))
    return gd, xp.stack(gu)


def seed_value_and_grad_xp(xp, d0, u, target, c, steps):
    """Loss ``Σ (d_T − target)²`` of ``steps`` upwind steps and its gradient w.r.t. ``u``: the forward loop
    stores the states, the backward loop runs the hand-written adjoint."""
    states = [d0]
    d = d0
    for _ in range(steps - 1):
        d = advect_step(xp, d, u, c)
        states.append(d)
    d = advect_step(xp, d, u, c)
    r = d - target
    loss = (r * r).sum()
    g = 2 * r
    gu = xp.zeros_like(u)
    for t in range(steps - 1, -1, -1):
        g, gut = advect_adjoint(xp, states[t], u, g, c)
        gu = gu + gut
    return loss, gu


# -- staggered operators and CG (2-D; periodic, dirichlet, neumann) -------------------------------------------


def laplace(xp, p, bcs, h=1.0):
    out = None
    for k, bc in enumerate(bcs):
        term = (shift(xp, p, 1, k, bc) - 2 * p + shift(xp, p, -1, k, bc)) / (h * h)
        out = term if out is None else out + term
    return out


def divergence(xp, u, bcs, h=1.0):
    out = None
    for k, bc in enumerate(bcs):
        if bc == "periodic":
            term = (shift(xp, u[k], 1, k, bc) - u[k]) / h
        else:
            n = u[k].shape[k]
            hi = [slice(None)] * u[k].ndim
            lo = [slice(None)] * u[k].ndim
            hi[k], lo[k] = slice(1, n), slice(0, n - 1)
            term = (u[k][tuple(hi)] - u[k][tuple(lo)]) / h
        out = term if out is None else out + term
    return out


def spatial_gradient(xp, p, bcs, h=1.0):
    """Cells → faces; neumann boundary faces get 0 (walls)."""
    out = []
    for k, bc in enumerate(bcs):
        if bc == "periodic":
            out.append((p - shift(xp, p, -1, k, bc)) / h)
        else:
            n = p.shape[k]
            hi = [slice(None)] * p.ndim
            lo = [slice(None)] * p.ndim
            hi[k], lo[k] = slice(1, n), slice(0, n - 1)
            inner = (p[tuple(hi)] - p[tuple(lo)]) / h
            edge = [slice(None)] * p.ndim
            edge[k] = slice(0, 1)
            z = xp.zeros_like(p[tuple(edge)])
            out.append(xp.concatenate([z, inner, z], axis=k))
    return tuple(out)


def zero_walls(xp, u, bcs):
    out = []
    for k, bc in enumerate(bcs):
        c = u[k]
        if bc == "neumann":
            n = c.shape[k]
            idx = [slice(None)] * c.ndim
            idx[k] = slice(1, n - 1)
            edge = [slice(None)] * c.ndim
            edge[k] = slice(0, 1)
            z = xp.zeros_like(c[tuple(edge)])
            c = xp.concatenate([z, c[tuple(idx)], z], axis=k)
        out.append(c)
    return tuple(out)


def cg(xp, matvec, b, tol, maxiter):
    """Textbook CG on ``matvec`` (SPD) from ``x = 0``; stops at ``‖r‖ ≤ tol ‖b‖``. Returns ``(x, iterations)``.
    Reads the residual on the host every iteration, as a plain array-expression loop does."""
    x = xp.zeros_like(b)
    r = b
    p = r
    rr = float((r * r).sum())
    stop = tol * tol * rr
    it = 0
    while it < maxiter and rr > stop:
        q = matvec(p)
        alpha = rr / float((p * q).sum())
        x = x + alpha * p
        r = r - alpha * q
        rr_new = float((r * r).sum())
        p = r + (rr_new / rr) * p
        rr = rr_new
        it += 1
    return x, it


def poisson_xp(xp, b, bcs, tol, maxiter):
    """``laplace(x) = b`` (mean of ``b`` removed when no axis is dirichlet) by CG on ``−laplace``."""
    if all(bc != "dirichlet" for bc in bcs):
        b = b - b.mean()
    x, it = cg(xp, lambda p: -laplace(xp, p, bcs), -b, tol, maxiter)
    return x, it


def project_xp(xp, u, bcs, tol, maxiter):
    """Chorin projection; returns ``(u_new, iterations)``."""
    u = zero_walls(xp, u, bcs)
    p, it = poisson_xp(xp, divergence(xp, u, bcs), bcs, tol, maxiter)
    g = spatial_gradient(xp, p, bcs)
    return tuple(a - b for a, b in zip(u, g)), it


def project_value_and_grad_xp(xp, control, left, right, target, bcs, tol, maxiter):
    """The pressure-demo loss ``½ Σ ((P(control·left) − target)·right)²`` and its gradient: the projector is
    symmetric on periodic and all-neumann grids, so the backward pass projects the incoming gradient."""
    u = tuple(c * m for c, m in zip(control, left))
    out, it1 = project_xp(xp, u, bcs, tol, maxiter)
    res = tuple((o - t) * m for o, t, m in zip(out, target, right))
    loss = 0.5 * sum(float((r * r).sum()) for r in res)
    g, it2 = project_xp(xp, tuple(r * m for r, m in zip(res, right)), bcs, tol, maxiter)
    return loss, tuple(a * m for a, m in zip(g, left)), it1 + it2


# -- JAX ----------------------------------------------------------------------------------------------------------

_jax = None


def jax_module():
    """``(jax, jax.numpy)`` with float64 enabled and GPU memory not preallocated, or ``None`` when JAX is
    not installed."""
    global _jax
    if _jax is None:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        try:
            import jax
            import jax.numpy as jnp
        except Exception as exc:  # not installed, or a broken installation
            _jax = (None, f"JAX is not importable ({type(exc).__name__}: {exc})")
            return _jax
        jax.config.update("jax_enable_x64", True)
        _jax = ((jax, jnp), "")
    return _jax


def jax_device(kind):
    """The JAX device for a device kind, or ``(None, reason)``."""
    mods, reason = jax_module()
    if mods is None:
        return None, reason
    jax = mods[0]
    if kind == "cpu":
        return jax.devices("cpu")[0], ""
    for name in ("cuda", "gpu"):
        try:
            devs = jax.devices(name)
        except RuntimeError:
            continue
        if devs:
            return devs[0], ""
    return None, "this JAX installation has no GPU device"


def jax_advect(c):
    jax, jnp = jax_module()[0]
    return jax.jit(lambda d, u: advect_step(jnp, d, u, c))


def jax_advect_vjp(c):
    jax, jnp = jax_module()[0]

    def vjp(d, u, g):
        _, back = jax.vjp(lambda d_, u_: advect_step(jnp, d_, u_, c), d, u)
        return back(g)

    return jax.jit(vjp)


def jax_seed_value_and_grad(d0, target, c, steps):
    jax, jnp = jax_module()[0]

    def loss(u):
        def body(d, _):
            return advect_step(jnp, d, u, c), None

        d, _ = jax.lax.scan(body, d0, None, length=steps)
        r = d - target
        return jnp.sum(r * r)

    return jax.jit(jax.value_and_grad(loss))


def jax_poisson(bcs, tol, maxiter):
    jax, jnp = jax_module()[0]
    from jax.scipy.sparse.linalg import cg as jcg

    def solve(b):
        if all(bc != "dirichlet" for bc in bcs):
            b = b - b.mean()
        x, _ = jcg(lambda p: -laplace(jnp, p, bcs), -b, tol=tol, maxiter=maxiter)
        return x

    return jax.jit(solve), solve


def jax_project_value_and_grad(left, right, target, bcs, tol, maxiter):
    jax, jnp = jax_module()[0]
    _, solve = jax_poisson(bcs, tol, maxiter)

    def loss(control):
        u = zero_walls(jnp, tuple(c * m for c, m in zip(control, left)), bcs)
        p = solve(divergence(jnp, u, bcs))
        g = spatial_gradient(jnp, p, bcs)
        return 0.5 * sum(jnp.sum(((a - b - t) * m) ** 2) for a, b, t, m in zip(u, g, target, right))

    return jax.jit(jax.value_and_grad(loss))


# -- cupyx CG with a CSR Laplacian (GPU) -----------------------------------------------------------------------


def csr_minus_laplace_dirichlet(shape, dtype):
    """``−laplace`` on a 2-D dirichlet grid (spacing 1) as a ``cupyx.scipy.sparse.csr_matrix``."""
    import cupy
    import cupyx.scipy.sparse as sp

    def one_d(n):
        main = cupy.full(n, 2.0, dtype=dtype)
        off = cupy.full(n - 1, -1.0, dtype=dtype)
        return sp.diags([off, main, off], [-1, 0, 1], format="csr", dtype=dtype)

    n0, n1 = shape
    a = sp.kron(one_d(n0), sp.identity(n1, dtype=dtype, format="csr")) + \
        sp.kron(sp.identity(n0, dtype=dtype, format="csr"), one_d(n1))
    return a.tocsr()


def cupyx_cg(A, b, tol, maxiter):
    """``cupyx.scipy.sparse.linalg.cg`` (``rtol`` or, in older CuPy, ``tol``); returns ``(x, iterations)``."""
    import inspect

    from cupyx.scipy.sparse.linalg import cg as xcg
    count = [0]

    def callback(_):
        count[0] += 1

    key = "rtol" if "rtol" in inspect.signature(xcg).parameters else "tol"
    x, _ = xcg(A, b, maxiter=maxiter, callback=callback, **{key: tol})
    return x, count[0]
