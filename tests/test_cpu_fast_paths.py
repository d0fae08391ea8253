"""The CPU backend's fast paths of upwind advection against the general ones they shortcut.

- the serial 1-D drivers (velocity factors computed once per call, no array views, the periodic end cells
  without the general ghost-rule tests) against the generic serial drivers, bit for bit;
- the operator's launcher (``CpuBackend.advect_launcher``: drivers looked up once, arrays passed as they are)
  against the ``advect_forward`` / ``advect_adjoint`` methods;
- the per-grid cache of the operator's coefficients and launcher (new entries for every backend, time step,
  dtype and layout);
- the CFL check the 1-D forward kernel does with its own ``max |u|``: the same errors as the separate check,
  on every call.
"""
import itertools

import numpy as np
import pytest

import gpudp
from gpudp.backends import base as backend_base
from gpudp.backends.cpu import CpuBackend
from gpudp.backends.cpu import advection as A


@pytest.fixture(autouse=True)
def _cpu():
    with gpudp.use_backend("cpu"):
        yield


def _general_drivers(monkeypatch):
    """Make the 1-D grids take the generic serial drivers."""
    monkeypatch.setitem(A._DRIVERS, "forward", (A._forward_par, A._forward_ser, A._forward_ser))
    monkeypatch.setitem(A._DRIVERS, "adjoint", (A._adjoint_par, A._adjoint_ser, A._adjoint_ser))
    monkeypatch.setattr(A, "_SETUPS", {})


def _same(a, b):
    """Bit for bit, except that any NaN equals any NaN (which NaN an operation passes on follows its operand
    order, which the compiler may swap)."""
    a, b = np.asarray(a), np.asarray(b)
    na, nb = np.isnan(a), np.isnan(b)
    return a.shape == b.shape and a.dtype == b.dtype and (na == nb).all() and a[~na].tobytes() == b[~nb].tobytes()


def _kernel_runs(n, bcode, Bu, F, steps, dtype, rng):
    coef, bc, shape3 = (0.0, 0.0, 0.3), (0, 0, bcode), (1, 1, n)
    d = rng.standard_normal((Bu, F, n)).astype(dtype)
    d.reshape(-1)[::5] = -0.0
    u = rng.uniform(-1, 1, (Bu, 1, n)).astype(dtype)
    u.reshape(-1)[::4] = 0.0
    g = rng.standard_normal((Bu, F, n)).astype(dtype)
    out = []
    for save, every in ((False, 1), (True, 1), (True, 2)):
        out += list(A.advect_forward(d, u, coef, bc, shape3, 1, steps, save, every))
    _, states = A.advect_forward(d, u, coef, bc, shape3, 1, steps, True)
    for need_d, need_u in ((True, True), (True, False), (False, True)):
        out += list(A.advect_adjoint(g, states if need_u else None, u, coef, bc, shape3, 1, steps, need_d, need_u))
        if need_u:  # adding into a given velocity gradient (a checkpointed backward pass)
            gu = rng.standard_normal(u.shape).astype(dtype)
            out += list(A.advect_adjoint(g, states, u, coef, bc, shape3, 1, steps, need_d, True, gu))
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_1d_serial_drivers_match_the_generic_serial_drivers(monkeypatch, dtype):
    cases = list(itertools.product((1, 2, 3, 4, 9, 40), (0, 1, 2), ((1, 1), (2, 3), (3, 1)), (1, 2, 5)))
    fast = [_kernel_runs(n, bcode, Bu, F, steps, dtype, np.random.default_rng(i))
            for i, (n, bcode, (Bu, F), steps) in enumerate(cases)]
    _general_drivers(monkeypatch)
    assert A._setup("forward", (0.0, 0.0, 0.3), (0, 0, 0), (1, 1, 8), 1, np.dtype(dtype), 8)[0] is A._forward_ser
    for i, (n, bcode, (Bu, F), steps) in enumerate(cases):
        general = _kernel_runs(n, bcode, Bu, F, steps, dtype, np.random.default_rng(i))
        for a, b in zip(fast[i], general):
            assert (a is None) == (b is None)
            if a is not None:
                assert _same(a, b), (n, bcode, Bu, F, steps)


