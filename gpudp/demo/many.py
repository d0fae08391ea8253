"""Demo ``many``: 1024 inverse problems on a Dask cluster (``python -m gpudp demo many``).

The problems are the ``learn`` demo's family (:func:`gpudp.demo.learn.make_problems`): each has its own initial
density and hidden velocity, and asks for the velocity field that advects the density into its target in ``T``
upwind steps. Each is solved by plain gradient descent from the family's mean velocity, batched: one
:func:`descend` call runs the gradient descent of a whole batch of problems with one batched rollout and adjoint
per iteration (the problems are independent, so the batch's gradient holds each problem's own gradient).

The demo solves all problems twice: in this process as one batch (Numba using every core), and on a
``dask.distributed.LocalCluster`` of worker processes (one thread each) through :func:`gpudp.dask.map_problems`,
one batch per worker. It checks that both give bitwise equal velocities and losses and prints the throughput of
both and the cluster's overhead (its time over the single process's, the best of ``repeats`` timings each; the
cluster is started and its workers' kernels compiled before the clock starts). It writes ``many_losses.png``: per-problem losses before and after.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import time

import numpy as np

import gpudp

from .. import dask as gpudp_dask
from . import learn


@dataclasses.dataclass
class Config:
    """The run's size (the defaults take under a minute on 2 CPU cores, cluster start included)."""

    problems: int = 1024
    iterations: int = 50          # gradient-descent iterations (solver calls) per problem
    rate: float = 0.2             # step size (the learn demo's best on this family)
    workers: int = 2
    repeats: int = 3              # each run is timed this many times; the best time counts
    batch_size: int | None = None  # default: one batch per worker
    seed: int = 0
    family: learn.Config = dataclasses.field(default_factory=learn.Config)


def descend(d0, target, u0, *, n, dt, steps, iterations, rate, umax):
    """Gradient descent on every problem's ``l2_loss`` from ``u0``, batched: ``d0``, ``target`` of shape
    ``(B, n)`` and ``u0`` of shape ``(B, 1, n)`` (arrays of the active backend). Returns ``(u, loss)``: the
    final velocities ``(B, 1, n)`` and each problem's final loss ``(B,)``, as NumPy arrays. Every iterate is
    clipped to ``|u| ≤ umax`` (the CFL limit); a ``u0`` beyond it raises :class:`gpudp.StabilityError`."""
    grid = gpudp.Grid(n, spacing=1.0 / n)
    tg = target

    def loss(v):
        return gpudp.l2_loss(gpudp.advect_upwind(d0, v, dt, grid, steps=steps), tg)

    step = gpudp.value_and_grad(loss)
    u = np.array(gpudp.to_numpy(u0))
    for _ in range(iterations):
        _, g = step(gpudp.asarray(u))
        u = np.clip(u - rate * gpudp.to_numpy(g), -umax, umax)
    d = gpudp.to_numpy(gpudp.advect_upwind(d0, gpudp.asarray(u), dt, grid, steps=steps))
    per_problem = ((d - gpudp.to_numpy(target)) ** 2).sum(axis=1)
    return u, per_problem


def problem_kwargs(cfg):
    """The keyword arguments of :func:`descend` shared by every problem of ``cfg``."""
    fam = cfg.family
    return dict(n=fam.n, dt=fam.dt, steps=fam.steps, iterations=cfg.iterations, rate=cfg.rate,
                umax=0.9 * (1.0 / fam.n) / fam.dt)


def make(cfg):
    """``(d0, target, u0)`` of ``cfg.problems`` problems, ``u0`` the family's mean velocity."""
    fam = cfg.family
    grid = gpudp.Grid(fam.n, spacing=1.0 / fam.n)
    d0, _, target = learn.make_problems(fam, cfg.problems, np.random.default_rng(cfg.seed), grid)
    u0 = np.full((cfg.problems, 1, fam.n), fam.mean_velocity, dtype=d0.dtype)
    return d0, target, u0


def _warm(kwargs, d0, target, u0):
    """Compile (or load) the kernels this batch size uses in this process: one iteration on the batch, so
    that the timings measure the solves."""
    return gpudp_dask.run_batch(descend, d0, target, u0, **dict(kwargs, iterations=1)).errors


