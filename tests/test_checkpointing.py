"""gpudp.checkpoint and gpudp.rollout: gradients bitwise equal to recording every operator, the binomial
schedule against a brute-force optimum, memory bounds, misuse errors; containers of tensors in vjp,
value_and_grad and the tape."""
import functools
import math

import numpy as np
import pytest

import gpudp
from gpudp import arrays
from gpudp import checkpointing as C


# -- the schedule ------------------------------------------------------------------------------------------------

@functools.lru_cache(None)
def _from_scratch(t, s):
    """Fewest step evaluations (besides the one recorded run of each step) to reverse ``t`` steps from a held
    start with ``s`` further states, every advance counted: brute force over every split."""
    if t <= 1:
        return 0
    if s == 0:
        return t * (t - 1) // 2
    return min(m + _from_scratch(t - m, s - 1) + _from_scratch(m, s) for m in range(1, t))


@functools.lru_cache(None)
def _after_sweep(t, s):
    """The same when a forward sweep to the end runs anyway (placing states on its way is free)."""
    if t <= 1:
        return 0
    if s == 0:
        return t * (t - 1) // 2
    return min(_after_sweep(t - m, s - 1) + _from_scratch(m, s) for m in range(1, t))


def test_schedule_is_the_brute_force_optimum():
    for c in range(1, 8):
        for T in range(0, 90):
            info = gpudp.revolve_counts(T, c)
            assert info.recomputed_steps == _after_sweep(T, c - 1), (T, c)
            assert 1 <= info.peak_states <= c and info.steps == T and info.checkpoints == c


def test_schedule_closed_forms():
    # one state: every step recomputed from the start; at least T states: nothing recomputed
    assert gpudp.revolve_counts(100, 1).recomputed_steps == 100 * 99 // 2
    assert gpudp.revolve_counts(100, 100).recomputed_steps == 0
    assert gpudp.revolve_counts(100, 500).peak_states == 100
    # Griewank and Walther's count of a reversal from scratch, r T - beta(c + 1, r - 1) advances, checked against
    # the brute force; placing states during the forward sweep needs fewer recomputed steps than that
    def binomial(T, c):
        r = C._repetitions(T, c)
        return r * T - math.comb(c + r, c + 1)
    for c in range(1, 6):
        for T in range(2, 60):
            assert _from_scratch(T, c - 1) == binomial(T, c), (T, c)
    for T, c in [(1000, 32), (10000, 100), (777, 5)]:
        assert gpudp.revolve_counts(T, c).recomputed_steps < binomial(T, c)
    # sqrt(T) states: fewer than two extra sweeps
    assert gpudp.revolve_counts(1000, 32).recomputed_steps < 2 * 1000


def test_revolve_counts_validates():
    with pytest.raises(ValueError, match="checkpoints must be >= 1, got 0"):
        gpudp.revolve_counts(10, 0)
    with pytest.raises(TypeError, match="steps must be an int"):
        gpudp.revolve_counts(10.0, 3)


# -- a small problem used throughout -------------------------------------------------------------------------------

class Problem:
    def __init__(self, backend, shape=(10, 8), seed=0):
        rng = np.random.default_rng(seed)
        shape = backend.small(shape, cap=5)
        self.grid = gpudp.Grid(shape, spacing=tuple(1.0 / n for n in shape), boundary="periodic")
        self.d0 = rng.random(shape)
        self.u0 = 0.3 * rng.standard_normal((2,) + shape)
        self.target = rng.random(shape)
        self.dt = 0.02
        self.backend = backend

    def leaves(self):
        return (self.backend.tensor(self.d0, requires_grad=True), self.backend.tensor(self.u0, requires_grad=True))

    def step(self, d, u):
        return gpudp.advect_upwind(d, u, self.dt, self.grid) * 0.98 + u[0] * 0.01

    def loss(self, d, u):
        return gpudp.l2_loss(d * u[1], self.target) + (u * u).sum() * 0.1


def _grads(problem, build):
    d, u = problem.leaves()
    with gpudp.Tape() as tape:
        loss = build(problem, d * 1.5, u)
    mem = tape.memory_bytes
    tape.backward(loss)
    return problem.backend.to_numpy(d.grad), problem.backend.to_numpy(u.grad), mem, tape


