"""Independent float64 NumPy reference of MAC (staggered) advection and interpolation, written entry by entry
from DESIGN.md §6 with explicit index loops (slow; for small grids only). Unbatched: ``q`` of ``shape`` (or a
tuple of face arrays), ``u`` a tuple of face arrays (component ``k`` of ``face_shapes(shape, boundary)[k]``).

Also jax-cfd's ``q + dt · advect_upwind(q, v)`` for all-periodic grids (``jaxcfd_cells``, ``jaxcfd_self``),
written in NumPy from jax-cfd's formulas (``advect_general`` with linear velocity and upwind value
interpolation, ``_advect_aligned``, backward-difference divergence). jax-cfd stores the x-velocity of cell
``i`` on its upper face; gpudp on its lower face: ``v_jaxcfd[i] = u_gpudp[i + 1]``.
"""
import itertools

import numpy as np

from reference_mac import face_shapes


def up(w, a, b):
    """Donor-cell flux ``w·a`` for ``w > 0``, else ``w·b``."""
    return w * a if w > 0 else w * b


def _cell(q, idx, shape, boundary):
    """``q`` at cell ``idx``, which may lie one cell outside the domain along some axes (ghost rules)."""
    idx = list(idx)
    for k, n in enumerate(shape):
        if 0 <= idx[k] < n:
            continue
        if boundary[k] == "periodic":
            idx[k] %= n
        elif boundary[k] == "dirichlet":
            return 0.0
        else:  # neumann repeats the boundary cell
            idx[k] = min(max(idx[k], 0), n - 1)
    return float(q[tuple(idx)])


def _face(u, k, idx, shape, boundary):
    """Face ``idx`` of component ``k``; an index outside the array wraps along a periodic axis (along ``k``
    face ``n_k`` is face 0; along another axis the index is a cell index)."""
    idx = list(idx)
    for b, n in enumerate(shape):
        if boundary[b] == "periodic":
            idx[b] %= n
    return float(u[k][tuple(idx)])


def _shift(idx, axis, step):
    idx = list(idx)
    idx[axis] += step
    return tuple(idx)


def advect_cells(q, u, dt, shape, spacing, boundary):
    """One donor-cell step of the cell field ``q``: ``q'_i = q_i − Δt Σ_k (F_k[i+e_k] − F_k[i]) / Δx_k`` with
    ``F_k[f] = up(u_k[f], q_{f−e_k}, q_f)``."""
    q = np.asarray(q, np.float64)
    u = tuple(np.asarray(c, np.float64) for c in u)

    def flux(k, f):
        return up(_face(u, k, f, shape, boundary), _cell(q, _shift(f, k, -1), shape, boundary),
                  _cell(q, f, shape, boundary))

    out = np.empty(shape)
    for i in itertools.product(*(range(n) for n in shape)):
        acc = 0.0
        for k in range(len(shape)):
            acc += (flux(k, _shift(i, k, 1)) - flux(k, i)) / spacing[k]
        out[i] = q[i] - dt * acc
    return out


def _comp_value(U, a, idx, shape, boundary):
    """Component ``a`` of a staggered field at face ``idx``; along an axis ``b ≠ a`` the index may lie one
    cell outside (ghost rules of axis ``b``: wrap, 0, or repeat = free slip); along ``a`` it wraps when
    periodic."""
    idx = list(idx)
    for b, n in enumerate(shape):
        if b == a:
            if boundary[a] == "periodic":
                idx[a] %= n
            continue
        if 0 <= idx[b] < n:
            continue
        if boundary[b] == "periodic":
            idx[b] %= n
        elif boundary[b] == "dirichlet":
            return 0.0
        else:
            idx[b] = min(max(idx[b], 0), n - 1)
    return float(U[tuple(idx)])


