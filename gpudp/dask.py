"""Many independent problems on Dask: batched gpudp calls spread over a cluster's workers.

    from dask.distributed import Client, LocalCluster
    import gpudp.dask

    def solve(d0, target, *, grid, iterations):   # a batched gpudp function: arrays (B, …) in and out
        ...

    with Client(LocalCluster(n_workers=2, threads_per_worker=1)) as client:
        res = gpudp.dask.map_problems(solve, d0, target, batch_size=256, client=client,
                                      grid=grid, iterations=100)
    res.values          # NumPy array(s) with the leading problem axis, in problem order
    res.errors          # {problem index: exception} of the problems that failed (their rows are NaN)

The unit of work is a *batch*: the rows ``lo:hi`` of every per-problem input, passed to the function as arrays
of the worker's active gpudp backend, so that one batched gpudp call (one kernel launch per operator) handles
the whole batch. :func:`run_batch` is that unit; it runs anywhere (a Dask worker, ``client.map``,
``dask.array.map_blocks`` through :func:`blockwise`, or a plain loop) and imports nothing from Dask.

Failures are per problem. When a batch raises a *problem error* (by default :class:`gpudp.StabilityError` and
:class:`gpudp.SolveError`: errors that depend on one problem's data), the batch is split in halves and each
half re-run until the failing problems are isolated: the others' results are kept, bitwise equal to what the
whole batch would have given (gpudp's batched operators treat the rows of a batch independently). Any other
exception (a bug, a shape error) fails every problem alike, so it propagates with the batch's problem range
added to its message.

Workers choose their backend themselves: each one resolves ``auto`` (or ``GPUDP_BACKEND``) on first use, so a
``dask_cuda.LocalCUDACluster`` worker, which sees only its own GPU, takes ``cupy`` on it and a CPU worker
takes ``cpu``. On the ``cpu`` backend a batch runs with Numba limited to the worker's thread count (Dask's
``threads_per_worker``), so that the workers of a machine share its cores instead of oversubscribing them.

This module imports Dask only in the functions that build Dask work (:func:`map_problems`, :func:`blockwise`);
``import gpudp`` never imports it.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from .errors import ProblemError, SolveError, StabilityError

#: The errors that :func:`run_batch` isolates to single problems by default.
PROBLEM_ERRORS = (StabilityError, SolveError)


@dataclasses.dataclass
class BatchResult:
    """What :func:`run_batch` returns for the problems ``start … start + count − 1``.

    ``values``: a tuple of NumPy arrays, one per output of the function, each with the leading problem axis
    (``count`` rows; the rows of failed problems are NaN, or 0 for integer outputs); ``None`` when every
    problem failed. ``errors``: ``{problem index: exception}`` with global indices (``start`` added).
    ``calls``: batched calls made (1 when nothing failed). ``seconds``: wall time on the worker.
    ``backend``, ``threads``, ``worker``: where it ran (backend name, Numba threads on ``cpu``, the Dask
    worker's address or ``None``). ``multiple``: the function returned a tuple."""

    start: int
    count: int
    values: tuple | None
    errors: dict
    calls: int
    seconds: float
    backend: str
    threads: int | None = None
    worker: str | None = None
    multiple: bool = False


@dataclasses.dataclass
class ProblemResults:
    """What :func:`map_problems` returns: the outputs of all problems in problem order.

    ``values`` is one NumPy array when the function returns one array, else a tuple; the rows of failed
    problems are NaN (0 for integer outputs). ``errors`` maps each failed problem's index to its exception;
    ``failed`` is the boolean mask of those rows. ``batches`` holds each batch's :class:`BatchResult` without
    its values (where it ran, how long it took). :meth:`raise_errors` raises :class:`gpudp.ProblemError` when
    any problem failed."""

    values: object
    errors: dict
    failed: np.ndarray
    batches: list
    seconds: float

    @property
    def ok(self):
        """True when every problem succeeded."""
        return not self.errors

    def raise_errors(self):
        """Raise :class:`gpudp.ProblemError` (carrying :attr:`errors`) when any problem failed."""
        if self.errors:
            raise ProblemError(_summary(self.errors, len(self.failed)), self.errors)
        return self


def _summary(errors, total):
    first = sorted(errors)[:5]
    listed = "; ".join(f"{i}: {type(errors[i]).__name__}: {errors[i]}" for i in first)
    more = f"; and {len(errors) - len(first)} more" if len(errors) > len(first) else ""
    return f"{len(errors)} of {total} problems failed ({listed}{more})"


# -- the unit of work ----------------------------------------------------------------------------------------

def _worker_threads():
    """The Dask worker's thread count and address when running on one, else ``(None, None)``."""
    try:
        from distributed import get_worker
    except ImportError:
        return None, None
    try:
        worker = get_worker()
    except ValueError:  # not on a worker
        return None, None
    state = getattr(worker, "state", worker)
    return int(getattr(state, "nthreads", 0) or getattr(worker, "nthreads", 0) or 1), worker.address


def _check_inputs(arrays):
    if not arrays:
        raise TypeError("gpudp.dask: give at least one per-problem array (leading axis = problem index)")
    lengths = []
    for k, a in enumerate(arrays):
        shape = getattr(a, "shape", None)
        if shape is None or len(shape) == 0:
            raise TypeError(f"gpudp.dask: per-problem argument {k} must be an array with a leading problem axis; "
                            f"got {type(a).__name__}{'' if shape is None else ' of shape ()'} (pass shared "
                            f"values such as the grid as keyword arguments)")
        lengths.append(int(shape[0]))
    if len(set(lengths)) != 1:
        raise ValueError(f"gpudp.dask: the per-problem arrays must have the same leading length (the number of "
                         f"problems); got leading lengths {lengths}")
    return lengths[0]


def _as_outputs(out, count):
    """The function's output as a tuple of NumPy arrays with ``count`` rows, and whether it was a tuple."""
    from . import to_numpy

    multiple = isinstance(out, (tuple, list))
    outs = tuple(out) if multiple else (out,)
    arrays = []
    for k, o in enumerate(outs):
        a = np.asarray(to_numpy(o))
        if a.ndim == 0 or a.shape[0] != count:
            raise ValueError(f"gpudp.dask: output {k} of the function must have the batch's problems on its "
                             f"leading axis ({count} rows); got shape {a.shape}. Return per-problem values "
                             f"(e.g. a loss per problem, not their sum)")
        arrays.append(a)
    return tuple(arrays), multiple


def _nan_like(a, rows):
    out = np.empty((rows,) + a.shape[1:], a.dtype)
    out.fill(np.nan if np.issubdtype(a.dtype, np.inexact) else 0)
    return out


def run_batch(fn, *arrays, start=0, backend=None, threads=None, problem_errors=PROBLEM_ERRORS, **kwargs):
    """Run ``fn(*batch, **kwargs)`` once on the problems of ``arrays`` (rows = problems) and return a
    :class:`BatchResult`.

    ``arrays`` are NumPy arrays (or anything :func:`gpudp.asarray` takes) with the problems on the leading axis;
    they reach ``fn`` as arrays of the active backend (``backend`` selects one by name for this call; default:
    the process's active backend, ``auto`` unless set). ``fn`` returns an array, or a tuple of arrays, with
    the problems on the leading axis. ``start`` is the global index of the first row (for error reports).
    ``threads`` caps Numba's threads on the ``cpu`` backend for the call (default: the Dask worker's thread
    count on a worker, else unchanged). Problems raising one of ``problem_errors`` are isolated by bisection
    and reported in ``errors``; other exceptions propagate with the batch's problem range in the message.
    """
    from . import asarray, backends

    t0 = time.perf_counter()
    count = _check_inputs(arrays)
    worker_threads, address = _worker_threads()
    threads = threads if threads is not None else worker_threads
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
        raise ValueError(f"gpudp.dask: threads must be a positive integer; got {threads!r}")
    name = backends._resolve(backend) if backend is not None else backends.current_backend_name()

    with backends.use_backend(name):
        numba_threads = None
        previous = None
        if name == "cpu" and threads is not None:
            import numba
            previous = numba.get_num_threads()
            numba_threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
            numba.set_num_threads(numba_threads)
        try:
            state = {"calls": 0, "multiple": False}
            rows = [None] * count
            errors = {}

            def attempt(lo, hi):
                state["calls"] += 1
                try:
                    out = fn(*(asarray(a[lo:hi]) for a in arrays), **kwargs)
                except problem_errors as exc:
                    if hi - lo == 1:
                        errors[start + lo] = exc
                        return
                    mid = (lo + hi) // 2
                    attempt(lo, mid)
                    attempt(mid, hi)
                    return
                except Exception as exc:
                    _add_note(exc, f"gpudp.dask: raised by the batch of problems {start + lo}…{start + hi - 1}")
                    raise
                outs, state["multiple"] = _as_outputs(out, hi - lo)
                rows[lo] = (hi - lo, outs)

            attempt(0, count)
        finally:
            if previous is not None:
                import numba
                numba.set_num_threads(previous)
    return BatchResult(start=int(start), count=count, values=_assemble(rows, count), errors=errors,
                       calls=state["calls"], seconds=time.perf_counter() - t0, backend=name,
                       threads=numba_threads, worker=address, multiple=state["multiple"])


def _add_note(exc, note):
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def _assemble(rows, count):
    """Concatenate the successful row groups in order, NaN rows for the failed problems."""
    template = next((r[1] for r in rows if r is not None), None)
    if template is None:
        return None
    parts = [[] for _ in template]
    i = 0
    while i < count:
        if rows[i] is not None:
            n, outs = rows[i]
            for k, o in enumerate(outs):
                parts[k].append(o)
            i += n
        else:
            for k, t in enumerate(template):
                parts[k].append(_nan_like(t, 1))
            i += 1
    return tuple(np.concatenate(p) if len(p) > 1 else p[0] for p in parts)


# -- many batches on Dask ------------------------------------------------------------------------------------

def _split(count, batch_size):
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"gpudp.dask: batch_size must be a positive integer; got {batch_size!r}")
    batch_size = int(batch_size)
    return [(lo, min(lo + batch_size, count)) for lo in range(0, count, batch_size)]


