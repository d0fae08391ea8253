"""gpudp.advect_upwind: forward against the NumPy reference, adjoints (dot-product tests, gradcheck), greedy
derivatives, tape memory, bad input and input immutability, on every backend the ``backend`` fixture offers."""
import numpy as np
import pytest

import gpudp
from gpudp import Tape
from reference import advect as ref_advect
from reference import shift

# Small, unequal extents so that axis mix-ups show; small enough for the CUDA simulator.
SHAPES = {1: (11,), 2: (5, 6), 3: (3, 4, 5)}
SPACINGS = {1: (0.7,), 2: (0.5, 1.25), 3: (0.8, 0.5, 1.1)}
BOUNDARIES = {
    1: ["periodic", "dirichlet", "neumann"],
    2: ["periodic", "dirichlet", "neumann", ("periodic", "dirichlet"), ("neumann", "periodic")],
    3: ["periodic", "dirichlet", "neumann", ("dirichlet", "periodic", "neumann")],
}
# how d and u are laid out (DESIGN.md §2 and the advect_upwind docstring)
BATCHES = ["scalar", "vector", "lead2", "batch", "batch_vector"]

CASES = [pytest.param(nd, b, lay, id=f"{nd}d-{b if isinstance(b, str) else 'mixed'}-{lay}")
         for nd in (1, 2, 3) for b in BOUNDARIES[nd] for lay in BATCHES]


