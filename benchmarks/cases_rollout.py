"""Benchmark cases of long rollouts (DESIGN.md §8) and of memory over many iterations.

``rollout_advect``  ``T = 1000`` steps of ``gpudp.advect_upwind`` at 256² (periodic, float32, ``dt = 0.2``, a
                    fixed random velocity ``|u| ≤ 1`` requiring a gradient, a random density ``d0`` that does
                    not), each step the call ``gpudp.rollout(lambda d: gpudp.advect_upwind(d, u, dt, grid), d0,
                    T, checkpoints=c)`` makes (the velocity's CFL number is checked at every step), then
                    ``l2_loss(d_T, target)`` and its gradient with respect to ``u``. Two configurations timed in
                    the same run: ``stored`` (``checkpoints=None``: every step recorded on the tape) and
                    ``c=⌈√T⌉`` (32: at most 32 states held, the rest recomputed on the binomial schedule).
``rollout_smoke``   the same two ways for the smoke demo's step (:meth:`gpudp.demo.smoke.SmokeProblem.step`:
                    advect density and velocity on the MAC grid, buoyancy, projection around the obstacle) at
                    64², ``T = 100`` (``c = 10``), through the demo's own ``loss_and_grad`` at the control of
                    the ``smoke_demo`` case (half the hidden velocity).
``soak``            10 000 gradient-descent iterations of the advection demo (:mod:`gpudp.demo.advection`: its
                    problem, ``value_and_grad`` of its loss, its step size; one call runs them all, timed once),
                    the process's resident memory (``VmRSS`` of ``/proc/self/status``, the current resident set,
                    not its peak; ``resource.getrusage``'s peak where ``/proc`` is missing) read after iteration
                    500 (the warm-up: kernels compiled, caches filled) and at the end. On a GPU backend CuPy's
                    memory pool (bytes in use) is read at the same points.

A row's time is one forward and backward pass (``soak``: the whole run). Each record's ``info`` holds the
memory figures: ``tape_bytes`` (the tape after the forward pass), ``peak_bytes`` (the larger of that and the
rollout's peak during the backward pass, ``gpudp.Tape.rollouts``), the schedule's ``recomputed_steps`` and
``peak_states``; the checkpointed row also says whether its gradient is bitwise that of the stored row of the
same run (``bitwise_equal_to_stored``). The targets (:data:`TARGETS`): the checkpointed rollout takes at most
:data:`RATIO_GOAL` times the stored one ("recompute overhead"), and the soak's memory grows by less than
:data:`GROWTH_GOAL`. ``--smoke`` runs small variants (32², ``T = 20``; ``T = 4``; 60 iterations).

Timing: the rollout rows use the suite's budget for solves (one warm-up call, three timed), except
``rollout_smoke`` on a GPU (one call after a warm-up on a 2-step rollout); the soak is one call after a
3-iteration warm-up. :data:`BUDGET_ENV` bounds the three cases' time in one run (the GPU device check sets it;
they run in the order ``rollout_advect``, ``soak``, ``rollout_smoke``).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from .cases import Case, Config, Impl, Unavailable, _clock, _host_sync, shape_label

ADVECT_CASE, SMOKE_CASE, SOAK_CASE = "rollout_advect", "rollout_smoke", "soak"
CASE_NAMES = (ADVECT_CASE, SMOKE_CASE, SOAK_CASE)
ADVECT_DTYPE = "float32"
SMOKE_DTYPE = "float64"
#: (shape, steps) of rollout_advect; ``smoke``: the CI variant
ADVECT = {"default": ((256, 256), 1000), "smoke": ((32, 32), 20)}
ADVECT_DT = 0.2          # |u| ≤ 1, spacing 1, two axes: CFL ≤ 0.4
SMOKE_STEPS = {"default": 100, "smoke": 4}
#: (iterations, warm-up iterations) of the soak
SOAK = {"default": (10_000, 500), "smoke": (60, 20)}
#: the largest ratio of checkpointed to stored forward + backward time ("recompute overhead")
RATIO_GOAL = 2.2
#: the largest relative growth of the resident memory from the warm-up to the end of the soak
GROWTH_GOAL = 0.01
#: Environment variable: seconds these cases may take in one run, all together (unset: no limit), counted from
#: the first row built. Once they are spent, the remaining rows are recorded as "not available: skipped: the time
#: budget of the rollout cases is spent" (the GPU device check sets it).
BUDGET_ENV = "GPUDP_BENCH_ROLLOUT_SECONDS"
_started = []


def _gpudp():
    import gpudp
    return gpudp


def default_checkpoints(steps):
    """``⌈√steps⌉``."""
    return math.isqrt(steps - 1) + 1 if steps > 1 else 1


def _variant(sizes):
    return "smoke" if sizes == "smoke" else "default"


def _ckpt_label(c):
    return "stored" if c is None else f"c={c}"


def rss_bytes():
    """``(bytes, source)``: the resident set of this process now (``VmRSS``), or its peak from ``getrusage``
    where ``/proc/self/status`` cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024, "VmRSS"
    except OSError:
        pass
    import resource
    import sys
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024), "ru_maxrss (peak)"


