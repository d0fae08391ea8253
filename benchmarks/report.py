"""Tables, targets and files of a benchmark run: terminal table, JSON, Markdown and a PNG chart.

Re-render the Markdown and the chart of a saved run (optionally with hand-written analysis notes)::

    python -m benchmarks.report benchmarks/results/<name>.json [--notes notes.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import subprocess
import sys

from gpudp.demo import pressure as pressure_demo

from . import cases_rollout, cases_solvers
from .cases_smoke import SmokeDemo
from .harness import slug

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"

#: The preconditioner the pressure demo solves with (its benchmark configuration is named after it).
_DEMO_PRECONDITIONER = pressure_demo.PRECONDITIONER

#: The smoke demo's configuration (its problem, steps and default tolerance).
_SMOKE_DEMO_CONFIG = SmokeDemo().configs("cpu", "default")[0].label

#: The CPU targets of the suite: (id, case, config, description).
CPU_TARGETS = [
    ("advect_fwd_bw", "advect_fwd", "1024x1024 float32", "advect forward ≥ 80 % of copy bandwidth (2-D 1024², float32)"),
    ("advect_adj_bw", "advect_adj", "1024x1024 float32", "advect adjoint ≥ 60 % of copy bandwidth (2-D 1024², float32)"),
    ("seed_vs_jax", "seed_grad", f"N=128 T=100 float64", "seed inverse problem value_and_grad (replay=True) ≥ 2× faster than JAX (jit over lax.scan)"),
    ("cg_iter_model", "cg_iter", "1024x1024 float64", "one CG iteration within 2× of its byte-model time (1024², float64)"),
    ("pressure_demo", "project_grad", f"pressure demo 80x64 neumann float64 ({_DEMO_PRECONDITIONER})", "pressure-demo iteration (projection forward + backward, 80 × 64, tol 1e-5) ≤ 3 ms"),
    ("smoke_demo", "smoke_demo", _SMOKE_DEMO_CONFIG, "smoke-demo iteration (100 steps forward + backward, 64², obstacle) ≤ 0.55 s: the demo's 60 s for 100 iterations, set-up and figures"),
] + cases_solvers.TARGETS + cases_rollout.TARGETS


# -- derived numbers ----------------------------------------------------------------------------------------------


def _group(r):
    """Records compare with the baselines of their group: ``info["group"]`` where a case sets it (several
    configurations sharing one set of baselines), else their configuration."""
    return (r.get("info") or {}).get("group") or r["config"]


def finalize(records, probes):
    """Add the percentage of the device's copy bandwidth and the speed-ups over the baselines."""
    for r in records:
        if r.get("status") != "ok":
            continue
        bw = probes.get(r["device_kind"], {}).get("gbps")
        if bw and r.get("gbps") is not None:
            r["pct_bw"] = 100.0 * r["gbps"] / bw
    for r in records:
        if r.get("role") != "gpudp" or r.get("status") != "ok":
            continue
        r["speedup"] = {b["impl"]: b["median_s"] / r["median_s"] for b in records
                        if b.get("role") == "baseline" and b.get("status") == "ok" and b["case"] == r["case"]
                        and _group(b) == _group(r) and b["device_kind"] == r["device_kind"]}
    return records


def _find(records, case, config, impl=None, role=None, kind=None):
    for r in records:
        if r["case"] == case and r["config"] == config and r.get("status") == "ok" \
                and (impl is None or r["impl"] == impl) and (role is None or r.get("role") == role) \
                and (kind is None or r["device_kind"] == kind):
            return r
    return None


