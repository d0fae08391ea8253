"""Runs the cases on the chosen backends and baselines and collects one record per measurement."""
from __future__ import annotations

import gc
import sys
import time
import traceback

from . import cases as C
from .harness import SMOKE_BUDGET, Budget, copy_bandwidth, cpu_device, gpu_device, time_cuda, time_host

GPU_BACKENDS = ("cupy", "numba-cuda")
CASE_BUDGET = Budget(warmup=2, repeats=10, min_time=0.3, max_repeats=200, max_time=3.0)
#: Solves take long: a few calls; a baseline solve runs once after its warm-up (JAX compiles there).
SOLVE_BUDGET = Budget(warmup=1, repeats=3, min_time=0.0, max_repeats=5, max_time=6.0)
BASELINE_SOLVE_BUDGET = Budget(warmup=0, repeats=1, min_time=0.0, max_repeats=1, max_time=0.0)
JAX_SOLVE_BUDGET = Budget(warmup=1, repeats=1, min_time=0.0, max_repeats=1, max_time=0.0)
SMOKE_PROBE_BYTES = 16 << 20


def kind_of(backend_name):
    return "gpu" if backend_name in GPU_BACKENDS else "cpu"


def choose_backends(names):
    """The backends to run: ``names`` (checked), or every available one (never the CUDA simulator)."""
    import gpudp
    infos = gpudp.available_backends()
    if names:
        for n in names:
            if n not in infos:
                raise SystemExit(f"unknown backend {n!r}; choose from {', '.join(infos)}")
            if not infos[n].available:
                raise SystemExit(f"backend {n!r} is not available: {infos[n].reason}")
        return list(names)
    return [n for n, i in infos.items() if i.available and "simulator" not in i.device.lower()]


