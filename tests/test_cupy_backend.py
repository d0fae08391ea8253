"""Kernel-level tests of the ``cupy`` backend and its CUDA C sources (``kernels/*.cu``).

Every kernel test runs twice:

- ``gpu``: the real backend on a CUDA device (marker ``gpu``); skipped, with the reason, where the cupy backend
  is unavailable, and failing instead when ``GPUDP_REQUIRE_BACKENDS`` names ``cupy``;
- ``emulated``: the backend's own launch wrappers with the same kernels compiled for the CPU by
  ``tests/cuda_host`` (blocks, threads, ``__syncthreads``, argument types checked against the C signatures);
  skipped where no C++ compiler is found.

References: the ``cpu`` backend (advection, to rounding), ``tests/reference.py`` (advection formula) and the dense
matrices of ``tests/reference_mac.py`` (staggered operators, Laplacian, pseudo-inverse). The file also checks
that every ``kernels/*.cu`` compiles with ``nvcc`` (skipped without it) and how the loader finds the sources.
"""
import os
import re
import sys
from collections import Counter

import numpy as np
import pytest

import gpudp
from gpudp.backends import backend_info, get_backend
from gpudp.backends.cupy_backend import _module
from gpudp.ops.difference import kernel_args

import reference as R
import reference_mac as M

P, D, N = "periodic", "dirichlet", "neumann"
_REQUIRED = {n.strip() for n in os.environ.get("GPUDP_REQUIRE_BACKENDS", "").split(",") if n.strip()}
_EMULATED = {}

ADVECTION_CASES = [
    ((7,), (P,)), ((7,), (D,)), ((7,), (N,)), ((2,), (P,)),
    ((5, 6), (P, P)), ((5, 6), (D, D)), ((5, 6), (N, N)), ((5, 6), (D, N)), ((1, 4), (P, N)),
    ((3, 4, 5), (P, P, P)), ((3, 4, 5), (D, D, D)), ((3, 4, 5), (N, N, N)), ((3, 4, 5), (N, P, D)),
    ((3, 1, 2), (D, P, N)),
]
DIFF_CASES = ADVECTION_CASES
SOLVE_CASES = [
    ((7,), (P,)), ((7,), (D,)), ((7,), (N,)),
    ((5, 4), (P, P)), ((5, 4), (D, D)), ((5, 4), (N, N)), ((5, 4), (D, N)), ((1, 3), (P, P)),
    ((3, 4, 5), (N, P, D)), ((3, 4, 5), (N, N, N)), ((2, 3, 4), (D, D, D)),
]


def _ids(cases):
    return ["x".join(map(str, s)) + "-" + "".join(b[0] for b in bc) for s, bc in cases]


def _emulated_backend():
    if not sys.platform.startswith("linux"):
        pytest.skip("the CUDA host emulator runs on Linux only")
    from cuda_host.emulator import EmulatedCupyBackend, compiler
    if compiler() is None:
        pytest.skip("no host C++ compiler (g++/c++) for the CUDA host emulator")
    if "backend" not in _EMULATED:
        _EMULATED["backend"] = EmulatedCupyBackend()
    return _EMULATED["backend"]


@pytest.fixture(scope="module", params=[pytest.param("gpu", marks=pytest.mark.gpu), "emulated"])
def cb(request):
    """The cupy backend object: on the GPU, or emulated on the CPU."""
    if request.param == "emulated":
        return _emulated_backend()
    info = backend_info("cupy")
    if not info.available:
        if "cupy" in _REQUIRED:
            pytest.fail(f"backend 'cupy' is required (GPUDP_REQUIRE_BACKENDS) but unavailable: {info.reason}")
        pytest.skip(f"cupy backend unavailable: {info.reason}")
    return get_backend("cupy")


@pytest.fixture(scope="module")
def cpu():
    return get_backend("cpu")


def dev(cb, a):
    return cb.asarray(np.ascontiguousarray(a))


