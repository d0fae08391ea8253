"""Obstacles (DESIGN.md §6): ``Grid(solid=...)``, the per-grid facts (open faces, sealed fluid regions), and the
obstacle-aware spatial_gradient / laplace / divergence, poisson_solve and project with their adjoints.

References: the dense float64 matrices of ``tests/reference_mac.py`` (obstacle-aware ``G``, ``L``, the per-region
pseudo-inverse and a flood-fill of the regions), dot-product tests and ``gpudp.gradcheck``. Runs on every backend
of the ``backend`` fixture below: ``cpu``, ``numba-cuda`` (under the CUDA simulator, tiny grids), ``cupy`` on a
GPU, and ``cupy-emulated``: the cupy backend's own wrappers and CUDA C kernels run on the CPU by the host
emulator of ``tests/cuda_host`` (as in ``test_cupy_backend.py``), activated as the ``cupy`` backend.
"""
import itertools
import pickle
import sys

import numpy as np
import pytest

import gpudp
from gpudp import backends as _backends
from gpudp.geometry import geometry
from gpudp.ops import masked_cg, multigrid
from gpudp.ops.obstacles import obstacle_facts

import reference_mac as R
from conftest import BACKEND_PARAMS, BackendHarness, activate_backend

P, D, N = "periodic", "dirichlet", "neumann"
KINDS = (P, D, N)
# every boundary rule per axis: 1-D, all 2-D pairs, and a spread of 3-D mixes (random masks, ~30 % solid)
CASES = [((7,), (k,)) for k in KINDS]
CASES += [((5, 6), b) for b in itertools.product(KINDS, repeat=2)]
CASES += [((3, 4, 5), (k,) * 3) for k in KINDS]
CASES += [((3, 4, 5), (P, N, D)), ((3, 4, 5), (N, P, N)), ((3, 4, 5), (D, D, P))]
CASE_IDS = ["x".join(map(str, s)) + "-" + "-".join(b[:3] for b in bnd) for s, bnd in CASES]
# run under the CUDA simulator (every GPU thread a Python thread), on grids of at most 3 cells per axis
SIM_CASES = {((7,), (D,)), ((5, 6), (N, N)), ((5, 6), (P, D)), ((3, 4, 5), (P, N, D))}


