"""Benchmark case of the Poisson solvers (``solvers``): ``gpudp.poisson_solve`` with each preconditioner
against pyamg, Jacobi-PCG, the dense spectral inverse, JAX's and CuPy's conjugate gradients, all measured in the
same run on the same problems.

Problems. Every grid is dirichlet on all sides with spacing 1, float64 (the GPU also runs the fast solvers in
float32 at the largest sizes), tolerance ``1e-6`` on the relative residual ``‖b − laplace(x)‖ / ‖b‖``. Each size
comes without obstacles (``open``) and with random solid discs (2-D) or spheres (3-D) (``obstacles``): radius
``max(2, round(n/24))`` cells, centres drawn with a fixed seed, added one at a time until at least 20 % of the
cells are solid (:func:`obstacle_mask`). Fluid pockets that the solids seal off from the boundary are then made
solid too, so that every fluid cell is connected to a dirichlet face: the system on the fluid cells is
symmetric positive definite for every solver (gpudp would remove each sealed pocket's mean; pyamg, JAX and CuPy
would see a singular matrix), and all of them solve the same nonsingular problem. The right-hand side is
standard normal on the fluid cells and 0 on the solid ones (fixed seed).

gpudp rows (one configuration per preconditioner): ``multigrid`` (and ``auto`` at 1024²: it chooses
``spectral`` without obstacles and ``multigrid`` with them; both are reported unavailable, with the reason,
when this version of gpudp has no multigrid), ``spectral``, ``jacobi`` and plain CG (``none``, small grids
only). The hierarchy (multigrid), the transformed eigenvalues (spectral) and the obstacle facts (connected
fluid regions, face masks) are built once per grid and kept: the rows time the warm solve (the grid's second
and later solves), and the diagnostics time the first call on a new ``Grid`` (set-up plus solve). ``jacobi``
and plain CG on grids of 2^20 cells or more are timed once (thousands of iterations) with the iteration
limit :data:`SLOW_MAXITER`; a solve that stops there says so (``converged: false`` in the record).

Sizes: CPU ``default`` 256², 1024², 32³, 64³; ``--sizes full`` adds 2048² and 128³; the GPU runs all of them,
largest first, and float32 at 2048² and 128³ (``multigrid`` and ``spectral``). :data:`BUDGET_ENV` bounds the
case's time in one run (the GPU device check sets it).

Baselines (the float64 problems; attached to the ``jacobi`` configuration of each size, compared with every
gpudp row of the size):

``pyamg-sa``           ``pyamg.smoothed_aggregation_solver(A)`` and ``ml.solve(b, tol=1e-6, accel="cg")``
                       timed together (set-up and solve also separately, in the record's info); ``A`` is the
                       CSR matrix of ``−laplace`` on the fluid cells (:func:`minus_laplace_csr`, from the grid's
                       open faces and spacing); CPU runs only
``pyamg-sa-solve``     the solve alone, with the hierarchy just built
``pyamg-rs``           ``pyamg.ruge_stuben_solver(A)``, set-up and solve (grids up to 2^20 cells)
``jax-cg``             ``jax.scipy.sparse.linalg.cg`` with a matrix-free stencil of the same operator (face
                       weights: open faces ``/ Δx²``), jitted (compiled by a 2-iteration call first; the
                       iteration limit is an argument); grids where gpudp runs plain CG
``jax-jacobi-cg``      the same with the inverse diagonal as preconditioner ``M``; all grids (CPU: up to 2^20
                       cells), at most :data:`SLOW_MAXITER` iterations
``cupyx-cg``           GPU: ``cupyx.scipy.sparse.linalg.cg`` on the CSR matrix (on the device), at most
                       :data:`SLOW_MAXITER` iterations
``dense-spectral-pcg`` CG preconditioned by ``gpudp.ops._spectral.DenseSpectralInverse`` (the dense per-axis
                       eigenbases of the former spectral preconditioner) through ``_spectral.cg_solve(...,
                       inverse=...)``: grids without obstacles up to 2^20 cells
``scipy-fft-pair``     a bare ``scipy.fft.dstn(type=1, norm="ortho")`` + ``idstn`` pair over the grid's axes (the
                       transforms of the spectral solver on dirichlet axes, the same ``workers``), no
                       obstacles; on the GPU ``cupyx-fft-pair``: ``cupyx.scipy.fft.rfftn`` + ``irfftn`` (cuFFT has
                       no DST-I)

Every baseline's answer is checked after its timed call: its relative difference to gpudp's answer on the same
problem (the first converged gpudp row of the size) and its true relative residual with the CSR matrix are in
the record's ``info`` (``notes``, also printed), so that a wrong baseline shows.

Byte model (``s`` item size, ``N`` cells of the grid, solid ones included, ``its`` CG iterations): plain CG
``(6·its + 2)·N·s`` (the CG-iteration model of ``poisson_solve``); preconditioned CG ``(8·its + 2)·N·s`` (also
read ``r`` and write ``z = M⁻¹ r`` once per iteration). The preconditioner's own passes (the V-cycle's levels,
the transforms, pyamg's hierarchy) are not in the model: compare those rows by time. Baseline rows use the
model of the configuration they are attached to (preconditioned); JAX reports no iteration count (no GB/s).
"""
from __future__ import annotations

import inspect
import math
import os
import time

import numpy as np

from .cases import Case, Config, Impl, Unavailable, _clock, _host_sync, _require_jax, shape_label