def make_case(ndim, boundary, layout, dtype=np.float64, seed=0, zeros=True, cfl=0.9):
    """Random ``d``, ``u``, a time step with the given CFL number, and the grid (host float64 arrays)."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[ndim]
    grid = gpudp.Grid(shape, spacing=SPACINGS[ndim], boundary=boundary)
    B, C = 2, 3
    d_lead = {"scalar": (), "vector": (ndim,), "lead2": (2, C), "batch": (B,), "batch_vector": (B, C)}[layout]
    u_lead = (B, ndim) if layout.startswith("batch") else (ndim,)
    d = rng.standard_normal(d_lead + shape)
    u = rng.uniform(-1.0, 1.0, u_lead + shape)
    if zeros:
        u.reshape(-1)[::7] = 0.0  # exact zeros: the derivative takes the u > 0 branch there
    speed = np.abs(u).reshape(u_lead + (-1,)).max(axis=-1) / np.asarray(grid.spacing)
    dt = cfl / float(speed.sum(axis=-1).max())
    return d.astype(dtype), u.astype(dtype), dt, grid


def reference(d, u, dt, grid, steps=1):
    """Float64 reference of advect_upwind, batched like the operator."""
    d = np.asarray(d, np.float64)
    u = np.asarray(u, np.float64)
    if u.ndim == grid.ndim + 2:
        return np.stack([ref_advect(d[b], u[b], dt, grid.spacing, grid.boundary, steps) for b in range(len(u))])
    return ref_advect(d, u, dt, grid.spacing, grid.boundary, steps)


def reference_tangent_u(d, u, du, dt, grid, steps):
    """Exact directional derivative of ``steps`` steps w.r.t. ``u`` along ``du`` (forward mode, float64)."""
    if u.ndim == grid.ndim + 2:
        return np.stack([reference_tangent_u(d[b], u[b], du[b], dt, grid, steps) for b in range(len(u))])
    D = grid.ndim
    x, dx = np.array(d, np.float64), np.zeros_like(d, dtype=np.float64)
    for _ in range(steps):
        nx, ndx = x.copy(), dx.copy()
        for k in range(D):
            ax = x.ndim - D + k
            h, bk = grid.spacing[k], grid.boundary[k]
            uk, duk = u[k], du[k]
            up, lo = shift(x, +1, ax, bk), shift(x, -1, ax, bk)
            dup, dlo = shift(dx, +1, ax, bk), shift(dx, -1, ax, bk)
            mn, mx = np.minimum(uk, 0), np.maximum(uk, 0)
            nx -= dt / h * (mn * (up - x) + mx * (x - lo))
            ndx -= dt / h * (mn * (dup - dx) + mx * (dx - dlo))
            ndx -= dt / h * duk * np.where(uk < 0, up - x, x - lo)
        x, dx = nx, ndx
    return dx


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def dot_rel_err(lhs, rhs):
    return abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300)


# -- acceptance 2: forward against the reference ---------------------------------------------------------

@pytest.mark.parametrize("ndim,boundary,layout", CASES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_forward_matches_reference(backend, ndim, boundary, layout, dtype, tol):
    d, u, dt, grid = make_case(ndim, boundary, layout, dtype)
    steps = 3
    out = gpudp.advect_upwind(backend.asarray(d), backend.asarray(u), dt, grid, steps=steps)
    assert backend.is_own(out)
    assert out.shape == d.shape and out.dtype == dtype
    assert rel_err(backend.to_numpy(out), reference(d, u, dt, grid, steps)) <= tol


def test_steps_T_equals_T_single_steps(backend):
    d, u, dt, grid = make_case(2, ("periodic", "neumann"), "batch_vector")
    da, ua = backend.asarray(d), backend.asarray(u)
    one = da
    for _ in range(5):
        one = gpudp.advect_upwind(one, ua, dt, grid)
    five = gpudp.advect_upwind(da, ua, dt, grid, steps=5)
    np.testing.assert_allclose(backend.to_numpy(five), backend.to_numpy(one), rtol=0, atol=1e-14)


def test_tensor_in_tensor_out_and_raw_in_raw_out(backend):
    d, u, dt, grid = make_case(1, "periodic", "scalar")
    raw = gpudp.advect_upwind(backend.asarray(d), backend.asarray(u), dt, grid)
    assert backend.is_own(raw) and not isinstance(raw, gpudp.Tensor)
    t = gpudp.advect_upwind(backend.tensor(d), backend.asarray(u), dt, grid)
    assert isinstance(t, gpudp.Tensor) and not t.requires_grad
    np.testing.assert_array_equal(t.numpy(), backend.to_numpy(raw))


def test_zero_time_step_is_the_identity(backend):
    d, u, _, grid = make_case(2, "dirichlet", "batch")
    out = gpudp.advect_upwind(backend.asarray(d), backend.asarray(u), 0.0, grid, steps=2)
    np.testing.assert_array_equal(backend.to_numpy(out), d)


# -- acceptance 3: adjoints ------------------------------------------------------------------------------

@pytest.mark.parametrize("ndim,boundary,layout", CASES)
@pytest.mark.parametrize("steps", [1, 3])
def test_dot_product_both_adjoints(backend, ndim, boundary, layout, steps):
    d, u, dt, grid = make_case(ndim, boundary, layout, seed=steps)
    rng = np.random.default_rng(99)
    v_d = rng.standard_normal(d.shape)
    v_u = rng.standard_normal(u.shape)
    w = rng.standard_normal(d.shape)

    td = backend.tensor(d, requires_grad=True)
    tu = backend.tensor(u, requires_grad=True)
    with Tape() as tape:
        out = gpudp.advect_upwind(td, tu, dt, grid, steps=steps)
    gd, gu = (backend.to_numpy(g) for g in tape.gradient(out, [td, tu], grad=backend.asarray(w)))

    # d ↦ d_T is linear: J_d v is the operator applied to v
    jv_d = backend.to_numpy(gpudp.advect_upwind(backend.asarray(v_d), backend.asarray(u), dt, grid, steps=steps))
    assert dot_rel_err(np.vdot(jv_d, w), np.vdot(v_d, gd)) <= 1e-12
    # u ↦ d_T is polynomial in each sign region: J_u v from the exact forward-mode reference
    jv_u = reference_tangent_u(d, u, v_u, dt, grid, steps)
    assert dot_rel_err(np.vdot(jv_u, w), np.vdot(v_u, gu)) <= 1e-12


@pytest.mark.parametrize("which", ["d", "u"])
def test_single_adjoint_equals_joint_adjoint(backend, which):
    d, u, dt, grid = make_case(3, ("dirichlet", "periodic", "neumann"), "batch_vector", seed=5)
    w = backend.asarray(np.random.default_rng(3).standard_normal(d.shape))
    td, tu = backend.tensor(d, requires_grad=True), backend.tensor(u, requires_grad=True)
    with Tape() as tape:
        out = gpudp.advect_upwind(td, tu, dt, grid, steps=2)
    both = tape.gradient(out, [td, tu], grad=w, retain=True)
    alone = tape.gradient(out, td if which == "d" else tu, grad=w)
    np.testing.assert_array_equal(backend.to_numpy(alone), backend.to_numpy(both[0 if which == "d" else 1]))


def _rollout_inputs(backend, boundary):
    rng = np.random.default_rng(7)
    n = 6 if backend.simulated else 8
    grid = gpudp.Grid(n, spacing=1.0 / n, boundary=boundary)
    d0 = rng.uniform(0.0, 1.0, (n,))
    u0 = np.sign(rng.standard_normal((1, n))) * rng.uniform(0.2, 1.0, (1, n))  # away from the kink at 0
    dt = 0.8 / (n * np.abs(u0).max())
    return grid, d0, u0, dt


@pytest.mark.parametrize("boundary", ["periodic", "neumann", "dirichlet"])
def test_gradcheck_20_step_rollout_both_ways(backend, boundary):
    grid, d0, u0, dt = _rollout_inputs(backend, boundary)
    T = 20
    target = backend.asarray(np.linspace(0.0, 1.0, grid.size))

    def monolithic(d, u):
        return gpudp.l2_loss(gpudp.advect_upwind(d, u, dt, grid, steps=T), target)

    def recorded(d, u):
        for _ in range(T):
            d = gpudp.advect_upwind(d, u, dt, grid, steps=1)
        return gpudp.l2_loss(d, target)

    da, ua = backend.asarray(d0), backend.asarray(u0)
    # under the CUDA simulator every launch is slow: a few random directions instead of every element
    budget = dict(max_elements=0, n_directions=3) if backend.simulated else {}
    assert gpudp.gradcheck(monolithic, [da, ua], rtol=1e-6, atol=1e-8, **budget)
    assert gpudp.gradcheck(recorded, [da, ua], rtol=1e-6, atol=1e-8, **budget)

    v1, g1 = gpudp.value_and_grad(monolithic, argnums=(0, 1))(da, ua)
    v2, g2 = gpudp.value_and_grad(recorded, argnums=(0, 1))(da, ua)
    assert float(backend.to_numpy(v1)) == pytest.approx(float(backend.to_numpy(v2)), rel=1e-13)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-12, atol=1e-14)


def test_gradcheck_batched_2d_vector_field(backend):
    d, u, dt, grid = make_case(2, ("neumann", "dirichlet"), "batch_vector", zeros=False, seed=11)
    u = np.where(np.abs(u) < 0.1, 0.5, u)  # finite differences need distance from the kink at u = 0
    target = backend.asarray(np.zeros_like(d))
    assert gpudp.gradcheck(lambda a, b: gpudp.l2_loss(gpudp.advect_upwind(a, b, dt, grid, steps=4), target),
                           [backend.asarray(d), backend.asarray(u)], rtol=1e-6, atol=1e-8)


def test_velocity_gradient_at_zero_takes_the_positive_branch(backend):
    grid = gpudp.Grid(5, boundary="periodic")
    d = np.array([0.0, 1.0, 3.0, 6.0, 10.0])
    u = np.zeros((1, 5))
    tu = backend.tensor(u, requires_grad=True)
    with Tape() as tape:
        out = gpudp.advect_upwind(backend.asarray(d), tu, 0.5, grid)
    g = backend.to_numpy(tape.gradient(out, tu, grad=backend.asarray(np.ones(5))))
    # ∂d'_i/∂u_i = −Δt/Δx (d_i − d_{i−1}) on the u > 0 branch
    np.testing.assert_allclose(g[0], -0.5 * (d - np.roll(d, 1)))


# -- acceptance 4: greedy derivatives ------------------------------------------------------------------

def test_no_velocity_adjoint_kernel_when_u_needs_no_gradient(backend):
    d, u, dt, grid = make_case(2, "periodic", "batch")
    launches = backend.impl.launches
    before = launches.copy()
    td = backend.tensor(d, requires_grad=True)
    with Tape() as tape:
        out = gpudp.advect_upwind(td, backend.asarray(u), dt, grid, steps=3)
        out = gpudp.advect_upwind(out, backend.tensor(u), dt, grid)  # a tensor without requires_grad
        loss = gpudp.l2_loss(out, backend.asarray(np.zeros_like(d)))
    tape.backward(loss)
    diff = launches - before  # GPU backends count one launch per step, cpu one per call
    assert diff["advect_adjoint_du"] == 0
    assert diff["advect_adjoint_d"] >= 2
    assert diff["advect_forward"] >= 2
    assert td.grad is not None


def test_velocity_adjoint_runs_only_when_asked(backend):
    d, u, dt, grid = make_case(1, "neumann", "scalar")
    launches = backend.impl.launches
    td, tu = backend.tensor(d, requires_grad=True), backend.tensor(u, requires_grad=True)
    with Tape() as tape:
        loss = gpudp.l2_loss(gpudp.advect_upwind(td, tu, dt, grid, steps=2), backend.asarray(np.zeros_like(d)))
    before = launches.copy()
    tape.gradient(loss, td, retain=True)  # only d asked for: u requires grad but is not wanted
    diff = launches - before
    assert diff["advect_adjoint_du"] == 0 and diff["advect_adjoint_d"] >= 1
    before = launches.copy()
    tape.gradient(loss, tu)
    diff = launches - before
    assert diff["advect_adjoint_du"] >= 1


def test_nothing_is_recorded_without_gradients(backend):
    d, u, dt, grid = make_case(1, "periodic", "scalar")
    with Tape() as tape:
        out = gpudp.advect_upwind(backend.tensor(d), backend.tensor(u), dt, grid, steps=4)
    assert len(tape) == 0 and tape.memory_bytes == 0 and not out.requires_grad


# -- acceptance 5: what the tape keeps -------------------------------------------------------------------

@pytest.mark.parametrize("d_requires_grad", [False, True])
def test_memory_after_T_separate_steps(backend, d_requires_grad):
    d, u, dt, grid = make_case(2, "periodic", "batch_vector")
    T = 6
    state, velocity = d.nbytes, u.nbytes
    tu = backend.tensor(u, requires_grad=True)
    x = backend.tensor(d, requires_grad=d_requires_grad)
    with Tape() as tape:
        for _ in range(T):
            x = gpudp.advect_upwind(x, tu, dt, grid)
    assert T * state <= tape.memory_bytes <= (T + 1) * state + velocity
    with tape:
        loss = gpudp.l2_loss(x, backend.asarray(np.zeros_like(d)))
    assert tape.memory_bytes <= (T + 1) * state + velocity
    tape.backward(loss)
    assert tu.grad is not None and tape.memory_bytes == 0


def test_memory_of_one_T_step_operator(backend):
    d, u, dt, grid = make_case(3, "neumann", "scalar")
    T = 5
    tu = backend.tensor(u, requires_grad=True)
    with Tape() as tape:
        gpudp.advect_upwind(backend.asarray(d), tu, dt, grid, steps=T)
    assert T * d.nbytes <= tape.memory_bytes <= T * d.nbytes + u.nbytes
    # the d-adjoint is linear in d: without a velocity gradient no state is kept
    with Tape() as tape:
        gpudp.advect_upwind(backend.tensor(d, requires_grad=True), backend.asarray(u), dt, grid, steps=T)
    assert tape.memory_bytes <= u.nbytes


# -- acceptance 6: bad input -----------------------------------------------------------------------------

class ForeignDeviceArray:
    """Stands in for another backend's device array: array-like (shape, dtype, copy_to_host, like a Numba
    device array) but not the cpu backend's numpy.ndarray."""

    def __init__(self, host):
        self._host = np.array(host)
        self.shape, self.dtype, self.size = self._host.shape, self._host.dtype, self._host.size
        self.nbytes = self._host.nbytes

    def copy_to_host(self):
        return self._host.copy()