def _device_pool_bytes(backend):
    """CuPy's memory pool: bytes in use on the device (``None`` on the cpu backend or without CuPy arrays)."""
    if backend.name == "cpu" or getattr(backend, "xp", None) is None or backend.xp.__name__ != "cupy":
        return None
    return int(backend.xp.get_default_memory_pool().used_bytes())


def _check_budget():
    """Raise :class:`Unavailable` once the time budget of these cases (:data:`BUDGET_ENV`) is spent; the first
    call starts the clock."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return
    try:
        budget = float(text)
    except ValueError:
        raise ValueError(f"{BUDGET_ENV}={text!r}: expected a number of seconds") from None
    if not _started:
        _started.append(time.perf_counter())
    spent = time.perf_counter() - _started[0]
    if spent > budget:
        raise Unavailable(f"skipped: the time budget of the rollout cases is spent ({spent:.0f} s > "
                          f"{BUDGET_ENV}={budget:g})")


def _same_bits(a, b, backend):
    a, b = (np.ascontiguousarray(backend.to_numpy(x)) for x in (a, b))
    return bool(a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)))


class _RolloutBase(Case):
    """A rollout timed forward and backward, stored (every step on the tape) and checkpointed, in one run; the
    stored row's gradient is kept (per backend) for the checkpointed row to compare with."""

    solve = True   # few, long calls

    def __init__(self):
        self._reference = {}

    def release(self):
        pass   # the reference gradients are kept for the next configuration of the same group

    def _pair(self, label, shape, dtype, steps, params=None):
        c = default_checkpoints(steps)
        return [Config(f"{label} {_ckpt_label(k)}", tuple(shape), dtype,
                       dict(params or {}, steps=steps, checkpoints=k, group=label)) for k in (None, c)]

    def bytes(self, cfg, iterations):
        return None   # timed only: the rows compare with each other

    def _note(self, info, cfg, backend, grads, tape_bytes, rollout):
        """Update ``info`` after a call: memory figures, the schedule, and (checkpointed) the comparison with
        the stored row's gradient."""
        peak = rollout.peak_bytes if rollout is not None else None
        info.update(tape_bytes=int(tape_bytes), peak_bytes=int(max(tape_bytes, peak or 0)),
                    rollout_peak_bytes=peak, steps=cfg.params["steps"], checkpoints=cfg.params["checkpoints"],
                    recomputed_steps=rollout.recomputed_steps if rollout is not None else 0,
                    peak_states=rollout.peak_states if rollout is not None else None)
        key = (backend.name, cfg.params["group"])
        if cfg.params["checkpoints"] is None:
            self._reference[key] = grads
        elif "bitwise_equal_to_stored" not in info:
            ref = self._reference.get(key)
            info["bitwise_equal_to_stored"] = None if ref is None else \
                all(_same_bits(a, b, backend) for a, b in zip(grads, ref))
            if ref is not None:
                del self._reference[key]


