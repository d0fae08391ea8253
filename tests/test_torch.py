"""gpudp.torch: gpudp functions as torch.autograd.Functions (gradcheck, None gradients, devices, import)."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0 for the CPU "
                                             "build); the gpudp.torch tests need it")

import gpudp  # noqa: E402
from gpudp.torch import from_torch, to_torch, wrap  # noqa: E402

from reference import advect as ref_advect  # noqa: E402

DT = 0.01


@pytest.fixture(autouse=True)
def cpu_backend():
    with gpudp.use_backend("cpu"):
        yield


def _rand(*shape, seed=0, low=0.0, high=1.0, grad=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(*shape, generator=g, dtype=dtype)
    return x.requires_grad_(grad)


def _velocity(*shape, seed=1):
    """Velocities of both signs away from 0 (upwinding switches branch at 0, where the derivative jumps)."""
    u = _rand(*shape, seed=seed, low=0.2, high=1.0, grad=False)
    sign = torch.where(_rand(*shape, seed=seed + 100, grad=False) < 0.5, -1.0, 1.0).to(u.dtype)
    return (u * sign).requires_grad_(True)


@pytest.mark.parametrize("steps", [1, 5])
def test_gradcheck_advect_1d(steps):
    grid = gpudp.Grid(12, spacing=1 / 12)
    f = wrap(lambda d, u: gpudp.advect_upwind(d, u, DT, grid, steps=steps))
    assert torch.autograd.gradcheck(f, (_rand(12), _velocity(1, 12)))


@pytest.mark.parametrize("steps", [1, 5])
def test_gradcheck_advect_batched_2d(steps):
    grid = gpudp.Grid((5, 6), spacing=(0.2, 0.25), boundary=("dirichlet", "periodic"))
    f = wrap(lambda d, u: gpudp.advect_upwind(d, u, DT, grid, steps=steps))
    assert torch.autograd.gradcheck(f, (_rand(2, 5, 6), _velocity(2, 2, 5, 6)))


def test_gradcheck_multiple_outputs_and_structures():
    """Several outputs (a field and a scalar loss, returned in a dict and a tuple), non-tensor arguments
    passed through by keyword, one input given inside a tuple."""
    grid = gpudp.Grid(10, spacing=0.1)

    def fn(pair, target, *, dt, steps):
        d, u = pair
        d1 = gpudp.advect_upwind(d, u, dt, grid, steps=steps)
        d2 = gpudp.advect_upwind(d1, u, dt, grid, steps=2)
        return {"d1": d1, "rest": (d2, gpudp.l2_loss(d2, target)), "steps": steps}

    f = wrap(fn)
    d, u, target = _rand(10), _velocity(1, 10), _rand(10, seed=5)
    out = f((d, u), target, dt=DT, steps=3)
    assert set(out) == {"d1", "rest", "steps"} and out["steps"] == 3
    assert out["rest"][1].shape == () and out["d1"].shape == (10,)

    def flat(d, u, target):
        o = f((d, u), target, dt=DT, steps=3)
        return o["d1"], o["rest"][0], o["rest"][1]

    assert torch.autograd.gradcheck(flat, (d, u, target))


def test_values_and_gradients_match_reference():
    """Forward against the float64 NumPy reference; gradient against PyTorch autograd of the same scheme."""
    n, steps = 16, 4
    grid = gpudp.Grid(n, spacing=1 / n)
    d, u = _rand(3, n), _velocity(3, 1, n)
    out = wrap(lambda d, u: gpudp.advect_upwind(d, u, DT, grid, steps=steps))(d, u)
    ref = np.stack([ref_advect(d[b].detach().numpy(), u[b].detach().numpy(), DT, (1 / n,), ("periodic",),
                               steps) for b in range(3)])
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-14)

    w = _rand(3, n, seed=9, grad=False)
    (out * w).sum().backward()

    d2, u2 = d.detach().clone().requires_grad_(), u.detach().clone().requires_grad_()
    x = d2
    for _ in range(steps):  # the upwind scheme in PyTorch operations
        uk = u2[:, 0]
        x = x - DT * n * (torch.clamp(uk, max=0) * (torch.roll(x, -1, -1) - x)
                          + torch.clamp(uk, min=0) * (x - torch.roll(x, 1, -1)))
    (x * w).sum().backward()
    torch.testing.assert_close(d.grad, d2.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(u.grad, u2.grad, rtol=1e-12, atol=1e-14)


def test_none_gradient_for_inputs_that_need_none():
    """Only u requires a gradient: d gets none, and gpudp's adjoint is told not to compute grad_d."""
    seen = []

    class Spy(gpudp.Operator):
        @staticmethod
        def forward(ctx, d, u):
            return d * 1.0 + u.sum() * 0.0

        @staticmethod
        def backward(ctx, g):
            seen.append(ctx.needs_input_grad)
            return (g if ctx.needs_input_grad[0] else None), (
                np.zeros((1, 8)) + g.sum() * 0.0 if ctx.needs_input_grad[1] else None)

    grid = gpudp.Grid(8, spacing=1 / 8)

    def fn(d, u):
        return gpudp.advect_upwind(Spy.apply(d, u), u, DT, grid, steps=3)

    d, u = _rand(8, grad=False), _velocity(1, 8)
    f = wrap(fn)
    out = f(d, u)
    g_u, = torch.autograd.grad(out.sum(), [u])
    assert g_u.shape == u.shape and d.grad is None
    assert seen == [(False, True)]

    # via the Function directly: the gradient slot of d is None, not zeros
    d.requires_grad_(False)
    u2 = u.detach().requires_grad_()
    out = f(d, u2)
    assert out.grad_fn is not None
    grads = out.grad_fn.apply(torch.ones_like(out))
    assert grads[1] is None and grads[2] is not None


