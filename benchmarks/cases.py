"""The benchmark cases: what is timed, at which sizes, and the byte model of each.

A byte model is the fewest bytes an operation must move through memory: each input read once, each output
written once (``s`` is the item size, ``N`` the cells of the grid, ``D`` its dimensions):

=====================  ==========================================================================================
``advect_fwd``         read ``d`` and ``u``, write ``d'``: ``(D + 2)·N·s``
``advect_adj``         read ``g``, ``d``, ``u``, write ``∂d`` and ``∂u``: ``(2D + 3)·N·s``
``seed_grad``          read ``d0``, ``u``, ``target``, write the loss and ``∂u``: ``4·N·8 + 8`` (latency-bound:
                       everything lives in the first-level cache; the number is reported for completeness)
``cg_iter``            one CG iteration maps the state ``(x, r, p)`` to the next one: read 3 and write 3 vectors,
                       ``6·N·s``. (The product ``q = A p`` is an intermediate; CG's two global reductions force
                       at least two passes, so an implementation moves at least ``10·N·s``: the 2× target
                       leaves room for that and no more.)
``poisson_solve``      its iterations times the CG-iteration model, plus reading ``b`` and writing ``x``:
                       ``(6·iterations + 2)·N·s``
``project_grad``       forward and backward projection: each reads its field and writes the projected one
                       (``2·F·s`` each, ``F`` faces in all components) and runs one solve
                       (``6·iterations·N·s``)
=====================  ==========================================================================================

The staggered-advection and smoke cases (``mac_*``, ``smoke_*``) and their byte models are in
:mod:`benchmarks.cases_smoke`, the comparison of the Poisson solvers (``solvers``) in
:mod:`benchmarks.cases_solvers`, the long rollouts and the memory soak (``rollout_advect``, ``rollout_smoke``,
``soak``) in :mod:`benchmarks.cases_rollout`. Each case lists its implementations: gpudp on every backend asked
for, and the baselines of :mod:`benchmarks.baselines` (:mod:`benchmarks.jax_smoke` for the smoke cases) on the
same device kind.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import baselines as B
from .harness import Rotation, rotation_count

# edge lengths per size set and device kind
SIZES = {
    "default": {
        "cpu": {"advect": [(1024, 1024), (128, 128, 128)], "poisson": [((512, 512), "float64"), ((1024, 1024), "float32")],
                "cg": [(1024, 1024)], "project": [(512, 512)], "smoke": [(64, 64), (128, 128)]},
        "gpu": {"advect": [(4096, 4096), (256, 256, 256)], "poisson": [((2048, 2048), "float64"), ((4096, 4096), "float32")],
                "cg": [(4096, 4096)], "project": [(2048, 2048)], "smoke": [(64, 64), (1024, 1024)]},
    },
    "small": {
        "cpu": {"advect": [(512, 512), (64, 64, 64)], "poisson": [((256, 256), "float64"), ((512, 512), "float32")],
                "cg": [(512, 512)], "project": [(256, 256)], "smoke": [(32, 32), (64, 64)]},
        "gpu": {"advect": [(2048, 2048), (128, 128, 128)], "poisson": [((1024, 1024), "float64"), ((2048, 2048), "float32")],
                "cg": [(2048, 2048)], "project": [(1024, 1024)], "smoke": [(64, 64), (512, 512)]},
    },
    "smoke": {
        kind: {"advect": [(32, 32), (8, 8, 8)], "poisson": [((16, 16), "float64"), ((16, 16), "float32")],
               "cg": [(32, 32)], "project": [(16, 16)], "smoke": [(16, 16)]}
        for kind in ("cpu", "gpu")
    },
}
#: "full": the default sizes; the Poisson-solver case (benchmarks.cases_solvers) adds its large CPU sizes
SIZES["full"] = SIZES["default"]

CG_FIXED_ITERATIONS = 50
SEED_N, SEED_T, SEED_DT = 128, 100, 0.002
POISSON_TOL = 1e-6
PROJECT_TOL = 1e-5


def parse_sizes(text):
    """``"default"``, ``"full"``, ``"small"``, or explicit grid shapes like ``"512x512,64x64x64"``: every case on
    a grid runs at the shapes of its dimension (advection and the Poisson-solver comparison at 2-D and 3-D ones;
    the solves and the smoke step at 2-D square ones)."""
    if text in ("default", "full", "small", "smoke"):
        return text
    shapes = []
    for part in text.split(","):
        dims = tuple(int(v) for v in part.lower().split("x") if v)
        if len(dims) not in (1, 2, 3) or min(dims) < 3:
            raise ValueError(f"--sizes: {part!r} is not a grid shape like 512x512 or 64x64x64 (edges >= 3)")
        shapes.append(dims)
    two_d = [s for s in shapes if len(s) == 2]
    table = {"advect": shapes, "poisson": [(s, dt) for s in two_d for dt in ("float64", "float32")],
             "cg": two_d, "project": two_d, "smoke": [s for s in two_d if s[0] == s[1]]}
    return {"cpu": table, "gpu": table}


def size_table(sizes, kind):
    return (SIZES[sizes] if isinstance(sizes, str) else sizes)[kind]


def shape_label(shape):
    return "x".join(map(str, shape))


@dataclass
class Config:
    """One size/dtype of a case."""

    label: str
    shape: tuple
    dtype: str
    params: dict = field(default_factory=dict)

    @property
    def cells(self):
        return int(np.prod(self.shape))

    @property
    def itemsize(self):
        return np.dtype(self.dtype).itemsize


@dataclass
class Impl:
    """One implementation ready to time: ``fn()`` runs one call (on the next input set)."""

    fn: object
    clock: str = "host"              # "host" or "cuda"
    sync: object = None              # called before the host clock is read
    iterations: object = None        # CG iterations per call (solves): an int, or a callable read after timing
    info: dict = field(default_factory=dict)
    warmup_fn: object = None         # a cheaper first call that compiles everything (solves)


@dataclass
class Env:
    """What the cases need to know about the run."""

    kind: str                         # "cpu" or "gpu"
    device: dict
    mem_budget: int                   # bytes the rotated input sets may occupy
    smoke: bool = False
    seed: int = 0

    @property
    def xp(self):
        if self.kind == "cpu":
            return np
        import cupy
        return cupy

    def rng(self):
        return np.random.default_rng(self.seed)

    def to_xp(self, a, dtype):
        return self.xp.asarray(np.asarray(a, dtype=dtype))

    def xp_sync(self):
        if self.kind == "gpu":
            import cupy
            return lambda: cupy.cuda.get_current_stream().synchronize()
        return None

    def xp_clock(self):
        return "cuda" if self.kind == "gpu" else "host"


def _gpudp():
    import gpudp
    return gpudp


def _host_sync(backend):
    return backend.synchronize if backend.name != "cpu" else None


def _clock(backend):
    return "host" if backend.name == "cpu" else "cuda"


def _require_jax(env):
    """Raise :class:`Unavailable` with the reason when JAX cannot run on the device kind."""
    dev, reason = B.jax_device(env.kind)
    if dev is None:
        raise Unavailable(reason)
    return dev


def _jax_impl(env, fn, args_sets, **info):
    """Time ``fn(*args)`` under JAX on the device kind, rotating the argument sets."""
    dev, reason = B.jax_device(env.kind)
    if dev is None:
        raise Unavailable(reason)
    jax = B.jax_module()[0][0]
    sets = Rotation([tuple(jax.device_put(a, dev) for a in args) for args in args_sets])

    def run():
        return jax.block_until_ready(fn(*sets.next()))

    return Impl(run, "host", info=dict(info, input_sets=len(sets)))


class Unavailable(Exception):
    """An implementation that cannot run here (the message says why)."""


class Case:
    name = ""
    title = ""
    solve = False   # True: timed with the solve budget (few, long calls)

    def configs(self, kind, sizes):
        raise NotImplementedError

    def bytes(self, cfg, iterations):
        raise NotImplementedError

    def available(self):
        """``None`` when the gpudp functions this case needs exist, else the reason they do not."""
        return None

    def gpudp_impl(self, cfg, backend, env):
        raise NotImplementedError

    def baselines(self, cfg, env):
        """``{name: factory}``; each factory returns an :class:`Impl` or raises :class:`Unavailable`."""
        return {}

    def diagnostics(self, cfg, backend, env, timer):
        """Extra measurements that explain a result (``timer(fn)`` → Timing); a dict."""
        return {}

    def release(self):
        """Drop what the case keeps between the implementations of one size."""


# -- advection ------------------------------------------------------------------------------------------------


class _AdvectBase(Case):
    _sets, _sets_key = None, None

    def configs(self, kind, sizes):
        return [Config(f"{shape_label(s)} {dt}", tuple(s), dt) for s in size_table(sizes, kind)["advect"]
                for dt in ("float32", "float64")]

    @staticmethod
    def coef(cfg):
        D = len(cfg.shape)
        dt = 0.4 / D   # with |u| ≤ 1 and spacing 1: CFL ≤ 0.4
        return dt, tuple(dt for _ in range(D))

    def _host_sets(self, cfg, env, arrays_per_set):
        """Host input sets ``(d, u, g)`` in the case's dtype, as many as the rotation needs; the same sets for
        every implementation of one size (kept until :meth:`release`)."""
        key = (cfg.label, env.kind)
        if self._sets_key != key:
            self.release()
            D = len(cfg.shape)
            count = rotation_count(arrays_per_set * cfg.cells * cfg.itemsize, env.device, env.mem_budget)
            rng = env.rng()
            dt = np.dtype(cfg.dtype)
            uniform = lambda shape: (2 * rng.random(shape, dtype=dt) - 1).astype(dt, copy=False)  # noqa: E731
            self._sets = [(uniform(cfg.shape), uniform((D,) + cfg.shape), uniform(cfg.shape)) for _ in range(count)]
            self._sets_key = key
        return self._sets

    def release(self):
        self._sets, self._sets_key = None, None

    def diagnostics(self, cfg, backend, env, timer):
        """CPU profile of the 2-D float32 case (the target's): the same calls with one thread instead of all
        (does the time halve, i.e. is each core limited by what it alone can pull from memory?) and with one
        input set (the data stays in the last-level cache: the time the arithmetic and the caches need)."""
        if backend.name != "cpu" or cfg.shape != (1024, 1024) or cfg.dtype != "float32" or env.smoke:
            return {}
        import numba

        rotated = timer(self.gpudp_impl(cfg, backend, env).fn).median
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            one_thread = timer(self.gpudp_impl(cfg, backend, env).fn).median
        finally:
            numba.set_num_threads(threads)
        in_cache = timer(self.gpudp_impl(cfg, backend, env, sets=1).fn).median
        return {"threads": threads, "rotated_s": rotated, "one_thread_s": one_thread, "in_cache_s": in_cache}


class AdvectForward(_AdvectBase):
    name = "advect_fwd"
    title = "advect forward, one step (periodic)"

    def bytes(self, cfg, iterations=None):
        return (len(cfg.shape) + 2) * cfg.cells * cfg.itemsize

    def gpudp_impl(self, cfg, backend, env, sets=None):
        gp = _gpudp()
        grid = gp.Grid(cfg.shape)
        dt, _ = self.coef(cfg)
        sets = Rotation([(backend.asarray(d, cfg.dtype), backend.asarray(u, cfg.dtype))
                         for d, u, _ in self._host_sets(cfg, env, len(cfg.shape) + 2)[:sets]])

        def run():
            d, u = sets.next()
            return gp.advect_upwind(d, u, dt, grid, check_cfl=False)

        return Impl(run, _clock(backend), _host_sync(backend), info={"input_sets": len(sets)})

    def baselines(self, cfg, env):
        _, c = self.coef(cfg)

        def xp_impl():
            xp = env.xp
            sets = Rotation([(env.to_xp(d, cfg.dtype), env.to_xp(u, cfg.dtype))
                             for d, u, _ in self._host_sets(cfg, env, len(cfg.shape) + 2)])
            return Impl(lambda: B.advect_step(xp, *sets.next(), c), env.xp_clock(), env.xp_sync(),
                        info={"input_sets": len(sets)})

        def jax_impl():
            _require_jax(env)
            return _jax_impl(env, B.jax_advect(c), [(np.asarray(d, cfg.dtype), np.asarray(u, cfg.dtype))
                                                    for d, u, _ in self._host_sets(cfg, env, len(cfg.shape) + 2)])

        return {"numpy" if env.kind == "cpu" else "cupy": xp_impl, "jax": jax_impl}


class AdvectAdjoint(_AdvectBase):
    name = "advect_adj"
    title = "advect adjoint, both gradients, one step (periodic)"

    def bytes(self, cfg, iterations=None):
        return (2 * len(cfg.shape) + 3) * cfg.cells * cfg.itemsize

    def gpudp_impl(self, cfg, backend, env, sets=None):
        gp = _gpudp()
        grid = gp.Grid(cfg.shape)
        dt, _ = self.coef(cfg)
        prepared = []
        for d, u, g in self._host_sets(cfg, env, 2 * len(cfg.shape) + 3)[:sets]:
            _, back = gp.vjp(lambda d_, u_: gp.advect_upwind(d_, u_, dt, grid, check_cfl=False),
                             backend.asarray(d, cfg.dtype), backend.asarray(u, cfg.dtype))
            prepared.append((back, backend.asarray(g, cfg.dtype)))
        sets = Rotation(prepared)

        def run():
            back, g = sets.next()
            return back(g)

        return Impl(run, _clock(backend), _host_sync(backend), info={"input_sets": len(sets)})

    def baselines(self, cfg, env):
        _, c = self.coef(cfg)
        n = 2 * len(cfg.shape) + 3

        def xp_impl():
            xp = env.xp
            sets = Rotation([tuple(env.to_xp(a, cfg.dtype) for a in s) for s in self._host_sets(cfg, env, n)])
            return Impl(lambda: B.advect_adjoint(xp, *sets.next(), c), env.xp_clock(), env.xp_sync(),
                        info={"input_sets": len(sets)})

        def jax_impl():
            _require_jax(env)
            return _jax_impl(env, B.jax_advect_vjp(c), [tuple(np.asarray(a, cfg.dtype) for a in s)
                                                       for s in self._host_sets(cfg, env, n)])

        return {"numpy" if env.kind == "cpu" else "cupy": xp_impl, "jax": jax_impl}


# -- the seed's inverse problem ------------------------------------------------------------------------------------


def seed_problem():
    """``(d0, u_true, u_init)`` of the seed inverse problem as float64 NumPy arrays (the demo's problem)."""
    x = (np.arange(SEED_N) + 0.5) / SEED_N
    d0 = np.exp(-((x - 0.35) / 0.1) ** 2)
    u_true = (0.6 + 0.3 * np.sin(2 * np.pi * x))[None, :]
    return d0, u_true, np.full((1, SEED_N), 0.3)


class SeedGradient(Case):
    name = "seed_grad"
    title = "seed inverse problem: value_and_grad (N = 128, T = 100)"

    def configs(self, kind, sizes):
        return [Config(f"N={SEED_N} T={SEED_T} float64", (SEED_N,), "float64", {"steps": SEED_T})]

    def bytes(self, cfg, iterations=None):
        return 4 * cfg.cells * cfg.itemsize + cfg.itemsize

    def _setup(self, backend):
        gp = _gpudp()
        grid = gp.Grid(SEED_N, spacing=1.0 / SEED_N, boundary="periodic")
        d0_h, u_true_h, u0_h = seed_problem()
        d0 = backend.asarray(d0_h)
        target = gp.advect_upwind(d0, backend.asarray(u_true_h), SEED_DT, grid, steps=SEED_T)
        return gp, grid, d0, target, backend.asarray(u0_h)

    def _value_and_grad(self, backend, replay):
        gp, grid, d0, target, u0 = self._setup(backend)

        def loss(u):
            return gp.l2_loss(gp.advect_upwind(d0, u, SEED_DT, grid, steps=SEED_T), target)

        vg = gp.value_and_grad(loss, replay=replay)
        return (lambda: vg(u0)), u0

    def gpudp_impl(self, cfg, backend, env):
        # replay=True: gpudp's counterpart of jax.jit (recorded twice, then replayed; the same bits)
        fn, _ = self._value_and_grad(backend, True)
        return Impl(fn, _clock(backend), _host_sync(backend))

    def _host_target(self):
        d0, u_true, u0 = seed_problem()
        d = d0
        for _ in range(SEED_T):
            d = B.advect_step(np, d, u_true, (SEED_DT * SEED_N,))
        return d0, d, u0

    def baselines(self, cfg, env):
        c = (SEED_DT * SEED_N,)

        def xp_impl():
            xp = env.xp
            d0, target, u0 = (env.to_xp(a, np.float64) for a in self._host_target())
            return Impl(lambda: B.seed_value_and_grad_xp(xp, d0, u0, target, c, SEED_T), env.xp_clock(),
                        env.xp_sync())

        def jax_impl():
            d0, target, u0 = self._host_target()
            dev, reason = B.jax_device(env.kind)
            if dev is None:
                raise Unavailable(reason)
            jax = B.jax_module()[0][0]
            d0j, tj = jax.device_put(d0, dev), jax.device_put(target, dev)
            return _jax_impl(env, B.jax_seed_value_and_grad(d0j, tj, c, SEED_T), [(u0,)])

        return {"numpy" if env.kind == "cpu" else "cupy": xp_impl, "jax": jax_impl}

    def diagnostics(self, cfg, backend, env, timer):
        """Split the gpudp time into the two kernel calls and everything else (tape, losses, allocation); time
        the call without replay (``eager_s``); and time gpudp and JAX in alternating blocks (``paired_*``, see
        :meth:`_paired`)."""
        out = self._kernel_split(backend, timer)
        eager, _ = self._value_and_grad(backend, False)
        out["eager_s"] = timer(eager).median
        try:
            out.update(self._paired(cfg, backend, env))
        except Unavailable as exc:
            out["paired_unavailable"] = str(exc)
        return out

    def _paired(self, cfg, backend, env, rounds=9, calls=40):
        """gpudp (with replay) and JAX timed in alternating blocks: per round, ``calls`` back-to-back calls of
        each after 3 untimed ones (the order alternating between rounds); the median call time of each block,
        and the median and smallest per-round ratio JAX / gpudp. Both see the same stretch of a machine whose
        speed drifts, while each block runs warm as in the separate timings (single calls in alternation
        would time each against the other's cache and thread-pool traffic)."""
        fn, _ = self._value_and_grad(backend, True)
        jax_impl = self.baselines(cfg, env)["jax"]()
        sync = _host_sync(backend)

        def gpudp_call():
            fn()
            if sync:
                sync()

        impls = (gpudp_call, jax_impl.fn)

        def block(call):
            for _ in range(3):
                call()
            ts = []
            for _ in range(calls):
                t0 = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t0)
            return float(np.median(ts))

        medians = ([], [])
        for r in range(rounds):
            for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                medians[which].append(block(impls[which]))
        ratios = sorted(j / g for g, j in zip(*medians))
        return {"paired_gpudp_s": float(np.median(medians[0])), "paired_jax_s": float(np.median(medians[1])),
                "paired_ratio": ratios[len(ratios) // 2], "paired_ratio_min": ratios[0], "paired_rounds": rounds}

    def _kernel_split(self, backend, timer):
        gp, grid, d0, target, u0 = self._setup(backend)
        from gpudp.ops import _validate as V
        shape3, ndim, bc = V.padded(grid)
        coef = (0.0,) * (3 - ndim) + (SEED_DT * SEED_N,)
        dk = backend.ascontiguous(d0).reshape(1, 1, SEED_N)
        uk = backend.ascontiguous(u0).reshape(1, 1, SEED_N)
        fwd = timer(lambda: backend.advect_forward(dk, uk, coef, bc, shape3, ndim, SEED_T, True))
        _, states = backend.advect_forward(dk, uk, coef, bc, shape3, ndim, SEED_T, True)
        adj = timer(lambda: backend.advect_adjoint(dk, states, uk, coef, bc, shape3, ndim, SEED_T, False, True))
        return {"forward_kernel_s": fwd.median, "adjoint_kernel_s": adj.median}


# -- Poisson solve and CG iteration -------------------------------------------------------------------------------


def _poisson_available():
    gp = _gpudp()
    if not hasattr(gp, "poisson_solve"):
        return "gpudp.poisson_solve is not in this version of gpudp"
    return None


def _counted(call, clock, sync=None, **kwargs):
    """An :class:`Impl` of ``call()``, which returns the CG iterations of the call; the count of the last
    call is reported."""
    last = {}

    def run():
        last["iterations"] = call()

    return Impl(run, clock, sync, iterations=lambda: last.get("iterations"), **kwargs)


@contextlib.contextmanager
def _watch_solves(backend, hook):
    """Within the block every CG solve (the backend's, and the spectral one, which runs outside it) calls
    ``hook(seconds, iterations)`` when it returns (it returns host scalars: the solve has finished)."""
    from gpudp.ops import _spectral

    def wrap(original):
        def watched(*args, **kwargs):
            t0 = time.perf_counter()
            x, its, res = original(*args, **kwargs)
            hook(time.perf_counter() - t0, int(its))
            return x, its, res
        return watched

    original_spectral = _spectral.cg_solve
    backend.cg_solve = wrap(backend.cg_solve)
    _spectral.cg_solve = wrap(original_spectral)
    try:
        yield
    finally:
        del backend.cg_solve
        _spectral.cg_solve = original_spectral


def _count_solves(backend, fn):
    """Run ``fn()`` once and return the CG iterations of every solve it made (in call order)."""
    counts = []
    with _watch_solves(backend, lambda seconds, its: counts.append(its)):
        fn()
    return counts


class PoissonSolve(Case):
    name = "poisson_solve"
    title = f"poisson_solve, 2-D dirichlet, tol {POISSON_TOL:g}"
    solve = True

    def available(self):
        return _poisson_available()

    def configs(self, kind, sizes):
        """Each size with plain CG (the default, the baselines' method) and with the spectral preconditioner
        (no baselines of its own: compare with the plain row)."""
        out = []
        for s, dt in size_table(sizes, kind)["poisson"]:
            out.append(Config(f"{shape_label(s)} {dt}", tuple(s), dt, {"preconditioner": None}))
            out.append(Config(f"{shape_label(s)} {dt} (spectral)", tuple(s), dt, {"preconditioner": "spectral"}))
        return out

    def bytes(self, cfg, iterations):
        return (6 * (iterations or 0) + 2) * cfg.cells * cfg.itemsize

    def _rhs(self, cfg, env):
        return env.rng().standard_normal(cfg.shape)

    def gpudp_impl(self, cfg, backend, env):
        gp = _gpudp()
        grid = gp.Grid(cfg.shape, boundary="dirichlet")
        b = backend.asarray(self._rhs(cfg, env), cfg.dtype)
        info = {}

        pc = cfg.params.get("preconditioner")

        def run():
            _, si = gp.poisson_solve(b, grid, tol=POISSON_TOL, throw=False, return_info=True, preconditioner=pc)
            info.update(residual=si.residual, converged=si.converged)
            return si.iterations

        return _counted(run, _clock(backend), _host_sync(backend), info=info,
                        warmup_fn=lambda: gp.poisson_solve(b, grid, tol=POISSON_TOL, maxiter=3, throw=False,
                                                           preconditioner=pc))

    def baselines(self, cfg, env):
        if cfg.params.get("preconditioner"):
            return {}
        bcs = ("dirichlet",) * len(cfg.shape)
        maxiter = 10 * cfg.cells
        out = {}

        def xp_impl():
            xp = env.xp
            b = env.to_xp(self._rhs(cfg, env), cfg.dtype)
            return _counted(lambda: B.poisson_xp(xp, b, bcs, POISSON_TOL, maxiter)[1], env.xp_clock(), env.xp_sync())

        def jax_impl():
            _require_jax(env)
            fn, _ = B.jax_poisson(bcs, POISSON_TOL, maxiter)
            return _jax_impl(env, fn, [(np.asarray(self._rhs(cfg, env), cfg.dtype),)])

        out["numpy" if env.kind == "cpu" else "cupy"] = xp_impl
        out["jax"] = jax_impl
        if env.kind == "gpu":
            def cupyx_impl():
                A = B.csr_minus_laplace_dirichlet(cfg.shape, cfg.dtype)
                b = -env.to_xp(self._rhs(cfg, env), cfg.dtype).reshape(-1)
                return _counted(lambda: B.cupyx_cg(A, b, POISSON_TOL, maxiter)[1], "cuda")
            out["cupyx-cg"] = cupyx_impl
        return out


class CGIteration(Case):
    name = "cg_iter"
    title = f"one CG iteration (2-D dirichlet; a call of {CG_FIXED_ITERATIONS} iterations / {CG_FIXED_ITERATIONS})"
    solve = True

    def available(self):
        return _poisson_available()

    def configs(self, kind, sizes):
        return [Config(f"{shape_label(s)} float64", tuple(s), "float64") for s in size_table(sizes, kind)["cg"]]

    def bytes(self, cfg, iterations):
        """Bytes of the whole call: ``iterations`` times the model of one iteration (``6·N·s``)."""
        return 6 * (iterations or 0) * cfg.cells * cfg.itemsize

    def _rhs(self, cfg, env):
        return env.rng().standard_normal(cfg.shape)

    def gpudp_impl(self, cfg, backend, env):
        gp = _gpudp()
        grid = gp.Grid(cfg.shape, boundary="dirichlet")
        b = backend.asarray(self._rhs(cfg, env), cfg.dtype)

        def run(maxiter=CG_FIXED_ITERATIONS):
            # tol far below reach: exactly maxiter iterations of plain CG (the default preconditioner is "auto")
            return gp.poisson_solve(b, grid, tol=1e-30, maxiter=maxiter, throw=False, return_info=True,
                                    preconditioner=None)[1].iterations

        return _counted(run, _clock(backend), _host_sync(backend), warmup_fn=lambda: run(3))

    def baselines(self, cfg, env):
        bcs = ("dirichlet",) * len(cfg.shape)
        n = CG_FIXED_ITERATIONS
        out = {}

        def xp_impl():
            xp = env.xp
            b = env.to_xp(self._rhs(cfg, env), cfg.dtype)
            return _counted(lambda: B.cg(xp, lambda p: -B.laplace(xp, p, bcs), b, 0.0, n)[1], env.xp_clock(),
                            env.xp_sync())

        def jax_impl():
            _require_jax(env)
            fn, _ = B.jax_poisson(bcs, 0.0, n)
            impl = _jax_impl(env, fn, [(np.asarray(self._rhs(cfg, env), cfg.dtype),)])
            impl.iterations = n  # tol 0: JAX's cg runs maxiter iterations
            return impl

        out["numpy" if env.kind == "cpu" else "cupy"] = xp_impl
        out["jax"] = jax_impl
        if env.kind == "gpu":
            def cupyx_impl():
                A = B.csr_minus_laplace_dirichlet(cfg.shape, cfg.dtype)
                b = env.to_xp(self._rhs(cfg, env), cfg.dtype).reshape(-1)
                return _counted(lambda: B.cupyx_cg(A, b, 0.0, n)[1], "cuda")
            out["cupyx-cg"] = cupyx_impl
        return out

    def diagnostics(self, cfg, backend, env, timer):
        """One Laplacian pass (read ``p``, write ``laplace(p)``: the fastest a stencil pass runs here) and the
        time per iteration without the set-up, from a 50- and a 10-iteration call."""
        gp = _gpudp()
        grid = gp.Grid(cfg.shape, boundary="dirichlet")
        b = backend.asarray(self._rhs(cfg, env), cfg.dtype)
        lap = timer(lambda: gp.laplace(b, grid))
        t10 = timer(lambda: gp.poisson_solve(b, grid, tol=1e-30, maxiter=10, throw=False, preconditioner=None))
        t50 = timer(lambda: gp.poisson_solve(b, grid, tol=1e-30, maxiter=CG_FIXED_ITERATIONS, throw=False,
                                             preconditioner=None))
        return {"laplace_pass_s": lap.median,
                "laplace_pass_gbps": 2 * cfg.cells * cfg.itemsize / lap.median / 1e9,
                "iteration_s_without_setup": (t50.median - t10.median) / (CG_FIXED_ITERATIONS - 10)}


# -- projection ------------------------------------------------------------------------------------------------


class ProjectGradient(Case):
    name = "project_grad"
    title = f"project forward + backward (value_and_grad), tol {PROJECT_TOL:g}"
    solve = True

    def available(self):
        gp = _gpudp()
        if not hasattr(gp, "project"):
            return "gpudp.project is not in this version of gpudp"
        return None

    def configs(self, kind, sizes):
        from gpudp.demo import pressure
        out = [Config(f"pressure demo 80x64 neumann float64 ({pressure.PRECONDITIONER})", (80, 64), "float64",
                      {"demo": True, "preconditioner": pressure.PRECONDITIONER})]
        if pressure.PRECONDITIONER is not None:  # for comparison: the same iteration with plain CG
            out.append(Config("pressure demo 80x64 neumann float64 (plain CG)", (80, 64), "float64",
                              {"demo": True, "preconditioner": None}))
        out += [Config(f"{shape_label(s)} periodic float64", tuple(s), "float64", {"demo": False})
                for s in size_table(sizes, kind)["project"]]
        return out

    @staticmethod
    def faces(cfg):
        bc = "neumann" if cfg.params["demo"] else "periodic"
        return sum(cfg.cells // n * (n + 1 if bc == "neumann" else n) for n in cfg.shape)

    def bytes(self, cfg, iterations):
        return (4 * self.faces(cfg) + 6 * (iterations or 0) * cfg.cells) * cfg.itemsize

    def _problem(self, cfg, env):
        """Host arrays ``(bcs, control, left, right, target)``: the pressure demo's, or on a periodic grid a
        random control everywhere and a random target everywhere."""
        rng = env.rng()
        if cfg.params["demo"]:
            from gpudp.demo import pressure
            bcs = ("neumann", "neumann")
            prob = pressure.PressureProblem()
            left = [m.astype(np.float64) for m in prob.left_host]
            right = [m.astype(np.float64) for m in prob.right_host]
            target = [np.asarray(t, np.float64) for t in prob.target_host]
            r = np.random.default_rng(pressure.SEED)
            control = [np.where(m > 0, r.uniform(-pressure.INIT_RANGE, pressure.INIT_RANGE, m.shape), 0.0)
                       for m in left]
            return bcs, control, left, right, target
        bcs = ("periodic", "periodic")
        ones = [np.ones(cfg.shape) for _ in cfg.shape]
        return bcs, [rng.standard_normal(cfg.shape) for _ in cfg.shape], ones, ones, \
            [rng.standard_normal(cfg.shape) for _ in cfg.shape]

    def gpudp_impl(self, cfg, backend, env):
        gp = _gpudp()
        if cfg.params["demo"]:
            from gpudp.demo import pressure
            prob = pressure.PressureProblem(preconditioner=cfg.params["preconditioner"])
            control = prob.initial_control()
            fn = lambda: prob.loss_and_grad(control)  # noqa: E731  (the demo's own iteration)
        else:
            grid = gp.Grid(cfg.shape, boundary="periodic")
            _, control_h, _, _, target_h = self._problem(cfg, env)
            control = [backend.asarray(c) for c in control_h]
            target = [backend.asarray(t) for t in target_h]

            def loss(*u):
                out = gp.project(tuple(u), grid, tol=PROJECT_TOL)
                total = gp.l2_loss(out[0], target[0])
                for o, t in zip(out[1:], target[1:]):
                    total = total + gp.l2_loss(o, t)
                return 0.5 * total

            vg = gp.value_and_grad(loss, argnums=tuple(range(len(control))))
            fn = lambda: vg(*control)  # noqa: E731
        counts = _count_solves(backend, fn)
        return Impl(fn, _clock(backend), _host_sync(backend), iterations=sum(counts),
                    info={"solve_iterations": counts})

    def baselines(self, cfg, env):
        maxiter = 10 * cfg.cells

        def xp_impl():
            xp = env.xp
            bcs, control, left, right, target = (self._problem(cfg, env))
            args = [tuple(env.to_xp(a, np.float64) for a in group) for group in (control, left, right, target)]
            return _counted(lambda: B.project_value_and_grad_xp(xp, *args, bcs, PROJECT_TOL, maxiter)[2],
                            env.xp_clock(), env.xp_sync())

        def jax_impl():
            dev, reason = B.jax_device(env.kind)
            if dev is None:
                raise Unavailable(reason)
            jax = B.jax_module()[0][0]
            bcs, control, left, right, target = self._problem(cfg, env)
            put = lambda group: tuple(jax.device_put(np.asarray(a, np.float64), dev) for a in group)  # noqa: E731
            fn = B.jax_project_value_and_grad(put(left), put(right), put(target), bcs, PROJECT_TOL, maxiter)
            return _jax_impl(env, fn, [(tuple(np.asarray(c, np.float64) for c in control),)])

        return {"numpy" if env.kind == "cpu" else "cupy": xp_impl, "jax": jax_impl}

    def diagnostics(self, cfg, backend, env, timer):
        """For the pressure demo: the time inside the backend's CG solves and outside them (the other operators,
        the tape, the losses), averaged over a few calls."""
        if not cfg.params["demo"]:
            return {}
        impl = self.gpudp_impl(cfg, backend, env)
        inside = [0.0]

        def hook(seconds, its):
            inside[0] += seconds

        calls = 3 if env.smoke else 20
        with _watch_solves(backend, hook):
            t0 = time.perf_counter()
            for _ in range(calls):
                impl.fn()
            backend.synchronize()
            total = (time.perf_counter() - t0) / calls
        return {"solves_s": inside[0] / calls, "outside_solves_s": total - inside[0] / calls, "total_s": total}


_CASES = [AdvectForward(), AdvectAdjoint(), SeedGradient(), PoissonSolve(), CGIteration(), ProjectGradient()]


def __getattr__(name):
    """``CASES`` (every case, in run order) and ``CASE_NAMES``: the cases above, then those of
    :mod:`benchmarks.cases_smoke`, :mod:`benchmarks.cases_solvers` and :mod:`benchmarks.cases_rollout`, which
    build on this module's classes (so they are imported on first use, and any of the modules may be imported
    first)."""
    if name in ("CASES", "CASE_NAMES"):
        from .cases_rollout import ROLLOUT_CASES
        from .cases_smoke import SMOKE_CASES
        from .cases_solvers import SOLVER_CASES
        cases = _CASES + SMOKE_CASES + SOLVER_CASES + ROLLOUT_CASES
        globals().update(CASES=cases, CASE_NAMES=[c.name for c in cases])
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def select(names):
    cases = __getattr__("CASES")
    if not names:
        return list(cases)
    out = []
    for n in names:
        match = [c for c in cases if c.name == n or c.name.startswith(n)]
        if not match:
            raise ValueError(f"unknown case {n!r}; choose from {', '.join(c.name for c in cases)}")
        out.extend(m for m in match if m not in out)
    return out


def per_iteration(total_s, iterations):
    return total_s / iterations if iterations else math.nan