def test_1d_serial_drivers_with_non_finite_values(monkeypatch):
    d = np.array([[[1.0, np.nan, 2.0, np.inf, -1.0, 0.5]]])
    u = np.array([[[0.3, -0.2, np.nan, 0.0, 0.1, -np.inf]]])

    def runs():
        out = []
        for bcode in (0, 1, 2):
            args = ((0.0, 0.0, 0.5), (0, 0, bcode), (1, 1, 6), 1, 4)
            o, states = A.advect_forward(d, u, *args, True)
            out += [o, states, *A.advect_adjoint(d, states, u, *args, True, True)]
        return out

    fast = runs()
    _general_drivers(monkeypatch)
    for a, b in zip(fast, runs()):
        assert _same(a, b)


def test_1d_forward_driver_returns_max_abs_u():
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        fwd, scalars = A._setup("forward", (0.0, 0.0, 0.2), (0, 0, 0), (1, 1, 7), 1, np.dtype(dtype), 7)
        assert fwd is A._forward_ser_1d
        u = rng.uniform(-2, 2, 14).astype(dtype)
        d, out, states = np.ones(14, dtype), np.empty(14, dtype), np.empty(3 * 14, dtype)
        m = fwd(d, u, out, states, 3, 2, 1, *scalars, True, 1)
        assert m == A.max_abs(u) == np.abs(u).max()
        u[5] = np.nan
        assert np.isnan(fwd(d, u, out, states, 3, 2, 1, *scalars, False, 1))


def test_max_abs_matches_max_abs_per_row():
    rng = np.random.default_rng(1)
    cpu = gpudp.get_backend("cpu")
    generic = backend_base.Backend.max_abs
    for x in (rng.standard_normal((3, 50)), rng.standard_normal(A._PARALLEL_MIN_CELLS + 7).astype(np.float32),
              rng.standard_normal((4, 60))[:, ::3], np.array([[0.0, -0.0]]), np.array([1.0, np.nan, -3.0])):
        want = A.max_abs_rows(np.ascontiguousarray(x).reshape(1, -1))[0]
        for got in (cpu.max_abs(x), generic(cpu, x)):
            assert type(got) is float
            assert got == want or (np.isnan(got) and np.isnan(want))


# -- the operator: launcher against the backend methods ----------------------------------------------------

def _no_launcher(monkeypatch):
    monkeypatch.setattr(CpuBackend, "advect_launcher", lambda self, *args: None)


LAYOUTS = [  # (grid shape, d shape, u shape)
    ((16,), (16,), (1, 16)),
    ((16,), (3, 16), (1, 16)),
    ((16,), (2, 3, 16), (1, 16)),
    ((16,), (2, 16), (2, 1, 16)),
    ((16,), (2, 3, 16), (2, 1, 16)),
    ((5, 6), (5, 6), (2, 5, 6)),
    ((5, 6), (2, 5, 6), (2, 2, 5, 6)),
    ((3, 4, 5), (2, 3, 4, 5), (3, 3, 4, 5)),
]


def _value_and_grads(layout, boundary, dtype, steps, checkpoints=None, contiguous=True):
    gshape, dshape, ushape = layout
    grid = gpudp.Grid(gshape, spacing=0.5, boundary=boundary)
    rng = np.random.default_rng(sum(dshape) + steps)
    d = rng.standard_normal(dshape).astype(dtype)
    u = rng.uniform(-1, 1, ushape).astype(dtype) / (4 * len(gshape))
    target = rng.standard_normal(dshape).astype(dtype)
    if not contiguous:  # every other element of arrays twice as long along the last axis
        d = np.repeat(d, 2, axis=-1)[..., ::2]
        u = np.repeat(u, 2, axis=-1)[..., ::2]
        assert not (d.flags.c_contiguous or u.flags.c_contiguous)

    def loss(d, u):
        return gpudp.mse(gpudp.advect_upwind(d, u, 0.1, grid, steps=steps, checkpoints=checkpoints), target)

    out = [gpudp.advect_upwind(d, u, 0.1, grid, steps=steps)]
    for argnums in (0, 1, (0, 1)):
        value, grad = gpudp.value_and_grad(loss, argnums=argnums)(d, u)
        out += [value, *(grad if isinstance(grad, tuple) else (grad,))]
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: "x".join(map(str, lay[1])) + "_u" + str(lay[2][0]))
def test_launcher_matches_the_backend_methods(monkeypatch, layout, dtype):
    runs = [(b, s, c, ch) for b in ("periodic", "dirichlet", "neumann") for s in (1, 3)
            for c in (True, False) for ch in (None, 2)]
    fast = [_value_and_grads(layout, b, dtype, s, ch, c) for b, s, c, ch in runs]
    _no_launcher(monkeypatch)
    for i, (b, s, c, ch) in enumerate(runs):
        for a, g in zip(fast[i], _value_and_grads(layout, b, dtype, s, ch, c)):
            assert type(a) is type(g) and a.shape == g.shape and a.dtype == g.dtype
            assert a.tobytes() == g.tobytes(), (b, s, c, ch)