def make_mask(shape, seed, fraction=0.3):
    m = np.random.default_rng(seed).random(shape) < fraction
    if m.all():
        m.flat[0] = False
    if not m.any():
        m.flat[m.size // 2] = True
    return m


def make_grid(shape, boundary, solid, seed=0):
    rng = np.random.default_rng(seed)
    return gpudp.Grid(shape, spacing=tuple(0.5 + rng.random() for _ in shape), boundary=boundary, solid=solid)


def two_regions_2d():
    """A solid column splits a (periodic, neumann) grid into two sealed regions."""
    s = np.zeros((3, 3), bool)
    s[:, 1] = True
    return (3, 3), (P, N), s


def pocket_2d():
    """A solid ring on a (dirichlet, neumann) grid: a sealed 2 × 2 pocket inside, an open region outside."""
    s = np.zeros((6, 6), bool)
    s[1, 1:5] = s[4, 1:5] = s[1:5, 1] = s[1:5, 4] = True
    return (6, 6), (D, N), s


def two_regions_3d():
    """A solid plane splits a (neumann, neumann, periodic) grid into two sealed regions."""
    s = np.zeros((2, 3, 2), bool)
    s[:, 1, :] = True
    return (2, 3, 2), (N, N, P), s


STRUCTURED = {"two-regions-2d": two_regions_2d, "pocket-2d": pocket_2d, "two-regions-3d": two_regions_3d}


def dense(grid):
    """``D``, ``W G``, ``D W G``, the per-region pseudo-inverse and the open-face mask ``W`` (stacked)."""
    args = (grid.shape, grid.spacing, grid.boundary)
    s = grid.solid
    return (R.divergence_matrix(*args), R.solid_gradient_matrix(*args, s), R.solid_laplace_matrix(*args, s),
            R.solid_pseudo_inverse(*args, s), R.open_face_mask(grid.shape, grid.boundary, s))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def faces_vec(backend, faces, shape, lead=()):
    return R.stack_faces([backend.to_numpy(f) for f in faces], shape).reshape(lead + (-1,))


@pytest.fixture(autouse=True)
def _multigrid_levels_down_to_a_few_cells(monkeypatch):
    """The test grids are small: let the multigrid hierarchy go down to a few cells so that the V-cycle's
    smoothing and transfers run (at the default coarsest size the pseudo-inverse alone would solve them)."""
    monkeypatch.setattr(multigrid, "COARSEST_CELLS", 4)


# -- the backend fixture, with the emulated cupy backend ------------------------------------------------------

_EMULATED = {}


def _emulated_cupy(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the CUDA host emulator runs on Linux only")
    from cuda_host.emulator import EmulatedCupyBackend, compiler
    if compiler() is None:
        pytest.skip("no host C++ compiler (g++/c++) for the CUDA host emulator")
    if "backend" not in _EMULATED:
        _EMULATED["backend"] = EmulatedCupyBackend()
    impl = _EMULATED["backend"]
    monkeypatch.setitem(_backends._probe_cache, "cupy", _backends.BackendInfo("cupy", True, impl.device, ""))
    monkeypatch.setitem(_backends._instances, "cupy", impl)
    return impl


@pytest.fixture(params=BACKEND_PARAMS + [pytest.param("cupy-emulated", id="cupy-emulated")])
def backend(request, monkeypatch):
    """``conftest.backend`` plus ``cupy-emulated`` (the cupy backend on NumPy arrays, kernels emulated)."""
    name = request.param
    if name == "cupy-emulated":
        impl = _emulated_cupy(monkeypatch)
        with gpudp.use_backend("cupy") as active:
            assert active is impl
            yield BackendHarness("cupy", impl)
        return
    yield from activate_backend(name)


def case_grid(backend, shape, boundary, seed=0):
    backend.simulate_only((shape, boundary) in SIM_CASES)
    shape = backend.small(shape)
    return make_grid(shape, boundary, make_mask(shape, seed), seed)


# -- Grid(solid=...) ---------------------------------------------------------------------------------------------

def test_mask_is_a_read_only_copy_and_accepts_0_1_values():
    m = np.zeros((4, 5), bool)
    m[1, 2] = True
    g = gpudp.Grid((4, 5), solid=m)
    m[0, 0] = True                           # the caller's array is not the grid's
    assert g.solid.dtype == bool and g.solid.shape == (4, 5) and not g.solid.flags.writeable
    assert g.solid.sum() == 1 and g.solid[1, 2]
    with pytest.raises(ValueError):
        g.solid[0, 0] = True
    assert gpudp.Grid((4, 5)).solid is None
    want = gpudp.Grid((4, 5), solid=g.solid)
    for alt in (g.solid.astype(np.int8), g.solid.astype(np.uint16), g.solid.astype(np.float32),
                g.solid.astype(float).tolist()):
        assert gpudp.Grid((4, 5), solid=alt) == want
    one_d = gpudp.Grid(6, solid=[0, 1, 0, 0, 0, 0])
    assert one_d.solid.tolist() == [False, True, False, False, False, False]


@pytest.mark.parametrize("solid,match", [
    (np.zeros((5, 4), bool), r"shape \(5, 4\); expected the grid's shape \(4, 5\)"),
    (np.zeros(20, bool), r"shape \(20,\); expected the grid's shape \(4, 5\)"),
    (np.zeros((4, 5), complex), r"dtype complex128; expected a boolean array"),
    (np.full((4, 5), "a"), r"dtype <U1; expected a boolean array"),
    (np.full((4, 5), None), r"dtype object"),
    (np.full((4, 5), 2, np.int64), r"values other than 0 and 1 \(e\.g\. \[2, 2, 2, 2\]\)"),
    (np.full((4, 5), 0.5), r"values other than 0 and 1"),
    (np.full((4, 5), np.nan), r"values other than 0 and 1"),
    (np.ones((4, 5), bool), r"all 20 cells as solid"),
    (np.ones((4, 5), np.int32), r"all 20 cells as solid"),
], ids=["transposed", "flat", "complex", "str", "object", "two", "half", "nan", "all-solid", "all-solid-int"])
def test_mask_errors_say_what_was_given_and_expected(solid, match):
    with pytest.raises(gpudp.GridError, match=match):
        gpudp.Grid((4, 5), boundary="neumann", solid=solid)


def test_equality_hash_repr_and_pickle_include_the_mask():
    m = make_mask((4, 5), 1)
    a = gpudp.Grid((4, 5), spacing=0.5, boundary=(P, N), solid=m)
    b = gpudp.Grid((4, 5), spacing=0.5, boundary=(P, N), solid=m.copy())
    other = m.copy()
    other[0, 0] = not other[0, 0]
    c = gpudp.Grid((4, 5), spacing=0.5, boundary=(P, N), solid=other)
    plain = gpudp.Grid((4, 5), spacing=0.5, boundary=(P, N))
    empty = gpudp.Grid((4, 5), spacing=0.5, boundary=(P, N), solid=np.zeros((4, 5), bool))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != c and a != plain and plain != empty and len({a, c, plain, empty}) == 4
    assert f"solid=<{int(m.sum())} of 20 cells>" in repr(a) and "solid" not in repr(plain)
    obstacle_facts(a)                        # cached facts travel nowhere: the value pickles
    for g in (a, plain):
        back = pickle.loads(pickle.dumps(g))
        assert back == g and hash(back) == hash(g) and repr(back) == repr(g)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(a)).solid, m)
    assert not pickle.loads(pickle.dumps(a)).solid.flags.writeable


