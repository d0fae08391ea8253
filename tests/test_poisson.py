"""poisson_solve: residuals, dense (pseudo-)inverse references, implicit gradient, tape memory, statistics,
errors. Runs on every backend of the ``backend`` fixture; grids stay small for the CUDA simulator."""
import itertools

import numpy as np
import pytest

import gpudp
from gpudp.ops import multigrid
import reference_mac as R


@pytest.fixture(autouse=True)
def _multigrid_levels_down_to_a_few_cells(monkeypatch):
    """The test grids are small: let the multigrid hierarchy go down to a few cells so that the V-cycle's
    smoothing and transfers run (at the default coarsest size the pseudo-inverse alone would solve them)."""
    monkeypatch.setattr(multigrid, "COARSEST_CELLS", 4)

KINDS = ("periodic", "dirichlet", "neumann")
CASES = [((24,), (k,)) for k in KINDS]
CASES += [((8, 6), b) for b in itertools.product(KINDS, repeat=2)]
CASES += [((4, 5, 3), (k,) * 3) for k in KINDS]
CASES += [((4, 5, 3), ("periodic", "neumann", "dirichlet")), ((4, 5, 3), ("neumann", "periodic", "neumann"))]
CASE_IDS = ["x".join(map(str, s)) + "-" + "-".join(b[:3] for b in bnd) for s, bnd in CASES]
# under the CUDA simulator (every GPU thread a Python thread) on grids of at most 3 cells per axis
SIM_CASES = {((24,), ("neumann",)), ((8, 6), ("periodic", "dirichlet")), ((8, 6), ("neumann", "neumann")),
             ((4, 5, 3), ("periodic", "neumann", "dirichlet"))}


def make_grid(shape, boundary, seed=0):
    rng = np.random.default_rng(seed)
    return gpudp.Grid(shape, spacing=tuple(0.5 + rng.random() for _ in shape), boundary=boundary)


def laplace_matrix(grid):
    return R.laplace_matrix(grid.shape, grid.spacing, grid.boundary)


