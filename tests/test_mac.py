"""gpudp.advect_mac, gpudp.at_centers, gpudp.at_faces (DESIGN.md §6): forward against the float64 NumPy reference
``tests/reference_advect_mac.py`` and, on periodic grids, jax-cfd's formulas; dot-product tests of every adjoint
(``q`` and ``u`` separately, self-advection through the tape); gradcheck; conservation; greedy derivatives; bad
input; inputs never modified. Runs on every backend of the ``backend`` fixture; under the CUDA simulator a
representative subset on tiny grids."""
import itertools

import numpy as np
import pytest

import gpudp
from gpudp import Tape
import reference_advect_mac as R

KINDS = ("periodic", "dirichlet", "neumann")
SHAPES = {1: (7,), 2: (4, 5), 3: (3, 4, 5)}
SPACINGS = {1: (0.7,), 2: (0.5, 1.25), 3: (0.8, 0.5, 1.1)}
# every kind on every axis in 1-D and 2-D (all nine 2-D mixes), the uniform kinds and three mixes in 3-D
BOUNDARIES = {
    1: [(k,) for k in KINDS],
    2: list(itertools.product(KINDS, repeat=2)),
    3: [(k,) * 3 for k in KINDS] + [("dirichlet", "periodic", "neumann"), ("neumann", "dirichlet", "periodic"),
                                   ("periodic", "neumann", "dirichlet")],
}
CASES = [(nd, b) for nd in (1, 2, 3) for b in BOUNDARIES[nd]]
CASE_IDS = [f"{nd}d-" + "-".join(k[:3] for k in b) for nd, b in CASES]
# what the CUDA simulator runs of the parametrised cases
SIM_CASES = {(1, ("neumann",)), (2, ("periodic", "dirichlet")), (2, ("neumann", "neumann")),
             (3, ("dirichlet", "periodic", "neumann"))}
# grids with an axis of one cell (a lone periodic cell, one cell between walls)
EDGE_GRIDS = [((1,), ("periodic",)), ((1, 3), ("dirichlet", "periodic")), ((3, 1), ("periodic", "neumann")),
              ((2, 1, 3), ("periodic", "periodic", "neumann")), ((1, 2), ("neumann", "dirichlet"))]


def make_grid(backend, nd, boundary):
    return gpudp.Grid(backend.small(SHAPES[nd]), spacing=SPACINGS[nd], boundary=boundary)


def velocity(grid, rng, batch=None, kind="quantized"):
    """A staggered velocity (host float64). ``quantized``: multiples of 1/4 in [−1, 1], so that every face
    value and every face average is either exactly 0 or at least 1/8 away from it (exact zeros test the
    ``w > 0`` branch; small perturbations never change a branch). ``smooth``: values whose face averages stay
    at least 0.08 away from 0 (finite differences need distance from the kink)."""
    lead = () if batch is None else (batch,)
    out = []
    for k in range(grid.ndim):
        shape = lead + grid.face_shape(k)
        if kind == "quantized":
            out.append(rng.integers(-4, 5, shape) / 4.0)
        else:
            out.append(rng.choice([-0.7, -0.3, 0.5, 0.9], shape) + rng.uniform(-0.01, 0.01, shape))
    return tuple(out)


def stable_dt(grid, u, cfl=0.9):
    """The time step with CFL number ``cfl`` (the largest over a batch)."""
    D = grid.ndim
    speed = 0.0
    batch = u[0].ndim == D + 1
    for b in range(len(u[0]) if batch else 1):
        comps = [c[b] if batch else c for c in u]
        speed = max(speed, sum(np.abs(c).max() / h for c, h in zip(comps, grid.spacing)))
    return cfl / speed


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _flat(x):
    return np.concatenate([np.ravel(a) for a in x]) if isinstance(x, (tuple, list)) else np.ravel(x)


def dot_err(jv, w, v, g):
    """``|⟨J v, w⟩ − ⟨v, Jᵀ w⟩|`` relative to its Cauchy–Schwarz scale ``‖J v‖‖w‖ + ‖v‖‖Jᵀ w‖`` (cancellation
    in the sums cannot inflate it; a wrong adjoint gives an error of order one)."""
    jv, w, v, g = (np.asarray(_flat(x), np.float64) for x in (jv, w, v, g))
    scale = np.linalg.norm(jv) * np.linalg.norm(w) + np.linalg.norm(v) * np.linalg.norm(g)
    return abs(float(np.dot(jv, w)) - float(np.dot(v, g))) / max(scale, 1e-300)


def tol_for(dtype):
    return 1e-12 if dtype == np.float64 else 1e-5


# -- batched float64 references ---------------------------------------------------------------------------------

def _split(u, b, grid):
    return tuple(c[b] for c in u) if u[0].ndim == grid.ndim + 1 else tuple(u)


def ref_cells(q, u, dt, grid, steps=1):
    """``steps`` steps of a cell field (any leading axes; per batch item when ``u`` is batched)."""
    D = grid.ndim
    q = np.asarray(q, np.float64)
    u = tuple(np.asarray(c, np.float64) for c in u)
    if u[0].ndim == D + 1:
        return np.stack([ref_cells(q[b], _split(u, b, grid), dt, grid, steps) for b in range(len(u[0]))])
    fields = q.reshape((-1,) + grid.shape)
    out = []
    for f in fields:
        for _ in range(steps):
            f = R.advect_cells(f, u, dt, grid.shape, grid.spacing, grid.boundary)
        out.append(f)
    return np.stack(out).reshape(q.shape)