def map_problems(fn, *arrays, batch_size=None, client=None, backend=None, threads=None,
                 problem_errors=PROBLEM_ERRORS, **kwargs):
    """Solve many independent problems: split the per-problem ``arrays`` into batches, run each batch as one
    batched call of ``fn`` (:func:`run_batch`) on a Dask worker, and return a :class:`ProblemResults` in
    problem order.

    ``arrays``: NumPy arrays, or Dask arrays chunked along the leading (problem) axis only, all with the same
    number of problems. Batches: ``batch_size`` rows (default: the chunks of the first Dask array, else
    ``ceil(problems / workers)`` so that every worker gets one batch). ``client``: a
    ``dask.distributed.Client`` (default: the current one if any); ``False``, or no client at all, runs the
    batches one after another in this process (Numba's kernels then use the cores themselves, and batches
    never compete for them in threads). ``kwargs`` (the grid, time step, iteration count, …) are passed to every call unchanged.
    ``backend`` and ``threads`` are passed to :func:`run_batch` (default: each worker's own choice).
    """
    import dask
    import dask.array as da

    from . import to_numpy

    t0 = time.perf_counter()
    count = _check_inputs(arrays)
    arrays = [a if isinstance(a, da.Array) else np.asarray(to_numpy(a)) for a in arrays]
    if client is None:
        try:
            from distributed import default_client
            client = default_client()
        except (ImportError, ValueError):
            client = False
    if batch_size is None:
        lazy = next((a for a in arrays if isinstance(a, da.Array)), None)
        if lazy is not None:
            bounds = np.cumsum((0,) + lazy.chunks[0])
            batches = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        else:
            workers = len(client.scheduler_info().get("workers", {})) if client else 1
            batches = _split(count, max(1, math.ceil(count / max(workers, 1))))
    else:
        batches = _split(count, batch_size)

    run = dask.delayed(run_batch, pure=False)
    tasks = []
    for lo, hi in batches:
        parts = []
        for a in arrays:
            if isinstance(a, da.Array):
                if any(len(c) != 1 for c in a.chunks[1:]):
                    a = a.rechunk({k: -1 for k in range(1, a.ndim)})
                parts.append(a[lo:hi])
            else:
                parts.append(a[lo:hi])
        tasks.append(run(fn, *parts, start=lo, backend=backend, threads=threads, problem_errors=problem_errors,
                         **kwargs))
    if client:
        results = client.gather(client.compute(tasks))
    else:  # one batch after another in this process: Numba's kernels use the cores themselves
        results = dask.compute(*tasks, scheduler="sync")
    return _combine(list(results), count, time.perf_counter() - t0)