def _foreign(backend, host):
    """An array of some other backend than the active one."""
    return ForeignDeviceArray(host) if backend.name == "cpu" else np.array(host)


def _ok_inputs(backend, ndim=2, layout="scalar"):
    d, u, dt, grid = make_case(ndim, "periodic", layout)
    return backend.asarray(d), backend.asarray(u), dt, grid


def _message(excinfo):
    return str(excinfo.value)


def test_d_shape_does_not_fit_the_grid(backend):
    d, u, dt, grid = _ok_inputs(backend)
    bad = backend.asarray(np.zeros((5, 7)))
    with pytest.raises(gpudp.ShapeError) as err:
        gpudp.advect_upwind(bad, u, dt, grid)
    msg = _message(err)
    assert "advect_upwind" in msg and "d has shape (5, 7)" in msg and "(5, 6)" in msg


@pytest.mark.parametrize("ushape", [(1, 5, 6), (3, 5, 6), (2, 6, 5), (5, 6), (2, 2, 2, 5, 6)])
def test_u_shape_does_not_fit(backend, ushape):
    d, _, dt, grid = _ok_inputs(backend)
    with pytest.raises(gpudp.ShapeError) as err:
        gpudp.advect_upwind(d, backend.asarray(np.zeros(ushape)), dt, grid)
    msg = _message(err)
    assert f"u has shape {ushape}" in msg and "(2, 5, 6)" in msg and "expected" in msg


