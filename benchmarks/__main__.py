"""``python -m benchmarks``: run the benchmark suite and write its table, JSON, Markdown and PNG."""
from __future__ import annotations

import argparse
import pathlib
import shlex
import sys
import tempfile


def parse_args(argv):
    from .cases import CASE_NAMES
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time gpudp's operators against the machine's measured copy bandwidth and against "
                    "NumPy/CuPy/JAX baselines; write results under benchmarks/results/.")
    p.add_argument("--backends", default="", help="comma-separated gpudp backends (cpu, cupy, numba-cuda); "
                                                  "default: every available one")
    p.add_argument("--cases", default="", help=f"comma-separated cases (default all): {', '.join(CASE_NAMES)}")
    p.add_argument("--skip-cases", default="", help="comma-separated cases to leave out of those selected")
    p.add_argument("--sizes", default="default",
                   help="'default' (per device kind: CPU or GPU), 'full' (default, and the Poisson-solver case's "
                        "large CPU sizes), 'small', or grid shapes like 512x512,64x64x64")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and few repeats (for CI); results go to a temporary folder unless --out")
    p.add_argument("--no-baselines", action="store_true", help="time gpudp only")
    p.add_argument("--out", default=None, help="folder for JSON/Markdown/PNG (default: benchmarks/results)")
    p.add_argument("--notes", default=None, help="Markdown file of analysis notes to include in the report")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from . import report, suite
    from .cases import parse_sizes
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        raise SystemExit(str(exc))
    split = lambda s: [v.strip() for v in s.split(",") if v.strip()]  # noqa: E731
    cases = split(args.cases) or None
    try:
        if args.skip_cases:
            from .cases import select
            skip = {c.name for c in select(split(args.skip_cases))}
            cases = [c.name for c in select(cases) if c.name not in skip]
            if not cases:
                raise ValueError(f"--skip-cases {args.skip_cases!r} leaves no case to run")
        records, devices, probes = suite.run(split(args.backends) or None, cases, sizes,
                                             smoke=args.smoke, with_baselines=not args.no_baselines,
                                             quiet=args.quiet)
    except ValueError as exc:
        raise SystemExit(str(exc))
    notes = pathlib.Path(args.notes).read_text() if args.notes else None
    run = report.assemble(records, devices, probes, "python -m benchmarks " + shlex.join(argv), notes)
    print()
    print(report.terminal_table(run["records"]))
    for t in run["targets"]:
        if t["status"] != "not measured":
            print(f"target: {t['text']}: {t['measured']} -> {t['status']}")
    out = args.out or (tempfile.mkdtemp(prefix="gpudp-bench-smoke-") if args.smoke else report.RESULTS_DIR)
    paths = report.write(run, out)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    errors = [r for r in run["records"] if r.get("status", "").startswith("error")]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
