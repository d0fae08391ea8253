"""The smoke simulation of issue 9 in gpudp against an independent JAX implementation
(``benchmarks/jax_smoke.py``, the benchmarks' baseline), on the CPU in float64.

First the JAX implementation itself is checked against references that share no code with it: the float64
NumPy loops of ``reference_advect_mac`` (advection, interpolation), a dense pseudo-inverse projection built from
``reference_mac``'s matrices, and finite differences of its loss. Then gpudp's loss and gradient of the smoke
inverse problem (``advect_mac``, ``at_faces``, ``project`` on a closed box with a solid disc, on a tape) must
equal JAX's to about 1e-8 relative.
"""
import pathlib
import sys

import numpy as np
import pytest

pytest.importorskip("jax", reason="the JAX cross-check needs jax (pip install jax)")

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gpudp  # noqa: E402
import reference_advect_mac as RA  # noqa: E402
import reference_mac as RM  # noqa: E402
from benchmarks import jax_smoke as JS  # noqa: E402

TOL = 1e-13          # CG tolerance of both implementations in the cross-check
DT, BETA = 1.0, 0.02


def _np(x):
    return np.asarray(x, np.float64)


def _random_faces(shape, rng, scale=0.2):
    return tuple(scale * rng.standard_normal(tuple(n + (j == k) for j, n in enumerate(shape)))
                 for k in range(len(shape)))


def _disc(n, centre, radius):
    x, y = JS.centres(n)
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 < radius ** 2


# -- the JAX implementation against independent references -------------------------------------------------------


@pytest.mark.parametrize("shape,spacing", [((5, 4), (1.0, 0.7)), ((3, 4, 3), (0.9, 1.2, 0.8))],
                         ids=["2d", "3d"])
def test_jax_advection_and_interpolation_match_numpy_reference(shape, spacing):
    rng = np.random.default_rng(0)
    bnd = ("neumann",) * len(shape)
    sim = JS.SmokeJax(shape, spacing=spacing)
    q = rng.standard_normal(shape)
    u = _random_faces(shape, rng)
    U = _random_faces(shape, rng)
    ju, jU = tuple(sim.put(c) for c in u), tuple(sim.put(c) for c in U)
    dt = 0.7
    np.testing.assert_allclose(_np(sim.advect_cells(sim.put(q), ju, dt)),
                               RA.advect_cells(q, u, dt, shape, spacing, bnd), rtol=0, atol=1e-13)
    for got, want in zip(sim.advect_faces(ju, ju, dt), RA.advect_faces(u, u, dt, shape, spacing, bnd)):
        np.testing.assert_allclose(_np(got), want, rtol=0, atol=1e-13)
    for got, want in zip(sim.advect_faces(jU, ju, dt), RA.advect_faces(U, u, dt, shape, spacing, bnd)):
        np.testing.assert_allclose(_np(got), want, rtol=0, atol=1e-13)
    for got, want in zip(sim.at_faces(sim.put(q)), RA.at_faces(q, shape, bnd)):
        np.testing.assert_allclose(_np(got), want, rtol=0, atol=1e-15)


def _dense_projection(shape, spacing, solid, u):
    """``W u − G_c L⁺ D W u`` with ``W`` zeroing closed faces and ``G_c = W G``, ``L = D G_c`` (dense)."""
    bnd = ("neumann",) * len(shape)
    D = RM.divergence_matrix(shape, spacing, bnd)
    G = RM.gradient_matrix(shape, spacing, bnd)
    fluid = ~solid
    open_parts = []
    for k, fs in enumerate(RM.face_shapes(shape, bnd)):
        m = np.zeros(fs)
        for f in np.ndindex(*fs):
            lo = list(f)
            lo[k] -= 1
            m[f] = 0 < f[k] < shape[k] and fluid[tuple(lo)] and fluid[f]
        open_parts.append(m.reshape(-1))
    W = np.diag(np.concatenate(open_parts))
    Gc = W @ G
    L = D @ Gc
    vec = W @ RM.stack_faces(u, shape)
    return RM.split_faces(vec - Gc @ np.linalg.pinv(L) @ D @ vec, shape, bnd), D, np.diag(W)


