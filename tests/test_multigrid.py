"""The multigrid preconditioner (``gpudp.ops.multigrid``): its kernels against the float64 NumPy reference
``reference_multigrid``, the hierarchy's operators against the dense Laplacian, the V-cycle's symmetry and
positive definiteness, solves against dense pseudo-inverses, iteration counts, ``"auto"``.

Kernel tests run on every backend of the ``backend`` fixture (cpu, numba-cuda under the simulator or on a GPU,
cupy on a GPU; the CUDA C kernels also run through the host emulator in ``test_cupy_multigrid.py``). The solves
with every preconditioner are also covered by ``test_poisson.py`` and ``test_obstacles.py``.
"""
import itertools

import numpy as np
import pytest

import gpudp
from gpudp.ops import multigrid as MG
from gpudp.ops.obstacles import obstacle_facts

import reference_mac as RM
import reference_multigrid as R

P, D, N = "periodic", "dirichlet", "neumann"
KINDS = (P, D, N)
CODES = {P: 0, D: 1, N: 2}

LEVEL_CASES = [((9,), (k,)) for k in KINDS] + [((2,), (P,)), ((1,), (N,)), ((3,), (P,))]
LEVEL_CASES += [((5, 6), b) for b in itertools.product(KINDS, repeat=2)]
LEVEL_CASES += [((1, 4), (D, P)), ((3, 2), (N, P)), ((7, 3), (P, P))]
LEVEL_CASES += [((3, 4, 5), b) for b in [(P, P, P), (D, D, D), (N, N, N), (N, P, D), (D, N, P), (P, D, N)]]
LEVEL_IDS = ["x".join(map(str, s)) + "-" + "".join(b[0] for b in bnd) for s, bnd in LEVEL_CASES]
SIM_LEVELS = {((9,), (D,)), ((5, 6), (P, N)), ((3, 2), (N, P)), ((3, 4, 5), (N, P, D))}
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def tol_of(dtype):
    return 1e-12 if dtype == np.float64 else 2e-5


def random_level(shape, boundary, seed, coarsen=None):
    """A level of random couplings (a quarter of them 0: closed faces) and random ``dinv``, in host float64."""
    rng = np.random.default_rng(seed)
    pad = 3 - len(shape)
    n = (1,) * pad + tuple(shape)
    bc = (0,) * pad + tuple(CODES[b] for b in boundary)
    w = [np.zeros(1), np.zeros(1), np.zeros(1)]
    for a in range(pad, 3):
        c = rng.uniform(0.5, 2.0, R.face_shape(n, bc, a)).reshape(-1)
        c[rng.random(c.size) < 0.25] = 0.0
        w[a] = c
    if coarsen is None:
        coarsen = tuple(int(a >= pad and n[a] > 1) for a in range(3))
    dinv = rng.uniform(0.1, 1.0, int(np.prod(n)))
    return MG.Level(n, bc, pad, coarsen, tuple(w), dinv)


