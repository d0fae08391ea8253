"""Kernel-level tests of MAC (staggered) advection and interpolation on the ``cupy`` backend (``kernels/mac.cu``,
``gpudp/backends/cupy_backend/mac.py``).

Every test runs on the backend object of ``test_cupy_backend``'s ``cb`` fixture: on a real GPU (marker ``gpu``)
and through the CUDA host emulator (``tests/cuda_host``; argument types checked against the C signatures).
References: the float64 NumPy reference of DESIGN.md §6 (``reference_advect_mac``) and, on periodic grids,
jax-cfd's formulas in it; adjoints by dot-product tests ``<J v, w> = <v, Jᵀ w>``, exact where the map is linear
(in ``q``; interpolation) and against central finite differences for the velocity (the step is piecewise
polynomial in ``u``), and by one-sided differences at exact upwind ties ``w = 0`` (the ``w > 0`` branch).
"""
import itertools
from collections import Counter

import numpy as np
import pytest

import gpudp
from gpudp.geometry import geometry

import reference_advect_mac as R
from reference_mac import face_shapes
from test_cupy_backend import cb, dev, host  # noqa: F401  (cb: the gpu / emulated backend fixture)

P, D, N = "periodic", "dirichlet", "neumann"
KINDS = (P, D, N)
# every boundary kind in 1-D, every per-axis mix in 2-D, a spread in 3-D, and axes of one or two cells
CASES = [((7,), (k,)) for k in KINDS] + [((2,), (P,)), ((1,), (N,))]
CASES += [((4, 5), b) for b in itertools.product(KINDS, repeat=2)]
CASES += [((1, 4), (D, P)), ((3, 1), (N, P))]
CASES += [((3, 4, 5), b) for b in [(P, P, P), (D, D, D), (N, N, N), (N, P, D), (D, N, P), (P, D, N)]]
CASES += [((2, 1, 3), (N, D, P))]
IDS = ["x".join(map(str, s)) + "-" + "".join(b[0] for b in bnd) for s, bnd in CASES]
DT = 0.07
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
GRIDS = pytest.mark.parametrize("shape,boundary", CASES, ids=IDS)


class Case:
    """A grid of the tests with its geometry, face shapes and random data in the kernels' layouts."""

    def __init__(self, shape, boundary, seed=0):
        self.shape, self.boundary = tuple(shape), tuple(boundary)
        self.spacing = tuple(0.5 + 0.25 * k for k in range(len(shape)))
        self.grid = gpudp.Grid(shape, spacing=self.spacing, boundary=boundary)
        self.geom = geometry(self.grid)
        self.fshapes = face_shapes(self.shape, self.boundary)
        self.n = int(np.prod(shape))
        self.rng = np.random.default_rng(seed)

    def cells(self, Bu, F):
        return self.rng.standard_normal((Bu, F, self.n))

    def faces(self, lead):
        return tuple(self.rng.standard_normal(lead + (int(np.prod(s)),)) for s in self.fshapes)

    def velocity(self, Bu, zeros=True):
        """Random faces in [-1, 1]; with ``zeros`` every fourth entry is exactly 0."""
        u = tuple(self.rng.uniform(-1.0, 1.0, (Bu, int(np.prod(s)))) for s in self.fshapes)
        if zeros:
            for c in u:
                c[:, ::4] = 0.0
        return u

    def tie_velocity(self, Bu):
        """Faces from {-0.5, 0, 0.5} (scaled per axis): many donor-cell velocities (single faces, and averages
        of two) are exactly 0, the others at least 0.25 · scale away from it."""
        return tuple(self.rng.choice([-0.5, 0.0, 0.5], (Bu, int(np.prod(s)))) * (1.0 + 0.3 * k)
                     for k, s in enumerate(self.fshapes))

    # unbatched views for the reference
    def grid_view(self, x):
        return x.reshape(self.shape)

    def face_view(self, faces, *index):
        return tuple(f[index].reshape(s) for f, s in zip(faces, self.fshapes))


def _tol(dtype):
    return 1e-12 if dtype == np.float64 else 2e-5


