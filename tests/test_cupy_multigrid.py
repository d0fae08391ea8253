"""The multigrid V-cycle's kernels on the ``cupy`` backend (``kernels/multigrid.cu``,
``gpudp/backends/cupy_backend/multigrid.py``).

Every test runs on the backend object of ``test_cupy_backend``'s ``cb`` fixture: on a real GPU (marker ``gpu``)
and through the CUDA host emulator (``tests/cuda_host``; argument types checked against the C signatures).
References: the independent float64 NumPy reference ``tests/reference_multigrid.py`` per kernel (random couplings
with closed faces, random ``1/D``, every boundary mix, odd sizes, axes of 1–3 cells, every coarsening pattern), a
whole V-cycle against the ``cpu`` backend's V-cycle and against the V-cycle composed from the reference pieces,
and ``poisson_solve(..., preconditioner="multigrid")`` (the backend activated as ``cupy``) against the dense
per-region pseudo-inverse of ``tests/reference_mac.py``, with its implicit gradient.
"""
import itertools
from collections import Counter

import numpy as np
import pytest

import gpudp
from gpudp import backends as _backends
from gpudp.backends import get_backend
from gpudp.ops import multigrid as MG
from gpudp.ops.multigrid import Level

import reference_mac as RMAC
import reference_multigrid as RM
from test_cupy_backend import cb, dev, host  # noqa: F401  (cb: the gpu / emulated backend fixture)

P, D, N = "periodic", "dirichlet", "neumann"
KINDS = (P, D, N)
CODE = {P: 0, D: 1, N: 2}
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
B = 2   # systems per batch

# (shape, boundary, coarsen flags of the real axes or None for the hierarchy's rule: every axis of > 2 cells)
CASES = [((n,), (k,), None) for n in (7, 8, 3, 2, 1) for k in KINDS]
CASES += [((5, 6), b, None) for b in itertools.product(KINDS, repeat=2)]
CASES += [((1, 4), (D, P), None), ((3, 1), (N, P), None), ((2, 3), (P, D), None), ((7, 5), (N, D), None)]
CASES += [((3, 4, 5), b, None) for b in [(P, P, P), (D, D, D), (N, N, N), (N, P, D), (D, N, P), (P, D, N)]]
CASES += [((2, 1, 3), (N, D, P), None), ((5, 3, 2), (P, N, D), None), ((1, 1, 3), (D, N, N), None)]
# other coarsening patterns: one axis only, axes of one and two cells coarsened
CASES += [((5, 6), (P, D), (0, 1)), ((5, 6), (N, P), (1, 0)), ((2, 5), (D, N), (1, 1)), ((1, 4), (P, N), (1, 1)),
          ((2, 2), (P, P), (1, 1)), ((3, 4, 5), (D, N, P), (1, 0, 1)), ((4, 3, 5), (N, D, P), (0, 1, 0))]
IDS = ["x".join(map(str, s)) + "-" + "".join(b[0] for b in bnd) + ("" if k is None else "-k" + "".join(map(str, k)))
       for s, bnd, k in CASES]
GRIDS = pytest.mark.parametrize("shape,boundary,flags", CASES, ids=IDS)


def _tol(dtype):
    return 1e-12 if dtype == np.float64 else 1e-5


def _close(got, want, dtype, what, tol=None):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    tol = _tol(dtype) if tol is None else tol
    err = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-300)
    assert err <= tol, f"{what}: max relative error {err:.3e} > {tol:g}"