def _plain(T):
    def build(p, d, u):
        for _ in range(T):
            d = p.step(d, u)
        return p.loss(d, u)
    return build


def _rolled(T, c, closure=True):
    def build(p, d, u):
        if closure:
            d = gpudp.rollout(lambda s: p.step(s, u), d, T, checkpoints=c)
        else:
            d = gpudp.rollout(lambda s, w: p.step(s, w), d, T, checkpoints=c, w=u)
        return p.loss(d, u)
    return build


def _same(a, b):
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("T,c", [(1, 1), (7, 1), (12, 2), (12, 3), (13, 4), (20, 5), (9, 9), (6, 40)])
def test_rollout_gradients_are_bitwise_those_of_recording_every_step(backend, T, c):
    backend.simulate_only(T <= 12 and c in (1, 3))
    p = Problem(backend)
    ref = _grads(p, _plain(T))
    for closure in (True, False):
        got = _grads(p, _rolled(T, c, closure))
        _same(got, ref)
        info = got[3].rollouts[0]
        assert info == gpudp.revolve_counts(T, c)._replace(peak_bytes=info.peak_bytes)
    # checkpoints=None records every step: the same bits again
    _same(_grads(p, _rolled(T, None)), ref)


def test_rollout_repeated_runs_are_identical(backend):
    p = Problem(backend)
    a, b = _grads(p, _rolled(15, 4)), _grads(p, _rolled(15, 4))
    _same(a, b)


def test_rollout_holds_at_most_c_states(backend):
    backend.simulate_only(False)
    p = Problem(backend)
    T = 40
    state_bytes = p.d0.nbytes
    # one step's saved arrays, measured on a tape of its own
    d, u = p.leaves()
    with gpudp.Tape() as one:
        p.step(d * 1.0, u)
    step_bytes = one.memory_bytes
    for c in (1, 2, 5, 7):
        d, u = p.leaves()
        with gpudp.Tape() as tape:
            out = gpudp.rollout(lambda s: p.step(s, u), d, T, checkpoints=c)
            loss = (out * out).sum()
        held = tape.memory_bytes - out.data.nbytes   # the loss's square keeps its input
        assert held <= c * state_bytes
        tape.backward(loss)
        info = tape.rollouts[0]
        assert info.peak_states <= c
        assert info.peak_bytes <= c * state_bytes + step_bytes


def test_rollout_retain_allows_a_second_backward(backend):
    p = Problem(backend)
    d, u = p.leaves()
    with gpudp.Tape() as tape:
        loss = p.loss(gpudp.rollout(lambda s: p.step(s, u), d, 11, checkpoints=3), u)
    g1 = tape.gradient(loss, [d, u], retain=True)
    g2 = tape.gradient(loss, [d, u])
    for a, b in zip(g1, g2):
        assert np.array_equal(backend.to_numpy(a), backend.to_numpy(b))
    with pytest.raises(gpudp.TapeError, match="retain=True"):
        tape.gradient(loss, [d, u])


def test_rollout_with_a_container_state_and_project():
    """A smoke-like step on a grid with an obstacle: state (density, staggered velocity), two projections per
    step inside; dict and tuple states."""
    shape = (12, 10)
    solid = np.zeros(shape, bool)
    solid[5:7, 4:6] = True
    grid = gpudp.Grid(shape, spacing=1.0, boundary="neumann", solid=solid)
    rng = np.random.default_rng(3)
    d0 = rng.random(shape)
    u0 = tuple(0.05 * rng.standard_normal(grid.face_shape(k)) for k in range(2))
    tgt = rng.random(shape)

    def step(state, beta):
        d, u = state["d"], state["u"]
        d_new = gpudp.advect_mac(d, u, 1.0, grid)
        w = gpudp.advect_mac(u, u, 1.0, grid)
        w = (w[0], w[1] + beta * gpudp.at_faces(d_new, grid)[1])
        return {"d": d_new, "u": gpudp.project(w, grid, tol=1e-9)}

    def run(c):
        u = [gpudp.tensor(x, requires_grad=True) for x in u0]
        beta = gpudp.tensor(np.full(grid.face_shape(1), 0.02), requires_grad=True)
        with gpudp.Tape() as tape:
            state = {"d": gpudp.tensor(d0), "u": gpudp.project(tuple(u), grid, tol=1e-9)}
            if c == "plain":
                for _ in range(9):
                    state = step(state, beta)
            else:
                state = gpudp.rollout(step, state, 9, checkpoints=c, beta=beta)
            loss = gpudp.l2_loss(state["d"], tgt)
        gs = tape.gradient(loss, [u[0], u[1], beta])
        return [np.asarray(g) for g in gs]

    ref = run("plain")
    for c in (1, 3, None):
        for a, b in zip(run(c), ref):
            assert np.array_equal(a, b)