def ref_faces(q, u, dt, grid):
    """One step of a staggered field (batched when ``q`` is; ``u`` batched alike or shared)."""
    D = grid.ndim
    q = tuple(np.asarray(c, np.float64) for c in q)
    u = tuple(np.asarray(c, np.float64) for c in u)
    if q[0].ndim == D:
        return R.advect_faces(q, u, dt, grid.shape, grid.spacing, grid.boundary)
    outs = [R.advect_faces(_split(q, b, grid), _split(u, b, grid), dt, grid.shape, grid.spacing, grid.boundary)
            for b in range(len(q[0]))]
    return tuple(np.stack([o[k] for o in outs]) for k in range(D))


def ref_centers(u, grid):
    if u[0].ndim == grid.ndim + 1:
        return np.stack([R.at_centers(_split(u, b, grid), grid.shape, grid.boundary) for b in range(len(u[0]))])
    return R.at_centers(u, grid.shape, grid.boundary)


def ref_at_faces(c, grid):
    if c.ndim == grid.ndim + 1:
        outs = [R.at_faces(x, grid.shape, grid.boundary) for x in c]
        return tuple(np.stack([o[k] for o in outs]) for k in range(grid.ndim))
    return R.at_faces(c, grid.shape, grid.boundary)


# exact directional derivatives w.r.t. u: one step is linear in u on each branch region, and the quantized
# velocities stay on their branch (w = 0 moves to w > 0, the branch the derivative takes) under u + EPS·v, v ≥ 0
EPS = 1e-2


def tangent_cells(q, u, v, dt, grid, steps):
    """``J_u v`` of ``steps`` steps: ``dq^{t+1} = A(u) dq^t + (A(u + εv) q^t − A(u) q^t) / ε``."""
    up = tuple(c + EPS * w for c, w in zip(u, v))
    x, dx = np.asarray(q, np.float64), np.zeros(np.shape(q))
    for _ in range(steps):
        ax = ref_cells(x, u, dt, grid)
        dx = ref_cells(dx, u, dt, grid) + (ref_cells(x, up, dt, grid) - ax) / EPS
        x = ax
    return dx


def tangent_faces(q, u, v, dt, grid):
    """``J_u v`` of one staggered step of ``q`` (held fixed) by ``u``."""
    up = tuple(c + EPS * w for c, w in zip(u, v))
    return tuple((a - b) / EPS for a, b in zip(ref_faces(q, up, dt, grid), ref_faces(q, u, dt, grid)))


# -- forward against the reference ------------------------------------------------------------------------------

CELL_LAYOUTS = ["scalar", "vector", "batch", "batch_vector"]


def cell_case(grid, layout, rng):
    """``q`` of the layout and a matching ``u`` (host float64)."""
    D, B, C = grid.ndim, 2, 3
    lead = {"scalar": (), "vector": (D,), "batch": (B,), "batch_vector": (B, C)}[layout]
    u = velocity(grid, rng, batch=B if layout.startswith("batch") else None)
    return rng.standard_normal(lead + grid.shape), u


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", CELL_LAYOUTS)
@pytest.mark.parametrize("nd,boundary", CASES, ids=CASE_IDS)
def test_cells_forward_matches_reference(backend, nd, boundary, layout, dtype, steps):
    backend.simulate_only((nd, boundary) in SIM_CASES and layout in ("scalar", "batch_vector")
                          and (dtype == np.float64) == (steps == 3))
    grid = make_grid(backend, nd, boundary)
    q, u = cell_case(grid, layout, np.random.default_rng(nd))
    dt = stable_dt(grid, u)
    out = gpudp.advect_mac(backend.asarray(q, dtype), tuple(backend.asarray(c, dtype) for c in u), dt, grid,
                           steps=steps)
    assert backend.is_own(out) and out.shape == q.shape and out.dtype == dtype
    assert rel_err(backend.to_numpy(out), ref_cells(q.astype(dtype), tuple(c.astype(dtype) for c in u), dt, grid,
                                                    steps)) <= tol_for(dtype)


FACE_LAYOUTS = ["single", "lead", "batch"]  # lead: a batch of q moving with one u; batch: q and u batched


def face_case(grid, layout, rng):
    B = 3
    u = velocity(grid, rng, batch=B if layout == "batch" else None)
    lead = () if layout == "single" else (B,)
    q = tuple(rng.standard_normal(lead + grid.face_shape(k)) for k in range(grid.ndim))
    return q, u


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", FACE_LAYOUTS)
@pytest.mark.parametrize("nd,boundary", CASES, ids=CASE_IDS)
def test_faces_forward_matches_reference(backend, nd, boundary, layout, dtype):
    backend.simulate_only((nd, boundary) in SIM_CASES and layout != "single" and dtype == np.float64)
    grid = make_grid(backend, nd, boundary)
    q, u = face_case(grid, layout, np.random.default_rng(10 + nd))
    dt = stable_dt(grid, u)
    out = gpudp.advect_mac(tuple(backend.asarray(c, dtype) for c in q), tuple(backend.asarray(c, dtype) for c in u),
                           dt, grid)
    assert isinstance(out, tuple) and len(out) == nd
    ref = ref_faces(tuple(c.astype(dtype) for c in q), tuple(c.astype(dtype) for c in u), dt, grid)
    for o, r, c in zip(out, ref, q):
        assert backend.is_own(o) and o.shape == c.shape and o.dtype == dtype
        assert rel_err(backend.to_numpy(o), r) <= tol_for(dtype)


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("nd,boundary", CASES, ids=CASE_IDS)
def test_self_advection_matches_reference(backend, nd, boundary, batched):
    backend.simulate_only((nd, boundary) in SIM_CASES and batched)
    grid = make_grid(backend, nd, boundary)
    u = velocity(grid, np.random.default_rng(20 + nd), batch=2 if batched else None)
    dt = stable_dt(grid, u)
    ua = tuple(backend.asarray(c) for c in u)
    out = gpudp.advect_mac(ua, ua, dt, grid)
    for o, r in zip(out, ref_faces(u, u, dt, grid)):
        assert rel_err(backend.to_numpy(o), r) <= 1e-12


