"""The smoke demo (issue 9): the problem as specified, its goal, its figures, and backend agreement."""
import numpy as np
import pytest

import gpudp

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_smoke_problem_is_the_specified_one():
    from gpudp.demo import smoke

    solid = smoke.obstacle()
    # cells (i, j) with (i + 1/2 - 32)^2 + (j + 1/2 - 34)^2 < 36, counted independently
    expected = {(i, j) for i in range(64) for j in range(64) if (i + 0.5 - 32) ** 2 + (j + 0.5 - 34) ** 2 < 36}
    assert {tuple(ij) for ij in np.argwhere(solid)} == expected and solid.shape == (64, 64)
    d0 = smoke.initial_density()
    assert d0[31, 11] == pytest.approx(np.exp(-(0.25 + 0.25) / 32))
    # the hidden velocity: psi from outer products of the sine modes (a different code path from the demo's)
    rng = np.random.default_rng(2)
    nodes = np.arange(65)
    psi = np.zeros((65, 65))
    for kx in (1, 2, 3):
        for ky in (1, 2, 3):
            psi += rng.standard_normal() * np.outer(np.sin(np.pi * kx * nodes / 64),
                                                    np.sin(np.pi * ky * nodes / 64)) / (kx * kx + ky * ky)
    ux, uy = np.diff(psi, axis=1), -np.diff(psi, axis=0)
    s = 0.15 / max(abs(ux).max(), abs(uy).max())
    hx, hy = smoke.hidden_velocity()
    assert hx.shape == (65, 64) and hy.shape == (64, 65)
    np.testing.assert_allclose(hx, s * ux, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hy, s * uy, rtol=1e-12, atol=1e-15)
    assert max(abs(hx).max(), abs(hy).max()) == pytest.approx(0.15)
    # no flow through the box walls (sin(pi k) is zero up to rounding)
    assert np.abs(hx[[0, -1]]).max() < 1e-15 and np.abs(hy[:, [0, -1]]).max() < 1e-15
    grid = smoke.SmokeProblem(steps=1).grid
    assert grid.shape == (64, 64) and grid.boundary == ("neumann", "neumann") and grid.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(grid.solid, solid)


def test_smoke_gradient_matches_finite_differences():
    from gpudp.demo import smoke

    problem = smoke.SmokeProblem(tol=1e-12, steps=4)
    rng = np.random.default_rng(3)
    u0 = tuple(0.05 * rng.standard_normal(problem.grid.face_shape(k)) for k in range(2))
    loss, grads = problem.loss_and_grad(u0)
    v = [rng.standard_normal(g.shape) for g in grads]
    eps = 1e-6
    plus = float(problem.loss(tuple(c + eps * d for c, d in zip(u0, v))).item())
    minus = float(problem.loss(tuple(c - eps * d for c, d in zip(u0, v))).item())
    fd = (plus - minus) / (2 * eps)
    ana = sum(float(np.sum(gpudp.to_numpy(g) * d)) for g, d in zip(grads, v))
    assert ana == pytest.approx(fd, rel=1e-5)
    # closed faces (walls and faces touching the disc) get no gradient: the projection zeroes them
    gx = gpudp.to_numpy(grads[0])
    assert np.all(gx[[0, -1]] == 0)


@pytest.mark.slow
def test_smoke_demo_meets_its_goal(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the demo's figures need matplotlib (pip install 'gpudp[demo]')")
    from gpudp.demo import smoke

    result = smoke.run(tmp_path, quiet=True)
    out = capsys.readouterr().out
    losses = np.asarray(result["losses"])
    assert result["backend"] == "cpu" and len(losses) == smoke.ITERATIONS + 1
    assert losses[-1] <= 0.05 * losses[0] and result["goals_met"] and result["loss_ratio"] <= 0.05
    assert losses[1] < losses[0]
    table = [ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()]
    assert table[0][0] == "0" and table[-1][0] == str(smoke.ITERATIONS)
    assert float(table[-1][1]) == pytest.approx(result["loss_final"], rel=1e-5)
    for name in ("target", "before", "final", "velocity", "loss", "frames"):
        path = tmp_path / f"smoke_{name}.png"
        assert str(path) == result["figures"][name]
        assert path.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cupy", "numba-cuda"])
def test_smoke_loss_history_agrees_across_backends(name):
    """With a tight solver tolerance the loss history of a few iterations is the same on every backend."""
    from gpudp.demo import smoke

    info = gpudp.available_backends()[name]
    if not info.available or "simulator" in info.device.lower():
        pytest.skip(f"backend {name!r} needs a real GPU here: {info.reason or info.device}")

    def history(backend):
        with gpudp.use_backend(backend):
            problem = smoke.SmokeProblem(tol=1e-10)
            control = problem.zero_control()
            out = []
            for _ in range(5):
                loss, grads = problem.loss_and_grad(control)
                for c, g in zip(control, grads):
                    c -= smoke.STEP * gpudp.Tensor(g)
                out.append(loss)
            return np.asarray(out)

    np.testing.assert_allclose(history(name), history("cpu"), rtol=1e-6)