def test_batched_u_and_d_batch_mismatch(backend):
    _, _, dt, grid = _ok_inputs(backend)
    u = backend.asarray(np.zeros((2, 2, 5, 6)))
    for dshape in [(3, 5, 6), (5, 6), (2, 3, 4, 5, 6)]:
        with pytest.raises(gpudp.ShapeError) as err:
            gpudp.advect_upwind(backend.asarray(np.zeros(dshape)), u, dt, grid)
        msg = _message(err)
        assert "batch of 2" in msg and str(dshape) in msg and "(2, *grid.shape)" in msg


def test_zero_sized_batch(backend):
    _, u, dt, grid = _ok_inputs(backend)
    with pytest.raises(gpudp.ShapeError, match="d has shape"):
        gpudp.advect_upwind(backend.asarray(np.zeros((0, 5, 6))), u, dt, grid)


def test_grid_must_be_a_grid(backend):
    d, u, dt, _ = _ok_inputs(backend)
    with pytest.raises(TypeError, match="grid must be a gpudp.Grid, got tuple"):
        gpudp.advect_upwind(d, u, dt, (5, 6))


def test_dtype_mismatch(backend):
    d, u, dt, grid = make_case(2, "periodic", "scalar")
    with pytest.raises(TypeError) as err:
        gpudp.advect_upwind(backend.asarray(d, dtype=np.float32), backend.asarray(u), dt, grid)
    msg = _message(err)
    assert "d is float32" in msg and "u is float64" in msg