def host(cb, x):
    return None if x is None else np.asarray(cb.to_numpy(x))


def _tol(dtype):
    return 1e-12 if dtype == np.float64 else 2e-5


def _close(got, want, dtype, what):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = float(np.abs(got - want).max()) / scale if want.size else 0.0
    assert err <= _tol(dtype), f"{what}: max relative error {err:.3e} > {_tol(dtype):g}"


def _advection_args(shape, boundary, dt=0.05):
    grid = gpudp.Grid(shape, spacing=tuple(0.5 + 0.25 * k for k in range(len(shape))), boundary=boundary)
    inv_dx, bc, shape3, ndim = kernel_args(grid)
    coef = (0.0,) * (3 - ndim) + tuple(dt / h for h in grid.spacing)
    return grid, coef, bc, shape3, ndim


def _advection_data(shape, Bu, F, dtype, seed):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    d = rng.standard_normal((Bu, F, n)).astype(dtype)
    u = rng.uniform(-1.0, 1.0, (Bu, len(shape), n)).astype(dtype)
    u[..., ::5] = 0.0  # the u = 0 branch
    return d, u


# -- the sources and the loader -----------------------------------------------------------------------------

def test_loader_finds_every_source_and_inlines_the_header():
    names = {p.name for p in _module.source_files()}
    assert {"advection.cu", "difference.cu", "poisson.cu"} <= names
    for name in names:
        text = _module.read_source(name)
        assert not re.search(r'#\s*include\s*"gpudp_common.cuh"', text), name
        assert "GPUDP_COMMON_CUH" in text and 'extern "C" __global__' in text


def test_block_size_of_wrappers_matches_kernels():
    header = (_module.kernel_dir() / "gpudp_common.cuh").read_text()
    assert int(re.search(r"#define GPUDP_BLOCK (\d+)", header).group(1)) == _module.BLOCK


def test_kernel_dir_override(tmp_path, monkeypatch):
    (tmp_path / "advection.cu").write_text("// empty\n")
    monkeypatch.setenv("GPUDP_KERNEL_DIR", str(tmp_path))
    assert _module.kernel_dir() == tmp_path
    monkeypatch.setenv("GPUDP_KERNEL_DIR", str(tmp_path / "missing"))
    assert _module.kernel_dir() != tmp_path / "missing"   # falls back to the package / checkout


def test_kernels_compile_with_nvcc():
    from gpudp.backends.cupy_backend.compile_check import compile_all, find_nvcc
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set NVCC or CUDA_HOME, or put nvcc on PATH)")
    results = compile_all(nvcc, arch="sm_90", ptx=True)
    assert results, "no kernels/*.cu found"
    failed = {name: log for name, ok, log in results if not ok}
    assert not failed, "nvcc failed:\n" + "\n".join(f"{n}:\n{log}" for n, log in failed.items())


def test_kernels_compile_with_nvrtc():
    """The text the backend hands to NVRTC (header inlined) compiles; needs libnvrtc, not a GPU."""
    from gpudp.backends.cupy_backend.compile_check import nvrtc_compile_all
    try:
        results = nvrtc_compile_all("compute_90")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    failed = {name: log for name, ok, log in results if not ok}
    assert not failed, "NVRTC failed:\n" + "\n".join(f"{n}:\n{log}" for n, log in failed.items())