def test_launcher_results_are_new_arrays_in_the_input_shapes():
    grid = gpudp.Grid(8, spacing=0.5)
    d, u = np.random.default_rng(2).random((2, 3, 8)), np.full((2, 1, 8), 0.25)
    d.flags.writeable = u.flags.writeable = False  # read-only inputs are fine
    out = gpudp.advect_upwind(d, u, 0.1, grid, steps=2)
    assert out.shape == d.shape and out.flags.c_contiguous and out.flags.writeable
    zeros = np.zeros(d.shape)
    gd, gu = gpudp.value_and_grad(lambda d, u: gpudp.l2_loss(gpudp.advect_upwind(d, u, 0.1, grid, steps=2), zeros),
                                  argnums=(0, 1))(d, u)[1]
    assert gd.shape == d.shape and gu.shape == u.shape
    assert not np.shares_memory(gd, d) and not np.shares_memory(gu, u)


def test_launch_counters_count_launcher_calls():
    be = gpudp.get_backend("cpu")
    grid = gpudp.Grid(8, spacing=0.5)
    d, u = np.random.default_rng(3).random(8), np.full((1, 8), 0.25)
    before = dict(be.launches)
    gpudp.value_and_grad(lambda u: gpudp.l2_loss(gpudp.advect_upwind(d, u, 0.1, grid, steps=4), d))(u)
    assert be.launches["advect_forward"] - before.get("advect_forward", 0) == 1
    assert be.launches["advect_adjoint_du"] - before.get("advect_adjoint_du", 0) == 1
    assert be.launches["advect_adjoint_d"] - before.get("advect_adjoint_d", 0) == 0


# -- the per-grid cache --------------------------------------------------------------------------------------

def test_grid_plans_per_backend_dt_dtype_and_layout():
    grid = gpudp.Grid(12, spacing=0.25, boundary="neumann")
    rng = np.random.default_rng(4)
    d, u = rng.random((2, 12)), rng.uniform(-1, 1, (1, 12)) / 4
    results = {}
    for dt, dtype, dd in itertools.product((0.1, 0.05, 0.1), (np.float64, np.float32), (d, d[0])):
        x = gpudp.advect_upwind(dd.astype(dtype), u.astype(dtype), dt, grid, steps=3)
        fresh = gpudp.advect_upwind(dd.astype(dtype), u.astype(dtype), dt, gpudp.Grid(12, 0.25, "neumann"),
                                    steps=3)
        assert x.tobytes() == fresh.tobytes()
        results.setdefault((dt, np.dtype(dtype), dd.shape), x.tobytes())
        assert results[dt, np.dtype(dtype), dd.shape] == x.tobytes()
    assert len(results) == 8
    keys = set(grid._advect_plans)
    assert len(keys) == 8  # (backend, dt, dtype, layout) for 2 time steps x 2 dtypes x 2 layouts
    assert {k[0] for k in keys} == {gpudp.get_backend("cpu")}
    # another grid of the same shape but another spacing or boundary: other coefficients
    u = np.full((1, 12), 0.25)  # flowing in through the lower boundary
    a = gpudp.advect_upwind(d, u, 0.1, grid, steps=3)
    b = gpudp.advect_upwind(d, u, 0.1, gpudp.Grid(12, spacing=0.5, boundary="neumann"), steps=3)
    c = gpudp.advect_upwind(d, u, 0.1, gpudp.Grid(12, spacing=0.25, boundary="periodic"), steps=3)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


