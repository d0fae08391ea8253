"""``checkpoints=c`` of the monolithic multi-step operators ``gpudp.advect_upwind`` and ``gpudp.advect_mac``
(cell-centred ``q``): the forward pass keeps ``ceil(T / L)`` states (``L = ceil(T / c)``) and the backward pass
recomputes the others segment by segment; the gradients must be bitwise those of ``checkpoints=None`` (the
stored-everything path), and repeated runs bitwise identical.

Runs on the ``cpu`` backend (serial, serial 1-D and parallel drivers), ``numba-cuda`` (marker ``cudasim``: the
CUDA simulator, small grids), ``cupy`` on a GPU (marker ``gpu``) and the CUDA C kernels of ``kernels/*.cu`` on the
CUDA host emulator (``tests/cuda_host``, registered as the ``cupy`` backend). Also: the tape's exact byte count,
bad ``checkpoints`` values, the staggered path accepting the keyword, and (marker ``slow``) the acceptance case
of 10 000 steps at 256² in float32 with ``c = 100``.
"""
import math
import sys
import time

import numpy as np
import pytest

import gpudp
from gpudp import Tape
from gpudp import backends as _backends

from conftest import BackendHarness, activate_backend

# (T, c): c = 1, c dividing T, c not dividing T (last segment of one step, of two), c = T, c > T, T = 1
T_C = [(6, 1), (6, 2), (6, 3), (7, 3), (7, 4), (12, 5), (5, 5), (5, 9), (1, 1)]
# what the CUDA simulator runs of them (c = 1, c dividing T, the last segment one step; c > T: the memory tests)
SIM_T_C = [(6, 1), (6, 2), (7, 3)]
MEMORY_T_C = [(12, 3), (12, 5), (7, 1), (7, 6), (5, 5), (5, 8)]
SIM_MEMORY_T_C = {(12, 5), (7, 1), (5, 8)}
SHAPES = {1: (9,), 2: (4, 5), 3: (3, 4, 3)}
SPACINGS = {1: (0.7,), 2: (0.5, 1.25), 3: (0.8, 0.5, 1.1)}
BOUNDARIES = {1: ("periodic",), 2: ("dirichlet", "neumann"), 3: ("neumann", "periodic", "dirichlet")}
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
# unbatched u with a vector of fields, batched u with C fields per item
LAYOUTS = pytest.mark.parametrize("batched", [False, True], ids=["shared-u", "batched-u"])
NDIMS = pytest.mark.parametrize("ndim", [1, 2, 3])


@pytest.fixture(params=[pytest.param("cpu", id="cpu"),
                        pytest.param("numba-cuda", id="numba-cuda", marks=pytest.mark.cudasim),
                        pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
                        pytest.param("emulated", id="cuda-c-emulated")])
def kb(request, monkeypatch):
    """The backend of a test, active: cpu, numba-cuda, cupy, or the cupy backend on the CUDA host emulator."""
    name = request.param
    if name == "emulated":
        if not sys.platform.startswith("linux"):
            pytest.skip("the CUDA host emulator runs on Linux only")
        from cuda_host.emulator import compiler
        if compiler() is None:
            pytest.skip("no host C++ compiler (g++/c++) for the CUDA host emulator")
        from test_cupy_backend import _emulated_backend
        cb = _emulated_backend()
        monkeypatch.setitem(_backends._probe_cache, "cupy", _backends.BackendInfo("cupy", True, cb.device, ""))
        monkeypatch.setitem(_backends._instances, "cupy", cb)
        name = "cupy"
        with gpudp.use_backend(name) as impl:
            yield BackendHarness(name, impl)
        return
    yield from activate_backend(name)


def make_grid(kb, ndim):
    return gpudp.Grid(kb.small(SHAPES[ndim]), spacing=SPACINGS[ndim], boundary=BOUNDARIES[ndim])


