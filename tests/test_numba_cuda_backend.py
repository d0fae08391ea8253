"""Kernel-level tests of the ``numba-cuda`` backend.

They run under Numba's CUDA simulator (CI: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim ...`` in a
process of its own, because the variable must be set before Numba is imported) or on a real GPU, and are
skipped otherwise. Grids are tiny because the simulator runs every CUDA thread as a Python thread.

References: the float64 NumPy formulas of ``tests/reference.py`` (advection), the dense matrices of
``tests/reference_mac.py`` (staggered operators, Poisson) and, in float64, the ``cpu`` backend.
"""
import sys

import numpy as np
import pytest

import gpudp
from gpudp.backends import backend_info, get_backend
from gpudp.ops._validate import padded

import reference as R
import reference_mac as M

pytestmark = pytest.mark.cudasim

_INFO = backend_info("numba-cuda")
if not _INFO.available:
    pytest.skip(f"numba-cuda backend unavailable ({_INFO.reason}); run with NUMBA_ENABLE_CUDASIM=1 or on a GPU",
                allow_module_level=True)
SIM = "simulator" in _INFO.device.lower()

P, D, N = "periodic", "dirichlet", "neumann"
ADVECTION_CASES = [
    ((7,), (P,)), ((7,), (D,)), ((7,), (N,)),
    ((5, 6), (P, P)), ((5, 6), (D, D)), ((5, 6), (N, N)), ((5, 6), (D, N)),
    ((3, 4, 5), (P, P, P)), ((3, 4, 5), (D, D, D)), ((3, 4, 5), (N, N, N)), ((3, 4, 5), (N, P, D)),
]
DIFF_CASES = [
    ((7,), (P,)), ((7,), (D,)), ((7,), (N,)),
    ((5, 6), (P, P)), ((5, 6), (D, N)), ((5, 6), (N, P)),
    ((3, 4, 5), (N, P, D)), ((3, 4, 5), (D, D, D)), ((3, 4, 5), (N, N, N)),
]
SOLVE_CASES = [
    ((7,), (P,)), ((7,), (D,)), ((7,), (N,)),
    ((4, 5), (D, N)), ((4, 5), (P, P)), ((4, 5), (N, P)),
    ((2, 3, 4), (N, P, D)), ((2, 3, 4), (N, N, N)),
]


def _ids(cases):
    return ["x".join(map(str, s)) + "-" + "".join(b[0] for b in bc) for s, bc in cases]


@pytest.fixture(scope="module", autouse=True)
def _fast_simulator_threads():
    """The simulator's block manager busy-polls its Python threads at every ``syncthreads``; a short GIL
    switch interval makes that several times faster."""
    old = sys.getswitchinterval()
    if SIM:
        sys.setswitchinterval(5e-5)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(scope="module")
def be():
    return get_backend("numba-cuda")


@pytest.fixture(scope="module")
def cpu():
    return get_backend("cpu")


def grid_of(shape, boundary):
    return gpudp.Grid(shape, spacing=tuple(0.5 + 0.25 * k for k in range(len(shape))), boundary=boundary)