def test_zero_time_steps_are_not_cached():
    grid = gpudp.Grid(6, spacing=0.5)
    d, u = np.arange(6.0) - 3, np.full((1, 6), -0.5)
    for dt in (0.0, -0.0):
        np.testing.assert_array_equal(gpudp.advect_upwind(d, u, dt, grid, steps=2), d)
    assert not grid._advect_plans


def test_grid_plans_are_not_pickled():
    import pickle
    grid = gpudp.Grid(6, spacing=0.5)
    gpudp.advect_upwind(np.ones(6), np.full((1, 6), 0.5), 0.1, grid)
    assert grid._advect_plans
    copy = pickle.loads(pickle.dumps(grid))
    assert copy == grid and copy._advect_plans is None


def test_steps_and_requires_grad_on_one_plan():
    grid = gpudp.Grid(10, spacing=0.5)
    rng = np.random.default_rng(5)
    d, u = rng.random(10), rng.uniform(-1, 1, (1, 10)) / 4
    stepwise = d
    for steps in (1, 2, 3):
        stepwise = gpudp.advect_upwind(stepwise, u, 0.1, grid)
        np.testing.assert_array_equal(gpudp.advect_upwind(d, u, 0.1, grid, steps=steps), stepwise)
    for d_grad, u_grad in ((True, False), (False, True), (True, True)):
        dt_, ut_ = gpudp.Tensor(d, requires_grad=d_grad), gpudp.Tensor(u, requires_grad=u_grad)
        with gpudp.Tape() as tape:
            y = gpudp.advect_upwind(dt_, ut_, 0.1, grid, steps=3)
            loss = gpudp.l2_loss(y, np.zeros(10))
        tape.backward(loss)
        assert (dt_.grad is not None) == d_grad and (ut_.grad is not None) == u_grad


# -- the CFL check inside the forward kernel ------------------------------------------------------------------

def _errors(calls):
    out = []
    for call in calls:
        try:
            call()
            out.append(None)
        except Exception as exc:  # noqa: BLE001 - the errors themselves are compared
            out.append((type(exc), str(exc)))
    return out


def _cfl_calls():
    grid = gpudp.Grid(16, spacing=0.1)
    d = np.random.default_rng(6).random(16)
    fast, slow, nan, inf = (np.full((1, 16), v) for v in (0.5, 2.5, 0.5, 0.5))
    nan[0, 3] = np.nan
    inf[0, 5] = -np.inf
    batch = np.full((2, 1, 16), 0.5)
    batch[1, 0, 2] = 3.0

    def vg(u, **kw):
        return lambda: gpudp.value_and_grad(
            lambda u: gpudp.l2_loss(gpudp.advect_upwind(d, u, 0.1, grid, steps=3, **kw), d))(u)

    return [
        lambda: gpudp.advect_upwind(d, fast, 0.1, grid, steps=3),
        lambda: gpudp.advect_upwind(d, slow, 0.1, grid, steps=3),
        vg(fast), vg(slow), vg(nan), vg(inf), vg(slow, checkpoints=2),
        lambda: gpudp.advect_upwind(d, slow, 0.1, grid, steps=3, check_cfl=False),
        lambda: gpudp.advect_upwind(d, nan, 0.0, grid, steps=3),
        lambda: gpudp.advect_upwind(np.stack([d, d]), batch, 0.1, grid, steps=3),
        lambda: gpudp.advect_upwind(d, fast, 0.1, grid, steps=3),  # passes again after the errors
    ]


def test_cfl_errors_match_the_separate_check(monkeypatch):
    fast = _errors(_cfl_calls())
    assert [e is None for e in fast] == [True, False, True, False, False, False, False, True, False, False, True]
    assert fast[1][0] is gpudp.StabilityError and "CFL number" in fast[1][1] and "2.5" in fast[1][1]
    assert fast[4][0] is ValueError and "non-finite" in fast[4][1]
    _no_launcher(monkeypatch)
    assert _errors(_cfl_calls()) == fast
