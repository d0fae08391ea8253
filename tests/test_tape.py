"""The reverse-mode tape: Tensor arithmetic, Tape, Operator, vjp, value_and_grad, gradcheck, misuse errors."""
import numpy as np
import pytest

import gpudp
from gpudp.tape import Operator, Tape, Tensor

RNG = np.random.default_rng(1234)


def fd_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar NumPy function ``f`` at ``x``, element by element."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def tape_grad(fn, *hosts):
    """Gradients of the scalar Tensor function ``fn`` w.r.t. each host array, via Tape.backward."""
    ts = [gpudp.tensor(h, requires_grad=True) for h in hosts]
    with Tape() as tape:
        out = fn(*ts)
    tape.backward(out)
    return [t.grad for t in ts], out


# -- tensor arithmetic ---------------------------------------------------------------------------------

ARITH = {
    "add": lambda a, b: (a + b) * (a + b),
    "radd_scalar": lambda a, b: ((2.0 + a) * b).sum(),
    "sub": lambda a, b: (a - b) * a,
    "rsub_scalar": lambda a, b: (1.5 - a) * b,
    "mul_broadcast_row": lambda a, b: a * b[0:1, :],
    "div": lambda a, b: a / (b * b + 1.0),
    "rdiv_scalar": lambda a, b: 3.0 / (a * a + 2.0) + b,
    "neg_pow": lambda a, b: -(a ** 3) + b ** 2,
    "sum_axis": lambda a, b: (a.sum(axis=0) * b.sum(axis=-1)[0]),
    "mean": lambda a, b: a.mean() * b.mean(axis=1).sum(),
    "getitem_slice": lambda a, b: a[1:, ::2] * b[:-1, 1::2],
    "getitem_int_repeat": lambda a, b: a[np.array([0, 0, 2])] * b[1],
    "getitem_mask": lambda a, b: a[np.array([[True, False, True, False]] * 3)] * 2.0 + b[0, 0],
    "reshape": lambda a, b: a.reshape(4, 3) * b.reshape((4, 3)),
    "scalar_loss_times_scalar": lambda a, b: gpudp.l2_loss(a, b) * 0.5 + 1.0,
    "mse": lambda a, b: gpudp.mse(a * b, b),
}