def test_staggered_steps_repeat_one_step(backend):
    grid = make_grid(backend, 2, ("neumann", "periodic"))
    rng = np.random.default_rng(3)
    q, u = face_case(grid, "batch", rng)
    dt = stable_dt(grid, u)
    qa, ua = tuple(backend.asarray(c) for c in q), tuple(backend.asarray(c) for c in u)
    one = qa
    for _ in range(3):
        one = gpudp.advect_mac(one, ua, dt, grid)
    three = gpudp.advect_mac(qa, ua, dt, grid, steps=3)
    for a, b in zip(three, one):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


@pytest.mark.parametrize("shape,boundary", EDGE_GRIDS, ids=["x".join(map(str, s)) for s, _ in EDGE_GRIDS])
def test_grids_with_an_axis_of_one_cell(backend, shape, boundary):
    backend.simulate_only(len(shape) == 2)
    grid = gpudp.Grid(shape, spacing=tuple(0.6 + 0.3 * k for k in range(len(shape))), boundary=boundary)
    rng = np.random.default_rng(4)
    u = velocity(grid, rng, batch=2)
    q = rng.standard_normal((2,) + grid.shape)
    dt = stable_dt(grid, u)
    ua = tuple(backend.asarray(c) for c in u)
    out = gpudp.advect_mac(backend.asarray(q), ua, dt, grid, steps=2)
    assert rel_err(backend.to_numpy(out), ref_cells(q, u, dt, grid, 2)) <= 1e-12
    for o, r in zip(gpudp.advect_mac(ua, ua, dt, grid), ref_faces(u, u, dt, grid)):
        assert rel_err(backend.to_numpy(o), r) <= 1e-12
    assert rel_err(backend.to_numpy(gpudp.at_centers(ua, grid)), ref_centers(u, grid)) <= 1e-15
    for o, r in zip(gpudp.at_faces(backend.asarray(q), grid), ref_at_faces(q, grid)):
        assert rel_err(backend.to_numpy(o), r) <= 1e-15


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("nd,boundary", CASES, ids=CASE_IDS)
def test_interpolation_matches_reference(backend, nd, boundary, batched, dtype):
    backend.simulate_only((nd, boundary) in SIM_CASES and batched == (dtype == np.float64))
    grid = make_grid(backend, nd, boundary)
    rng = np.random.default_rng(30 + nd)
    lead = (2,) if batched else ()
    u = tuple(rng.standard_normal(lead + grid.face_shape(k)) for k in range(nd))
    c = rng.standard_normal(lead + grid.shape)
    centers = gpudp.at_centers(tuple(backend.asarray(x, dtype) for x in u), grid)
    assert centers.shape == lead + (nd,) + grid.shape and centers.dtype == dtype
    assert rel_err(backend.to_numpy(centers), ref_centers(tuple(x.astype(dtype) for x in u), grid)) <= tol_for(dtype)
    faces = gpudp.at_faces(backend.asarray(c, dtype), grid)
    for k, (o, r) in enumerate(zip(faces, ref_at_faces(c.astype(dtype), grid))):
        assert o.shape == lead + grid.face_shape(k) and o.dtype == dtype
        assert rel_err(backend.to_numpy(o), r) <= tol_for(dtype)


# -- acceptance 2: jax-cfd's advect_upwind step on periodic grids -----------------------------------------------

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_periodic_grids_equal_jaxcfd(backend, nd):
    backend.simulate_only(nd == 2)
    grid = make_grid(backend, nd, "periodic")
    rng = np.random.default_rng(40 + nd)
    u = tuple(rng.uniform(-1.0, 1.0, grid.face_shape(k)) for k in range(nd))
    q = rng.standard_normal(grid.shape)
    dt = stable_dt(grid, u)
    ua = tuple(backend.asarray(c) for c in u)
    out = gpudp.advect_mac(backend.asarray(q), ua, dt, grid)
    assert rel_err(backend.to_numpy(out), R.jaxcfd_cells(q, u, dt, grid.spacing)) <= 1e-13
    for o, r in zip(gpudp.advect_mac(ua, ua, dt, grid), R.jaxcfd_self(u, dt, grid.spacing)):
        assert rel_err(backend.to_numpy(o), r) <= 1e-13


# -- adjoints: dot-product tests ------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("layout", ["vector", "batch_vector"])
@pytest.mark.parametrize("nd,boundary", CASES, ids=CASE_IDS)
def test_cells_dot_product_q_and_u(backend, nd, boundary, layout, steps):
    backend.simulate_only((nd, boundary) in SIM_CASES and (layout == "batch_vector") == (steps == 3))
    grid = make_grid(backend, nd, boundary)
    rng = np.random.default_rng(50 + steps)
    q, u = cell_case(grid, layout, rng)
    dt = stable_dt(grid, u)
    v_q = rng.standard_normal(q.shape)
    v_u = tuple(rng.uniform(0.0, 1.0, c.shape) for c in u)
    w = rng.standard_normal(q.shape)
    tq = backend.tensor(q, requires_grad=True)
    tu = [backend.tensor(c, requires_grad=True) for c in u]
    with Tape() as tape:
        out = gpudp.advect_mac(tq, tuple(tu), dt, grid, steps=steps)
    grads = [backend.to_numpy(g) for g in tape.gradient(out, [tq] + tu, grad=backend.asarray(w))]
    # q ↦ q_T is linear: J_q v is the operator applied to v
    jv_q = ref_cells(v_q, u, dt, grid, steps)
    assert dot_err(jv_q, w, v_q, grads[0]) <= 1e-13
    jv_u = tangent_cells(q, u, v_u, dt, grid, steps)
    assert dot_err(jv_u, w, v_u, grads[1:]) <= 1e-13