def _close(got, want, dtype, what):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max()) / scale
    assert err <= _tol(dtype), f"{what}: max relative error {err:.3e} > {_tol(dtype):g}"


def _dot(a, b):
    """Σ a·b over arrays or tuples of arrays, in float64."""
    if isinstance(a, tuple):
        return sum(_dot(x, y) for x, y in zip(a, b))
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def _scale(a, b):
    """Σ |a·b|: the size of the terms of ``_dot(a, b)``, for rounding tolerances."""
    if isinstance(a, tuple):
        return sum(_scale(x, y) for x, y in zip(a, b))
    return float(np.sum(np.abs(np.asarray(a, np.float64) * np.asarray(b, np.float64))))


def _assert_dot(lhs, rhs, scale, tol, what):
    assert abs(lhs - rhs) <= tol * max(1.0, scale), f"{what}: <J v, w> = {lhs!r} but <v, Jᵀ w> = {rhs!r}"


def _devt(cb, faces, dtype=None):
    return tuple(dev(cb, f if dtype is None else f.astype(dtype)) for f in faces)


def _hostt(cb, faces):
    return tuple(host(cb, f) for f in faces)


def _shift(u, v, eps):
    return tuple(a + eps * b for a, b in zip(u, v))


# -- reference results in the kernels' layouts ---------------------------------------------------------------

def _ref_cells(case, q, u, steps):
    """``q^0 … q^T`` of the reference, each ``(Bu, F, N)``."""
    Bu, F, _ = q.shape
    out = [np.asarray(q, np.float64)]
    for _ in range(steps):
        nxt = np.empty_like(out[-1])
        for b, f in itertools.product(range(Bu), range(F)):
            nxt[b, f] = R.advect_cells(case.grid_view(out[-1][b, f]), case.face_view(u, b), DT, case.shape,
                                       case.spacing, case.boundary).ravel()
        out.append(nxt)
    return out


def _ref_faces(case, q, u):
    Bu, F = q[0].shape[:2]
    out = tuple(np.empty(c.shape) for c in q)
    for b, f in itertools.product(range(Bu), range(F)):
        res = R.advect_faces(case.face_view(q, b, f), case.face_view(u, b), DT, case.shape, case.spacing,
                             case.boundary)
        for k, r in enumerate(res):
            out[k][b, f] = r.ravel()
    return out


# -- forward ------------------------------------------------------------------------------------------------

@DTYPES
@GRIDS
def test_cells_forward_matches_reference(cb, shape, boundary, dtype):
    case = Case(shape, boundary, seed=1)
    for Bu, F, steps, save in [(1, 1, 1, False), (2, 3, 1, True), (2, 2, 3, True), (1, 2, 3, False)]:
        q, u = case.cells(Bu, F), case.velocity(Bu)
        q, u = q.astype(dtype), tuple(c.astype(dtype) for c in u)
        before = Counter(cb.launches)
        out, states = cb.mac_advect_cells(dev(cb, q), _devt(cb, u), DT, case.geom, steps, save)
        assert cb.launches["mac_cells_forward"] - before["mac_cells_forward"] == steps   # one launch per step
        ref = _ref_cells(case, q, u, steps)
        what = f"Bu={Bu} F={F} steps={steps}"
        assert out.shape == q.shape and out.dtype == dtype, what
        _close(host(cb, out), ref[-1], dtype, "cells forward " + what)
        if save:
            assert states.shape == (steps,) + q.shape and states.dtype == dtype, what
            _close(host(cb, states), np.stack(ref[:-1]), dtype, "saved states " + what)
        else:
            assert states is None, what


