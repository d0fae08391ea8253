"""Demo ``smoke``: the initial velocity of a buoyant smoke plume around an obstacle (``python -m gpudp demo smoke``).

A closed box of 64 × 64 cells (spacing 1, neumann walls on every side) holds a solid disc of radius 6 centred
at ``(32, 34)`` (the cells whose centre ``(i + ½, j + ½)`` lies inside it). A smoke blob
``d0 = exp(−((x − 32)² + (y − 12)²) / (2·4²))`` starts below the obstacle. One step of the simulation
(``dt = 1``, buoyancy ``β = 0.02``), every term with the velocity ``u`` of the start of the step::

    d ← advect_mac(d, u, dt)                      density, donor-cell upwind on the MAC grid
    w ← advect_mac(u, u, dt)                      velocity self-advection
    w_y ← w_y + dt·β·at_faces(d)[1]               buoyancy from the new density
    u ← project(w)                                pressure projection around the obstacle

The control is the initial staggered velocity ``u0`` (both components), projected before the first step. The
target is the density after ``T = 100`` steps of a hidden initial velocity (a stream function of nine sine
modes with random amplitudes, scaled to a peak speed of 0.15). Plain gradient descent (step 0.002) from
``u0 = 0`` on ``l2_loss(d_T, target)``; each gradient is one forward rollout of 100 steps and one backward pass
through them on the tape (two implicit Poisson solves per step: the projection forward and its adjoint).
"""
from __future__ import annotations

import pathlib
import time

import numpy as np

import gpudp

from ._progress import Progress

SHAPE = (64, 64)
CENTRE, RADIUS = (32.0, 34.0), 6.0     # the solid disc
BLOB, BLOB_SIGMA = (32.0, 12.0), 4.0   # the initial smoke blob
DT = 1.0
BETA = 0.02
STEPS = 100
ITERATIONS = 100
STEP = 0.002                           # gradient-descent step
PEAK_SPEED = 0.15                      # of the hidden initial velocity
SEED = 2
TOL = 1e-6                             # Poisson tolerance (the default of gpudp.poisson_solve)
#: "auto": the multigrid V-cycle around the disc, 7–10 CG iterations per solve (plain CG about 250)
PRECONDITIONER = "auto"
GOAL_RATIO = 0.05                      # final loss at most this fraction of the initial one


def cell_centres(shape=SHAPE):
    """``(x, y)`` of the cell centres ``(i + ½, j + ½)`` (float64, ``shape``)."""
    return np.meshgrid(np.arange(shape[0]) + 0.5, np.arange(shape[1]) + 0.5, indexing="ij")


def obstacle(shape=SHAPE):
    """The solid disc: True where ``(x − 32)² + (y − 34)² < 6²``."""
    x, y = cell_centres(shape)
    return (x - CENTRE[0]) ** 2 + (y - CENTRE[1]) ** 2 < RADIUS ** 2


def initial_density(shape=SHAPE):
    x, y = cell_centres(shape)
    return np.exp(-((x - BLOB[0]) ** 2 + (y - BLOB[1]) ** 2) / (2 * BLOB_SIGMA ** 2))


def hidden_velocity(shape=SHAPE, seed=SEED, peak=PEAK_SPEED):
    """The hidden initial velocity ``(u_x, u_y)`` (float64 face arrays of shapes ``(nx+1, ny)``, ``(nx, ny+1)``)
    from the stream function ``ψ = Σ_{kx,ky=1..3} c_{kx,ky} sin(π kx X / nx) sin(π ky Y / ny) / (kx² + ky²)`` on
    the grid nodes, ``c`` drawn in that loop order (kx outer) by ``default_rng(seed).standard_normal()``;
    ``u_x[i, j] = ψ[i, j+1] − ψ[i, j]``, ``u_y[i, j] = −(ψ[i+1, j] − ψ[i, j])``, scaled so that the larger of
    ``max|u_x|``, ``max|u_y|`` is ``peak``."""
    nx, ny = shape
    rng = np.random.default_rng(seed)
    X, Y = np.meshgrid(np.arange(nx + 1), np.arange(ny + 1), indexing="ij")
    psi = np.zeros((nx + 1, ny + 1))
    for kx in range(1, 4):
        for ky in range(1, 4):
            c = rng.standard_normal()
            psi += c * np.sin(np.pi * kx * X / nx) * np.sin(np.pi * ky * Y / ny) / (kx ** 2 + ky ** 2)
    ux = psi[:, 1:] - psi[:, :-1]
    uy = -(psi[1:, :] - psi[:-1, :])
    scale = peak / max(np.abs(ux).max(), np.abs(uy).max())
    return ux * scale, uy * scale