def n_kept(T, c):
    """States the tape keeps with ``checkpoints=c``: ``ceil(T / L)`` with ``L = ceil(T / c)``; ``T`` for c >= T."""
    if c >= T:
        return T
    L = -(-T // c)
    return -(-T // L)


def _np(x):
    return np.array(gpudp.to_numpy(x), copy=True)


# -- advect_upwind ----------------------------------------------------------------------------------------------

def upwind_case(grid, batched, dtype, seed=0):
    """Host arrays ``d``, ``u``, a seed gradient ``w`` and a stable ``dt``; every seventh velocity exactly 0."""
    rng = np.random.default_rng(seed)
    D = grid.ndim
    lead, u_lead = ((2, 3), (2, D)) if batched else ((D,), (D,))
    d = rng.standard_normal(lead + grid.shape)
    u = rng.uniform(-1.0, 1.0, u_lead + grid.shape)
    u.reshape(-1)[::7] = 0.0
    speed = np.abs(u).reshape(u_lead + (-1,)).max(axis=-1) / np.asarray(grid.spacing)
    dt = 0.9 / float(speed.sum(axis=-1).max())
    w = rng.standard_normal(d.shape)
    return d.astype(dtype), u.astype(dtype), w.astype(dtype), dt


def upwind_run(kb, d, u, w, dt, grid, T, c, need_d=True, need_u=True):
    """``(out, gd, gu, tape bytes)`` of ``T`` steps with ``checkpoints=c`` and the seed gradient ``w``."""
    td = kb.tensor(d, requires_grad=need_d)
    tu = kb.tensor(u, requires_grad=need_u)
    with Tape() as tape:
        out = gpudp.advect_upwind(td, tu, dt, grid, steps=T, checkpoints=c)
    mem = tape.memory_bytes
    wanted = [t for t in (td, tu) if t.requires_grad]
    grads = iter(tape.gradient(out, wanted, grad=kb.asarray(w)))
    gd = _np(next(grads)) if need_d else None
    gu = _np(next(grads)) if need_u else None
    return _np(out), gd, gu, mem


def _same(a, b):
    return a is None and b is None or (a.dtype == b.dtype and np.array_equal(a, b))


@NDIMS
@LAYOUTS
@DTYPES
def test_upwind_gradients_bitwise_equal(kb, ndim, batched, dtype):
    _check_bitwise_over_checkpoints(kb, ndim, batched, dtype, upwind_case, upwind_run, _same, ("output", "gd", "gu"))


def _check_bitwise_over_checkpoints(kb, ndim, batched, dtype, case, run, same, names):
    """Output and gradients of ``run`` with ``checkpoints=c`` equal those with every step stored, bitwise,
    for each ``(T, c)`` of the table."""
    grid = make_grid(kb, ndim)
    x, u, w, dt = case(grid, batched, dtype, seed=ndim)
    refs = {}
    for T, c in (SIM_T_C if kb.simulated else T_C):
        if T not in refs:
            refs[T] = run(kb, x, u, w, dt, grid, T, None)
        got = run(kb, x, u, w, dt, grid, T, c)
        for what, a, b in zip(names, got[:3], refs[T][:3]):
            assert same(a, b), f"T={T}, c={c}: {what} differs from checkpoints=None"


@pytest.mark.parametrize("need", ["u", "d"])
def test_upwind_one_gradient_bitwise_equal(kb, need):
    grid = make_grid(kb, 2)
    d, u, w, dt = upwind_case(grid, True, np.float64, seed=5)
    flags = dict(need_d=need == "d", need_u=need == "u")
    for T, c in [(7, 3), (6, 1)]:
        ref = upwind_run(kb, d, u, w, dt, grid, T, None, **flags)
        got = upwind_run(kb, d, u, w, dt, grid, T, c, **flags)
        assert all(_same(a, b) for a, b in zip(got[:3], ref[:3])), f"T={T}, c={c}"
        # a d-gradient alone needs only u: nothing else is kept, checkpoints or not
        assert got[3] == (u.nbytes if need == "d" else n_kept(T, c) * d.nbytes + u.nbytes)


@DTYPES
def test_upwind_repeated_runs_bitwise_identical(kb, dtype):
    grid = make_grid(kb, 2)
    d, u, w, dt = upwind_case(grid, True, dtype, seed=7)
    first = upwind_run(kb, d, u, w, dt, grid, 7, 3)
    second = upwind_run(kb, d, u, w, dt, grid, 7, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first[:3], second[:3]))


@pytest.mark.parametrize("T,c", MEMORY_T_C)
def test_upwind_tape_memory(kb, T, c):
    kb.simulate_only((T, c) in SIM_MEMORY_T_C)
    grid = make_grid(kb, 3)
    d, u, w, dt = upwind_case(grid, True, np.float32, seed=9)
    *_, mem = upwind_run(kb, d, u, w, dt, grid, T, c)
    assert mem == n_kept(T, c) * d.nbytes + u.nbytes
    assert mem <= min(c, T) * d.nbytes + u.nbytes
    *_, mem_all = upwind_run(kb, d, u, w, dt, grid, T, None)
    assert mem_all == T * d.nbytes + u.nbytes


@pytest.mark.parametrize("shape", [(40000,), (128, 256), (32, 32, 32)], ids=["1d", "2d", "3d"])
@DTYPES
def test_upwind_cpu_parallel_driver_bitwise_equal(shape, dtype):
    """Grids of at least 2^15 cells take the parallel CPU drivers (the others test the serial ones)."""
    grid = gpudp.Grid(shape, boundary="neumann" if len(shape) == 2 else "periodic")
    rng = np.random.default_rng(11)
    d = rng.standard_normal(shape).astype(dtype)
    u = rng.uniform(-1.0, 1.0, (len(shape),) + shape).astype(dtype)
    u.reshape(-1)[::5] = 0.0
    w = rng.standard_normal(shape).astype(dtype)
    dt = 0.9 / float(np.abs(u).max() * len(shape))
    ref = upwind_run(_cpu(), d, u, w, dt, grid, 7, None)
    got = upwind_run(_cpu(), d, u, w, dt, grid, 7, 3)
    assert all(_same(a, b) for a, b in zip(got[:3], ref[:3]))


def _cpu():
    return BackendHarness("cpu", gpudp.backends.get_backend("cpu"))


# -- advect_mac, cell-centred q ---------------------------------------------------------------------------------

def mac_case(grid, batched, dtype, seed=0):
    """Host arrays ``q``, a staggered ``u`` (multiples of 1/4, many exact zeros), a seed ``w`` and ``dt``."""
    rng = np.random.default_rng(seed)
    lead, u_lead = ((2, 3), (2,)) if batched else ((3,), ())
    q = rng.standard_normal(lead + grid.shape)
    u = tuple(rng.integers(-4, 5, u_lead + grid.face_shape(k)) / 4.0 for k in range(grid.ndim))
    dt = 0.9 / sum(1.0 / h for h in grid.spacing)
    w = rng.standard_normal(q.shape)
    return q.astype(dtype), tuple(c.astype(dtype) for c in u), w.astype(dtype), dt


def mac_run(kb, q, u, w, dt, grid, T, c, need_q=True, need_u=True):
    """``(out, gq, gu tuple, tape bytes)`` of ``T`` steps with ``checkpoints=c``."""
    tq = kb.tensor(q, requires_grad=need_q)
    tu = tuple(kb.tensor(x, requires_grad=need_u) for x in u)
    with Tape() as tape:
        out = gpudp.advect_mac(tq, tu, dt, grid, steps=T, checkpoints=c)
    mem = tape.memory_bytes
    wanted = ([tq] if need_q else []) + (list(tu) if need_u else [])
    grads = [_np(g) for g in tape.gradient(out, wanted, grad=kb.asarray(w))]
    gq = grads.pop(0) if need_q else None
    gu = tuple(grads) if need_u else None
    return _np(out), gq, gu, mem


def _same_mac(a, b):
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return _same(a, b)


@NDIMS
@LAYOUTS
@DTYPES
def test_mac_gradients_bitwise_equal(kb, ndim, batched, dtype):
    _check_bitwise_over_checkpoints(kb, ndim, batched, dtype, mac_case, mac_run, _same_mac, ("output", "gq", "gu"))


@pytest.mark.parametrize("need", ["u", "q"])
def test_mac_one_gradient_bitwise_equal(kb, need):
    grid = make_grid(kb, 2)
    q, u, w, dt = mac_case(grid, True, np.float64, seed=5)
    flags = dict(need_q=need == "q", need_u=need == "u")
    u_bytes = sum(x.nbytes for x in u)
    for T, c in [(7, 3), (6, 1)]:
        ref = mac_run(kb, q, u, w, dt, grid, T, None, **flags)
        got = mac_run(kb, q, u, w, dt, grid, T, c, **flags)
        assert all(_same_mac(a, b) for a, b in zip(got[:3], ref[:3])), f"T={T}, c={c}"
        assert got[3] == (u_bytes if need == "q" else n_kept(T, c) * q.nbytes + u_bytes)


@DTYPES
def test_mac_repeated_runs_bitwise_identical(kb, dtype):
    grid = make_grid(kb, 3)
    q, u, w, dt = mac_case(grid, True, dtype, seed=7)
    first = mac_run(kb, q, u, w, dt, grid, 7, 3)
    second = mac_run(kb, q, u, w, dt, grid, 7, 3)
    assert all(_same_mac(a, b) for a, b in zip(first[:3], second[:3]))


@pytest.mark.parametrize("T,c", MEMORY_T_C)
def test_mac_tape_memory(kb, T, c):
    kb.simulate_only((T, c) in SIM_MEMORY_T_C)
    grid = make_grid(kb, 2)
    q, u, w, dt = mac_case(grid, False, np.float64, seed=9)
    u_bytes = sum(x.nbytes for x in u)
    *_, mem = mac_run(kb, q, u, w, dt, grid, T, c)
    assert mem == n_kept(T, c) * q.nbytes + u_bytes
    assert mem <= min(c, T) * q.nbytes + u_bytes
    *_, mem_all = mac_run(kb, q, u, w, dt, grid, T, None)
    assert mem_all == T * q.nbytes + u_bytes


@pytest.mark.parametrize("shape", [(40000,), (128, 256), (32, 32, 32)], ids=["1d", "2d", "3d"])
def test_mac_cpu_parallel_driver_bitwise_equal(shape):
    grid = gpudp.Grid(shape, boundary="dirichlet" if len(shape) == 2 else "periodic")
    q, u, w, dt = mac_case(grid, False, np.float32, seed=13)
    q, w = q[0], w[0]   # one field: the parallel drivers from 2^15 cells
    ref = mac_run(_cpu(), q, u, w, dt, grid, 7, None)
    got = mac_run(_cpu(), q, u, w, dt, grid, 7, 3)
    assert all(_same_mac(a, b) for a, b in zip(got[:3], ref[:3]))


# -- the staggered path and bad values ----------------------------------------------------------------------------

def test_mac_staggered_q_accepts_checkpoints():
    grid = gpudp.Grid((4, 5), spacing=(0.5, 1.25), boundary=("periodic", "neumann"))
    _, u, _, dt = mac_case(grid, False, np.float64, seed=3)
    rng = np.random.default_rng(4)
    w = tuple(rng.standard_normal(x.shape) for x in u)

    def grads(c):
        tu = tuple(gpudp.tensor(x, requires_grad=True) for x in u)
        with Tape() as tape:
            out = gpudp.advect_mac(tu, tu, dt, grid, steps=3, checkpoints=c)
            loss = (out[0] * w[0]).sum() + (out[1] * w[1]).sum()
        return [_np(g) for g in tape.gradient(loss, list(tu))]

    ref = grads(None)
    for c in (1, 2, 5):
        assert all(np.array_equal(a, b) for a, b in zip(grads(c), ref))


BAD = [(0, ValueError), (-3, ValueError), (True, TypeError), (False, TypeError), (2.0, TypeError), ("4", TypeError),
       (np.float64(3), TypeError)]


@pytest.mark.parametrize("value,error", BAD, ids=[repr(v) for v, _ in BAD])
def test_bad_checkpoints_raise(value, error):
    grid = gpudp.Grid((6,), boundary="periodic")
    d = np.linspace(0.0, 1.0, 6)
    u = np.full((1, 6), 0.5)
    uf = (np.full(6, 0.5),)
    calls = {
        "advect_upwind": lambda: gpudp.advect_upwind(d, u, 0.1, grid, steps=4, checkpoints=value),
        "advect_mac": lambda: gpudp.advect_mac(d, uf, 0.1, grid, steps=4, checkpoints=value),
        "advect_mac staggered": lambda: gpudp.advect_mac(uf, uf, 0.1, grid, steps=4, checkpoints=value),
    }
    for what, call in calls.items():
        with pytest.raises(error, match="checkpoints") as info:
            call()
        assert repr(value) in str(info.value), what
        assert what.split()[0] in str(info.value)


def test_numpy_integer_checkpoints_accepted():
    grid = gpudp.Grid((6,), boundary="periodic")
    d, u, w, dt = upwind_case(grid, False, np.float64)
    ref = upwind_run(_cpu(), d, u, w, dt, grid, 5, 2)
    got = upwind_run(_cpu(), d, u, w, dt, grid, 5, np.int64(2))
    assert all(_same(a, b) for a, b in zip(got[:3], ref[:3])) and got[3] == ref[3]


# -- acceptance: 10 000 steps at 256² in float32, c = 100 -------------------------------------------------------------

@pytest.mark.slow
def test_acceptance_10000_steps_256x256_float32_c100(capsys):
    T, c = 10_000, 100
    grid = gpudp.Grid((256, 256), spacing=1 / 256, boundary="periodic")
    x, y = grid.cell_centers(0)[:, None], grid.cell_centers(1)[None, :]
    d = np.exp(-((x - 0.4) ** 2 + (y - 0.5) ** 2) / 0.01).astype(np.float32)
    u = np.stack([0.6 + 0.3 * np.sin(2 * np.pi * y) + 0 * x, 0.4 + 0.2 * np.cos(2 * np.pi * x) + 0 * y])
    u = u.astype(np.float32)
    dt = 0.9 / (256 * float(np.abs(u[0]).max() + np.abs(u[1]).max()))
    w = np.cos(2 * np.pi * (x + 2 * y)).astype(np.float32)
    kb = _cpu()
    for key in (1, None):  # compile first: the timings below are of compiled code
        tu = kb.tensor(u, requires_grad=True)
        with Tape() as tape:
            out = gpudp.advect_upwind(kb.asarray(d), tu, dt, grid, steps=3, checkpoints=key)
        tape.gradient(out, [tu], grad=kb.asarray(w))
    results = {}
    for key in (c, None):
        t0 = time.perf_counter()
        tu = kb.tensor(u, requires_grad=True)
        with Tape() as tape:
            out = gpudp.advect_upwind(kb.asarray(d), tu, dt, grid, steps=T, checkpoints=key)
        t1 = time.perf_counter()
        mem = tape.memory_bytes
        (gu,) = tape.gradient(out, [tu], grad=kb.asarray(w))
        t2 = time.perf_counter()
        results[key] = (_np(out), _np(gu), mem, t1 - t0, t2 - t1)
        del tape, out, gu
    ck, full = results[c], results[None]
    with capsys.disabled():
        for name, r in (("checkpoints=100", ck), ("checkpoints=None", full)):
            print(f"\n{name}: tape {r[2]} bytes ({r[2] / 2**20:.1f} MiB), forward {r[3]:.2f} s, "
                  f"backward {r[4]:.2f} s")
    assert ck[2] == c * d.nbytes + u.nbytes and full[2] == T * d.nbytes + u.nbytes
    assert ck[2] <= 0.025 * full[2]
    assert np.array_equal(ck[0], full[0]) and np.array_equal(ck[1], full[1])
    assert math.isfinite(float(np.abs(ck[1]).max())) and np.abs(ck[1]).max() > 0