CASE_NAME = "solvers"
TOL = 1e-6
SOLID_FRACTION = 0.2
OBSTACLE_SEED = 10
RHS_SEED = 11
#: Iteration limit of the slow solvers (Jacobi-PCG, plain CG, JAX's and CuPy's CG); the fast ones stop at
#: :data:`FAST_MAXITER`.
SLOW_MAXITER = 6000
FAST_MAXITER = 500
#: Plain CG (gpudp and ``jax-cg``) runs on grids up to this many cells.
PLAIN_MAX_CELLS = 1 << 16
#: Jacobi-PCG and plain CG are timed once on grids of at least this many cells.
SINGLE_RUN_CELLS = 1 << 20
#: The dense spectral inverse, Ruge–Stüben and (on the CPU) JAX run on grids up to this many cells.
DENSE_MAX_CELLS = 1 << 20
#: Preconditioners, in run order (``None``: plain CG); the baselines hang on ``jacobi``.
ORDER = ("multigrid", "auto", "spectral", "jacobi", None)
#: A baseline whose answer differs from gpudp's by more than this (relative, 2-norm) is flagged in its notes.
AGREE = 1e-3

_2D = [(256, 256), (1024, 1024), (2048, 2048)]
_3D = [(32, 32, 32), (64, 64, 64), (128, 128, 128)]
#: The GPU sizes, largest first: a time budget (:data:`BUDGET_ENV`) drops the small ones.
_GPU = [_2D[2], _3D[2], _2D[1], _3D[1], _2D[0], _3D[0]]
#: Grid shapes per size set and device kind. 32³ is there for the multigrid iteration growth 32³ → 128³.
SIZES = {
    "default": {"cpu": _2D[:2] + _3D[:2], "gpu": _GPU},
    "full": {"cpu": _2D + _3D, "gpu": _GPU},
    "small": {"cpu": _2D[:1] + _3D[:1], "gpu": _2D[:2] + _3D[:2]},
    "smoke": {kind: [(16, 16), (8, 8, 8)] for kind in ("cpu", "gpu")},
}
#: Environment variable: seconds the case may take in one run, all device kinds together (unset: no limit),
#: counted from its first configuration. Once they are spent, the remaining rows are recorded as "not available:
#: skipped: the case's time budget is spent" (the GPU device check sets it; a GPU run does the GPU first).
BUDGET_ENV = "GPUDP_BENCH_SOLVERS_SECONDS"
#: float32 configurations (fast preconditioners only, no baselines) at these shapes on the GPU.
GPU_FLOAT32 = [_2D[-1], _3D[-1]]


def _gpudp():
    import gpudp
    return gpudp


def pc_name(pc):
    return "none" if pc is None else pc


def multigrid_missing():
    """``None`` when this gpudp has ``preconditioner="multigrid"`` (and ``"auto"``), else the reason."""
    from gpudp.ops import poisson
    have = getattr(poisson, "PRECONDITIONERS", ())
    if "multigrid" in have:
        return None
    return (f"preconditioner 'multigrid' is unavailable in this version of gpudp "
            f"(gpudp.ops.poisson.PRECONDITIONERS = {tuple(have)!r})")


def solver_shapes(sizes, kind):
    """The grid shapes of a size set (``"default"``, ``"full"``, ``"small"``, ``"smoke"``) or of explicit shapes
    (every shape given, 2-D and 3-D)."""
    if isinstance(sizes, str):
        return [tuple(s) for s in SIZES[sizes][kind]]
    return [tuple(s) for s in sizes[kind]["advect"]]


# -- the problems -------------------------------------------------------------------------------------------------


def obstacle_radius(shape):
    return max(2, round(min(shape) / 24))


def obstacle_mask(shape, fraction=SOLID_FRACTION, seed=OBSTACLE_SEED):
    """Random solid discs (2-D) or spheres (3-D) of radius :func:`obstacle_radius`, added until at least
    ``fraction`` of the cells are solid; then every fluid pocket that touches no boundary cell is made solid.
    Returns ``(solid, pockets)``: the bool mask and the number of pocket cells filled."""
    from scipy import ndimage

    shape = tuple(int(n) for n in shape)
    D = len(shape)
    r = obstacle_radius(shape)
    off = np.arange(-r, r + 1)
    ball = sum(np.meshgrid(*([off ** 2] * D), indexing="ij", sparse=True)) <= r * r
    rng = np.random.default_rng(seed)
    solid = np.zeros(shape, bool)
    count, goal = 0, fraction * solid.size
    while count < goal:
        c = rng.integers(0, shape)
        lo = [max(0, int(ci) - r) for ci in c]
        hi = [min(n, int(ci) + r + 1) for ci, n in zip(c, shape)]
        region = tuple(slice(a, b) for a, b in zip(lo, hi))
        part = tuple(slice(a - int(ci) + r, b - int(ci) + r) for a, b, ci in zip(lo, hi, c))
        before = int(solid[region].sum())
        solid[region] |= ball[part]
        count += int(solid[region].sum()) - before
    labels, _ = ndimage.label(~solid)          # face-connected fluid regions (gpudp's regions)
    border = np.zeros(shape, bool)
    for a in range(D):
        index = [slice(None)] * D
        for end in (0, -1):
            index[a] = end
            border[tuple(index)] = True
    open_labels = np.unique(labels[border & ~solid])
    pockets = ~solid & ~np.isin(labels, open_labels)
    return solid | pockets, int(pockets.sum())


