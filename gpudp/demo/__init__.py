"""The demos behind ``python -m gpudp demo``: each module ``gpudp.demo.<name>`` exposes
``run(out_dir: pathlib.Path, quiet: bool = False) -> dict`` that prints its table, writes its PNG figures
into ``out_dir`` and returns its key numbers."""
from __future__ import annotations

import importlib
import pathlib

DEMOS = ("advection", "pressure", "smoke", "learn")
DEFAULT = ("advection", "pressure", "smoke")


def run_demos(which=(), out=None, backend=None, quiet=False, tol=None):
    """Run the named demos (default: advection, pressure and smoke) on ``backend`` (default: the active
    one). ``tol``: the Poisson tolerance of the smoke demo (default its own, 1e-6)."""
    import gpudp
    which = tuple(which) or DEFAULT
    for name in which:
        if name not in DEMOS:
            raise SystemExit(f"unknown demo {name!r}; choose from {', '.join(DEMOS)}")
    out_dir = pathlib.Path(out or "gpudp-output").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if backend:
        gpudp.set_backend(backend)
    info = gpudp.available_backends()[gpudp.current_backend_name()]
    print(f"gpudp demo on backend {info.name!r}: {info.device}")
    results = {}
    for name in which:
        module = importlib.import_module(f"gpudp.demo.{name}")
        options = {"tol": tol} if (name == "smoke" and tol is not None) else {}
        results[name] = module.run(out_dir, quiet=quiet, **options)
    print(f"figures written to {out_dir}")
    return 0