def evaluate_targets(records, probes):
    """The CPU targets, each ``{id, text, measured, goal, status, detail}``; status is ``met``, ``missed`` or
    ``not measured`` (the case or size was not part of the run)."""
    out = []
    bw = probes.get("cpu", {}).get("gbps")
    for tid, case, config, text in CPU_TARGETS:
        g = _find(records, case, config, impl="gpudp-cpu")
        row = {"id": tid, "text": text, "status": "not measured", "measured": None, "goal": None, "detail": ""}
        out.append(row)
        if g is None:
            continue
        if case == cases_solvers.CASE_NAME:
            row.update(cases_solvers.evaluate_target(tid, g, records))
            continue
        if case in cases_rollout.CASE_NAMES:
            row.update(cases_rollout.evaluate_target(tid, g, records))
            continue
        if tid in ("advect_fwd_bw", "advect_adj_bw"):
            goal = 80.0 if tid == "advect_fwd_bw" else 60.0
            row.update(measured=f"{g['pct_bw']:.1f} % ({g['gbps']:.1f} of {bw:.1f} GB/s)", goal=f"≥ {goal:.0f} %",
                       status="met" if g["pct_bw"] >= goal else "missed",
                       detail=f"{g['median_s'] * 1e3:.2f} ms per call, {g['info'].get('input_sets', 1)} input sets rotated")
            st = probes.get("cpu", {}).get("start", {}).get("streaming_ordinary_stores")
            if st:
                row["detail"] += (f"; a plain 3-read/1-write loop with ordinary stores reached {st['gbps']:.1f} GB/s "
                                  f"({100 * st['gbps'] / bw:.0f} %) in the same run")
            dg = g.get("diagnostics") or {}
            if "one_thread_s" in dg:
                row["detail"] += (f"; profile: {dg['rotated_s'] * 1e3:.2f} ms on {dg['threads']} threads, "
                                  f"{dg['one_thread_s'] * 1e3:.2f} ms on 1 thread "
                                  f"({dg['one_thread_s'] / dg['rotated_s']:.2f}× slower), "
                                  f"{dg['in_cache_s'] * 1e3:.2f} ms with the inputs in cache "
                                  f"({dg['rotated_s'] / dg['in_cache_s']:.2f}× faster than from memory)")
        elif tid == "seed_vs_jax":
            j = _find(records, case, config, impl="jax")
            if j is None:
                row["detail"] = "JAX not measured (not installed?)"
                continue
            ratio = j["median_s"] / g["median_s"]
            dg = g.get("diagnostics") or {}
            separate = f"{ratio:.2f}× (gpudp {g['median_s'] * 1e6:.0f} µs, JAX {j['median_s'] * 1e6:.0f} µs)"
            if "paired_ratio" in dg:
                # alternating blocks of calls: both see the same stretch of the machine (the fair ratio)
                ratio = dg["paired_ratio"]
                row.update(measured=f"{ratio:.2f}× in alternating blocks (gpudp {dg['paired_gpudp_s'] * 1e6:.0f} µs, "
                                    f"JAX {dg['paired_jax_s'] * 1e6:.0f} µs; median of {dg['paired_rounds']} "
                                    f"rounds, smallest {dg['paired_ratio_min']:.2f}×); timed apart {separate}")
            else:
                row.update(measured=separate)
            row.update(goal="≥ 2×", status="met" if ratio >= 2 else "missed")
            parts = []
            if "forward_kernel_s" in dg:
                k = dg["forward_kernel_s"] + dg["adjoint_kernel_s"]
                parts.append(f"kernels {k * 1e6:.0f} µs (forward {dg['forward_kernel_s'] * 1e6:.0f}, adjoint "
                             f"{dg['adjoint_kernel_s'] * 1e6:.0f}); outside the kernels (loss, replay, allocation) "
                             f"{max(g['median_s'] - k, 0) * 1e6:.0f} µs")
            if "eager_s" in dg:
                parts.append(f"without replay (fn run on a tape every call) {dg['eager_s'] * 1e6:.0f} µs, "
                             f"{j['median_s'] / dg['eager_s']:.2f}× JAX")
            if parts:
                row["detail"] = "; ".join(parts)
        elif tid == "cg_iter_model":
            per_it = g["time_per_iteration_s"]
            n_cells = 1
            for n in g["shape"]:
                n_cells *= n
            model = 6 * n_cells * 8 / (bw * 1e9)
            ratio = per_it / model
            row.update(measured=f"{ratio:.2f}× the model ({per_it * 1e3:.3f} ms vs {model * 1e3:.3f} ms per iteration)",
                       goal="≤ 2×", status="met" if ratio <= 2 else "missed")
            dg = g.get("diagnostics") or {}
            if "laplace_pass_gbps" in dg:
                passes = dg["iteration_s_without_setup"] * bw * 1e9 / (n_cells * 8)
                row["detail"] = (f"without set-up {dg['iteration_s_without_setup'] * 1e3:.3f} ms per iteration = "
                                 f"{passes:.1f} vectors' worth of copy traffic; a Laplacian pass alone runs at "
                                 f"{dg['laplace_pass_gbps']:.1f} GB/s")
        elif tid == "smoke_demo":
            row.update(measured=f"{g['median_s']:.2f} s", goal="≤ 0.55 s",
                       status="met" if g["median_s"] <= 0.55 else "missed",
                       detail=f"{g.get('info', {}).get('solves')} CG solves, {g.get('iterations')} iterations in all")
            j = _find(records, case, config, impl="jax")
            if j is not None:
                row["detail"] += f"; JAX (jit over lax.scan, plain CG, same run) {j['median_s']:.2f} s = " \
                                 f"{j['median_s'] / g['median_s']:.2f}× gpudp's time"
            plain = next((r for r in records if r["case"] == case and r["config"] != config
                          and r["impl"] == "gpudp-cpu" and r.get("status") == "ok"
                          and r["config"].endswith("plain CG)")), None)
            if plain is not None:
                row["detail"] += (f"; gpudp with plain CG {plain['median_s']:.2f} s "
                                  f"({plain.get('iterations')} iterations in all)")
            dg = g.get("diagnostics") or {}
            if "solves_s" in dg:
                row["detail"] += (f"; in the CG solves {dg['solves_s']:.2f} s, outside them (advection, "
                                  f"interpolation, tape, losses) {dg['outside_solves_s']:.2f} s")
        elif tid == "pressure_demo":
            its = g.get("info", {}).get("solve_iterations")
            row.update(measured=f"{g['median_s'] * 1e3:.2f} ms", goal="≤ 3 ms",
                       status="met" if g["median_s"] <= 3e-3 else "missed",
                       detail=f"preconditioner {_DEMO_PRECONDITIONER!r}, CG iterations forward/backward {its}")
            plain = _find(records, case, "pressure demo 80x64 neumann float64 (plain CG)", impl="gpudp-cpu")
            if plain is not None:
                row["detail"] += (f" (plain CG: {plain['median_s'] * 1e3:.2f} ms, "
                                  f"{plain.get('info', {}).get('solve_iterations')} iterations)")
            dg = g.get("diagnostics") or {}
            if "solves_s" in dg and g.get("iterations"):
                row["detail"] += (f"; in the CG solves {dg['solves_s'] * 1e3:.2f} ms "
                                  f"({dg['solves_s'] / g['iterations'] * 1e6:.1f} µs per iteration of 5120 cells), "
                                  f"outside them (the other operators, tape, losses) "
                                  f"{dg['outside_solves_s'] * 1e3:.2f} ms")
    return out