def rel_err(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# -- arrays --------------------------------------------------------------------------------------------------

def test_array_api(be):
    assert be.name == "numba-cuda"
    if SIM:
        assert be.xp is None
    host = np.arange(12, dtype=np.float64).reshape(3, 4) - 5.5
    x = be.asarray(host)
    assert be.is_own(x) and not be.is_own(host)
    assert x.shape == (3, 4) and x.dtype == np.float64
    np.testing.assert_array_equal(be.to_numpy(x), host)
    y = be.asarray(x, dtype=np.float32)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(be.to_numpy(y), host.astype(np.float32))
    z = be.zeros((2, 5), np.float32)
    assert be.is_own(z) and z.dtype == np.float32
    np.testing.assert_array_equal(be.to_numpy(z), np.zeros((2, 5), np.float32))
    assert be.empty((4,), np.float64).shape == (4,)
    assert be.ascontiguous(x) is x
    np.testing.assert_array_equal(be.to_numpy(be.ascontiguous(x[:, 1:3])), host[:, 1:3])
    m = be.max_abs_per_row(x)
    assert isinstance(m, np.ndarray) and m.dtype == np.float64
    np.testing.assert_array_equal(m, np.abs(host).max(axis=1))
    bad = host.copy()
    bad[1, 2] = np.nan
    assert not np.isfinite(be.max_abs_per_row(be.asarray(bad))[1])
    be.synchronize()


# -- advection -----------------------------------------------------------------------------------------------

def _advection_setup(shape, boundary, batched, dtype, seed):
    rng = np.random.default_rng(seed)
    grid = grid_of(shape, boundary)
    shape3, ndim, bc = padded(grid)
    Bu, F = (2, 2) if batched else (1, 1)
    Nc = grid.size
    dt = 0.1
    coef = (0.0,) * (3 - ndim) + tuple(dt / h for h in grid.spacing)
    # CFL ≤ 1: |u_k| ≤ 0.5 Δx_k / (D Δt) along every axis
    scale = np.array([0.5 * h / (ndim * dt) for h in grid.spacing]).reshape(1, ndim, 1)
    u = rng.uniform(-1, 1, (Bu, ndim, Nc)) * scale
    u[rng.random(u.shape) < 0.15] = 0.0  # exercise the u = 0 branch
    d = rng.standard_normal((Bu, F, Nc))
    return grid, (coef, bc, shape3, ndim), d.astype(dtype), u.astype(dtype), dt


def _reference_advect(d, u, grid, dt, steps):
    Bu, F, Nc = d.shape
    dd = d.astype(np.float64).reshape((Bu, F) + grid.shape)
    uu = u.astype(np.float64).reshape((Bu, 1, grid.ndim) + grid.shape)
    return R.advect(dd, uu, dt, grid.spacing, grid.boundary, steps).reshape(Bu, F, Nc)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("shape,boundary", ADVECTION_CASES, ids=_ids(ADVECTION_CASES))
def test_advect_forward(be, cpu, shape, boundary, batched, dtype):
    grid, args, d, u, dt = _advection_setup(shape, boundary, batched, dtype, seed=len(shape) * 10 + batched)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    dd, ud = be.asarray(d), be.asarray(u)
    for steps in (1, 3):
        before = be.launches["advect_forward"]
        out, states = be.advect_forward(dd, ud, *args, steps, steps > 1)
        assert be.launches["advect_forward"] - before == steps  # one kernel per step
        assert be.is_own(out) and out.dtype == dtype and out.shape == d.shape
        got = be.to_numpy(out)
        assert rel_err(got, _reference_advect(d, u, grid, dt, steps)) <= tol
        if steps > 1:
            st = be.to_numpy(states)
            assert st.shape == (steps,) + d.shape
            for t in range(steps):
                assert rel_err(st[t], _reference_advect(d, u, grid, dt, t)) <= tol
        else:
            assert states is None
        if dtype == np.float64:
            ref_cpu, _ = cpu.advect_forward(d, u, *args, steps, False)
            assert rel_err(got, ref_cpu) <= 1e-13
    np.testing.assert_array_equal(be.to_numpy(dd), d)  # inputs untouched


def _jvp_reference(d, u, vd, vu, grid, dt, steps):
    """Forward-mode derivative of ``steps`` upwind steps (float64 NumPy, from DESIGN.md's formula; the
    ``u ≥ 0`` branch at ``u = 0``)."""
    Bu, F, Nc = d.shape
    D = grid.ndim
    x = d.astype(np.float64).reshape((Bu, F) + grid.shape)
    dx = vd.astype(np.float64).reshape((Bu, F) + grid.shape)
    uu = u.astype(np.float64).reshape((Bu, 1, D) + grid.shape)
    du = vu.astype(np.float64).reshape((Bu, 1, D) + grid.shape)
    for _ in range(steps):
        nx = R.advect_step(dx, uu, dt, grid.spacing, grid.boundary)
        for k in range(D):
            ax = 2 + k
            up = R.shift(x, +1, ax, grid.boundary[k])
            lo = R.shift(x, -1, ax, grid.boundary[k])
            diff = np.where(uu[:, :, k] < 0, up - x, x - lo)
            nx -= dt / grid.spacing[k] * du[:, :, k] * diff
        x, dx = R.advect_step(x, uu, dt, grid.spacing, grid.boundary), nx
    return dx.reshape(Bu, F, Nc)


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("shape,boundary", ADVECTION_CASES, ids=_ids(ADVECTION_CASES))
def test_advect_adjoint_dot_product(be, cpu, shape, boundary, batched):
    grid, args, d, u, dt = _advection_setup(shape, boundary, batched, np.float64, seed=len(shape) + 7 * batched)
    rng = np.random.default_rng(3)
    vd, vu, w = rng.standard_normal(d.shape), rng.standard_normal(u.shape), rng.standard_normal(d.shape)
    dd, ud, wd = be.asarray(d), be.asarray(u), be.asarray(w)
    for steps in (1, 3):
        _, states = be.advect_forward(dd, ud, *args, steps, True)
        before = dict(be.launches)
        gd, gu = be.advect_adjoint(wd, states, ud, *args, steps, True, True)
        assert be.launches["advect_adjoint_du"] - before.get("advect_adjoint_du", 0) == steps
        assert be.launches["advect_adjoint_d"] == before.get("advect_adjoint_d", 0)
        gd, gu = be.to_numpy(gd), be.to_numpy(gu)
        lhs = float(np.sum(_jvp_reference(d, u, vd, vu, grid, dt, steps) * w))
        rhs = float(np.sum(vd * gd) + np.sum(vu * gu))
        assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)
        # the d-only kernel gives the same d-gradient; without need_d nothing of it is returned
        gd_only, none_u = be.advect_adjoint(wd, None, ud, *args, steps, True, False)
        assert none_u is None
        assert rel_err(be.to_numpy(gd_only), gd) <= 1e-14
        none_d, gu_only = be.advect_adjoint(wd, states, ud, *args, steps, False, True)
        assert none_d is None
        assert rel_err(be.to_numpy(gu_only), gu) <= 1e-14
        # the cpu backend agrees
        _, cst = cpu.advect_forward(d, u, *args, steps, True)
        cgd, cgu = cpu.advect_adjoint(w, cst, u, *args, steps, True, True)
        assert rel_err(gd, cgd) <= 1e-12 and rel_err(gu, cgu) <= 1e-12