def rhs(shape, fluid):
    """The right-hand side: standard normal on the fluid cells, 0 on the solid ones (float64)."""
    b = np.random.default_rng(RHS_SEED).standard_normal(shape)
    return np.where(fluid, b, 0.0)


def minus_laplace_csr(grid):
    """``(A, fluid)``: ``A = −laplace`` of ``grid`` restricted to its fluid cells as a ``scipy.sparse`` CSR
    matrix (float64), assembled from the grid's open faces (``gpudp.ops.obstacles.obstacle_facts``) and
    spacing: each open face of axis ``k`` between cells ``i`` and ``j`` adds ``1/Δx_k²`` to ``A_ii`` and
    ``A_jj`` and subtracts it from ``A_ij`` and ``A_ji``; an open boundary face (dirichlet, fluid cell) adds it
    to its cell's diagonal. ``fluid`` is the flat bool mask of the fluid cells (the rows and columns kept). A
    grid without obstacles is read with an all-fluid mask."""
    import scipy.sparse as sp

    gp = _gpudp()
    from gpudp.ops.obstacles import obstacle_facts

    if grid.solid is None:
        grid = gp.Grid(grid.shape, spacing=grid.spacing, boundary=grid.boundary,
                       solid=np.zeros(grid.shape, bool))
    facts = obstacle_facts(grid)
    shape, N = grid.shape, grid.size
    index = np.arange(N, dtype=np.int64).reshape(shape)
    diag = np.zeros(N)
    rows, cols, vals = [], [], []
    for k, n in enumerate(shape):
        c = 1.0 / grid.spacing[k] ** 2
        op = facts.open_faces[k]
        take = lambda a, sl: a[tuple(sl if j == k else slice(None) for j in range(len(shape)))]  # noqa: E731
        if grid.boundary[k] == "periodic":     # face j joins cells j − 1 (wrapping) and j
            lo, hi, m = np.roll(index, 1, axis=k), index, op
            m = m & (lo != hi)
        else:                                  # faces 1 … n − 1 join cells j − 1 and j; faces 0 and n the walls
            lo, hi, m = take(index, slice(0, n - 1)), take(index, slice(1, n)), take(op, slice(1, n))
            for face, cell in ((0, 0), (n, n - 1)):
                wall = take(op, slice(face, face + 1))
                np.add.at(diag, take(index, slice(cell, cell + 1))[wall], c)
        lo, hi = lo[m], hi[m]
        np.add.at(diag, lo, c)
        np.add.at(diag, hi, c)
        rows += [lo, hi]
        cols += [hi, lo]
        vals.append(np.full(2 * lo.size, -c))
    A = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(N, N)).tocsr()
    A = (A + sp.diags(diag)).tocsr()
    fluid = facts.fluid.reshape(-1)
    return A[fluid][:, fluid].tocsr(), fluid


def face_weights(grid):
    """Per axis, the face array (``grid.face_shape(k)``) of ``1/Δx_k²`` on open faces and 0 on closed ones, and
    the inverse diagonal of ``−laplace`` per cell (0 on solid cells): the matrix-free operator of the JAX
    baselines."""
    gp = _gpudp()
    from gpudp.ops.obstacles import obstacle_facts

    if grid.solid is None:
        grid = gp.Grid(grid.shape, spacing=grid.spacing, boundary=grid.boundary,
                       solid=np.zeros(grid.shape, bool))
    facts = obstacle_facts(grid)
    weights, diag = [], np.zeros(grid.shape)
    for k, n in enumerate(grid.shape):
        w = facts.open_faces[k].astype(np.float64) / grid.spacing[k] ** 2
        weights.append(w)
        sl = lambda a, b: tuple(slice(a, b) if j == k else slice(None) for j in range(grid.ndim))  # noqa: E731
        if grid.boundary[k] == "periodic":
            diag += w + np.roll(w, -1, axis=k)
        else:
            diag += w[sl(0, n)] + w[sl(1, n + 1)]
    dinv = np.where(facts.fluid & (diag > 0), 1.0 / np.where(diag > 0, diag, 1.0), 0.0)
    return weights, dinv, tuple(grid.boundary)


def jax_minus_laplace(jnp, weights, boundary):
    """``p ↦ −laplace(p)`` (gpudp's operator with the face weights of :func:`face_weights`) for JAX arrays of
    the grid's shape: per axis the face differences (0 outside a dirichlet wall), times the weights, and their
    divergence."""
    def A(p):
        out = jnp.zeros_like(p)
        for k, (w, bc) in enumerate(zip(weights, boundary)):
            if bc == "periodic":
                flux = w * (p - jnp.roll(p, 1, axis=k))            # face j: p_j − p_{j−1}
                out = out + flux - jnp.roll(flux, -1, axis=k)
            else:
                pad = [(0, 0)] * p.ndim
                pad[k] = (1, 1)
                ext = jnp.pad(p, pad)
                n = p.shape[k]
                take = lambda a, i, j: jnp.take(a, jnp.arange(i, j), axis=k)  # noqa: E731
                flux = w * (take(ext, 1, n + 2) - take(ext, 0, n + 1))       # n + 1 faces
                out = out + take(flux, 0, n) - take(flux, 1, n + 1)
        return out
    return A