def test_unused_output_and_non_differentiable_outputs():
    grid = gpudp.Grid(8, spacing=1 / 8)
    f = wrap(lambda d, u: (gpudp.advect_upwind(d, u, DT, grid), gpudp.advect_upwind(d, u, DT, grid, steps=2)))
    d, u = _rand(8), _velocity(1, 8)
    a, b = f(d, u)
    b.sum().backward()  # a gets no gradient (None reaches gpudp's join)
    assert d.grad is not None and u.grad is not None

    # outputs that depend on no input requiring a gradient
    with torch.no_grad():
        a, b = f(d, u)
    assert a.grad_fn is None and not a.requires_grad


def test_no_tape_without_gradients(monkeypatch):
    grid = gpudp.Grid(8, spacing=1 / 8)
    made = []
    orig = gpudp.Tape.__init__

    def counting_init(self):
        made.append(1)
        orig(self)

    monkeypatch.setattr(gpudp.Tape, "__init__", counting_init)
    f = wrap(lambda d, u: gpudp.advect_upwind(d, u, DT, grid))
    out = f(_rand(8, grad=False), _velocity(1, 8).detach())
    assert not made and not out.requires_grad
    f(_rand(8), _velocity(1, 8))
    assert made == [1]


def test_zero_copy_inputs_and_no_aliasing_outputs():
    d = _rand(8, grad=False)
    seen = {}

    def fn(x):
        seen["shares"] = np.shares_memory(x.data, d.numpy())
        return x  # an output that is an input: copied, so the torch output does not alias the torch input

    out = wrap(fn)(d)
    assert seen["shares"]
    assert not np.shares_memory(out.numpy(), d.numpy())
    torch.testing.assert_close(out, d)

    a = from_torch(d)
    assert np.shares_memory(a, d.numpy())
    t = to_torch(a)
    assert np.shares_memory(t.numpy(), a)


def test_float32_and_retain_graph():
    grid = gpudp.Grid(16, spacing=1 / 16)
    f = wrap(lambda d, u: gpudp.l2_loss(gpudp.advect_upwind(d, u, DT, grid, steps=4), d))
    d = _rand(16, dtype=torch.float32)
    u = _velocity(1, 16).detach().float().requires_grad_()
    loss = f(d, u)
    assert loss.dtype == torch.float32
    loss.backward(retain_graph=True)
    g1 = u.grad.clone()
    loss.backward()
    torch.testing.assert_close(u.grad, 2 * g1)


def test_inplace_change_of_an_input_is_an_error():
    grid = gpudp.Grid(8, spacing=1 / 8)
    f = wrap(lambda d, u: gpudp.advect_upwind(d, u, DT, grid, steps=2))
    d = _rand(8, grad=False)
    u = _velocity(1, 8)
    out = f(d, u)
    d.add_(1.0)  # the tape's saved states share d's memory
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_wrong_device_is_a_clear_error():
    grid = gpudp.Grid(8, spacing=1 / 8)
    f = wrap(lambda d, u: gpudp.advect_upwind(d, u, DT, grid))
    with pytest.raises(gpudp.BackendError, match="active gpudp backend 'cpu' takes CPU tensors"):
        f(torch.zeros(8, device="meta"), torch.zeros(1, 8, device="meta"))
    if torch.cuda.is_available():
        with pytest.raises(gpudp.BackendError, match=r"\.cpu\(\)"):
            f(torch.zeros(8, device="cuda"), torch.zeros(1, 8, device="cuda"))