@pytest.mark.parametrize("bad_dtype", [np.int64, np.int32, np.complex128, np.bool_])
@pytest.mark.parametrize("which", ["d", "u"])
def test_integer_complex_and_bool_arrays(backend, which, bad_dtype):
    d, u, dt, grid = make_case(2, "periodic", "scalar")
    args = {"d": backend.asarray(d), "u": backend.asarray(u)}
    host = (d if which == "d" else u)
    args[which] = backend.asarray(host.astype(bad_dtype))
    with pytest.raises(TypeError) as err:
        gpudp.advect_upwind(args["d"], args["u"], dt, grid)
    msg = _message(err)
    assert f"{which} has dtype {np.dtype(bad_dtype)}" in msg and "float32 or float64" in msg


@pytest.mark.parametrize("dt", [float("nan"), float("inf"), -float("inf"), np.float64("nan")])
def test_non_finite_dt(backend, dt):
    d, u, _, grid = _ok_inputs(backend)
    with pytest.raises(ValueError) as err:
        gpudp.advect_upwind(d, u, dt, grid)
    msg = _message(err)
    assert "dt" in msg and "finite" in msg


@pytest.mark.parametrize("dt,exc,text", [(-0.1, ValueError, ">= 0"), ("0.1", TypeError, "real number"),
                                         (None, TypeError, "real number")])
def test_bad_dt(backend, dt, exc, text):
    d, u, _, grid = _ok_inputs(backend)
    with pytest.raises(exc) as err:
        gpudp.advect_upwind(d, u, dt, grid)
    assert "dt" in _message(err) and text in _message(err)