def run(out_dir, quiet=False, config=None):
    """Solve the problems in this process and on a LocalCluster, print the comparison, write
    ``many_losses.png`` into ``out_dir``; returns the key numbers."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise SystemExit(f"the many demo runs a Dask cluster: install it first (pip install 'gpudp[dask]'; "
                         f"{exc})") from None
    cfg = config or Config()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backend = gpudp.current_backend_name()
    kwargs = problem_kwargs(cfg)
    d0, target, u0 = make(cfg)
    cores = os.cpu_count() or 1
    print(f"many: {cfg.problems} advection inverse problems (learn family: N = {cfg.family.n}, "
          f"T = {cfg.family.steps}), {cfg.iterations} gradient-descent iterations each; backend {backend!r}")

    # one process, one batch, every core
    _warm(kwargs, d0, target, u0)
    t_serial = float("inf")
    for _ in range(cfg.repeats):
        t0 = time.perf_counter()
        serial = gpudp_dask.run_batch(descend, d0, target, u0, **kwargs)
        t_serial = min(t_serial, time.perf_counter() - t0)
    if serial.errors:
        raise SystemExit(f"many: problems failed in the single process: {serial.errors}")
    u_serial, loss_serial = serial.values

    # the cluster: worker processes with one thread each, one batch per worker
    threads = max(1, cores // cfg.workers)
    batch = cfg.batch_size or -(-cfg.problems // cfg.workers)
    t_start = time.perf_counter()
    with LocalCluster(n_workers=cfg.workers, threads_per_worker=threads, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(_warm, kwargs, d0[:batch], target[:batch], u0[:batch])
        t_ready = time.perf_counter() - t_start
        t_dask = float("inf")
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            res = gpudp_dask.map_problems(descend, d0, target, u0, client=client, batch_size=batch, **kwargs)
            t_dask = min(t_dask, time.perf_counter() - t0)
    res.raise_errors()
    u_dask, loss_dask = res.values
    bitwise = bool(np.array_equal(u_dask, u_serial) and np.array_equal(loss_dask, loss_serial))

    grid = gpudp.Grid(cfg.family.n, spacing=1.0 / cfg.family.n)
    loss_before = learn.rollout_losses(cfg.family, grid, d0, u0, target)
    overhead = t_dask / t_serial
    print()
    print(f"{'run':<34} {'time':>8} {'problems/s':>11}")
    print(f"{'one process, ' + str(cores) + ' Numba threads':<34} {t_serial:7.2f}s {cfg.problems / t_serial:11.1f}")
    print(f"{f'LocalCluster, {cfg.workers} workers x {threads} thread':<34} {t_dask:7.2f}s "
          f"{cfg.problems / t_dask:11.1f}")
    print(f"cluster overhead: {overhead:.2f}x the single process (cluster start and compile: {t_ready:.1f}s, "
          f"not counted); batches: " + ", ".join(f"{b.count} on {b.worker} in {b.seconds:.2f}s"
                                                  for b in res.batches))
    print(f"results bitwise equal to the single process: {bitwise}")
    print(f"mean per-problem loss: {loss_before.mean():.4e} at u = mean, {loss_serial.mean():.4e} after "
          f"{cfg.iterations} iterations (median reduction {np.median(loss_before / loss_serial):.1f}x)")
    _figure(out_dir / "many_losses.png", loss_before, loss_serial, cfg)
    print(f"  wrote {out_dir / 'many_losses.png'}")
    if not bitwise:
        raise SystemExit("many: the cluster's results differ from the single process's")
    return {"seconds_serial": t_serial, "seconds_dask": t_dask, "overhead": overhead, "bitwise": bitwise,
            "seconds_cluster_ready": t_ready, "loss_before": float(loss_before.mean()),
            "loss_after": float(loss_serial.mean()), "problems": cfg.problems, "workers": cfg.workers}


def _figure(path, before, after, cfg):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    bins = np.logspace(np.log10(max(min(before.min(), after.min()), 1e-12)),
                       np.log10(max(before.max(), after.max())), 40)
    ax.hist(before, bins=bins, alpha=0.6, label="u = family mean")
    ax.hist(after, bins=bins, alpha=0.6, label=f"after {cfg.iterations} iterations")
    ax.set_xscale("log")
    ax.set_xlabel("per-problem l2 loss")
    ax.set_ylabel("problems")
    ax.set_title(f"{cfg.problems} inverse problems, batched gradient descent")
    ax.legend()
    fig.savefig(path, dpi=110)