@pytest.mark.parametrize("layout", FACE_LAYOUTS)
@pytest.mark.parametrize("nd,boundary", CASES, ids=CASE_IDS)
def test_faces_dot_product_q_and_u(backend, nd, boundary, layout):
    backend.simulate_only((nd, boundary) in SIM_CASES and layout == "batch")
    grid = make_grid(backend, nd, boundary)
    rng = np.random.default_rng(60 + nd)
    q, u = face_case(grid, layout, rng)
    dt = stable_dt(grid, u)
    v_q = tuple(rng.standard_normal(c.shape) for c in q)
    v_u = tuple(rng.uniform(0.0, 1.0, c.shape) for c in u)
    w = tuple(rng.standard_normal(c.shape) for c in q)
    tq = [backend.tensor(c, requires_grad=True) for c in q]
    tu = [backend.tensor(c, requires_grad=True) for c in u]
    with Tape() as tape:
        loss = weighted_sum(gpudp.advect_mac(tuple(tq), tuple(tu), dt, grid), w, backend)
    grads = [backend.to_numpy(g) for g in tape.gradient(loss, tq + tu)]
    jv_q = ref_faces(v_q, u, dt, grid)
    assert dot_err(jv_q, w, v_q, grads[:nd]) <= 1e-13
    jv_u = tangent_faces(q, u, v_u, dt, grid)
    assert dot_err(jv_u, w, v_u, grads[nd:]) <= 1e-13


def weighted_sum(out, w, backend):
    """``Σ_k ⟨out_k, w_k⟩`` as a recorded scalar."""
    total = (out[0] * backend.asarray(w[0])).sum()
    for o, x in zip(out[1:], w[1:]):
        total = total + (o * backend.asarray(x)).sum()
    return total


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("nd,boundary", CASES, ids=CASE_IDS)
def test_self_advection_dot_product_adds_both_gradients(backend, nd, boundary, batched):
    backend.simulate_only((nd, boundary) in SIM_CASES and not batched)
    grid = make_grid(backend, nd, boundary)
    rng = np.random.default_rng(70 + nd)
    u = velocity(grid, rng, batch=2 if batched else None)
    dt = stable_dt(grid, u)
    v = tuple(rng.uniform(0.0, 1.0, c.shape) for c in u)
    w = tuple(rng.standard_normal(c.shape) for c in u)
    tu = [backend.tensor(c, requires_grad=True) for c in u]
    with Tape() as tape:
        loss = weighted_sum(gpudp.advect_mac(tuple(tu), tuple(tu), dt, grid), w, backend)
    grads = [backend.to_numpy(g) for g in tape.gradient(loss, tu)]
    # J v of u ↦ A(u) u: the q-part A(u) v plus the u-part
    jv = tuple(a + b for a, b in zip(ref_faces(v, u, dt, grid), tangent_faces(u, u, v, dt, grid)))
    assert dot_err(jv, w, v, grads) <= 1e-13


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("nd,boundary", CASES, ids=CASE_IDS)
def test_interpolation_dot_products(backend, nd, boundary, batched):
    backend.simulate_only((nd, boundary) in SIM_CASES and batched)
    grid = make_grid(backend, nd, boundary)
    rng = np.random.default_rng(80 + nd)
    lead = (2,) if batched else ()
    u = tuple(rng.standard_normal(lead + grid.face_shape(k)) for k in range(nd))
    c = rng.standard_normal(lead + grid.shape)
    w_c = rng.standard_normal(lead + (nd,) + grid.shape)
    w_f = tuple(rng.standard_normal(x.shape) for x in u)
    tu = [backend.tensor(x, requires_grad=True) for x in u]
    tc = backend.tensor(c, requires_grad=True)
    with Tape() as tape:
        centers = gpudp.at_centers(tuple(tu), grid)
        faces = gpudp.at_faces(tc, grid)
    gu = [backend.to_numpy(g) for g in tape.gradient(centers, tu, grad=backend.asarray(w_c), retain=True)]
    assert dot_err(ref_centers(u, grid), w_c, u, gu) <= 1e-14
    with tape:
        loss = weighted_sum(faces, w_f, backend)
    gc = backend.to_numpy(tape.gradient(loss, tc))
    assert dot_err(ref_at_faces(c, grid), w_f, c, gc) <= 1e-14


def test_velocity_gradient_at_zero_takes_the_positive_branch(backend):
    grid = gpudp.Grid(5, boundary="periodic")
    q = np.array([0.0, 1.0, 3.0, 6.0, 10.0])
    g = np.array([0.5, -1.0, 2.0, 0.25, 1.5])
    tu = backend.tensor(np.zeros(5), requires_grad=True)
    with Tape() as tape:
        out = gpudp.advect_mac(backend.asarray(q), (tu,), 0.5, grid)
    gu = backend.to_numpy(tape.gradient(out, tu, grad=backend.asarray(g)))
    # u[f] enters F[f] = u·q_{f−1} (the w > 0 branch), which moves mass from cell f−1 to cell f
    np.testing.assert_allclose(gu, 0.5 * (g - np.roll(g, 1)) * np.roll(q, 1), rtol=1e-15)