@pytest.mark.parametrize("steps", [0, -2, 1.5, True, "3"])
def test_bad_steps(backend, steps):
    d, u, dt, grid = _ok_inputs(backend)
    with pytest.raises(ValueError) as err:
        gpudp.advect_upwind(d, u, dt, grid, steps=steps)
    assert "steps" in _message(err) and ">= 1" in _message(err) and repr(steps) in _message(err)


def test_cfl_above_one(backend):
    d, u, dt, grid = make_case(2, "periodic", "batch", cfl=1.5)
    with pytest.raises(gpudp.StabilityError) as err:
        gpudp.advect_upwind(backend.asarray(d), backend.asarray(u), dt, grid)
    msg = _message(err)
    assert "CFL" in msg and "1.5" in msg and "exceeds 1" in msg and "check_cfl=False" in msg
    assert isinstance(err.value, ValueError)
    # the check can be switched off, and a CFL of exactly 1 is allowed
    gpudp.advect_upwind(backend.asarray(d), backend.asarray(u), dt, grid, check_cfl=False)
    d, u, dt, grid = make_case(2, "periodic", "batch", cfl=1.0)
    gpudp.advect_upwind(backend.asarray(d), backend.asarray(u), dt * (1 - 1e-12), grid)


def test_non_finite_velocity(backend):
    d, u, dt, grid = make_case(1, "periodic", "scalar")
    u[0, 3] = np.nan
    with pytest.raises(ValueError, match="u contains non-finite"):
        gpudp.advect_upwind(backend.asarray(d), backend.asarray(u), dt, grid)


@pytest.mark.parametrize("which", ["d", "u"])
def test_arrays_of_another_backend_are_rejected(backend, which):
    d, u, dt, grid = make_case(2, "periodic", "scalar")
    args = {"d": backend.asarray(d), "u": backend.asarray(u)}
    args[which] = _foreign(backend, d if which == "d" else u)
    for wrap in (lambda a: a, gpudp.Tensor):
        call = dict(args)
        call[which] = wrap(args[which])
        with pytest.raises(gpudp.BackendError) as err:
            gpudp.advect_upwind(call["d"], call["u"], dt, grid)
        msg = _message(err)
        assert f"{which} is a" in msg and repr(backend.name) in msg and "gpudp.asarray" in msg
    # the documented explicit move
    moved = dict(args)
    moved[which] = gpudp.asarray(args[which])
    out = gpudp.advect_upwind(moved["d"], moved["u"], dt, grid)
    assert rel_err(backend.to_numpy(out), reference(d, u, dt, grid)) <= 1e-12


def test_non_array_input(backend):
    _, u, dt, grid = _ok_inputs(backend)
    with pytest.raises(TypeError, match="d must be a gpudp.Tensor or a"):
        gpudp.advect_upwind([[0.0] * 6] * 5, u, dt, grid)


def test_tape_misuse_with_advection(backend):
    d, u, dt, grid = make_case(2, "neumann", "scalar")
    tu = backend.tensor(u, requires_grad=True)
    target = backend.asarray(np.zeros_like(d))
    # backward twice
    with Tape() as tape:
        out = gpudp.advect_upwind(backend.asarray(d), tu, dt, grid, steps=2)
        loss = gpudp.l2_loss(out, target)
    tape.backward(loss)
    with pytest.raises(gpudp.TapeError, match="already differentiated"):
        tape.backward(loss)
    # a non-scalar output without a seed
    with Tape() as tape:
        out = gpudp.advect_upwind(backend.asarray(d), tu, dt, grid)
    with pytest.raises(gpudp.TapeError, match=r"shape \(5, 6\).*seed"):
        tape.backward(out)
    # a recorded tensor modified in place before backward: d (differentiated) and u (only used)
    for modified in ("d", "u"):
        td = backend.tensor(d, requires_grad=True)
        tu2 = backend.tensor(u)
        with Tape() as tape:
            loss = gpudp.l2_loss(gpudp.advect_upwind(td, tu2, dt, grid), target)
        (td if modified == "d" else tu2).fill_(0.25)
        with pytest.raises(gpudp.TapeError, match="modified in place"):
            tape.backward(loss)
    # nested tapes
    with Tape():
        with pytest.raises(gpudp.TapeError, match="nested"):
            with Tape():
                pass