# -- advection ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,boundary", ADVECTION_CASES, ids=_ids(ADVECTION_CASES))
def test_advect_forward_matches_cpu_and_reference(cb, cpu, shape, boundary, dtype):
    grid, coef, bc, shape3, ndim = _advection_args(shape, boundary)
    for (Bu, F), steps, save in [((1, 1), 1, False), ((2, 3), 1, True), ((2, 3), 4, True), ((1, 2), 5, False)]:
        d, u = _advection_data(shape, Bu, F, dtype, seed=steps)
        before = Counter(cb.launches)
        out, states = cb.advect_forward(dev(cb, d), dev(cb, u), coef, bc, shape3, ndim, steps, save)
        assert cb.launches["advect_forward"] - before["advect_forward"] == steps   # one launch per step
        want, want_states = cpu.advect_forward(d, u, coef, bc, shape3, ndim, steps, save)
        what = f"Bu={Bu} F={F} steps={steps}"
        _close(host(cb, out), want, dtype, "forward " + what)
        assert host(cb, out).dtype == dtype
        if save:
            assert states.shape == (steps, Bu, F, d.shape[-1])
            _close(host(cb, states), want_states, dtype, "saved states " + what)
        else:
            assert states is None
        if dtype == np.float64:
            ref = _reference_advect(d, u, shape, grid, boundary, steps)
            _close(host(cb, out), ref, dtype, "forward vs NumPy reference " + what)


def _reference_advect(d, u, shape, grid, boundary, steps, dt=0.05):
    Bu, F, _ = d.shape
    out = np.empty((Bu, F) + shape)
    for b in range(Bu):
        out[b] = R.advect(d[b].reshape((F,) + shape), u[b].reshape((len(shape),) + shape), dt, grid.spacing,
                          boundary, steps)
    return out.reshape(d.shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,boundary", ADVECTION_CASES, ids=_ids(ADVECTION_CASES))
def test_advect_adjoint_matches_cpu(cb, cpu, shape, boundary, dtype):
    grid, coef, bc, shape3, ndim = _advection_args(shape, boundary)
    for (Bu, F), steps in [((1, 1), 1), ((2, 3), 3)]:
        d, u = _advection_data(shape, Bu, F, dtype, seed=10 + steps)
        g = np.random.default_rng(steps).standard_normal(d.shape).astype(dtype)
        _, states = cpu.advect_forward(d, u, coef, bc, shape3, ndim, steps, True)
        for need_d, need_u in [(True, False), (False, True), (True, True)]:
            before = Counter(cb.launches)
            gd, gu = cb.advect_adjoint(dev(cb, g), dev(cb, states) if need_u else None, dev(cb, u), coef, bc,
                                       shape3, ndim, steps, need_d, need_u)
            ran = Counter(cb.launches) - before
            # greedy derivatives: the velocity-adjoint kernel runs exactly when u needs a gradient
            assert ran["advect_adjoint_du"] == (steps if need_u else 0)
            assert ran["advect_adjoint_d"] == (0 if need_u else steps)
            wd, wu = cpu.advect_adjoint(g, states, u, coef, bc, shape3, ndim, steps, need_d, need_u)
            what = f"Bu={Bu} F={F} steps={steps} need_d={need_d} need_u={need_u}"
            assert (gd is None) == (not need_d) and (gu is None) == (not need_u), what
            if need_d:
                _close(host(cb, gd), wd, dtype, "grad d " + what)
            if need_u:
                assert gu.shape == u.shape
                _close(host(cb, gu), wu, dtype, "grad u " + what)


@pytest.mark.parametrize("shape,boundary", ADVECTION_CASES, ids=_ids(ADVECTION_CASES))
def test_advect_adjoint_d_dot_product(cb, shape, boundary):
    """The step is linear in d: <J v, w> = <v, Jᵀ w> for the kernels' own forward and adjoint."""
    grid, coef, bc, shape3, ndim = _advection_args(shape, boundary)
    v, u = _advection_data(shape, 2, 2, np.float64, seed=3)
    w = np.random.default_rng(4).standard_normal(v.shape)
    Jv, _ = cb.advect_forward(dev(cb, v), dev(cb, u), coef, bc, shape3, ndim, 3, False)
    JTw, _ = cb.advect_adjoint(dev(cb, w), None, dev(cb, u), coef, bc, shape3, ndim, 3, True, False)
    lhs = float(np.sum(host(cb, Jv) * w))
    rhs = float(np.sum(v * host(cb, JTw)))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), (lhs, rhs)