def true_residual(L, x, b, singular):
    """``‖b̃ − L x‖ / ‖b̃‖`` per system in float64 (``b̃``: b without its mean when the operator is singular)."""
    x = np.asarray(x, np.float64).reshape(len(b), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if singular:
        b = b - b.mean(axis=1, keepdims=True)
    return np.linalg.norm(b - x @ L.T, axis=1) / np.linalg.norm(b, axis=1)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("preconditioner", [None, "jacobi", "spectral", "multigrid"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,boundary", CASES, ids=CASE_IDS)
def test_reaches_requested_residual(backend, shape, boundary, dtype, preconditioner):
    backend.simulate_only((shape, boundary) in SIM_CASES)
    shape = backend.small(shape)
    grid = make_grid(shape, boundary)
    L = laplace_matrix(grid)
    tol = 1e-9 if dtype == np.float64 else 1e-4
    b = np.random.default_rng(1).standard_normal((3,) + shape).astype(dtype)
    x, info = gpudp.poisson_solve(backend.asarray(b), grid, tol=tol, preconditioner=preconditioner,
                                  return_info=True)
    assert isinstance(info, gpudp.SolveInfo) and info.converged
    assert 1 <= info.iterations <= 10 * grid.size and info.residual <= tol
    if preconditioner == "spectral":  # the exact inverse: one iteration, a second at most for rounding
        assert info.iterations <= 2
    xh = backend.to_numpy(x)
    assert xh.shape == b.shape and xh.dtype == dtype and backend.is_own(x)
    # the residual of the returned x itself, evaluated in float64
    assert true_residual(L, xh, b, grid.is_singular).max() <= (1.5 if dtype == np.float64 else 5.0) * tol
    if grid.is_singular:
        assert np.abs(xh.reshape(3, -1).astype(np.float64).mean(axis=1)).max() <= 1e-6 * np.abs(xh).max()
    assert gpudp.last_solve_info() == info


@pytest.mark.parametrize("shape,boundary", CASES + [((64, 64), ("neumann", "neumann")),
                                                    ((8, 8, 8), ("periodic", "dirichlet", "neumann"))],
                         ids=CASE_IDS + ["64x64-neu", "8x8x8-mixed"])
@pytest.mark.parametrize("preconditioner", ["jacobi", "spectral", "multigrid"])
def test_matches_dense_pseudo_inverse_and_its_gradient(backend, shape, boundary, preconditioner):
    backend.simulate_only((shape, boundary) in SIM_CASES)
    shape = backend.small(shape)
    grid = make_grid(shape, boundary, seed=2)
    L = laplace_matrix(grid)
    rng = np.random.default_rng(3)
    b = rng.standard_normal((2,) + shape)
    b[1] += 5.0  # a large mean: removed in the singular case
    g = rng.standard_normal((2,) + shape)
    if grid.size <= 1000:
        Lp = np.linalg.pinv(L)
        ref_x = b.reshape(2, -1) @ Lp.T
        ref_g = g.reshape(2, -1) @ Lp  # A⁺ᵀ g
    else:  # the same without an SVD: L⁺ = (L + e eᵀ)⁻¹ − e eᵀ with e = 1/√N the null vector (L symmetric)
        e = np.full(grid.size, 1 / np.sqrt(grid.size)) if grid.is_singular else np.zeros(grid.size)
        M = L + np.outer(e, e)
        rhs = np.concatenate([b.reshape(2, -1), g.reshape(2, -1)])
        both = np.linalg.solve(M, rhs.T).T - np.outer(rhs @ e, e)
        ref_x, ref_g = both[:2], both[2:]
    bt = gpudp.tensor(backend.asarray(b), requires_grad=True)
    with gpudp.Tape() as tape:
        x = gpudp.poisson_solve(bt, grid, tol=1e-12, preconditioner=preconditioner)
    assert rel(backend.to_numpy(x).reshape(2, -1), ref_x) <= 1e-8
    tape.backward(x, grad=backend.asarray(g))
    assert rel(backend.to_numpy(bt.grad).reshape(2, -1), ref_g) <= 1e-6


@pytest.mark.parametrize("preconditioner", [None, "spectral", "multigrid"])
@pytest.mark.parametrize("boundary", [("neumann", "periodic"), ("dirichlet", "neumann")])
def test_gradcheck(backend, boundary, preconditioner):
    backend.simulate_only(False)  # many solves; the gradient is checked against the dense reference above
    grid = make_grid((4, 3), boundary, seed=5)
    b = backend.asarray(np.random.default_rng(6).standard_normal((4, 3)))
    # the solve is linear in b up to the solver tolerance, so a large finite-difference step is exact
    assert gpudp.gradcheck(lambda v: gpudp.poisson_solve(v, grid, tol=1e-13, preconditioner=preconditioner), [b],
                           eps=1e-2)


def test_backward_is_one_solve_and_tape_memory_does_not_depend_on_tol(backend, monkeypatch):
    grid = gpudp.Grid(backend.small((6, 5)), boundary="neumann")
    b = np.random.default_rng(7).standard_normal(grid.shape)
    solves = backend.count_calls(monkeypatch, "cg_solve")
    mem = []
    for tol in (1e-3, 1e-10):
        bt = gpudp.tensor(backend.asarray(b), requires_grad=True)
        with gpudp.Tape() as tape:
            x = gpudp.poisson_solve(bt, grid, tol=tol, preconditioner=None)   # the backend's own CG
            loss = gpudp.l2_loss(x, backend.asarray(np.zeros_like(b)))
        mem.append(tape.memory_bytes)
        before = len(solves)
        tape.backward(loss)
        assert len(solves) == before + 1
        assert gpudp.last_solve_info().converged
    # the l2 loss saves its residual (the solution's size); the solve itself saves nothing
    assert mem[0] == mem[1] == b.size * 8


def test_solve_alone_saves_nothing():
    grid = gpudp.Grid((5, 4), boundary="dirichlet")
    for tol in (1e-3, 1e-10):
        bt = gpudp.tensor(np.ones((5, 4)), requires_grad=True)
        with gpudp.Tape() as tape:
            gpudp.poisson_solve(bt, grid, tol=tol)
        assert len(tape) == 1 and tape.memory_bytes == 0


@pytest.mark.parametrize("preconditioner", [None, "spectral", "multigrid"])
def test_batch_items_are_independent_and_zero_rhs_gives_zero(backend, preconditioner):
    grid = gpudp.Grid(backend.small((6, 4)), boundary=("periodic", "neumann"))
    L = laplace_matrix(grid)
    rng = np.random.default_rng(8)
    shape = grid.shape
    b = np.stack([rng.standard_normal(shape), np.zeros(shape), np.full(shape, 3.0),
                  1e-6 * rng.standard_normal(shape)])
    x, info = gpudp.poisson_solve(backend.asarray(b), grid, tol=1e-10, return_info=True,
                                  preconditioner=preconditioner)
    xh = backend.to_numpy(x)
    ref = b.reshape(4, -1) @ np.linalg.pinv(L).T
    np.testing.assert_array_equal(xh[1], 0.0)
    np.testing.assert_allclose(xh[2], 0.0, atol=1e-12)  # a constant is all null space
    for i in (0, 3):
        assert rel(xh[i].reshape(-1), ref[i]) <= 1e-8
    assert info.converged and info.residual <= 1e-10
    z, zinfo = gpudp.poisson_solve(backend.asarray(np.zeros(shape)), grid, return_info=True,
                                   preconditioner=preconditioner)
    assert zinfo == gpudp.SolveInfo(0, 0.0, True, preconditioner)
    np.testing.assert_array_equal(backend.to_numpy(z), 0.0)


def test_x0_start_value(backend):
    grid = gpudp.Grid(backend.small((8, 6)), boundary="dirichlet")
    shape = grid.shape
    b = np.random.default_rng(9).standard_normal(shape)
    x, info = gpudp.poisson_solve(backend.asarray(b), grid, tol=1e-10, return_info=True, preconditioner=None)
    # starting from the solution needs (almost) no iterations
    x2, info2 = gpudp.poisson_solve(backend.asarray(b), grid, tol=1e-8, x0=x, return_info=True,
                                    preconditioner=None)
    assert info2.iterations <= 1 < info.iterations
    np.testing.assert_allclose(backend.to_numpy(x2), backend.to_numpy(x), atol=1e-8)
    # x0 gets no gradient, even as a tensor that requires one
    bt = gpudp.tensor(backend.asarray(b), requires_grad=True)
    x0 = gpudp.tensor(backend.asarray(np.ones(shape)), requires_grad=True)
    with gpudp.Tape() as tape:
        y = gpudp.poisson_solve(bt, grid, tol=1e-10, x0=x0)
    tape.backward(y, grad=backend.asarray(np.ones(shape)))
    assert x0.grad is None and bt.grad is not None
    np.testing.assert_allclose(backend.to_numpy(y), backend.to_numpy(x), atol=1e-8)


def test_spectral_x0_and_non_convergence(backend):
    grid = gpudp.Grid(backend.small((8, 6)), boundary=("dirichlet", "neumann"))
    b = backend.asarray(np.random.default_rng(9).standard_normal(grid.shape))
    x, info = gpudp.poisson_solve(b, grid, tol=1e-10, preconditioner="spectral", return_info=True)
    assert info.converged and info.iterations == 1
    x2, info2 = gpudp.poisson_solve(b, grid, tol=1e-8, x0=x, preconditioner="spectral", return_info=True)
    assert info2.iterations == 0 and info2.converged  # the start value is already a solution
    np.testing.assert_array_equal(backend.to_numpy(x2), backend.to_numpy(x))
    # a tolerance below rounding cannot be met: SolveError, like the other preconditioners
    with pytest.raises(gpudp.SolveError, match=r"did not converge.*preconditioner 'spectral'") as err:
        gpudp.poisson_solve(b, grid, tol=1e-30, preconditioner="spectral")
    assert 1 <= err.value.iterations and 0 < err.value.residual < 1e-12


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("kind", KINDS)
def test_spectral_eigenbasis_diagonalises_the_1d_operator(n, kind):
    """``Q`` orthonormal and ``−L Q = Q diag(λ)`` for the reference 1-D Laplacian of every boundary rule."""
    from gpudp.ops._spectral import eigenbasis

    Q, lam = eigenbasis(n, KINDS.index(kind))
    A = -laplace_matrix(gpudp.Grid(n, boundary=kind))
    np.testing.assert_allclose(Q.T @ Q, np.eye(n), atol=1e-13)
    np.testing.assert_allclose(A @ Q, Q * lam, atol=1e-12)
    assert (lam >= 0).all() and (lam == 0).sum() == (0 if kind == "dirichlet" else 1)


def test_x0_on_singular_grid_ignores_its_mean():
    grid = gpudp.Grid(10, boundary="periodic")
    b = np.sin(np.linspace(0, 2 * np.pi, 10, endpoint=False))
    x = gpudp.poisson_solve(b, grid, tol=1e-12)
    x2 = gpudp.poisson_solve(b, grid, tol=1e-12, x0=np.full(10, 100.0))
    np.testing.assert_allclose(x2, x, atol=1e-10)


def test_non_convergence_raises_solve_error_with_statistics(backend):
    grid = gpudp.Grid(backend.small((8, 8)), boundary="neumann")
    b = backend.asarray(np.random.default_rng(10).standard_normal(grid.shape))
    with pytest.raises(gpudp.SolveError, match=r"poisson_solve: conjugate gradients did not converge.*"
                                               r"after 3 iterations \(maxiter 3") as err:
        gpudp.poisson_solve(b, grid, tol=1e-10, maxiter=3, preconditioner=None)
    assert err.value.iterations == 3 and err.value.residual > 1e-10
    assert isinstance(err.value, RuntimeError)
    assert gpudp.last_solve_info() == gpudp.SolveInfo(3, err.value.residual, False, None)
    x, info = gpudp.poisson_solve(b, grid, tol=1e-10, maxiter=3, throw=False, return_info=True,
                                  preconditioner=None)
    assert not info.converged and info.iterations == 3 and info.residual == err.value.residual
    assert np.isfinite(backend.to_numpy(x)).all()


def test_backward_non_convergence_raises():
    grid = gpudp.Grid((8, 8), boundary="dirichlet")
    s = np.sin(np.pi * np.arange(1, 9) / 9)
    b = np.outer(s, s)  # an eigenvector of the Laplacian: one CG iteration, unlike the random backward rhs
    bt = gpudp.tensor(b, requires_grad=True)
    with gpudp.Tape() as tape:
        x = gpudp.poisson_solve(bt, grid, tol=1e-3, maxiter=2, preconditioner=None)
    assert gpudp.last_solve_info().iterations == 1
    seed = np.random.default_rng(11).standard_normal((8, 8))
    with pytest.raises(gpudp.SolveError, match="in the backward pass"):
        tape.backward(x, grad=seed)


def test_cpu_parallel_solver_and_chunked_index_walk(monkeypatch):
    """The CPU kernels walk the cells in chunks of ``CHUNK`` (the parallel work items); a tiny chunk checks
    the chunk starts mid-row. The parallel solver driver is forced onto a small grid."""
    from gpudp.backends.cpu import difference as cpu_difference
    monkeypatch.setattr(cpu_difference, "CHUNK", 7)
    grid = gpudp.Grid((5, 4, 3), spacing=(1.0, 0.7, 1.3), boundary=("neumann", "periodic", "dirichlet"))
    L = laplace_matrix(grid)
    D = R.divergence_matrix(grid.shape, grid.spacing, grid.boundary)
    G = R.gradient_matrix(grid.shape, grid.spacing, grid.boundary)
    rng = np.random.default_rng(12)
    b = rng.standard_normal((2, 5, 4, 3))
    assert rel(gpudp.laplace(b, grid).reshape(2, -1), b.reshape(2, -1) @ L.T) <= 1e-12
    assert rel(R.stack_faces(gpudp.spatial_gradient(b, grid), grid.shape), b.reshape(2, -1) @ G.T) <= 1e-12
    u = R.split_faces(rng.standard_normal((2, D.shape[1])), grid.shape, grid.boundary, (2,))
    assert rel(gpudp.divergence(u, grid).reshape(2, -1), R.stack_faces(u, grid.shape) @ D.T) <= 1e-12
    ref = b.reshape(2, -1) @ np.linalg.pinv(L).T
    for parallel_from in (10 ** 9, 0):  # serial driver, then the parallel one
        monkeypatch.setattr(cpu_difference, "PARALLEL_MIN_CELLS", parallel_from)
        x = gpudp.poisson_solve(b, grid, tol=1e-12, preconditioner="jacobi")
        assert rel(x.reshape(2, -1), ref) <= 1e-8


# -- input errors ------------------------------------------------------------------------------------------
def test_bad_inputs_raise_specific_errors():
    grid = gpudp.Grid((4, 3), boundary="neumann")
    b = np.ones((4, 3))
    for bad in (0.0, -1e-6):
        with pytest.raises(ValueError, match=r"poisson_solve: tol must be > 0, got"):
            gpudp.poisson_solve(b, grid, tol=bad)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"poisson_solve: tol must be finite"):
            gpudp.poisson_solve(b, grid, tol=bad)
    for bad in (np.nan, np.inf, -np.inf):
        nb = b.copy()
        nb[1, 2] = bad
        with pytest.raises(ValueError, match=r"poisson_solve: b contains non-finite values \(NaN or inf\)"):
            gpudp.poisson_solve(nb, grid)
    nb = np.ones((3, 4, 3))
    nb[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"batch items \[2\]"):
        gpudp.poisson_solve(nb, grid)
    with pytest.raises(gpudp.ShapeError, match=r"poisson_solve: b has shape \(3, 4\); expected a cell-centred "
                                              r"field of shape \(4, 3\) or \(B, \*\(4, 3\)\)"):
        gpudp.poisson_solve(np.ones((3, 4)), grid)
    with pytest.raises(gpudp.ShapeError, match=r"poisson_solve: x0 has shape \(2, 4, 3\); expected the shape "
                                              r"of b, \(4, 3\)"):
        gpudp.poisson_solve(b, grid, x0=np.zeros((2, 4, 3)))
    with pytest.raises(TypeError, match=r"dtype mismatch: b is float64 but x0 is float32"):
        gpudp.poisson_solve(b, grid, x0=np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"poisson_solve: x0 contains non-finite values"):
        gpudp.poisson_solve(b, grid, x0=np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match=r"preconditioner must be 'auto', None, 'jacobi', 'spectral' or 'multigrid', "
                                         r"got 'ilu'"):
        gpudp.poisson_solve(b, grid, preconditioner="ilu")
    with pytest.raises(ValueError, match=r"poisson_solve: maxiter must be an int >= 1, got 0"):
        gpudp.poisson_solve(b, grid, maxiter=0)
    with pytest.raises(ValueError, match=r"check_every must be an int >= 1"):
        gpudp.poisson_solve(b, grid, check_every=0)
    with pytest.raises(TypeError, match=r"poisson_solve: b has dtype int64"):
        gpudp.poisson_solve(np.ones((4, 3), np.int64), grid)
    assert gpudp.poisson_solve(b, grid, preconditioner="none").shape == (4, 3)


# -- the "spectral" inverse through fast transforms -----------------------------------------------------------
SPECTRAL_SIZES = {1: [(1,), (2,), (7,), (8,)], 2: [(5, 4), (4, 7), (1, 3)], 3: [(3, 4, 5), (4, 3, 2)]}
SPECTRAL_BCS = [b for d in (1, 2, 3) for b in itertools.product(KINDS, repeat=d)]


def _spectral_args(shape, spacing, boundary):
    """``(inv_dx, bc, shape3, ndim)`` of a grid, padded to three axes (the kernels' arguments)."""
    pad = 3 - len(shape)
    return ((1.0,) * pad + tuple(1.0 / h for h in spacing), (0,) * pad + tuple(KINDS.index(k) for k in boundary),
            (1,) * pad + tuple(shape), len(shape))


def _assert_pinv(y, r, P, tol):
    ref = r.astype(np.float64) @ P.T
    scale = np.abs(ref).max()
    if scale == 0:  # one cell without a dirichlet face: A = 0, A⁺ = 0
        np.testing.assert_array_equal(y, 0.0)
    else:
        assert rel(y, ref) <= tol


@pytest.mark.parametrize("boundary", SPECTRAL_BCS, ids=["-".join(k[:3] for k in b) for b in SPECTRAL_BCS])
def test_fft_spectral_inverse_is_the_dense_pseudo_inverse(boundary):
    """``SpectralInverse`` (scipy.fft) and the CuPy path's DST-I from FFTs (run on NumPy) against ``pinv(−L)``
    of the reference Laplacian, odd and even sizes, size-1 axes, spacing ≠ 1, float64 and float32."""
    from gpudp.ops._spectral import DenseSpectralInverse, SpectralInverse

    rng = np.random.default_rng(20)
    for shape in SPECTRAL_SIZES[len(boundary)]:
        spacing = tuple(0.6 + 0.35 * k for k in range(len(shape)))
        P = np.linalg.pinv(-R.laplace_matrix(shape, spacing, boundary))
        args = _spectral_args(shape, spacing, boundary)
        r = rng.standard_normal((3, int(np.prod(shape))))
        for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-5)):
            rd = r.astype(dtype)
            before = rd.copy()
            for native_dst in (True, False):
                M = SpectralInverse(np, dtype, *args)
                M.native_dst = native_dst  # False: the DST-I built from FFTs, as on CuPy
                y = M(rd)
                assert y.shape == rd.shape and y.dtype == dtype
                np.testing.assert_array_equal(rd, before)  # the input is not overwritten
                _assert_pinv(y, rd, P, tol)
            _assert_pinv(DenseSpectralInverse(np, dtype, *args)(rd), rd, P, tol)