def _memory_budget(kind):
    if kind == "cpu":
        return 1536 << 20
    import cupy
    free, _ = cupy.cuda.runtime.memGetInfo()
    return min(free // 4, 8 << 30)


def _free_memory(kind):
    gc.collect()
    if kind == "gpu":
        import cupy
        cupy.get_default_memory_pool().free_all_blocks()


def _log(msg, quiet):
    if not quiet:
        print(msg, flush=True)


def measure(case, cfg, impl_name, role, factory, budget, env, log):
    """Build one implementation and time it; a record dict (``status`` says what went wrong, if anything)."""
    rec = {"case": case.name, "title": case.title, "config": cfg.label, "shape": list(cfg.shape),
           "dtype": cfg.dtype, "impl": impl_name, "role": role, "device_kind": env.kind, "status": "ok"}
    t0 = time.perf_counter()
    try:
        impl = factory()
        if impl.warmup_fn is not None:
            impl.warmup_fn()
        if impl.sync:
            impl.sync()
        timing = (time_cuda(impl.fn, budget) if impl.clock == "cuda" else time_host(impl.fn, budget, impl.sync))
    except C.Unavailable as exc:
        rec["status"] = f"not available: {exc}"
        log(f"  {impl_name:<16} {cfg.label:<40} not available: {exc}")
        return rec
    except Exception as exc:
        rec["status"] = f"error: {type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc()
        log(f"  {impl_name:<16} {cfg.label:<40} ERROR {type(exc).__name__}: {exc}")
        return rec
    its = impl.iterations() if callable(impl.iterations) else impl.iterations
    # a solve whose iteration count is unknown (JAX's cg does not report it) has no byte count
    nbytes = None if case.solve and not its else case.bytes(cfg, its)
    rec.update(timing=timing.as_dict(), median_s=timing.median, clock=impl.clock, iterations=its,
               bytes=nbytes, info=dict(impl.info), wall_s=time.perf_counter() - t0)
    rec["gbps"] = nbytes / timing.median / 1e9 if nbytes else None
    if its:
        rec["time_per_iteration_s"] = timing.median / its
    extra = f"  {its} it, {timing.median / its * 1e3:.3f} ms/it" if its else ""
    rate = f"{rec['gbps']:7.2f} GB/s" if rec["gbps"] is not None else " " * 12
    log(f"  {impl_name:<16} {cfg.label:<40} {timing.median * 1e3:10.3f} ms  ±{timing.spread * 100:4.1f}%  "
        f"{rate}{extra}")
    if rec["info"].get("notes"):  # e.g. a baseline's answer checked against gpudp's
        log(f"  {'':<16} {rec['info']['notes']}")
    return rec


def run(backend_names=None, case_names=None, sizes="default", smoke=False, with_baselines=True, quiet=False):
    """Run the suite. Returns ``(records, devices, probes)``: the measurements, a description of each device
    kind used, and the bandwidth probes (start and end of each kind's run)."""
    import gpudp

    def log(msg):
        _log(msg, quiet)

    backends = choose_backends(backend_names)
    selected = C.select(case_names)
    if smoke:
        sizes = "smoke"
    records, devices, probes = [], {}, {}
    kinds = []
    for b in backends:
        if kind_of(b) not in kinds:
            kinds.append(kind_of(b))
    for kind in kinds:
        device = cpu_device() if kind == "cpu" else gpu_device()
        devices[kind] = device
        env = C.Env(kind, device, _memory_budget(kind), smoke=smoke)
        names = [b for b in backends if kind_of(b) == kind]
        log(f"== {device['name']}: backends {', '.join(names)}")
        probe_bytes = SMOKE_PROBE_BYTES if smoke else None
        probes[kind] = {"start": copy_bandwidth(kind, probe_bytes)}
        log(f"   copy bandwidth (start): {probes[kind]['start']['gbps']:.1f} GB/s ({probes[kind]['start']['method']})")
        for case in selected:
            missing = case.available()
            for cfg in case.configs(kind, sizes):
                log(f"-- {case.name}: {cfg.label}")
                budget = SMOKE_BUDGET if smoke else (SOLVE_BUDGET if case.solve else CASE_BUDGET)
                if not smoke and cfg.params.get("single_run"):  # a solve of thousands of iterations: timed once
                    budget = BASELINE_SOLVE_BUDGET
                for bname in names:
                    impl_name = f"gpudp-{bname}"
                    if missing:
                        records.append({"case": case.name, "title": case.title, "config": cfg.label,
                                        "shape": list(cfg.shape), "dtype": cfg.dtype, "impl": impl_name,
                                        "role": "gpudp", "device_kind": kind,
                                        "status": f"not available: {missing}"})
                        log(f"  {impl_name:<16} not available: {missing}")
                        continue
                    with gpudp.use_backend(bname) as backend:
                        rec = measure(case, cfg, impl_name, "gpudp", lambda: case.gpudp_impl(cfg, backend, env),
                                      budget, env, log)
                        if rec["status"] == "ok":
                            rec["backend_device"] = backend.device
                            try:
                                rec["diagnostics"] = case.diagnostics(cfg, backend, env, _timer(smoke, backend))
                            except Exception as exc:
                                rec["diagnostics"] = {"error": f"{type(exc).__name__}: {exc}"}
                    records.append(rec)
                    _free_memory(kind)
                if with_baselines:
                    for bl_name, factory in case.baselines(cfg, env).items():
                        bl_budget = budget
                        if case.solve and not smoke:
                            bl_budget = JAX_SOLVE_BUDGET if bl_name == "jax" else BASELINE_SOLVE_BUDGET
                        records.append(measure(case, cfg, bl_name, "baseline", factory, bl_budget, env, log))
                        _free_memory(kind)
                case.release()
                _free_memory(kind)
        probes[kind]["end"] = copy_bandwidth(kind, probe_bytes)
        if kind == "cpu":  # known once a parallel region has run
            device["numba_threading_layer"] = cpu_device()["numba_threading_layer"]
        log(f"   copy bandwidth (end): {probes[kind]['end']['gbps']:.1f} GB/s")
        # the larger of the two probes is the reference: percentages err on the low side
        probes[kind]["gbps"] = max(probes[kind]["start"]["gbps"], probes[kind]["end"]["gbps"])
    return records, devices, probes


def _timer(smoke, backend):
    budget = SMOKE_BUDGET if smoke else Budget(warmup=1, repeats=5, min_time=0.1, max_repeats=50, max_time=2.0)
    sync = backend.synchronize if backend.name != "cpu" else None

    def timer(fn):
        return time_cuda(fn, budget) if backend.name != "cpu" else time_host(fn, budget, sync)

    return timer


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run the suite with: python -m benchmarks")