def test_advect_inputs_are_not_modified(cb):
    grid, coef, bc, shape3, ndim = _advection_args((5, 6), (D, N))
    d, u = _advection_data((5, 6), 2, 2, np.float64, seed=5)
    dd, ud = dev(cb, d), dev(cb, u)
    _, states = cb.advect_forward(dd, ud, coef, bc, shape3, ndim, 3, True)
    g = dev(cb, d)
    cb.advect_adjoint(g, states, ud, coef, bc, shape3, ndim, 3, True, True)
    np.testing.assert_array_equal(host(cb, dd), d)
    np.testing.assert_array_equal(host(cb, ud), u)
    np.testing.assert_array_equal(host(cb, g), d)


# -- staggered differences and the Laplacian ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,boundary", DIFF_CASES, ids=_ids(DIFF_CASES))
def test_difference_operators_match_dense_matrices_and_cpu(cb, cpu, shape, boundary, dtype):
    spacing = tuple(0.5 + 0.25 * k for k in range(len(shape)))
    grid = gpudp.Grid(shape, spacing=spacing, boundary=boundary)
    args = kernel_args(grid)
    Dm = M.divergence_matrix(shape, spacing, boundary)
    Gm = M.gradient_matrix(shape, spacing, boundary)
    Lm = M.laplace_matrix(shape, spacing, boundary)
    B = 2
    rng = np.random.default_rng(len(shape))
    p = rng.standard_normal((B, grid.size)).astype(dtype)
    fvec = rng.standard_normal((B, Dm.shape[1])).astype(dtype)
    faces = tuple(dev(cb, f.reshape(B, -1)) for f in M.split_faces(fvec, shape, boundary, (B,)))
    pd = dev(cb, p)

    def stacked(fs):
        assert len(fs) == len(shape)
        for k, (f, fshape) in enumerate(zip(fs, M.face_shapes(shape, boundary))):
            assert tuple(f.shape) == (B, int(np.prod(fshape))), (k, f.shape)
            assert f.dtype == dtype
        return np.concatenate([host(cb, f) for f in fs], axis=1)

    p64, f64 = p.astype(np.float64), fvec.astype(np.float64)
    _close(host(cb, cb.stag_divergence(faces, *args)), f64 @ Dm.T, dtype, "divergence")
    _close(stacked(cb.stag_gradient(pd, *args)), p64 @ Gm.T, dtype, "spatial_gradient")
    _close(host(cb, cb.laplace(pd, *args)), p64 @ Lm.T, dtype, "laplace")
    _close(stacked(cb.stag_divergence_adjoint(pd, *args)), p64 @ Dm, dtype, "divergence adjoint")
    _close(host(cb, cb.stag_gradient_adjoint(faces, *args)), f64 @ Gm, dtype, "spatial_gradient adjoint")
    # the cpu backend gives the same numbers
    fc = tuple(host(cb, f) for f in faces)
    pairs = [(cb.stag_divergence(faces, *args), cpu.stag_divergence(fc, *args)),
             (cb.stag_gradient_adjoint(faces, *args), cpu.stag_gradient_adjoint(fc, *args)),
             (cb.laplace(pd, *args), cpu.laplace(p, *args))]
    pairs += list(zip(cb.stag_gradient(pd, *args), cpu.stag_gradient(p, *args)))
    pairs += list(zip(cb.stag_divergence_adjoint(pd, *args), cpu.stag_divergence_adjoint(p, *args)))
    for k, (got, want) in enumerate(pairs):
        _close(host(cb, got), want, dtype, f"vs cpu backend, result {k}")
    # laplace = divergence(spatial_gradient) to rounding
    _close(host(cb, cb.stag_divergence(cb.stag_gradient(pd, *args), *args)), host(cb, cb.laplace(pd, *args)),
           dtype, "div(grad) vs laplace")


# -- the Poisson solve -------------------------------------------------------------------------------------