def coarse_of(level):
    n = tuple((m + 1) // 2 if k else m for m, k in zip(level.shape3, level.coarsen))
    return MG.Level(n, level.bc, level.off, (0, 0, 0), (np.zeros(1),) * 3, np.zeros(int(np.prod(n))))


def on(impl, level, dtype):
    return level._replace(w=tuple(impl.asarray(np.ascontiguousarray(c, dtype=dtype)) for c in level.w),
                          dinv=impl.asarray(np.ascontiguousarray(level.dinv, dtype=dtype)))


@pytest.fixture
def small_levels(monkeypatch):
    """Hierarchies that go down to a few cells, so that small test grids have several levels."""
    monkeypatch.setattr(MG, "COARSEST_CELLS", 4)


# -- kernels ---------------------------------------------------------------------------------------------------

@DTYPES
@pytest.mark.parametrize("shape,boundary", LEVEL_CASES, ids=LEVEL_IDS)
def test_level_kernels_match_reference(backend, shape, boundary, dtype):
    backend.simulate_only((shape, boundary) in SIM_LEVELS)
    impl = backend.impl
    lv = random_level(shape, boundary, seed=len(shape) * 7 + sum(CODES[b] for b in boundary))
    dl = on(impl, lv, dtype)
    rng = np.random.default_rng(3)
    B = 2
    n = lv.shape3
    x = rng.standard_normal((B, lv.size))
    r = rng.standard_normal((B, lv.size))
    omega = np.dtype(dtype).type(0.8)
    X, Rr = impl.asarray(x.astype(dtype)), impl.asarray(r.astype(dtype))
    out = impl.empty((B, lv.size), np.dtype(dtype))
    ref_ax = R.apply(x.reshape((B,) + n), n, lv.bc, lv.off, lv.w).reshape(B, -1)
    impl.mg_apply(X, out, dl)
    assert rel(backend.to_numpy(out), ref_ax) <= tol_of(dtype)
    impl.mg_residual(X, Rr, out, dl)
    assert rel(backend.to_numpy(out), r - ref_ax) <= tol_of(dtype)
    impl.mg_smooth(X, Rr, out, dl, omega, False)
    want = R.smooth(x.reshape((B,) + n), r.reshape((B,) + n), n, lv.bc, lv.off, lv.w, lv.dinv, 0.8, False)
    assert rel(backend.to_numpy(out), want.reshape(B, -1)) <= tol_of(dtype)
    impl.mg_smooth(None, Rr, out, dl, omega, True)
    assert rel(backend.to_numpy(out), (0.8 * lv.dinv * r)) <= tol_of(dtype)
    # the inputs are not touched
    np.testing.assert_array_equal(backend.to_numpy(X), x.astype(dtype))


@DTYPES
@pytest.mark.parametrize("shape,boundary", LEVEL_CASES, ids=LEVEL_IDS)
def test_transfers_match_reference_and_are_transposes(backend, shape, boundary, dtype):
    backend.simulate_only((shape, boundary) in SIM_LEVELS)
    impl = backend.impl
    lv = random_level(shape, boundary, seed=5)
    if not any(lv.coarsen):
        pytest.skip("no axis to coarsen")
    cl = coarse_of(lv)
    rng = np.random.default_rng(4)
    B = 2
    f = rng.standard_normal((B, lv.size))
    e = rng.standard_normal((B, cl.size))
    x = rng.standard_normal((B, lv.size))
    out = impl.empty((B, cl.size), np.dtype(dtype))
    impl.mg_restrict(impl.asarray(f.astype(dtype)), out, on(impl, lv, dtype), on(impl, cl, dtype))
    want_r = R.restrict(f.reshape((B,) + lv.shape3), lv.shape3, lv.bc, lv.coarsen).reshape(B, -1)
    assert rel(backend.to_numpy(out), want_r) <= tol_of(dtype)
    X = impl.asarray(x.astype(dtype))
    impl.mg_prolong_add(impl.asarray(e.astype(dtype)), X, on(impl, lv, dtype), on(impl, cl, dtype))
    want_p = R.prolong(e.reshape((B,) + cl.shape3), lv.shape3, lv.bc, lv.coarsen).reshape(B, -1)
    assert rel(backend.to_numpy(X) - x.astype(dtype), want_p) <= 10 * tol_of(dtype)
    # R = Pᵀ / 2 per coarsened axis: <R f, e> · 2^k = <f, P e>
    k = sum(lv.coarsen)
    lhs = np.sum(backend.to_numpy(out).astype(np.float64) * e) * 2 ** k
    rhs = np.sum(f * want_p)
    assert abs(lhs - rhs) <= 1e3 * tol_of(dtype) * (abs(rhs) + np.abs(f).sum())


def test_prolongation_reproduces_constants_on_neumann_and_periodic_axes():
    for n, b in itertools.product((2, 3, 4, 7, 8), (0, 2)):
        P = R.prolongation_1d(n, b)
        np.testing.assert_allclose(P.sum(axis=1), 1.0)


def test_coarse_solve(backend):
    impl = backend.impl
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    M = A + A.T
    r = rng.standard_normal((3, 6))
    out = impl.empty((3, 6), np.float64)
    impl.mg_coarse_solve(impl.asarray(r), impl.asarray(M), out)
    assert rel(backend.to_numpy(out), r @ M) <= 1e-13


# -- the hierarchy ---------------------------------------------------------------------------------------------

def disc_mask(shape, fraction, seed, radius):
    """Random solid discs (spheres) until ``fraction`` of the cells are solid."""
    rng = np.random.default_rng(seed)
    coords = np.meshgrid(*[np.arange(n) + 0.5 for n in shape], indexing="ij")
    solid = np.zeros(shape, bool)
    while solid.mean() < fraction:
        c = [rng.uniform(0, n) for n in shape]
        rr = rng.uniform(0.5, 1.5) * radius
        solid |= sum((g - cc) ** 2 for g, cc in zip(coords, c)) < rr ** 2
    return solid


HIER_CASES = [((13,), (D,)), ((16,), (P,)), ((9, 7), (P, D)), ((8, 11), (N, N)), ((6, 5, 7), (N, P, D)),
              ((12, 10), (D, N))]


@pytest.mark.parametrize("obstacles", [False, True], ids=["box", "obstacles"])
@pytest.mark.parametrize("shape,boundary", HIER_CASES, ids=["x".join(map(str, s)) + "-" + "".join(b[0] for b in bd)
                                                           for s, bd in HIER_CASES])
def test_hierarchy_levels(small_levels, shape, boundary, obstacles):
    solid = disc_mask(shape, 0.2, seed=1, radius=1.5) if obstacles else None
    spacing = tuple(0.5 + 0.25 * k for k in range(len(shape)))
    grid = gpudp.Grid(shape, spacing=spacing, boundary=boundary, solid=solid)
    h = MG.hierarchy(grid)
    assert len(h.levels) >= 2 and h.levels[-1].size <= max(MG.COARSEST_CELLS, 8)
    # level 0 is −laplace with the obstacles
    L = RM.laplace_matrix(shape, spacing, boundary) if solid is None else None
    if L is None:
        import reference_mac as Rm
        L = Rm.solid_laplace_matrix(shape, spacing, boundary, solid)
    lv0 = h.levels[0]
    np.testing.assert_allclose(R.dense(lv0.shape3, lv0.bc, lv0.off, lv0.w), -L, atol=1e-12)
    for fine, coarse in zip(h.levels, h.levels[1:]):
        assert coarse.shape3 == tuple((m + 1) // 2 if k else m for m, k in zip(fine.shape3, fine.coarsen))
        A = R.dense(coarse.shape3, coarse.bc, coarse.off, coarse.w)
        np.testing.assert_allclose(A, A.T, atol=1e-13)
        d = np.diag(A)
        np.testing.assert_allclose(coarse.dinv, np.where(d > 0, 1 / np.where(d > 0, d, 1), 0))
        # a constant is in the kernel away from dirichlet faces: rows sum to the dirichlet couplings only
        if all(b != 1 for b in coarse.bc):
            np.testing.assert_allclose(A.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(h.pinv, np.linalg.pinv(R.dense(h.levels[-1].shape3, h.levels[-1].bc,
                                                              h.levels[-1].off, h.levels[-1].w)), atol=1e-9)
    assert MG.hierarchy(grid) is h    # built once per grid


def reference_vcycle(h, r):
    """The V-cycle from the reference pieces, in float64."""
    lv = h.levels
    B = r.shape[0]

    def cycle(l, rhs):
        v = lv[l]
        if l == len(lv) - 1:
            return (rhs.reshape(B, -1) @ h.pinv).reshape(rhs.shape)
        x = R.smooth(None, rhs, v.shape3, v.bc, v.off, v.w, v.dinv, h.omega, True)
        for _ in range(MG.SWEEPS - 1):
            x = R.smooth(x, rhs, v.shape3, v.bc, v.off, v.w, v.dinv, h.omega, False)
        res = rhs - R.apply(x, v.shape3, v.bc, v.off, v.w)
        x = x + R.prolong(cycle(l + 1, R.restrict(res, v.shape3, v.bc, v.coarsen)), v.shape3, v.bc, v.coarsen)
        for _ in range(MG.SWEEPS):
            x = R.smooth(x, rhs, v.shape3, v.bc, v.off, v.w, v.dinv, h.omega, False)
        return x

    return cycle(0, r.reshape((B,) + lv[0].shape3)).reshape(B, -1)


VC_CASES = [((9, 7), (P, D)), ((6, 5, 4), (N, P, D)), ((11,), (N,))]


@DTYPES
@pytest.mark.parametrize("shape,boundary", VC_CASES, ids=["9x7-pd", "6x5x4-npd", "11-n"])
def test_vcycle_matches_reference_and_is_symmetric_positive_definite(backend, small_levels, shape, boundary,
                                                                      dtype):
    backend.simulate_only(len(shape) < 3)
    solid = disc_mask(shape, 0.15, seed=2, radius=1.0)
    grid = gpudp.Grid(shape, boundary=boundary, solid=solid)
    h = MG.hierarchy(grid)
    assert len(h.levels) >= 2
    impl = backend.impl
    dh = MG.device_hierarchy(impl, dtype, grid)
    E = np.eye(grid.size)
    out = impl.empty((grid.size, grid.size), np.dtype(dtype))
    MG.vcycle(impl, dh, impl.asarray(E.astype(dtype)), out)
    M = backend.to_numpy(out).astype(np.float64)
    assert rel(M, reference_vcycle(h, E)) <= (1e-12 if dtype == np.float64 else 1e-5)
    if dtype == np.float64:
        assert rel(M, M.T) <= 1e-13
        fluid = ~solid.reshape(-1)
        ev = np.linalg.eigvalsh(M[np.ix_(fluid, fluid)])
        assert ev.min() > 1e-8 * ev.max()


# -- solves ----------------------------------------------------------------------------------------------------

def test_auto_picks_spectral_without_and_multigrid_with_obstacles():
    rng = np.random.default_rng(0)
    b = rng.standard_normal((12, 10))
    box = gpudp.Grid((12, 10), boundary="dirichlet")
    _, info = gpudp.poisson_solve(b, box, return_info=True)
    assert info.preconditioner == "spectral" and gpudp.last_solve_info().preconditioner == "spectral"
    holes = gpudp.Grid((12, 10), boundary="dirichlet", solid=disc_mask((12, 10), 0.2, 0, 1.5))
    _, info = gpudp.poisson_solve(b, holes, return_info=True)
    assert info.preconditioner == "multigrid" and info.converged
    _, info = gpudp.poisson_solve(b, holes, preconditioner="JACOBI", return_info=True)
    assert info.preconditioner == "jacobi"
    _, info = gpudp.poisson_solve(b, holes, preconditioner="none", return_info=True)
    assert info.preconditioner is None
    with pytest.raises(ValueError, match=r"preconditioner must be 'auto', None, 'jacobi', 'spectral' or "
                                         r"'multigrid', got 'amg'"):
        gpudp.poisson_solve(b, holes, preconditioner="amg")


@pytest.mark.parametrize("shape,boundary", [((40, 36), (N, N)), ((33, 47), (P, D)), ((16, 12, 10), (D, N, P))],
                         ids=["40x36-nn", "33x47-pd", "16x12x10-dnp"])
@pytest.mark.parametrize("obstacles", [False, True], ids=["box", "obstacles"])
def test_multigrid_solve_matches_dense_pseudo_inverse_with_default_levels(shape, boundary, obstacles):
    """With the default coarsest size (several levels on these grids) against the dense pseudo-inverse."""
    solid = disc_mask(shape, 0.2, seed=3, radius=2.0) if obstacles else None
    grid = gpudp.Grid(shape, spacing=tuple(0.7 + 0.2 * k for k in range(len(shape))), boundary=boundary,
                      solid=solid)
    if solid is None:
        Lp = np.linalg.pinv(RM.laplace_matrix(shape, grid.spacing, boundary))
    else:
        Lp = RM.solid_pseudo_inverse(shape, grid.spacing, boundary, solid)
    rng = np.random.default_rng(4)
    b = rng.standard_normal((2,) + shape)
    x, info = gpudp.poisson_solve(b, grid, tol=1e-12, preconditioner="multigrid", return_info=True)
    assert len(MG.hierarchy(grid).levels) >= 2
    assert info.converged and info.preconditioner == "multigrid" and info.iterations <= 30
    assert rel(x.reshape(2, -1), b.reshape(2, -1) @ Lp.T) <= 1e-8


@pytest.mark.parametrize("shape", [(64, 64), (128, 128), (16, 16, 16), (32, 32, 32)], ids=str)
def test_multigrid_iterations_do_not_grow_with_the_grid(shape):
    """20 % random solid discs, tol 1e-6: a small iteration count, the same on every size (the benchmark suite
    measures 256² … 2048² and 32³ … 128³)."""
    solid = disc_mask(shape, 0.2, seed=5, radius=max(2.0, shape[0] / 24))
    grid = gpudp.Grid(shape, boundary="dirichlet", solid=solid)
    b = np.random.default_rng(6).standard_normal(shape)
    _, info = gpudp.poisson_solve(b, grid, tol=1e-6, return_info=True)
    assert info.preconditioner == "multigrid" and info.converged
    assert info.iterations <= 20


def test_multigrid_float32_and_batches(small_levels):
    shape = (20, 18)
    solid = disc_mask(shape, 0.2, seed=7, radius=1.5)
    grid = gpudp.Grid(shape, boundary=(N, P), solid=solid)
    rng = np.random.default_rng(8)
    b = rng.standard_normal((3,) + shape)
    b[1] = 0.0
    x64, info = gpudp.poisson_solve(b, grid, tol=1e-10, preconditioner="multigrid", return_info=True)
    assert info.converged
    np.testing.assert_array_equal(x64[1], 0.0)
    for k in (0, 2):   # batch items are independent
        xk = gpudp.poisson_solve(b[k], grid, tol=1e-10, preconditioner="multigrid")
        assert rel(xk, x64[k]) <= 1e-8
    x32, info32 = gpudp.poisson_solve(b.astype(np.float32), grid, tol=1e-5, preconditioner="multigrid",
                                      return_info=True)
    assert x32.dtype == np.float32 and info32.converged
    assert rel(x32[[0, 2]], x64[[0, 2]]) <= 1e-4


def test_sealed_regions_need_no_special_care(small_levels):
    """Two sealed regions (a wall splits a neumann box): the solution has zero mean on each."""
    shape = (12, 14)
    solid = np.zeros(shape, bool)
    solid[:, 6] = True
    grid = gpudp.Grid(shape, boundary="neumann", solid=solid)
    assert obstacle_facts(grid).n_sealed == 2
    b = np.random.default_rng(9).standard_normal(shape) + 2.0
    x, info = gpudp.poisson_solve(b, grid, tol=1e-12, preconditioner="multigrid", return_info=True)
    Lp = RM.solid_pseudo_inverse(shape, grid.spacing, grid.boundary, solid)
    assert info.converged and rel(x.reshape(-1), Lp @ b.reshape(-1)) <= 1e-8
    assert abs(x[:, :6].mean()) <= 1e-12 and abs(x[:, 7:].mean()) <= 1e-12
