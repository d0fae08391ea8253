"""Timing, input rotation, the bandwidth probe and machine descriptions for the benchmark suite.

Every number the suite reports is a median over repeats taken after warm-up calls, with its spread (the
interquartile range). CPU work and JAX are timed with the host clock (JAX results are blocked on); CUDA work
is timed with CUDA events on the current stream and synchronised before the clock is read.

The bandwidth probe is a large copy on the device, counted as bytes read plus bytes written, measured in
the same run as the cases: the percentages the suite reports are relative to it, never to a datasheet.
"""
from __future__ import annotations

import math
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass

#: Bytes the bandwidth probe copies (source size) on each device kind; far beyond any cache.
PROBE_BYTES = {"cpu": 512 << 20, "gpu": 2 << 30}


@dataclass
class Timing:
    """Seconds per call: median, quartiles, extremes, and how many timed calls they summarise."""

    median: float
    q25: float
    q75: float
    min: float
    max: float
    repeats: int

    @property
    def spread(self):
        """Interquartile range relative to the median."""
        return (self.q75 - self.q25) / self.median if self.median > 0 else float("nan")

    def as_dict(self):
        d = asdict(self)
        d["spread"] = self.spread
        return d


def summarise(samples):
    s = sorted(samples)
    if len(s) >= 4:
        q = statistics.quantiles(s, n=4, method="inclusive")
        q25, q75 = q[0], q[2]
    else:
        q25, q75 = s[0], s[-1]
    return Timing(statistics.median(s), q25, q75, s[0], s[-1], len(s))


@dataclass
class Budget:
    """How long to time one implementation: ``warmup`` untimed calls, then at least ``repeats`` timed calls
    and ``min_time`` seconds, at most ``max_repeats`` calls or ``max_time`` seconds."""

    warmup: int = 2
    repeats: int = 10
    min_time: float = 0.3
    max_repeats: int = 200
    max_time: float = 3.0

    def done(self, n, spent):
        """True when ``n`` timed calls taking ``spent`` seconds in all are enough."""
        if n >= self.max_repeats or (n >= self.repeats and (spent >= self.min_time or spent >= self.max_time)):
            return True
        return spent >= self.max_time and n >= 3


SMOKE_BUDGET = Budget(warmup=1, repeats=3, min_time=0.0, max_repeats=3, max_time=1.0)


def time_host(fn, budget, sync=None):
    """Median time of ``fn()`` by the host clock; ``sync()`` (if given) runs before reading the clock."""
    for _ in range(budget.warmup):
        fn()
        if sync:
            sync()
    samples = []
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        samples.append(time.perf_counter() - t0)
        if budget.done(len(samples), time.perf_counter() - t_start):
            break
    return summarise(samples)


def time_cuda(fn, budget):
    """Median time of ``fn()`` by CUDA events recorded on CuPy's current stream around each call."""
    import cupy
    for _ in range(budget.warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    samples = []
    t_start = time.perf_counter()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    while True:
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, end) * 1e-3)
        if budget.done(len(samples), time.perf_counter() - t_start):
            break
    return summarise(samples)


class Rotation:
    """Cycles through several prepared input sets so that repeated calls do not find their inputs in the
    last-level cache (a working set larger than the cache, as a real pipeline sees)."""

    def __init__(self, sets):
        self.sets = list(sets)
        self.i = -1

    def next(self):
        self.i = (self.i + 1) % len(self.sets)
        return self.sets[self.i]

    def __len__(self):
        return len(self.sets)


def rotation_count(set_bytes, device, budget_bytes):
    """Input sets needed for a working set of at least twice the last-level cache, within ``budget_bytes``."""
    llc = device.get("llc_bytes") or 0
    want = max(1, math.ceil(2 * llc / max(set_bytes, 1)))
    return max(1, min(want, budget_bytes // max(set_bytes, 1), 64))


# -- machine descriptions -----------------------------------------------------------------------------------

def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cpu_model():
    m = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    return m.group(1).strip() if m else (platform.processor() or platform.machine())


def _llc_bytes():
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        size = _read(os.path.join(base, entry, "size")).strip()
        m = re.match(r"(\d+)([KMG]?)", size)
        if m:
            best = max(best, int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)])
    return best


