"""Demo ``advection``: the seed chapter's inverse problem (``python -m gpudp demo advection``).

A Gaussian bump of density on the periodic domain [0, 1) is advected by an unknown velocity field for ``T``
first-order upwind steps. Given only the initial density and the final one (the target), plain gradient
descent on the whole velocity field (``N`` unknowns) recovers the hidden velocity where the density has
been. Each iteration is one monolithic ``T``-step advection operator forward, the ``l2_loss``, and their
hand-written adjoints (:func:`gpudp.value_and_grad`); the velocity gradient accumulates over all steps
inside the adjoint kernel, as the seed's "time evolution" section derives.

Where the density is (nearly) zero the loss does not depend on the velocity, so the velocity there stays
near its initial guess: recovery is judged where the target density exceeds 0.2.
"""
from __future__ import annotations

import pathlib
import time

import numpy as np

import gpudp

from ._progress import Progress

N = 128               # cells on [0, 1)
DT = 0.002            # time step
T = 100               # upwind steps of one rollout
U_INIT = 0.3          # initial guess of the velocity, everywhere
STEP = 0.1            # gradient-descent step size
ITERATIONS = 1000     # at most
GOAL_REDUCTION = 1e3  # the loss must drop at least this much
GOAL_ERROR = 0.1      # max |u - u_true| where the target density exceeds MASK_LEVEL
MASK_LEVEL = 0.2
TABLE_AT = (0, 1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 700, 1000)


def problem():
    """The grid, ``d0``, ``u_true`` and the cell centres, as float64 NumPy arrays."""
    grid = gpudp.Grid(N, spacing=1.0 / N, boundary="periodic")
    x = grid.cell_centers(0)
    d0 = np.exp(-((x - 0.35) / 0.1) ** 2)
    u_true = (0.6 + 0.3 * np.sin(2 * np.pi * x))[None, :]  # (D, N) with D = 1
    return grid, x, d0, u_true


def run(out_dir, quiet=False):
    """Solve the inverse problem on the active backend, print a table, write three PNG figures into
    ``out_dir`` and return the key numbers as a dict."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from matplotlib.figure import Figure  # noqa: F401  (fail before the work, not after it)
    except ImportError as exc:
        raise RuntimeError("the advection demo draws its figures with matplotlib; install it with "
                           "pip install 'gpudp[demo]'") from exc

    backend = gpudp.get_backend()
    print(f"advection inverse problem (seed chapter): N = {N}, T = {T} steps of dt = {DT}, "
          f"gradient descent with step {STEP}; backend {backend.name!r} ({backend.device})")

    start = time.perf_counter()
    grid, x, d0_host, u_true_host = problem()
    d0 = gpudp.asarray(d0_host)
    target = gpudp.advect_upwind(d0, gpudp.asarray(u_true_host), DT, grid, steps=T)

    def loss_fn(u):
        return gpudp.l2_loss(gpudp.advect_upwind(d0, u, DT, grid, steps=T), target)

    value_and_grad = gpudp.value_and_grad(loss_fn, replay=True)  # recorded twice, then replayed (same bits)
    u = gpudp.Tensor(gpudp.asarray(np.full((1, N), U_INIT)))
    losses, times, rows = [], [], []
    with Progress(ITERATIONS, "advection", quiet=quiet) as bar:
        for it in range(ITERATIONS + 1):
            value, grad = value_and_grad(u)
            loss = float(gpudp.to_numpy(value))
            losses.append(loss)
            times.append(time.perf_counter() - start)
            if it in TABLE_AT or it == ITERATIONS:
                rows.append((it, loss, times[-1]))
            if it == ITERATIONS:
                break
            u -= STEP * gpudp.Tensor(grad)  # plain gradient descent (no tape is recording)
            bar.update(loss=loss)
    runtime = time.perf_counter() - start

    u_learned = u.numpy()[0]
    target_host = gpudp.to_numpy(target)
    final_host = gpudp.to_numpy(gpudp.advect_upwind(d0, u.data, DT, grid, steps=T))
    mask = target_host > MASK_LEVEL
    error = float(np.abs(u_learned - u_true_host[0])[mask].max())
    reduction = losses[0] / losses[-1] if losses[-1] > 0 else float("inf")

    print(f"{'iteration':>9}  {'loss':>12}  {'time [s]':>8}")
    for it, loss, t in rows:
        print(f"{it:>9d}  {loss:12.5e}  {t:8.2f}")
    ok_loss = reduction >= GOAL_REDUCTION
    ok_u = error <= GOAL_ERROR
    print(f"loss reduced {reduction:,.0f}x in {ITERATIONS} iterations (goal: >= {GOAL_REDUCTION:,.0f}x) "
          f"{'ok' if ok_loss else 'MISSED'}")
    print(f"max |u - u_true| where the target density > {MASK_LEVEL}: {error:.4f} over {int(mask.sum())} cells "
          f"(goal: <= {GOAL_ERROR}) {'ok' if ok_u else 'MISSED'}")
    print(f"runtime {runtime:.1f} s including JIT compilation")

    figures = _figures(out_dir, x, d0_host, target_host, final_host, u_true_host[0], u_learned, mask,
                       np.asarray(losses))
    for path in figures.values():
        print(f"  wrote {path}")
    return {
        "backend": backend.name,
        "device": backend.device,
        "iterations": ITERATIONS,
        "loss_initial": losses[0],
        "loss_final": losses[-1],
        "loss_reduction": reduction,
        "losses": losses,
        "max_velocity_error": error,
        "mask_cells": int(mask.sum()),
        "u_learned": u_learned,
        "u_true": u_true_host[0].copy(),
        "runtime_s": runtime,
        "goals_met": ok_loss and ok_u,
        "figures": figures,
    }


def _figures(out_dir, x, d0, target, final, u_true, u_learned, mask, losses):
    from matplotlib.figure import Figure

    paths = {}

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(x, d0, label="initial $d^0$", color="0.5")
    ax.plot(x, target, label=f"target $d^{{target}}$ (T = {T})", lw=3, alpha=0.5)
    ax.plot(x, final, "--", label="final $d(T)$ with learned $u$")
    ax.set(xlabel="x", ylabel="density", title="Densities")
    ax.legend()
    paths["densities"] = out_dir / "advection_densities.png"
    fig.savefig(paths["densities"], dpi=110)

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    lo, hi = min(u_true.min(), u_learned.min()) - 0.05, max(u_true.max(), u_learned.max()) + 0.05
    ax.fill_between(x, lo, hi, where=mask, color="0.9", step="mid", label=f"target density > {MASK_LEVEL}")
    ax.plot(x, u_true, label="true $u$", lw=3, alpha=0.6)
    ax.plot(x, u_learned, "--", label="learned $u$")
    ax.axhline(U_INIT, color="0.6", lw=0.8, ls=":", label=f"initial guess {U_INIT}")
    ax.set(xlabel="x", ylabel="velocity", title="Velocity: true vs learned", ylim=(lo, hi))
    ax.legend(loc="upper right")
    paths["velocity"] = out_dir / "advection_velocity.png"
    fig.savefig(paths["velocity"], dpi=110)

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.semilogy(np.arange(len(losses)), losses)
    ax.set(xlabel="iteration", ylabel="l2 loss", title="Loss (gradient descent, step 0.1)")
    ax.grid(True, which="both", alpha=0.3)
    paths["loss"] = out_dir / "advection_loss.png"
    fig.savefig(paths["loss"], dpi=110)
    return {k: str(v) for k, v in paths.items()}
