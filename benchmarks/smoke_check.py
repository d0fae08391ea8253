"""The smoke demo on several backends, checked against each other and against JAX.

    python -m benchmarks.smoke_check [--backends cupy,numba-cuda,cpu] [--iterations 3] [--tol 1e-10]

Runs the demo (``gpudp.demo.smoke.run``: the same problem, optimisation loop, table and figures as
``python -m gpudp demo smoke``) for a few gradient-descent iterations on each backend, then the same
iterations with the independent JAX implementation (:mod:`benchmarks.jax_smoke`, on JAX's default device), and
compares the loss histories: with a tight solver tolerance they must agree to ``--rtol`` (the issue asks 1e-6
relative on every backend). Prints each backend's time per iteration. Exit status 1 when a backend fails or a
history differs.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.smoke_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="", help="comma-separated gpudp backends (default: every available "
                                                  "one, not the CUDA simulator)")
    p.add_argument("--iterations", type=int, default=3, help="gradient-descent iterations per backend")
    p.add_argument("--tol", type=float, default=1e-10, help="Poisson tolerance (default 1e-10)")
    p.add_argument("--rtol", type=float, default=1e-6, help="allowed relative difference of the loss histories")
    p.add_argument("--no-jax", action="store_true", help="do not run the JAX implementation")
    p.add_argument("--out", default=None, help="folder for the demo's figures (default: a temporary folder)")
    return p.parse_args(argv)


def relative_difference(a, b):
    """``max_k |a_k − b_k| / |b_k|`` of two loss histories of equal length."""
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import gpudp
    from gpudp.demo import smoke

    from .suite import choose_backends
    names = choose_backends([b.strip() for b in args.backends.split(",") if b.strip()] or None)
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="gpudp-smoke-check-"))
    histories, times, status = {}, {}, 0
    for name in names:
        print(f"==== smoke demo on {name}: {args.iterations} iterations, tol {args.tol:g} (its goal line below is "
              f"that of the full demo's 100 iterations)", flush=True)
        try:
            with gpudp.use_backend(name):
                res = smoke.run(out / name, quiet=True, tol=args.tol, iterations=args.iterations)
        except Exception as exc:  # report, go on with the other backends
            print(f"smoke demo on {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
            status = 1
            continue
        histories[name] = list(res["losses"])
        times[name] = res["time_per_iteration_s"]
    if not args.no_jax:
        from . import jax_smoke
        mods, reason = jax_smoke.jax_module()
        if mods is None:
            print(f"JAX: not run ({reason})")
        else:
            print(f"==== JAX ({mods[0].devices()[0]}): {args.iterations} iterations, tol {args.tol:g}", flush=True)
            t0 = time.perf_counter()
            losses, per_it = jax_smoke.optimise(updates=args.iterations, tol=args.tol, log=lambda s: None)
            histories["jax"] = losses
            times["jax"] = per_it
            print(f"JAX done in {time.perf_counter() - t0:.1f} s")
    print(f"\n{'implementation':<14} {'time/iteration':>15}  loss history")
    for name, losses in histories.items():
        print(f"{name:<14} {times[name] * 1e3:12.1f} ms  " + ", ".join(f"{v:.10e}" for v in losses))
    if histories:
        ref_name = next(iter(histories))
        ref = histories[ref_name]
        for name, losses in histories.items():
            if name == ref_name:
                continue
            if len(losses) != len(ref):
                print(f"{name} vs {ref_name}: histories of different lengths ({len(losses)}, {len(ref)})")
                status = 1
                continue
            diff = relative_difference(losses, ref)
            ok = diff <= args.rtol
            status |= not ok
            print(f"{name} vs {ref_name}: max relative difference {diff:.2e} "
                  f"({'ok' if ok else 'FAILED'}: limit {args.rtol:g})")
    print(f"figures under {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