def test_geometry_and_is_singular():
    m = make_mask((3, 4), 2)
    g = gpudp.Grid((3, 4), boundary=(D, N), solid=m)
    geo = geometry(g)
    assert geo.shape3 == (1, 3, 4) and geo.solid.shape == (1, 3, 4) and not geo.solid.flags.writeable
    np.testing.assert_array_equal(geo.solid[0], m)
    assert geometry(g) is geo
    shape, boundary, s = pocket_2d()
    assert gpudp.Grid(shape, boundary=boundary, solid=s).is_singular      # the sealed pocket
    assert not gpudp.Grid(shape, boundary=boundary).is_singular
    s2 = np.zeros(shape, bool)
    s2[1:3, 1:3] = True
    assert not gpudp.Grid(shape, boundary=boundary, solid=s2).is_singular  # every region touches dirichlet
    assert gpudp.Grid(shape, boundary=N, solid=s2).is_singular


# -- the per-grid facts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape,boundary", CASES + [s()[:2] for s in STRUCTURED.values()],
                         ids=CASE_IDS + list(STRUCTURED))
def test_open_faces_and_regions_match_the_flood_fill_reference(shape, boundary, seed):
    structured = {s()[:2]: s()[2] for s in STRUCTURED.values()}
    solid = structured[(shape, boundary)] if (shape, boundary) in structured else make_mask(shape, seed, 0.35)
    g = gpudp.Grid(shape, boundary=boundary, solid=solid)
    f = obstacle_facts(g)
    want_open = R.split_faces(R.open_face_mask(shape, boundary, solid), shape, boundary)
    for k in range(len(shape)):
        np.testing.assert_array_equal(f.open_faces[k], want_open[k].astype(bool))
        np.testing.assert_array_equal(f.closed_faces[k], ~want_open[k].astype(bool))
    labels, sealed = R.fluid_regions(shape, boundary, solid)
    got = f.region.reshape(-1)
    assert f.n_regions == len(sealed) and f.n_sealed == int(sealed.sum())
    np.testing.assert_array_equal(got < 0, labels < 0)
    # the same partition of the fluid cells, and the same regions sealed
    pairs = {(int(a), int(b)) for a, b in zip(got[labels >= 0], labels[labels >= 0])}
    assert len(pairs) == f.n_regions == len({a for a, _ in pairs})
    for a, b in pairs:
        assert (f.sealed.reshape(-1)[got == a] >= 0).all() == sealed[b]
        assert (f.sealed.reshape(-1)[got == a] >= 0).any() == sealed[b]
    assert f.sealed_sizes.sum() == sum((labels == k).sum() for k in np.flatnonzero(sealed))
    assert obstacle_facts(g) is f


def test_facts_and_device_copies_are_made_once_per_grid(backend):
    shape, boundary, s = two_regions_2d()
    g = gpudp.Grid(shape, boundary=boundary, solid=s)
    p = backend.asarray(np.random.default_rng(0).standard_normal(shape))
    gpudp.spatial_gradient(p, g)
    gpudp.poisson_solve(gpudp.laplace(p, g), g, tol=1e-8)
    f = obstacle_facts(g)
    first = dict(f._cache)     # device copies and host values derived from the facts
    assert first, "the operators keep their device copies with the grid's facts"
    gpudp.spatial_gradient(p, g)
    gpudp.poisson_solve(gpudp.laplace(p, g), g, tol=1e-8)
    assert obstacle_facts(g) is f and f._cache.keys() == first.keys()
    assert all(f._cache[k] is v for k, v in first.items())