@pytest.mark.parametrize("shape,boundary", [((7,), (N,)), ((5, 6), (D, P)), ((3, 4, 5), (N, P, D))],
                         ids=_ids([((7,), (N,)), ((5, 6), (D, P)), ((3, 4, 5), (N, P, D))]))
def test_advect_adjoint_float32(be, shape, boundary):
    grid, args, d, u, dt = _advection_setup(shape, boundary, True, np.float64, seed=11)
    w = np.random.default_rng(4).standard_normal(d.shape)
    res = {}
    for dtype in (np.float64, np.float32):
        dd, ud = be.asarray(d, dtype), be.asarray(u, dtype)
        _, st = be.advect_forward(dd, ud, *args, 3, True)
        gd, gu = be.advect_adjoint(be.asarray(w, dtype), st, ud, *args, 3, True, True)
        assert gd.dtype == dtype and gu.dtype == dtype
        res[dtype] = be.to_numpy(gd), be.to_numpy(gu)
    assert rel_err(res[np.float32][0], res[np.float64][0]) <= 1e-5
    assert rel_err(res[np.float32][1], res[np.float64][1]) <= 1e-5


def test_greedy_derivatives_skip_the_velocity_adjoint(be):
    grid = gpudp.Grid((5, 6), boundary=(P, N))
    rng = np.random.default_rng(0)
    with gpudp.use_backend("numba-cuda"):
        d = gpudp.tensor(rng.standard_normal((5, 6)), requires_grad=True)
        u = gpudp.tensor(rng.uniform(-0.2, 0.2, (2, 5, 6)))  # no gradient wanted
        target = gpudp.asarray(np.full((5, 6), 0.1))
        before = dict(be.launches)
        with gpudp.Tape() as tape:
            loss = gpudp.l2_loss(gpudp.advect_upwind(d, u, 0.5, grid, steps=4), target)
        tape.backward(loss)
        assert be.launches["advect_adjoint_du"] == before.get("advect_adjoint_du", 0)
        assert be.launches["advect_adjoint_d"] - before.get("advect_adjoint_d", 0) == 4
        assert d.grad is not None and be.is_own(d.grad)
        # and when u wants one, the fused kernel runs once per step
        u.requires_grad = True
        before = dict(be.launches)
        with gpudp.Tape() as tape:
            loss = gpudp.l2_loss(gpudp.advect_upwind(d, u, 0.5, grid, steps=4), target)
        tape.backward(loss)
        assert be.launches["advect_adjoint_du"] - before.get("advect_adjoint_du", 0) == 4
        assert u.grad is not None