def _combine(results, count, seconds):
    results = sorted(results, key=lambda r: r.start)
    errors = {}
    for r in results:
        errors.update(r.errors)
    template = next((r for r in results if r.values is not None), None)
    failed = np.zeros(count, bool)
    failed[list(errors)] = True
    if template is None:
        values = None
    else:
        outs = []
        for k, t in enumerate(template.values):
            outs.append(np.concatenate([r.values[k] if r.values is not None else _nan_like(t, r.count)
                                        for r in results]))
        values = tuple(outs) if template.multiple else outs[0]
    batches = [dataclasses.replace(r, values=None) for r in results]
    return ProblemResults(values=values, errors=errors, failed=failed, batches=batches, seconds=seconds)


class batched:
    """``batched(fn, **kwargs)``: ``fn`` as a function of ``(start, *batch_arrays)`` returning a
    :class:`BatchResult` (:func:`run_batch` with ``kwargs``), for ``client.map`` and other mappers that
    vary positional arguments only::

        runner = gpudp.dask.batched(solve, grid=grid, iterations=100)
        starts, parts = gpudp.dask.split(d0, target, batch_size=256)
        futures = client.map(runner, starts, *parts)
        res = gpudp.dask.combine(client.gather(futures))     # a ProblemResults, in problem order

    ``kwargs`` may include :func:`run_batch`'s own options (``backend``, ``threads``, ``problem_errors``)."""

    def __init__(self, fn, **kwargs):
        if not callable(fn):
            raise TypeError(f"gpudp.dask.batched: fn must be callable; got {type(fn).__name__}")
        self.fn, self.kwargs = fn, kwargs

    def __call__(self, start, *arrays):
        return run_batch(self.fn, *arrays, start=start, **self.kwargs)

    def __repr__(self):
        return f"gpudp.dask.batched({getattr(self.fn, '__qualname__', self.fn)!r})"