# -- formatting ------------------------------------------------------------------------------------------------


def _ms(s):
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return ""
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def _rows(records):
    rows = []
    for r in records:
        if r.get("status") != "ok":
            rows.append([r["case"], r["config"], r["impl"], r["status"], "", "", "", "", "", ""])
            continue
        speed = ", ".join(f"{k} {v:.2f}×" for k, v in (r.get("speedup") or {}).items())
        rows.append([r["case"], r["config"], r["impl"], _ms(r["median_s"]), f"±{r['timing']['spread'] * 100:.0f}%",
                     f"{r['gbps']:.2f}" if r.get("gbps") is not None else "",
                     f"{r['pct_bw']:.0f}%" if "pct_bw" in r else "",
                     str(r["iterations"]) if r.get("iterations") else "",
                     _ms(r.get("time_per_iteration_s")) if r.get("iterations") else "", speed])
    return rows


HEADER = ["case", "size", "implementation", "median", "IQR", "GB/s", "% copy BW", "CG its", "per it",
          "gpudp speed-up vs"]


def terminal_table(records):
    rows = [HEADER] + _rows(records)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(HEADER))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(records):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in _rows(records):
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def _device_lines(devices, probes):
    lines = []
    for kind, d in devices.items():
        if kind == "cpu":
            llc = f"{d['llc_bytes'] / 2**20:.0f} MiB" if d.get("llc_bytes") else "unknown"
            lines.append(f"- **CPU**: {d['model']}, {d['cores']} cores, {d.get('memory_gib')} GiB memory, last-level "
                         f"cache {llc}; Numba {d.get('numba_threads')} threads ({d.get('numba_threading_layer')} "
                         f"layer); {d.get('platform')}")
        else:
            lines.append(f"- **GPU**: {d['name']} (compute capability {d.get('compute_capability')}, "
                         f"{d.get('multiprocessors')} SMs, {d.get('memory_gib')} GiB, L2 "
                         f"{d.get('llc_bytes', 0) / 2**20:.0f} MiB; CUDA runtime {d.get('cuda_runtime')}, driver "
                         f"{d.get('cuda_driver')}, CuPy {d.get('cupy')})")
        p = probes.get(kind)
        if p:
            lines.append(f"  - copy bandwidth (read + write, {p['start']['bytes'] / 2**20:.0f} MiB moved per copy): "
                         f"{p['start']['gbps']:.1f} GB/s at the start, {p['end']['gbps']:.1f} GB/s at the end "
                         f"(best method {p['start']['method']}); percentages use the larger, {p['gbps']:.1f} GB/s")
            st = p["start"].get("streaming_ordinary_stores")
            if st:
                lines.append(f"  - yardstick, not a reference: a streaming loop with ordinary stores "
                             f"(`{st['kernel']}`, all threads) moves {st['gbps']:.1f} GB/s = "
                             f"{100 * st['gbps'] / p['gbps']:.0f} % of the copy: ordinary stores read each line "
                             f"before writing it, `memcpy`'s streaming stores do not")
    return lines