# -- difference operators ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,boundary", CASES, ids=CASE_IDS)
def test_operators_and_adjoints_match_dense_reference(backend, shape, boundary, dtype, batched):
    grid = case_grid(backend, shape, boundary)
    shape = grid.shape
    Dm, Gs, Ls, _, W = dense(grid)
    lead = (2,) if batched else ()
    rng = np.random.default_rng(3)
    p = rng.standard_normal(lead + shape).astype(dtype)
    u = R.split_faces(rng.standard_normal(lead + (Dm.shape[1],)).astype(dtype), shape, boundary, lead)
    pv, uv = p.reshape(lead + (-1,)).astype(np.float64), R.stack_faces(u, shape).reshape(lead + (-1,))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    pd, ud = backend.asarray(p), tuple(backend.asarray(c) for c in u)
    grad = gpudp.spatial_gradient(pd, grid)
    got_g = faces_vec(backend, grad, shape, lead)
    assert all(c.dtype == dtype and backend.is_own(c) for c in grad)
    assert rel(got_g, pv @ Gs.T) <= tol
    assert np.all(got_g[..., W == 0] == 0.0)                  # exactly 0 on every closed face
    got_l = backend.to_numpy(gpudp.laplace(pd, grid)).reshape(lead + (-1,))
    assert rel(got_l, pv @ Ls.T) <= tol
    assert np.all(got_l[..., grid.solid.reshape(-1)] == 0.0)  # 0 in solid cells
    assert rel(backend.to_numpy(gpudp.divergence(ud, grid)).reshape(lead + (-1,)), uv @ Dm.T) <= tol
    # adjoints: the transposed matrices
    gf = R.split_faces(rng.standard_normal(lead + (Dm.shape[1],)).astype(dtype), shape, boundary, lead)
    gc = rng.standard_normal(lead + shape).astype(dtype)
    gfv, gcv = R.stack_faces(gf, shape).reshape(lead + (-1,)), gc.reshape(lead + (-1,)).astype(np.float64)
    total = 0.0
    for k in range(grid.ndim):
        _, vjp_fn = gpudp.vjp(lambda a, k=k: gpudp.spatial_gradient(a, grid)[k], pd)
        total = total + backend.to_numpy(vjp_fn(backend.asarray(gf[k]))[0]).astype(np.float64)
    assert rel(total.reshape(lead + (-1,)), gfv @ Gs) <= tol
    _, vjp_fn = gpudp.vjp(lambda a: gpudp.laplace(a, grid), pd)
    assert rel(backend.to_numpy(vjp_fn(backend.asarray(gc))[0]).reshape(lead + (-1,)), gcv @ Ls) <= tol
    _, vjp_fn = gpudp.vjp(lambda *a: gpudp.divergence(a, grid), *ud)
    assert rel(faces_vec(backend, vjp_fn(backend.asarray(gc)), shape, lead), gcv @ Dm) <= tol


@pytest.mark.parametrize("shape,boundary", CASES, ids=CASE_IDS)
def test_dot_products(backend, shape, boundary):
    """⟨J v, w⟩ = ⟨v, Jᵀ w⟩ for spatial_gradient, laplace and divergence on a grid with obstacles."""
    grid = case_grid(backend, shape, boundary, seed=4)
    rng = np.random.default_rng(5)
    v = rng.standard_normal(grid.shape)
    wf = tuple(rng.standard_normal(grid.face_shape(k)) for k in range(grid.ndim))
    wc = rng.standard_normal(grid.shape)
    vf = tuple(rng.standard_normal(grid.face_shape(k)) for k in range(grid.ndim))

    def check(fn, x, w):
        xs = x if isinstance(x, tuple) else (x,)
        out, vjp_fn = gpudp.vjp(lambda *a: fn(*a), *[backend.asarray(c) for c in xs])
        outs = out if isinstance(out, tuple) else (out,)
        ws = w if isinstance(w, tuple) else (w,)
        lhs = sum(float(np.sum(backend.to_numpy(o) * c)) for o, c in zip(outs, ws))
        back = vjp_fn(tuple(backend.asarray(c) for c in ws) if isinstance(w, tuple) else backend.asarray(w))
        rhs = sum(float(np.sum(backend.to_numpy(b) * c)) for b, c in zip(back, xs))
        assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + abs(rhs) + 1.0), (lhs, rhs)

    check(lambda p: gpudp.laplace(p, grid), v, wc)
    check(lambda *u: gpudp.divergence(u, grid), vf, wc)
    # spatial_gradient returns a tuple: check it component by component through a scalar seed on each
    for k in range(grid.ndim):
        check(lambda p, k=k: gpudp.spatial_gradient(p, grid)[k], v, wf[k])