class _Problem:
    """What every implementation of one size and kind shares: the grid, the right-hand side, the CSR matrix
    and the answers (gpudp's, for the baselines to compare with)."""

    def __init__(self, shape, obstacles):
        gp = _gpudp()
        self.shape, self.obstacles = tuple(shape), obstacles
        if obstacles:
            self.solid, self.pockets = obstacle_mask(shape)
        else:
            self.solid, self.pockets = None, 0
        self.fluid = np.ones(shape, bool) if self.solid is None else ~self.solid
        self.b = rhs(shape, self.fluid)
        self.grid = gp.Grid(shape, boundary="dirichlet", solid=self.solid)
        self.answer = None          # (label, float64 host x) of the first converged gpudp solve
        self._csr = None
        self.store = {}             # per-baseline objects kept between rows (pyamg's hierarchy)

    def fresh_grid(self):
        return _gpudp().Grid(self.shape, boundary="dirichlet", solid=self.solid)

    @property
    def csr(self):
        if self._csr is None:
            self._csr = minus_laplace_csr(self.grid)
        return self._csr

    def check(self, x, label):
        """Notes on a baseline's answer ``x`` (full grid, or the fluid cells only): the relative difference to
        gpudp's answer and the true relative residual with the CSR matrix."""
        A, fluid = self.csr
        x = np.asarray(x, np.float64).reshape(-1)
        xf = x[fluid] if x.size == fluid.size else x
        bf = -self.b.reshape(-1)[fluid]
        res = float(np.linalg.norm(bf - A @ xf) / np.linalg.norm(bf))
        out = {"true_residual": res}
        if self.answer is None:
            out["notes"] = f"true residual {res:.2e}; no converged gpudp answer to compare with"
            return out
        ref_label, ref = self.answer
        ref = ref.reshape(-1)[fluid]
        diff = float(np.linalg.norm(xf - ref) / np.linalg.norm(ref))
        out.update(rel_diff_vs_gpudp=diff, compared_with=ref_label, agrees=diff <= AGREE)
        flag = "" if diff <= AGREE else f"  MISMATCH (> {AGREE:g})"
        out["notes"] = f"rel. diff. vs {ref_label} {diff:.2e}; true residual {res:.2e}{flag}"
        return out


def _record(fn, clock, sync=None, finish=None, info=None, warmup_fn=None):
    """An :class:`Impl` whose ``finish()`` runs after the timing (the suite reads the iterations then, before it
    copies ``info``): checks the answer of the last call and returns its iterations."""
    info = {} if info is None else info
    return Impl(fn, clock, sync, iterations=(lambda: finish()) if finish else None, info=info,
                warmup_fn=warmup_fn)