class SmokeProblem:
    """The demo's problem on the active backend: grid with the obstacle, initial density, target, the
    rollout and the gradient of its loss with respect to the initial velocity."""

    def __init__(self, dtype=np.float64, tol=TOL, preconditioner=PRECONDITIONER, steps=STEPS, shape=SHAPE):
        self.dtype = np.dtype(dtype)
        self.steps = steps
        self.solid = obstacle(shape)
        self.grid = gpudp.Grid(shape, spacing=1.0, boundary="neumann", solid=self.solid)
        self.solve = dict(tol=tol, preconditioner=preconditioner)
        self.d0 = gpudp.asarray(initial_density(shape), dtype=self.dtype)
        self.hidden = tuple(gpudp.asarray(c, dtype=self.dtype) for c in hidden_velocity(shape))
        self.target = self.simulate(self.hidden)

    def zero_control(self):
        return tuple(gpudp.tensor(np.zeros(self.grid.face_shape(k)), dtype=self.dtype) for k in range(2))

    def simulate(self, u0, frames=None):
        """``d_T`` of the initial velocity ``u0`` (projected first); ``frames``: a set of step numbers whose
        densities are appended, as NumPy arrays, to the list ``self.frames``."""
        grid = self.grid
        u = gpudp.project(u0, grid, **self.solve)
        d = self.d0
        if frames is not None:
            self.frames = [(0, gpudp.to_numpy(d))] if 0 in frames else []
        for t in range(1, self.steps + 1):
            d_new = gpudp.advect_mac(d, u, DT, grid)
            w = gpudp.advect_mac(u, u, DT, grid)
            w = (w[0], w[1] + (DT * BETA) * gpudp.at_faces(d_new, grid)[1])
            u = gpudp.project(w, grid, **self.solve)
            d = d_new
            if frames is not None and t in frames:
                self.frames.append((t, gpudp.to_numpy(d)))
        return d

    def loss(self, u0):
        return gpudp.l2_loss(self.simulate(u0), self.target)

    def loss_and_grad(self, u0):
        """``(loss as float, gradient arrays)`` for the initial velocity ``u0`` (tuple of two face arrays)."""
        leaves = [gpudp.tensor(c, requires_grad=True) for c in u0]
        with gpudp.Tape() as tape:
            loss = self.loss(leaves)
        #: bytes the tape held for the backward pass
        self.tape_bytes = tape.memory_bytes
        grads = tape.gradient(loss, leaves)
        return float(loss.item()), tuple(grads)


