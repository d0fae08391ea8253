"""The demos behind ``python -m gpudp demo``: each module ``gpudp.demo.<name>`` exposes
``run(out_dir: pathlib.Path, quiet: bool = False) -> dict`` that prints its table, writes its PNG figures
into ``out_dir`` and returns its key numbers."""
from __future__ import annotations

import importlib
import pathlib

DEMOS = ("advection", "pressure", "smoke", "learn", "many")
DEFAULT = ("advection", "pressure", "smoke")


def run_demos(which=(), out=None, backend=None, quiet=False, tol=None, steps=None, checkpoints=None,
              iterations=None, memory_budget=None):
    """Run the named demos (default: advection, pressure and smoke) on ``backend`` (default: the active
    one). The smoke demo's options (``None``: its own default): ``tol`` the Poisson tolerance (1e-6),
    ``steps`` the rollout's length (100), ``checkpoints`` the states a checkpointed rollout holds (none: every
    step recorded), ``iterations`` (100), ``memory_budget`` MiB (only reported)."""
    import gpudp
    which = tuple(which) or DEFAULT
    for name in which:
        if name not in DEMOS:
            raise SystemExit(f"unknown demo {name!r}; choose from {', '.join(DEMOS)}")
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
    print(f"gpudp demo on backend {info.name!r}: {info.device}")
    results = {}
    for name in which:
        module = importlib.import_module(f"gpudp.demo.{name}")
        options = smoke_options if name == "smoke" else {}
        results[name] = module.run(out_dir, quiet=quiet, **options)
    print(f"figures written to {out_dir}")
    return 0