def test_rollout_gradcheck():
    grid = gpudp.Grid(6, spacing=1 / 6, boundary="periodic")
    rng = np.random.default_rng(1)
    d0, u0 = rng.random(6), 0.4 * rng.standard_normal((1, 6))

    def fn(d, u):
        return gpudp.rollout(lambda s: gpudp.advect_upwind(s, u, 0.05, grid) * s, d, 5, checkpoints=2)

    gpudp.gradcheck(fn, (d0, u0))


def test_rollout_without_a_tape_or_gradients_is_the_loop():
    p = Problem(type("B", (), {"small": lambda self, s, cap=None: s, "tensor": None})())
    d = np.array(p.d0)
    out = gpudp.rollout(lambda s: gpudp.advect_upwind(s, p.u0, p.dt, p.grid), d, 5, checkpoints=2)
    ref = d
    for _ in range(5):
        ref = gpudp.advect_upwind(ref, p.u0, p.dt, p.grid)
    assert np.array_equal(out, ref) and np.array_equal(d, p.d0)
    assert gpudp.rollout(lambda s: s * 2, d, 0) is d
    with gpudp.Tape() as tape:
        gpudp.rollout(lambda s: s * 2, gpudp.tensor(d), 4, checkpoints=2)
    assert len(tape) == 0


def test_rollout_misuse_is_an_error():
    d = gpudp.tensor(np.ones(4), requires_grad=True)
    with pytest.raises(ValueError, match="checkpoints must be >= 1, got 0"):
        gpudp.rollout(lambda s: s, d, 3, checkpoints=0)
    with pytest.raises(TypeError, match="checkpoints must be an int, got bool"):
        gpudp.rollout(lambda s: s, d, 3, checkpoints=True)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        gpudp.rollout(lambda s: s, d, -1)
    with pytest.raises(TypeError, match="step must be callable"):
        gpudp.rollout(None, d, 3)
    with pytest.raises(TypeError, match="leaf 1"):
        gpudp.rollout(lambda s: s, (d, "x"), 3)
    for c in (None, 2):
        with gpudp.Tape():
            with pytest.raises(ValueError, match=r"step 0 returned a state of another structure.*\(\(leaf,\), \(leaf,\)\) instead of \(leaf,\)"):
                gpudp.rollout(lambda s: (s, s), (d,), 3, checkpoints=c)
            with pytest.raises(ValueError, match=r"step 1 .*leaf 0: shape \(3,\), dtype float64 instead of shape \(4,\)"):
                calls = []
                gpudp.rollout(lambda s: s * 2 if not calls.append(1) and len(calls) < 2 else s[:3], d, 3,
                              checkpoints=c)
            with pytest.raises(ValueError, match="dtype float32 instead of"):
                gpudp.rollout(lambda s: gpudp.Tensor(s.data.astype(np.float32)), d, 2, checkpoints=c)


# -- checkpoint --------------------------------------------------------------------------------------------------

