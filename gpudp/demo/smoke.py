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

Long rollouts (``python -m gpudp demo smoke --steps 1000 --checkpoints 32``): the tape of a rollout that
records every step grows with the steps (about 97 KiB per step here, 95 MiB for 1000 steps); with
``checkpoints=c`` the rollout runs through :func:`gpudp.rollout`, which holds at most ``c`` states and
recomputes the others in the backward pass on the binomial schedule, with the same gradients to the bit.
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
    rollout and the gradient of its loss with respect to the initial velocity.

    ``steps``: the rollout's length; ``checkpoints``: ``None`` records every step on the tape, an int ``c >= 1``
    runs the rollout through ``gpudp.rollout(..., checkpoints=c)`` (at most ``c`` states held; the same
    gradients). The target is always the plain rollout of the hidden velocity."""

    def __init__(self, dtype=np.float64, tol=TOL, preconditioner=PRECONDITIONER, steps=STEPS, shape=SHAPE,
                 checkpoints=None):
        self.dtype = np.dtype(dtype)
        self.steps = _count("steps", steps, 1)
        self.checkpoints = None if checkpoints is None else _count("checkpoints", checkpoints, 1)
        self.solid = obstacle(shape)
        self.grid = gpudp.Grid(shape, spacing=1.0, boundary="neumann", solid=self.solid)
        self.solve = dict(tol=tol, preconditioner=preconditioner)
        self.d0 = gpudp.asarray(initial_density(shape), dtype=self.dtype)
        self.hidden = tuple(gpudp.asarray(c, dtype=self.dtype) for c in hidden_velocity(shape))
        #: bytes the tape held after the last forward pass of :meth:`loss_and_grad`
        self.tape_bytes = None
        #: the :class:`gpudp.RolloutInfo` of the last checkpointed backward pass (``None`` without checkpoints)
        self.rollout_info = None
        self.target = self.simulate(self.hidden, checkpoints=None)

    def zero_control(self):
        return tuple(gpudp.tensor(np.zeros(self.grid.face_shape(k)), dtype=self.dtype) for k in range(2))

    def step(self, state):
        """One step of the simulation: ``(d, (u_x, u_y)) → (d', (u_x', u_y'))`` (the module docstring's four
        lines; the state is a density and a staggered velocity, tensors or arrays)."""
        d, u = state
        grid = self.grid
        d_new = gpudp.advect_mac(d, u, DT, grid)
        w = gpudp.advect_mac(u, u, DT, grid)
        w = (w[0], w[1] + (DT * BETA) * gpudp.at_faces(d_new, grid)[1])
        return d_new, tuple(gpudp.project(w, grid, **self.solve))

    def initial_state(self, u0):
        """``(d0, project(u0))``: the state the first step starts from."""
        return self.d0, tuple(gpudp.project(u0, self.grid, **self.solve))

    def simulate(self, u0, frames=None, checkpoints=...):
        """``d_T`` of the initial velocity ``u0`` (projected first); ``frames``: a set of step numbers whose
        densities are appended, as NumPy arrays, to the list ``self.frames`` (a plain loop over
        :meth:`step`). ``checkpoints``: the problem's own unless given; with ``None`` the steps run as a plain
        loop, with an int through ``gpudp.rollout(step, state, steps, checkpoints=...)``."""
        checkpoints = self.checkpoints if checkpoints is ... else checkpoints
        state = self.initial_state(u0)
        if frames is None and checkpoints is not None:
            d, _ = gpudp.rollout(self.step, state, self.steps, checkpoints=checkpoints)
            return d
        if frames is not None:
            self.frames = [(0, gpudp.to_numpy(state[0]))] if 0 in frames else []
        for t in range(1, self.steps + 1):
            state = self.step(state)
            if frames is not None and t in frames:
                self.frames.append((t, gpudp.to_numpy(state[0])))
        return state[0]

    def loss(self, u0, checkpoints=...):
        """``l2_loss(d_T, target)`` of the initial velocity ``u0`` (``checkpoints`` as for :meth:`simulate`)."""
        return gpudp.l2_loss(self.simulate(u0, checkpoints=checkpoints), self.target)

    def loss_and_grad(self, u0, checkpoints=...):
        """``(loss as float, gradient arrays)`` for the initial velocity ``u0`` (tuple of two face arrays).
        Sets :attr:`tape_bytes` and, for a checkpointed rollout, :attr:`rollout_info`."""
        leaves = [gpudp.tensor(c, requires_grad=True) for c in u0]
        with gpudp.Tape() as tape:
            loss = self.loss(leaves, checkpoints=checkpoints)
        self.tape_bytes = tape.memory_bytes
        grads = tape.gradient(loss, leaves)
        rollouts = tape.rollouts
        self.rollout_info = rollouts[0] if rollouts else None
        return float(loss.item()), tuple(grads)

    def peak_tape_bytes(self):
        """The most bytes the last :meth:`loss_and_grad` held for its backward pass: the tape after the forward
        pass, or, with checkpoints, the larger of that and the rollout's peak during the backward pass."""
        if self.tape_bytes is None:
            return None
        peak = self.rollout_info.peak_bytes if self.rollout_info is not None else None
        return max(self.tape_bytes, peak or 0)

    def step_tape_bytes(self, u0=None):
        """Bytes one step's operators save on a tape (measured: one step recorded from the initial state of
        ``u0``, default the hidden velocity, with density and velocity requiring gradients)."""
        d, u = self.initial_state(self.hidden if u0 is None else u0)
        state = (gpudp.tensor(d, requires_grad=True), tuple(gpudp.tensor(c, requires_grad=True) for c in u))
        with gpudp.Tape() as tape:
            self.step(state)
        return tape.memory_bytes

    def state_bytes(self):
        """Bytes of one state ``(d, (u_x, u_y))``."""
        n = int(np.prod(self.grid.shape)) + sum(int(np.prod(self.grid.face_shape(k))) for k in range(2))
        return n * self.dtype.itemsize

    def stored_tape_bytes(self, step_bytes=None):
        """What recording every step would hold: ``steps`` × one step's saved arrays (:meth:`step_tape_bytes`)
        plus one state for the loss's input (a bound: ``l2_loss`` keeps the final density only)."""
        step_bytes = self.step_tape_bytes() if step_bytes is None else step_bytes
        return self.steps * step_bytes + self.state_bytes()