def test_fft_spectral_inverse_batch_items_are_independent():
    from gpudp.ops._spectral import spectral_inverse

    shape, spacing, boundary = (6, 5, 4), (0.7, 1.0, 1.6), ("dirichlet", "periodic", "neumann")
    M = spectral_inverse(np, np.float64, *_spectral_args(shape, spacing, boundary))
    P = np.linalg.pinv(-R.laplace_matrix(shape, spacing, boundary))
    r = np.random.default_rng(21).standard_normal((5, 120))
    r[2] = 0.0
    y = M(r)
    _assert_pinv(y, r, P, 1e-10)
    np.testing.assert_array_equal(y[2], 0.0)
    for i in range(5):
        np.testing.assert_allclose(M(r[i:i + 1])[0], y[i], rtol=0, atol=1e-14 * np.abs(y).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, 64])
def test_dst1_from_ffts_matches_scipy(n, dtype):
    """The DST-I that CuPy runs (one real FFT of length 2(n + 1)), here with NumPy and scipy.fft."""
    import scipy.fft

    from gpudp.ops._spectral import dst1

    x = np.random.default_rng(22).standard_normal((3, n, 4)).astype(dtype)
    for axis in (0, 1, 2, -1):
        xa = np.ascontiguousarray(np.moveaxis(x, 1, axis))
        before = xa.copy()
        y = dst1(xa, axis, np, scipy.fft)
        ref = scipy.fft.dst(xa.astype(np.float64), type=1, axis=axis, norm="ortho")
        assert y.dtype == dtype and y.shape == xa.shape
        np.testing.assert_allclose(y, ref, rtol=0, atol=(1e-13 if dtype == np.float64 else 1e-5) * np.abs(ref).max())
        np.testing.assert_array_equal(xa, before)
        np.testing.assert_allclose(dst1(y, axis, np, scipy.fft), xa, rtol=0,
                                   atol=(1e-13 if dtype == np.float64 else 1e-5) * np.abs(xa).max())  # an involution