class RolloutAdvect(_RolloutBase):
    name = ADVECT_CASE
    title = "rollout of advect_upwind steps forward + backward: checkpointed (c = ⌈√T⌉) vs stored (periodic)"

    def configs(self, kind, sizes):
        shape, steps = ADVECT[_variant(sizes)]
        shapes = [shape]
        if not isinstance(sizes, str):   # explicit shapes: the 2-D ones, T = 1000
            shapes = [s for s in sizes[kind]["advect"] if len(s) == 2] or [shape]
        return [cfg for s in shapes
                for cfg in self._pair(f"{shape_label(s)} {ADVECT_DTYPE} T={steps}", s, ADVECT_DTYPE, steps)]

    @staticmethod
    def host_problem(cfg):
        """``(d0, u, target)`` float arrays of the configuration's shape and dtype (fixed seed)."""
        rng = np.random.default_rng(5)
        dt = np.dtype(cfg.dtype)
        d0 = rng.random(cfg.shape).astype(dt)
        u = (2 * rng.random((len(cfg.shape),) + cfg.shape) - 1).astype(dt)
        target = rng.random(cfg.shape).astype(dt)
        return d0, u, target

    def gpudp_impl(self, cfg, backend, env):
        _check_budget()
        gp = _gpudp()
        grid = gp.Grid(cfg.shape)
        d0, u, target = (backend.asarray(a, cfg.dtype) for a in self.host_problem(cfg))
        u = gp.tensor(u, requires_grad=True)
        steps, c = cfg.params["steps"], cfg.params["checkpoints"]
        info = {"dt": ADVECT_DT}

        def run():
            with gp.Tape() as tape:
                d = gp.rollout(lambda d: gp.advect_upwind(d, u, ADVECT_DT, grid), d0, steps, checkpoints=c)
                loss = gp.l2_loss(d, target)
            tape_bytes = tape.memory_bytes
            g = tape.gradient(loss, u)
            rollouts = tape.rollouts
            self._note(info, cfg, backend, [g], tape_bytes, rollouts[0] if rollouts else None)

        return Impl(run, _clock(backend), _host_sync(backend), info=info)


class RolloutSmoke(_RolloutBase):
    name = SMOKE_CASE
    title = "rollout of smoke steps (64², obstacle) forward + backward: checkpointed (c = ⌈√T⌉) vs stored"

    def available(self):
        try:
            from gpudp.demo import smoke
        except ImportError as exc:
            return f"gpudp.demo.smoke is not importable ({exc})"
        if not hasattr(smoke.SmokeProblem, "step"):
            return "gpudp.demo.smoke.SmokeProblem has no step() in this version of gpudp"
        return None

    def configs(self, kind, sizes):
        """The pair at 64², ``T`` = 100 (4 in the smoke run); on the GPU each row is one call after a warm-up
        on a 2-step rollout (the GPU device check's time budget), on the CPU the suite's solve budget."""
        steps = SMOKE_STEPS[_variant(sizes)]
        params = {"single_run": True} if kind == "gpu" else {}
        return self._pair(f"64x64 T={steps} {SMOKE_DTYPE}", (64, 64), SMOKE_DTYPE, steps, params)

    def gpudp_impl(self, cfg, backend, env):
        _check_budget()
        from gpudp.demo import smoke

        from .cases_smoke import SmokeDemo
        gp = _gpudp()
        c = cfg.params["checkpoints"]
        prob = smoke.SmokeProblem(dtype=cfg.dtype, steps=cfg.params["steps"], checkpoints=c)
        control = tuple(gp.tensor(backend.asarray(u, cfg.dtype)) for u in SmokeDemo.control())
        info = {"tol": smoke.TOL, "preconditioner": smoke.PRECONDITIONER}

        def run():
            _, grads = prob.loss_and_grad(control)   # the demo's own iteration
            self._note(info, cfg, backend, grads, prob.tape_bytes, prob.rollout_info)

        warmup = None
        if cfg.params.get("single_run"):   # compile everything on a short rollout of the same kind
            short = smoke.SmokeProblem(dtype=cfg.dtype, steps=2, checkpoints=None if c is None else min(c, 2))
            warmup = lambda: short.loss_and_grad(control)  # noqa: E731
        return Impl(run, _clock(backend), _host_sync(backend), info=info, warmup_fn=warmup)