@DTYPES
@GRIDS
def test_faces_forward_matches_reference(cb, shape, boundary, dtype):
    case = Case(shape, boundary, seed=2)
    Bu, F = 2, 2
    q, u = case.faces((Bu, F)), case.velocity(Bu)
    q, u = tuple(c.astype(dtype) for c in q), tuple(c.astype(dtype) for c in u)
    before = Counter(cb.launches)
    out = cb.mac_advect_faces(_devt(cb, q), _devt(cb, u), DT, case.geom)
    assert cb.launches["mac_faces_forward"] - before["mac_faces_forward"] == 1   # every component, one launch
    assert isinstance(out, tuple) and len(out) == len(shape)
    for k, (o, c) in enumerate(zip(out, q)):
        assert o.shape == c.shape and o.dtype == dtype, k
    ref = _ref_faces(case, q, u)
    for k in range(len(shape)):
        _close(host(cb, out[k]), ref[k], dtype, f"faces forward, component {k}")
    # self-advection: the velocity advects itself (F = 1)
    selfq = tuple(c[:, None, :] for c in u)
    out = cb.mac_advect_faces(_devt(cb, selfq), _devt(cb, u), DT, case.geom)
    ref = _ref_faces(case, selfq, u)
    for k in range(len(shape)):
        _close(host(cb, out[k]), ref[k], dtype, f"self-advection, component {k}")


@pytest.mark.parametrize("shape", [(6,), (4, 5), (3, 4, 5)], ids=["6", "4x5", "3x4x5"])
def test_periodic_steps_equal_jaxcfd_formulas(cb, shape):
    """On periodic grids one step is jax-cfd's ``q + dt·advect_upwind(q, u)`` (scalar and self-advection)."""
    case = Case(shape, (P,) * len(shape), seed=3)
    q, u = case.cells(1, 1), case.velocity(1, zeros=False)
    out, _ = cb.mac_advect_cells(dev(cb, q), _devt(cb, u), DT, case.geom, 1, False)
    want = R.jaxcfd_cells(case.grid_view(q[0, 0]), case.face_view(u, 0), DT, case.spacing)
    _close(host(cb, out)[0, 0], want.ravel(), np.float64, "cells vs jax-cfd")
    out = cb.mac_advect_faces(_devt(cb, tuple(c[:, None, :] for c in u)), _devt(cb, u), DT, case.geom)
    want = R.jaxcfd_self(case.face_view(u, 0), DT, case.spacing)
    for k in range(len(shape)):
        _close(host(cb, out[k])[0, 0], want[k].ravel(), np.float64, f"self-advection vs jax-cfd, component {k}")


# -- interpolation --------------------------------------------------------------------------------------------

@DTYPES
@GRIDS
def test_interpolation_and_transposes(cb, shape, boundary, dtype):
    case = Case(shape, boundary, seed=4)
    B, nd = 2, len(shape)
    u = tuple(c.astype(dtype) for c in case.faces((B,)))
    c = case.rng.standard_normal((B, case.n)).astype(dtype)
    centres = cb.mac_at_centers(_devt(cb, u), case.geom)
    assert centres.shape == (B, nd, case.n) and centres.dtype == dtype
    faces = cb.mac_at_faces(dev(cb, c), case.geom)
    assert len(faces) == nd
    for b in range(B):
        want = R.at_centers(case.face_view(u, b), shape, boundary)
        _close(host(cb, centres)[b], want.reshape(nd, -1), dtype, "at_centers")
        want = R.at_faces(case.grid_view(c[b]), shape, boundary)
        for k in range(nd):
            assert faces[k].shape == (B, u[k].shape[1]) and faces[k].dtype == dtype
            _close(host(cb, faces[k])[b], want[k].ravel(), dtype, f"at_faces, component {k}")
    # transposes: <A x, y> = <x, Aᵀ y>
    tol = 1e-13 if dtype == np.float64 else 1e-5
    gc = case.rng.standard_normal((B, nd, case.n)).astype(dtype)
    gu = cb.mac_at_centers_adjoint(dev(cb, gc), case.geom)
    assert all(x.shape == y.shape and x.dtype == dtype for x, y in zip(gu, u))
    _assert_dot(_dot(host(cb, centres), gc), _dot(u, _hostt(cb, gu)), _scale(host(cb, centres), gc), tol,
                "at_centers transpose")
    gf = tuple(case.rng.standard_normal(f.shape).astype(dtype) for f in faces)
    gcell = cb.mac_at_faces_adjoint(_devt(cb, gf), case.geom)
    assert gcell.shape == c.shape and gcell.dtype == dtype
    _assert_dot(_dot(_hostt(cb, faces), gf), _dot(c, host(cb, gcell)), _scale(_hostt(cb, faces), gf), tol,
                "at_faces transpose")