def _array_bytes(obj):
    """``nbytes`` of every NumPy array an object holds (its attributes, and arrays inside tuples or lists)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(_array_bytes(v) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type(np)):
        return sum(_array_bytes(v) for v in vars(obj).values())
    return 0


@pytest.mark.parametrize("shape,boundary", [((4096,), ("neumann",)), ((256, 192), ("periodic", "dirichlet")),
                                            ((48, 40, 36), ("neumann", "periodic", "periodic"))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_fft_spectral_inverse_keeps_o_of_n_numbers(shape, boundary, dtype):
    """The cached object holds at most N numbers (the inverse eigenvalues of the half spectrum); the dense
    per-axis bases hold more where an axis is wider than the others' product."""
    from gpudp.ops._spectral import DenseSpectralInverse, spectral_inverse

    args = _spectral_args(shape, (1.0,) * len(shape), boundary)
    M = spectral_inverse(np, dtype, *args)
    assert spectral_inverse(np, dtype, *args) is M  # built once
    N = int(np.prod(shape))
    assert 0 < _array_bytes(M) <= N * np.dtype(dtype).itemsize
    if len(shape) == 1:  # the check sees the dense bases: 2 n² numbers
        assert _array_bytes(DenseSpectralInverse(np, dtype, *args)) > 100 * N * np.dtype(dtype).itemsize