class Cube(gpudp.Operator):
    """A user operator written for every backend with ``gpudp.arrays.apply`` (array-module arithmetic)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return arrays.apply(lambda xp, a: a * a * a, x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return (arrays.apply(lambda xp, a, b: 3.0 * a * a * b, x, g),)


def _chain(p, d, u, wrap):
    """Operators, arithmetic, a user Operator, a nested checkpoint and a closure; ``wrap(fn, *args)``."""
    def block(s, w):
        s = p.step(s, w)
        s = Cube.apply(s) * 0.5 + s[::-1] * 0.25
        return wrap(lambda z: z * u[1] + z, s)   # u from the closure

    for _ in range(4):
        d = wrap(block, d, u)
    return p.loss(d, u)


def test_checkpoint_gradients_are_bitwise_those_of_recording(backend):
    p = Problem(backend)
    ref = _grads(p, lambda p_, d, u: _chain(p_, d, u, lambda fn, *a: fn(*a)))
    got = _grads(p, lambda p_, d, u: _chain(p_, d, u, gpudp.checkpoint))
    _same(got, ref)
    assert got[2] < ref[2]   # the checkpointed tape holds only the blocks' inputs


def test_checkpoint_containers_duplicates_and_passthrough(backend):
    p = Problem(backend)

    def fn(pair, scale=None):
        a, b = pair
        return {"sum": a * b + scale, "same": b, "list": [a * 2.0, a]}

    def build(wrap):
        def inner(p_, d, u):
            x = d * 1.0
            out = wrap(fn, (x, x), scale=u[0])
            return gpudp.l2_loss(out["sum"] + out["same"] * out["list"][0] - out["list"][1], p_.target) + u.sum()
        return inner

    _same(_grads(p, build(gpudp.checkpoint)), _grads(p, build(lambda f, *a, **k: f(*a, **k))))


def test_checkpoint_inside_rollout(backend):
    backend.simulate_only(True)
    p = Problem(backend)

    def plain(p_, d, u):
        for _ in range(6):
            d = p_.step(p_.step(d, u), u)
        return p_.loss(d, u)

    def nested(p_, d, u):
        d = gpudp.rollout(lambda s: gpudp.checkpoint(lambda z: p_.step(p_.step(z, u), u), s), d, 6, checkpoints=2)
        return p_.loss(d, u)

    _same(_grads(p, nested), _grads(p, plain))


def test_checkpoint_without_tape_or_gradients_is_a_call():
    x = np.arange(3.0)
    assert np.array_equal(gpudp.checkpoint(lambda a: a * 2, x), x * 2)
    with gpudp.Tape() as tape:
        y = gpudp.checkpoint(lambda a: a * 2, gpudp.tensor(x))
    assert len(tape) == 0 and isinstance(y, gpudp.Tensor)


def test_checkpoint_recomputation_must_match():
    x = gpudp.tensor(np.ones(4), requires_grad=True)
    calls = []

    def shrinking(a):
        calls.append(1)
        return a[: 5 - len(calls)] * 2.0

    with gpudp.Tape() as tape:
        y = gpudp.checkpoint(shrinking, x)
        loss = y.sum()
    with pytest.raises(gpudp.TapeError, match=r"recomputation of .*shrinking returned other outputs.*shape \(3,\)"):
        tape.backward(loss)
    with pytest.raises(TypeError, match="fn must be callable"):
        gpudp.checkpoint(3, x)


def test_checkpoint_version_check():
    x = gpudp.tensor(np.ones(4), requires_grad=True)
    with gpudp.Tape() as tape:
        y = gpudp.checkpoint(lambda a: a * a, x * 1.0)
        z = gpudp.checkpoint(lambda a: a * 3.0, x)
        loss = (y + z).sum()
    x += 1.0
    with pytest.raises(gpudp.TapeError, match="modified in place"):
        tape.backward(loss)


# -- containers in vjp, value_and_grad and the tape ----------------------------------------------------------------

def test_vjp_of_project_with_a_tuple_output(backend):
    shape = backend.small((6, 5))
    grid = gpudp.Grid(shape, spacing=1.0, boundary="neumann")
    rng = np.random.default_rng(5)
    ux, uy = (rng.standard_normal(grid.face_shape(k)) for k in range(2))
    cx, cy = (rng.standard_normal(grid.face_shape(k)) for k in range(2))
    out, pullback = gpudp.vjp(lambda a, b: gpudp.project((a, b), grid, tol=1e-10),
                              backend.asarray(ux), backend.asarray(uy))
    assert isinstance(out, tuple) and len(out) == 2
    gx, gy = pullback((backend.asarray(cx), backend.asarray(cy)))
    # the projection is symmetric: its vjp is the projection of the cotangent
    px, py = gpudp.project((backend.asarray(cx), backend.asarray(cy)), grid, tol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(gx), backend.to_numpy(px), atol=1e-8)
    np.testing.assert_allclose(backend.to_numpy(gy), backend.to_numpy(py), atol=1e-8)
    # dot-product test <J v, w> = <v, J^T w>
    lhs = sum(float(np.vdot(backend.to_numpy(o), c)) for o, c in zip(out, (cx, cy)))
    rhs = float(np.vdot(ux, backend.to_numpy(gx)) + np.vdot(uy, backend.to_numpy(gy)))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))
    with pytest.raises(gpudp.TapeError, match=r"structure of the output \(leaf, leaf\)"):
        pullback([backend.asarray(cx)])


def test_vjp_with_dict_inputs_and_outputs():
    a, b = np.arange(3.0), np.arange(3.0, 6.0)
    out, pullback = gpudp.vjp(lambda d: {"p": d["a"] * d["b"], "q": d["a"] * 2.0}, {"a": a, "b": b})
    assert set(out) == {"p", "q"} and np.array_equal(out["p"], a * b)
    (g,) = pullback({"p": np.ones(3), "q": np.ones(3)})
    assert np.array_equal(g["a"], b + 2.0) and np.array_equal(g["b"], a)
    (g,) = pullback({"p": np.ones(3), "q": None})
    assert np.array_equal(g["a"], b)


def test_value_and_grad_with_container_arguments_and_aux():
    u = (np.arange(3.0), np.arange(4.0))

    def loss(v, scale):
        s = (v[0] * v[0]).sum() + (v[1] * scale).sum()
        return s, {"half": s * 0.5}

    (val, aux), g = gpudp.value_and_grad(loss, has_aux=True)(u, 3.0)
    assert float(val) == 5.0 + 18.0 and float(aux["half"]) == 11.5
    assert isinstance(g, tuple) and np.array_equal(g[0], 2 * u[0]) and np.array_equal(g[1], np.full(4, 3.0))
    with pytest.raises(TypeError, match="has_aux=True"):
        gpudp.value_and_grad(loss)(u, 3.0)
    with pytest.raises(TypeError, match="pair"):
        gpudp.value_and_grad(lambda v, s: loss(v, s)[0], has_aux=True)(u, 3.0)


def test_tape_backward_and_gradient_with_containers():
    a = gpudp.tensor(np.arange(3.0), requires_grad=True)
    b = gpudp.tensor(np.arange(2.0), requires_grad=True)
    with gpudp.Tape() as tape:
        out = {"x": (a * a).sum(), "y": (b * 3.0).sum()}
    g = tape.gradient(out, {"first": a, "second": [b]}, retain=True)
    assert np.array_equal(g["first"], 2 * np.arange(3.0)) and np.array_equal(g["second"][0], np.full(2, 3.0))
    tape.backward(out, grad={"x": np.array(2.0), "y": None})
    assert np.array_equal(a.grad, 4 * np.arange(3.0)) and b.grad is None
    with gpudp.Tape() as tape:
        out = (a * 2.0, b * 1.0)
    with pytest.raises(gpudp.TapeError, match="non-scalar output needs a seed"):
        tape.backward(out)
    with pytest.raises(TypeError, match="holds a str"):
        tape.backward((a, "b"))


@pytest.mark.parametrize("c", [1, 2, 4, 20])
def test_staggered_advect_mac_with_checkpoints(backend, c):
    """A staggered q with ``steps=T, checkpoints=c`` is a checkpointed rollout of the one-step operator: the
    same bits as recording every step, at most c states held (self-advection: both gradients)."""
    backend.simulate_only(c == 2)
    shape = backend.small((8, 6))
    grid = gpudp.Grid(shape, spacing=1.0, boundary=("periodic", "neumann"))
    rng = np.random.default_rng(4)
    u0 = [0.1 * rng.standard_normal(grid.face_shape(k)) for k in range(2)]
    T = 9

    def run(checkpoints):
        u = [backend.tensor(x, requires_grad=True) for x in u0]
        with gpudp.Tape() as tape:
            out = gpudp.advect_mac(tuple(u), tuple(u), 0.5, grid, steps=T, checkpoints=checkpoints)
            loss = (out[0] * out[0]).sum() + (out[1] * 3.0).sum()
        held = tape.memory_bytes
        return [backend.to_numpy(g) for g in tape.gradient(loss, u)], held

    ref, held_all = run(None)
    got, held = run(c)
    assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    state = sum(x.nbytes for x in u0)
    assert held <= min(c, T) * state + u0[0].nbytes   # states, and out[0] kept by the loss's square
    assert held < held_all or c >= T