def test_mask_of_no_solid_cells_changes_nothing(backend):
    """An all-fluid mask takes the obstacle code paths and must give the obstacle-free results."""
    shape, boundary = backend.small((5, 4)), (N, D)
    plain = gpudp.Grid(shape, spacing=(0.7, 1.2), boundary=boundary)
    masked = gpudp.Grid(shape, spacing=(0.7, 1.2), boundary=boundary, solid=np.zeros(shape, bool))
    rng = np.random.default_rng(6)
    p = backend.asarray(rng.standard_normal(shape))
    u = tuple(backend.asarray(rng.standard_normal(plain.face_shape(k))) for k in range(2))
    for a, b in zip(gpudp.spatial_gradient(p, masked), gpudp.spatial_gradient(p, plain)):
        np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=0, atol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(gpudp.laplace(p, masked)), backend.to_numpy(gpudp.laplace(p, plain)),
                               rtol=0, atol=1e-12)
    x1 = backend.to_numpy(gpudp.poisson_solve(p, masked, tol=1e-12))
    x2 = backend.to_numpy(gpudp.poisson_solve(p, plain, tol=1e-12))
    assert rel(x1, x2) <= 1e-9
    for a, b in zip(gpudp.project(u, masked, tol=1e-12), gpudp.project(u, plain, tol=1e-12)):
        assert rel(backend.to_numpy(a), backend.to_numpy(b)) <= 1e-9


# -- poisson_solve -------------------------------------------------------------------------------------------------

def check_solution(backend, grid, x, b, Lp, tol=1e-8):
    """``x`` against the dense per-region pseudo-inverse; 0 in solid cells, zero mean on sealed regions."""
    B = b.shape[0]
    xh = backend.to_numpy(x).reshape(B, -1)
    mean_tol = 1e-12 if xh.dtype == np.float64 else 1e-6
    xh = xh.astype(np.float64)
    want = b.reshape(B, -1) @ Lp.T
    assert rel(xh, want) <= tol
    assert np.all(xh[:, grid.solid.reshape(-1)] == 0.0)
    f = obstacle_facts(grid)
    lab = f.sealed.reshape(-1)
    for k in range(f.n_sealed):
        assert np.abs(xh[:, lab == k].mean(axis=1)).max() <= mean_tol * max(np.abs(xh).max(), 1e-300)


@pytest.mark.parametrize("preconditioner", [None, "jacobi", "spectral", "multigrid"])
@pytest.mark.parametrize("shape,boundary", CASES, ids=CASE_IDS)
def test_solve_matches_dense_pseudo_inverse(backend, shape, boundary, preconditioner):
    grid = case_grid(backend, shape, boundary, seed=7)
    *_, Lp, _ = dense(grid)
    rng = np.random.default_rng(8)
    b = rng.standard_normal((3,) + grid.shape)
    b[1] = 0.0                               # a zero right-hand side: x = 0, residual 0
    b[2] *= 1e3
    for x0 in (None, rng.standard_normal(b.shape)):
        x, info = gpudp.poisson_solve(backend.asarray(b), grid, tol=1e-12, preconditioner=preconditioner,
                                      x0=None if x0 is None else backend.asarray(x0), return_info=True)
        assert backend.is_own(x) and tuple(x.shape) == b.shape and x.dtype == np.float64
        assert info.converged and info.residual <= 1e-12 and info.iterations <= 10 * grid.size
        check_solution(backend, grid, x, b, Lp)
        np.testing.assert_array_equal(backend.to_numpy(x)[1], 0.0)


@pytest.mark.parametrize("preconditioner", [None, "jacobi", "spectral", "multigrid"])
@pytest.mark.parametrize("name", list(STRUCTURED))
def test_sealed_regions_and_pockets(backend, name, preconditioner):
    shape, boundary, solid = STRUCTURED[name]()
    backend.simulate_only(max(shape) <= 3)
    grid = make_grid(shape, boundary, solid, seed=9)
    f = obstacle_facts(grid)
    assert f.n_sealed == (1 if name == "pocket-2d" else 2) and f.n_regions == 2
    *_, Ls, Lp, _ = dense(grid)
    rng = np.random.default_rng(10)
    b = rng.standard_normal((2,) + shape) + 3.0          # nonzero region means: removed
    x, info = gpudp.poisson_solve(backend.asarray(b), grid, tol=1e-12, preconditioner=preconditioner,
                                  return_info=True)
    check_solution(backend, grid, x, b, Lp)
    # the residual is measured against Π b (solid cells dropped, sealed means removed)
    Pi = R.range_projection(shape, boundary, solid)
    bt = b.reshape(2, -1) @ Pi.T
    true = np.linalg.norm(backend.to_numpy(x).reshape(2, -1) @ Ls.T - bt, axis=1) / np.linalg.norm(bt, axis=1)
    assert true.max() <= 1e-10 and info.residual <= 1e-12


