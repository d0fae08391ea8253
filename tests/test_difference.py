"""Staggered difference operators: dense float64 references, dot-product tests, laplace = div∘grad, tape use,
errors. Runs on every backend of the ``backend`` fixture (tiny grids, so the CUDA simulator copes)."""
import itertools

import numpy as np
import pytest

import gpudp
import reference_mac as R

KINDS = ("periodic", "dirichlet", "neumann")
SHAPES = {1: (5,), 2: (4, 3), 3: (3, 4, 2)}

# every dimension × boundary kind, and every per-axis mix in 2-D and a spread of them in 3-D
CASES = [(SHAPES[1], (k,)) for k in KINDS]
CASES += [(SHAPES[2], b) for b in itertools.product(KINDS, repeat=2)]
CASES += [(SHAPES[3], (k,) * 3) for k in KINDS]
CASES += [(SHAPES[3], b) for b in [("periodic", "dirichlet", "neumann"), ("neumann", "periodic", "dirichlet"),
                                   ("dirichlet", "neumann", "periodic"), ("neumann", "neumann", "periodic"),
                                   ("periodic", "periodic", "dirichlet")]]
# grids with an axis of one cell (lone periodic cell, one cell between walls)
CASES += [((1,), ("periodic",)), ((1, 3), ("dirichlet", "periodic")), ((3, 1), ("periodic", "neumann")),
          ((2, 1, 3), ("periodic", "periodic", "neumann"))]
CASE_IDS = ["x".join(map(str, s)) + "-" + "-".join(b[:3] for b in bnd) for s, bnd in CASES]


def make_grid(shape, boundary, seed=0):
    rng = np.random.default_rng(seed)
    spacing = tuple(0.5 + rng.random() for _ in shape)
    return gpudp.Grid(shape, spacing=spacing, boundary=boundary)


def dense(grid):
    args = (grid.shape, grid.spacing, grid.boundary)
    return R.divergence_matrix(*args), R.gradient_matrix(*args), R.laplace_matrix(*args)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def tol_for(dtype):
    return 1e-12 if dtype == np.float64 else 2e-6


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,boundary", CASES, ids=CASE_IDS)
def test_operators_and_adjoints_match_dense_reference(backend, shape, boundary, dtype, batched):
    grid = make_grid(shape, boundary)
    D, G, L = dense(grid)
    rng = np.random.default_rng(1)
    lead = (2,) if batched else ()
    p = rng.standard_normal(lead + (D.shape[0],)).astype(dtype)
    u = rng.standard_normal(lead + (D.shape[1],)).astype(dtype)
    w_cells = rng.standard_normal(p.shape).astype(dtype)
    w_faces = rng.standard_normal(u.shape).astype(dtype)
    p_grid = p.reshape(lead + grid.shape)
    u_faces = R.split_faces(u, grid.shape, boundary, lead)
    tol = tol_for(dtype)

    def cells(x):
        return backend.to_numpy(x).reshape(lead + (-1,))

    def faces(xs):
        assert isinstance(xs, tuple) and len(xs) == grid.ndim
        for k, x in enumerate(xs):
            assert tuple(x.shape) == lead + grid.face_shape(k)
            assert x.dtype == dtype
        return R.stack_faces([backend.to_numpy(x) for x in xs], grid.shape)

    pd = backend.asarray(p_grid)
    ud = tuple(backend.asarray(c) for c in u_faces)

    # forward operators against the matrices built from the formulas
    div = gpudp.divergence(ud, grid)
    assert tuple(div.shape) == lead + grid.shape and div.dtype == dtype and backend.is_own(div)
    assert rel(cells(div), u.astype(np.float64) @ D.T) <= tol
    assert rel(faces(gpudp.spatial_gradient(pd, grid)), p.astype(np.float64) @ G.T) <= tol
    lap = gpudp.laplace(pd, grid)
    assert tuple(lap.shape) == lead + grid.shape and lap.dtype == dtype
    assert rel(cells(lap), p.astype(np.float64) @ L.T) <= tol

    # vector–Jacobian products (the hand-written transposed kernels) against the transposed matrices
    wc = backend.asarray(w_cells.reshape(lead + grid.shape))
    wf = R.split_faces(w_faces, grid.shape, boundary, lead)
    _, vjp_div = gpudp.vjp(lambda *f: gpudp.divergence(f, grid), *ud)
    div_t = vjp_div(wc)
    assert rel(faces(div_t), w_cells.astype(np.float64) @ D) <= tol
    _, vjp_lap = gpudp.vjp(lambda q: gpudp.laplace(q, grid), pd)
    assert rel(cells(vjp_lap(wc)[0]), w_cells.astype(np.float64) @ L) <= tol
    leaf = gpudp.tensor(pd, requires_grad=True)
    seeds = [backend.asarray(c) for c in wf]
    # a vector–Jacobian product of a multi-output operator: one seed per output, through a weighted sum
    with gpudp.Tape() as tape:
        gr = gpudp.spatial_gradient(leaf, grid)
        total = None
        for g_k, s_k in zip(gr, seeds):
            term = (g_k * s_k).sum()
            total = term if total is None else total + term
    tape.backward(total)
    assert rel(cells(leaf.grad), w_faces.astype(np.float64) @ G) <= 10 * tol

    # dot-product tests with the backend's own results: <A x, y> = <x, Aᵀ y>
    div64 = cells(div).astype(np.float64)
    lhs = float(np.sum(div64 * w_cells))
    rhs = float(np.sum(u * faces(div_t)))
    assert abs(lhs - rhs) <= 100 * tol * (np.abs(div64 * w_cells).sum() + 1e-300)


