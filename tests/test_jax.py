"""gpudp.jax: gpudp functions under jax.grad / jax.jit / jax.vmap through host callbacks (CPU)."""
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install jax); the gpudp.jax tests need it")

import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import gpudp  # noqa: E402
from gpudp.jax import wrap  # noqa: E402

DT = 0.01


@pytest.fixture(autouse=True)
def cpu_float64():
    with gpudp.use_backend("cpu"):
        previous = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", True)
        try:
            yield
        finally:
            jax.config.update("jax_enable_x64", previous)


def _inputs(n=12, batch=()):
    rng = np.random.default_rng(0)
    d = jnp.asarray(rng.random(batch + (n,)))
    u = rng.uniform(0.2, 1.0, batch + (1, n)) * rng.choice([-1.0, 1.0], batch + (1, n))
    return d, jnp.asarray(u)


@pytest.mark.parametrize("steps", [1, 5])
def test_check_grads_advect(steps):
    grid = gpudp.Grid(12, spacing=1 / 12)
    f = wrap(lambda d, u: gpudp.advect_upwind(d, u, DT, grid, steps=steps))
    d, u = _inputs()
    check_grads(f, (d, u), order=1, modes=["rev"])


def test_gradient_matches_gpudp_tape_under_jit():
    grid = gpudp.Grid(16, spacing=1 / 16)
    d, u = _inputs(16, (3,))
    target = jnp.asarray(np.random.default_rng(1).random((3, 16)))

    def rollout_loss(d, u, target):
        return gpudp.l2_loss(gpudp.advect_upwind(d, u, DT, grid, steps=7), target)

    g_jax = jax.jit(jax.grad(wrap(rollout_loss), argnums=1))(d, u, target)
    _, g_tape = gpudp.value_and_grad(rollout_loss, argnums=1)(np.asarray(d), np.asarray(u), np.asarray(target))
    np.testing.assert_allclose(np.asarray(g_jax), g_tape, rtol=1e-12, atol=1e-14)


def test_several_outputs_structures_and_vmap():
    grid = gpudp.Grid(10, spacing=0.1)

    def fn(pair, *, steps):
        d, u = pair
        d1 = gpudp.advect_upwind(d, u, DT, grid, steps=steps)
        return {"d1": d1, "loss": gpudp.l2_loss(d1, d)}

    f = wrap(fn)
    d, u = _inputs(10)
    out = f((d, u), steps=3)
    assert set(out) == {"d1", "loss"} and out["loss"].shape == ()
    check_grads(lambda d, u: f((d, u), steps=3)["d1"], (d, u), order=1, modes=["rev"])
    check_grads(lambda d, u: f((d, u), steps=3)["loss"], (d, u), order=1, modes=["rev"])
    batched = jax.vmap(lambda d: f((d, u), steps=3)["d1"])(jnp.stack([d, 2 * d]))
    np.testing.assert_allclose(np.asarray(batched[1]), 2 * np.asarray(batched[0]), rtol=1e-12)


@pytest.mark.skipif(not hasattr(gpudp, "project"), reason="gpudp.project (the Poisson issue) is not there yet")
def test_check_grads_project():
    grid = gpudp.Grid((6, 5), spacing=(1 / 6, 1 / 5), boundary=("neumann", "periodic"))
    rng = np.random.default_rng(2)
    ux, uy = (jnp.asarray(rng.random(grid.face_shape(k))) for k in range(2))
    f = wrap(lambda ux, uy: gpudp.project((ux, uy), grid, tol=1e-13))
    check_grads(f, (ux, uy), order=1, modes=["rev"], atol=1e-6, rtol=1e-5)


def test_non_array_output_is_an_error():
    grid = gpudp.Grid(8, spacing=1 / 8)
    f = wrap(lambda d, u: (gpudp.advect_upwind(d, u, DT, grid), "text"))
    with pytest.raises(TypeError, match="must return only gpudp Tensors or arrays"):
        f(*_inputs(8))


def test_import_gpudp_does_not_import_jax():
    code = "import sys, gpudp; gpudp.Grid(4); assert 'jax' not in sys.modules, 'jax was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
