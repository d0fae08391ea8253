"""The CPU backend's tuned kernels on the paths the small grids of the other tests do not reach: the parallel
advection drivers (grids of at least ``_PARALLEL_MIN_CELLS`` cells), the 1-D row functions, and the
bit-pattern ``max |x|`` reduction of large arrays (the CFL check)."""
import itertools

import numpy as np
import pytest

from gpudp.backends.cpu import advection as A

import reference as R

BC_NAMES = ("periodic", "dirichlet", "neumann")


def _problem(rng, shape, bcs, dtype, Bu=2, F=2):
    ndim = len(shape)
    N = int(np.prod(shape))
    d = rng.standard_normal((Bu, F, N)).astype(dtype)
    u = rng.uniform(-1, 1, (Bu, ndim, N)).astype(dtype)
    u[np.abs(u) < 0.1] = 0.0  # the u = 0 branch too
    g = rng.standard_normal((Bu, F, N)).astype(dtype)
    shape3 = (1,) * (3 - ndim) + tuple(shape)
    bc = (0,) * (3 - ndim) + tuple(BC_NAMES.index(b) for b in bcs)
    coef = (0.0,) * (3 - ndim) + tuple(rng.uniform(0.05, 0.3, ndim) / ndim)
    return d, u, g, shape3, bc, coef, ndim


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_parallel_drivers_match_serial_and_reference(monkeypatch, dtype):
    rng = np.random.default_rng(3)
    for shape, bcs in [((37,), ("dirichlet",)), ((9, 11), ("neumann", "periodic")),
                       ((5, 4, 7), ("periodic", "dirichlet", "neumann")), ((2, 3, 3), ("neumann",) * 3)]:
        d, u, g, shape3, bc, coef, ndim = _problem(rng, shape, bcs, dtype)
        steps = 3
        results = []
        for threshold in (10 ** 9, 0):  # serial drivers, then the parallel ones
            monkeypatch.setattr(A, "_PARALLEL_MIN_CELLS", threshold)
            out, states = A.advect_forward(d, u, coef, bc, shape3, ndim, steps, True)
            gd, gu = A.advect_adjoint(g, states, u, coef, bc, shape3, ndim, steps, True, True)
            gd_only, _ = A.advect_adjoint(g, None, u, coef, bc, shape3, ndim, steps, True, False)
            results.append((out, states, gd, gu, gd_only))
        for serial, parallel in zip(*results):
            np.testing.assert_array_equal(serial, parallel)  # the same arithmetic cell by cell
        # forward against the independent float64 reference (dt/dx = coef with dx = 1)
        spacing = [1.0 / coef[3 - ndim + k] for k in range(ndim)]
        ref = np.stack([R.advect(d[b].astype(np.float64).reshape((-1,) + tuple(shape)),
                                 u[b].astype(np.float64).reshape((ndim,) + tuple(shape)), 1.0, spacing, bcs, steps)
                        for b in range(d.shape[0])])
        err = np.abs(results[1][0].reshape(ref.shape) - ref).max() / np.abs(ref).max()
        assert err <= (1e-12 if dtype == np.float64 else 1e-5)
        # the d-gradient alone equals the one computed together with the u-gradient
        np.testing.assert_allclose(results[1][4], results[1][2], rtol=1e-12 if dtype == np.float64 else 1e-6)


def test_adjoint_dot_product_on_the_parallel_path(monkeypatch):
    """⟨J v, w⟩ = ⟨v, Jᵀ w⟩ for the d-part of one step, through the parallel row functions."""
    monkeypatch.setattr(A, "_PARALLEL_MIN_CELLS", 0)
    rng = np.random.default_rng(4)
    for bcs in itertools.product(BC_NAMES, repeat=2):
        d, u, g, shape3, bc, coef, ndim = _problem(rng, (6, 8), bcs, np.float64, Bu=1, F=1)
        Jv, _ = A.advect_forward(d, u, coef, bc, shape3, ndim, 1, False)
        JTw, _ = A.advect_adjoint(g, None, u, coef, bc, shape3, ndim, 1, True, False)
        lhs, rhs = float((Jv * g).sum()), float((d * JTw).sum())
        assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_abs_rows_large_arrays(dtype):
    rng = np.random.default_rng(5)
    n = A._PARALLEL_MIN_CELLS + 12345  # the kernel path, several chunks when rows are long
    x = (rng.standard_normal((3, n)) * np.array([[0.5], [3.0], [1e-3]])).astype(dtype)
    np.testing.assert_array_equal(A.max_abs_rows(x), np.abs(x).max(axis=-1).astype(np.float64))
    x[0, 7] = np.nan
    x[1, -1] = -np.inf
    x[2] = -0.0
    got = A.max_abs_rows(x)
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == 0.0
    assert A.max_abs_rows(x).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_abs_rows_small_arrays(dtype):
    """The serial path of small arrays (every advect_upwind call on a small grid): the NumPy values, NaN for a
    row with a NaN (wherever it sits), inf for a row with an infinity."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((5, 37)) * np.array([[0.5], [3.0], [1e-3], [7.0], [1.0]])).astype(dtype)
    np.testing.assert_array_equal(A.max_abs_rows(x), np.abs(x).max(axis=-1).astype(np.float64))
    x[0, 0] = np.nan
    x[1, -1] = np.nan
    x[1, 3] = 1e30 if dtype == np.float32 else 1e300
    x[2, 5] = -np.inf
    x[3] = -0.0
    got = A.max_abs_rows(x)
    assert got.dtype == np.float64 and got.shape == (5,)
    assert np.isnan(got[0]) and np.isnan(got[1]) and got[2] == np.inf and got[3] == 0.0
    assert got[4] == np.abs(x[4]).max()