class Soak(Case):
    name = SOAK_CASE
    title = "soak: advection-demo iterations (value_and_grad + update), resident memory after warm-up and at the end"
    solve = True

    def available(self):
        try:
            from gpudp.demo import advection  # noqa: F401
        except ImportError as exc:
            return f"gpudp.demo.advection is not importable ({exc})"
        return None

    def configs(self, kind, sizes):
        from gpudp.demo import advection as A
        iterations, warmup = SOAK[_variant(sizes)]
        return [Config(f"advection demo N={A.N} T={A.T} float64 {iterations} iterations", (A.N,), "float64",
                       {"iterations": iterations, "warmup": warmup, "single_run": True})]

    def bytes(self, cfg, iterations):
        return None

    def gpudp_impl(self, cfg, backend, env):
        """The advection demo's iteration (:func:`gpudp.demo.advection.run`): ``value_and_grad`` of the
        ``T``-step loss, the loss read as a float, plain gradient descent."""
        _check_budget()
        from gpudp.demo import advection as A
        gp = _gpudp()
        grid, _, d0_host, u_true_host = A.problem()
        d0 = backend.asarray(d0_host, "float64")
        target = gp.advect_upwind(d0, backend.asarray(u_true_host, "float64"), A.DT, grid, steps=A.T)

        def loss_fn(u):
            return gp.l2_loss(gp.advect_upwind(d0, u, A.DT, grid, steps=A.T), target)

        value_and_grad = gp.value_and_grad(loss_fn)
        iterations, warmup = cfg.params["iterations"], cfg.params["warmup"]
        info = {"iterations": iterations, "warmup_iterations": warmup}

        def soak(n, record):
            u = gp.Tensor(backend.asarray(np.full((1, A.N), A.U_INIT), "float64"))
            samples, losses = [], []
            every = max(1, n // 20)
            for it in range(1, n + 1):
                value, grad = value_and_grad(u)
                loss = float(gp.to_numpy(value))
                u -= A.STEP * gp.Tensor(grad)
                if it == 1 or it == n:
                    losses.append(loss)
                if record and (it == warmup or it == n or (it > warmup and it % every == 0)):
                    rss, source = rss_bytes()
                    samples.append((it, rss, _device_pool_bytes(backend)))
            if record:
                self._note(info, samples, source, losses)

        return Impl(lambda: soak(iterations, True), _clock(backend), _host_sync(backend), info=info,
                    warmup_fn=lambda: soak(min(3, iterations), False))

    @staticmethod
    def _note(info, samples, source, losses):
        (_, warm, warm_dev), (_, end, end_dev) = samples[0], samples[-1]
        iterations = samples[-1][0] - samples[0][0]
        info.update(rss_source=source, rss_warmup_bytes=warm, rss_end_bytes=end,
                    rss_max_bytes=max(s[1] for s in samples), rss_growth=(end - warm) / warm,
                    rss_growth_per_iteration_bytes=(end - warm) / max(iterations, 1),
                    rss_samples=[(i, r) for i, r, _ in samples], loss_first=losses[0], loss_last=losses[-1])
        if warm_dev is not None:
            info.update(device_pool_warmup_bytes=warm_dev, device_pool_end_bytes=end_dev,
                        device_pool_growth_bytes=end_dev - warm_dev)


#: run order: the cheap cases first (a time budget, :data:`BUDGET_ENV`, drops what is left)
ROLLOUT_CASES = [RolloutAdvect(), Soak(), RolloutSmoke()]


# -- the report: targets and the section ---------------------------------------------------------------------------


def _advect_label():
    shape, steps = ADVECT["default"]
    return f"{shape_label(shape)} {ADVECT_DTYPE} T={steps} c={default_checkpoints(steps)}"


def _smoke_label():
    steps = SMOKE_STEPS["default"]
    return f"64x64 T={steps} {SMOKE_DTYPE} c={default_checkpoints(steps)}"


def _soak_label():
    from gpudp.demo import advection as A
    return f"advection demo N={A.N} T={A.T} float64 {SOAK['default'][0]} iterations"


#: The CPU goals of these cases (report.CPU_TARGETS rows: id, case, the configuration the goal is read at, text).
TARGETS = [
    ("rollout_advect_overhead", ADVECT_CASE, _advect_label(),
     f"Recompute overhead: checkpointed rollout (c = ⌈√T⌉ = 32) forward + backward ≤ {RATIO_GOAL}× the "
     f"stored-everything rollout (advect_upwind, 256², T = 1000, float32, same run)"),
    ("rollout_smoke_overhead", SMOKE_CASE, _smoke_label(),
     f"Recompute overhead of the smoke step: checkpointed (c = 10) ≤ {RATIO_GOAL}× stored (64² with the obstacle, "
     f"T = 100, same run)"),
    ("soak_rss", SOAK_CASE, _soak_label(),
     f"Soak: resident memory grows < {100 * GROWTH_GOAL:.0f} % over 10 000 advection-demo iterations (after a "
     f"500-iteration warm-up)"),
]


def _mib(b):
    """Bytes in MiB (KiB below 1 MiB)."""
    if b is None:
        return ""
    return f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"


def _stored_row(records, g):
    """The stored row of the checkpointed record ``g`` (same case, group, implementation and device)."""
    group = (g.get("info") or {}).get("group") or g["config"].rsplit(" ", 1)[0]
    for r in records:
        if r.get("case") == g["case"] and r.get("status") == "ok" and r["impl"] == g["impl"] \
                and r["device_kind"] == g["device_kind"] and r["config"] == f"{group} stored":
            return r
    return None


def overhead(records, g):
    """``(ratio, detail)`` of a checkpointed record against its stored row, or ``(None, reason)``."""
    from .report import _ms   # the report's time format (report imports this module)
    stored = _stored_row(records, g)
    if stored is None:
        return None, "no stored row in this run"
    gi, si = g.get("info") or {}, stored.get("info") or {}
    ratio = g["median_s"] / stored["median_s"]
    bitwise = gi.get("bitwise_equal_to_stored")
    detail = (f"checkpointed {_ms(g['median_s'])}, stored {_ms(stored['median_s'])}; memory: stored tape "
              f"{_mib(si.get('tape_bytes'))}, checkpointed tape {_mib(gi.get('tape_bytes'))} after the forward "
              f"pass, peak {_mib(gi.get('peak_bytes'))} during the backward pass "
              f"({si.get('tape_bytes', 0) / max(gi.get('peak_bytes') or 1, 1):.0f}× less); "
              f"{gi.get('recomputed_steps')} steps recomputed for T = {gi.get('steps')}, at most "
              f"{gi.get('peak_states')} states; gradient bitwise equal to the stored one: "
              f"{'yes' if bitwise else ('not compared' if bitwise is None else 'NO')}")
    return ratio, detail


def evaluate_target(tid, g, records):
    """The fields ``measured``, ``goal``, ``status``, ``detail`` of one of :data:`TARGETS` (``g``: the gpudp-cpu
    record of its configuration)."""
    if tid in ("rollout_advect_overhead", "rollout_smoke_overhead"):
        ratio, detail = overhead(records, g)
        if ratio is None:
            return {"status": "not measured", "detail": detail}
        ok = ratio <= RATIO_GOAL and (g.get("info") or {}).get("bitwise_equal_to_stored") is not False
        return {"measured": f"{ratio:.2f}×", "goal": f"≤ {RATIO_GOAL}×", "status": "met" if ok else "missed",
                "detail": detail}
    if tid == "soak_rss":
        return soak_result(g)
    raise ValueError(f"unknown rollout target {tid!r}")


def soak_result(g):
    from .report import _ms
    info = g.get("info") or {}
    if "rss_growth" not in info:
        return {"status": "not measured", "detail": "no memory samples in the record"}
    growth = info["rss_growth"]
    detail = (f"{info['rss_source']} {_mib(info['rss_warmup_bytes'])} after iteration {info['warmup_iterations']}, "
              f"{_mib(info['rss_end_bytes'])} after {info['iterations']} (largest sample "
              f"{_mib(info['rss_max_bytes'])}; {info['rss_growth_per_iteration_bytes']:+.0f} B per iteration); "
              f"{_ms(g['median_s'] / info['iterations'])} per iteration; loss "
              f"{info['loss_first']:.3e} → {info['loss_last']:.3e}")
    if "device_pool_growth_bytes" in info:
        detail += (f"; CuPy pool in use {_mib(info['device_pool_warmup_bytes'])} → "
                   f"{_mib(info['device_pool_end_bytes'])}")
    return {"measured": f"{100 * growth:+.2f} %", "goal": f"< {100 * GROWTH_GOAL:.0f} %",
            "status": "met" if growth < GROWTH_GOAL else "missed", "detail": detail}


def summary_lines(records):
    """Markdown: per device kind and backend, each rollout pair (times, ratio, memory, schedule, bitwise check)
    and the soak's memory; ``[]`` when the run has none of these cases."""
    from .report import _ms
    rows = [r for r in records if r.get("case") in CASE_NAMES and r.get("status") == "ok"]
    if not rows:
        return []
    lines = ["## Long rollouts", "",
             "Forward + backward of a rollout recorded step by step (`stored`) and through `gpudp.rollout(..., "
             "checkpoints=c)` (`c=…`), timed in the same run; memory: the tape after the forward pass and the "
             "most bytes held during the backward pass (`Tape.rollouts[0].peak_bytes`). Targets: ratio ≤ "
             f"{RATIO_GOAL}×; soak growth < {100 * GROWTH_GOAL:.0f} %.", "",
             "| case | backend | configuration | time | × stored | tape after forward | peak | recomputed steps | "
             "states held | bitwise |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["case"] == SOAK_CASE:
            continue
        info = r.get("info") or {}
        ratio = ""
        if info.get("checkpoints") is not None:
            value, _ = overhead(records, r)
            ratio = "" if value is None else f"{value:.2f}×"
        bitwise = info.get("bitwise_equal_to_stored")
        lines.append(f"| {r['case']} | {r['impl']} | {r['config']} | {_ms(r['median_s'])} | {ratio} | "
                     f"{_mib(info.get('tape_bytes'))} | {_mib(info.get('peak_bytes'))} | "
                     f"{info.get('recomputed_steps', '')} | {info.get('peak_states') or ''} | "
                     f"{'' if bitwise is None else ('yes' if bitwise else 'NO')} |")
    for r in rows:
        if r["case"] == SOAK_CASE:
            res = soak_result(r)
            lines += ["", f"Soak ({r['impl']}, {r['config']}): growth {res.get('measured')} "
                          f"({res['status']}); {res['detail']}."]
    lines.append("")
    return lines