# -- gradcheck (float64 finite differences through the tape) ------------------------------------------------------

def _budget(backend):
    return dict(max_elements=0, n_directions=3) if backend.simulated else {}


def test_gradcheck_cells_multi_step(backend):
    grid = gpudp.Grid(backend.small((4, 3)), spacing=(0.5, 0.8), boundary=("neumann", "dirichlet"))
    rng = np.random.default_rng(90)
    u = velocity(grid, rng, batch=2, kind="smooth")
    q = rng.standard_normal((2, 2) + grid.shape)
    dt = stable_dt(grid, u, 0.8)
    target = backend.asarray(np.zeros(q.shape))

    def f(qq, *uu):
        return gpudp.l2_loss(gpudp.advect_mac(qq, uu, dt, grid, steps=3), target)

    assert gpudp.gradcheck(f, [backend.asarray(q)] + [backend.asarray(c) for c in u], rtol=1e-6, atol=1e-8,
                           **_budget(backend))


@pytest.mark.parametrize("nd,boundary", [(2, ("dirichlet", "neumann")), (2, ("periodic", "periodic")),
                                         (3, ("neumann", "periodic", "dirichlet"))], ids=["2d-dir-neu", "2d-per",
                                                                                        "3d-mixed"])
def test_gradcheck_self_advection(backend, nd, boundary):
    backend.simulate_only(nd == 2 and boundary[0] == "dirichlet")
    shape = {2: (3, 4), 3: (2, 3, 2)}[nd]
    grid = gpudp.Grid(backend.small(shape), spacing=SPACINGS[nd], boundary=boundary)
    u = velocity(grid, np.random.default_rng(91), kind="smooth")
    dt = stable_dt(grid, u, 0.8)

    def f(*uu):
        out = gpudp.advect_mac(uu, uu, dt, grid)
        return gpudp.l2_loss(out[0], backend.asarray(np.zeros(out[0].shape))) + out[-1].sum() * 0.5

    assert gpudp.gradcheck(f, [backend.asarray(c) for c in u], rtol=1e-6, atol=1e-8, **_budget(backend))


def test_gradcheck_staggered_q_and_interpolation(backend):
    grid = gpudp.Grid(backend.small((3, 4)), spacing=(0.7, 1.1), boundary=("periodic", "neumann"))
    rng = np.random.default_rng(92)
    u = velocity(grid, rng, kind="smooth")
    q = tuple(rng.standard_normal(grid.face_shape(k)) for k in range(2))
    d = rng.standard_normal(grid.shape)
    dt = stable_dt(grid, u, 0.8)

    def f(q0, q1, u0, u1, dd):
        out = gpudp.advect_mac((q0, q1), (u0, u1), dt, grid, steps=2)
        buoy = gpudp.at_faces(dd, grid)
        centers = gpudp.at_centers(out, grid)
        return gpudp.l2_loss(centers, backend.asarray(np.zeros((2,) + grid.shape))) + (out[1] * buoy[1]).sum()

    inputs = [backend.asarray(c) for c in q + u] + [backend.asarray(d)]
    assert gpudp.gradcheck(f, inputs, rtol=1e-6, atol=1e-8, **_budget(backend))


# -- acceptance 4: conservation ------------------------------------------------------------------------------------

def _stream_velocity(shape, spacing):
    """A divergence-free velocity with zero normal component on the boundary: differences of a stream
    function on the grid nodes that vanishes on the boundary."""
    nx, ny = shape
    X, Y = np.meshgrid(np.arange(nx + 1) / nx, np.arange(ny + 1) / ny, indexing="ij")
    psi = np.sin(np.pi * X) * np.sin(2 * np.pi * Y) + 0.5 * np.sin(3 * np.pi * X) * np.sin(np.pi * Y)
    psi[[0, -1], :] = 0.0
    psi[:, [0, -1]] = 0.0
    ux = (psi[:, 1:] - psi[:, :-1]) / spacing[1]
    uy = -(psi[1:, :] - psi[:-1, :]) / spacing[0]
    return ux, uy


@pytest.mark.parametrize("obstacle", [False, True], ids=["box", "box-with-obstacle"])
def test_mass_is_conserved_in_a_closed_box_over_1000_steps(obstacle):
    shape, spacing = (24, 20), (1.0, 0.8)
    x, y = np.meshgrid(np.arange(shape[0]) + 0.5, (np.arange(shape[1]) + 0.5), indexing="ij")
    solid = (x - 12) ** 2 + (y - 11) ** 2 < 16 if obstacle else None
    grid = gpudp.Grid(shape, spacing=spacing, boundary="neumann", solid=solid)
    u = _stream_velocity(shape, spacing)
    if obstacle:  # the projection closes the obstacle's faces
        u = gpudp.project(u, grid, tol=1e-10)
    assert all(np.abs(c[0]).max() == 0 and np.abs(c[-1]).max() == 0 for c in (u[0], u[1].T))
    dt = stable_dt(grid, u, 0.9)
    d = np.exp(-((x - 7.0) ** 2 + (y - 6.0) ** 2) / 8.0)
    total = d.sum()
    d = gpudp.advect_mac(d, u, dt, grid, steps=1000)
    assert abs(d.sum() - total) <= 1e-12 * total
    assert np.abs(d - np.exp(-((x - 7.0) ** 2 + (y - 6.0) ** 2) / 8.0)).max() > 0.1  # it did move


# -- across backends --------------------------------------------------------------------------------------------

