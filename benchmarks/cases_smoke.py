"""Benchmark cases of the incompressible-flow operators (DESIGN.md §6): staggered advection, one step of the
smoke simulation and the smoke demo's optimisation iteration, each against the JAX implementation of
:mod:`benchmarks.jax_smoke` measured in the same run (``jax.jit``; gradients by ``jax.vjp`` /
``jax.value_and_grad``, the solve by ``jax.scipy.sparse.linalg.cg``, differentiated implicitly).

All grids are closed boxes (every axis ``neumann``), the smoke demo's setting. Byte models (``s`` item size,
``N`` cells, ``F = Σ_k N·(n_k + 1)/n_k`` faces of a staggered field, ``its`` the CG iterations of the call):

==============  =================================================================================================
``mac_fwd``     density: read ``q`` and ``u``, write ``q'``: ``(2N + F)·s``; velocity self-advection: read ``u``,
                write ``u'``: ``2F·s``
``mac_adj``     density: read ``g``, ``q``, ``u``, write ``∂q``, ``∂u``: ``(3N + 2F)·s``; self-advection: read
                ``g`` and ``u``, write the one gradient ``∂u``: ``3F·s``
``smoke_fwd``   one step (advect density and velocity, buoyancy, projection): read ``d``, ``u``, write ``d'``,
                ``u'`` and run the solve: ``(2N + 2F + 6·its·N)·s``
``smoke_adj``   the tape's backward pass of one step: read the cotangents of ``d'`` and ``u'`` and the saved
                ``d``, ``u``, write ``∂d``, ``∂u`` and run the one adjoint solve: ``(3N + 3F + 6·its·N)·s``
``smoke_demo``  the demo's iteration (100 steps forward and backward): timed only, no byte model
==============  =================================================================================================

The adjoint rows time the backward pass alone: gpudp's tape is recorded once per input set and differentiated
repeatedly (all outputs seeded with fixed cotangents by :class:`_Cotangents`, which costs nothing). JAX's
rows run ``jax.vjp`` inside one jitted function: XLA keeps of the forward pass only what the backward needs
(the stencils' inputs; the forward solve is dead code, the projection being linear), so both sides read the
step's inputs and the cotangents.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from . import jax_smoke as JS
from .cases import Case, Config, Impl, _clock, _host_sync, _require_jax, _watch_solves, shape_label, size_table
from .harness import Rotation, rotation_count

MAC_DTYPE = "float32"
SMOKE_DTYPE = "float64"


def _gpudp():
    import gpudp
    return gpudp


def _missing(*names):
    """``None`` when gpudp has every function in ``names``, else the reason."""
    gp = _gpudp()
    absent = [n for n in names if not hasattr(gp, n)]
    if absent:
        return f"gpudp.{', gpudp.'.join(absent)} not in this version of gpudp"
    try:
        gp.Grid((2, 2), solid=np.zeros((2, 2), bool))
    except TypeError:
        return "gpudp.Grid has no solid= (obstacles) in this version of gpudp"
    return None


def faces(shape):
    """Faces of a staggered field on a closed box: ``Σ_k N·(n_k + 1)/n_k``."""
    n = int(np.prod(shape))
    return sum(n // m * (m + 1) for m in shape)


def face_shape(shape, k):
    return tuple(m + (j == k) for j, m in enumerate(shape))


class _Cotangents:
    """An operator that turns the outputs of a step into a scalar whose backward hands each output its fixed
    cotangent (the given arrays, unchanged): a tape seeded on several outputs at once, at no cost."""

    _op = None

    @classmethod
    def apply(cls, outputs, cotangents):
        if cls._op is None:
            gp = _gpudp()
            from gpudp import arrays

            class Seed(gp.Operator):
                @staticmethod
                def forward(ctx, *outs, cotangents):
                    ctx.cotangents = tuple(cotangents)
                    return arrays.apply(lambda xp, x: xp.zeros((), x.dtype), outs[0])

                @staticmethod
                def backward(ctx, g):
                    return ctx.cotangents

            cls._op = Seed
        return cls._op.apply(*outputs, cotangents=cotangents)


def _tape_backward(fn, inputs, cotangents):
    """Record ``fn(*leaves)`` (a tuple of outputs) on a tape; returns a function running its backward pass
    (the gradients w.r.t. every input)."""
    gp = _gpudp()
    leaves = [gp.tensor(x, requires_grad=True) for x in inputs]
    with gp.Tape() as tape:
        seed = _Cotangents.apply(fn(*leaves), cotangents)
    return lambda: tape.gradient(seed, leaves, retain=True)


@contextlib.contextmanager
def _watch_all_solves(backend, hook):
    """:func:`benchmarks.cases._watch_solves`, also counting the solves on grids with obstacles."""
    try:
        from gpudp.ops import masked_cg
    except ImportError:
        masked_cg = None
    with _watch_solves(backend, hook):
        if masked_cg is None:
            yield
            return
        original = masked_cg.cg_solve

        def watched(*args, **kwargs):
            t0 = time.perf_counter()
            x, its, res = original(*args, **kwargs)
            hook(time.perf_counter() - t0, int(its))
            return x, its, res

        masked_cg.cg_solve = watched
        try:
            yield
        finally:
            masked_cg.cg_solve = original


def _count_all_solves(backend, fn):
    counts = []
    with _watch_all_solves(backend, lambda seconds, its: counts.append(its)):
        fn()
    return counts


# -- staggered advection -----------------------------------------------------------------------------------------


class _MacBase(Case):
    """``advect_mac`` on a closed box: a cell-centred density (``density``) or the velocity itself
    (``velocity``, self-advection)."""

    _sets, _sets_key = None, None

    def available(self):
        return _missing("advect_mac")

    def configs(self, kind, sizes):
        return [Config(f"{shape_label(s)} {MAC_DTYPE} {v}", tuple(s), MAC_DTYPE, {"variant": v})
                for s in size_table(sizes, kind)["advect"] for v in ("density", "velocity")]

    @staticmethod
    def dt(cfg):
        return 0.4 / len(cfg.shape)   # |u| ≤ 1, spacing 1: CFL ≤ 0.4

    def _host_sets(self, cfg, env, set_bytes):
        """Host input sets ``(q, u, g)``: ``q`` the density (``None`` for self-advection), ``u`` the velocity
        (tuple), ``g`` a cotangent of the output; the same sets for every implementation of one size."""
        key = (cfg.label, env.kind)
        if self._sets_key != key:
            self.release()
            count = rotation_count(set_bytes, env.device, env.mem_budget)
            rng = env.rng()
            dt = np.dtype(cfg.dtype)
            uniform = lambda shape: (2 * rng.random(shape, dtype=dt) - 1).astype(dt, copy=False)  # noqa: E731
            D = len(cfg.shape)
            sets = []
            for _ in range(count):
                u = tuple(uniform(face_shape(cfg.shape, k)) for k in range(D))
                if cfg.params["variant"] == "density":
                    sets.append((rng.random(cfg.shape, dtype=dt), u, uniform(cfg.shape)))
                else:
                    sets.append((None, u, tuple(uniform(face_shape(cfg.shape, k)) for k in range(D))))
            self._sets, self._sets_key = sets, key
        return self._sets

    def release(self):
        self._sets, self._sets_key = None, None

    def _jax_sim(self, cfg, env):
        dev = _require_jax(env)
        return JS.SmokeJax(cfg.shape, dtype=cfg.dtype, device=dev)


class MacForward(_MacBase):
    name = "mac_fwd"
    title = "advect_mac forward, one step (closed box)"

    def bytes(self, cfg, iterations=None):
        F = faces(cfg.shape)
        if cfg.params["variant"] == "density":
            return (2 * cfg.cells + F) * cfg.itemsize
        return 2 * F * cfg.itemsize

    def gpudp_impl(self, cfg, backend, env):
        gp = _gpudp()
        grid = gp.Grid(cfg.shape, boundary="neumann")
        dt = self.dt(cfg)
        put = lambda a: backend.asarray(a, cfg.dtype)  # noqa: E731
        density = cfg.params["variant"] == "density"
        sets = Rotation([(put(q) if density else None, tuple(put(c) for c in u))
                         for q, u, _ in self._host_sets(cfg, env, self.bytes(cfg))])

        def run():
            q, u = sets.next()
            return gp.advect_mac(q if density else u, u, dt, grid, check_cfl=False)

        return Impl(run, _clock(backend), _host_sync(backend), info={"input_sets": len(sets)})

    def baselines(self, cfg, env):
        def jax_impl():
            sim = self._jax_sim(cfg, env)
            dt = self.dt(cfg)
            jax = sim.jax
            if cfg.params["variant"] == "density":
                fn = jax.jit(lambda q, u: sim.advect_cells(q, u, dt))
                sets = [(sim.put(q), tuple(sim.put(c) for c in u)) for q, u, _ in
                        self._host_sets(cfg, env, self.bytes(cfg))]
            else:
                fn = jax.jit(lambda u: sim.advect_faces(u, u, dt))
                sets = [(tuple(sim.put(c) for c in u),) for _, u, _ in self._host_sets(cfg, env, self.bytes(cfg))]
            rot = Rotation(sets)
            return Impl(lambda: jax.block_until_ready(fn(*rot.next())), "host", info={"input_sets": len(rot)})

        return {"jax": jax_impl}


class MacAdjoint(_MacBase):
    name = "mac_adj"
    title = "advect_mac adjoint (tape backward), one step (closed box)"

    def bytes(self, cfg, iterations=None):
        F = faces(cfg.shape)
        if cfg.params["variant"] == "density":
            return (3 * cfg.cells + 2 * F) * cfg.itemsize
        return 3 * F * cfg.itemsize

    def gpudp_impl(self, cfg, backend, env):
        gp = _gpudp()
        grid = gp.Grid(cfg.shape, boundary="neumann")
        dt = self.dt(cfg)
        D = len(cfg.shape)
        put = lambda a: backend.asarray(a, cfg.dtype)  # noqa: E731
        prepared = []
        for q, u, g in self._host_sets(cfg, env, self.bytes(cfg)):
            if cfg.params["variant"] == "density":
                back = _tape_backward(lambda q_, *u_: (gp.advect_mac(q_, u_, dt, grid, check_cfl=False),),
                                      [put(q)] + [put(c) for c in u], (put(g),))
            else:
                back = _tape_backward(lambda *u_: gp.advect_mac(u_, u_, dt, grid, check_cfl=False),
                                      [put(c) for c in u], tuple(put(c) for c in g))
            prepared.append(back)
        sets = Rotation(prepared)
        return Impl(lambda: sets.next()(), _clock(backend), _host_sync(backend),
                    info={"input_sets": len(sets), "components": D})

    def baselines(self, cfg, env):
        def jax_impl():
            sim = self._jax_sim(cfg, env)
            dt = self.dt(cfg)
            jax = sim.jax
            host = self._host_sets(cfg, env, self.bytes(cfg))
            if cfg.params["variant"] == "density":
                def vjp(q, u, g):
                    return jax.vjp(lambda q_, u_: sim.advect_cells(q_, u_, dt), q, u)[1](g)
                sets = [(sim.put(q), tuple(sim.put(c) for c in u), sim.put(g)) for q, u, g in host]
            else:
                def vjp(u, g):
                    return jax.vjp(lambda u_: sim.advect_faces(u_, u_, dt), u)[1](g)
                sets = [(tuple(sim.put(c) for c in u), tuple(sim.put(c) for c in g)) for _, u, g in host]
            fn = jax.jit(vjp)
            rot = Rotation(sets)
            return Impl(lambda: jax.block_until_ready(fn(*rot.next())), "host", info={"input_sets": len(rot)})

        return {"jax": jax_impl}


# -- one smoke step ------------------------------------------------------------------------------------------------


def smoke_state(n):
    """Host float64 ``(solid, d, u)`` of the smoke problem scaled to ``n × n``: the obstacle, the initial
    blob and the hidden initial velocity (the state a step starts from)."""
    return JS.obstacle(n), JS.initial_density(n), JS.hidden_velocity(n)


def gpudp_step(gp, grid, d, u, solve):
    """One smoke step with gpudp (the demo's step): ``(d, u) → (d', u')``."""
    d_new = gp.advect_mac(d, u, JS.DT, grid)
    w = gp.advect_mac(u, u, JS.DT, grid)
    w = (w[0], w[1] + (JS.DT * JS.BETA) * gp.at_faces(d_new, grid)[1])
    return d_new, gp.project(w, grid, **solve)


class _SmokeStepBase(Case):
    """One step of the smoke simulation at a size, with the demo's obstacle (scaled) or without."""

    def available(self):
        return _missing("advect_mac", "at_faces")

    def configs(self, kind, sizes):
        return [Config(f"{shape_label(s)} {'obstacle' if ob else 'open'} {SMOKE_DTYPE}", tuple(s), SMOKE_DTYPE,
                       {"obstacle": ob})
                for s in size_table(sizes, kind)["smoke"] for ob in (True, False)]

    @staticmethod
    def solve_options():
        return {"tol": JS.TOL, "preconditioner": None}

    def _grid(self, cfg):
        gp = _gpudp()
        solid, _, _ = smoke_state(cfg.shape[0])
        return gp.Grid(cfg.shape, boundary="neumann", solid=solid if cfg.params["obstacle"] else None)

    def _jax(self, cfg, env):
        dev = _require_jax(env)
        solid, d, u = smoke_state(cfg.shape[0])
        sim = JS.SmokeJax(cfg.shape, solid if cfg.params["obstacle"] else None, tol=JS.TOL, dtype=cfg.dtype,
                          device=dev)
        return sim, sim.put(d), tuple(sim.put(c) for c in u)

    def _cotangents(self, cfg):
        rng = np.random.default_rng(7)
        return rng.standard_normal(cfg.shape), tuple(rng.standard_normal(face_shape(cfg.shape, k))
                                                      for k in range(len(cfg.shape)))


class SmokeForward(_SmokeStepBase):
    name = "smoke_fwd"
    title = f"smoke step forward (advect d and u, buoyancy, project; plain CG tol {JS.TOL:g})"

    def bytes(self, cfg, iterations):
        if iterations is None:
            return None
        return (2 * cfg.cells + 2 * faces(cfg.shape) + 6 * iterations * cfg.cells) * cfg.itemsize

    def gpudp_impl(self, cfg, backend, env):
        gp = _gpudp()
        grid = self._grid(cfg)
        _, d, u = smoke_state(cfg.shape[0])
        d = backend.asarray(d, cfg.dtype)
        u = tuple(backend.asarray(c, cfg.dtype) for c in u)
        solve = self.solve_options()
        fn = lambda: gpudp_step(gp, grid, d, u, solve)  # noqa: E731
        counts = _count_all_solves(backend, fn)
        return Impl(fn, _clock(backend), _host_sync(backend), iterations=sum(counts),
                    info={"solve_iterations": counts})

    def baselines(self, cfg, env):
        def jax_impl():
            sim, d, u = self._jax(cfg, env)
            geo = sim.geometry
            return Impl(lambda: sim.jax.block_until_ready(sim.step_fn(geo, d, u)), "host")

        return {"jax": jax_impl}


class SmokeAdjoint(_SmokeStepBase):
    name = "smoke_adj"
    title = "smoke step adjoint (tape backward of one step; one adjoint solve)"

    def bytes(self, cfg, iterations):
        if iterations is None:
            return None
        return (3 * cfg.cells + 3 * faces(cfg.shape) + 6 * iterations * cfg.cells) * cfg.itemsize

    def gpudp_impl(self, cfg, backend, env):
        gp = _gpudp()
        grid = self._grid(cfg)
        _, d, u = smoke_state(cfg.shape[0])
        gd, gu = self._cotangents(cfg)
        put = lambda a: backend.asarray(a, cfg.dtype)  # noqa: E731
        solve = self.solve_options()

        def step(d_, *u_):
            d_new, u_new = gpudp_step(gp, grid, d_, u_, solve)
            return (d_new,) + tuple(u_new)

        fn = _tape_backward(step, [put(d)] + [put(c) for c in u], (put(gd),) + tuple(put(c) for c in gu))
        counts = _count_all_solves(backend, fn)
        return Impl(fn, _clock(backend), _host_sync(backend), iterations=sum(counts),
                    info={"solve_iterations": counts})

    def baselines(self, cfg, env):
        def jax_impl():
            sim, d, u = self._jax(cfg, env)
            gd, gu = self._cotangents(cfg)
            gd, gu = sim.put(gd), tuple(sim.put(c) for c in gu)
            jax = sim.jax

            @jax.jit
            def vjp(geo, d, u, gd, gu):
                return jax.vjp(lambda d_, u_: sim.step(geo, d_, u_), d, u)[1]((gd, gu))

            geo = sim.geometry
            return Impl(lambda: jax.block_until_ready(vjp(geo, d, u, gd, gu)), "host")

        return {"jax": jax_impl}


# -- the smoke demo's iteration --------------------------------------------------------------------------------


class SmokeDemo(Case):
    name = "smoke_demo"
    title = "smoke demo iteration: loss and gradient through 100 steps (64², obstacle; JAX: plain CG)"
    solve = True

    def available(self):
        missing = _missing("advect_mac", "at_faces")
        if missing:
            return missing
        try:
            from gpudp.demo import smoke  # noqa: F401
        except ImportError as exc:
            return f"gpudp.demo.smoke is not importable ({exc})"
        return None

    def configs(self, kind, sizes):
        """The demo's problem, tolerance and preconditioner (its 100 steps; 2 in the CI smoke run), and, when the
        demo uses a preconditioner, the same iteration with plain CG, the JAX baseline's method (the JAX row
        belongs to the demo's configuration)."""
        try:
            from gpudp.demo import smoke
            n, steps, tol = smoke.SHAPE[0], smoke.STEPS, smoke.TOL
            pc = getattr(smoke, "PRECONDITIONER", None)
        except ImportError:  # the case is reported unavailable; the label is the issue's problem
            n, steps, tol, pc = JS.N, JS.STEPS, JS.TOL, None
        steps = 2 if sizes == "smoke" else steps
        label = f"{n}x{n} T={steps} {SMOKE_DTYPE} (tol {tol:g}"
        out = [Config(f"{label}, {pc or 'plain CG'})", (n, n), SMOKE_DTYPE,
                      {"steps": steps, "tol": tol, "preconditioner": pc, "baseline": True})]
        if pc is not None:
            out.append(Config(f"{label}, plain CG)", (n, n), SMOKE_DTYPE,
                              {"steps": steps, "tol": tol, "preconditioner": None, "baseline": False}))
        return out

    def bytes(self, cfg, iterations):
        return None

    @staticmethod
    def control():
        """The control the iteration is timed at: half the hidden velocity (a velocity of the size the
        optimisation passes through; from ``u0 = 0`` the first solve would have nothing to do)."""
        return tuple(0.5 * c for c in JS.hidden_velocity())

    def _problem(self, cfg):
        from gpudp.demo import smoke
        gp = _gpudp()
        prob = smoke.SmokeProblem(tol=cfg.params["tol"], steps=cfg.params["steps"],
                                  preconditioner=cfg.params["preconditioner"])
        control = tuple(gp.tensor(c) for c in self.control())
        return prob, control

    def gpudp_impl(self, cfg, backend, env):
        prob, control = self._problem(cfg)
        fn = lambda: prob.loss_and_grad(control)  # noqa: E731  (the demo's own iteration)
        counts = _count_all_solves(backend, fn)
        return Impl(fn, _clock(backend), _host_sync(backend), iterations=sum(counts),
                    info={"solves": len(counts), "tape_bytes": getattr(prob, "tape_bytes", None)})

    def baselines(self, cfg, env):
        if not cfg.params["baseline"]:
            return {}

        def jax_impl():
            dev = _require_jax(env)
            sim, d0, target, _ = JS.issue_problem(tol=cfg.params["tol"], device=dev, steps=cfg.params["steps"])
            u = tuple(sim.put(c) for c in self.control())
            geo, steps = sim.geometry, cfg.params["steps"]
            return Impl(lambda: sim.jax.block_until_ready(sim.value_and_grad_fn(geo, u, d0, target, steps=steps)),
                        "host")

        return {"jax": jax_impl}

    def diagnostics(self, cfg, backend, env, timer):
        """The time of one call inside the CG solves and outside them (advection, interpolation, tape,
        losses)."""
        if not cfg.params["baseline"]:
            return {}
        prob, control = self._problem(cfg)
        inside = [0.0]

        def hook(seconds, its):
            inside[0] += seconds

        calls = 1  # the kernels are compiled by now; each call takes long enough to time alone
        with _watch_all_solves(backend, hook):
            t0 = time.perf_counter()
            for _ in range(calls):
                prob.loss_and_grad(control)
            backend.synchronize()
            total = (time.perf_counter() - t0) / calls
        return {"solves_s": inside[0] / calls, "outside_solves_s": total - inside[0] / calls, "total_s": total,
                "tape_bytes": getattr(prob, "tape_bytes", None)}


SMOKE_CASES = [MacForward(), MacAdjoint(), SmokeForward(), SmokeAdjoint(), SmokeDemo()]