def advect_faces(q, u, dt, shape, spacing, boundary):
    """One step of the staggered field ``q`` (tuple) by ``u`` (DESIGN.md §6, face component)."""
    D = len(shape)
    q = tuple(np.asarray(c, np.float64) for c in q)
    u = tuple(np.asarray(c, np.float64) for c in u)
    out = []
    for a in range(D):
        Ua = q[a]
        na = shape[a]

        def G(i):  # flux along a at cell i (i along a may be any cell index; wraps when periodic)
            w = 0.5 * (_face(u, a, i, shape, boundary) + _face(u, a, _shift(i, a, 1), shape, boundary))
            return up(w, _comp_value(Ua, a, i, shape, boundary), _comp_value(Ua, a, _shift(i, a, 1), shape, boundary))

        def H(b, f):  # flux along b at the edge below a-face f along b (f_b in 0..n_b)
            ub_lo = _face(u, b, _shift(f, a, -1), shape, boundary)
            ub_hi = _face(u, b, f, shape, boundary)
            w = 0.5 * (ub_lo + ub_hi)
            return up(w, _comp_value(Ua, a, _shift(f, b, -1), shape, boundary),
                      _comp_value(Ua, a, f, shape, boundary))

        res = Ua.copy()
        for f in itertools.product(*(range(m) for m in Ua.shape)):
            if boundary[a] != "periodic" and f[a] in (0, na):
                continue  # boundary faces of component a are not advected
            acc = (G(f) - G(_shift(f, a, -1))) / spacing[a]
            for b in range(D):
                if b != a:
                    acc += (H(b, _shift(f, b, 1)) - H(b, f)) / spacing[b]
            res[f] = Ua[f] - dt * acc
        out.append(res)
    return tuple(out)


def at_centers(u, shape, boundary):
    """``c[k]_i = ½(u_k[i] + u_k[i + e_k])`` → ``(D, *shape)``."""
    u = tuple(np.asarray(c, np.float64) for c in u)
    D = len(shape)
    out = np.empty((D,) + tuple(shape))
    for k in range(D):
        for i in itertools.product(*(range(n) for n in shape)):
            out[(k,) + i] = 0.5 * (_face(u, k, i, shape, boundary) + _face(u, k, _shift(i, k, 1), shape, boundary))
    return out


def at_faces(c, shape, boundary):
    """Face ``f`` of axis ``k``: ``½(c_{f−e_k} + c_f)`` with the ghost rules at boundary faces."""
    c = np.asarray(c, np.float64)
    out = []
    for k, fs in enumerate(face_shapes(shape, boundary)):
        r = np.empty(fs)
        for f in itertools.product(*(range(m) for m in fs)):
            r[f] = 0.5 * (_cell(c, _shift(f, k, -1), shape, boundary) + _cell(c, f, shape, boundary))
        out.append(r)
    return tuple(out)


# -- jax-cfd's formulas on all-periodic grids --------------------------------------------------------------
def _to_jaxcfd(u):
    return [np.roll(np.asarray(c, np.float64), -1, axis=k) for k, c in enumerate(u)]


def _upwind(c, v, axis):
    """jax-cfd's ``interpolation.upwind`` one half cell up along ``axis``: ``c`` where ``v > 0``, else the
    next value (``v == 0`` takes the next value, the other branch from gpudp's)."""
    return np.where(v > 0, c, np.roll(c, -1, axis))


def _linear(x, axis):
    return 0.5 * (x + np.roll(x, -1, axis))


def _divergence(fluxes, spacing):
    return sum((f - np.roll(f, 1, axis=k)) / spacing[k] for k, f in enumerate(fluxes))


def jaxcfd_cells(q, u, dt, spacing):
    """jax-cfd's ``q + dt·advect_upwind(q, v)`` for a cell-centred ``q`` (all axes periodic)."""
    q = np.asarray(q, np.float64)
    v = _to_jaxcfd(u)
    fluxes = [_upwind(q, v[k], k) * v[k] for k in range(q.ndim)]
    return q - dt * _divergence(fluxes, spacing)


def jaxcfd_self(u, dt, spacing):
    """jax-cfd's ``u + dt·advect_upwind(u, u)`` componentwise (all axes periodic), in gpudp's layout."""
    v = _to_jaxcfd(u)
    D = len(v)
    out = []
    for a in range(D):
        c = v[a]
        fluxes = []
        for j in range(D):
            aligned = _linear(v[a], a) if j == a else _linear(v[j], a)
            fluxes.append(_upwind(c, aligned, j) * aligned)
        res = c - dt * _divergence(fluxes, spacing)
        out.append(np.roll(res, 1, axis=a))
    return tuple(out)