def test_matches_the_cpu_backend(backend):
    if backend.name == "cpu":
        pytest.skip("compares another backend with cpu")
    grid = gpudp.Grid(backend.small((3, 4)), spacing=(0.6, 0.9), boundary=("dirichlet", "neumann"))
    rng = np.random.default_rng(100)
    u = velocity(grid, rng, batch=2)
    q = rng.standard_normal((2, 2) + grid.shape)
    dt = stable_dt(grid, u)
    w = rng.standard_normal(q.shape)
    w_u = tuple(rng.standard_normal(c.shape) for c in u)

    def run():
        tq = gpudp.tensor(q, requires_grad=True)
        tu = [gpudp.tensor(c, requires_grad=True) for c in u]
        with Tape() as tape:
            cells = gpudp.advect_mac(tq, tuple(tu), dt, grid, steps=2)
            faces = gpudp.advect_mac(tuple(tu), tuple(tu), dt, grid)
            loss = (cells * gpudp.asarray(w)).sum() + weighted_sum(faces, w_u, gpudp) \
                + gpudp.at_centers(faces, grid).sum() + gpudp.at_faces(cells[:, 0], grid)[1].sum()
        grads = tape.gradient(loss, [tq] + tu)
        return [gpudp.to_numpy(x) for x in (cells, *faces, *grads)]

    ours = run()
    with gpudp.use_backend("cpu"):
        ref = run()
    for a, b in zip(ours, ref):
        assert rel_err(a, b) <= 1e-13


# -- greedy derivatives and what the tape keeps ------------------------------------------------------------------

def test_no_velocity_adjoint_when_u_needs_no_gradient(backend):
    grid = make_grid(backend, 2, ("periodic", "neumann"))
    rng = np.random.default_rng(110)
    q, u = cell_case(grid, "batch", rng)
    s = tuple(rng.standard_normal((2,) + grid.face_shape(k)) for k in range(2))
    dt = stable_dt(grid, u)
    launches = backend.impl.launches
    before = launches.copy()
    tq = backend.tensor(q, requires_grad=True)
    ts = [backend.tensor(c, requires_grad=True) for c in s]
    tu = tuple(backend.tensor(c) for c in u)  # tensors without requires_grad
    with Tape() as tape:
        out = gpudp.advect_mac(tq, tu, dt, grid, steps=3)
        faces = gpudp.advect_mac(tuple(ts), tu, dt, grid)
        loss = gpudp.l2_loss(out, backend.asarray(np.zeros_like(q))) + faces[0].sum() + faces[1].sum()
    tape.backward(loss)
    diff = launches - before
    assert diff["mac_cells_adjoint_u"] == 0 and diff["mac_faces_adjoint_u"] == 0
    assert diff["mac_cells_adjoint_q"] >= 1 and diff["mac_faces_adjoint_q"] >= 1
    assert tq.grad is not None and all(t.grad is not None for t in ts)


def test_adjoint_kernels_run_only_for_the_gradients_asked_for(backend):
    grid = make_grid(backend, 2, ("dirichlet", "periodic"))
    rng = np.random.default_rng(111)
    q, u = face_case(grid, "single", rng)
    c, _ = cell_case(grid, "scalar", rng)
    dt = stable_dt(grid, u)
    tq = [backend.tensor(x, requires_grad=True) for x in q]
    tu = [backend.tensor(x, requires_grad=True) for x in u]
    tc = backend.tensor(c, requires_grad=True)
    with Tape() as tape:
        faces = gpudp.advect_mac(tuple(tq), tuple(tu), dt, grid)
        cells = gpudp.advect_mac(tc, tuple(tu), dt, grid)
        loss = faces[0].sum() + faces[1].sum() + cells.sum()
    launches = backend.impl.launches
    before = launches.copy()
    tape.gradient(loss, tu, retain=True)  # only u asked for: q and c require grad but are not wanted
    diff = launches - before
    assert diff["mac_faces_adjoint_q"] == 0 and diff["mac_cells_adjoint_q"] == 0
    assert diff["mac_faces_adjoint_u"] >= 1 and diff["mac_cells_adjoint_u"] >= 1
    before = launches.copy()
    tape.gradient(loss, [tq[0], tc])
    diff = launches - before
    assert diff["mac_faces_adjoint_u"] == 0 and diff["mac_cells_adjoint_u"] == 0
    assert diff["mac_faces_adjoint_q"] >= 1 and diff["mac_cells_adjoint_q"] >= 1


def test_single_gradient_equals_joint_gradient(backend):
    grid = make_grid(backend, 3, ("dirichlet", "periodic", "neumann"))
    rng = np.random.default_rng(112)
    q, u = cell_case(grid, "batch_vector", rng)
    dt = stable_dt(grid, u)
    w = backend.asarray(rng.standard_normal(q.shape))
    tq = backend.tensor(q, requires_grad=True)
    tu = [backend.tensor(c, requires_grad=True) for c in u]
    with Tape() as tape:
        out = gpudp.advect_mac(tq, tuple(tu), dt, grid, steps=2)
    both = tape.gradient(out, [tq] + tu, grad=w, retain=True)
    alone_q = tape.gradient(out, tq, grad=w, retain=True)
    alone_u = tape.gradient(out, tu, grad=w)
    np.testing.assert_array_equal(backend.to_numpy(alone_q), backend.to_numpy(both[0]))
    for a, b in zip(alone_u, both[1:]):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