def _count(name, value, minimum):
    """``value`` as an int ``>= minimum`` (else a ``TypeError``/``ValueError`` naming ``name``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"smoke demo: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"smoke demo: {name} must be an int >= {minimum}, got {value}")
    return int(value)


def run(out_dir, quiet=False, tol=TOL, iterations=ITERATIONS, steps=STEPS, checkpoints=None, memory_budget=None):
    """Optimise the initial velocity on the active backend, print a table, write the figures into ``out_dir``
    and return the key numbers as a dict.

    ``steps``: the rollout's length; ``checkpoints``: ``None`` records every step, an int ``c >= 1`` runs the
    rollout through ``gpudp.rollout(..., checkpoints=c)`` and reports its memory (the peak held for the
    backward pass, what storing every step would need) and its recomputed steps; ``memory_budget``: MiB,
    only reported against those figures."""
    iterations = _count("iterations", iterations, 1)
    steps = _count("steps", steps, 1)
    if checkpoints is not None:
        checkpoints = _count("checkpoints", checkpoints, 1)
    if memory_budget is not None:
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float, np.integer, np.floating)):
            raise TypeError(f"smoke demo: memory_budget must be a number of MiB, got "
                            f"{type(memory_budget).__name__} {memory_budget!r}")
        if not memory_budget > 0 or not np.isfinite(memory_budget):
            raise ValueError(f"smoke demo: memory_budget must be a positive number of MiB, got {memory_budget}")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from matplotlib.figure import Figure  # noqa: F401  (fail before the work, not after it)
    except ImportError as exc:
        raise RuntimeError("the smoke demo draws its figures with matplotlib; install it with "
                           "pip install 'gpudp[demo]'") from exc

    backend = gpudp.get_backend()
    rollout = "every step recorded" if checkpoints is None else \
        f"checkpointed rollout, at most {checkpoints} states held"
    print(f"smoke plume inverse problem: {SHAPE[0]} x {SHAPE[1]} closed box with a solid disc, {steps} steps "
          f"(advect_mac, buoyancy, project; {rollout}), {iterations} gradient-descent steps of {STEP:g}, "
          f"CG tol {tol:g} (preconditioner {PRECONDITIONER!r}); "
          f"backend {backend.name!r} ({backend.device})")
    start = time.perf_counter()
    problem = SmokeProblem(tol=tol, steps=steps, checkpoints=checkpoints)
    control = problem.zero_control()
    losses, rows, peaks = [], [], []
    with Progress(iterations, "smoke", quiet=quiet) as bar:
        for it in range(iterations):
            t0 = time.perf_counter()
            loss, grads = problem.loss_and_grad(control)
            for c, g in zip(control, grads):
                c -= STEP * gpudp.Tensor(g)  # plain gradient descent (no tape is recording)
            losses.append(loss)
            rows.append((it, loss, time.perf_counter() - t0))
            peaks.append(problem.peak_tape_bytes())
            bar.update(loss=loss)
    marks = set(range(0, steps + 1, max(1, steps // 5)))
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
    default = steps == STEPS and iterations == ITERATIONS
    print(f"loss {losses[0]:.4e} -> {final:.4e} ({100 * ratio:.2f} % of the start; goal <= "
          f"{100 * GOAL_RATIO:.0f} %{'' if default else f' after {ITERATIONS} iterations of {STEPS} steps'}) "
          f"{'ok' if ok else 'MISSED'}")
    print(f"time per iteration (forward + backward through {steps} steps): {1e3 * per_iteration:.0f} ms; "
          f"tape {problem.tape_bytes / 2**20:.1f} MiB; runtime {runtime:.1f} s including JIT compilation")
    if checkpoints is not None:
        memory = _memory_report(problem, peaks, memory_budget)
    else:
        memory = {"peak_tape_bytes": max(peaks), "memory_budget_mib": memory_budget}
        if memory_budget is not None:
            fits = max(peaks) <= memory_budget * 2 ** 20
            print(f"memory budget {memory_budget:g} MiB (reported only): the tape (every step recorded) "
                  f"{'fits' if fits else 'does NOT fit'}; --checkpoints C holds at most C states instead")

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
        "steps": steps,
        "checkpoints": checkpoints,
        **memory,
        "runtime_s": runtime,
        "goals_met": ok,
        "figures": figures,
    }


def _memory_report(problem, peaks, budget_mib):
    """Print and return the memory figures of a checkpointed run: the peak the tape held (after the forward
    pass or, larger, during the backward pass), what recording every step would hold, the budget, and the
    recomputed steps of the binomial schedule."""
    mib = 2 ** 20
    info = problem.rollout_info
    steps, c = problem.steps, problem.checkpoints
    step_bytes = problem.step_tape_bytes()
    stored = problem.stored_tape_bytes(step_bytes)
    peak = max(p for p in peaks if p is not None)
    predicted = gpudp.revolve_counts(steps, c)
    print(f"checkpointed rollout of {steps} steps, at most {c} states: {info.recomputed_steps} steps recomputed "
          f"per backward pass ({info.recomputed_steps / steps:.2f} x the rollout, besides recording each step once; "
          f"predicted by gpudp.revolve_counts: {predicted.recomputed_steps}), at most {info.peak_states} states "
          f"held")
    print(f"peak tape memory {peak / mib:.2f} MiB (after the forward pass {problem.tape_bytes / mib:.2f} MiB, "
          f"during the backward pass {(info.peak_bytes or 0) / mib:.2f} MiB); storing every step would need "
          f"{stored / mib:.1f} MiB ({steps} x {step_bytes / 1024:.0f} KiB saved per step + one state of "
          f"{problem.state_bytes() / 1024:.0f} KiB), {stored / peak:.0f}x more")
    if budget_mib is None:
        print("memory budget: none given (--memory-budget MiB)")
    else:
        fits = lambda b: "fits" if b <= budget_mib * mib else "does NOT fit"  # noqa: E731
        print(f"memory budget {budget_mib:g} MiB (reported only): the checkpointed rollout {fits(peak)}, "
              f"storing every step {fits(stored)}")
    return {"peak_tape_bytes": peak, "stored_tape_bytes": stored, "step_tape_bytes": step_bytes,
            "memory_budget_mib": budget_mib, "recomputed_steps": info.recomputed_steps,
            "predicted_recomputed_steps": predicted.recomputed_steps, "peak_states": info.peak_states,
            "rollout_peak_bytes": info.peak_bytes}


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