def software():
    import numpy
    out = {"python": platform.python_version(), "numpy": numpy.__version__}
    for mod in ("numba", "gpudp", "jax", "cupy", "matplotlib"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    try:
        root = pathlib.Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if commit:
            out["gpudp_commit"] = commit + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


BYTE_MODELS = """\
Byte models (the fewest bytes each operation must move: each input read once, each output written once;
`s` item size, `N` cells, `D` dimensions):

| case | byte model |
|---|---|
| `advect_fwd` | read `d`, `u`; write `d'`: `(D + 2)·N·s` |
| `advect_adj` | read `g`, `d`, `u`; write `∂d`, `∂u`: `(2D + 3)·N·s` |
| `seed_grad` | read `d0`, `u`, `target`; write loss and `∂u`: `4·N·8 + 8` B (latency-bound: the 128-cell problem lives in L1) |
| `cg_iter` | one CG iteration maps the state `(x, r, p)` to the next: read 3 and write 3 vectors, `6·N·s`. `q = A p` is an intermediate. CG's two global reductions force at least two passes over the data, so even a fully fused implementation moves about `10·N·s`: the 2× target leaves room for that and nothing more |
| `poisson_solve` | `iterations × 6·N·s` (the CG-iteration model) `+ 2·N·s` (read `b`, write `x`); for the spectral rows the same formula, which leaves out the dense transforms (compute-bound matrix products): compare their times, not their bandwidth |
| `project_grad` | forward and backward: each reads its field and writes the projected one (`2·F·s`, `F` faces), and each runs one solve (`iterations × 6·N·s`) |
| `mac_fwd` | closed box; density: read `q`, `u`, write `q'`: `(2N + F)·s`; velocity self-advection: read `u`, write `u'`: `2F·s` |
| `mac_adj` | tape backward; density: read `g`, `q`, `u`, write `∂q`, `∂u`: `(3N + 2F)·s`; self-advection: read `g`, `u`, write the one gradient `∂u`: `3F·s` |
| `smoke_fwd` | one smoke step (advect `d` and `u`, buoyancy, project): read `d`, `u`, write `d'`, `u'`, and the solve: `(2N + 2F + 6·iterations·N)·s` |
| `smoke_adj` | the tape's backward pass of one step: read the cotangents and the saved `d`, `u`, write `∂d`, `∂u`, and the adjoint solve: `(3N + 3F + 6·iterations·N)·s` |
| `smoke_demo` | the demo's iteration (loss and gradient through 100 steps): timed only |
| `solvers` | `poisson_solve` per preconditioner (dirichlet, tol 1e-6; `open` and with 20 % random solid discs/spheres): plain CG `(6·iterations + 2)·N·s`, preconditioned CG `(8·iterations + 2)·N·s` (also read `r` and write `z = M⁻¹ r` each iteration); `N` counts solid cells too; the preconditioner's own passes (V-cycle levels, transforms, pyamg's hierarchy) are left out: compare those rows by time. Baseline rows (pyamg, JAX, CuPy, dense spectral, the FFT pair) hang on the `jacobi` configuration and use its model; every baseline's answer is checked against gpudp's (record `info.notes`); see the "Poisson solvers" section and `benchmarks/cases_solvers.py` |
| `rollout_advect`, `rollout_smoke` | forward + backward of a `T`-step rollout (advect_upwind 256², `T` = 1000, float32; the smoke step 64², `T` = 100), recorded step by step (`stored`) and through `gpudp.rollout(..., checkpoints=⌈√T⌉)`, same run: timed only, compared with each other; memory (tape after the forward pass, peak during the backward pass) and the schedule's recomputed steps in the "Long rollouts" section and `benchmarks/cases_rollout.py` |
| `soak` | 10 000 advection-demo iterations timed once; the process's `VmRSS` after iteration 500 and at the end |

A time is the median of repeated calls after warm-up; IQR is the interquartile range relative to the median.
Single-step cases rotate through enough input sets to exceed twice the last-level cache, so repeated calls
stream from memory as in a pipeline; solves re-use their vectors across iterations, as CG does. `GB/s` is the
byte model over the median time; `% copy BW` relates it to the copy bandwidth measured in the same run.
"gpudp speed-up vs" is each baseline's median over gpudp's (above 1: gpudp is faster). Baselines: `numpy` /
`cupy` are straightforward array-expression versions, `jax` the same expressions under `jax.jit` (gradients by
`jax.vjp` / `jax.value_and_grad`, time steps by `lax.scan`, solves by `jax.scipy.sparse.linalg.cg`),
`cupyx-cg` is `cupyx.scipy.sparse.linalg.cg` on a CSR Laplacian. Baseline solves are timed once (JAX after one
compiling call). The `mac_*` and `smoke_*` baselines are `benchmarks/jax_smoke.py`, an independent JAX
implementation of DESIGN.md §6 (its CG, `jax.scipy.sparse.linalg.cg`, is differentiated implicitly: one more
solve); JAX's adjoint rows run `jax.vjp` inside one jitted function, of whose forward pass XLA keeps only what
the backward needs (the stencils' inputs; the forward solve is dead code)."""


def markdown(run):
    devices, probes, records = run["devices"], run["probes"], run["records"]
    title_dev = run["device_name"]
    lines = [f"# gpudp benchmarks: {title_dev}", "",
             f"Run {run['date']} with `{run['command']}`.", ""]
    lines += _device_lines(devices, probes)
    sw = run.get("software", {})
    lines += ["- **Software**: " + ", ".join(f"{k} {v}" for k, v in sw.items()), "", "## Results", "",
              markdown_table(records), ""]
    if run.get("targets") and any(t["status"] != "not measured" for t in run["targets"]):
        lines += ["## CPU targets", "", "| target | measured | goal | status | profile |", "|---|---|---|---|---|"]
        for t in run["targets"]:
            lines.append(f"| {t['text']} | {t['measured'] or ''} | {t['goal'] or ''} | "
                         f"{'**' + t['status'] + '**' if t['status'] == 'missed' else t['status']} | {t['detail']} |")
        lines.append("")
    lines += cases_solvers.summary_lines(records)
    lines += cases_rollout.summary_lines(records)
    if run.get("notes"):
        lines += ["## Analysis", "", run["notes"].strip(), ""]
    lines += ["## Method", "", BYTE_MODELS, ""]
    return "\n".join(lines)


def chart(run, path):
    """Bar chart of the percentage of copy bandwidth per case and implementation (PNG). Returns the path, or
    ``None`` when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return None
    # the solver comparison is left out: its byte model omits the preconditioners' own passes (compare by time)
    ok = [r for r in run["records"] if r.get("status") == "ok" and "pct_bw" in r
          and r["case"] != cases_solvers.CASE_NAME]
    if not ok:
        return None
    groups = []
    for r in ok:
        key = (r["device_kind"], r["case"], r["config"])
        if key not in groups:
            groups.append(key)
    impls = []
    for r in ok:
        if r["impl"] not in impls:
            impls.append(r["impl"])
    height = 0.8 / max(len(impls), 1)
    fig = Figure(figsize=(10, 0.55 * len(groups) * max(1, len(impls) / 2.5) + 1.5))
    ax = fig.add_subplot()
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
    for j, impl in enumerate(impls):
        ys, xs = [], []
        for i, key in enumerate(groups):
            r = next((r for r in ok if (r["device_kind"], r["case"], r["config"]) == key and r["impl"] == impl), None)
            if r is not None:
                ys.append(i + (j - (len(impls) - 1) / 2) * height)
                xs.append(r["pct_bw"])
        ax.barh(ys, xs, height=height, label=impl, color=colors[j % len(colors)])
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([f"{c}\n{cfg}" + (f" ({k})" if len(run["devices"]) > 1 else "") for k, c, cfg in groups],
                       fontsize=7)
    ax.invert_yaxis()
    ax.axvline(100, color="k", lw=0.8, ls="--")
    ax.set_xlabel("% of measured copy bandwidth (byte model / median time)")
    ax.set_title(f"gpudp benchmarks: {run['device_name']} ({run['date']})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def base_name(devices, date):
    """``<device>_<date>``: the GPU's name when the run used a GPU, else the CPU model and cores."""
    if "gpu" in devices:
        dev = "gpu-" + slug(devices["gpu"]["name"])
    else:
        d = devices["cpu"]
        dev = "cpu-" + slug(f"{d['model']} {d['cores']}c")
    return f"{dev}_{date}"


def write(run, out_dir):
    """Write ``<base>.json``, ``<base>.md`` and ``<base>.png`` into ``out_dir``; returns their paths."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = run.get("base_name") or base_name(run["devices"], run["date"])
    paths = {"json": out_dir / f"{base}.json", "md": out_dir / f"{base}.md", "png": out_dir / f"{base}.png"}
    slim = dict(run)
    slim["records"] = [{k: v for k, v in r.items() if k != "traceback"} for r in run["records"]]
    paths["json"].write_text(json.dumps(slim, indent=1, default=str) + "\n")
    paths["md"].write_text(markdown(run))
    if chart(run, paths["png"]) is None:
        paths.pop("png")
    return paths


def assemble(records, devices, probes, command, notes=None):
    """The run as one JSON-able dict (derived numbers and targets included)."""
    finalize(records, probes)
    date = datetime.date.today().isoformat()
    name = devices["gpu"]["name"] if "gpu" in devices else devices["cpu"]["name"]
    run = {"date": date, "timestamp": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
           "device_name": name, "devices": devices, "probes": probes, "software": software(), "records": records,
           "targets": evaluate_targets(records, probes) if "cpu" in devices else [], "notes": notes or ""}
    run["base_name"] = base_name(devices, date)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("json", help="a results JSON written by python -m benchmarks")
    parser.add_argument("--notes", help="Markdown file with analysis notes to include")
    parser.add_argument("--out", help="folder for the re-rendered files (default: beside the JSON)")
    args = parser.parse_args(argv)
    path = pathlib.Path(args.json)
    run = json.loads(path.read_text())
    if args.notes:
        run["notes"] = pathlib.Path(args.notes).read_text()
    run["targets"] = evaluate_targets(run["records"], run["probes"]) if "cpu" in run["devices"] else []
    for p in write(run, args.out or path.parent).values():
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
