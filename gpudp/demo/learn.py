"""Demo ``learn``: a network trained through the solver (``python -m gpudp demo learn``).

The seed's advection inverse problem, as a family: every problem has its own initial density ``d0`` (a
Gaussian with random centre and width) and its own hidden velocity ``u_true`` (a random positive mean plus a
few random Fourier modes); its target is the state after ``T`` upwind steps under ``u_true``. A small periodic
1-D CNN maps ``(d0, target)`` to a whole velocity field ``u``. Its training loss is gpudp's rollout of ``d0``
under the predicted ``u`` compared with the target by ``l2_loss``: the true velocities are never shown to it,
the gradient reaches the network through gpudp's adjoint kernels (:func:`gpudp.torch.wrap`). One batched
rollout (``u`` of shape ``(B, 1, N)``, ``d`` of shape ``(B, N)``) handles a whole minibatch.

On held-out problems it reports the loss of the network's prediction against the guess ``u = mean`` (the
family's mean velocity) and against per-problem gradient descent from that guess with a budget of solver
calls (one call = one rollout and its adjoint), among them the network's own budget at inference: one call.

Under ``torchrun`` (``torchrun --standalone --nproc-per-node 2 -m gpudp demo learn``) the training runs under
PyTorch's ``DistributedDataParallel``: every process draws the same global minibatch and trains on its
contiguous share of it (:func:`shard`, :func:`train_steps`), so the averaged gradients are the single-process
run's; rank 0 alone evaluates, prints and writes the figures.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import time

import numpy as np

import gpudp

from ._progress import Progress


@dataclasses.dataclass
class Config:
    """Sizes of the problem family and of the training run (the defaults train in about a minute)."""

    n: int = 128                  # cells on the periodic domain [0, 1)
    dt: float = 0.002
    steps: int = 100              # upwind steps T of one rollout
    mean_velocity: float = 0.6    # family mean: the guess u = mean
    mean_spread: float = 0.2      # per-problem mean velocity in mean ± spread
    modes: int = 3                # Fourier modes of u_true
    mode_amplitude: float = 0.15  # standard deviation of the first mode's coefficients (mode k: / k)
    width: tuple = (0.05, 0.12)   # Gaussian width range of d0
    n_train: int = 4096
    n_test: int = 256
    batch: int = 64               # problems per minibatch (under torchrun: split over the processes)
    train_steps: int = 1000
    lr: float = 3e-3
    channels: int = 32
    gd_budgets: tuple = (1, 10, 100)        # solver calls of per-problem gradient descent (the network's
                                            # training budget per problem is added)
    gd_rates: tuple = (0.05, 0.1, 0.2, 0.5)  # step sizes tried (on training problems) for gradient descent
    eval_every: int = 100
    seed: int = 0
    dtype: str = "float32"
    torch_threads: int = 1        # see run()


# Problems per batched solver call outside the training steps (data generation, evaluation, gradient
# descent): 128 fields of 128 cells stay below the size at which the cpu backend switches to its
# multi-threaded kernels, so the demo compiles only one variant of the kernels (a minute less on a cold start).
CHUNK = 128


def _chunks(count):
    return [slice(i, min(i + CHUNK, count)) for i in range(0, count, CHUNK)]


# -- the problem family ------------------------------------------------------------------------------------

def make_problems(cfg, count, rng, grid):
    """``(d0, u_true, target)`` for ``count`` problems: arrays ``(count, n)``, ``(count, 1, n)``, ``(count, n)``."""
    x = (np.arange(cfg.n) + 0.5) / cfg.n
    centre = rng.uniform(0.0, 1.0, (count, 1))
    width = rng.uniform(*cfg.width, (count, 1))
    dist = (x[None, :] - centre + 0.5) % 1.0 - 0.5  # periodic distance
    d0 = np.exp(-(dist / width) ** 2)
    u = cfg.mean_velocity + rng.uniform(-cfg.mean_spread, cfg.mean_spread, (count, 1)) + np.zeros((1, cfg.n))
    for k in range(1, cfg.modes + 1):
        a, b = rng.normal(0.0, cfg.mode_amplitude / k, (2, count, 1))
        u = u + a * np.sin(2 * np.pi * k * x) + b * np.cos(2 * np.pi * k * x)
    dtype = np.dtype(cfg.dtype)
    d0, u = d0.astype(dtype), u[:, None, :].astype(dtype)
    target = np.concatenate([gpudp.to_numpy(gpudp.advect_upwind(gpudp.asarray(d0[c]), gpudp.asarray(u[c]), cfg.dt,
                                                                grid, steps=cfg.steps)) for c in _chunks(count)])
    return d0, u, target


def rollout_losses(cfg, grid, d0, u, target):
    """Per-problem ``l2_loss`` of the rollout of ``d0`` under ``u`` (batched solver calls)."""
    d = np.concatenate([gpudp.to_numpy(gpudp.advect_upwind(gpudp.asarray(d0[c]), gpudp.asarray(u[c]), cfg.dt, grid,
                                                           steps=cfg.steps)) for c in _chunks(len(d0))])
    return ((d - target).astype(np.float64) ** 2).sum(axis=1)


def gradient_descent(cfg, grid, d0, target, calls, rate, u0=None, record=()):
    """Plain gradient descent on each problem's ``l2_loss`` from ``u0`` (default ``u = mean``): ``calls``
    solver calls per problem, each a rollout with its adjoint, batched over the problems (they are
    independent). Returns ``(u, snapshots, history)``: the final ``u``, ``{c: u after c calls}`` for ``c`` in
    ``record`` and the mean loss before each call."""
    u = np.full((len(d0), 1, cfg.n), cfg.mean_velocity, dtype=d0.dtype) if u0 is None else u0.copy()
    umax = 0.9 * grid.spacing[0] / cfg.dt  # keep every iterate within the CFL limit
    snapshots = {c: np.empty_like(u) for c in record}
    history = np.zeros(calls)
    for part in _chunks(len(d0)):
        d0g, tg = gpudp.asarray(d0[part]), gpudp.asarray(target[part])

        def loss(v):
            return gpudp.l2_loss(gpudp.advect_upwind(d0g, v, cfg.dt, grid, steps=cfg.steps), tg)

        step = gpudp.value_and_grad(loss)
        v = u[part]
        for c in range(1, calls + 1):
            value, g = step(gpudp.asarray(v))
            history[c - 1] += float(gpudp.to_numpy(value))
            v = np.clip(v - rate * gpudp.to_numpy(g), -umax, umax)
            if c in snapshots:
                snapshots[c][part] = v
        u[part] = v
    return u, snapshots, list(history / len(d0))


# -- the network -----------------------------------------------------------------------------------------

def make_network(cfg):
    """A periodic 1-D CNN ``(B, 2, n) → (B, 1, n)``: dilated circular convolutions (receptive field about
    half the domain), output ``mean + 0.9·tanh(·)`` so that every prediction satisfies the CFL limit."""
    import torch
    from torch import nn

    c = cfg.channels
    layers = [nn.Conv1d(2, c, 5, padding=2, padding_mode="circular"), nn.GELU()]
    for dil in (2, 4, 8):
        layers += [nn.Conv1d(c, c, 5, padding=2 * dil, dilation=dil, padding_mode="circular"), nn.GELU()]
    layers += [nn.Conv1d(c, c, 5, padding=2, padding_mode="circular"), nn.GELU(), nn.Conv1d(c, 1, 1)]

    class VelocityNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*layers)

        def forward(self, d0, target):
            raw = self.body(torch.stack([d0, target], dim=1))
            return cfg.mean_velocity + 0.9 * torch.tanh(raw)

    return VelocityNet()


# -- training: one process, or one of several under DistributedDataParallel --------------------------------

GPU_BACKENDS = ("cupy", "numba-cuda")


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job: ``rank`` of ``world`` processes in all, ``local_rank`` of
    ``local_world`` on its machine."""

    rank: int
    world: int
    local_rank: int
    local_world: int


