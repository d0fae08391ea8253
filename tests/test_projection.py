"""project: divergence-free result on every boundary kind, walls, dense reference, symmetric projector,
gradients through the tape, options and errors. Runs on every backend of the ``backend`` fixture."""
import itertools

import numpy as np
import pytest

import gpudp
import reference_mac as R

KINDS = ("periodic", "dirichlet", "neumann")
CASES = [((12,), (k,)) for k in KINDS]
CASES += [((8, 6), b) for b in itertools.product(KINDS, repeat=2)]
CASES += [((4, 5, 3), (k,) * 3) for k in KINDS]
CASES += [((4, 5, 3), ("neumann", "periodic", "dirichlet")), ((4, 5, 3), ("neumann", "neumann", "periodic"))]
CASE_IDS = ["x".join(map(str, s)) + "-" + "-".join(b[:3] for b in bnd) for s, bnd in CASES]
# under the CUDA simulator (every GPU thread a Python thread) on grids of at most 3 cells per axis
SIM_CASES = {((12,), ("neumann",)), ((8, 6), ("periodic", "periodic")), ((8, 6), ("neumann", "dirichlet")),
             ((4, 5, 3), ("neumann", "periodic", "dirichlet"))}


def make_grid(shape, boundary, seed=0):
    rng = np.random.default_rng(seed)
    return gpudp.Grid(shape, spacing=tuple(0.5 + rng.random() for _ in shape), boundary=boundary)


def random_field(grid, rng, lead=()):
    return tuple(rng.standard_normal(lead + grid.face_shape(k)) for k in range(grid.ndim))


def dense_projector(grid):
    """``P = W − G L⁺ D W`` from the formula matrices (``W`` zeroes the neumann wall faces)."""
    args = (grid.shape, grid.spacing, grid.boundary)
    D, G, L = R.divergence_matrix(*args), R.gradient_matrix(*args), R.laplace_matrix(*args)
    W = np.diag(R.wall_mask(grid.shape, grid.boundary))
    return W - G @ np.linalg.pinv(L) @ D @ W, D, W


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("shape,boundary", CASES, ids=CASE_IDS)
def test_result_is_divergence_free_and_matches_dense_projector(backend, shape, boundary, batched):
    backend.simulate_only((shape, boundary) in SIM_CASES)
    shape = backend.small(shape)
    grid = make_grid(shape, boundary)
    lead = (2,) if batched else ()
    rng = np.random.default_rng(1)
    u = random_field(grid, rng, lead)
    ud = tuple(backend.asarray(c) for c in u)
    out, info = gpudp.project(ud, grid, tol=1e-8, return_info=True)
    assert isinstance(out, tuple) and len(out) == grid.ndim and info.converged
    for k, c in enumerate(out):
        assert tuple(c.shape) == lead + grid.face_shape(k) and backend.is_own(c)
    P, D, W = dense_projector(grid)
    u_vec = R.stack_faces(u, shape).reshape(lead + (-1,))
    new_vec = R.stack_faces([backend.to_numpy(c) for c in out], shape).reshape(lead + (-1,))
    div_before = np.linalg.norm((u_vec * np.diag(W)) @ D.T, axis=-1)
    div_after = np.linalg.norm(new_vec @ D.T, axis=-1)
    assert np.all(div_after <= 1e-5 * div_before)
    # the backend's own divergence agrees
    div_dev = backend.to_numpy(gpudp.divergence(out, grid)).reshape(lead + (-1,))
    assert np.all(np.linalg.norm(div_dev, axis=-1) <= 1e-5 * div_before)
    assert np.abs(new_vec - u_vec @ P.T).max() <= 1e-6 * np.abs(u_vec).max()