def test_right_hand_side_without_range_part_gives_zero(backend):
    """b only in solid cells plus a constant per sealed region: Π b = 0, so x = 0 with residual 0."""
    shape, boundary, solid = two_regions_2d()
    grid = gpudp.Grid(shape, boundary=boundary, solid=solid)
    b = np.where(solid, 5.0, 0.0) + np.where(np.arange(shape[1]) < 1, 1.5, -2.0)[None, :]
    x, info = gpudp.poisson_solve(backend.asarray(b), grid, return_info=True)
    np.testing.assert_array_equal(backend.to_numpy(x), 0.0)
    assert info == gpudp.SolveInfo(0, 0.0, True, "multigrid")


@pytest.mark.parametrize("preconditioner", [None, "jacobi", "multigrid"])
@pytest.mark.parametrize("shape,boundary", [((5, 6), (N, N)), ((5, 6), (P, D)), ((3, 4, 5), (P, N, D))],
                         ids=["5x6-neu-neu", "5x6-per-dir", "3x4x5-per-neu-dir"])
def test_implicit_gradient_matches_dense_reference_and_is_one_solve(backend, shape, boundary, preconditioner,
                                                                      monkeypatch):
    grid = case_grid(backend, shape, boundary, seed=11)
    *_, Lp, _ = dense(grid)
    rng = np.random.default_rng(12)
    b = rng.standard_normal((2,) + grid.shape)
    g = rng.standard_normal((2,) + grid.shape)
    solves = []
    original = masked_cg.cg_solve
    monkeypatch.setattr(masked_cg, "cg_solve", lambda *a, **k: solves.append(1) or original(*a, **k))
    bt = gpudp.tensor(backend.asarray(b), requires_grad=True)
    with gpudp.Tape() as tape:
        x = gpudp.poisson_solve(bt, grid, tol=1e-12, preconditioner=preconditioner)
    assert len(solves) == 1 and tape.memory_bytes == 0
    tape.backward(x, grad=backend.asarray(g))
    assert len(solves) == 2
    gb = backend.to_numpy(bt.grad).reshape(2, -1)
    assert rel(gb, g.reshape(2, -1) @ Lp) <= 1e-8                       # (L⁺)ᵀ g
    assert np.all(gb[:, grid.solid.reshape(-1)] == 0.0)


@pytest.mark.parametrize("preconditioner", [None, "jacobi", "spectral", "multigrid"])
def test_gradcheck_solve(backend, preconditioner):
    backend.simulate_only(False)  # many solves; the dense-reference test above covers the simulator
    shape, boundary, solid = two_regions_2d()
    grid = make_grid(shape, boundary, solid, seed=13)
    b = backend.asarray(np.random.default_rng(14).standard_normal(shape))
    # linear in b up to the solver tolerance: a large finite-difference step is exact
    assert gpudp.gradcheck(lambda v: gpudp.poisson_solve(v, grid, tol=1e-13, preconditioner=preconditioner),
                           [b], eps=1e-2)


@pytest.mark.parametrize("preconditioner", [None, "jacobi", "multigrid"])
def test_float32(backend, preconditioner):
    grid = case_grid(backend, (5, 6), (N, N), seed=15)
    *_, Lp, _ = dense(grid)
    b = np.random.default_rng(16).standard_normal((2,) + grid.shape)
    x, info = gpudp.poisson_solve(backend.asarray(b.astype(np.float32)), grid, tol=1e-5,
                                  preconditioner=preconditioner, return_info=True)
    assert x.dtype == np.float32 and info.converged
    check_solution(backend, grid, x, b, Lp, tol=1e-3)