@pytest.mark.parametrize("name", list(ARITH))
def test_arithmetic_gradients_match_finite_differences(backend, name):
    f = ARITH[name]
    a = RNG.standard_normal((3, 4))
    b = RNG.standard_normal((3, 4))

    def scalar(a_host, b_host):
        out = f(Tensor(backend.asarray(a_host)), Tensor(backend.asarray(b_host)))
        return float(np.sum(backend.to_numpy(out.data) * w))

    w = RNG.standard_normal(np.shape(backend.to_numpy(f(Tensor(backend.asarray(a)),
                                                         Tensor(backend.asarray(b))).data)))
    ta, tb = backend.tensor(a, requires_grad=True), backend.tensor(b, requires_grad=True)
    with Tape() as tape:
        out = f(ta, tb)
    assert out.requires_grad
    tape.backward(out, grad=backend.asarray(w))
    np.testing.assert_allclose(backend.to_numpy(ta.grad), fd_grad(lambda x: scalar(x, b), a), rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(backend.to_numpy(tb.grad), fd_grad(lambda x: scalar(a, x), b), rtol=1e-6,
                               atol=1e-8)


@pytest.mark.parametrize("name", ["add", "div", "getitem_slice", "mean"])
def test_arithmetic_passes_gradcheck(backend, name):
    a = backend.asarray(RNG.standard_normal((3, 4)))
    b = backend.asarray(RNG.standard_normal((3, 4)))
    assert gpudp.gradcheck(ARITH[name], [a, b])


def test_zero_dimensional_results_stay_arrays():
    x = gpudp.tensor(np.arange(3.0), requires_grad=True)
    with Tape() as tape:
        s = x.sum()
        y = s * 2.0 + s / 4.0 - 1.0
    assert isinstance(y.data, np.ndarray) and y.shape == ()
    tape.backward(y)
    np.testing.assert_allclose(x.grad, np.full(3, 2.25))
    assert y.item() == pytest.approx(3 * 2.25 - 1.0)
    assert float(y) == pytest.approx(5.75)


def test_ndarray_on_the_left_gives_a_tensor():
    x = gpudp.tensor(np.ones(3), requires_grad=True)
    with Tape() as tape:
        y = (np.arange(3.0) * x + np.ones(3)).sum()
    assert isinstance(y, Tensor)
    tape.backward(y)
    np.testing.assert_allclose(x.grad, [0.0, 1.0, 2.0])


def test_bad_operand_type():
    x = gpudp.tensor(np.ones(3))
    with pytest.raises(TypeError, match="operands"):
        x + "a"
    with pytest.raises(TypeError, match="exponent"):
        x ** np.ones(3)


# -- Tape.backward / gradient ---------------------------------------------------------------------------

def test_backward_accumulates_like_pytorch_and_zero_grad_resets():
    x = gpudp.tensor(np.array([1.0, 2.0]), requires_grad=True)
    for expected in ([2.0, 4.0], [4.0, 8.0]):
        with Tape() as tape:
            y = (x * x).sum()
        tape.backward(y)
        np.testing.assert_allclose(x.grad, expected)
    x.zero_grad()
    assert x.grad is None


def test_backward_twice_is_an_error():
    x = gpudp.tensor(np.ones(4), requires_grad=True)
    with Tape() as tape:
        y = (x * x).sum()
    tape.backward(y)
    with pytest.raises(gpudp.TapeError, match="retain=True"):
        tape.backward(y)
    with pytest.raises(gpudp.TapeError, match="retain=True"):
        tape.gradient(y, x)


def test_retain_allows_a_second_backward():
    x = gpudp.tensor(np.array([3.0]), requires_grad=True)
    with Tape() as tape:
        y = (x * x * x).sum()
    tape.backward(y, retain=True)
    tape.backward(y)
    np.testing.assert_allclose(x.grad, [54.0])  # 2 × 3·3²


def test_gradient_returns_arrays_and_leaves_grad_alone():
    a = gpudp.tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = gpudp.tensor(np.array([5.0, 7.0]), requires_grad=True)
    c = gpudp.tensor(np.array([9.0]), requires_grad=True)
    with Tape() as tape:
        y = (a * b).sum()
    ga, gb, gc = tape.gradient(y, [a, b, c], retain=True)
    np.testing.assert_allclose(ga, [5.0, 7.0])
    np.testing.assert_allclose(gb, [1.0, 2.0])
    np.testing.assert_array_equal(gc, [0.0])  # y does not depend on c
    assert a.grad is None and b.grad is None
    single = tape.gradient(y, a)
    assert isinstance(single, np.ndarray)
    np.testing.assert_allclose(single, ga)


def test_gradient_and_backward_agree():
    x = RNG.standard_normal(5)
    t1, t2 = gpudp.tensor(x, requires_grad=True), gpudp.tensor(x, requires_grad=True)
    with Tape() as tape1:
        y1 = ((t1 * 2.0 - 1.0) ** 2).mean()
    with Tape() as tape2:
        y2 = ((t2 * 2.0 - 1.0) ** 2).mean()
    tape1.backward(y1)
    np.testing.assert_allclose(t1.grad, tape2.gradient(y2, t2), rtol=1e-15)


def test_gradient_of_a_source_that_does_not_require_grad():
    a = gpudp.tensor(np.ones(2), requires_grad=True)
    b = gpudp.tensor(np.ones(2))
    with Tape() as tape:
        y = (a * b).sum()
    with pytest.raises(gpudp.TapeError, match="source 1.*requires_grad=True"):
        tape.gradient(y, [a, b])


def test_non_scalar_output_needs_a_seed():
    x = gpudp.tensor(np.ones((2, 3)), requires_grad=True)
    with Tape() as tape:
        y = x * 3.0
    with pytest.raises(gpudp.TapeError) as err:
        tape.backward(y)
    assert "(2, 3)" in str(err.value) and "seed" in str(err.value)
    with pytest.raises(gpudp.TapeError, match="shape"):
        tape.backward(y, grad=np.ones(3))
    with pytest.raises(TypeError, match="dtype"):
        tape.backward(y, grad=np.ones((2, 3), np.float32))
    seed = RNG.standard_normal((2, 3))
    tape.backward(y, grad=seed)
    np.testing.assert_allclose(x.grad, 3.0 * seed)


def test_backward_inside_the_block_is_an_error():
    x = gpudp.tensor(np.ones(2), requires_grad=True)
    with Tape() as tape:
        y = x.sum()
        with pytest.raises(gpudp.TapeError, match="after the block"):
            tape.backward(y)


def test_backward_needs_a_tensor():
    with Tape() as tape:
        pass
    with pytest.raises(TypeError, match="Tensor"):
        tape.backward(np.ones(()))


@pytest.mark.parametrize("modify", [
    lambda t: t.__setitem__(0, 5.0),
    lambda t: t.copy_(np.zeros(3)),
    lambda t: t.fill_(1.0),
    lambda t: t.__iadd__(1.0),
    lambda t: t.__imul__(2.0),
    lambda t: setattr(t, "data", np.zeros(3)),
], ids=["setitem", "copy_", "fill_", "iadd", "imul", "data="])
def test_in_place_modification_after_recording_is_an_error(modify):
    x = gpudp.tensor(np.arange(3.0), requires_grad=True)
    with Tape() as tape:
        y = (x * x).sum()
    v = x.version
    modify(x)
    assert x.version == v + 1
    with pytest.raises(gpudp.TapeError, match="modified in place"):
        tape.backward(y)


def test_in_place_modification_before_recording_is_fine():
    x = gpudp.tensor(np.arange(3.0), requires_grad=True)
    x[0] = 4.0
    with Tape() as tape:
        y = (x * x).sum()
    tape.backward(y)
    np.testing.assert_allclose(x.grad, [8.0, 2.0, 4.0])


def test_modified_constant_input_is_also_caught():
    # the gradient w.r.t. x depends on c's values, so changing c after recording must be refused too
    x = gpudp.tensor(np.ones(3), requires_grad=True)
    c = gpudp.tensor(np.arange(3.0))
    with Tape() as tape:
        y = (x * c).sum()
    c.fill_(7.0)
    with pytest.raises(gpudp.TapeError, match="modified in place"):
        tape.backward(y)


def test_nested_tapes_are_an_error():
    x = gpudp.tensor(np.ones(2), requires_grad=True)
    with Tape() as outer:
        y = (x * 2.0).sum()
        with pytest.raises(gpudp.TapeError, match="nested"):
            with Tape():
                pass
        z = y * 3.0  # the outer tape still records
    outer.backward(z)
    np.testing.assert_allclose(x.grad, [6.0, 6.0])


def test_operations_outside_a_tape_are_not_recorded():
    x = gpudp.tensor(np.ones(2), requires_grad=True)
    y = (x * 2.0).sum()
    assert isinstance(y, Tensor) and not y.requires_grad
    with Tape() as tape:
        z = y * 3.0
    assert len(tape) == 0 and not z.requires_grad


def test_raw_arrays_give_raw_arrays():
    out = gpudp.l2_loss(np.ones(3), np.zeros(3))
    assert isinstance(out, np.ndarray) and float(out) == 3.0
    with Tape() as tape:
        out = gpudp.l2_loss(np.ones(3), np.zeros(3))
    assert isinstance(out, np.ndarray) and len(tape) == 0


def test_recording_on_a_freed_tape_needs_reset():
    x = gpudp.tensor(np.ones(2), requires_grad=True)
    with Tape() as tape:
        y = (x * x).sum()
    tape.backward(y)
    with pytest.raises(gpudp.TapeError, match="reset"):
        with tape:
            (x * x).sum()
    tape.reset()
    assert len(tape) == 0 and tape.memory_bytes == 0
    with tape:
        y = (x * x * x).sum()
    x.zero_grad()
    tape.backward(y)
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_tensor_construction_and_properties():
    with pytest.raises(TypeError, match="floating-point"):
        gpudp.tensor(np.arange(3), requires_grad=True)
    t = gpudp.tensor(np.arange(3), requires_grad=True, dtype=np.float64)
    assert t.dtype == np.float64 and t.requires_grad
    with pytest.raises(TypeError, match="array"):
        Tensor([1.0, 2.0])
    assert t.shape == (3,) and t.ndim == 1 and t.size == 3 and len(t) == 3
    np.testing.assert_array_equal(t.numpy(), [0.0, 1.0, 2.0])
    assert "requires_grad=True" in repr(t)
    d = t.detach()
    assert d.data is t.data and not d.requires_grad
    with pytest.raises(ValueError, match="one-element"):
        t.item()


# -- functional forms ------------------------------------------------------------------------------------

def test_vjp(backend):
    a = RNG.standard_normal(4)
    b = RNG.standard_normal(4)
    out, vjp_fn = gpudp.vjp(lambda x, y: x * y + x, backend.asarray(a), backend.asarray(b))
    assert backend.is_own(out)
    np.testing.assert_allclose(backend.to_numpy(out), a * b + a)
    w = RNG.standard_normal(4)
    for _ in range(2):  # callable more than once
        ga, gb = vjp_fn(backend.asarray(w))
        np.testing.assert_allclose(backend.to_numpy(ga), w * (b + 1))
        np.testing.assert_allclose(backend.to_numpy(gb), w * a)


def test_vjp_needs_a_tensor_result():
    with pytest.raises(TypeError, match="Tensor"):
        gpudp.vjp(lambda x: np.ones(2), np.ones(2))


def test_value_and_grad(backend):
    a = RNG.standard_normal(3)
    b = RNG.standard_normal(3)

    def f(x, y, scale=1.0):
        return ((x * y) ** 2).sum() * scale

    value, g = gpudp.value_and_grad(f)(backend.asarray(a), backend.asarray(b), scale=2.0)
    assert float(backend.to_numpy(value)) == pytest.approx(2 * np.sum((a * b) ** 2))
    np.testing.assert_allclose(backend.to_numpy(g), 4 * a * b * b)
    value, (ga, gb) = gpudp.value_and_grad(f, argnums=(0, 1))(backend.asarray(a), backend.asarray(b))
    np.testing.assert_allclose(backend.to_numpy(ga), 2 * a * b * b)
    np.testing.assert_allclose(backend.to_numpy(gb), 2 * a * a * b)


def test_value_and_grad_errors():
    with pytest.raises(TypeError, match="argnums"):
        gpudp.value_and_grad(lambda x: x.sum(), argnums=2)(np.ones(2))
    with pytest.raises(TypeError, match="scalar"):
        gpudp.value_and_grad(lambda x: 1.0)(np.ones(2))
    with pytest.raises(gpudp.TapeError, match="seed"):
        gpudp.value_and_grad(lambda x: x * 2.0)(np.ones(2))


# -- user-defined operators ------------------------------------------------------------------------------

class Scale(Operator):
    @staticmethod
    def forward(ctx, x, *, factor):
        ctx.factor = factor
        return x * factor

    @staticmethod
    def backward(ctx, g):
        return (g * ctx.factor,)


class Bilinear(Operator):
    """``(x·y, x + y)``: two inputs, two outputs; records what ``needs_input_grad`` said."""
    log = []

    @staticmethod
    def forward(ctx, x, y):
        Bilinear.log.append(("forward", ctx.needs_input_grad))
        ctx.save_for_backward(x, y)
        return x * y, x + y

    @staticmethod
    def backward(ctx, g_prod, g_sum):
        Bilinear.log.append(("backward", ctx.needs_input_grad))
        x, y = ctx.saved
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = (0 if g_prod is None else g_prod * y) + (0 if g_sum is None else g_sum)
        if ctx.needs_input_grad[1]:
            gy = (0 if g_prod is None else g_prod * x) + (0 if g_sum is None else g_sum)
        return gx, gy


def test_user_operator(backend):
    x = backend.tensor(RNG.standard_normal(5), requires_grad=True)
    with Tape() as tape:
        y = Scale.apply(x, factor=2.5)
        loss = (y * y).sum()
    assert len(tape) == 3
    tape.backward(loss)
    np.testing.assert_allclose(backend.to_numpy(x.grad), 2 * 2.5 * 2.5 * backend.to_numpy(x.data))
    raw = Scale.apply(backend.asarray(np.ones(2)), factor=3.0)  # raw arrays, no tape: a plain call
    assert backend.is_own(raw)
    assert gpudp.gradcheck(lambda a: Scale.apply(a, factor=-1.5), [backend.asarray(RNG.standard_normal(6))])


def test_user_operator_with_two_outputs_and_memory():
    x = gpudp.tensor(RNG.standard_normal(4), requires_grad=True)
    y = gpudp.tensor(RNG.standard_normal(4), requires_grad=True)
    with Tape() as tape:
        p, s = Bilinear.apply(x, y)
        loss = (p + s * s).sum()
    assert tape.memory_bytes >= 2 * 4 * 8  # x and y saved (plus what Mul saved)
    tape.backward(loss)
    xs, ys = x.numpy(), y.numpy()
    np.testing.assert_allclose(x.grad, ys + 2 * (xs + ys))
    np.testing.assert_allclose(y.grad, xs + 2 * (xs + ys))
    assert tape.memory_bytes == 0  # freed by backward


def test_user_operator_wrong_number_of_gradients():
    class Broken(Operator):
        @staticmethod
        def forward(ctx, x, y):
            return x + y

        @staticmethod
        def backward(ctx, g):
            return (g,)

    x = gpudp.tensor(np.ones(2), requires_grad=True)
    with Tape() as tape:
        z = Broken.apply(x, np.ones(2)).sum()
    with pytest.raises(gpudp.TapeError, match="1 gradients for 2 inputs"):
        tape.backward(z)


def test_greedy_needs_input_grad_reaches_the_operator():
    Bilinear.log.clear()
    a = gpudp.tensor(np.ones(3), requires_grad=True)
    b = gpudp.tensor(np.ones(3))  # no gradient wanted
    with Tape() as tape:
        p, _ = Bilinear.apply(a, b)
        loss = p.sum()
    tape.backward(loss)
    assert Bilinear.log == [("forward", (True, False)), ("backward", (True, False))]

    # both require gradients, but only one is asked for: the operator is told so
    Bilinear.log.clear()
    a = gpudp.tensor(np.ones(3), requires_grad=True)
    b = gpudp.tensor(np.full(3, 2.0), requires_grad=True)
    with Tape() as tape:
        p, _ = Bilinear.apply(a, b)
        loss = p.sum()
    ga = tape.gradient(loss, a, retain=True)
    np.testing.assert_allclose(ga, 2.0)
    gb = tape.gradient(loss, b)
    np.testing.assert_allclose(gb, 1.0)
    assert Bilinear.log == [("forward", (True, True)), ("backward", (True, False)), ("backward", (False, True))]


def test_greedy_skips_operators_off_the_path():
    Bilinear.log.clear()
    a = gpudp.tensor(np.ones(3), requires_grad=True)
    w = gpudp.tensor(np.ones(3), requires_grad=True)
    with Tape() as tape:
        c = a * 2.0
        p, _ = Bilinear.apply(w, w)  # depends on w only
        loss = (c + p).sum()
    tape.gradient(loss, a)
    assert [e for e in Bilinear.log if e[0] == "backward"] == []


# -- gradcheck itself ------------------------------------------------------------------------------------

def test_gradcheck_catches_a_wrong_adjoint():
    class Wrong(Operator):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved
            return (g * x,)  # should be 2·g·x

    x = RNG.standard_normal(4)
    with pytest.raises(gpudp.GradcheckError, match="finite differences"):
        gpudp.gradcheck(lambda t: Wrong.apply(t), [x])
    assert gpudp.gradcheck(lambda t: Wrong.apply(t), [x], raise_exception=False) is False
    big = RNG.standard_normal(100)  # random directions instead of elements
    assert gpudp.gradcheck(lambda t: t * t, [big])
    with pytest.raises(gpudp.GradcheckError):
        gpudp.gradcheck(lambda t: Wrong.apply(t), [big])


def test_gradcheck_wants_float64():
    with pytest.raises(TypeError, match="float64"):
        gpudp.gradcheck(lambda t: t * 2.0, [np.ones(3, np.float32)])
