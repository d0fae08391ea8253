"""The benchmark suite (``python -m benchmarks``): its smoke run, its byte models and sizes, and the GPU device
check's dry run. Everything here runs on the CPU."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = {"advect_fwd", "advect_adj", "seed_grad", "poisson_solve", "cg_iter", "project_grad",
         "mac_fwd", "mac_adj", "smoke_fwd", "smoke_adj", "smoke_demo"}


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


def _check_run(folder):
    path, run = _results(folder)
    assert path.with_suffix(".md").exists()
    pytest.importorskip("matplotlib")
    assert path.with_suffix(".png").stat().st_size > 1000
    records = run["records"]
    assert {r["case"] for r in records} == CASES
    errors = [f"{r['case']} {r['config']} {r['impl']}: {r['status']}" for r in records
              if r["status"].startswith("error")]
    assert not errors, "\n".join(errors)
    gpudp_rows = [r for r in records if r["impl"] == "gpudp-cpu"]
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
    _check_run(out)