class PoissonSolvers(Case):
    name = CASE_NAME
    title = f"poisson_solve preconditioners vs pyamg, JAX, CuPy (dirichlet, tol {TOL:g})"
    solve = True

    def __init__(self):
        self._problems = {}
        self._started = None

    def _check_budget(self):
        """Raise :class:`Unavailable` once the case's time budget (:data:`BUDGET_ENV`) is spent."""
        text = os.environ.get(BUDGET_ENV, "").strip()
        if not text or self._started is None:
            return
        try:
            budget = float(text)
        except ValueError:
            raise ValueError(f"{BUDGET_ENV}={text!r}: expected a number of seconds") from None
        spent = time.perf_counter() - self._started
        if spent > budget:
            raise Unavailable(f"skipped: the case's time budget is spent ({spent:.0f} s > {BUDGET_ENV}={budget:g})")

    def available(self):
        gp = _gpudp()
        if not hasattr(gp, "poisson_solve"):
            return "gpudp.poisson_solve is not in this version of gpudp"
        try:
            gp.Grid((2, 2), solid=np.zeros((2, 2), bool))
        except TypeError:
            return "gpudp.Grid has no solid= (obstacles) in this version of gpudp"
        return None

    # -- configurations -----------------------------------------------------------------------------------------

    def configs(self, kind, sizes):
        if self._started is None:   # the suite asks for the configurations when the case starts
            self._started = time.perf_counter()
        out = []
        for shape in solver_shapes(sizes, kind):
            cells = int(np.prod(shape))
            for obstacles in (False, True):
                dtypes = ["float64"]
                if kind == "gpu" and (shape in GPU_FLOAT32 or sizes == "smoke"):
                    dtypes.append("float32")
                for dt in dtypes:
                    group = f"{shape_label(shape)} {'obstacles' if obstacles else 'open'} {dt}"
                    pcs = [pc for pc in ORDER if (pc is not None or cells <= PLAIN_MAX_CELLS)
                           and (pc != "auto" or cells == 1 << 20 or sizes == "smoke")]
                    if dt == "float32":
                        pcs = [pc for pc in pcs if pc in ("multigrid", "spectral")]
                    for pc in pcs:
                        out.append(Config(f"{group} {pc_name(pc)}", tuple(shape), dt, {
                            "group": group, "obstacles": obstacles, "preconditioner": pc,
                            "single_run": pc in ("jacobi", None) and cells >= SINGLE_RUN_CELLS,
                            "baselines": dt == "float64" and pc == "jacobi"}))
        return out

    def bytes(self, cfg, iterations):
        per = 6 if cfg.params.get("preconditioner") is None else 8
        return (per * (iterations or 0) + 2) * cfg.cells * cfg.itemsize

    def _problem(self, cfg):
        key = (cfg.shape, cfg.params["obstacles"])
        if key not in self._problems:
            self._problems.clear()     # one size at a time
            self._problems[key] = _Problem(cfg.shape, cfg.params["obstacles"])
        return self._problems[key]

    def release(self):
        """Nothing: the problem of a size is kept for all its configurations and dropped at the next size."""

    # -- gpudp ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _maxiter(pc):
        return SLOW_MAXITER if pc in ("jacobi", None) else FAST_MAXITER

    def gpudp_impl(self, cfg, backend, env):
        gp = _gpudp()
        pc = cfg.params["preconditioner"]
        self._check_budget()
        if pc in ("multigrid", "auto"):
            missing = multigrid_missing()
            if missing:
                raise Unavailable(missing)
        prob = self._problem(cfg)
        b = backend.asarray(prob.b, cfg.dtype)
        maxiter = self._maxiter(pc)
        info = {"group": cfg.params["group"], "preconditioner": pc_name(pc), "maxiter": maxiter,
                "solid_fraction": float(1 - prob.fluid.mean()), "pocket_cells_filled": prob.pockets}
        last = {}

        def run():
            last["x"], last["si"] = gp.poisson_solve(b, prob.grid, tol=TOL, maxiter=maxiter, preconditioner=pc,
                                                     return_info=True, throw=False)

        def finish():
            si = last["si"]
            info.update(residual=si.residual, converged=si.converged,
                        preconditioner_used=pc_name(getattr(si, "preconditioner", pc)))
            if not si.converged:
                info["notes"] = (f"did not converge: residual {si.residual:.2e} after {si.iterations} iterations "
                                 f"(maxiter {maxiter})")
            if si.converged and prob.answer is None and cfg.dtype == "float64":
                prob.answer = (f"gpudp-{backend.name} ({pc_name(pc)})",
                               np.asarray(backend.to_numpy(last["x"]), np.float64))
            last.pop("x", None)
            return si.iterations

        return _record(run, _clock(backend), _host_sync(backend), finish, info,
                       warmup_fn=lambda: gp.poisson_solve(b, prob.grid, tol=TOL, maxiter=2, preconditioner=pc,
                                                          throw=False))

    def diagnostics(self, cfg, backend, env, timer):
        """The first call on a new grid (the same problem): the obstacle facts, the preconditioner's set-up
        (hierarchy, transformed eigenvalues) and the solve; the best of two new grids up to 2^20 cells. The
        set-up alone is about this minus the row's (warm) time."""
        if cfg.params["single_run"]:
            return {}
        gp = _gpudp()
        pc = cfg.params["preconditioner"]
        prob = self._problem(cfg)
        b = backend.asarray(prob.b, cfg.dtype)
        best = math.inf
        for _ in range(2 if cfg.cells <= 1 << 20 and not env.smoke else 1):
            grid = prob.fresh_grid()
            _drop_spectral_cache()
            backend.synchronize()
            t0 = time.perf_counter()
            gp.poisson_solve(b, grid, tol=TOL, maxiter=self._maxiter(pc), preconditioner=pc, throw=False)
            backend.synchronize()
            best = min(best, time.perf_counter() - t0)
        return {"first_call_s": best}

    # -- baselines ------------------------------------------------------------------------------------------------

    def baselines(self, cfg, env):
        if not cfg.params["baselines"]:
            return {}
        out = self._baselines(cfg, env)
        return {name: self._budgeted(factory) for name, factory in out.items()}

    def _budgeted(self, factory):
        def make():
            self._check_budget()
            return factory()
        return make

    def _baselines(self, cfg, env):
        cells = cfg.cells
        obstacles = cfg.params["obstacles"]
        out = {}
        if env.kind == "cpu":
            out["pyamg-sa"] = lambda: self._pyamg(cfg, env, "sa", with_setup=True)
            out["pyamg-sa-solve"] = lambda: self._pyamg(cfg, env, "sa", with_setup=False)
            if cells <= DENSE_MAX_CELLS:
                out["pyamg-rs"] = lambda: self._pyamg(cfg, env, "rs", with_setup=True)
        if cells <= PLAIN_MAX_CELLS:
            out["jax-cg"] = lambda: self._jax(cfg, env, jacobi=False)
        if env.kind == "gpu" or cells <= DENSE_MAX_CELLS:
            out["jax-jacobi-cg"] = lambda: self._jax(cfg, env, jacobi=True)
        if env.kind == "gpu":
            out["cupyx-cg"] = lambda: self._cupyx(cfg, env)
        if not obstacles and cells <= DENSE_MAX_CELLS:
            out["dense-spectral-pcg"] = lambda: self._dense_spectral(cfg, env)
        if not obstacles:
            out["scipy-fft-pair" if env.kind == "cpu" else "cupyx-fft-pair"] = lambda: self._fft_pair(cfg, env)
        return out

    def _base_info(self, cfg, **kw):
        return dict({"group": cfg.params["group"]}, **kw)

    def _pyamg(self, cfg, env, kind, with_setup):
        try:
            import pyamg
        except ImportError as exc:
            raise Unavailable(f"pyamg is not importable ({exc})")
        prob = self._problem(cfg)
        A, fluid = prob.csr
        rhs_f = -prob.b.reshape(-1)[fluid]
        make = pyamg.smoothed_aggregation_solver if kind == "sa" else pyamg.ruge_stuben_solver
        info = self._base_info(cfg, method=f"pyamg.{make.__name__}, solve(tol={TOL:g}, accel='cg')",
                               unknowns=int(A.shape[0]), pyamg=getattr(pyamg, "__version__", "?"))
        last = {}
        if not with_setup:
            ml = prob.store.get(kind)
            if ml is None:
                t0 = time.perf_counter()
                ml = make(A)
                info["setup_s"] = time.perf_counter() - t0
                prob.store[kind] = ml

        def run():
            t0 = time.perf_counter()
            solver = make(A) if with_setup else ml
            t1 = time.perf_counter()
            res = []
            last["x"] = solver.solve(rhs_f, tol=TOL, maxiter=FAST_MAXITER, accel="cg", residuals=res)
            t2 = time.perf_counter()
            last["its"] = len(res) - 1
            if with_setup:
                info.update(setup_s=t1 - t0, solve_s=t2 - t1)
                prob.store[kind] = solver
            else:
                info["solve_s"] = t2 - t1

        def finish():
            info.update(prob.check(last.pop("x"), "pyamg"))
            ml_ = prob.store.get(kind)
            if ml_ is not None and "levels" not in info:
                info.update(levels=len(ml_.levels), operator_complexity=float(ml_.operator_complexity()))
            info["converged"] = info["true_residual"] <= 2 * TOL
            return last["its"]

        return _record(run, "host", None, finish, info)

    def _jax(self, cfg, env, jacobi):
        dev = _require_jax(env)
        from . import baselines as B
        jax, jnp = B.jax_module()[0]
        from jax.scipy.sparse.linalg import cg as jcg

        prob = self._problem(cfg)
        weights, dinv, boundary = face_weights(prob.grid)
        put = lambda a: jax.device_put(np.asarray(a, cfg.dtype), dev)  # noqa: E731

        @jax.jit
        def solve(b, weights, d, maxiter):   # arrays as arguments: no large constants in the program
            A = jax_minus_laplace(jnp, weights, boundary)
            M = (lambda r: d * r) if jacobi else None
            return jcg(A, -b, tol=TOL, atol=0.0, maxiter=maxiter, M=M)[0]

        args = (put(prob.b), [put(w) for w in weights], put(dinv))
        maxiter = SLOW_MAXITER
        last = {}
        info = self._base_info(cfg, method="jax.scipy.sparse.linalg.cg, matrix-free stencil, jitted"
                                           + (", M = inverse diagonal" if jacobi else ""), maxiter=maxiter)

        def run():
            last["x"] = jax.block_until_ready(solve(*args, maxiter))

        def finish():
            info.update(prob.check(np.asarray(last.pop("x")), "jax"))
            info["converged"] = info["true_residual"] <= 2 * TOL
            if not info["converged"]:
                info["notes"] += f"; did not converge within maxiter {maxiter}"
            return None   # jax's cg does not report its iterations

        return _record(run, "host", None, finish, info,
                       warmup_fn=lambda: jax.block_until_ready(solve(*args, 2)))

    def _cupyx(self, cfg, env):
        try:
            import cupy
            import cupyx.scipy.sparse as csp
        except ImportError as exc:
            raise Unavailable(f"CuPy is not importable ({exc})")
        from . import baselines as B
        prob = self._problem(cfg)
        A_h, fluid = prob.csr
        A = csp.csr_matrix((cupy.asarray(A_h.data), cupy.asarray(A_h.indices), cupy.asarray(A_h.indptr)),
                           shape=A_h.shape)
        b = cupy.asarray(-prob.b.reshape(-1)[fluid])
        last = {}
        info = self._base_info(cfg, method="cupyx.scipy.sparse.linalg.cg on the CSR matrix",
                               maxiter=SLOW_MAXITER)

        def run():
            last["x"], last["its"] = B.cupyx_cg(A, b, TOL, SLOW_MAXITER)

        def finish():
            info.update(prob.check(cupy.asnumpy(last.pop("x")), "cupyx"))
            info["converged"] = info["true_residual"] <= 2 * TOL
            return last["its"]

        return _record(run, "cuda", None, finish, info, warmup_fn=lambda: B.cupyx_cg(A, b, TOL, 2))

    def _dense_spectral(self, cfg, env):
        from gpudp.ops import _spectral
        from gpudp.ops.difference import kernel_args
        from gpudp.backends import get_backend

        dense = getattr(_spectral, "DenseSpectralInverse", None)
        if dense is None:
            raise Unavailable("gpudp.ops._spectral.DenseSpectralInverse is not in this version of gpudp")
        if "inverse" not in inspect.signature(_spectral.cg_solve).parameters:
            raise Unavailable("gpudp.ops._spectral.cg_solve takes no inverse= in this version of gpudp")
        prob = self._problem(cfg)
        backend = get_backend("cpu" if env.kind == "cpu" else "cupy")
        args = kernel_args(prob.grid)
        inv_dx, bc, shape3, ndim = args
        M = dense(backend.xp, np.dtype(cfg.dtype), inv_dx, bc, shape3, ndim)
        b = backend.asarray(prob.b.reshape(1, -1), cfg.dtype)
        last = {}
        info = self._base_info(cfg, method="CG with gpudp.ops._spectral.DenseSpectralInverse (dense eigenbases)")

        def run():
            last["x"], last["its"], last["res"] = _spectral.cg_solve(backend, b, None, *args, TOL, FAST_MAXITER,
                                                                     prob.grid.is_singular, inverse=M)

        def finish():
            info.update(prob.check(backend.to_numpy(last.pop("x")), "dense spectral"))
            info["converged"] = last["res"] <= TOL
            return last["its"]

        return _record(run, _clock(backend), _host_sync(backend), finish, info)

    def _fft_pair(self, cfg, env):
        prob = self._problem(cfg)
        D = len(cfg.shape)
        axes = tuple(range(1, D + 1))
        if env.kind == "cpu":
            import scipy.fft as fft
            try:
                from gpudp.ops._spectral import WORKERS as workers
            except ImportError:
                workers = os.cpu_count() or 1
            x = np.ascontiguousarray(prob.b.reshape((1,) + cfg.shape), cfg.dtype)

            def run():
                y = fft.dstn(x, type=1, axes=axes, norm="ortho", workers=workers)
                fft.idstn(y, type=1, axes=axes, norm="ortho", overwrite_x=True, workers=workers)

            method = f"scipy.fft.dstn + idstn, type 1, ortho, workers={workers}"
            clock, sync = "host", None
        else:
            import cupy
            import cupyx.scipy.fft as fft
            x = cupy.asarray(prob.b.reshape((1,) + cfg.shape), cfg.dtype)

            def run():
                fft.irfftn(fft.rfftn(x, axes=axes), s=cfg.shape, axes=axes)

            method = "cupyx.scipy.fft.rfftn + irfftn (cuFFT)"
            clock, sync = "cuda", None
        return Impl(run, clock, sync, info=self._base_info(cfg, method=method))


