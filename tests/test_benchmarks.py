"""The benchmark suite (``python -m benchmarks``): its smoke run, its byte models and sizes, and the GPU device
check's dry run. Everything here runs on the CPU."""
import json
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROLLOUT_CASES = {"rollout_advect", "rollout_smoke", "soak"}
CASES = {"advect_fwd", "advect_adj", "seed_grad", "poisson_solve", "cg_iter", "project_grad",
         "mac_fwd", "mac_adj", "smoke_fwd", "smoke_adj", "smoke_demo", "solvers"} | ROLLOUT_CASES


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["MPLBACKEND"] = "Agg"
    env.pop("GPUDP_BACKEND", None)
    return env


def _results(folder):
    found = sorted(pathlib.Path(folder).glob("*.json"))
    assert len(found) == 1, f"expected one results JSON in {folder}, found {found}"
    return found[0], json.loads(found[0].read_text())


def _check_run(folder, cases=CASES):
    path, run = _results(folder)
    assert path.with_suffix(".md").exists()
    pytest.importorskip("matplotlib")
    assert path.with_suffix(".png").stat().st_size > 1000
    records = run["records"]
    assert {r["case"] for r in records} == cases
    errors = [f"{r['case']} {r['config']} {r['impl']}: {r['status']}" for r in records
              if r["status"].startswith("error")]
    assert not errors, "\n".join(errors)
    # a gpudp without preconditioner="multigrid" reports those rows of the solver case as unavailable
    gpudp_rows = [r for r in records if r["impl"] == "gpudp-cpu"
                  and not r["status"].startswith("not available: preconditioner 'multigrid' is unavailable")]
    assert gpudp_rows and all(r["status"] == "ok" for r in gpudp_rows), \
        [(r["case"], r["status"]) for r in gpudp_rows if r["status"] != "ok"]
    for r in gpudp_rows:
        assert r["median_s"] > 0 and r["timing"]["repeats"] >= 1
        if r["case"] in ("advect_fwd", "advect_adj", "cg_iter", "mac_fwd", "mac_adj", "smoke_fwd", "smoke_adj"):
            assert r["bytes"] > 0 and r["pct_bw"] > 0
        if r["case"] in ("smoke_fwd", "smoke_adj", "smoke_demo"):
            assert r["iterations"] > 0   # the CG iterations of the step's solves were counted
        if r["case"] == "cg_iter":
            assert r["iterations"] == 50
    assert run["probes"]["cpu"]["gbps"] > 0
    assert "## CPU targets" in path.with_suffix(".md").read_text()
    return run