def test_gpudp_errors_pass_through():
    grid = gpudp.Grid(8, spacing=1 / 8)
    f = wrap(lambda d, u: gpudp.advect_upwind(d, u, DT, grid))
    with pytest.raises(TypeError, match="dtype mismatch"):
        f(_rand(8), _velocity(1, 8).detach().float())
    with pytest.raises(gpudp.StabilityError):
        f(_rand(8), torch.full((1, 8), 100.0, dtype=torch.float64))


def _staggered_leaves(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _staggered_leaves(o)]
    return []


@pytest.mark.skipif(not hasattr(gpudp, "project"), reason="gpudp.project (the Poisson issue) is not there yet")
@pytest.mark.parametrize("boundary", ["periodic", ("neumann", "periodic")])
def test_gradcheck_project(boundary):
    grid = gpudp.Grid((6, 5), spacing=(1 / 6, 1 / 5), boundary=boundary)
    ux, uy = (_rand(*grid.face_shape(k), seed=3 + k) for k in range(2))
    f = wrap(lambda ux, uy: gpudp.project((ux, uy), grid, tol=1e-13))

    def fn(ux, uy):
        return tuple(_staggered_leaves(f(ux, uy)))

    assert len(fn(ux, uy)) == 2
    assert torch.autograd.gradcheck(fn, (ux, uy), atol=1e-6, rtol=1e-5)

    # the staggered field as one tuple argument; solver statistics pass through as a non-tensor output
    (px, py), info = wrap(lambda u: gpudp.project(u, grid, tol=1e-13, return_info=True))((ux, uy))
    assert not isinstance(info, torch.Tensor)
    (px * ux.detach()).sum().backward()
    assert ux.grad is not None and uy.grad is not None


def test_import_gpudp_does_not_import_torch():
    code = "import sys, gpudp; gpudp.Grid(4); assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _gpu_backend_ready(name):
    if not torch.cuda.is_available():
        return False
    try:
        info = gpudp.available_backends()[name]
        return info.available and (name == "cupy" or gpudp.get_backend(name).xp is not None)
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba-cuda"])
def test_gpu_gradcheck_and_streams(backend):
    if not _gpu_backend_ready(backend):
        pytest.skip(f"needs torch.cuda and gpudp's {backend} backend with CuPy arrays on a real GPU")
    import cupy
    with gpudp.use_backend(backend):
        grid = gpudp.Grid(12, spacing=1 / 12)
        f = wrap(lambda d, u: gpudp.advect_upwind(d, u, DT, grid, steps=5))
        d = _rand(2, 12).detach().cuda().requires_grad_()
        u = _velocity(2, 1, 12).detach().cuda().requires_grad_()
        assert torch.autograd.gradcheck(f, (d, u))

        seen = {}

        def spy(d, u):
            seen["ptr"] = d.data.data.ptr
            seen["stream"] = cupy.cuda.get_current_stream().ptr
            return gpudp.advect_upwind(d, u, DT, grid, steps=5)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # gpudp's kernels go on the caller's stream
            out = wrap(spy)(d, u)
            out.sum().backward()
        torch.cuda.synchronize()
        assert seen["stream"] == side.cuda_stream
        assert seen["ptr"] == d.data_ptr()  # zero-copy through DLPack
        assert out.is_cuda and d.grad.is_cuda and u.grad.is_cuda
        ref = ref_advect(d.detach().cpu().numpy(), u.detach().cpu().numpy()[:, None], DT, (1 / 12,),
                         ("periodic",), 5)
        np.testing.assert_allclose(out.detach().cpu().numpy(), ref, rtol=1e-12, atol=1e-14)

        with pytest.raises(gpudp.BackendError, match=r"\.cuda\(\)"):
            f(d.detach().cpu(), u.detach().cpu())



@pytest.mark.gpu
@pytest.mark.skipif(not hasattr(gpudp, "project"), reason="gpudp.project (the Poisson issue) is not there yet")
@pytest.mark.parametrize("backend", ["cupy", "numba-cuda"])
def test_gpu_gradcheck_project(backend):
    if not _gpu_backend_ready(backend):
        pytest.skip(f"needs torch.cuda and gpudp's {backend} backend with CuPy arrays on a real GPU")
    with gpudp.use_backend(backend):
        grid = gpudp.Grid((6, 5), spacing=(1 / 6, 1 / 5), boundary=("neumann", "periodic"))
        ux, uy = (_rand(*grid.face_shape(k), seed=3 + k).detach().cuda().requires_grad_() for k in range(2))
        f = wrap(lambda ux, uy: gpudp.project((ux, uy), grid, tol=1e-13))
        assert torch.autograd.gradcheck(lambda a, b: tuple(_staggered_leaves(f(a, b))), (ux, uy),
                                        atol=1e-6, rtol=1e-5)
