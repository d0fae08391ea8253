"""Command line: ``python -m gpudp info | demo [advection|pressure|smoke|learn|many] | bench``."""
from __future__ import annotations

import argparse
import sys


def _info(args):
    import gpudp
    print(f"gpudp {gpudp.__version__}")
    for name, info in gpudp.available_backends().items():
        if info.available:
            print(f"  {name:<11} available    {info.device}")
        else:
            print(f"  {name:<11} unavailable  {info.reason}")
    try:
        print(f"active backend: {gpudp.current_backend_name()}")
    except gpudp.BackendError as exc:
        print(f"active backend: none ({exc})")
    return 0


def _demo(args):
    from .demo import run_demos
    return run_demos(args.which, out=args.out, backend=args.backend, quiet=args.quiet, tol=args.tol,
                     steps=args.steps, checkpoints=args.checkpoints, iterations=args.iterations,
                     memory_budget=args.memory_budget, train_steps=args.train_steps, batch=args.batch)


def _at_least(minimum):
    """An argparse type: an int ``>= minimum``, else a message naming what was given."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def _mebibytes(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of MiB, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of MiB, got {text}")
    return value


def _bench(args):
    import runpy
    sys.argv = ["benchmarks"] + args.rest
    runpy.run_module("benchmarks", run_name="__main__")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpudp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="list the backends, their devices and why any is unavailable")
    p.set_defaults(func=_info)
    p = sub.add_parser("demo", help="run the demos (default: all)")
    p.add_argument("which", nargs="*", default=[],
                   help="advection, pressure, smoke, learn, many (default: advection pressure smoke)")
    p.add_argument("--out", default=None, help="folder for the figures (default: ./gpudp-output)")
    p.add_argument("--backend", default=None, help="backend to use (default: the active one, normally auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tol", type=float, default=None,
                   help="Poisson tolerance of the smoke demo (default 1e-6; 1e-10 for backend comparisons)")
    g = p.add_argument_group(
        "long rollouts (smoke demo)",
        "e.g. `python -m gpudp demo smoke --steps 1000 --checkpoints 32 --iterations 3 --memory-budget 64`: "
        "recording all 1000 steps would hold about 95 MiB, the checkpointed rollout at most 3.2 MiB, and its "
        "backward pass recomputes 1408 steps (the same gradients); about 2 minutes in all on 2 CPU cores")
    g.add_argument("--steps", type=_at_least(1), default=None, metavar="N",
                   help="steps of the smoke rollout (default 100)")
    g.add_argument("--checkpoints", type=_at_least(1), default=None, metavar="C",
                   help="run the rollout through gpudp.rollout(..., checkpoints=C): at most C states held, the "
                        "rest recomputed in the backward pass; prints the memory figures and recompute counts "
                        "(default: every step recorded)")
    g.add_argument("--iterations", type=_at_least(1), default=None, metavar="K",
                   help="gradient-descent iterations of the smoke demo (default 100)")
    g.add_argument("--memory-budget", type=_mebibytes, default=None, metavar="MiB",
                   help="a memory budget in MiB, only reported: against the peak tape memory and, with "
                        "--checkpoints, against what storing every step would need")
    g = p.add_argument_group(
        "learn demo",
        "under torchrun the learn demo trains under DistributedDataParallel, e.g. `torchrun --standalone "
        "--nproc-per-node 2 -m gpudp demo learn`: each process trains on its share of every minibatch, rank 0 "
        "reports")
    g.add_argument("--train-steps", type=_at_least(1), default=None, metavar="N",
                   help="training steps of the learn demo (default 1000)")
    g.add_argument("--batch", type=_at_least(1), default=None, metavar="B",
                   help="problems per minibatch of the learn demo, in all processes together (default 64; "
                        "under torchrun a multiple of the number of processes)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("bench", help="run the benchmark suite (same as python -m benchmarks)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_bench)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the rest, options included, is for the suite's own parser
        return _bench(argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