def test_smoke_suite_writes_json_markdown_png(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--backends", "cpu", "--out", str(out)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "implementation" in proc.stdout  # the terminal table
    _check_run(out)


def test_byte_models_and_sizes(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import cases as C
    f32 = C.Config("", (1024, 1024), "float32")
    assert C.AdvectForward().bytes(f32) == 4 * 1024 * 1024 * 4            # d, u (2), d'
    assert C.AdvectAdjoint().bytes(f32) == 7 * 1024 * 1024 * 4            # g, d, u (2), ∂d, ∂u (2)
    f64 = C.Config("", (1024, 1024), "float64")
    assert C.CGIteration().bytes(f64, 1) == 6 * 1024 * 1024 * 8           # x, r, p read and written
    assert C.PoissonSolve().bytes(f64, 10) == (6 * 10 + 2) * 1024 * 1024 * 8
    labels = [c.label for c in C.AdvectForward().configs("cpu", "default")]
    assert labels == ["1024x1024 float32", "1024x1024 float64", "128x128x128 float32", "128x128x128 float64"]
    gpu = [c.label for c in C.AdvectForward().configs("gpu", "default")]
    assert gpu[0] == "4096x4096 float32" and gpu[-1] == "256x256x256 float64"
    assert [c.label for c in C.PoissonSolve().configs("cpu", "default")] == [
        "512x512 float64", "512x512 float64 (spectral)", "1024x1024 float32", "1024x1024 float32 (spectral)"]
    explicit = C.parse_sizes("64x64,16x16x16")
    assert [c.shape for c in C.AdvectForward().configs("cpu", explicit)][::2] == [(64, 64), (16, 16, 16)]
    assert [c.shape for c in C.CGIteration().configs("cpu", explicit)] == [(64, 64)]
    with pytest.raises(ValueError):
        C.parse_sizes("64y64")


def test_mac_and_smoke_case_configurations(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import cases as C
    from benchmarks import cases_smoke as S
    f32 = C.Config("", (1024, 1024), "float32", {"variant": "density"})
    F = 2 * 1024 * 1025                                                  # faces of a closed 1024² box
    assert S.faces((1024, 1024)) == F and S.faces((4, 5, 6)) == 5 * 6 * 5 + 4 * 6 * 6 + 4 * 5 * 7
    assert S.MacForward().bytes(f32) == (2 * 1024 * 1024 + F) * 4         # q, u read; q' written
    assert S.MacAdjoint().bytes(f32) == (3 * 1024 * 1024 + 2 * F) * 4     # g, q, u read; ∂q, ∂u written
    self_adv = C.Config("", (1024, 1024), "float32", {"variant": "velocity"})
    assert S.MacForward().bytes(self_adv) == 2 * F * 4                    # u read, u' written
    assert S.MacAdjoint().bytes(self_adv) == 3 * F * 4                    # g, u read; ∂u written
    f64 = C.Config("", (64, 64), "float64", {"obstacle": True})
    F64 = 2 * 64 * 65
    assert S.SmokeForward().bytes(f64, 10) == (2 * 64 * 64 + 2 * F64 + 60 * 64 * 64) * 8
    assert S.SmokeAdjoint().bytes(f64, 10) == (3 * 64 * 64 + 3 * F64 + 60 * 64 * 64) * 8
    assert S.SmokeForward().bytes(f64, None) is None                     # JAX's cg reports no iterations
    assert [c.label for c in S.MacForward().configs("cpu", "default")] == [
        "1024x1024 float32 density", "1024x1024 float32 velocity", "128x128x128 float32 density",
        "128x128x128 float32 velocity"]
    assert [c.label for c in S.SmokeAdjoint().configs("cpu", "default")] == [
        "64x64 obstacle float64", "64x64 open float64", "128x128 obstacle float64", "128x128 open float64"]
    assert [c.shape for c in S.SmokeForward().configs("gpu", "default")][::2] == [(64, 64), (1024, 1024)]
    from gpudp.demo import smoke
    demo = S.SmokeDemo().configs("cpu", "default")
    assert demo[0].label == f"64x64 T=100 float64 (tol 1e-06, {smoke.PRECONDITIONER or 'plain CG'})"
    assert demo[0].params["steps"] == 100 and demo[0].params["baseline"]
    assert [c.label for c in demo[1:]] == (["64x64 T=100 float64 (tol 1e-06, plain CG)"] if smoke.PRECONDITIONER
                                           else [])
    assert all(c.params["steps"] == 2 for c in S.SmokeDemo().configs("cpu", "smoke"))
    explicit = C.parse_sizes("64x64,32x48,16x16x16")
    assert [c.shape for c in S.SmokeForward().configs("cpu", explicit)][::2] == [(64, 64)]   # square 2-D only
    assert [c.shape for c in S.MacAdjoint().configs("cpu", explicit)][::2] == [(64, 64), (32, 48), (16, 16, 16)]
    assert {c.name for c in C.select(["mac", "smoke"])} == {"mac_fwd", "mac_adj", "smoke_fwd", "smoke_adj",
                                                            "smoke_demo"}


def test_solver_case_configurations(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import cases as C
    from benchmarks import cases_solvers as S
    case = S.PoissonSolvers()
    cpu = [c.label for c in case.configs("cpu", "default")]
    assert cpu[:5] == ["256x256 open float64 multigrid", "256x256 open float64 spectral", "256x256 open float64 jacobi",
                       "256x256 open float64 none", "256x256 obstacles float64 multigrid"]
    assert "1024x1024 obstacles float64 auto" in cpu and "1024x1024 open float64 none" not in cpu
    assert not any(label.startswith(("2048x2048", "128x128x128")) for label in cpu)      # "full" only on the CPU
    full = {c.shape for c in case.configs("cpu", C.parse_sizes("full"))}
    assert {(2048, 2048), (128, 128, 128), (32, 32, 32)} <= full
    gpu = case.configs("gpu", "default")
    assert gpu[0].shape == (2048, 2048)                                                  # largest first
    assert {c.label for c in gpu if c.dtype == "float32"} == {
        f"{s} {o} float32 {pc}" for s in ("2048x2048", "128x128x128") for o in ("open", "obstacles")
        for pc in ("multigrid", "spectral")}
    by = {c.label: c for c in case.configs("cpu", "default")}
    jac = by["1024x1024 obstacles float64 jacobi"]
    assert jac.params["single_run"] and jac.params["baselines"] and jac.params["group"] == "1024x1024 obstacles float64"
    assert not by["1024x1024 obstacles float64 multigrid"].params["single_run"]
    assert sum(c.params["baselines"] for c in by.values()) == 8          # one per shape, open and with obstacles
    f64 = by["256x256 open float64 none"]
    assert case.bytes(f64, 10) == (6 * 10 + 2) * 256 * 256 * 8                           # plain CG
    assert case.bytes(by["256x256 open float64 multigrid"], 10) == (8 * 10 + 2) * 256 * 256 * 8
    explicit = [c.shape for c in case.configs("cpu", C.parse_sizes("24x24,8x8x8"))]
    assert explicit[0] == (24, 24) and explicit[-1] == (8, 8, 8)
    assert {c.name for c in C.select(["solvers"])} == {"solvers"}
    assert {c.name for c in C.select(["poisson_solve"])} == {"poisson_solve"}


def test_solver_case_problem_and_matrices(monkeypatch):
    """The obstacles (fraction, no sealed pocket, deterministic) and the baselines' operators: the CSR matrix of
    ``−laplace`` against the dense float64 reference without obstacles and against gpudp's laplace with them;
    the JAX stencil against gpudp's laplace."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    import gpudp
    from benchmarks import cases_solvers as S
    from gpudp.ops.obstacles import obstacle_facts
    from reference_mac import laplace_matrix
    for shape in [(64, 64), (16, 16, 16)]:
        solid, _ = S.obstacle_mask(shape)
        assert 0.2 <= solid.mean() < 0.26
        assert np.array_equal(solid, S.obstacle_mask(shape)[0])
        assert obstacle_facts(gpudp.Grid(shape, boundary="dirichlet", solid=solid)).n_sealed == 0
    for shape, spacing, bnd in [((6, 5), (0.5, 2.0), "dirichlet"),
                                ((4, 5, 3), (0.5, 2.0, 1.0), ("dirichlet", "neumann", "periodic"))]:
        grid = gpudp.Grid(shape, spacing=spacing, boundary=bnd)
        A, fluid = S.minus_laplace_csr(grid)
        assert fluid.all()
        np.testing.assert_allclose(A.toarray(), -laplace_matrix(shape, spacing, grid.boundary), rtol=0, atol=1e-12)
    rng = np.random.default_rng(3)
    for shape, bnd in [((12, 10), "dirichlet"), ((5, 6, 4), ("dirichlet", "neumann", "periodic"))]:
        solid = rng.random(shape) < 0.25
        grid = gpudp.Grid(shape, spacing=(0.5, 2.0, 1.0)[:len(shape)], boundary=bnd, solid=solid)
        A, fluid = S.minus_laplace_csr(grid)
        N = grid.size
        columns = np.stack([np.asarray(gpudp.laplace(e.reshape(shape), grid)).reshape(-1) for e in np.eye(N)], axis=1)
        np.testing.assert_allclose(A.toarray(), -columns[fluid][:, fluid], rtol=0, atol=1e-12)
        weights, dinv, boundary = S.face_weights(grid)
        np.testing.assert_allclose(dinv.reshape(-1)[fluid], 1.0 / A.diagonal(), rtol=1e-12)
        assert not dinv.reshape(-1)[~fluid].any()
        jax_mod = pytest.importorskip("jax")
        jax_mod.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        op = S.jax_minus_laplace(jnp, [jnp.asarray(w) for w in weights], boundary)
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(np.asarray(op(jnp.asarray(x))), -np.asarray(gpudp.laplace(x, grid)), rtol=0,
                                   atol=1e-12)


@pytest.mark.parametrize("multigrid", ["present", "missing"])
def test_solver_case_runs(monkeypatch, multigrid):
    """The case at its smoke sizes on the cpu backend, in process: every row runs (multigrid and auto are
    reported unavailable, with the reason, where gpudp has no multigrid), the baselines agree with gpudp, and
    the report renders its section and targets."""
    monkeypatch.syspath_prepend(str(ROOT))
    from gpudp.ops import poisson
    from benchmarks import report, suite
    from benchmarks import cases_solvers as S
    if multigrid == "present" and S.multigrid_missing():
        pytest.skip(S.multigrid_missing())
    if multigrid == "missing":
        monkeypatch.setattr(poisson, "PRECONDITIONERS",
                            tuple(p for p in poisson.PRECONDITIONERS if p not in ("multigrid", "auto")))
    monkeypatch.delenv(S.BUDGET_ENV, raising=False)
    # 2-D only and no plain CG: less compiling (the suite's smoke run has them)
    monkeypatch.setitem(S.SIZES, "smoke", {"cpu": [(16, 16)]})
    monkeypatch.setattr(S, "ORDER", tuple(pc for pc in S.ORDER if pc is not None))
    have_pyamg = importlib.util.find_spec("pyamg") is not None   # a baseline of the bench extra
    records, devices, probes = suite.run(["cpu"], ["solvers"], smoke=True, quiet=True)
    assert records and {r["case"] for r in records} == {"solvers"}
    for r in records:
        pc = r["config"].split()[-1]
        if multigrid == "missing" and r["role"] == "gpudp" and pc in ("multigrid", "auto"):
            assert r["status"].startswith("not available: preconditioner 'multigrid' is unavailable"), r["status"]
            continue
        if r["role"] == "baseline" and r["impl"].startswith("jax") and r["status"].startswith("not available"):
            continue   # no JAX here
        if r["impl"].startswith("pyamg") and not have_pyamg:
            assert r["status"].startswith("not available: pyamg is not importable"), r["status"]
            continue
        assert r["status"] == "ok", (r["config"], r["impl"], r["status"])
        info = r["info"]
        if r["role"] == "gpudp":
            assert info["converged"] and r["iterations"] >= 1 and r["bytes"] > 0
            assert r["diagnostics"]["first_call_s"] > 0
        elif r["impl"] != "scipy-fft-pair":   # the FFT pair solves nothing
            assert info["agrees"] and info["rel_diff_vs_gpudp"] < 1e-4, (r["impl"], info.get("notes"))
            assert info["true_residual"] < 2e-6
    if multigrid == "present":
        used = {r["config"]: r["info"]["preconditioner_used"] for r in records
                if r["role"] == "gpudp" and r["config"].endswith(" auto")}
        assert used == {"16x16 open float64 auto": "spectral", "16x16 obstacles float64 auto": "multigrid"}
    impls = {r["impl"] for r in records}
    assert {"pyamg-sa", "pyamg-sa-solve", "pyamg-rs", "dense-spectral-pcg", "scipy-fft-pair"} <= impls
    run = report.assemble(records, devices, probes, "test")
    gp = [r for r in run["records"] if r["role"] == "gpudp" and r["status"] == "ok"]
    assert gp
    if have_pyamg:   # every preconditioner against the size's baselines
        assert all("pyamg-sa" in r["speedup"] for r in gp)
    md = report.markdown(run)
    assert "## Poisson solvers" in md and "**16x16 obstacles float64** (cpu)" in md
    assert {t["id"] for t in run["targets"]} >= {t[0] for t in S.TARGETS}


def test_rollout_cases_run(monkeypatch):
    """The long-rollout cases at their smoke sizes on the cpu backend, in process: checkpointed and stored rows,
    the same gradient bits, the schedule's counts, less memory with checkpoints, the soak's memory samples, and
    the report's section and targets."""
    monkeypatch.syspath_prepend(str(ROOT))
    import gpudp
    from benchmarks import cases as C
    from benchmarks import cases_rollout as R
    from benchmarks import report, suite
    monkeypatch.delenv(R.BUDGET_ENV, raising=False)
    assert {c.name for c in C.select(["rollout"])} == {"rollout_advect", "rollout_smoke"}
    records, devices, probes = suite.run(["cpu"], sorted(ROLLOUT_CASES), smoke=True, quiet=True)
    assert {r["case"] for r in records} == ROLLOUT_CASES
    assert all(r["status"] == "ok" for r in records), [(r["config"], r["status"]) for r in records]
    by = {r["config"]: r for r in records}
    assert list(by) == ["32x32 float32 T=20 stored", "32x32 float32 T=20 c=5",   # in the order asked for
                        "64x64 T=4 float64 stored", "64x64 T=4 float64 c=2",
                        "advection demo N=128 T=100 float64 60 iterations"]
    for stored, ckpt, T, c in [("32x32 float32 T=20 stored", "32x32 float32 T=20 c=5", 20, 5),
                               ("64x64 T=4 float64 stored", "64x64 T=4 float64 c=2", 4, 2)]:
        s, k = by[stored]["info"], by[ckpt]["info"]
        assert k["bitwise_equal_to_stored"] is True and "bitwise_equal_to_stored" not in s
        assert (k["steps"], k["checkpoints"]) == (T, c) and s["checkpoints"] is None
        assert k["recomputed_steps"] == gpudp.revolve_counts(T, c).recomputed_steps and k["peak_states"] <= c
        assert k["peak_bytes"] >= k["tape_bytes"] > 0 and k["peak_bytes"] < s["tape_bytes"] == s["peak_bytes"]
    assert by["32x32 float32 T=20 stored"]["info"]["tape_bytes"] >= 20 * 32 * 32 * 4   # every step's density
    soak = by["advection demo N=128 T=100 float64 60 iterations"]["info"]
    assert soak["rss_source"] in ("VmRSS", "ru_maxrss (peak)") and soak["rss_warmup_bytes"] > 0
    assert [i for i, _ in soak["rss_samples"]][0] == 20 and soak["rss_samples"][-1][0] == 60
    assert soak["loss_last"] < soak["loss_first"]
    run = report.assemble(records, devices, probes, "test")
    md = report.markdown(run)
    assert "## Long rollouts" in md and "| rollout_advect | gpudp-cpu | 32x32 float32 T=20 c=5 |" in md
    assert {t["id"] for t in run["targets"]} >= {t[0] for t in R.TARGETS}
    # the targets, read at this run's rows (their own configurations are the full sizes)
    res = R.evaluate_target("rollout_advect_overhead", by["32x32 float32 T=20 c=5"], records)
    ratio = by["32x32 float32 T=20 c=5"]["median_s"] / by["32x32 float32 T=20 stored"]["median_s"]
    assert res["measured"] == f"{ratio:.2f}×" and res["status"] == ("met" if ratio <= R.RATIO_GOAL else "missed")
    res = R.evaluate_target("soak_rss", by["advection demo N=128 T=100 float64 60 iterations"], records)
    assert res["status"] == ("met" if soak["rss_growth"] < 0.01 else "missed")


def test_rollout_targets_met_and_missed(monkeypatch):
    """The target rows at the full-size configurations, from made-up records: the ratio against the stored row
    of the same run, a gradient that differs misses, the soak's growth."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import cases_rollout as R
    from benchmarks import report
    assert R.default_checkpoints(1000) == 32 and R.default_checkpoints(100) == 10 and R.default_checkpoints(20) == 5

    def rec(case, config, median, **info):
        return {"case": case, "config": config, "impl": "gpudp-cpu", "role": "gpudp", "device_kind": "cpu",
                "status": "ok", "median_s": median, "timing": {"spread": 0.0}, "info": info}

    def targets(records):
        return {t["id"]: t for t in report.evaluate_targets(records, {"cpu": {"gbps": 10.0}})}

    stored = rec("rollout_advect", "256x256 float32 T=1000 stored", 1.0, tape_bytes=1000, checkpoints=None)
    for median, bitwise, status in [(2.0, True, "met"), (2.5, True, "missed"), (1.5, False, "missed")]:
        ckpt = rec("rollout_advect", "256x256 float32 T=1000 c=32", median, tape_bytes=10, peak_bytes=20,
                   checkpoints=32, steps=1000, recomputed_steps=1408, peak_states=32, bitwise_equal_to_stored=bitwise)
        t = targets([stored, ckpt])["rollout_advect_overhead"]
        assert (t["measured"], t["status"]) == (f"{median:.2f}×", status), t
        assert "1408 steps recomputed" in t["detail"]
    t = targets([ckpt])["rollout_advect_overhead"]
    assert t["status"] == "not measured" and "no stored row" in t["detail"]
    smoke = [rec("rollout_smoke", "64x64 T=100 float64 stored", 1.0, tape_bytes=1000, checkpoints=None),
             rec("rollout_smoke", "64x64 T=100 float64 c=10", 2.1, tape_bytes=10, peak_bytes=20, checkpoints=10,
                 steps=100, recomputed_steps=125, peak_states=10, bitwise_equal_to_stored=True)]
    assert targets(smoke)["rollout_smoke_overhead"]["status"] == "met"
    for growth, status in [(0.005, "met"), (0.02, "missed")]:
        soak = rec("soak", "advection demo N=128 T=100 float64 10000 iterations", 2.0, iterations=10000,
                   warmup_iterations=500, rss_source="VmRSS", rss_warmup_bytes=100 << 20,
                   rss_end_bytes=int((100 << 20) * (1 + growth)), rss_max_bytes=int((100 << 20) * (1 + growth)),
                   rss_growth=growth, rss_growth_per_iteration_bytes=1.0, loss_first=1.0, loss_last=0.1)
        t = targets([soak])["soak_rss"]
        assert (t["measured"], t["status"]) == (f"{100 * growth:+.2f} %", status)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="the device check script needs bash and coreutils' timeout")
def test_device_check_dry_run(tmp_path):
    out = tmp_path / "out"
    env = _env()
    env.update(OUT=str(out), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert all(p.is_file() for p in out.iterdir()), files             # flat
    assert len(files) <= 8, files
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
    for name in ("device.txt", "tests.log", "tests.xml", "bench.log"):
        assert name in files
    assert "exit status: 0" in (out / "device.txt").read_text()
    _check_run(out, CASES - ROLLOUT_CASES)   # the long-rollout cases run on their own, reported in bench.log
    log = (out / "bench.log").read_text()
    assert "rollout benchmarks: ok" in (out / "device.txt").read_text()
    section = log[log.index("## Long rollouts"):]
    for case in ("rollout_advect", "rollout_smoke"):
        assert f"| {case} | gpudp-cpu |" in section
    assert "Soak (gpudp-cpu" in section