# -- adjoints: dot-product tests --------------------------------------------------------------------------------

@GRIDS
def test_cells_adjoint_dot_products(cb, shape, boundary):
    case = Case(shape, boundary, seed=5)
    Bu, F = 2, 2
    g = cb.mac_advect_cells_adjoint
    for steps in (1, 3):
        what = f"steps={steps}"
        # w.r.t. q: linear, exact (velocities with exact zeros)
        u = case.velocity(Bu)
        v, w = case.cells(Bu, F), case.cells(Bu, F)
        Jv, _ = cb.mac_advect_cells(dev(cb, v), _devt(cb, u), DT, case.geom, steps, False)
        JTw, gu = g(dev(cb, w), None, _devt(cb, u), DT, case.geom, steps, True, False)
        assert gu is None and JTw.shape == v.shape
        _assert_dot(_dot(host(cb, Jv), w), _dot(v, host(cb, JTw)), _scale(host(cb, Jv), w), 1e-12, "q " + what)
        # w.r.t. u: central differences (polynomial of degree ``steps`` in u; no exact ties)
        u = case.velocity(Bu, zeros=False)
        q = case.cells(Bu, F)
        du = case.faces((Bu,))
        _, states = cb.mac_advect_cells(dev(cb, q), _devt(cb, u), DT, case.geom, steps, True)
        gq, gu = g(dev(cb, w), states, _devt(cb, u), DT, case.geom, steps, False, True)
        assert gq is None and len(gu) == len(shape)
        assert all(x.shape == y.shape for x, y in zip(gu, u))
        eps = 1e-6
        plus, _ = cb.mac_advect_cells(dev(cb, q), _devt(cb, _shift(u, du, eps)), DT, case.geom, steps, False)
        minus, _ = cb.mac_advect_cells(dev(cb, q), _devt(cb, _shift(u, du, -eps)), DT, case.geom, steps, False)
        fd = (host(cb, plus) - host(cb, minus)) / (2 * eps)
        _assert_dot(_dot(fd, w), _dot(du, _hostt(cb, gu)), _scale(fd, w), 1e-7, "u " + what)


@GRIDS
def test_faces_adjoint_dot_products(cb, shape, boundary):
    case = Case(shape, boundary, seed=6)
    Bu, F = 2, 2
    # w.r.t. q: linear, exact
    u = case.velocity(Bu)
    v, w = case.faces((Bu, F)), case.faces((Bu, F))
    Jv = _hostt(cb, cb.mac_advect_faces(_devt(cb, v), _devt(cb, u), DT, case.geom))
    JTw, gu = cb.mac_advect_faces_adjoint(_devt(cb, w), _devt(cb, v), _devt(cb, u), DT, case.geom, True, False)
    assert gu is None and all(x.shape == y.shape for x, y in zip(JTw, v))
    _assert_dot(_dot(Jv, w), _dot(v, _hostt(cb, JTw)), _scale(Jv, w), 1e-12, "q")
    # w.r.t. u: central differences (linear in u away from ties)
    u = case.velocity(Bu, zeros=False)
    du = case.faces((Bu,))
    eps = 1e-6
    gq, gu = cb.mac_advect_faces_adjoint(_devt(cb, w), _devt(cb, v), _devt(cb, u), DT, case.geom, False, True)
    assert gq is None and all(x.shape == y.shape for x, y in zip(gu, u))
    plus = _hostt(cb, cb.mac_advect_faces(_devt(cb, v), _devt(cb, _shift(u, du, eps)), DT, case.geom))
    minus = _hostt(cb, cb.mac_advect_faces(_devt(cb, v), _devt(cb, _shift(u, du, -eps)), DT, case.geom))
    fd = tuple((a - b) / (2 * eps) for a, b in zip(plus, minus))
    _assert_dot(_dot(fd, w), _dot(du, _hostt(cb, gu)), _scale(fd, w), 1e-7, "u")
    # self-advection: the caller passes u as q and u and adds the two gradients (quadratic in u)
    ws = tuple(x[:, :1] for x in w)
    selfq = tuple(c[:, None, :] for c in u)
    gq, gu = cb.mac_advect_faces_adjoint(_devt(cb, ws), _devt(cb, selfq), _devt(cb, u), DT, case.geom, True, True)
    total = tuple(host(cb, a)[:, 0] + host(cb, b) for a, b in zip(gq, gu))

    def step(uu):
        return _hostt(cb, cb.mac_advect_faces(_devt(cb, tuple(c[:, None, :] for c in uu)), _devt(cb, uu), DT,
                                              case.geom))

    fd = tuple((a - b) / (2 * eps) for a, b in zip(step(_shift(u, du, eps)), step(_shift(u, du, -eps))))
    _assert_dot(_dot(fd, ws), _dot(du, total), _scale(fd, ws), 1e-7, "self-advection")