def test_composed_solver_matches_the_compiled_one_and_check_every_changes_nothing():
    """The PCG composed from backend primitives (GPU backends) run on the cpu backend's kernels, against the
    cpu backend's compiled driver; converged systems stay frozen between host checks."""
    cpu = gpudp.get_backend("cpu")
    shape, boundary, solid = pocket_2d()
    grid = make_grid(shape, boundary, solid, seed=17)
    b = np.random.default_rng(18).standard_normal((3, grid.size))
    b[0] *= 1e-3
    for pre in (None, "jacobi"):
        want, it_want, res_want = cpu.cg_solve_masked(b, None, obstacle_facts(grid), 1e-11, 500, pre, 1)
        results = [masked_cg.composed_cg(cpu, b, None, grid, 1e-11, 500, pre, ce) for ce in (1, 7, 50)]
        for x, it, res in results:
            assert rel(x, want) <= 1e-8 and res <= 1e-11 and abs(it - it_want) <= 2
            np.testing.assert_array_equal(x, results[0][0])
            assert (it, res) == results[0][1:]


def test_solve_stops_at_maxiter_and_raises(backend):
    shape, boundary, solid = pocket_2d()
    backend.simulate_only(False)
    grid = gpudp.Grid(shape, boundary=boundary, solid=solid)
    b = backend.asarray(np.random.default_rng(19).standard_normal(shape))
    with pytest.raises(gpudp.SolveError, match="did not converge") as err:
        gpudp.poisson_solve(b, grid, tol=1e-12, maxiter=3)
    assert err.value.iterations == 3 and err.value.residual > 1e-12
    x, info = gpudp.poisson_solve(b, grid, tol=1e-12, maxiter=3, throw=False, return_info=True)
    assert not info.converged and info.iterations == 3 and np.all(np.isfinite(backend.to_numpy(x)))


@pytest.mark.slow
@pytest.mark.parametrize("preconditioner", [None, "jacobi"])
def test_cpu_parallel_driver_and_chunks(monkeypatch, preconditioner):
    """The parallel compilation of the cpu driver (large grids), on small grids with tiny chunks."""
    from gpudp.backends.cpu import difference as cpu_difference
    monkeypatch.setattr(cpu_difference, "PARALLEL_MIN_CELLS", 0)
    monkeypatch.setattr(cpu_difference, "CHUNK", 7)
    for name in ("two-regions-2d", "pocket-2d"):
        shape, boundary, solid = STRUCTURED[name]()
        grid = make_grid(shape, boundary, solid, seed=20)
        *_, Lp, _ = dense(grid)
        b = np.random.default_rng(21).standard_normal((2,) + shape)
        x = gpudp.poisson_solve(b, grid, tol=1e-12, preconditioner=preconditioner)
        check_solution(gpudp.get_backend("cpu"), grid, x, b, Lp)


def test_spectral_preconditioner_with_obstacles_converges_fast():
    """With obstacles "spectral" is the box's inverse restricted to the fluid cells: still exact CG (the dense
    comparisons above include it), and far fewer iterations than plain CG on a box with a small obstacle."""
    shape = (24, 20)
    x, y = np.meshgrid(np.arange(24) + 0.5, np.arange(20) + 0.5, indexing="ij")
    grid = gpudp.Grid(shape, boundary="neumann", solid=(x - 12) ** 2 + (y - 10) ** 2 < 9)
    b = np.random.default_rng(4).standard_normal(shape)
    x_plain, plain = gpudp.poisson_solve(b, grid, tol=1e-10, preconditioner=None, return_info=True)
    x_spec, spec = gpudp.poisson_solve(b, grid, tol=1e-10, preconditioner="spectral", return_info=True)
    assert spec.converged and spec.iterations * 4 < plain.iterations
    np.testing.assert_allclose(x_spec, x_plain, rtol=0, atol=1e-7 * np.abs(x_plain).max())
    u = tuple(np.random.default_rng(5).standard_normal(grid.face_shape(k)) for k in range(2))
    pu = gpudp.project(u, grid, tol=1e-10, preconditioner="spectral")
    assert np.abs(gpudp.divergence(pu, grid)).max() <= 1e-8 * np.abs(gpudp.divergence(u, grid)).max()


# -- project -------------------------------------------------------------------------------------------------------

def dense_projector(grid):
    """``P = W − W G L⁺ D W`` from the dense references (``W``: the open faces)."""
    Dm, Gs, _, Lp, W = dense(grid)
    return np.diag(W) - Gs @ Lp @ Dm @ np.diag(W), Dm, W


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("shape,boundary", CASES + [s()[:2] for s in STRUCTURED.values()],
                         ids=CASE_IDS + list(STRUCTURED))