def _solve_case(shape, boundary):
    """Grid, dense Laplacian and its pseudo-inverse."""
    spacing = tuple(1.0 + 0.5 * k for k in range(len(shape)))
    grid = gpudp.Grid(shape, spacing=spacing, boundary=boundary)
    L = M.laplace_matrix(shape, spacing, boundary)
    return grid, L, np.linalg.pinv(L)


def _reference_solution(Lp, b, singular):
    if singular:
        b = b - b.mean(axis=1, keepdims=True)
    return b @ Lp.T


@pytest.mark.parametrize("preconditioner", [None, "jacobi"])
@pytest.mark.parametrize("shape,boundary", SOLVE_CASES, ids=_ids(SOLVE_CASES))
def test_cg_matches_dense_pseudo_inverse(cb, shape, boundary, preconditioner):
    grid, L, Lp = _solve_case(shape, boundary)
    singular = grid.is_singular
    rng = np.random.default_rng(11)
    b = rng.standard_normal((3, grid.size))
    b[1] = 0.0                       # a zero right-hand side: x = 0, residual 0
    b[2] *= 1e3                      # another scale: converges at its own iteration
    want = _reference_solution(Lp, b, singular)
    for x0 in (None, rng.standard_normal(b.shape)):
        x, iterations, residual = cb.cg_solve(dev(cb, b), None if x0 is None else dev(cb, x0), *kernel_args(grid),
                                              1e-11, 10 * grid.size + 10, singular, preconditioner, 4)
        xh = host(cb, x)
        assert xh.shape == b.shape and xh.dtype == np.float64
        assert residual <= 1e-11 and 0 < iterations <= 10 * grid.size + 10
        assert isinstance(iterations, int) and isinstance(residual, float)
        err = np.abs(xh - want).max() / np.abs(want).max()
        assert err <= 1e-8, f"x0={'given' if x0 is not None else None}: relative error {err:.3e}"
        np.testing.assert_array_equal(xh[1], 0.0)
        if singular:
            assert np.abs(xh.mean(axis=1)).max() <= 1e-12 * np.abs(xh).max()
        bt = b - b.mean(axis=1, keepdims=True) if singular else b
        true = np.linalg.norm(xh @ L.T - bt, axis=1) / np.maximum(np.linalg.norm(bt, axis=1), 1e-300)
        assert true.max() <= 1e-9, f"true relative residual {true.max():.3e}"


@pytest.mark.parametrize("shape,boundary", [((16, 12), (N, N)), ((6, 5, 4), (D, P, N)), ((40,), (D,))],
                         ids=["16x12-nn", "6x5x4-dpn", "40-d"])
def test_cg_float32_reaches_tolerance(cb, shape, boundary):
    grid, _, Lp = _solve_case(shape, boundary)
    b = np.random.default_rng(2).standard_normal((2, grid.size))
    for pre in (None, "jacobi"):
        x, iterations, residual = cb.cg_solve(dev(cb, b.astype(np.float32)), None, *kernel_args(grid), 1e-5,
                                              10 * grid.size, grid.is_singular, pre, 10)
        xh = host(cb, x)
        assert xh.dtype == np.float32 and residual <= 1e-5
        want = _reference_solution(Lp, b, grid.is_singular)
        assert np.abs(xh - want).max() / np.abs(want).max() <= 1e-3


def test_cg_not_converging_reports_instead_of_raising(cb):
    grid, _, _ = _solve_case((9, 8), (D, N))
    b = np.random.default_rng(3).standard_normal((2, grid.size))
    x, iterations, residual = cb.cg_solve(dev(cb, b), None, *kernel_args(grid), 1e-12, 5, False, None, 3)
    assert iterations == 5 and residual > 1e-12 and np.isfinite(residual)
    assert np.all(np.isfinite(host(cb, x)))