def torchrun_env(environ=None):
    """The :class:`Distributed` place that ``torchrun`` gave this process, read from ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` (default: ``WORLD_SIZE``) in ``environ`` (default ``os.environ``);
    ``None`` when none of the first three is set: a plain single-process run. Raises ``ValueError`` when only
    some are set or their values do not fit together."""
    environ = os.environ if environ is None else environ
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    present = [k for k in names if k in environ]
    if not present:
        return None
    if len(present) < len(names):
        missing = [k for k in names if k not in environ]
        raise ValueError(f"learn: {', '.join(present)} set but {', '.join(missing)} not; a distributed run "
                         f"needs all of RANK, WORLD_SIZE and LOCAL_RANK (torchrun sets them)")
    values = []
    for k in names + ("LOCAL_WORLD_SIZE",):
        text = environ.get(k, environ["WORLD_SIZE"])
        try:
            values.append(int(text))
        except ValueError:
            raise ValueError(f"learn: environment variable {k}={text!r} is not an integer") from None
    rank, world, local_rank, local_world = values
    if not (0 <= rank < world and 0 <= local_rank < local_world <= world):
        raise ValueError(f"learn: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}, "
                         f"LOCAL_WORLD_SIZE={local_world} do not fit together; expected 0 <= RANK < WORLD_SIZE "
                         f"and 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE")
    return Distributed(rank, world, local_rank, local_world)