class Case:
    """Two random levels of one grid (the fine one and the next coarser), on the host in float64 (rounded to
    ``dtype`` first, so that the reference sees exactly the kernels' inputs) and on the backend."""

    def __init__(self, cb, shape, boundary, flags, dtype, seed=0):
        rng = np.random.default_rng(seed)
        ndim = len(shape)
        self.off = off = 3 - ndim
        self.n = n = (1,) * off + tuple(shape)
        self.bc = bc = (0,) * off + tuple(CODE[b] for b in boundary)
        if flags is None:
            flags = tuple(int(m > 2) for m in shape)
        self.k = k = (0,) * off + tuple(flags)
        self.nc = nc = tuple((m + 1) // 2 if f else m for m, f in zip(n, k))
        self.dtype = np.dtype(dtype)
        self.rng = rng
        self.fine = self._level(n, k)
        self.coarse = self._level(nc, (0, 0, 0))
        self.dev_fine = self._on(cb, self.fine)
        self.dev_coarse = self._on(cb, self.coarse)

    def _level(self, n, k):
        rng, off, bc = self.rng, self.off, self.bc
        w = [np.zeros(1), np.zeros(1), np.zeros(1)]
        for a in range(off, 3):
            c = rng.uniform(0.2, 2.0, int(np.prod(RM.face_shape(n, bc, a))))
            c[rng.random(c.size) < 0.25] = 0.0         # closed faces
            w[a] = c
        size = int(np.prod(n))
        dinv = rng.uniform(0.1, 1.0, size)
        dinv[rng.random(size) < 0.2] = 0.0
        return Level(n, bc, off, k, tuple(self.rounded(c) for c in w), self.rounded(dinv))

    def rounded(self, a):
        return np.asarray(a, self.dtype).astype(np.float64)

    def _on(self, cb, lv):
        return lv._replace(w=tuple(dev(cb, c.astype(self.dtype)) for c in lv.w),
                           dinv=dev(cb, lv.dinv.astype(self.dtype)))

    def data(self, level):
        """A random ``(B, N)`` batch of ``level`` (float64 values exactly representable in ``dtype``)."""
        return self.rounded(self.rng.standard_normal((B, level.size)))

    def grid(self, a, level):
        return a.reshape((a.shape[0],) + tuple(level.shape3))


# -- the kernels, one by one ------------------------------------------------------------------------------------

@DTYPES
@GRIDS
def test_operator_kernels_match_reference(cb, shape, boundary, flags, dtype):
    c = Case(cb, shape, boundary, flags, dtype, seed=1)
    lv, dlv = c.fine, c.dev_fine
    n, bc, off, w = lv.shape3, lv.bc, lv.off, lv.w
    x, r = c.data(lv), c.data(lv)
    xd, rd = dev(cb, x.astype(dtype)), dev(cb, r.astype(dtype))
    omega = MG.OMEGA[len(shape)]
    om = float(np.dtype(dtype).type(omega))
    Ax = RM.apply(c.grid(x, lv), n, bc, off, w).reshape(B, -1)
    before = Counter(cb.launches)

    out = cb.empty((B, lv.size), dtype)
    cb.mg_apply(xd, out, dlv)
    assert host(cb, out).dtype == dtype
    _close(host(cb, out), Ax, dtype, "A x")

    out = cb.empty((B, lv.size), dtype)
    cb.mg_residual(xd, rd, out, dlv)
    _close(host(cb, out), r - Ax, dtype, "r - A x")

    out = cb.empty((B, lv.size), dtype)
    cb.mg_smooth(xd, rd, out, dlv, np.dtype(dtype).type(omega), False)
    want = RM.smooth(c.grid(x, lv), c.grid(r, lv), n, bc, off, w, lv.dinv, om, False).reshape(B, -1)
    _close(host(cb, out), want, dtype, "x + ω D⁻¹ (r − A x)")

    out = cb.empty((B, lv.size), dtype)
    cb.mg_smooth(None, rd, out, dlv, omega, True)     # x is not read (None), a Python float ω is accepted
    want = RM.smooth(None, c.grid(r, lv), n, bc, off, w, lv.dinv, om, True).reshape(B, -1)
    _close(host(cb, out), want, dtype, "ω D⁻¹ r")
    assert np.all(host(cb, out)[:, lv.dinv == 0] == 0.0)

    # the inputs are left alone, each call is one launch of its kernel
    np.testing.assert_array_equal(host(cb, xd), x.astype(dtype))
    np.testing.assert_array_equal(host(cb, rd), r.astype(dtype))
    delta = Counter(cb.launches)
    delta.subtract(before)
    assert {k: v for k, v in delta.items() if v} == {"mg_apply": 1, "mg_residual": 1, "mg_smooth": 1,
                                                      "mg_smooth_first": 1}


@DTYPES
@GRIDS
def test_restrict_matches_reference(cb, shape, boundary, flags, dtype):
    c = Case(cb, shape, boundary, flags, dtype, seed=2)
    f = c.data(c.fine)
    fd = dev(cb, f.astype(dtype))
    out = cb.empty((B, c.coarse.size), dtype)
    cb.mg_restrict(fd, out, c.dev_fine, c.dev_coarse)
    want = RM.restrict(c.grid(f, c.fine), c.n, c.bc, c.k).reshape(B, -1)
    assert want.shape == (B, c.coarse.size)
    _close(host(cb, out), want, dtype, "R f")
    np.testing.assert_array_equal(host(cb, fd), f.astype(dtype))


@DTYPES
@GRIDS
def test_prolong_add_matches_reference(cb, shape, boundary, flags, dtype):
    c = Case(cb, shape, boundary, flags, dtype, seed=3)
    e, x = c.data(c.coarse), c.data(c.fine)
    ed, xd = dev(cb, e.astype(dtype)), dev(cb, x.astype(dtype))
    cb.mg_prolong_add(ed, xd, c.dev_fine, c.dev_coarse)
    Pe = RM.prolong(c.grid(e, c.coarse), c.n, c.bc, c.k).reshape(B, -1)
    _close(host(cb, xd), x + Pe, dtype, "x + P e")
    np.testing.assert_array_equal(host(cb, ed), e.astype(dtype))
    # the two transfers are transposes up to ½ per coarsened axis: <R f, e> = 2^-m <f, P e>
    f = c.data(c.fine)
    Rf = cb.empty((B, c.coarse.size), dtype)
    cb.mg_restrict(dev(cb, f.astype(dtype)), Rf, c.dev_fine, c.dev_coarse)
    zero = dev(cb, np.zeros((B, c.fine.size), dtype))
    cb.mg_prolong_add(ed, zero, c.dev_fine, c.dev_coarse)
    lhs = float(np.sum(host(cb, Rf).astype(np.float64) * e))
    rhs = 0.5 ** sum(c.k) * float(np.sum(f * host(cb, zero).astype(np.float64)))
    scale = float(np.sum(np.abs(f) * np.abs(Pe)))
    assert abs(lhs - rhs) <= 10 * _tol(dtype) * max(scale, 1.0), (lhs, rhs)


@DTYPES
@pytest.mark.parametrize("nc", [1, 37, 512])
def test_coarse_solve_is_the_matrix_product(cb, nc, dtype):
    rng = np.random.default_rng(nc)
    M = rng.standard_normal((nc, nc))
    M = (M + M.T).astype(dtype)
    r = rng.standard_normal((3, nc)).astype(dtype)
    out = cb.empty((3, nc), dtype)
    before = cb.launches["mg_coarse_solve"]
    cb.mg_coarse_solve(dev(cb, r), dev(cb, M), out)
    assert cb.launches["mg_coarse_solve"] == before + 1
    want = r.astype(np.float64) @ M.astype(np.float64)
    tol = 1e-12 if dtype == np.float64 else 2e-5 * np.sqrt(nc)
    got = host(cb, out)
    assert got.dtype == dtype
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= tol, err


def test_wrappers_reject_bad_arrays(cb):
    c = Case(cb, (5, 6), (D, N), None, np.float64)
    lv = c.dev_fine
    x = dev(cb, np.zeros((B, lv.size)))
    with pytest.raises(ValueError, match=r"out has shape \(2, 29\); expected \(2, 30\)"):
        cb.mg_apply(x, cb.empty((B, lv.size - 1), np.float64), lv)
    with pytest.raises(ValueError, match=r"x has shape \(30,\); expected \(B, 30\)"):
        cb.mg_residual(dev(cb, np.zeros(lv.size)), x, cb.empty((B, lv.size), np.float64), lv)
    with pytest.raises(TypeError, match="r has dtype float32; expected float64"):
        cb.mg_smooth(x, dev(cb, np.zeros((B, lv.size), np.float32)), cb.empty((B, lv.size), np.float64), lv,
                     0.8, False)
    wide = dev(cb, np.zeros((B, 2 * lv.size)))
    with pytest.raises(ValueError, match="out is written in place and must be C-contiguous"):
        cb.mg_apply(x, wide[:, ::2], lv)
    with pytest.raises(ValueError, match=r"out has shape \(2, 30\); expected \(2, 9\)"):
        cb.mg_restrict(x, cb.empty((B, lv.size), np.float64), lv, c.dev_coarse)
    with pytest.raises(ValueError, match=r"e has shape \(3, 9\); expected \(2, 9\)"):
        cb.mg_prolong_add(dev(cb, np.zeros((3, c.coarse.size))), x, lv, c.dev_coarse)
    bad = lv._replace(w=(lv.w[0], lv.w[1], dev(cb, np.zeros(5, np.float32))))
    with pytest.raises(TypeError, match="couplings of axis 2 have dtype float32; expected float64"):
        cb.mg_apply(x, cb.empty((B, lv.size), np.float64), bad)


# -- the whole V-cycle -----------------------------------------------------------------------------------------

def _mask(shape, seed, fraction=0.2):
    m = np.random.default_rng(seed).random(shape) < fraction
    m.flat[0] = False
    return m


# grids with ~20 % random solid cells, 1-3 levels below the finest (coarsest at most 512 cells)
VCYCLE_CASES = [
    ((600,), (D,)), ((601,), (N,)),
    ((40, 31), (D, P)), ((37, 29), (N, N)), ((33, 24), (P, P)), ((70, 50), (P, D)), ((7, 9), (N, D)),
    ((10, 9, 11), (N, P, D)), ((17, 9, 12), (D, D, N)), ((2, 25, 23), (P, N, D)), ((9, 9, 9), (P, P, P)),
]
VCYCLE_IDS = ["x".join(map(str, s)) + "-" + "".join(b[0] for b in bnd) for s, bnd in VCYCLE_CASES]


def reference_vcycle(h, r):
    """``M⁻¹ r`` composed from ``reference_multigrid``'s pieces on the host hierarchy ``h`` (float64)."""
    levels = h.levels
    Bn = r.shape[0]
    if len(levels) == 1:
        return r @ h.pinv

    def view(a, lv):
        return a.reshape((Bn,) + tuple(lv.shape3))

    def sweep(x, rhs, lv, first):
        return RM.smooth(x, rhs, lv.shape3, lv.bc, lv.off, lv.w, lv.dinv, h.omega, first)

    rhs, xs = [view(r, levels[0])], []
    for l in range(len(levels) - 1):
        lv = levels[l]
        x = sweep(None, rhs[l], lv, True)
        for _ in range(MG.SWEEPS - 1):
            x = sweep(x, rhs[l], lv, False)
        res = rhs[l] - RM.apply(x, lv.shape3, lv.bc, lv.off, lv.w)
        rhs.append(RM.restrict(res, lv.shape3, lv.bc, lv.coarsen))
        xs.append(x)
    e = view(rhs[-1].reshape(Bn, -1) @ h.pinv, levels[-1])
    for l in range(len(levels) - 2, -1, -1):
        lv = levels[l]
        x = xs[l] + RM.prolong(e, lv.shape3, lv.bc, lv.coarsen)
        for _ in range(MG.SWEEPS):
            x = sweep(x, rhs[l], lv, False)
        e = x
    return e.reshape(Bn, -1)


@DTYPES
@pytest.mark.parametrize("shape,boundary", VCYCLE_CASES, ids=VCYCLE_IDS)
def test_vcycle_matches_cpu_backend_and_reference(cb, shape, boundary, dtype):
    grid = gpudp.Grid(shape, spacing=tuple(0.5 + 0.2 * k for k in range(len(shape))), boundary=boundary,
                      solid=_mask(shape, len(shape) + shape[0]))
    h = MG.hierarchy(grid)
    L = len(h.levels)
    assert L >= (1 if grid.size <= MG.COARSEST_CELLS else 2)
    dh = MG.device_hierarchy(cb, dtype, grid)
    assert MG.device_hierarchy(cb, dtype, grid) is dh          # built once per backend and dtype
    cpu = get_backend("cpu")
    dc = MG.device_hierarchy(cpu, dtype, grid)
    rng = np.random.default_rng(5)
    r = rng.standard_normal((3, grid.size)).astype(dtype)
    before = Counter(cb.launches)
    out = cb.empty((3, grid.size), dtype)
    rd = dev(cb, r)
    res = MG.vcycle(cb, dh, rd, out)
    assert res is out
    delta = Counter(cb.launches)
    delta.subtract(before)
    per_level = {"mg_smooth_first": 1, "mg_smooth": 2 * MG.SWEEPS - 1, "mg_residual": 1, "mg_restrict": 1,
                 "mg_prolong_add": 1}
    want_launches = {k: v * (L - 1) for k, v in per_level.items()}
    want_launches["mg_coarse_solve"] = 1
    assert {k: v for k, v in delta.items() if v} == {k: v for k, v in want_launches.items() if v}
    got = host(cb, out)
    assert got.dtype == dtype
    np.testing.assert_array_equal(host(cb, rd), r)             # r is left alone
    want_cpu = np.empty_like(r)
    MG.vcycle(cpu, dc, r, want_cpu)
    _close(got, want_cpu, dtype, "V-cycle against the cpu backend's")
    want = reference_vcycle(h, r.astype(np.float64))
    _close(got, want, dtype, "V-cycle against the composed reference", tol=1e-12 if dtype == np.float64 else 2e-5)
    # a second call on the same work buffers gives the same bits (nothing left over from the first)
    out2 = cb.empty((3, grid.size), dtype)
    MG.vcycle(cb, dh, rd, out2)
    np.testing.assert_array_equal(host(cb, out2), got)


# -- poisson_solve on the backend ------------------------------------------------------------------------------

@pytest.fixture
def as_cupy(cb, monkeypatch):
    """``cb`` active as the ``cupy`` backend (the emulated backend is registered under that name)."""
    if hasattr(cb, "emulator"):
        monkeypatch.setitem(_backends._probe_cache, "cupy", _backends.BackendInfo("cupy", True, cb.device, ""))
        monkeypatch.setitem(_backends._instances, "cupy", cb)
    with gpudp.use_backend("cupy") as active:
        assert active is cb
        yield cb


def _two_regions(shape, boundary):
    """Random obstacles plus a solid wall across the last axis: two sealed regions when no axis is dirichlet."""
    s = _mask(shape, 21)
    s[..., shape[-1] // 2] = True
    return shape, boundary, s


SOLVE_CASES = {
    "24x30-dir-neu": ((24, 30), (D, N), _mask((24, 30), 22)),
    "two-regions-26x24-per-neu": _two_regions((26, 24), (P, N)),
    "9x8x10-per-neu-dir": ((9, 8, 10), (P, N, D), _mask((9, 8, 10), 23)),
    "small-6x7-neu-per": ((6, 7), (N, P), _mask((6, 7), 24)),
}


@pytest.mark.parametrize("name", list(SOLVE_CASES))
def test_poisson_solve_multigrid_matches_dense_pseudo_inverse(as_cupy, name):
    cb = as_cupy
    shape, boundary, solid = SOLVE_CASES[name]
    grid = gpudp.Grid(shape, spacing=tuple(0.5 + 0.25 * k for k in range(len(shape))), boundary=boundary,
                      solid=solid)
    Lp = RMAC.solid_pseudo_inverse(grid.shape, grid.spacing, grid.boundary, grid.solid)
    rng = np.random.default_rng(25)
    b = rng.standard_normal((2,) + shape) + 1.0
    before = Counter(cb.launches)
    x, info = gpudp.poisson_solve(cb.asarray(b), grid, tol=1e-12, preconditioner="multigrid", return_info=True)
    assert cb.is_own(x) and tuple(x.shape) == b.shape and x.dtype == np.float64
    assert info.preconditioner == "multigrid" and info.converged and info.residual <= 1e-12
    assert info.iterations <= 40, info
    delta = Counter(cb.launches)
    delta.subtract(before)
    assert delta["mg_apply"] > 0 and delta["mg_coarse_solve"] > 0
    assert (delta["mg_smooth"] > 0) == (grid.size > MG.COARSEST_CELLS)   # one level: the pseudo-inverse only
    xh = host(cb, x).reshape(2, -1)
    want = b.reshape(2, -1) @ Lp.T
    _close(xh, want, np.float64, "poisson_solve against the dense pseudo-inverse", tol=1e-8)
    assert np.all(xh[:, grid.solid.reshape(-1)] == 0.0)
    # auto picks multigrid on a grid with obstacles
    _, info = gpudp.poisson_solve(cb.asarray(b), grid, tol=1e-8, return_info=True)
    assert info.preconditioner == "multigrid"
    # float32: the solve in float32 arithmetic
    x32, info = gpudp.poisson_solve(cb.asarray(b.astype(np.float32)), grid, tol=1e-5,
                                    preconditioner="multigrid", return_info=True)
    assert x32.dtype == np.float32 and info.converged
    _close(host(cb, x32).reshape(2, -1), want, np.float32, "float32 poisson_solve", tol=1e-4)


def test_poisson_solve_multigrid_implicit_gradient(as_cupy):
    cb = as_cupy
    shape, boundary, solid = SOLVE_CASES["two-regions-26x24-per-neu"]
    grid = gpudp.Grid(shape, boundary=boundary, solid=solid)
    Lp = RMAC.solid_pseudo_inverse(grid.shape, grid.spacing, grid.boundary, grid.solid)
    rng = np.random.default_rng(26)
    b = rng.standard_normal((2,) + shape)
    g = rng.standard_normal((2,) + shape)
    bt = gpudp.tensor(cb.asarray(b), requires_grad=True)
    with gpudp.Tape() as tape:
        x = gpudp.poisson_solve(bt, grid, tol=1e-12, preconditioner="multigrid")
    tape.backward(x, grad=cb.asarray(g))
    gb = host(cb, bt.grad).reshape(2, -1)
    _close(gb, g.reshape(2, -1) @ Lp, np.float64, "implicit gradient (L⁺)ᵀ g", tol=1e-8)
    assert np.all(gb[:, grid.solid.reshape(-1)] == 0.0)