def test_tape_gradients_match_cpu():
    grid = gpudp.Grid((4, 5), spacing=(0.5, 1.0), boundary=(D, P))
    rng = np.random.default_rng(5)
    d0 = rng.standard_normal((2, 4, 5))
    u0 = rng.uniform(-0.3, 0.3, (2, 2, 4, 5))
    target = rng.standard_normal((2, 4, 5))
    grads = {}
    for name in ("cpu", "numba-cuda"):
        with gpudp.use_backend(name):
            d = gpudp.tensor(d0, requires_grad=True)
            u = gpudp.tensor(u0, requires_grad=True)
            with gpudp.Tape() as tape:
                loss = gpudp.l2_loss(gpudp.advect_upwind(d, u, 0.2, grid, steps=3), gpudp.asarray(target))
            tape.backward(loss)
            grads[name] = (float(loss.item()), gpudp.to_numpy(d.grad), gpudp.to_numpy(u.grad))
    assert abs(grads["cpu"][0] - grads["numba-cuda"][0]) <= 1e-12 * abs(grads["cpu"][0])
    assert rel_err(grads["numba-cuda"][1], grads["cpu"][1]) <= 1e-12
    assert rel_err(grads["numba-cuda"][2], grads["cpu"][2]) <= 1e-12


# -- staggered differences ----------------------------------------------------------------------------------