@pytest.mark.parametrize("shape,boundary", CASES, ids=CASE_IDS)
def test_laplace_equals_divergence_of_gradient(backend, shape, boundary):
    grid = make_grid(shape, boundary, seed=3)
    p = backend.asarray(np.random.default_rng(4).standard_normal((3,) + shape))
    lap = backend.to_numpy(gpudp.laplace(p, grid))
    dg = backend.to_numpy(gpudp.divergence(gpudp.spatial_gradient(p, grid), grid))
    assert np.abs(lap - dg).max() <= 1e-13 * max(np.abs(lap).max(), 1.0)


def test_dense_references_agree_with_each_other():
    """The reference matrices themselves: L = D G, and Gᵀ = −D W (W masks the neumann wall faces)."""
    for shape, boundary in CASES:
        grid = make_grid(shape, boundary)
        D, G, L = dense(grid)
        W = np.diag(R.wall_mask(shape, boundary))
        np.testing.assert_allclose(D @ G, L, atol=1e-12)
        np.testing.assert_allclose(G.T, -D @ W, atol=1e-12)


def test_gradient_boundary_faces():
    """Neumann walls carry zero gradient; a dirichlet face sees the ghost value 0."""
    grid = gpudp.Grid((3, 2), spacing=(2.0, 1.0), boundary=("neumann", "dirichlet"))
    p = np.arange(6.0).reshape(3, 2) + 1.0
    g0, g1 = gpudp.spatial_gradient(p, grid)
    assert g0.shape == (4, 2) and g1.shape == (3, 3)
    np.testing.assert_array_equal(g0[[0, 3]], 0.0)
    np.testing.assert_allclose(g0[1], (p[1] - p[0]) / 2.0)
    np.testing.assert_allclose(g1[:, 0], p[:, 0])
    np.testing.assert_allclose(g1[:, 2], -p[:, 1])


def test_tensor_in_tensor_out_and_partial_output_gradient():
    grid = gpudp.Grid((4, 3), boundary=("periodic", "neumann"))
    p = gpudp.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    with gpudp.Tape() as tape:
        gx, gy = gpudp.spatial_gradient(p, grid)
        loss = gpudp.l2_loss(gy, np.zeros((4, 4)))  # only the second component reaches the loss
    assert isinstance(gx, gpudp.Tensor) and isinstance(gy, gpudp.Tensor)
    tape.backward(loss)
    _, G, _ = dense(grid)
    gy_ref = (p.numpy().reshape(-1) @ G.T)[12:]
    seed = np.concatenate([np.zeros(12), 2 * gy_ref])
    np.testing.assert_allclose(p.grad.reshape(-1), seed @ G, atol=1e-12)


