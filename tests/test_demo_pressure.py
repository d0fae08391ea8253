"""The pressure demo (issue 3's acceptance 6): its numbers, its table and its figures."""
import numpy as np
import pytest

import gpudp

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_pressure_demo_meets_its_goals(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the demo's figures need matplotlib (pip install 'gpudp[demo]')")
    from gpudp.demo import pressure

    result = pressure.run(tmp_path, quiet=True)
    out = capsys.readouterr().out
    losses = np.asarray(result["losses"])
    assert result["backend"] == "cpu" and len(losses) == 21
    assert np.all(np.diff(losses) < 0) and result["monotone"]
    assert losses[-1] < 0.6 * losses[0] and result["goals_met"]
    assert result["loss_initial"] == losses[0] and result["loss_final"] == losses[-1]
    table = [ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()]
    assert [row[0] for row in table] == [str(i) for i in range(21)]
    assert float(table[-1][1]) == pytest.approx(result["loss_final"], rel=1e-5)
    for name in ("target", "control", "projected", "loss"):
        path = tmp_path / f"pressure_{name}.png"
        assert str(path) == result["figures"][name]
        assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_pressure_problem_is_the_specified_one():
    from gpudp.demo.pressure import PressureProblem, face_centres

    problem = PressureProblem(tol=1e-12)  # tight, for the finite-difference check below
    grid = problem.grid
    assert grid.shape == (80, 64) and grid.spacing == (1.0, 1.0) and grid.boundary == ("neumann", "neumann")
    x0, _ = face_centres(grid, 0)
    x1, y1 = face_centres(grid, 1)
    assert x0.shape == (81, 64) and x0[40, 0] == 40.0 and x1[39, 0] == 39.5 and y1[0, 5] == 5.0
    np.testing.assert_array_equal(problem.left_host[0], x0 < 40)
    np.testing.assert_array_equal(problem.right_host[1], x1 > 40)
    np.testing.assert_array_equal(problem.target_host[0], 0.0)
    expected = np.where(x1 > 40, 2 * np.exp(-0.5 * ((x1 - 50) ** 2 + (y1 - 10) ** 2) / 32 ** 2), 0.0)
    np.testing.assert_allclose(problem.target_host[1], expected)
    control = problem.initial_control()
    for c, m in zip(control, problem.left_host):
        c = c.numpy()
        assert np.all(np.abs(c) <= 0.1) and np.all(c[~m] == 0.0) and np.abs(c[m]).max() > 0.09
    # the gradient lives on the control faces only, and matches a directional finite difference
    loss, grads = problem.loss_and_grad(control)
    assert all(np.all(gpudp.to_numpy(g)[~m] == 0.0) for g, m in zip(grads, problem.left_host))
    rng = np.random.default_rng(1)
    v = [rng.standard_normal(m.shape) * m for m in problem.left_host]
    eps = 1.0  # the loss is quadratic: central differences are exact up to the solver tolerance
    plus = float(problem.loss([c.numpy() + eps * d for c, d in zip(control, v)]).item())
    minus = float(problem.loss([c.numpy() - eps * d for c, d in zip(control, v)]).item())
    fd = (plus - minus) / (2 * eps)
    ana = sum(float(np.sum(gpudp.to_numpy(g) * d)) for g, d in zip(grads, v))
    assert ana == pytest.approx(fd, rel=1e-6)
