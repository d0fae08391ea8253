"""Demo ``pressure``: differentiate through a pressure projection (``python -m gpudp demo pressure``).

The seed chapter's "differentiate pressure" problem. A closed box of 80 × 64 cells (spacing 1, solid walls:
neumann on every side) holds a staggered velocity field. Only the faces in the left half (face centre
``x < 40``) are free: they are the control; every other face of the input is zero. After one pressure
projection (``gpudp.project``: a divergence, a CG Poisson solve, a gradient) the flow in the right half
(face centre ``x > 40``) should match a target: zero x-velocity, y-velocity
``2·exp(−0.5·((x − 50)² + (y − 10)²)/32²)``. The loss is ``½ Σ (project(u) − target)²`` over the right-half
faces; 20 steps of gradient descent (step 1) on the control, from uniform noise in ``[−0.1, 0.1]``.

Each gradient costs one forward projection and its adjoint: the transposed gradient, *one* more Poisson solve
(the implicit gradient, nothing of the forward CG iterations stored) and the transposed divergence.
"""
from __future__ import annotations

import pathlib
import time

import numpy as np

import gpudp

from ._progress import Progress

SHAPE = (80, 64)      # cells along x and y
SPLIT = 40.0          # control faces: centre x < SPLIT; loss faces: centre x > SPLIT
TOL = 1e-5            # Poisson tolerance (relative residual)
PRECONDITIONER = "auto"  # spectral on the obstacle-free box: the exact inverse, one CG iteration
STEP = 1.0            # gradient-descent step
ITERATIONS = 20
INIT_RANGE = 0.1      # control starts uniform in [−INIT_RANGE, INIT_RANGE]
SEED = 0
GOAL_RATIO = 0.6      # final loss below this fraction of the initial one


def face_centres(grid, k):
    """``(x, y)`` of the faces of component ``k`` (float64 arrays of ``grid.face_shape(k)``)."""
    axes = []
    for a, (n, h) in enumerate(zip(grid.shape, grid.spacing)):
        # faces normal to k sit on cell boundaries along k, at cell centres along the other axes
        axes.append(np.arange(n + 1) * h if a == k else (np.arange(n) + 0.5) * h)
    return np.meshgrid(*axes, indexing="ij")


class PressureProblem:
    """The demo's problem on the active backend: masks, target, loss and its gradient.

    ``loss_and_grad(control)`` is one forward projection and one backward pass (also what a benchmark of
    the projection's gradient times)."""

    def __init__(self, dtype=np.float64, tol=TOL, preconditioner=PRECONDITIONER):
        self.grid = gpudp.Grid(SHAPE, spacing=1.0, boundary="neumann")
        self.tol = tol
        self.preconditioner = preconditioner
        self.dtype = np.dtype(dtype)
        left, right, target = [], [], []
        for k in range(self.grid.ndim):
            x, y = face_centres(self.grid, k)
            left.append(x < SPLIT)
            right.append(x > SPLIT)
            t = 2.0 * np.exp(-0.5 * ((x - 50.0) ** 2 + (y - 10.0) ** 2) / 32.0 ** 2) if k == 1 else 0.0 * x
            target.append(np.where(right[-1], t, 0.0))
        self.left_host, self.right_host, self.target_host = left, right, target
        self.left = tuple(gpudp.asarray(m, dtype=self.dtype) for m in left)
        self.right = tuple(gpudp.asarray(m, dtype=self.dtype) for m in right)
        self.target = tuple(gpudp.asarray(t, dtype=self.dtype) for t in target)

    def initial_control(self, seed=SEED):
        """Uniform noise on the control faces, zero elsewhere, as tensors."""
        rng = np.random.default_rng(seed)
        return tuple(gpudp.tensor(np.where(m, rng.uniform(-INIT_RANGE, INIT_RANGE, m.shape), 0.0),
                                  dtype=self.dtype) for m in self.left_host)

    def velocity(self, control):
        """The full input field: the control on the left-half faces, zero elsewhere."""
        return tuple(c * m for c, m in zip(control, self.left))

    def loss(self, control):
        return self.loss_of(gpudp.project(self.velocity(control), self.grid, tol=self.tol,
                                          preconditioner=self.preconditioner))

    def loss_of(self, projected):
        """``½ Σ (projected − target)²`` over the right-half faces."""
        total = None
        for p, m, t in zip(projected, self.right, self.target):
            term = 0.5 * gpudp.l2_loss(p * m, t)
            total = term if total is None else total + term
        return total

    def loss_and_grad(self, control):
        """``(loss as float, gradient arrays)``; the gradient is zero outside the control faces."""
        leaves = [gpudp.tensor(c, requires_grad=True) for c in control]
        with gpudp.Tape() as tape:
            loss = self.loss(leaves)
        #: :class:`gpudp.SolveInfo` of the last forward and backward Poisson solves
        self.forward_info = gpudp.last_solve_info()
        grads = tape.gradient(loss, leaves)
        self.backward_info = gpudp.last_solve_info()
        return float(loss.item()), tuple(grads)