def cpu_device():
    """A dict describing the CPU: model, cores usable by this process, memory, Numba threads, LLC size."""
    import numba
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    model = _cpu_model()
    return {
        "kind": "cpu",
        "name": f"{model}, {cores} cores",
        "model": model,
        "cores": cores,
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer": _threading_layer(),
        "llc_bytes": _llc_bytes(),
        "platform": platform.platform(),
    }


def _threading_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return numba.config.THREADING_LAYER


def gpu_device():
    """A dict describing the current CUDA device as CuPy sees it."""
    import cupy
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = cupy.cuda.runtime.memGetInfo()
    return {
        "kind": "gpu",
        "name": name,
        "model": name,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "multiprocessors": props["multiProcessorCount"],
        "memory_gib": round(total / 2**30, 1),
        "llc_bytes": int(props.get("l2CacheSize", 0)),
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
        "cupy": cupy.__version__,
    }


def slug(text):
    """Lower-case letters, digits and dashes: a file-name-safe form of a device name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# -- bandwidth probe -----------------------------------------------------------------------------------------

_kernels = {}


def _numba_kernels():
    """A parallel copy loop (which LLVM turns into ``memcpy``: streaming stores for large sizes) and a
    three-read, one-write loop with ordinary stores (each written line is read first)."""
    if not _kernels:
        from numba import njit, prange

        @njit(parallel=True)
        def copy(src, dst):
            for i in prange(src.size):
                dst[i] = src[i]

        @njit(parallel=True)
        def three_one(a, b, c, out):
            for i in prange(a.size):
                out[i] = a[i] + b[i] * c[i]

        _kernels.update(copy=copy, three_one=three_one)
    return _kernels


def copy_bandwidth(kind, nbytes=None, budget=None):
    """Measure the device's copy bandwidth: the best median of the copies tried, counting bytes read plus
    bytes written. CPU: a Numba ``prange`` copy on all threads and NumPy's ``copyto`` (both end in ``memcpy``,
    whose streaming stores skip reading the destination); also, as a yardstick only, a three-read,
    one-write loop with ordinary stores (``streaming_ordinary_stores``: the kind of loop the kernels are).
    GPU: CuPy's device-to-device ``memcpy`` and an element-wise copy kernel. Returns a dict with ``gbps`` and
    details."""
    nbytes = nbytes or PROBE_BYTES[kind]
    budget = budget or Budget(warmup=1, repeats=7, min_time=0.3, max_repeats=20, max_time=3.0)
    methods = {}
    if kind == "cpu":
        import numpy as np
        src = np.random.default_rng(0).random(nbytes // 8)
        dst = np.empty_like(src)
        kernels = _numba_kernels()
        methods["numba-prange-copy"] = time_host(lambda: kernels["copy"](src, dst), budget)
        methods["numpy-copyto"] = time_host(lambda: np.copyto(dst, src), budget)
        moved = 2 * src.nbytes
        del src, dst
        # not a reference, a yardstick: what a streaming loop with ordinary stores reaches (4 arrays moved)
        a, b, c, out = (np.random.default_rng(k).random(nbytes // 32) for k in range(4))
        t = time_host(lambda: kernels["three_one"](a, b, c, out), budget)
        streaming = {"gbps": 4 * a.nbytes / t.median / 1e9, "kernel": "out = a + b * c (3 reads, 1 write)",
                     "timing": t.as_dict()}
        del a, b, c, out
    else:
        import cupy
        src = cupy.random.default_rng(0).random(nbytes // 8)
        dst = cupy.empty_like(src)
        methods["cuda-memcpy-d2d"] = time_cuda(
            lambda: cupy.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, src.nbytes,
                                                   cupy.cuda.runtime.memcpyDeviceToDevice,
                                                   cupy.cuda.get_current_stream().ptr), budget)
        elementwise = cupy.ElementwiseKernel("T x", "T y", "y = x", "gpudp_bench_copy")
        methods["cupy-elementwise-copy"] = time_cuda(lambda: elementwise(src, dst), budget)
        moved = 2 * src.nbytes
        del src, dst
        cupy.get_default_memory_pool().free_all_blocks()
    best = max(methods, key=lambda m: moved / methods[m].median)
    out = {
        "gbps": moved / methods[best].median / 1e9,
        "bytes": moved,
        "method": best,
        "methods": {m: {"gbps": moved / t.median / 1e9, "timing": t.as_dict()} for m, t in methods.items()},
    }
    if kind == "cpu":
        out["streaming_ordinary_stores"] = streaming
    return out