@pytest.mark.parametrize("case", ["disc", "two-regions", "3d"])
def test_jax_projection_matches_dense_pseudo_inverse(case):
    rng = np.random.default_rng(1)
    if case == "disc":
        shape, spacing, solid = (9, 8), (1.0, 1.0), _disc(9, (4.5, 4.0), 2.2)[:, :8]
    elif case == "two-regions":  # a solid wall across the box seals two fluid regions
        shape, spacing = (7, 6), (0.8, 1.1)
        solid = np.zeros(shape, bool)
        solid[3, :] = True
        solid[5, 2] = True
    else:
        shape, spacing = (4, 5, 3), (1.0, 0.9, 1.1)
        solid = np.zeros(shape, bool)
        solid[1:3, 2, 1] = True
    sim = JS.SmokeJax(shape, solid, spacing=spacing, tol=1e-13)
    assert sim.regions == (2 if case == "two-regions" else 1)
    u = _random_faces(shape, rng, 1.0)
    got = [_np(c) for c in sim.project(tuple(sim.put(c) for c in u), sim.geometry)]
    want, D, open_mask = _dense_projection(shape, spacing, solid, u)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10 * np.abs(w).max())
    stacked = RM.stack_faces(got, shape)
    assert np.all(stacked[open_mask == 0] == 0)                       # closed faces exactly 0
    div = (D @ stacked).reshape(shape)
    assert np.abs(div[~solid]).max() <= 1e-10 * np.abs(D @ RM.stack_faces(u, shape)).max()


def test_jax_smoke_gradient_matches_finite_differences():
    n, steps = 10, 3
    sim = JS.SmokeJax((n, n), _disc(n, (5.0, 5.5), 1.6), tol=1e-13)
    rng = np.random.default_rng(2)
    d0 = sim.put(JS.initial_density(n))
    target = sim.put(0.5 * JS.initial_density(n) + 0.1 * rng.random((n, n)))
    u0 = tuple(sim.put(c) for c in _random_faces((n, n), rng, 0.1))
    v = _random_faces((n, n), rng, 1.0)
    loss, grad = sim.value_and_grad_fn(sim.geometry, u0, d0, target, steps=steps)
    assert np.isclose(float(loss), float(sim.loss_fn(sim.geometry, u0, d0, target, steps=steps)), rtol=1e-14)
    eps = 1e-6
    shifted = lambda s: float(sim.loss_fn(sim.geometry, tuple(c + s * sim.put(w) for c, w in zip(u0, v)),  # noqa: E731
                                          d0, target, steps=steps))
    fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
    analytic = sum(float(np.sum(_np(g) * w)) for g, w in zip(grad, v))
    assert abs(fd - analytic) <= 1e-6 * abs(analytic) + 1e-9, (fd, analytic)


def test_issue_problem_setup():
    """The issue's problem data: the obstacle disc, the initial blob, the hidden velocity's scale and walls."""
    solid = JS.obstacle()
    assert solid.shape == (64, 64) and solid[32, 34] and solid[26, 34] and not solid[25, 34]
    assert solid[32, 39] and not solid[32, 40] and solid.sum() == 112
    d0 = JS.initial_density()
    assert d0[31, 11] == d0[32, 12] and np.isclose(d0.max(), np.exp(-0.25 / 16))
    ux, uy = JS.hidden_velocity()
    assert ux.shape == (65, 64) and uy.shape == (64, 65)
    assert np.isclose(max(np.abs(ux).max(), np.abs(uy).max()), 0.15)
    assert np.abs(ux[[0, -1], :]).max() < 1e-15 and np.abs(uy[:, [0, -1]]).max() < 1e-15   # sin(kπ)
    div = (ux[1:] - ux[:-1]) + (uy[:, 1:] - uy[:, :-1])                 # discrete stream function: 0
    assert np.abs(div).max() < 1e-15