def run(out_dir, quiet=False):
    """Optimise the control on the active backend, print a table, write PNG figures into ``out_dir`` and
    return the key numbers as a dict."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from matplotlib.figure import Figure  # noqa: F401  (fail before the work, not after it)
    except ImportError as exc:
        raise RuntimeError("the pressure demo draws its figures with matplotlib; install it with "
                           "pip install 'gpudp[demo]'") from exc

    backend = gpudp.get_backend()
    print(f"pressure projection control: {SHAPE[0]} x {SHAPE[1]} closed box, CG tol {TOL:g} "
          f"(preconditioner {PRECONDITIONER!r}), "
          f"{ITERATIONS} gradient-descent steps of {STEP:g}; backend {backend.name!r} ({backend.device})")
    start = time.perf_counter()
    problem = PressureProblem()
    control = problem.initial_control()
    losses, rows = [], []
    with Progress(ITERATIONS, "pressure", quiet=quiet) as bar:
        for it in range(ITERATIONS):
            t0 = time.perf_counter()
            loss, grads = problem.loss_and_grad(control)
            for c, g in zip(control, grads):
                c -= STEP * gpudp.Tensor(g)  # plain gradient descent (no tape is recording)
            losses.append(loss)
            rows.append((it, loss, problem.forward_info.iterations, problem.backward_info.iterations,
                         time.perf_counter() - t0))
            bar.update(loss=loss)
    projected, info = gpudp.project(problem.velocity(control), problem.grid, tol=TOL,
                                    preconditioner=PRECONDITIONER, return_info=True)
    final = float(problem.loss_of(projected).item())
    losses.append(final)
    runtime = time.perf_counter() - start

    print(f"{'iteration':>9}  {'loss':>12}  {'CG its fwd/bwd':>14}  {'time [ms]':>9}")
    for it, loss, fwd, bwd, dt in rows:
        print(f"{it:>9d}  {loss:12.6e}  {f'{fwd}/{bwd}':>14}  {1e3 * dt:9.1f}")
    print(f"{ITERATIONS:>9d}  {final:12.6e}  {f'{info.iterations}/-':>14}  {'':>9}")
    ratio = final / losses[0]
    monotone = bool(np.all(np.diff(losses) < 0))
    ok = monotone and ratio < GOAL_RATIO
    print(f"loss {losses[0]:.4e} -> {final:.4e} ({100 * ratio:.1f} % of the start; goal < "
          f"{100 * GOAL_RATIO:.0f} %, decreasing at every step: {'yes' if monotone else 'NO'}) "
          f"{'ok' if ok else 'MISSED'}")
    print(f"runtime {runtime:.1f} s including JIT compilation")

    host = dict(control=[gpudp.to_numpy(c) for c in problem.velocity(control)],
                projected=[gpudp.to_numpy(c) for c in projected])
    figures = _figures(out_dir, problem, host, np.asarray(losses))
    for path in figures.values():
        print(f"  wrote {path}")
    return {
        "backend": backend.name,
        "device": backend.device,
        "iterations": ITERATIONS,
        "loss_initial": losses[0],
        "loss_final": final,
        "loss_ratio": ratio,
        "losses": losses,
        "monotone": monotone,
        "cg_iterations_final": info.iterations,
        "runtime_s": runtime,
        "goals_met": ok,
        "figures": figures,
    }


def _cell_velocity(faces):
    """Cell-centred ``(u_x, u_y)`` from the staggered components (mean of the two faces of each cell)."""
    ux, uy = (np.asarray(f, np.float64) for f in faces)
    return 0.5 * (ux[1:, :] + ux[:-1, :]), 0.5 * (uy[:, 1:] + uy[:, :-1])


def _field_figure(path, title, faces, grid, note=None):
    from matplotlib.figure import Figure

    ux, uy = _cell_velocity(faces)
    nx, ny = grid.shape
    fig = Figure(figsize=(7.2, 5), layout="constrained")
    ax = fig.add_subplot()
    vmax = max(float(np.percentile(np.abs(uy), 99.5)), 1e-12)
    im = ax.imshow(uy.T, origin="lower", extent=(0, nx, 0, ny), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    fig.colorbar(im, ax=ax, label="y-velocity (cell centres)")
    xs, ys = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5, indexing="ij")
    s = (slice(2, None, 4), slice(2, None, 4))
    ax.quiver(xs[s], ys[s], ux[s], uy[s], color="0.15", angles="xy", width=0.0025)
    ax.axvline(SPLIT, color="0.85", lw=1, ls="--")
    ax.set(xlabel="x", ylabel="y", title=title, xlim=(0, nx), ylim=(0, ny))
    if note:
        ax.text(0.01, 0.99, note, transform=ax.transAxes, va="top", fontsize=8)
    fig.savefig(path, dpi=100)
    return str(path)


def _figures(out_dir, problem, host, losses):
    from matplotlib.figure import Figure

    grid = problem.grid
    paths = {
        "target": _field_figure(out_dir / "pressure_target.png", "Target velocity (right half, x > 40)",
                                problem.target_host, grid),
        "control": _field_figure(out_dir / "pressure_control.png", "Optimised control (left half, x < 40)",
                                 host["control"], grid),
        "projected": _field_figure(out_dir / "pressure_projected.png",
                                   "Projected field of the optimised control", host["projected"], grid,
                                   note="divergence-free; compare the right half with the target"),
    }
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(len(losses)), losses, "o-", ms=3)
    ax.set(xlabel="gradient-descent iteration", ylabel="loss  ½ Σ (project(u) − target)²",
           title=f"Pressure demo: loss (GD step {STEP:g}, CG tol {TOL:g})", ylim=(0, None))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    paths["loss"] = str(out_dir / "pressure_loss.png")
    fig.savefig(paths["loss"], dpi=110)
    return paths