def _drop_spectral_cache():
    """Forget the spectral preconditioner's per-grid data (kept by value, not per ``Grid`` object), so that a
    first call builds it again."""
    try:
        from gpudp.ops import _spectral
    except ImportError:
        return
    cache = getattr(_spectral, "_cache", None)
    if isinstance(cache, dict):
        lock = getattr(_spectral, "_cache_lock", None)
        if lock is None:
            cache.clear()
        else:
            with lock:
                cache.clear()


# -- the report: the summary per size and the goals ----------------------------------------------------------------


def _group_of(r):
    return (r.get("info") or {}).get("group")


def _ok(records):
    return [r for r in records if r.get("case") == CASE_NAME and r.get("status") == "ok"]


def _gpudp_row(records, config, impl="gpudp-cpu"):
    for r in _ok(records):
        if r["config"] == config and r["impl"] == impl:
            return r
    return None


def _baseline_row(records, group, impl, kind="cpu"):
    for r in _ok(records):
        if r.get("role") == "baseline" and _group_of(r) == group and r["impl"] == impl and r["device_kind"] == kind:
            return r
    return None


def _first_call(r):
    return (r.get("diagnostics") or {}).get("first_call_s")


def summary_lines(records):
    """Markdown: per size, every row of this case (gpudp's preconditioners and the baselines) with its
    iterations, first call and warm time, answer check, and gpudp's ratios to the baselines; ``[]`` when the
    run has none."""
    from .report import _ms as _fmt   # the report's time format (report imports this module)
    rows = [r for r in records if r.get("case") == CASE_NAME]
    if not rows:
        return []
    lines = ["## Poisson solvers", "",
             "Per size: gpudp's warm solve (the grid's hierarchy or eigenvalues already built) and its first call "
             "on a new grid (set-up + solve); baselines as timed (pyamg-sa and pyamg-rs include their set-up). "
             "`× base` is the baseline's time over the gpudp row's warm time for every baseline of the size "
             "(above 1: gpudp is faster); pyamg-sa and pyamg-rs are also compared with gpudp's first call "
             "(`first ×`). These rows are not in the chart (their byte model leaves out the preconditioners' own "
             "passes: compare them by time).", ""]
    groups = []
    for r in rows:
        g = (r["device_kind"], _group_of(r) or r["config"])
        if g not in groups and r.get("status") == "ok":
            groups.append(g)
    for kind, group in groups:
        members = [r for r in rows if r["device_kind"] == kind and (_group_of(r) or r["config"]) == group]
        base = [r for r in members if r.get("role") == "baseline" and r.get("status") == "ok"]
        lines += [f"**{group}** ({kind})", "",
                  "| implementation | iterations | warm solve | first call | GB/s | residual / check | × base | "
                  "first × |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["device_kind"] != kind or not r["config"].startswith(group + " "):
                continue
            if r.get("role") != "gpudp":
                continue
            label = f"{r['impl']} {r['config'][len(group) + 1:]}"
            if r.get("status") != "ok":
                lines.append(f"| {label} | | | | | {r['status']} | | |")
                continue
            info = r.get("info") or {}
            first = _first_call(r)
            ratios = ", ".join(f"{b['impl']} {b['median_s'] / r['median_s']:.2g}" for b in base)
            firsts = ", ".join(f"{b['impl']} {b['median_s'] / first:.2g}" for b in base
                               if first and b["impl"] in ("pyamg-sa", "pyamg-rs"))
            check = f"{info.get('residual', float('nan')):.1e}" + ("" if info.get("converged", True)
                                                                   else " (not converged)")
            used = info.get("preconditioner_used")
            if used and used != info.get("preconditioner"):
                check += f", used {used}"
            lines.append(f"| {label} | {r.get('iterations') or ''} | {_fmt(r['median_s'])} | {_fmt(first)} | "
                         f"{r['gbps']:.1f} | {check} | {ratios} | {firsts} |"
                         if r.get("gbps") is not None else
                         f"| {label} | {r.get('iterations') or ''} | {_fmt(r['median_s'])} | {_fmt(first)} | | "
                         f"{check} | {ratios} | {firsts} |")
        for b in [r for r in members if r.get("role") == "baseline"]:
            if b.get("status") != "ok":
                lines.append(f"| {b['impl']} | | | | | {b['status']} | | |")
                continue
            info = b.get("info") or {}
            split = ""
            if "setup_s" in info and "solve_s" in info and b["impl"] != "pyamg-sa-solve":
                split = f" (set-up {_fmt(info['setup_s'])} + solve {_fmt(info['solve_s'])})"
            gbps = f"{b['gbps']:.1f}" if b.get("gbps") is not None else ""
            lines.append(f"| {b['impl']} | {b.get('iterations') or ''} | {_fmt(b['median_s'])}{split} | | {gbps} | "
                         f"{info.get('notes', '')} | | |")
        lines.append("")
    return lines


#: The CPU goals of the solvers (report.CPU_TARGETS rows: id, case, the configuration the goal is read at, text).
TARGETS = [
    ("solvers_mg_vs_pyamg", CASE_NAME, "1024x1024 obstacles float64 multigrid",
     "multigrid ≥ 3× faster than pyamg smoothed aggregation (set-up + solve) at 1024² with 20 % obstacles (CPU)"),
    ("solvers_mg_vs_jacobi", CASE_NAME, "1024x1024 obstacles float64 multigrid",
     "multigrid ≥ 10× faster than Jacobi-PCG at 1024² with 20 % obstacles (CPU)"),
    ("solvers_spectral_vs_fft", CASE_NAME, "1024x1024 open float64 spectral",
     "spectral solve at 1024² float64 within 3× of a bare scipy.fft forward + inverse pair (DST-I, the same run)"),
    ("solvers_mg_iterations", CASE_NAME, "256x256 obstacles float64 multigrid",
     "multigrid ≤ 25 CG iterations at 256² with 20 % obstacles, growth ≤ 1.5× to 2048² (3-D: 32³ → 128³)"),
]


def evaluate_target(tid, g, records):
    """The fields ``measured``, ``goal``, ``status``, ``detail`` of one of :data:`TARGETS` (``g``: the gpudp-cpu
    record of its configuration)."""
    from .report import _ms as _fmt   # the report's time format (report imports this module)
    first = _first_call(g)
    if tid in ("solvers_mg_vs_pyamg", "solvers_mg_vs_jacobi"):
        group = "1024x1024 obstacles float64"
        mg_time = first if first else g["median_s"]
        what = "first call (set-up + solve)" if first else "warm solve (no first-call time)"
        if tid == "solvers_mg_vs_pyamg":
            other = _baseline_row(records, group, "pyamg-sa")
            name, goal = "pyamg-sa (set-up + solve)", 3.0
        else:
            other = _gpudp_row(records, f"{group} jacobi")
            name, goal = "gpudp Jacobi-PCG", 10.0
        if other is None:
            return {"status": "not measured", "detail": f"no {name} row in this run"}
        ratio = other["median_s"] / mg_time
        detail = (f"multigrid {what} {_fmt(mg_time)}, warm {_fmt(g['median_s'])} ({g.get('iterations')} its); "
                  f"{name} {_fmt(other['median_s'])} ({other.get('iterations')} its); warm ratio "
                  f"{other['median_s'] / g['median_s']:.1f}×")
        oi = other.get("info") or {}
        if "setup_s" in oi and "solve_s" in oi:
            detail += f"; pyamg set-up {_fmt(oi['setup_s'])} + solve {_fmt(oi['solve_s'])}"
        if oi.get("converged") is False:
            detail += f"; {name} did not converge within maxiter {oi.get('maxiter')} (the ratio is a lower bound)"
        return {"measured": f"{ratio:.1f}×", "goal": f"≥ {goal:.0f}×",
                "status": "met" if ratio >= goal else "missed", "detail": detail}
    if tid == "solvers_spectral_vs_fft":
        pair = _baseline_row(records, "1024x1024 open float64", "scipy-fft-pair")
        if pair is None:
            return {"status": "not measured", "detail": "no scipy-fft-pair row in this run"}
        ratio = g["median_s"] / pair["median_s"]
        return {"measured": f"{ratio:.2f}× the pair", "goal": "≤ 3×", "status": "met" if ratio <= 3 else "missed",
                "detail": f"spectral {_fmt(g['median_s'])} ({g.get('iterations')} its), first call {_fmt(first)}; "
                          f"scipy.fft DST-I pair {_fmt(pair['median_s'])}"}
    if tid == "solvers_mg_iterations":
        its = {}
        for shape in _2D + _3D:
            r = _gpudp_row(records, f"{shape_label(shape)} obstacles float64 multigrid")
            if r is not None and r.get("iterations"):
                its[shape] = r["iterations"]
        parts, ok, complete = [], True, True
        for series in (_2D, _3D):
            ref = its.get(series[0])
            if ref is None:
                complete = False
                continue
            if series is _2D and ref > 25:
                ok = False
            growth = max(its.get(s, ref) for s in series) / ref
            ok = ok and growth <= 1.5
            complete = complete and all(s in its for s in series)
            parts.append(" → ".join(f"{shape_label(s)}: {its[s]}" for s in series if s in its)
                         + f" (growth {growth:.2f}×)")
        status = "missed" if not ok else ("met" if complete else "met so far (larger sizes: --sizes full)")
        return {"measured": "; ".join(parts), "goal": "≤ 25 at 256², growth ≤ 1.5×", "status": status,
                "detail": "CG iterations of preconditioner='multigrid', tol 1e-6, float64"}
    raise ValueError(f"unknown solver target {tid!r}")


SOLVER_CASES = [PoissonSolvers()]