def test_tape_memory_of_the_cell_operator(backend):
    grid = make_grid(backend, 2, "neumann")
    q, u = cell_case(grid, "scalar", np.random.default_rng(113))
    dt = stable_dt(grid, u)
    T = 4
    ubytes = sum(c.nbytes for c in u)
    tu = [backend.tensor(c, requires_grad=True) for c in u]
    with Tape() as tape:
        gpudp.advect_mac(backend.asarray(q), tuple(tu), dt, grid, steps=T)
    assert T * q.nbytes <= tape.memory_bytes <= T * q.nbytes + ubytes
    # the q-adjoint is linear in q: without a velocity gradient no state is kept
    with Tape() as tape:
        gpudp.advect_mac(backend.tensor(q, requires_grad=True), tuple(backend.asarray(c) for c in u), dt, grid,
                         steps=T)
    assert tape.memory_bytes <= ubytes


def test_raw_arrays_in_raw_arrays_out_and_tensors_in_tensors_out(backend):
    grid = make_grid(backend, 2, "periodic")
    q, u = cell_case(grid, "scalar", np.random.default_rng(114))
    dt = stable_dt(grid, u)
    ua = tuple(backend.asarray(c) for c in u)
    raw = gpudp.advect_mac(backend.asarray(q), ua, dt, grid)
    assert backend.is_own(raw) and not isinstance(raw, gpudp.Tensor)
    t = gpudp.advect_mac(backend.tensor(q), ua, dt, grid)
    assert isinstance(t, gpudp.Tensor) and not t.requires_grad
    np.testing.assert_array_equal(t.numpy(), backend.to_numpy(raw))
    faces = gpudp.advect_mac(ua, (backend.tensor(u[0]), ua[1]), dt, grid)
    assert all(isinstance(f, gpudp.Tensor) for f in faces)


def test_solid_mask_is_ignored(backend):
    shape = backend.small((4, 5))
    solid = np.zeros(shape, bool)
    solid[1, 1] = True
    plain = gpudp.Grid(shape, boundary=("neumann", "dirichlet"))
    masked = gpudp.Grid(shape, boundary=("neumann", "dirichlet"), solid=solid)
    rng = np.random.default_rng(115)
    q, u = cell_case(plain, "scalar", rng)
    dt = stable_dt(plain, u)
    ua = tuple(backend.asarray(c) for c in u)
    a = [gpudp.advect_mac(backend.asarray(q), ua, dt, g) for g in (plain, masked)]
    np.testing.assert_array_equal(*(backend.to_numpy(x) for x in a))
    b = [gpudp.advect_mac(ua, ua, dt, g)[0] for g in (plain, masked)]
    np.testing.assert_array_equal(*(backend.to_numpy(x) for x in b))
    c = [gpudp.at_faces(backend.asarray(q), g)[1] for g in (plain, masked)]
    np.testing.assert_array_equal(*(backend.to_numpy(x) for x in c))


# -- bad input -----------------------------------------------------------------------------------------------------

def _ok(backend, nd=2, boundary=("periodic", "neumann")):
    grid = gpudp.Grid((4, 5) if nd == 2 else (3, 4, 5)[:nd], boundary=boundary[:nd])
    rng = np.random.default_rng(120)
    u = velocity(grid, rng)
    q = rng.standard_normal(grid.shape)
    return backend.asarray(q), tuple(backend.asarray(c) for c in u), stable_dt(grid, u), grid


def test_staggered_q_with_wrong_component_shapes(backend):
    q, u, dt, grid = _ok(backend)
    bad = (u[0], backend.asarray(np.zeros((4, 5))))  # component 1 has 5 + 1 faces along the neumann axis
    with pytest.raises(gpudp.ShapeError) as err:
        gpudp.advect_mac(bad, u, dt, grid)
    msg = str(err.value)
    assert "advect_mac" in msg and "q[1] has shape (4, 5)" in msg and "(4, 6)" in msg
    with pytest.raises(gpudp.ShapeError, match="q has 1 components; expected 2"):
        gpudp.advect_mac((u[0],), u, dt, grid)


def test_u_must_be_staggered(backend):
    q, u, dt, grid = _ok(backend)
    with pytest.raises(TypeError) as err:
        gpudp.advect_mac(q, backend.asarray(np.zeros((2, 4, 5))), dt, grid)
    msg = str(err.value)
    assert "advect_mac" in msg and "u must be a staggered field" in msg and "(4, 5), (4, 6)" in msg
    with pytest.raises(gpudp.ShapeError, match="u has 3 components; expected 2"):
        gpudp.advect_mac(q, u + (u[0],), dt, grid)
    with pytest.raises(gpudp.ShapeError, match=r"u\[1\] has shape \(4, 5\)"):
        gpudp.advect_mac(q, (u[0], backend.asarray(np.zeros((4, 5)))), dt, grid)


def test_q_shape_does_not_fit(backend):
    q, u, dt, grid = _ok(backend)
    with pytest.raises(gpudp.ShapeError) as err:
        gpudp.advect_mac(backend.asarray(np.zeros((5, 4))), u, dt, grid)
    assert "q has shape (5, 4)" in str(err.value) and "(4, 5)" in str(err.value)
    with pytest.raises(gpudp.ShapeError, match="q has shape"):
        gpudp.advect_mac(backend.asarray(np.zeros((0, 4, 5))), u, dt, grid)