def shard(batch, rank, world):
    """The part of a global minibatch of ``batch`` problems that process ``rank`` of ``world`` trains on: the
    contiguous slice ``[rank·b, (rank + 1)·b)`` of the drawn indices, ``b = batch / world``. Raises
    ``ValueError`` unless ``world`` divides ``batch``."""
    if not 0 <= rank < world:
        raise ValueError(f"learn: rank {rank} is not among the {world} processes (expected 0 <= rank < {world})")
    if batch < 1 or batch % world:
        lower = batch // world * world
        fits = f"{lower} or {lower + world}" if lower > 0 else f"{world}"
        raise ValueError(f"learn: the global batch of {batch} problems does not split evenly over {world} "
                         f"processes (WORLD_SIZE={world}); expected a multiple of {world}, e.g. {fits}")
    b = batch // world
    return slice(rank * b, (rank + 1) * b)


def use_local_gpu(local_rank):
    """Make CUDA device ``local_rank`` the current one of PyTorch, CuPy and Numba: one GPU per process. Call it
    before gpudp picks its backend (the backend probe opens a CUDA context on the current device)."""
    import torch

    count = torch.cuda.device_count()
    if not 0 <= local_rank < count:
        raise ValueError(f"learn: LOCAL_RANK={local_rank} but PyTorch sees {count} CUDA device(s) on this machine; "
                         f"expected one GPU per process (torchrun --nproc-per-node {max(count, 1)} or fewer), or the "
                         f"cpu backend (--backend cpu)")
    torch.cuda.set_device(local_rank)
    try:
        import cupy
    except Exception:  # no CuPy, or a broken one: the backend probe says why
        cupy = None
    if cupy is not None:
        cupy.cuda.Device(local_rank).use()
    try:
        from numba import cuda
    except Exception:
        return
    if cuda.is_available():
        try:
            cuda.select_device(local_rank)
        except RuntimeError as exc:  # Numba already holds a context on another device
            if cuda.get_current_device().id != local_rank:
                raise gpudp.BackendError(f"learn: Numba already uses CUDA device {cuda.get_current_device().id}, "
                                         f"not this process's device {local_rank} ({exc}); select the device "
                                         f"before any CUDA work") from None


