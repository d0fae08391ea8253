"""The advection demo (issue 2's acceptance 7): its numbers and its figures."""
import subprocess
import sys

import numpy as np
import pytest

import gpudp

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_advection_demo_meets_its_goals(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the demo's figures need matplotlib (pip install 'gpudp[demo]')")
    from gpudp.demo import advection

    result = advection.run(tmp_path, quiet=True)
    out = capsys.readouterr().out

    assert result["backend"] == "cpu" and "backend 'cpu'" in out
    assert result["iterations"] == 1000 and len(result["losses"]) == 1001
    assert result["loss_reduction"] >= 1000.0
    assert result["loss_final"] * 1000.0 <= result["loss_initial"]
    assert result["max_velocity_error"] <= 0.1
    assert result["mask_cells"] >= 10
    assert result["goals_met"]
    # recomputed from the returned fields, independently of the demo's own bookkeeping
    _, x, d0, u_true = advection.problem()
    np.testing.assert_allclose(result["u_true"], 0.6 + 0.3 * np.sin(2 * np.pi * x))
    target = gpudp.advect_upwind(d0, u_true, 0.002, gpudp.Grid(128, spacing=1 / 128), steps=100)
    mask = target > 0.2
    assert np.abs(result["u_learned"] - result["u_true"])[mask].max() <= 0.1
    assert np.all(np.diff(result["losses"][:50]) < 0)  # plain GD with a small step: monotone at first

    # the printed table: iteration, loss, time
    assert "iteration" in out and "loss" in out and "time" in out
    table = [ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()]
    assert [row[0] for row in table][:2] == ["0", "1"] and table[-1][0] == "1000"
    assert float(table[-1][1]) == pytest.approx(result["loss_final"], rel=1e-4)

    for name in ("densities", "velocity", "loss"):
        path = tmp_path / f"advection_{name}.png"
        assert str(path) == result["figures"][name]
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_cli_rejects_an_unknown_demo(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpudp", "demo", "nonsense", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "unknown demo 'nonsense'" in r.stderr and "advection" in r.stderr