def test_project_is_divergence_free_zero_on_closed_faces_and_matches_dense(backend, shape, boundary, batched):
    structured = {s()[:2]: s()[2] for s in STRUCTURED.values()}
    if (shape, boundary) in structured:
        backend.simulate_only(max(shape) <= 3)
        grid = make_grid(shape, boundary, structured[(shape, boundary)], seed=23)
    else:
        grid = case_grid(backend, shape, boundary, seed=23)
    shape = grid.shape
    lead = (2,) if batched else ()
    rng = np.random.default_rng(24)
    u = tuple(rng.standard_normal(lead + grid.face_shape(k)) for k in range(grid.ndim))
    out, info = gpudp.project(tuple(backend.asarray(c) for c in u), grid, tol=1e-10, return_info=True)
    assert info.converged and all(backend.is_own(c) for c in out)
    Pm, Dm, W = dense_projector(grid)
    got = faces_vec(backend, out, shape, lead)
    assert np.all(got[..., W == 0] == 0.0)                       # exactly 0 on closed faces
    uv = R.stack_faces(u, shape).reshape(lead + (-1,))
    # (the scale of u: in 1-D a divergence-free field between closed faces is 0)
    assert np.abs(got - uv @ Pm.T).max() <= 1e-8 * np.abs(uv).max()
    fluid = ~grid.solid.reshape(-1)
    div_before = np.abs((uv * W) @ Dm.T)[..., fluid].max()
    div_after = np.abs(backend.to_numpy(gpudp.divergence(out, grid)).reshape(lead + (-1,)))[..., fluid].max()
    assert div_after <= 1e-6 * div_before


@pytest.mark.parametrize("shape,boundary", [((5, 6), (N, N)), ((5, 6), (D, P)), ((3, 4, 5), (N, P, N))],
                         ids=["5x6-neu-neu", "5x6-dir-per", "3x4x5-neu-per-neu"])
def test_project_vjp_is_the_dense_transpose_and_passes_dot_product(backend, shape, boundary):
    grid = case_grid(backend, shape, boundary, seed=25)
    Pm, _, _ = dense_projector(grid)
    rng = np.random.default_rng(26)
    u = tuple(rng.standard_normal(grid.face_shape(k)) for k in range(grid.ndim))
    w = tuple(rng.standard_normal(grid.face_shape(k)) for k in range(grid.ndim))
    leaves = [gpudp.tensor(backend.asarray(c), requires_grad=True) for c in u]
    with gpudp.Tape() as tape:
        out = gpudp.project(tuple(leaves), grid, tol=1e-12)
        loss = (out[0] * backend.asarray(w[0])).sum()
        for k in range(1, grid.ndim):
            loss = loss + (out[k] * backend.asarray(w[k])).sum()
    tape.backward(loss)
    got = faces_vec(backend, [t.grad for t in leaves], grid.shape)
    wv, uv = R.stack_faces(w, grid.shape), R.stack_faces(u, grid.shape)
    assert np.abs(got - Pm.T @ wv).max() <= 1e-8 * np.abs(wv).max()
    lhs = float(faces_vec(backend, out, grid.shape) @ wv)
    assert abs(lhs - float(uv @ got)) <= 1e-9 * np.linalg.norm(uv) * np.linalg.norm(wv)


def test_project_gradcheck():
    shape, boundary, solid = pocket_2d()
    grid = make_grid(shape, boundary, solid, seed=27)
    rng = np.random.default_rng(28)
    u = [rng.standard_normal(grid.face_shape(k)) for k in range(2)]
    w = rng.standard_normal(grid.face_shape(1))
    assert gpudp.gradcheck(lambda a, b: (gpudp.project((a, b), grid, tol=1e-13)[1] * w).sum(), u, eps=1e-2)


def test_project_float32(backend):
    grid = case_grid(backend, (5, 6), (D, N), seed=29)
    u = tuple(np.random.default_rng(30).standard_normal(grid.face_shape(k)).astype(np.float32)
              for k in range(2))
    out = gpudp.project(tuple(backend.asarray(c) for c in u), grid, tol=1e-5)
    assert all(c.dtype == np.float32 for c in out)
    Pm, _, W = dense_projector(grid)
    got = faces_vec(backend, out, grid.shape)
    assert np.all(got[W == 0] == 0.0)
    assert rel(got, Pm @ R.stack_faces(u, grid.shape)) <= 1e-3