def test_batch_mismatches(backend):
    _, _, dt, grid = _ok(backend)
    rng = np.random.default_rng(121)
    u = tuple(backend.asarray(c) for c in velocity(grid, rng, batch=2))
    for qshape in [(3, 4, 5), (4, 5), (2, 3, 4, 4, 5)]:
        with pytest.raises(gpudp.ShapeError) as err:
            gpudp.advect_mac(backend.asarray(np.zeros(qshape)), u, dt, grid)
        assert "batch of 2" in str(err.value) and str(qshape) in str(err.value)
    unbatched = tuple(backend.asarray(np.zeros(grid.face_shape(k))) for k in range(2))
    with pytest.raises(gpudp.ShapeError, match="same batch"):
        gpudp.advect_mac(unbatched, u, dt, grid)
    with pytest.raises(gpudp.ShapeError, match="disagree on the batch"):
        gpudp.advect_mac((u[0], unbatched[1]), u, dt, grid)


@pytest.mark.parametrize("which", ["cells", "faces"])
def test_dtype_mismatch(backend, which):
    q, u, dt, grid = _ok(backend)
    u32 = tuple(backend.asarray(backend.to_numpy(c), np.float32) for c in u)
    qq = q if which == "cells" else u
    with pytest.raises(TypeError) as err:
        gpudp.advect_mac(qq, u32, dt, grid)
    assert "q is float64" in str(err.value) and "u is float32" in str(err.value)
    with pytest.raises(TypeError, match=r"u\[0\] is float64 but u\[1\] is float32"):
        gpudp.advect_mac(q, (u[0], u32[1]), dt, grid)


def test_integer_arrays(backend):
    q, u, dt, grid = _ok(backend)
    with pytest.raises(TypeError, match="q has dtype int64"):
        gpudp.advect_mac(backend.asarray(np.zeros((4, 5), np.int64)), u, dt, grid)
    with pytest.raises(TypeError, match=r"u\[0\] has dtype int64"):
        gpudp.at_centers((backend.asarray(np.zeros((4, 5), np.int64)), u[1]), grid)


def test_cfl_violation_reports_the_number(backend):
    q, u, dt, grid = _ok(backend)
    with pytest.raises(gpudp.StabilityError) as err:
        gpudp.advect_mac(q, u, dt * 2.5, grid)  # stable_dt gave CFL 0.9
    msg = str(err.value)
    assert "advect_mac" in msg and "= 2.25 exceeds 1" in msg and "check_cfl=False" in msg
    with pytest.raises(gpudp.StabilityError):
        gpudp.advect_mac(u, u, dt * 2.5, grid)
    out = gpudp.advect_mac(q, u, dt * 2.5, grid, check_cfl=False)  # explicitly allowed
    assert out.shape == q.shape


def test_cfl_of_a_batch_is_its_worst_member(backend):
    _, _, _, grid = _ok(backend)
    u = np.zeros((2, 4, 5)), np.zeros((2, 4, 6))
    u[0][1, 0, 0] = 2.0  # member 1: CFL 2·dt in x
    q = backend.asarray(np.zeros((2, 4, 5)))
    ua = tuple(backend.asarray(c) for c in u)
    gpudp.advect_mac(q, ua, 0.5, grid)  # CFL exactly 1 passes
    with pytest.raises(gpudp.StabilityError, match="1.2"):
        gpudp.advect_mac(q, ua, 0.6, grid)


def test_non_finite_velocity(backend):
    q, u, dt, grid = _ok(backend)
    bad = backend.to_numpy(u[1]).copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        gpudp.advect_mac(q, (u[0], backend.asarray(bad)), dt, grid)


@pytest.mark.parametrize("dt,exc,text", [(-0.1, ValueError, ">= 0"), (float("nan"), ValueError, "finite"),
                                         ("0.1", TypeError, "real number")])
def test_bad_dt(backend, dt, exc, text):
    q, u, _, grid = _ok(backend)
    with pytest.raises(exc) as err:
        gpudp.advect_mac(q, u, dt, grid)
    assert "advect_mac" in str(err.value) and "dt" in str(err.value) and text in str(err.value)


@pytest.mark.parametrize("steps", [0, 1.5, True])
def test_bad_steps(backend, steps):
    q, u, dt, grid = _ok(backend)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        gpudp.advect_mac(q, u, dt, grid, steps=steps)


def test_bad_grid_and_interpolation_shapes(backend):
    q, u, dt, grid = _ok(backend)
    with pytest.raises(TypeError, match="grid must be a gpudp.Grid"):
        gpudp.advect_mac(q, u, dt, (4, 5))
    with pytest.raises(gpudp.ShapeError) as err:
        gpudp.at_faces(backend.asarray(np.zeros((2, 2, 4, 5))), grid)
    assert "at_faces" in str(err.value) and "c has shape (2, 2, 4, 5)" in str(err.value)
    with pytest.raises(TypeError, match="at_centers: u must be a staggered field"):
        gpudp.at_centers(q, grid)


def test_inputs_are_never_modified(backend):
    grid = make_grid(backend, 2, ("neumann", "dirichlet"))
    rng = np.random.default_rng(130)
    q, u = cell_case(grid, "batch_vector", rng)
    dt = stable_dt(grid, u)
    tq = backend.tensor(q, requires_grad=True)
    tu = [backend.tensor(c, requires_grad=True) for c in u]
    with Tape() as tape:
        cells = gpudp.advect_mac(tq, tuple(tu), dt, grid, steps=2)
        faces = gpudp.advect_mac(tuple(tu), tuple(tu), dt, grid)
        loss = cells.sum() + faces[0].sum() + gpudp.at_centers(faces, grid).sum() \
            + gpudp.at_faces(cells[:, 1], grid)[0].sum()
    tape.backward(loss)
    np.testing.assert_array_equal(backend.to_numpy(tq.data), q)
    for t, c in zip(tu, u):
        np.testing.assert_array_equal(backend.to_numpy(t.data), c)