@GRIDS
def test_adjoints_at_exact_ties_take_the_positive_branch(cb, shape, boundary):
    """Where a donor-cell velocity is exactly 0 the velocity gradient is that of the w > 0 branch: it equals
    the one-sided difference along a direction that makes every tie positive (the step is linear in u for
    fixed branches, so the difference is exact to rounding)."""
    case = Case(shape, boundary, seed=7)
    Bu, F = 2, 2
    u = case.tie_velocity(Bu)
    du = tuple(case.rng.uniform(0.2, 1.0, c.shape) for c in u)   # raises every tie above 0
    eps = 1e-7
    # cells
    q, w = case.cells(Bu, F), case.cells(Bu, F)
    base, states = cb.mac_advect_cells(dev(cb, q), _devt(cb, u), DT, case.geom, 1, True)
    plus, _ = cb.mac_advect_cells(dev(cb, q), _devt(cb, _shift(u, du, eps)), DT, case.geom, 1, False)
    _, gu = cb.mac_advect_cells_adjoint(dev(cb, w), states, _devt(cb, u), DT, case.geom, 1, False, True)
    fd = (host(cb, plus) - host(cb, base)) / eps
    _assert_dot(_dot(fd, w), _dot(du, _hostt(cb, gu)), _scale(fd, w), 1e-8, "cells")
    # staggered q advected by u
    Q, W = case.faces((Bu, F)), case.faces((Bu, F))
    base = _hostt(cb, cb.mac_advect_faces(_devt(cb, Q), _devt(cb, u), DT, case.geom))
    plus = _hostt(cb, cb.mac_advect_faces(_devt(cb, Q), _devt(cb, _shift(u, du, eps)), DT, case.geom))
    _, gu = cb.mac_advect_faces_adjoint(_devt(cb, W), _devt(cb, Q), _devt(cb, u), DT, case.geom, False, True)
    fd = tuple((a - b) / eps for a, b in zip(plus, base))
    _assert_dot(_dot(fd, W), _dot(du, _hostt(cb, gu)), _scale(fd, W), 1e-8, "faces")


@pytest.mark.parametrize("shape,boundary", [((7,), (N,)), ((4, 5), (D, N)), ((3, 4, 5), (N, P, D))],
                         ids=["7-n", "4x5-dn", "3x4x5-npd"])
def test_float32_adjoints_match_float64(cb, shape, boundary):
    case = Case(shape, boundary, seed=8)
    Bu, F, steps = 2, 2, 3
    q, u, g = case.cells(Bu, F), case.velocity(Bu), case.cells(Bu, F)
    Q, G = case.faces((Bu, F)), case.faces((Bu, F))
    results = {}
    for dtype in (np.float64, np.float32):
        ud = _devt(cb, u, dtype)
        _, states = cb.mac_advect_cells(dev(cb, q.astype(dtype)), ud, DT, case.geom, steps, True)
        gq, gu = cb.mac_advect_cells_adjoint(dev(cb, g.astype(dtype)), states, ud, DT, case.geom, steps, True, True)
        gQ, gU = cb.mac_advect_faces_adjoint(_devt(cb, G, dtype), _devt(cb, Q, dtype), ud, DT, case.geom, True, True)
        results[dtype] = [host(cb, gq)] + [host(cb, x) for x in gu + gQ + gU]
        for x in results[dtype]:
            assert x.dtype == dtype
    for k, (lo, hi) in enumerate(zip(results[np.float32], results[np.float64])):
        err = np.abs(lo - hi).max() / max(1.0, np.abs(hi).max())
        assert err <= 1e-5, f"result {k}: float32 vs float64 relative error {err:.2e}"