def test_raw_arrays_give_raw_arrays_and_no_tape_entry():
    grid = gpudp.Grid(6, boundary="dirichlet")
    p = np.linspace(0, 1, 6)
    with gpudp.Tape() as tape:
        (g,) = gpudp.spatial_gradient(p, grid)
        d = gpudp.divergence((g,), grid)
    assert type(g) is np.ndarray and type(d) is np.ndarray and len(tape) == 0
    np.testing.assert_allclose(d, gpudp.laplace(p, grid), atol=1e-13)


def test_operators_record_nothing_for_backward():
    grid = gpudp.Grid((5, 4), boundary="neumann")
    u = tuple(gpudp.tensor(np.ones(grid.face_shape(k)), requires_grad=True) for k in range(2))
    with gpudp.Tape() as tape:
        d = gpudp.divergence(u, grid)
        lp = gpudp.laplace(d, grid)
        gpudp.spatial_gradient(lp, grid)
    assert len(tape) == 3 and tape.memory_bytes == 0


# -- errors ------------------------------------------------------------------------------------------------
def test_staggered_field_errors_name_what_was_expected():
    grid = gpudp.Grid((4, 3), boundary=("neumann", "periodic"))
    good = (np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(TypeError, match=r"divergence: u must be a staggered field, a tuple of 2 face arrays.*"
                                        r"\(5, 3\), \(4, 3\).*ndarray of shape \(2, 4, 3\)"):
        gpudp.divergence(np.zeros((2, 4, 3)), grid)
    with pytest.raises(gpudp.ShapeError, match=r"divergence: u has 1 components; expected 2"):
        gpudp.divergence(good[:1], grid)
    with pytest.raises(gpudp.ShapeError, match=r"divergence: u\[0\] has shape \(4, 3\); expected \(5, 3\) or "
                                              r"\(B, \*\(5, 3\)\).*4 \+ 1 = 5 faces along the neumann axis 0"):
        gpudp.divergence((np.zeros((4, 3)), np.zeros((4, 3))), grid)
    with pytest.raises(gpudp.ShapeError, match=r"u\[1\] has shape \(4, 4\); expected \(4, 3\)"):
        gpudp.divergence((np.zeros((5, 3)), np.zeros((4, 4))), grid)
    with pytest.raises(gpudp.ShapeError, match=r"disagree on the batch: u\[0\] has leading axes \(2,\) but "
                                              r"u\[1\] has \(\)"):
        gpudp.divergence((np.zeros((2, 5, 3)), np.zeros((4, 3))), grid)
    with pytest.raises(TypeError, match=r"divergence: dtype mismatch: u\[0\] is float64 but u\[1\] is float32"):
        gpudp.divergence((good[0], good[1].astype(np.float32)), grid)
    with pytest.raises(TypeError, match=r"divergence: u\[0\] has dtype int64; expected float32 or float64"):
        gpudp.divergence((np.zeros((5, 3), np.int64), good[1]), grid)
    with pytest.raises(gpudp.ShapeError, match=r"spatial_gradient: p has shape \(5, 3\); expected a "
                                              r"cell-centred field of shape \(4, 3\) or \(B, \*\(4, 3\)\)"):
        gpudp.spatial_gradient(np.zeros((5, 3)), grid)
    with pytest.raises(gpudp.ShapeError, match=r"laplace: p has shape \(0, 4, 3\)"):
        gpudp.laplace(np.zeros((0, 4, 3)), grid)
    with pytest.raises(TypeError, match=r"laplace: grid must be a gpudp.Grid"):
        gpudp.laplace(np.zeros((4, 3)), (4, 3))