@pytest.mark.parametrize("shape,boundary", CASES, ids=CASE_IDS)
def test_walls_are_zero_and_their_input_values_ignored(backend, shape, boundary):
    backend.simulate_only((shape, boundary) in SIM_CASES)
    shape = backend.small(shape)
    grid = make_grid(shape, boundary, seed=2)
    rng = np.random.default_rng(3)
    u = random_field(grid, rng)
    out = gpudp.project(tuple(backend.asarray(c) for c in u), grid, tol=1e-10)
    changed = []
    for k, c in enumerate(u):
        c = c.copy()
        if boundary[k] == "neumann":
            index = [slice(None)] * grid.ndim
            for end in (0, -1):
                index[k] = end
                c[tuple(index)] = 1e3
                assert np.all(backend.to_numpy(out[k])[tuple(index)] == 0.0)
        changed.append(c)
    out2 = gpudp.project(tuple(backend.asarray(c) for c in changed), grid, tol=1e-10)
    for a, b in zip(out, out2):
        np.testing.assert_allclose(backend.to_numpy(b), backend.to_numpy(a), atol=1e-9)


@pytest.mark.parametrize("shape,boundary", [((8, 6), ("periodic", "periodic")), ((8, 6), ("neumann", "neumann")),
                                            ((12,), ("periodic",)), ((12,), ("neumann",)),
                                            ((4, 5, 3), ("periodic",) * 3), ((4, 5, 3), ("neumann",) * 3)],
                         ids=["2d-per", "2d-neu", "1d-per", "1d-neu", "3d-per", "3d-neu"])
def test_projector_is_symmetric(backend, shape, boundary):
    """vjp(project)(g) = project(g): the vector–Jacobian product is the projection of the incoming gradient."""
    backend.simulate_only(len(shape) == 2)
    grid = make_grid(backend.small(shape), boundary, seed=4)
    rng = np.random.default_rng(5)
    u = tuple(backend.asarray(c) for c in random_field(grid, rng))
    g = tuple(backend.asarray(c) for c in random_field(grid, rng))
    leaves = [gpudp.tensor(c, requires_grad=True) for c in u]
    with gpudp.Tape() as tape:
        out = gpudp.project(tuple(leaves), grid, tol=1e-12)
        total = None
        for o, s in zip(out, g):
            term = (o * s).sum()
            total = term if total is None else total + term
    assert tape.memory_bytes == sum(8 * c.size for c in g)  # the products' saved seeds; the projection: 0
    tape.backward(total)
    pg = gpudp.project(g, grid, tol=1e-12)
    scale = max(np.abs(backend.to_numpy(c)).max() for c in pg)
    for leaf, ref in zip(leaves, pg):
        assert np.abs(backend.to_numpy(leaf.grad) - backend.to_numpy(ref)).max() <= 1e-8 * scale


@pytest.mark.parametrize("boundary", [("dirichlet", "neumann"), ("periodic", "dirichlet")])
def test_vjp_matches_dense_transpose(backend, boundary):
    grid = make_grid(backend.small((5, 4)), boundary, seed=6)
    rng = np.random.default_rng(7)
    u = tuple(backend.asarray(c) for c in random_field(grid, rng))
    w = random_field(grid, rng)
    out, vjp_fn = gpudp.vjp(lambda a, b: gpudp.project((a, b), grid, tol=1e-12)[1], *u)
    (ga, gb) = vjp_fn(backend.asarray(w[1]))
    P, _, _ = dense_projector(grid)
    seed = np.concatenate([np.zeros(np.prod(grid.face_shape(0))), w[1].reshape(-1)])
    ref = seed @ P
    got = R.stack_faces([backend.to_numpy(ga), backend.to_numpy(gb)], grid.shape)
    assert np.abs(got - ref).max() <= 1e-8 * np.abs(ref).max()


def test_gradcheck_through_projection():
    grid = gpudp.Grid((4, 3), spacing=(1.0, 0.8), boundary=("neumann", "periodic"))
    rng = np.random.default_rng(8)
    u = random_field(grid, rng)
    # linear up to the solver tolerance: a large finite-difference step is exact
    assert gpudp.gradcheck(lambda a, b: gpudp.project((a, b), grid, tol=1e-13)[0], list(u), eps=1e-2)