def training_device(local_rank=None):
    """The torch device the network trains on: the CPU on gpudp's ``cpu`` backend; on a GPU backend CUDA
    device ``local_rank`` (made current with :func:`use_local_gpu`), or PyTorch's current one when
    ``local_rank`` is None."""
    import torch

    name = gpudp.get_backend().name
    if name not in GPU_BACKENDS:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise gpudp.BackendError(f"learn: gpudp's backend {name!r} computes on the GPU but PyTorch "
                                 f"{torch.__version__} sees no CUDA device; install a CUDA build of PyTorch, "
                                 f"or select the cpu backend (--backend cpu)")
    if local_rank is None:
        return torch.device("cuda", torch.cuda.current_device())
    use_local_gpu(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(env):
    """Join the ``torchrun`` job's process group (``init_method="env://"``: ``MASTER_ADDR``, ``MASTER_PORT``):
    backend ``nccl`` with GPU ``env.local_rank`` when gpudp's active backend is a GPU one, else ``gloo``.
    Returns ``(device, joined)``: the torch device to train on, and whether this call created the group
    (False when it already existed; then its rank and size must match ``env``)."""
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("learn: this PyTorch build has no torch.distributed; it is needed to train under "
                           "torchrun")
    device = training_device(env.local_rank)
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (env.rank, env.world):
            raise RuntimeError(f"learn: the existing process group has rank {dist.get_rank()} of "
                               f"{dist.get_world_size()}, but the environment says RANK={env.rank}, "
                               f"WORLD_SIZE={env.world}")
        return device, False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=env.rank, world_size=env.world)
    return device, True


@dataclasses.dataclass
class Trainer:
    """A training run's state (:func:`make_trainer`), advanced by :func:`train_steps`."""

    cfg: Config
    net: object         # the network
    model: object       # what runs the forward pass: DistributedDataParallel(net), or net in a single process
    opt: object         # Adam
    sched: object       # one-cycle learning rate over cfg.train_steps steps
    loss: object        # the summed rollout l2_loss, a torch function through gpudp.torch.wrap
    gen: object         # the minibatch draws: the same stream in every process
    rank: int = 0
    world: int = 1
    step: int = 0       # steps taken


def make_trainer(cfg, grid, device=None):
    """The network (initialised from ``cfg.seed``), its optimiser and the minibatch stream, on ``device``
    (default: the CPU).

    When a ``torch.distributed`` process group is initialised, the network is wrapped in
    ``DistributedDataParallel`` and this process trains on its :func:`shard` of every global minibatch of
    ``cfg.batch`` problems (``ValueError`` unless the group's size divides it)."""
    import torch
    import torch.distributed as dist
    from gpudp.torch import wrap

    grouped = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if grouped else (0, 1)
    shard(cfg.batch, rank, world)
    torch.manual_seed(cfg.seed)
    net = make_network(cfg).to(getattr(torch, cfg.dtype))
    if device is not None:
        net = net.to(device)
    model = net
    if grouped:
        from torch.nn.parallel import DistributedDataParallel
        cuda = device is not None and device.type == "cuda"
        model = DistributedDataParallel(net, device_ids=[device] if cuda else None)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.train_steps,
                                                pct_start=0.1)

    def rollout_loss(d0, u, target):  # l2_loss summed over the minibatch, one batched rollout
        return gpudp.l2_loss(gpudp.advect_upwind(d0, u, cfg.dt, grid, steps=cfg.steps), target)

    return Trainer(cfg, net, model, opt, sched, wrap(rollout_loss), np.random.default_rng(cfg.seed + 1),
                   rank, world)