def _diff_setup(shape, boundary, B, seed):
    grid = grid_of(shape, boundary)
    shape3, ndim, bc = padded(grid)
    inv = tuple(1.0 / h for h in (1.0,) * (3 - ndim) + grid.spacing)
    rng = np.random.default_rng(seed)
    fshapes = M.face_shapes(shape, boundary)
    faces = [rng.standard_normal((B,) + fs) for fs in fshapes]
    p = rng.standard_normal((B,) + tuple(shape))
    return grid, (inv, bc, shape3, ndim), faces, p


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 2], ids=["single", "batch"])
@pytest.mark.parametrize("shape,boundary", DIFF_CASES, ids=_ids(DIFF_CASES))
def test_difference_operators(be, shape, boundary, B, dtype):
    grid, args, faces, p = _diff_setup(shape, boundary, B, seed=B + len(shape))
    Nc = grid.size
    Dm = M.divergence_matrix(shape, grid.spacing, boundary)
    Gm = M.gradient_matrix(shape, grid.spacing, boundary)
    Lm = M.laplace_matrix(shape, grid.spacing, boundary)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    fdev = tuple(be.asarray(f.reshape(B, -1), dtype) for f in faces)
    pdev = be.asarray(p.reshape(B, Nc), dtype)
    fvec = M.stack_faces([f.astype(dtype) for f in faces], shape)
    pvec = p.reshape(B, Nc).astype(dtype).astype(np.float64)

    div = be.to_numpy(be.stag_divergence(fdev, *args))
    assert div.shape == (B, Nc) and div.dtype == dtype
    assert rel_err(div, fvec @ Dm.T) <= tol

    grad = be.stag_gradient(pdev, *args)
    assert len(grad) == grid.ndim
    gvec = np.concatenate([be.to_numpy(g) for g in grad], axis=1)
    for g, f in zip(grad, faces):
        assert g.shape == (B, f[0].size) and g.dtype == dtype
    assert rel_err(gvec, pvec @ Gm.T) <= tol

    lap = be.to_numpy(be.laplace(pdev, *args))
    assert rel_err(lap, pvec @ Lm.T) <= tol
    assert rel_err(lap, be.to_numpy(be.stag_divergence(grad, *args))) <= 10 * tol  # laplace = div ∘ grad

    gdiv = np.concatenate([be.to_numpy(g) for g in be.stag_divergence_adjoint(pdev, *args)], axis=1)
    assert rel_err(gdiv, pvec @ Dm) <= tol
    ggrad = be.to_numpy(be.stag_gradient_adjoint(fdev, *args))
    assert rel_err(ggrad, fvec @ Gm) <= tol
    if dtype == np.float64:  # dot-product tests: <J v, w> = <v, J^T w>
        w = np.random.default_rng(9).standard_normal((B, Nc))
        wd = be.asarray(w)
        lhs = np.sum(div * w)
        rhs = sum(np.sum(f.reshape(B, -1) * be.to_numpy(g))
                  for f, g in zip(faces, be.stag_divergence_adjoint(wd, *args)))
        assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)
        lhs = np.sum(gvec * fvec)
        rhs = np.sum(pvec * ggrad)
        assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)


# -- conjugate gradients -------------------------------------------------------------------------------------

def _dense_solution(Lm, b, singular):
    if singular:
        return (np.linalg.pinv(Lm) @ b.T).T
    return np.linalg.solve(Lm, b.T).T


@pytest.mark.parametrize("preconditioner", [None, "jacobi"])
@pytest.mark.parametrize("shape,boundary", SOLVE_CASES, ids=_ids(SOLVE_CASES))
def test_cg_matches_dense_inverse(be, shape, boundary, preconditioner):
    grid, args, _, _ = _diff_setup(shape, boundary, 1, seed=0)
    Nc = grid.size
    b = np.random.default_rng(len(shape)).standard_normal((2, Nc))
    b[0] += 3.0  # a mean that a singular operator must drop
    Lm = M.laplace_matrix(shape, grid.spacing, boundary)
    tol = 1e-11
    before = be.launches["cg_stencil_dot"]
    x, iterations, residual = be.cg_solve(be.asarray(b), None, *args, tol, 10 * Nc, grid.is_singular,
                                          preconditioner, 4)
    assert be.launches["cg_stencil_dot"] - before >= iterations  # one fused stencil per iteration
    x = be.to_numpy(x)
    assert 0 < iterations <= 10 * Nc and residual <= tol
    assert rel_err(x, _dense_solution(Lm, b, grid.is_singular)) <= 1e-8
    if grid.is_singular:
        assert np.abs(x.mean(axis=1)).max() <= 1e-12 * np.abs(x).max()
        bh = b - b.mean(axis=1, keepdims=True)
        true = np.linalg.norm(bh - x @ Lm.T, axis=1) / np.linalg.norm(bh, axis=1)
    else:
        true = np.linalg.norm(b - x @ Lm.T, axis=1) / np.linalg.norm(b, axis=1)
    assert true.max() <= tol * 1.01  # the reported residual is the true one