def test_projection_is_idempotent_and_backward_is_one_solve(backend, monkeypatch):
    grid = gpudp.Grid(backend.small((10, 8)), boundary=("neumann", "dirichlet"))
    rng = np.random.default_rng(9)
    u = tuple(backend.asarray(c) for c in random_field(grid, rng))
    once = gpudp.project(u, grid, tol=1e-12)
    twice = gpudp.project(once, grid, tol=1e-12)
    for a, b in zip(once, twice):
        np.testing.assert_allclose(backend.to_numpy(b), backend.to_numpy(a), atol=1e-9)
    assert all(backend.is_own(c) and not isinstance(c, gpudp.Tensor) for c in once)
    leaves = [gpudp.tensor(c, requires_grad=True) for c in u]
    solves = backend.count_calls(monkeypatch, "cg_solve")
    with gpudp.Tape() as tape:
        out = gpudp.project(tuple(leaves), grid, preconditioner=None)   # the backend's own CG
        loss = gpudp.l2_loss(out[0], backend.asarray(np.zeros(grid.face_shape(0))))
    assert tape.memory_bytes == out[0].size * 8  # the loss's residual; the projection saves nothing
    assert len(solves) == 1
    tape.backward(loss)
    assert len(solves) == 2
    assert all(leaf.grad is not None for leaf in leaves)


def test_float32(backend):
    grid = gpudp.Grid(backend.small((12, 10)), boundary="neumann")
    u = tuple(backend.asarray(c.astype(np.float32)) for c in random_field(grid, np.random.default_rng(10)))
    out = gpudp.project(u, grid, tol=1e-5)
    assert all(backend.to_numpy(c).dtype == np.float32 for c in out)
    div0 = np.linalg.norm(backend.to_numpy(gpudp.divergence(gpudp.project(u, grid, tol=1e-5, maxiter=1,
                                                                          throw=False, preconditioner=None),
                                                            grid)))
    div1 = np.linalg.norm(backend.to_numpy(gpudp.divergence(out, grid)).astype(np.float64))
    assert div1 <= 1e-4 * div0


def test_solve_options_and_errors():
    grid = gpudp.Grid((6, 5), boundary="neumann")
    u = random_field(grid, np.random.default_rng(11))
    with pytest.raises(gpudp.SolveError) as err:
        gpudp.project(u, grid, tol=1e-12, maxiter=2, preconditioner=None)
    assert err.value.iterations == 2
    out, info = gpudp.project(u, grid, tol=1e-12, maxiter=2, throw=False, return_info=True, preconditioner=None)
    assert not info.converged and gpudp.last_solve_info() == info
    p0 = np.zeros((6, 5))
    out2, info2 = gpudp.project(u, grid, tol=1e-6, x0=p0, preconditioner="jacobi", return_info=True)
    assert info2.converged
    with pytest.raises(TypeError, match=r"project: unexpected keyword argument 'tolerance'; the solve options "
                                        r"are tol, maxiter"):
        gpudp.project(u, grid, tolerance=1e-6)
    with pytest.raises(ValueError, match=r"poisson_solve: tol must be > 0, got -1.0"):
        gpudp.project(u, grid, tol=-1.0)
    with pytest.raises(gpudp.ShapeError, match=r"project: u\[1\] has shape \(6, 5\); expected \(6, 6\) or "
                                              r"\(B, \*\(6, 6\)\)"):
        gpudp.project((u[0], np.zeros((6, 5))), grid)
    with pytest.raises(TypeError, match=r"project: u must be a staggered field, a tuple of 2 face arrays"):
        gpudp.project(np.zeros((2, 6, 5)), grid)
    with pytest.raises(gpudp.ShapeError, match=r"project: u has 3 components; expected 2"):
        gpudp.project(u + (u[0],), grid)
    bad = (u[0].copy(), u[1])
    bad[0][2, 2] = np.nan
    with pytest.raises(ValueError, match=r"poisson_solve: b contains non-finite values"):
        gpudp.project(bad, grid)