def train_steps(trainer, data, steps):
    """Take ``steps`` training steps on ``data = (d0, target)``, torch tensors of all training problems on the
    training device. Returns each step's loss: the mean ``l2_loss`` per problem of the global minibatch.

    Every step draws a global minibatch of ``cfg.batch`` problems (without replacement) from the trainer's
    stream; each process takes its :func:`shard`, rolls it out in one batched solver call and divides the
    summed loss by its shard's size. ``DistributedDataParallel`` averages the gradients over the processes,
    which makes them the gradient of the mean over the global minibatch: the single-process gradient, up to
    rounding. The reported loss is averaged over the processes the same way."""
    import torch

    t, cfg = trainer, trainer.cfg
    d0_all, tgt_all = data
    part = shard(cfg.batch, t.rank, t.world)
    losses = []
    for _ in range(steps):
        idx = torch.from_numpy(t.gen.choice(len(d0_all), cfg.batch, replace=False))[part]
        if d0_all.device.type != "cpu":
            idx = idx.to(d0_all.device)
        d0, tgt = d0_all[idx], tgt_all[idx]
        u = t.model(d0, tgt)
        loss = t.loss(d0, u, tgt) / len(idx)  # mean per-problem l2_loss of this process's part
        t.opt.zero_grad(set_to_none=True)
        loss.backward()
        t.opt.step()
        t.sched.step()
        t.step += 1
        value = loss.detach()
        if t.world > 1:
            import torch.distributed as dist
            value = value.clone()
            dist.all_reduce(value)
            value = value / t.world
        losses.append(value.item())
    return losses