@pytest.mark.parametrize("boundary", [("periodic", "periodic"), ("neumann", "dirichlet"), ("dirichlet", "periodic")])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_spectral_solve_is_one_application_and_one_laplace(monkeypatch, boundary, dtype):
    """Without obstacles the spectral solve applies A⁺ once and checks the residual with one laplace."""
    from gpudp.backends import get_backend
    from gpudp.ops import _spectral

    calls = {"inverse": 0, "laplace": 0}
    inverse_call, backend = _spectral.SpectralInverse.__call__, get_backend()
    laplace = type(backend).laplace

    def counted_inverse(self, r):
        calls["inverse"] += 1
        return inverse_call(self, r)

    def counted_laplace(self, *a):
        calls["laplace"] += 1
        return laplace(self, *a)

    monkeypatch.setattr(_spectral.SpectralInverse, "__call__", counted_inverse)
    monkeypatch.setattr(type(backend), "laplace", counted_laplace)
    grid = make_grid((64, 48), boundary, seed=23)
    b = np.random.default_rng(24).standard_normal((2,) + grid.shape).astype(dtype)
    tol = 1e-6 if dtype == np.float64 else 1e-4
    x, info = gpudp.poisson_solve(b, grid, tol=tol, preconditioner="spectral", return_info=True)
    assert calls == {"inverse": 1, "laplace": 1}
    assert info.iterations == 1 and info.converged and x.dtype == dtype
    assert true_residual(laplace_matrix(grid), x, b, grid.is_singular).max() <= 5 * tol


def test_spectral_solve_with_the_dense_inverse_gives_the_same_solution():
    from gpudp.backends import get_backend
    from gpudp.ops import _spectral
    from gpudp.ops.difference import kernel_args

    grid = make_grid((9, 8, 7), ("neumann", "dirichlet", "periodic"), seed=25)
    args = kernel_args(grid)
    b = np.random.default_rng(26).standard_normal((2, grid.size))
    x, its, res = _spectral.cg_solve(get_backend(), b, None, *args, 1e-12, 100, grid.is_singular)
    dense = _spectral.DenseSpectralInverse(np, np.float64, *args)
    xd, itsd, resd = _spectral.cg_solve(get_backend(), b, None, *args, 1e-12, 100, grid.is_singular, inverse=dense)
    assert its == itsd == 1 and res <= 1e-12 and resd <= 1e-12
    assert rel(x, xd) <= 1e-12
