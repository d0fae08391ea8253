"""gpudp.l2_loss and gpudp.mse: values and gradients against NumPy, on the compiled path of small C-contiguous
NumPy arrays and on NumPy's path (larger or non-contiguous arrays, other backends), and bad input."""
import numpy as np
import pytest

import gpudp
from gpudp.backends.cpu import losses as compiled

SIZES = [(), (1,), (5,), (7,), (8,), (9,), (3, 4), (127,), (128,), (129,), (2, 64), (7, 300)]


def _pair(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    # magnitudes over several decades, so that the summation order shows in the last bits
    x = np.asarray(rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape)).astype(dtype)
    y = np.asarray(rng.standard_normal(shape)).astype(dtype)
    return x, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("fn", ["l2_loss", "mse"])
def test_value_and_gradient_are_numpys(fn, shape, dtype):
    """The loss is the bits of ``(r * r).sum() * scale`` (NumPy's pairwise sum), the gradients those of
    ``2 scale r`` and ``-2 scale r``, whichever path computes them."""
    x, y = _pair(shape, dtype)
    scale = 1.0 if fn == "l2_loss" else 1.0 / x.size
    r = x - y
    want = np.asarray((r * r).sum() * scale, dtype=dtype)
    loss = getattr(gpudp, fn)
    got = loss(x, y)
    assert isinstance(got, np.ndarray) and got.shape == () and got.dtype == dtype
    assert got.tobytes() == want.tobytes()
    value, (gx, gy) = gpudp.value_and_grad(loss, argnums=(0, 1))(x, y)
    assert value.tobytes() == want.tobytes()
    for g, sign in ((gx, 1.0), (gy, -1.0)):
        assert g.dtype == dtype and g.shape == x.shape
        np.testing.assert_array_equal(g, sign * ((2 * scale) * np.ones((), dtype) * r))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_path_matches_numpy_path(monkeypatch, dtype):
    """Small contiguous arrays take the compiled path; with it switched off the results are the same bits."""
    x, y = _pair((4, 25), dtype, seed=3)
    applies = gpudp.ops.losses._compiled
    assert applies(x, y) is compiled and applies(x.T, y.T) is None and applies(*_pair(200, dtype)) is None
    assert applies(x.astype(np.float16), y.astype(np.float16)) is None and applies(x, y.tolist()) is None
    a = gpudp.value_and_grad(lambda t: gpudp.mse(t * 3.0, y))(x)
    monkeypatch.setattr(gpudp.ops.losses, "_compiled", lambda a, b: None)
    b = gpudp.value_and_grad(lambda t: gpudp.mse(t * 3.0, y))(x)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_non_contiguous_and_seeded_backward():
    """Views take NumPy's path; a seed other than 1 scales the gradient; inputs are not modified."""
    x, y = _pair((6, 8), np.float64, seed=4)
    xc, yc = x.copy(), y.copy()
    t = gpudp.tensor(x.T, requires_grad=True)
    with gpudp.Tape() as tape:
        loss = gpudp.l2_loss(t, y.T)
    (g,) = tape.gradient(loss, [t], grad=np.asarray(0.5))
    np.testing.assert_array_equal(g, (2 * 1.0) * np.asarray(0.5) * (x.T - y.T))
    assert np.array_equal(x, xc) and np.array_equal(y, yc)


def test_backend_arrays(backend):
    x, y = _pair((3, 5), np.float64, seed=5)
    value, g = gpudp.value_and_grad(lambda t: gpudp.l2_loss(t, backend.asarray(y)))(backend.asarray(x))
    np.testing.assert_allclose(backend.to_numpy(value), ((x - y) ** 2).sum(), rtol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(g), 2 * (x - y), rtol=1e-13)


def test_bad_input():
    with pytest.raises(TypeError, match="l2_loss: x must be a Tensor or array, got list"):
        gpudp.l2_loss([1.0, 2.0], np.zeros(2))
    with pytest.raises(TypeError, match="mse: target must be a Tensor or array, got float"):
        gpudp.mse(np.zeros(2), 1.0)
    with pytest.raises(gpudp.ShapeError, match=r"x has shape \(2,\) but target has shape \(3,\)"):
        gpudp.l2_loss(np.zeros(2), np.zeros(3))
    with pytest.raises(TypeError, match="x is float32 but target is float64"):
        gpudp.l2_loss(np.zeros(2, np.float32), np.zeros(2))