def train(cfg, grid, train_set, test_set, quiet=False, device=None):
    """Train the network through gpudp; returns ``(net, history, (seconds, CPU seconds) per step)``.

    Under ``torch.distributed`` (see :func:`make_trainer`) every process trains; only rank 0 evaluates on the
    held-out problems and draws the progress bar, the others' histories hold the training losses only."""
    import torch

    trainer = make_trainer(cfg, grid, device)
    report = trainer.rank == 0

    def tensors(arrays):
        ts = [torch.from_numpy(a) for a in arrays]
        return ts if device is None else [t.to(device) for t in ts]

    d0_all, _, tgt_all = tensors(train_set)
    d0_test, _, tgt_test = tensors(test_set)
    history = {"step": [], "train": [], "eval_step": [], "test": []}
    t_train = cpu_train = 0.0
    with Progress(cfg.train_steps, "learn: training", quiet=quiet or not report) as bar:
        for it in range(1, cfg.train_steps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            (loss,) = train_steps(trainer, (d0_all, tgt_all), 1)
            t_train += time.perf_counter() - t0
            cpu_train += time.process_time() - c0
            history["step"].append(it)
            history["train"].append(loss)
            if report and (it % cfg.eval_every == 0 or it == cfg.train_steps):
                with torch.no_grad():
                    u_test = trainer.net(d0_test, tgt_test).cpu().numpy()
                test = float(rollout_losses(cfg, grid, test_set[0], u_test, test_set[2]).mean())
                history["eval_step"].append(it)
                history["test"].append(test)
            bar.update(loss=history["train"][-1])
    return trainer.net, history, (t_train / cfg.train_steps, cpu_train / cfg.train_steps)


# -- the run ---------------------------------------------------------------------------------------------

def run(out_dir, quiet=False, config=None):
    """Train, evaluate on held-out problems, print the table, write ``learn_loss.png`` and
    ``learn_problems.png`` into ``out_dir``; returns the key numbers.

    Under ``torchrun`` (``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set) each process joins the job
    (:func:`init_distributed`), generates the same problems, and trains its shard of every global minibatch of
    ``config.batch`` problems under ``DistributedDataParallel`` (:func:`train_steps`). Rank 0 alone evaluates,
    prints and writes the figures, and returns the key numbers; the other ranks return None. Each process
    limits PyTorch's and Numba's threads to its share of the machine's cores, ``os.cpu_count() //
    LOCAL_WORLD_SIZE``."""
    try:
        import torch
    except ImportError as exc:
        raise SystemExit(f"the learn demo trains a PyTorch network: install PyTorch first (pip install "
                         f"'gpudp[torch]'; {exc})") from None

    cfg = config or Config()
    env = torchrun_env()
    if env is not None:
        shard(cfg.batch, env.rank, env.world)  # a bad batch fails here, in every process, before joining
    out_dir = pathlib.Path(out_dir)
    if env is None or env.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cores = max(1, (os.cpu_count() or 1) // (env.local_world if env else 1))
    numba_threads = None
    if env is not None:  # the processes on one machine share its cores
        import numba
        numba_threads = numba.get_num_threads()
        # first: with Numba's OpenMP threading layer, its first set_num_threads starts its thread pool, which
        # resets the OpenMP thread count that PyTorch's own set_num_threads sets
        numba.set_num_threads(max(1, min(cores, numba.config.NUMBA_NUM_THREADS)))
    threads = torch.get_num_threads()
    # The network's tensors are small (a minibatch of 64 fields of 128 cells): a second intra-op thread gains
    # little there, and PyTorch's spin-waiting OpenMP threads compete with Numba's threads and with anything
    # else running on a 2-core machine (a step ran many times slower with 2 threads on a loaded machine).
    torch.set_num_threads(max(1, min(cfg.torch_threads, cores)))
    joined = False
    try:
        if env is None:
            device = training_device()
        else:
            device, joined = init_distributed(env)
        return _run(cfg, out_dir, quiet, t_start, device)
    finally:
        if joined:
            import torch.distributed as dist
            dist.destroy_process_group()
        if numba_threads is not None:
            import numba
            numba.set_num_threads(numba_threads)
        torch.set_num_threads(threads)


def _run(cfg, out_dir, quiet, t_start, device):
    import numba
    import torch
    import torch.distributed as dist

    grouped = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if grouped else (0, 1)
    grid = gpudp.Grid(cfg.n, spacing=1.0 / cfg.n)
    rng = np.random.default_rng(cfg.seed)  # every process generates the same problems
    train_set = make_problems(cfg, cfg.n_train, rng, grid)
    test_set = make_problems(cfg, cfg.n_test, rng, grid)
    d0_test, u_true_test, tgt_test = test_set

    net, history, (sec_per_step, cpu_per_step) = train(cfg, grid, train_set, test_set, quiet=quiet, device=device)
    if rank != 0:
        return None
    with torch.no_grad():
        u_net = net(torch.from_numpy(d0_test).to(device), torch.from_numpy(tgt_test).to(device)).cpu().numpy()
    loss_net = rollout_losses(cfg, grid, d0_test, u_net, tgt_test)
    u_mean = np.full_like(u_true_test, cfg.mean_velocity)
    loss_mean = rollout_losses(cfg, grid, d0_test, u_mean, tgt_test)

    # per-problem gradient descent: the step size is chosen on training problems, then it runs on the test
    # problems, from u = mean and from the network's prediction; budgets include the network's training
    # budget: the solver calls its training spent per training problem
    per_problem = max(1, round(cfg.train_steps * cfg.batch / cfg.n_train))
    budgets = tuple(sorted(set(cfg.gd_budgets) | {per_problem}))
    tune = slice(0, min(256, cfg.n_train))
    tune_calls = min(budgets[-1], 30)
    best_rate = min(cfg.gd_rates, key=lambda r: _finite_mean(rollout_losses(
        cfg, grid, train_set[0][tune], gradient_descent(cfg, grid, train_set[0][tune], train_set[2][tune],
                                                        tune_calls, r)[0], train_set[2][tune])))
    t0 = time.perf_counter()
    _, snaps, gd_history = gradient_descent(cfg, grid, d0_test, tgt_test, budgets[-1], best_rate, record=budgets)
    gd_seconds = time.perf_counter() - t0
    loss_gd = {c: rollout_losses(cfg, grid, d0_test, snaps[c], tgt_test) for c in budgets}
    _, snaps_net, _ = gradient_descent(cfg, grid, d0_test, tgt_test, budgets[-1], best_rate, u0=u_net,
                                       record=budgets)
    loss_gd_net = {c: rollout_losses(cfg, grid, d0_test, snaps_net[c], tgt_test) for c in budgets}
    # solver calls gradient descent from u = mean needs to reach the network's loss
    after = gd_history[1:] + [float(loss_gd[budgets[-1]].mean())]
    match = next((c for c, v in enumerate(after, start=1) if v <= loss_net.mean()), None)

    total = time.perf_counter() - t_start
    res = {
        "test_loss_network": float(loss_net.mean()),
        "test_loss_mean_guess": float(loss_mean.mean()),
        "test_loss_gd": {c: float(v.mean()) for c, v in loss_gd.items()},
        "test_loss_gd_from_network": {c: float(v.mean()) for c, v in loss_gd_net.items()},
        "gd_calls_to_match_network": match,
        "train_calls_per_problem": per_problem,
        "gd_step_size": best_rate,
        "improvement_over_mean": float(loss_mean.mean() / loss_net.mean()),
        "ms_per_train_step": 1e3 * sec_per_step,
        "cpu_ms_per_train_step": 1e3 * cpu_per_step,  # process CPU time: robust against other load
        "train_steps": cfg.train_steps,
        "batch": cfg.batch,
        "train_problems": cfg.n_train,
        "test_problems": cfg.n_test,
        "train_loss_first": float(np.mean(history["train"][:10])),
        "train_loss_last": float(np.mean(history["train"][-10:])),
        "gd_ms_per_call": 1e3 * gd_seconds / budgets[-1],
        "total_seconds": total,
        "backend": gpudp.current_backend_name(),
        "machine": gpudp.available_backends()[gpudp.current_backend_name()].device,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "processes": world,
    }
    _print_table(cfg, res)
    res["figures"] = _figures(cfg, grid, out_dir, history, res, test_set, u_net, snaps)
    res["total_seconds"] = time.perf_counter() - t_start
    return res


def _finite_mean(x):
    m = float(np.mean(x))
    return m if math.isfinite(m) else float("inf")


def _print_table(cfg, res):
    print(f"\nlearn: {res['train_problems']} training problems, {res['train_steps']} steps of batch "
          f"{res['batch']} ({1e-3 * res['ms_per_train_step'] * res['train_steps']:.1f} s, "
          f"{res['ms_per_train_step']:.1f} ms/step, CPU time {res['cpu_ms_per_train_step']:.1f} ms/step, "
          f"{res['train_calls_per_problem']} solver calls per "
          f"training problem); held-out: {res['test_problems']} problems")
    if res["processes"] > 1:
        print(f"  trained under DistributedDataParallel on {res['processes']} processes, "
              f"{res['batch'] // res['processes']} problems of each minibatch per process ({res['numba_threads']} "
              f"Numba and {res['torch_threads']} PyTorch thread(s) each)")
    print(f"  {'u on held-out problems':<46} {'solver calls':>12} {'mean l2_loss':>13} {'vs u = mean':>11}")
    base = res["test_loss_mean_guess"]
    rows = [("initial guess u = mean", 0, base), ("network prediction", 0, res["test_loss_network"])]
    rate = res["gd_step_size"]
    rows += [(f"gradient descent (step {rate:g}) from u = mean", c, v) for c, v in res["test_loss_gd"].items()]
    rows += [(f"gradient descent (step {rate:g}) from the network", c, v)
             for c, v in res["test_loss_gd_from_network"].items()]
    for name, calls, v in rows:
        print(f"  {name:<46} {calls:>12} {v:13.4e} {base / v:10.1f}x")
    match = res["gd_calls_to_match_network"]
    if match is None:
        match = f"more than {max(res['test_loss_gd'])}"
    print(f"  gradient descent from u = mean reaches the network's loss after {match} solver calls")
    print(f"  (one solver call = one rollout of T={cfg.steps} steps and its adjoint, batched: "
          f"{res['gd_ms_per_call']:.1f} ms for {res['test_problems']} problems; total {res['total_seconds']:.1f} s)")


def _figures(cfg, grid, out_dir, history, res, test_set, u_net, snaps):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = np.asarray(history["step"])
    train = np.asarray(history["train"])
    w = max(1, len(train) // 50)
    smooth = np.convolve(train, np.ones(w) / w, mode="valid")
    ax.semilogy(steps, train, color="C0", alpha=0.25, lw=0.8)
    ax.semilogy(steps[w - 1:], smooth, color="C0", label="training loss (minibatch mean)")
    ax.semilogy(history["eval_step"], history["test"], "o-", color="C1", ms=3, label="held-out loss (network)")
    ax.axhline(res["test_loss_mean_guess"], color="k", ls="--", lw=1, label="held-out: u = mean")
    for i, (c, v) in enumerate(res["test_loss_gd"].items()):
        ax.axhline(v, color=f"C{i + 2}", ls=":", lw=1,
                   label=f"held-out: gradient descent from u = mean, {c} call{'s' if c > 1 else ''}")
    ax.set_xlabel("training step")
    ax.set_ylabel("l2_loss per problem")
    ax.set_title("Training a CNN through gpudp's advection rollout")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths["loss_curve"] = str(out_dir / "learn_loss.png")
    fig.savefig(paths["loss_curve"], dpi=120)
    plt.close(fig)

    d0, u_true, tgt = test_set
    x = (np.arange(cfg.n) + 0.5) / cfg.n
    kcalls = res["train_calls_per_problem"]
    gdk = snaps[kcalls]
    show = range(min(4, len(d0)))
    fig, axes = plt.subplots(2, len(show), figsize=(3.6 * len(show), 5.6), sharex=True, squeeze=False)
    for j, b in enumerate(show):
        d_net = gpudp.to_numpy(gpudp.advect_upwind(gpudp.asarray(d0[b:b + 1]), gpudp.asarray(u_net[b:b + 1]),
                                                   cfg.dt, grid, steps=cfg.steps))[0]
        d_mean = gpudp.to_numpy(gpudp.advect_upwind(gpudp.asarray(d0[b]), gpudp.asarray(
            np.full_like(u_true[b], cfg.mean_velocity)), cfg.dt, grid, steps=cfg.steps))
        a = axes[0, j]
        a.plot(x, d0[b], color="0.6", label="d0")
        a.plot(x, tgt[b], "k", lw=2.5, alpha=0.4, label="target")
        a.plot(x, d_net, "C1", label="rollout, network u")
        a.plot(x, d_mean, "C0--", lw=1, label="rollout, u = mean")
        a.set_title(f"test problem {b}", fontsize=9)
        a = axes[1, j]
        mask = np.maximum(d0[b], tgt[b]) > 0.05
        a.fill_between(x, u_true[b, 0].min() - 0.3, u_true[b, 0].max() + 0.3, where=mask, color="0.92",
                       label="where density is")
        a.plot(x, u_true[b, 0], "k", lw=2.5, alpha=0.4, label="u_true (never shown)")
        a.plot(x, u_net[b, 0], "C1", label="network u")
        a.plot(x, gdk[b, 0], "C2:", label=f"GD from u = mean, {kcalls} calls")
        a.axhline(cfg.mean_velocity, color="C0", ls="--", lw=1, label="u = mean")
        a.set_xlabel("x")
    axes[0, 0].set_ylabel("density")
    axes[1, 0].set_ylabel("velocity")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle("Held-out problems: the network sees (d0, target) and predicts u", fontsize=10)
    fig.tight_layout()
    paths["problems"] = str(out_dir / "learn_problems.png")
    fig.savefig(paths["problems"], dpi=120)
    plt.close(fig)
    return paths