# -- inputs are never mutated ----------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("wanted", ["d", "u", "both"])
def test_inputs_are_never_mutated(backend, steps, wanted):
    d, u, dt, grid = make_case(3, ("neumann", "periodic", "dirichlet"), "batch_vector", seed=steps)
    w = np.random.default_rng(0).standard_normal(d.shape)
    da, ua, wa = backend.asarray(d), backend.asarray(u), backend.asarray(w)
    td = gpudp.Tensor(da, requires_grad=wanted in ("d", "both"))
    tu = gpudp.Tensor(ua, requires_grad=wanted in ("u", "both"))
    gpudp.advect_upwind(da, ua, dt, grid, steps=steps)  # plain call
    with Tape() as tape:
        out = gpudp.advect_upwind(td, tu, dt, grid, steps=steps)
    sources = [t for t in (td, tu) if t.requires_grad]
    tape.gradient(out, sources, grad=wa)
    np.testing.assert_array_equal(backend.to_numpy(da), d)
    np.testing.assert_array_equal(backend.to_numpy(ua), u)
    np.testing.assert_array_equal(backend.to_numpy(wa), w)
    assert td.version == 0 and tu.version == 0


def test_non_contiguous_inputs(backend):
    if backend.name != "cpu":
        pytest.skip("strided views are a NumPy/CuPy matter; checked on cpu")
    d, u, dt, grid = make_case(2, "periodic", "scalar")
    dT = np.asfortranarray(d)
    out = gpudp.advect_upwind(dT, u[:, :, :], dt, grid)
    assert rel_err(out, reference(d, u, dt, grid)) <= 1e-12
    big = np.zeros((2, 10, 6))
    big[:, ::2] = u
    out = gpudp.advect_upwind(d, big[:, ::2], dt, grid)
    assert rel_err(out, reference(d, u, dt, grid)) <= 1e-12


def test_checks_fire_after_a_successful_call(backend):
    """Shapes, dtypes and backends already seen skip the repeated checks; a call that differs in any of them
    (or passes something that is not a grid or an array) is checked again and raises."""
    d, u, dt, grid = _ok_inputs(backend)
    for _ in range(2):
        gpudp.advect_upwind(d, u, dt, grid)
    with pytest.raises(gpudp.ShapeError, match="d has shape"):
        gpudp.advect_upwind(backend.asarray(np.zeros((3, 5, 7))), u, dt, grid)
    with pytest.raises(gpudp.ShapeError, match="u has shape"):
        gpudp.advect_upwind(d, u, dt, gpudp.Grid((6, 5)))
    with pytest.raises(TypeError, match="u has dtype int64"):
        gpudp.advect_upwind(d, backend.asarray(np.zeros(u.shape, np.int64)), dt, grid)
    with pytest.raises(TypeError, match="d is float32"):
        gpudp.advect_upwind(backend.asarray(np.zeros(d.shape, np.float32)), u, dt, grid)
    with pytest.raises(TypeError, match="grid must be a gpudp.Grid"):
        gpudp.advect_upwind(d, u, dt, (5, 6))
    with pytest.raises(TypeError, match="d must be a gpudp.Tensor"):
        gpudp.advect_upwind(np.zeros((5, 6)).tolist(), u, dt, grid)
    if backend.name != "cpu":
        with pytest.raises(gpudp.BackendError, match="u is a"):
            gpudp.advect_upwind(d, np.zeros(u.shape), dt, grid)
    for bad_dt, exc in ((-1.0, ValueError), (float("nan"), ValueError), ("1", TypeError)):
        with pytest.raises(exc, match="dt"):
            gpudp.advect_upwind(d, u, bad_dt, grid)
    with pytest.raises(ValueError, match="steps"):
        gpudp.advect_upwind(d, u, dt, grid, steps=0)
    with pytest.raises(gpudp.StabilityError):
        gpudp.advect_upwind(d, u, dt * 2, grid)
    bad = np.array(backend.to_numpy(u))
    bad[0, 1, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        gpudp.advect_upwind(d, backend.asarray(bad), dt, grid)
    # and the good call still gives the reference
    np.testing.assert_allclose(backend.to_numpy(gpudp.advect_upwind(d, u, dt, grid)),
                               reference(backend.to_numpy(d), backend.to_numpy(u), dt, grid), rtol=1e-12, atol=1e-12)
