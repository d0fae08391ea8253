"""``value_and_grad(fn, replay=True)``: recorded once per signature, then replayed.

Replayed calls must give the bits of ordinary (recorded) calls on every backend, raise the value-dependent
errors (CFL) themselves, re-record for a new signature (with the argument checks of a first call), and run
``fn`` every time where a replay could not be faithful: an operator without ``replayable``, constants that
change between calls, arguments without a hashable form, a tape already recording.
"""
import numpy as np
import pytest

import gpudp
from gpudp import Operator

N, T, DT = 32, 12, 0.5 / 32


def _setup(backend, n=N, dtype=np.float64):
    grid = gpudp.Grid(n, spacing=1.0 / n, boundary="periodic")
    x = (np.arange(n) + 0.5) / n
    d0 = backend.asarray(np.exp(-((x - 0.35) / 0.1) ** 2), dtype=dtype)
    u_true = backend.asarray((0.6 + 0.3 * np.sin(2 * np.pi * x))[None, :], dtype=dtype)
    target = gpudp.advect_upwind(d0, u_true, DT, grid, steps=T)
    return grid, d0, target


def _same(a, b):
    a, b = gpudp.to_numpy(a), gpudp.to_numpy(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _velocities(backend, k, n=N, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [backend.asarray(rng.uniform(-0.9, 0.9, (1, n)), dtype=dtype) for _ in range(k)]


def _seed_loss(d0, grid, target):
    return lambda u: gpudp.l2_loss(gpudp.advect_upwind(d0, u, DT, grid, steps=T), target)


def _replaying(fn, *args):
    """``value_and_grad(fn, replay=True)`` after three calls on ``args`` (two recorded, one replayed)."""
    vg = gpudp.value_and_grad(fn, replay=True)
    for _ in range(3):
        vg(*args)
    assert list(vg.replay_info().values()) == ["replaying"]
    return vg


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_seed_problem_replays_with_the_bits_of_recorded_calls(backend, dtype):
    grid, d0, target = _setup(backend, dtype=dtype)
    calls = []

    def loss(u):
        calls.append(1)
        return gpudp.l2_loss(gpudp.advect_upwind(d0, u, DT, grid, steps=T), target)

    eager = gpudp.value_and_grad(loss)
    fast = gpudp.value_and_grad(loss, replay=True)
    us = _velocities(backend, 5, dtype=dtype)
    before = [backend.to_numpy(u) for u in us]
    for k, u in enumerate(us):
        n0 = len(calls)
        v1, g1 = eager(u)
        v2, g2 = fast(u)
        assert _same(v1, v2) and _same(g1, g2)
        assert type(g2) is type(g1) and g2.shape == u.shape
        # the first two calls record (fn runs); later ones replay without running fn
        assert len(calls) - n0 == (2 if k < 2 else 1)
    assert list(fast.replay_info().values()) == ["replaying"]
    for u, b in zip(us, before):
        assert np.array_equal(backend.to_numpy(u), b)  # inputs are never modified


def test_replay_raises_the_cfl_error_and_stays_usable(backend):
    grid, d0, target = _setup(backend)
    u = _velocities(backend, 1)[0]
    vg = _replaying(_seed_loss(d0, grid, target), u)
    fast_u = backend.asarray(np.full((1, N), 40.0))
    with pytest.raises(gpudp.StabilityError, match="CFL"):
        vg(fast_u)
    nan_u = backend.asarray(np.where(np.arange(N) == 3, np.nan, 0.1)[None, :])
    with pytest.raises(ValueError, match="non-finite"):
        vg(nan_u)
    # still replaying, with the right answer
    ref = gpudp.value_and_grad(_seed_loss(d0, grid, target))(u)
    got = vg(u)
    assert _same(ref[0], got[0]) and _same(ref[1], got[1])


def test_replay_of_the_multi_field_advection_checks_cfl_before_the_kernel(backend):
    # two fields with one velocity: the separate CFL check (not the 1-D kernel's max |u|)
    grid = gpudp.Grid((8, 6), spacing=(0.125, 1 / 6), boundary="periodic")
    rng = np.random.default_rng(1)
    d = backend.asarray(rng.standard_normal((2, 8, 6)))
    vg = gpudp.value_and_grad(lambda u: gpudp.advect_upwind(d, u, 0.02, grid, steps=3).sum(), replay=True)
    u = backend.asarray(rng.uniform(-1, 1, (2, 8, 6)))
    ref = gpudp.value_and_grad(lambda u: gpudp.advect_upwind(d, u, 0.02, grid, steps=3).sum())(u)
    for _ in range(3):
        got = vg(u)
        assert _same(ref[0], got[0]) and _same(ref[1], got[1])
    assert list(vg.replay_info().values()) == ["replaying"]
    with pytest.raises(gpudp.StabilityError, match="CFL"):
        vg(backend.asarray(np.full((2, 8, 6), 50.0)))


def test_a_composite_loss_with_aux_and_several_arguments_replays_exactly(backend):
    grid, d0, target = _setup(backend)
    weights = backend.asarray(np.linspace(0.5, 1.5, N))
    calls = []

    def loss(params, scale, label="run"):
        calls.append(label)
        d = gpudp.advect_upwind(params["d"], params["u"], DT, grid, steps=T)
        r = (d - target) * weights
        penalty = (params["u"] * params["u"]).sum() * scale
        total = (r * r).sum() + penalty + gpudp.mse(d, target)
        return total, {"field": d, "penalty": penalty}

    eager = gpudp.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    fast = gpudp.value_and_grad(loss, argnums=(0, 1), has_aux=True, replay=True)
    for k, u in enumerate(_velocities(backend, 4, seed=3)):
        params = {"d": d0, "u": u}
        scale = backend.asarray(np.array(0.1 + k))
        (v1, aux1), (gp1, gs1) = eager(params, scale, label="x")
        (v2, aux2), (gp2, gs2) = fast(params, scale, label="x")
        assert _same(v1, v2) and _same(aux1["field"], aux2["field"]) and _same(aux1["penalty"], aux2["penalty"])
        assert set(gp2) == {"d", "u"} and _same(gp1["d"], gp2["d"]) and _same(gp1["u"], gp2["u"])
        assert _same(gs1, gs2)
    assert calls.count("x") == 4 + 2
    assert list(fast.replay_info().values()) == ["replaying"]
    # another value of a non-array argument is another signature: recorded again
    fast(params, scale, label="y")
    assert calls[-1] == "y" and len(fast.replay_info()) == 2


def test_a_new_signature_is_recorded_with_the_argument_checks(backend):
    grid, d0, target = _setup(backend)
    u = _velocities(backend, 1)[0]
    vg = _replaying(_seed_loss(d0, grid, target), u)
    with pytest.raises(gpudp.ShapeError, match="u"):
        vg(backend.asarray(np.zeros((1, N + 1))))
    with pytest.raises(TypeError, match="dtype"):
        vg(backend.asarray(np.zeros((1, N)), dtype=np.float32))
    with pytest.raises(TypeError, match="argnums"):
        gpudp.value_and_grad(lambda u, v: u, argnums=1, replay=True)(u)


class _Twice(Operator):
    """A user operator that does not declare ``replayable``."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return (g * 2,)


def test_fn_runs_every_time_when_replay_would_not_be_faithful(backend):
    grid, d0, target = _setup(backend)
    u = _velocities(backend, 1)[0]
    calls = []

    def with_user_operator(u):
        calls.append(1)
        return gpudp.l2_loss(_Twice.apply(gpudp.advect_upwind(d0, u, DT, grid, steps=T)), target)

    vg = gpudp.value_and_grad(with_user_operator, replay=True)
    ref = gpudp.value_and_grad(with_user_operator)(u)
    for _ in range(4):
        got = vg(u)
        assert _same(ref[0], got[0]) and _same(ref[1], got[1])
    assert len(calls) == 5
    (state,) = vg.replay_info().values()
    assert "_Twice" in state and "replayable" in state

    # a constant that is a new array on every call (here: computed outside gpudp from the argument)
    calls.clear()

    def fresh_constant(u):
        calls.append(1)
        tgt = backend.asarray(backend.to_numpy(u.data)[0] * 0.5)
        return gpudp.l2_loss(gpudp.advect_upwind(d0, u, DT, grid, steps=T), tgt)

    vg = gpudp.value_and_grad(fresh_constant, replay=True)
    for k, v in enumerate(_velocities(backend, 5, seed=7)):
        ref = gpudp.value_and_grad(fresh_constant)(v)
        got = vg(v)
        assert _same(ref[0], got[0]) and _same(ref[1], got[1])
    assert len(calls) == 10
    (state,) = vg.replay_info().values()
    assert "different" in state

    # an argument without a hashable form: no signature
    calls.clear()
    vg = gpudp.value_and_grad(lambda u, opts: (calls.append(1), gpudp.l2_loss(u, u * 0.0))[1], replay=True)
    for _ in range(3):
        vg(u, {"unhashable"})  # (a set: no hashable form)
    assert len(calls) == 3 and vg.replay_info() == {}


def test_replay_inside_a_recording_tape_is_the_same_error(backend):
    grid, d0, target = _setup(backend)
    u = _velocities(backend, 1)[0]
    vg = _replaying(_seed_loss(d0, grid, target), u)
    with gpudp.Tape():
        with pytest.raises(gpudp.TapeError, match="nested"):
            vg(u)


def test_constants_are_read_on_every_replayed_call(backend):
    # an array fn reads from outside (the same object) is read again: changed in place, the result follows
    grid, d0, target = _setup(backend)
    tgt = backend.asarray(backend.to_numpy(target))
    u = _velocities(backend, 1)[0]
    vg = _replaying(_seed_loss(d0, grid, tgt), u)
    tgt[...] = 0.0
    ref = gpudp.value_and_grad(_seed_loss(d0, grid, backend.asarray(np.zeros(N))))(u)
    got = vg(u)
    assert _same(ref[0], got[0]) and _same(ref[1], got[1])


def test_difference_operators_replay(backend):
    grid = gpudp.Grid(backend.small((6, 5)), spacing=(0.2, 0.25), boundary=("periodic", "neumann"))
    rng = np.random.default_rng(4)
    w = backend.asarray(rng.standard_normal(grid.shape))

    def loss(p):
        g = gpudp.spatial_gradient(p, grid)
        return (gpudp.divergence(g, grid) * w).sum() + (gpudp.laplace(p, grid) ** 2).sum()

    eager = gpudp.value_and_grad(loss)
    fast = gpudp.value_and_grad(loss, replay=True)
    for k in range(4):
        p = backend.asarray(rng.standard_normal(grid.shape))
        v1, g1 = eager(p)
        v2, g2 = fast(p)
        assert _same(v1, v2) and _same(g1, g2)
    assert list(fast.replay_info().values()) == ["replaying"]


def test_a_replaying_function_pickles_with_cloudpickle_and_starts_afresh():
    cloudpickle = pytest.importorskip("cloudpickle")
    grid = gpudp.Grid(N, spacing=1.0 / N, boundary="periodic")
    d0 = np.linspace(0.0, 1.0, N)
    target = d0[::-1].copy()
    vg = gpudp.value_and_grad(lambda u: gpudp.l2_loss(gpudp.advect_upwind(d0, u, DT, grid, steps=T), target),
                              replay=True)
    u = np.full((1, N), 0.3)
    for _ in range(3):
        ref = vg(u)
    copy = cloudpickle.loads(cloudpickle.dumps(vg))
    assert copy.replay_info() == {}
    for _ in range(3):
        got = copy(u)
    assert _same(ref[0], got[0]) and _same(ref[1], got[1])
    assert list(copy.replay_info().values()) == ["replaying"]


def test_a_tensor_changed_in_place_inside_fn_is_never_replayed(backend):
    grid, d0, target = _setup(backend)
    u = _velocities(backend, 1)[0]

    def shifted_before_use(u):
        d = gpudp.advect_upwind(d0, u, DT, grid, steps=T)
        d += 1.0  # (through the Tensor API: a new array under the same tensor)
        return gpudp.l2_loss(d, target)

    def loss_changed(u):
        loss = gpudp.l2_loss(gpudp.advect_upwind(d0, u, DT, grid, steps=T), target)
        loss *= 2.0
        return loss

    for fn in (shifted_before_use, loss_changed):
        vg = gpudp.value_and_grad(fn, replay=True)
        ref = gpudp.value_and_grad(fn)(u)
        for _ in range(3):
            got = vg(u)
            assert _same(ref[0], got[0]) and _same(ref[1], got[1])
        (state,) = vg.replay_info().values()
        assert "in place" in state


@pytest.mark.parametrize("obstacle", [False, True])
def test_a_pressure_projection_loss_replays_and_raises_its_value_errors(backend, obstacle):
    shape = backend.small((8, 6))
    solid = None
    if obstacle:
        solid = np.zeros(shape, bool)
        solid[shape[0] // 2, shape[1] // 2] = True
    grid = gpudp.Grid(shape, spacing=1.0, boundary=("neumann", "periodic"), solid=solid)
    rng = np.random.default_rng(6)
    target = tuple(backend.asarray(rng.standard_normal(grid.face_shape(k))) for k in range(2))

    def loss(ux, uy):
        px, py = gpudp.project((ux, uy), grid, tol=1e-10)
        return ((px - target[0]) ** 2).sum() + ((py - target[1]) ** 2).sum()

    eager = gpudp.value_and_grad(loss, argnums=(0, 1))
    fast = gpudp.value_and_grad(loss, argnums=(0, 1), replay=True)
    for k in range(4):
        u = tuple(backend.asarray(rng.standard_normal(grid.face_shape(a))) for a in range(2))
        v1, g1 = eager(*u)
        v2, g2 = fast(*u)
        assert _same(v1, v2) and all(_same(a, b) for a, b in zip(g1, g2))
    assert list(fast.replay_info().values()) == ["replaying"]
    bad = backend.to_numpy(u[0])
    bad.flat[bad.size // 2 + 1] = np.nan  # (an interior face: walls are zeroed)
    with pytest.raises(ValueError, match="non-finite"):
        fast(backend.asarray(bad), u[1])


def test_a_solve_that_fails_raises_when_replayed(backend):
    grid = gpudp.Grid(backend.small((8, 8)), spacing=1.0, boundary="dirichlet")
    rng = np.random.default_rng(8)
    vg = gpudp.value_and_grad(
        lambda b: (gpudp.poisson_solve(b, grid, tol=1e-3, maxiter=3, preconditioner="none") ** 2).sum(), replay=True)
    easy = backend.asarray(np.zeros(grid.shape))
    for _ in range(3):
        vg(easy)  # (b = 0: x = 0 at once)
    assert list(vg.replay_info().values()) == ["replaying"]
    with pytest.raises(gpudp.SolveError, match="did not converge"):
        vg(backend.asarray(rng.standard_normal(grid.shape)))