def test_cg_batch_zero_rhs_and_x0(be):
    shape, boundary = (4, 5), (D, N)
    grid, args, _, _ = _diff_setup(shape, boundary, 1, seed=0)
    Nc = grid.size
    Lm = M.laplace_matrix(shape, grid.spacing, boundary)
    rng = np.random.default_rng(2)
    b = rng.standard_normal((3, Nc))
    b[1] = 0.0
    x0 = rng.standard_normal((3, Nc))
    x, iterations, residual = be.cg_solve(be.asarray(b), be.asarray(x0), *args, 1e-10, 200, False, "jacobi", 3)
    x = be.to_numpy(x)
    assert residual <= 1e-10
    np.testing.assert_array_equal(x[1], 0.0)  # a zero right-hand side has the solution 0, whatever x0 was
    assert rel_err(x[[0, 2]], _dense_solution(Lm, b[[0, 2]], False)) <= 1e-8
    # starting at the solution: nothing to do
    xs = _dense_solution(Lm, b, False)
    _, it0, res0 = be.cg_solve(be.asarray(b), be.asarray(xs), *args, 1e-8, 200, False, None, 3)
    assert it0 == 0 and res0 <= 1e-8


def test_cg_singular_x0_mean_is_ignored(be):
    shape, boundary = (4, 5), (P, N)
    grid, args, _, _ = _diff_setup(shape, boundary, 1, seed=0)
    rng = np.random.default_rng(8)
    b = rng.standard_normal((1, grid.size))
    x0 = rng.standard_normal((1, grid.size)) + 5.0
    x, _, residual = be.cg_solve(be.asarray(b), be.asarray(x0), *args, 1e-11, 200, True, None, 5)
    Lm = M.laplace_matrix(shape, grid.spacing, boundary)
    assert residual <= 1e-11
    assert rel_err(be.to_numpy(x), _dense_solution(Lm, b, True)) <= 1e-8


def test_cg_maxiter_and_float32(be):
    shape, boundary = (4, 5), (D, D)
    grid, args, _, _ = _diff_setup(shape, boundary, 1, seed=0)
    b = np.random.default_rng(6).standard_normal((2, grid.size))
    x, iterations, residual = be.cg_solve(be.asarray(b), None, *args, 1e-12, 2, False, None, 10)
    assert iterations == 2 and residual > 1e-12  # the caller decides what non-convergence means
    x32, it32, res32 = be.cg_solve(be.asarray(b, np.float32), None, *args, 1e-5, 200, False, "jacobi", 4)
    assert x32.dtype == np.float32 and res32 <= 1e-5
    Lm = M.laplace_matrix(shape, grid.spacing, boundary)
    assert rel_err(be.to_numpy(x32), _dense_solution(Lm, b, False)) <= 1e-4


# -- the simulator's shared memory ---------------------------------------------------------------------------

@pytest.mark.skipif(not SIM, reason="a property of Numba's CUDA simulator")
def test_simulator_shared_arrays_are_one_per_call_site_under_contention(be):
    """Threads that reach one ``cuda.shared.array`` line together get one array (the block reductions rely on
    it); another line gets another array, and a new launch gets fresh ones."""
    from numba import float64
    from numba.cuda.simulator import kernelapi

    assert getattr(kernelapi.FakeCUDAShared.array, "_gpudp_locked", False)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: without the lock about one round in five splits
    try:
        _contend_for_shared_arrays(kernelapi, float64)
    finally:
        sys.setswitchinterval(interval)


def _contend_for_shared_arrays(kernelapi, float64):
    import threading

    for _ in range(50):
        shared = kernelapi.FakeCUDAShared(0)
        barrier = threading.Barrier(8)
        got = [None] * 8

        def thread(k):
            barrier.wait()
            got[k] = shared.array((4, 8), float64)

        threads = [threading.Thread(target=thread, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(a is got[0] for a in got)
        assert got[0].shape == (4, 8) and got[0].dtype == np.float64
    other = shared.array((4, 8), float64)
    assert other is not got[0]
    assert kernelapi.FakeCUDAShared(0).array((4, 8), np.float32) is not got[0]