def test_demo_problem_data_match_the_independent_setup():
    """gpudp's smoke demo builds the same obstacle, initial density and hidden velocity."""
    from gpudp.demo import smoke
    assert smoke.SHAPE == (JS.N, JS.N) and (smoke.DT, smoke.BETA, smoke.STEPS) == (JS.DT, JS.BETA, JS.STEPS)
    assert np.array_equal(smoke.obstacle(), JS.obstacle())
    np.testing.assert_allclose(smoke.initial_density(), JS.initial_density(), rtol=1e-15, atol=0)
    for got, want in zip(smoke.hidden_velocity(), JS.hidden_velocity()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-16)


# -- gpudp against JAX -------------------------------------------------------------------------------------------


def gpudp_smoke_loss(u0, d0, target, grid, steps, **solve):
    """The smoke loss in gpudp (on the active tape, if any)."""
    u = gpudp.project(tuple(u0), grid, **solve)
    d = d0
    for _ in range(steps):
        d_new = gpudp.advect_mac(d, u, DT, grid)
        w = gpudp.advect_mac(u, u, DT, grid)
        lift = gpudp.at_faces(d_new, grid)[1]
        u = gpudp.project((w[0], w[1] + (DT * BETA) * lift), grid, **solve)
        d = d_new
    return gpudp.l2_loss(d, target)


@pytest.mark.parametrize("with_obstacle,preconditioner", [(True, None), (True, "jacobi"), (False, None)],
                         ids=["disc-plain", "disc-jacobi", "open-plain"])
def test_gpudp_smoke_loss_and_gradient_match_jax(with_obstacle, preconditioner):
    n, steps = 16, 5
    solid = _disc(n, (8.0, 8.5), 2.5) if with_obstacle else None
    rng = np.random.default_rng(3)
    x, y = JS.centres(n)
    d0 = np.exp(-((x - 8) ** 2 + (y - 4) ** 2) / 4.0)
    target = 0.8 * np.roll(d0, 2, axis=1) + 0.05 * rng.random((n, n))
    u0 = _random_faces((n, n), rng, 0.08)

    sim = JS.SmokeJax((n, n), solid, tol=TOL)
    j_loss, j_grad = sim.value_and_grad_fn(sim.geometry, tuple(sim.put(c) for c in u0), sim.put(d0),
                                           sim.put(target), steps=steps)
    j_grad = [_np(g) for g in j_grad]

    kwargs = {} if solid is None else {"solid": solid}
    grid = gpudp.Grid((n, n), boundary="neumann", **kwargs)
    leaves = [gpudp.tensor(c, requires_grad=True) for c in u0]
    with gpudp.Tape() as tape:
        loss = gpudp_smoke_loss(leaves, gpudp.asarray(d0), gpudp.asarray(target), grid, steps, tol=TOL,
                                preconditioner=preconditioner)
    grads = [gpudp.to_numpy(g) for g in tape.gradient(loss, leaves)]

    assert np.isclose(float(loss.item()), float(j_loss), rtol=1e-8, atol=0), (float(loss.item()), float(j_loss))
    scale = max(np.abs(g).max() for g in j_grad)
    assert scale > 0
    for k, (g, jg) in enumerate(zip(grads, j_grad)):
        assert g.shape == jg.shape
        err = np.abs(g - jg).max() / scale
        assert err <= 1e-8, f"component {k}: max |gpudp − JAX| / max |JAX| = {err:.2e}"
    # the same loss without a tape: plain library calls on arrays
    plain = gpudp_smoke_loss([gpudp.asarray(c) for c in u0], gpudp.asarray(d0), gpudp.asarray(target), grid,
                             steps, tol=TOL, preconditioner=preconditioner)
    assert np.isclose(float(gpudp.to_numpy(plain)), float(j_loss), rtol=1e-8, atol=0)