def split(*arrays, batch_size):
    """``(starts, parts)`` for :class:`batched`: the first row of each batch of ``batch_size`` problems, and
    for each array the list of its batches (views of NumPy arrays, slices of Dask arrays)."""
    count = _check_inputs(arrays)
    bounds = _split(count, batch_size)
    return [lo for lo, _ in bounds], [[a[lo:hi] for lo, hi in bounds] for a in arrays]


def combine(results):
    """Gather :class:`BatchResult` objects (any order, covering problems ``0 … P−1`` without gaps) into a
    :class:`ProblemResults` in problem order."""
    results = sorted(results, key=lambda r: r.start)
    if not results:
        raise ValueError("gpudp.dask.combine: no batch results given")
    expected = 0
    for r in results:
        if not isinstance(r, BatchResult):
            raise TypeError(f"gpudp.dask.combine: expected BatchResult objects; got {type(r).__name__}")
        if r.start != expected:
            raise ValueError(f"gpudp.dask.combine: the batches must cover the problems without gaps or overlaps; "
                             f"a batch starts at problem {r.start}, expected {expected}")
        expected += r.count
    return _combine(results, expected, sum(r.seconds for r in results))


def blockwise(fn, *, backend=None, threads=None, **kwargs):
    """``fn`` as a block function for ``dask.array.map_blocks``: each block (rows = problems) runs as one
    batched call (:func:`run_batch`) and gives the function's single output array.

        d = da.map_blocks(gpudp.dask.blockwise(rollout, grid=grid), d0, u, dtype=d0.dtype)

    A block whose problems fail raises :class:`gpudp.ProblemError` naming the problems by their index in the
    whole array (``errors`` maps them to their exceptions), since a Dask array cannot carry per-problem
    errors; use :func:`map_problems` to keep the other problems' results."""

    def block(*blocks, block_info=None):
        start = 0
        if block_info:
            info = next((v for k, v in block_info.items() if k is not None and isinstance(v, dict)
                         and "array-location" in v), None)
            if info is not None:
                start = int(info["array-location"][0][0])
        res = run_batch(fn, *blocks, start=start, backend=backend, threads=threads, **kwargs)
        if res.errors:
            raise ProblemError(_summary(res.errors, res.count), res.errors)
        if res.multiple:
            raise ValueError(f"gpudp.dask.blockwise: map_blocks takes a function with one output array; "
                             f"{getattr(fn, '__name__', 'the function')} returned {len(res.values)}")
        return res.values[0]

    block.__name__ = f"gpudp_blockwise_{getattr(fn, '__name__', 'fn')}"
    return block


__all__ = ["BatchResult", "ProblemResults", "PROBLEM_ERRORS", "run_batch", "map_problems", "batched", "split",
           "combine", "blockwise"]