def run(out_dir, quiet=False, tol=TOL, iterations=ITERATIONS):
    """Optimise the initial velocity on the active backend, print a table, write the figures into ``out_dir``
    and return the key numbers as a dict."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from matplotlib.figure import Figure  # noqa: F401  (fail before the work, not after it)
    except ImportError as exc:
        raise RuntimeError("the smoke demo draws its figures with matplotlib; install it with "
                           "pip install 'gpudp[demo]'") from exc

    backend = gpudp.get_backend()
    print(f"smoke plume inverse problem: {SHAPE[0]} x {SHAPE[1]} closed box with a solid disc, {STEPS} steps "
          f"(advect_mac, buoyancy, project), {iterations} gradient-descent steps of {STEP:g}, CG tol {tol:g} "
          f"(preconditioner {PRECONDITIONER!r}); "
          f"backend {backend.name!r} ({backend.device})")
    start = time.perf_counter()
    problem = SmokeProblem(tol=tol)
    control = problem.zero_control()
    losses, rows = [], []
    with Progress(iterations, "smoke", quiet=quiet) as bar:
        for it in range(iterations):
            t0 = time.perf_counter()
            loss, grads = problem.loss_and_grad(control)
            for c, g in zip(control, grads):
                c -= STEP * gpudp.Tensor(g)  # plain gradient descent (no tape is recording)
            losses.append(loss)
            rows.append((it, loss, time.perf_counter() - t0))
            bar.update(loss=loss)
    marks = set(range(0, STEPS + 1, STEPS // 5))
    final = float(gpudp.l2_loss(problem.simulate(control, frames=marks), problem.target).item())
    frames = problem.frames
    losses.append(final)
    runtime = time.perf_counter() - start
    per_iteration = float(np.median([r[2] for r in rows])) if rows else float("nan")

    print(f"{'iteration':>9}  {'loss':>12}  {'time [ms]':>9}")
    for it, loss, dt in rows:
        if it < 5 or it % 10 == 0 or it == iterations - 1:
            print(f"{it:>9d}  {loss:12.6e}  {1e3 * dt:9.1f}")
    print(f"{iterations:>9d}  {final:12.6e}")
    ratio = final / losses[0]
    ok = ratio <= GOAL_RATIO
    print(f"loss {losses[0]:.4e} -> {final:.4e} ({100 * ratio:.2f} % of the start; goal <= "
          f"{100 * GOAL_RATIO:.0f} %) {'ok' if ok else 'MISSED'}")
    print(f"time per iteration (forward + backward through {STEPS} steps): {1e3 * per_iteration:.0f} ms; "
          f"tape {problem.tape_bytes / 2**20:.1f} MiB; runtime {runtime:.1f} s including JIT compilation")

    host = dict(control=[gpudp.to_numpy(c) for c in gpudp.project(control, problem.grid, **problem.solve)],
                target=gpudp.to_numpy(problem.target), final=frames[-1][1],
                before=gpudp.to_numpy(problem.simulate(problem.zero_control())))
    figures = _figures(out_dir, problem, host, frames, np.asarray(losses))
    for path in figures.values():
        print(f"  wrote {path}")
    return {
        "backend": backend.name,
        "device": backend.device,
        "iterations": iterations,
        "tol": tol,
        "loss_initial": losses[0],
        "loss_final": final,
        "loss_ratio": ratio,
        "losses": losses,
        "time_per_iteration_s": per_iteration,
        "tape_bytes": problem.tape_bytes,
        "runtime_s": runtime,
        "goals_met": ok,
        "figures": figures,
    }


def _density_axes(ax, d, solid, title, vmax):
    nx, ny = d.shape
    im = ax.imshow(d.T, origin="lower", extent=(0, nx, 0, ny), cmap="magma", vmin=0.0, vmax=vmax)
    ax.contourf(np.arange(nx) + 0.5, np.arange(ny) + 0.5, solid.T.astype(float), levels=[0.5, 1.5],
                colors=["0.6"])
    ax.set(title=title, xticks=[], yticks=[])
    return im


def _figures(out_dir, problem, host, frames, losses):
    from matplotlib.figure import Figure

    solid = problem.solid
    vmax = float(max(host["target"].max(), host["final"].max(), 1e-12))
    paths = {}
    for name, title in (("target", "Target density d_T"), ("before", "d_T before optimisation (u0 = 0)"),
                        ("final", "d_T after optimisation")):
        fig = Figure(figsize=(4.6, 4), layout="constrained")
        ax = fig.add_subplot()
        im = _density_axes(ax, host[name], solid, title, vmax)
        fig.colorbar(im, ax=ax, shrink=0.8)
        paths[name] = str(out_dir / f"smoke_{name}.png")
        fig.savefig(paths[name], dpi=100)

    ux, uy = (np.asarray(c, np.float64) for c in host["control"])
    cx, cy = 0.5 * (ux[1:] + ux[:-1]), 0.5 * (uy[:, 1:] + uy[:, :-1])
    nx, ny = cx.shape
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(np.hypot(cx, cy).T, origin="lower", extent=(0, nx, 0, ny), cmap="viridis")
    fig.colorbar(im, ax=ax, label="|u0| (cell centres)", shrink=0.8)
    xs, ys = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5, indexing="ij")
    s = (slice(1, None, 3), slice(1, None, 3))
    ax.quiver(xs[s], ys[s], cx[s], cy[s], color="w", angles="xy", width=0.003)
    ax.contour(np.arange(nx) + 0.5, np.arange(ny) + 0.5, solid.T.astype(float), levels=[0.5], colors="r")
    ax.set(title="Optimised initial velocity (projected)", xlim=(0, nx), ylim=(0, ny))
    paths["velocity"] = str(out_dir / "smoke_velocity.png")
    fig.savefig(paths["velocity"], dpi=100)

    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.semilogy(np.arange(len(losses)), losses, "-")
    ax.set(xlabel="gradient-descent iteration", ylabel="loss  Σ (d_T − target)²",
           title=f"Smoke demo: loss (GD step {STEP:g})")
    ax.grid(True, alpha=0.3, which="both")
    paths["loss"] = str(out_dir / "smoke_loss.png")
    fig.savefig(paths["loss"], dpi=110)

    fig = Figure(figsize=(2.4 * len(frames), 2.6), layout="constrained")
    for i, (t, d) in enumerate(frames):
        _density_axes(fig.add_subplot(1, len(frames), i + 1), d, solid, f"step {t}", vmax)
    paths["frames"] = str(out_dir / "smoke_frames.png")
    fig.savefig(paths["frames"], dpi=90)
    return paths