# -- launches, greedy gradients, inputs ------------------------------------------------------------------------

def test_cells_adjoint_launches_only_what_is_needed(cb):
    case = Case((4, 5), (D, N), seed=9)
    Bu, F, steps = 2, 2, 3
    q, u, g = case.cells(Bu, F), case.velocity(Bu), case.cells(Bu, F)
    ud = _devt(cb, u)
    _, states = cb.mac_advect_cells(dev(cb, q), ud, DT, case.geom, steps, True)
    results = {}
    for need_q, need_u in [(True, False), (False, True), (True, True)]:
        before = Counter(cb.launches)
        gq, gu = cb.mac_advect_cells_adjoint(dev(cb, g), states if need_u else None, ud, DT, case.geom, steps,
                                             need_q, need_u)
        ran = Counter(cb.launches) - before
        assert ran["mac_cells_adjoint_u"] == (steps if need_u else 0)
        assert ran["mac_cells_adjoint_q"] == (steps if need_q else steps - 1)   # q^0's gradient only when asked
        assert (gq is None) != need_q and (gu is None) != need_u
        results[need_q, need_u] = (gq, gu)
    np.testing.assert_array_equal(host(cb, results[True, True][0]), host(cb, results[True, False][0]))
    for a, b in zip(results[True, True][1], results[False, True][1]):
        np.testing.assert_array_equal(host(cb, a), host(cb, b))
    assert cb.mac_advect_cells_adjoint(dev(cb, g), None, ud, DT, case.geom, steps, False, False) == (None, None)
    with pytest.raises(ValueError, match="saved states"):
        cb.mac_advect_cells_adjoint(dev(cb, g), None, ud, DT, case.geom, steps, False, True)


def test_inputs_are_not_modified(cb):
    case = Case((3, 4, 5), (N, D, P), seed=10)
    Bu, F = 2, 2
    q, u, g = case.cells(Bu, F), case.velocity(Bu), case.cells(Bu, F)
    Q, G = case.faces((Bu, F)), case.faces((Bu, F))
    c, gc = case.rng.standard_normal((Bu, case.n)), case.rng.standard_normal((Bu, len(case.shape), case.n))
    qd, ud, gd, Qd, Gd, cd, gcd = (dev(cb, q), _devt(cb, u), dev(cb, g), _devt(cb, Q), _devt(cb, G), dev(cb, c),
                                   dev(cb, gc))
    _, states = cb.mac_advect_cells(qd, ud, DT, case.geom, 3, True)
    cb.mac_advect_cells_adjoint(gd, states, ud, DT, case.geom, 3, True, True)
    cb.mac_advect_faces(Qd, ud, DT, case.geom)
    cb.mac_advect_faces_adjoint(Gd, Qd, ud, DT, case.geom, True, True)
    cb.mac_at_centers(ud, case.geom)
    cb.mac_at_centers_adjoint(gcd, case.geom)
    cb.mac_at_faces(cd, case.geom)
    cb.mac_at_faces_adjoint(ud, case.geom)
    np.testing.assert_array_equal(host(cb, qd), q)
    np.testing.assert_array_equal(host(cb, gd), g)
    np.testing.assert_array_equal(host(cb, cd), c)
    np.testing.assert_array_equal(host(cb, gcd), gc)
    for got, want in zip(_hostt(cb, ud) + _hostt(cb, Qd) + _hostt(cb, Gd), u + Q + G):
        np.testing.assert_array_equal(got, want)