def test_cg_check_every_changes_nothing_but_the_launch_count(cb):
    """Converged systems are frozen on the device: the iterations queued after convergence (until the next
    host check) leave x, the iteration count and the residual exactly as they were."""
    grid, _, _ = _solve_case((6, 7), (N, D))
    b = np.random.default_rng(4).standard_normal((3, grid.size))
    b[0] *= 1e-3
    results = []
    for check_every in (1, 7, 50):
        before = Counter(cb.launches)
        x, iterations, residual = cb.cg_solve(dev(cb, b), None, *kernel_args(grid), 1e-9, 200, False, "jacobi",
                                              check_every)
        ran = Counter(cb.launches) - before
        # iterations are queued in chunks of check_every between host checks
        assert ran["cg_apply"] == ran["cg_alpha"] == min(200, -(-iterations // check_every) * check_every)
        assert ran["cg_update"] == ran["cg_beta"] == ran["cg_apply"] + 1   # + the initialisation
        results.append((host(cb, x), iterations, residual))
    for x, iterations, residual in results[1:]:
        np.testing.assert_array_equal(x, results[0][0])
        assert (iterations, residual) == results[0][1:]


def test_cg_agrees_with_cpu_backend(cb, cpu):
    grid, _, _ = _solve_case((7, 6, 5), (N, P, N))
    b = np.random.default_rng(5).standard_normal((2, grid.size))
    args = kernel_args(grid)
    x, it, res = cb.cg_solve(dev(cb, b), None, *args, 1e-10, 2000, True, "jacobi", 10)
    xc, itc, resc = cpu.cg_solve(b, None, *args, 1e-10, 2000, True, "jacobi", 10)
    assert res <= 1e-10 and resc <= 1e-10
    assert abs(it - itc) <= 3
    np.testing.assert_allclose(host(cb, x), xc, rtol=0, atol=1e-8 * np.abs(xc).max())


def test_cg_inputs_are_not_modified(cb):
    grid, _, _ = _solve_case((5, 4), (P, P))
    b = np.random.default_rng(6).standard_normal((2, grid.size))
    x0 = np.random.default_rng(7).standard_normal((2, grid.size))
    bd, x0d = dev(cb, b), dev(cb, x0)
    cb.cg_solve(bd, x0d, *kernel_args(grid), 1e-8, 100, True, None, 5)
    np.testing.assert_array_equal(host(cb, bd), b)
    np.testing.assert_array_equal(host(cb, x0d), x0)


# -- the backend object on a real device ---------------------------------------------------------------------

@pytest.mark.gpu
def test_cupy_backend_arrays():
    info = backend_info("cupy")
    if not info.available:
        if "cupy" in _REQUIRED:
            pytest.fail(f"backend 'cupy' is required but unavailable: {info.reason}")
        pytest.skip(f"cupy backend unavailable: {info.reason}")
    import cupy
    be = get_backend("cupy")
    assert be.name == "cupy" and be.xp is cupy and be.array_type_name() == "cupy.ndarray"
    a = np.arange(12.0).reshape(3, 4)
    ad = be.asarray(a)
    assert isinstance(ad, cupy.ndarray) and be.is_own(ad) and not be.is_own(a)
    np.testing.assert_array_equal(be.to_numpy(ad), a)
    assert be.asarray(a, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(be.max_abs_per_row(be.asarray(-a)), np.abs(a).max(axis=1))
    t = be.ascontiguous(ad.T)
    assert t.flags.c_contiguous
    np.testing.assert_array_equal(be.to_numpy(t), a.T)
    assert be.zeros((2, 3), np.float64).shape == (2, 3) and be.empty((4,), np.float32).dtype == np.float32
    be.synchronize()
    with gpudp.use_backend("cupy"):
        grid = gpudp.Grid((16,), boundary="periodic")
        d = gpudp.asarray(np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False)))
        u = gpudp.asarray(np.full((1, 16), 0.5))
        out = gpudp.advect_upwind(d, u, 0.1, grid, steps=3)
        assert isinstance(out, cupy.ndarray)
