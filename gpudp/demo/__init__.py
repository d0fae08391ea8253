"""The demos behind ``python -m gpudp demo``: each module ``gpudp.demo.<name>`` exposes
``run(out_dir: pathlib.Path, quiet: bool = False) -> dict`` that prints its table, writes its PNG figures
into ``out_dir`` and returns its key numbers."""
from __future__ import annotations

import importlib
import pathlib

DEMOS = ("advection", "pressure", "smoke", "learn", "many")
DEFAULT = ("advection", "pressure", "smoke")


def run_demos(which=(), out=None, backend=None, quiet=False, tol=None, steps=None, checkpoints=None,
              iterations=None, memory_budget=None, train_steps=None, batch=None):
    """Run the named demos (default: advection, pressure and smoke) on ``backend`` (default: the active
    one). The smoke demo's options (``None``: its own default): ``tol`` the Poisson tolerance (1e-6),
    ``steps`` the rollout's length (100), ``checkpoints`` the states a checkpointed rollout holds (none: every
    step recorded), ``iterations`` (100), ``memory_budget`` MiB (only reported). The learn demo's:
    ``train_steps`` (1000) and ``batch`` (64, problems per minibatch over all processes).

    Under ``torchrun`` only the learn demo runs (trained under DistributedDataParallel, see
    :func:`gpudp.demo.learn.run`); on a GPU backend each process first selects GPU ``LOCAL_RANK``, and only
    rank 0 prints."""
    import gpudp
    which = tuple(which) or DEFAULT
    for name in which:
        if name not in DEMOS:
            raise SystemExit(f"unknown demo {name!r}; choose from {', '.join(DEMOS)}")
    learn_options = {k: v for k, v in dict(train_steps=train_steps, batch=batch).items() if v is not None}
    if "learn" not in which and learn_options:
        given = ", ".join("--" + k.replace("_", "-") for k in learn_options)
        raise SystemExit(f"{given}: options of the learn demo, which is not among the demos run "
                         f"({', '.join(which)})")
    dist_env = _torchrun_setup(which, backend, batch)
    rollout_options = {k: v for k, v in dict(steps=steps, checkpoints=checkpoints, iterations=iterations,
                                             memory_budget=memory_budget).items() if v is not None}
    if "smoke" not in which and rollout_options:
        given = ", ".join("--" + k.replace("_", "-") for k in rollout_options)
        raise SystemExit(f"{given}: options of the smoke demo, which is not among the demos run "
                         f"({', '.join(which)})")
    smoke_options = dict(rollout_options, **({} if tol is None else {"tol": tol}))
    out_dir = pathlib.Path(out or "gpudp-output").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if backend:
        gpudp.set_backend(backend)
    info = gpudp.available_backends()[gpudp.current_backend_name()]
    report = dist_env is None or dist_env.rank == 0
    if report:
        print(f"gpudp demo on backend {info.name!r}: {info.device}")
    results = {}
    for name in which:
        module = importlib.import_module(f"gpudp.demo.{name}")
        if name == "smoke":
            options = smoke_options
        elif name == "learn" and learn_options:
            import dataclasses
            options = {"config": dataclasses.replace(module.Config(), **learn_options)}
        else:
            options = {}
        results[name] = module.run(out_dir, quiet=quiet, **options)
    if report:
        print(f"figures written to {out_dir}")
    return 0


def _torchrun_setup(which, backend, batch):
    """Under ``torchrun``: check that only the learn demo runs and that its batch splits over the processes,
    and on a GPU backend select GPU ``LOCAL_RANK`` before gpudp probes its backends. Returns the process's
    :class:`~gpudp.demo.learn.Distributed` place, or None outside torchrun."""
    import os
    from . import learn
    try:
        env = learn.torchrun_env()
        if env is None:
            return None
        if which != ("learn",):
            raise SystemExit(f"under torchrun (WORLD_SIZE={env.world}) only the learn demo runs distributed; "
                             f"got the demos {', '.join(which)}: run `-m gpudp demo learn`")
        learn.shard(learn.Config().batch if batch is None else batch, env.rank, env.world)
        requested = backend or os.environ.get("GPUDP_BACKEND") or "auto"
        if requested != "cpu":
            try:
                import torch
            except ImportError:
                return env  # the learn demo says how to install it
            if torch.cuda.is_available():
                learn.use_local_gpu(env.local_rank)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return env
