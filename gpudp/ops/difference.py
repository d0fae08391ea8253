"""Staggered difference operators: divergence, spatial gradient, Laplacian (DESIGN.md §3), with exact adjoints.

A staggered (MAC) field is a tuple of ``D`` face arrays; component ``k`` has ``grid.face_shape(k)``: ``n_k``
faces along a periodic axis (face ``i`` is the lower face of cell ``i``), ``n_k + 1`` along a non-periodic one
(faces ``0`` and ``n_k`` lie on the boundary)::

    divergence(u)_i          = Σ_k (u_k[i + e_k] − u_k[i]) / Δx_k                  faces → cells
    spatial_gradient(p)_k[f] = (p_f − p_{f−e_k}) / Δx_k                            cells → faces
    laplace(p)_i             = Σ_k (p_{i+e_k} − 2 p_i + p_{i−e_k}) / Δx_k²         cells → cells

Ghost cells: periodic wraps, dirichlet is 0, neumann repeats the boundary cell, so the gradient on a neumann
boundary face is 0 (a solid wall) and ``laplace = divergence ∘ spatial_gradient``.

Obstacles (``grid.solid``, DESIGN.md §6): with the open-face mask ``W`` (``gpudp.ops.obstacles``: a face is
closed when it touches a solid cell or is a neumann boundary face) the gradient is ``W G`` (0 on closed faces),
the divergence is unchanged and ``laplace = D W G`` (0 in solid cells, symmetric); the mask is applied to the
faces between the kernels. Grids without obstacles take the kernels alone.

All three are linear; their vector–Jacobian products are the transposed operators, each a hand-written
kernel (``stag_divergence_adjoint``, ``stag_gradient_adjoint``; the Laplacian is symmetric; with obstacles
``(W G)ᵀ g = Gᵀ (W g)``). Nothing is saved on the tape. Each operator takes and returns the ``D`` face arrays
as separate tensors: a staggered field is ``D`` inputs of :class:`Divergence` and ``D`` outputs of
:class:`SpatialGradient`.
"""
from __future__ import annotations

import math

from ..backends import get_backend
from ..errors import ShapeError
from ..tape import Operator
from . import _validate as V
from .obstacles import mask_faces, masked_laplace, open_masks


def kernel_args(grid):
    """``(inv_dx, bc, shape3, ndim)``: ``grid`` padded to three axes, in the order the kernel methods take."""
    shape3, ndim, bc = V.padded(grid)
    inv_dx = (1.0,) * (3 - ndim) + tuple(1.0 / h for h in grid.spacing)
    return inv_dx, bc, shape3, ndim


def _expected(shape):
    return f"{shape} or (B, *{shape}) for a batch of B fields"


def _lead(fn, name, a, shape):
    """The batch prefix of ``a`` (``()`` or ``(B,)``) when ``a`` has shape ``shape`` or ``(B, *shape)``."""
    got = tuple(a.shape)
    if got == shape:
        return ()
    if len(got) == len(shape) + 1 and got[1:] == shape:
        if got[0] == 0:
            raise V.shape_error(fn, name, got, f"a batch of at least one field ({_expected(shape)})")
        return got[:1]
    return None


def check_cells(fn, name, x, grid, backend):
    """A cell-centred field of ``grid``: ``(array, lead)`` with ``lead`` ``()`` or ``(B,)``."""
    a = V.check_array(fn, name, x, backend)
    lead = _lead(fn, name, a, grid.shape)
    if lead is None:
        raise V.shape_error(fn, name, a.shape, f"a cell-centred field of shape {_expected(grid.shape)} "
                                               f"(grid {grid.shape})")
    return a, lead


def check_staggered(fn, name, u, grid, backend):
    """A staggered field of ``grid``: ``(arrays, lead)``; every component shares the batch prefix."""
    D = grid.ndim
    shapes = [grid.face_shape(k) for k in range(D)]
    if not isinstance(u, (tuple, list)):
        what = type(u).__name__ + (f" of shape {tuple(u.shape)}" if hasattr(u, "shape") else "")
        raise TypeError(f"{fn}: {name} must be a staggered field, a tuple of {D} face arrays (component k of "
                        f"shape grid.face_shape(k): {', '.join(map(str, shapes))}), got a {what}")
    if len(u) != D:
        raise ShapeError(f"{fn}: {name} has {len(u)} components; expected {D}, one per axis of the grid "
                         f"(face shapes {', '.join(map(str, shapes))})")
    arrs, lead = [], None
    for k, comp in enumerate(u):
        a = V.check_array(fn, f"{name}[{k}]", comp, backend)
        lk = _lead(fn, f"{name}[{k}]", a, shapes[k])
        if lk is None:
            n = grid.shape[k]
            faces = f"{n} faces" if grid.boundary[k] == "periodic" else f"{n} + 1 = {n + 1} faces"
            raise V.shape_error(fn, f"{name}[{k}]", a.shape,
                                f"{_expected(shapes[k])}: grid.face_shape({k}), {faces} along the "
                                f"{grid.boundary[k]} axis {k}")
        if lead is not None and lk != lead:
            raise ShapeError(f"{fn}: the components of {name} disagree on the batch: {name}[0] has leading "
                             f"axes {lead} but {name}[{k}] has {lk}; expected the same (B,) or none on all")
        lead = lk
        arrs.append(a)
    if len(arrs) > 1:
        V.check_same_dtype(fn, **{f"{name}[{k}]": a for k, a in enumerate(arrs)})
    return tuple(arrs), lead


def _cells(backend, a, B, grid):
    return backend.ascontiguous(a).reshape(B, grid.size)


def _faces(backend, arrs, B):
    return tuple(backend.ascontiguous(a).reshape(B, a.size // B) for a in arrs)


class Divergence(Operator):
    """Faces → cells; inputs are the ``D`` face components."""

    replayable = True

    @staticmethod
    def forward(ctx, *faces, grid, backend, lead):
        B = lead[0] if lead else 1
        out = backend.stag_divergence(_faces(backend, faces, B), *kernel_args(grid))
        ctx.params = (grid, backend, lead)
        return out.reshape(lead + grid.shape)

    @staticmethod
    def backward(ctx, g):
        grid, backend, lead = ctx.params
        if g is None:
            return (None,) * grid.ndim
        B = lead[0] if lead else 1
        gf = backend.stag_divergence_adjoint(_cells(backend, g, B, grid), *kernel_args(grid))
        return tuple(gf[k].reshape(lead + grid.face_shape(k)) if need else None
                     for k, need in enumerate(ctx.needs_input_grad))


class SpatialGradient(Operator):
    """Cells → faces; one input, ``D`` outputs."""

    replayable = True

    @staticmethod
    def forward(ctx, p, *, grid, backend, lead):
        B = lead[0] if lead else 1
        faces = backend.stag_gradient(_cells(backend, p, B, grid), *kernel_args(grid))
        if grid.solid is not None:
            faces = mask_faces(backend, faces, open_masks(backend, p.dtype, grid))
        ctx.params = (grid, backend, lead, p.dtype)
        return tuple(f.reshape(lead + grid.face_shape(k)) for k, f in enumerate(faces))

    @staticmethod
    def backward(ctx, *gs):
        grid, backend, lead, dtype = ctx.params
        if all(g is None for g in gs):
            return (None,)
        B = lead[0] if lead else 1
        filled = []
        for k, g in enumerate(gs):
            size = math.prod(grid.face_shape(k))
            filled.append(backend.zeros((B, size), dtype) if g is None
                          else backend.ascontiguous(g).reshape(B, size))
        if grid.solid is not None:
            filled = mask_faces(backend, filled, open_masks(backend, dtype, grid))
        gp = backend.stag_gradient_adjoint(tuple(filled), *kernel_args(grid))
        return (gp.reshape(lead + grid.shape),)


class Laplace(Operator):
    """Cells → cells; symmetric, so its adjoint is itself."""

    replayable = True

    @staticmethod
    def forward(ctx, p, *, grid, backend, lead):
        ctx.params = (grid, backend, lead)
        return _laplace(backend, p, grid, lead)

    @staticmethod
    def backward(ctx, g):
        grid, backend, lead = ctx.params
        if g is None:
            return (None,)
        return (_laplace(backend, g, grid, lead),)


def _laplace(backend, p, grid, lead):
    B = lead[0] if lead else 1
    cells = _cells(backend, p, B, grid)
    if grid.solid is None:
        out = backend.laplace(cells, *kernel_args(grid))
    else:
        out = masked_laplace(backend, cells, *kernel_args(grid), open_masks(backend, p.dtype, grid))
    return out.reshape(lead + grid.shape)


def divergence(u, grid):
    """Divergence of the staggered field ``u``: ``Σ_k (u_k[i + e_k] − u_k[i]) / Δx_k`` per cell.

    Parameters
    ----------
    u : tuple of ``D`` Tensors or arrays
        Component ``k`` has shape ``grid.face_shape(k)`` (``n_k`` entries along a periodic axis ``k``,
        ``n_k + 1`` along a non-periodic one), or ``(B, *grid.face_shape(k))`` for a batch.
    grid : gpudp.Grid

    Returns the cell field, shape ``grid.shape`` or ``(B, *grid.shape)`` (a Tensor when a component is a
    Tensor). Gradients flow to every component (the transposed divergence, a hand-written kernel).
    """
    fn = "divergence"
    V.check_grid(fn, grid)
    backend = get_backend()
    _, lead = check_staggered(fn, "u", u, grid, backend)
    return Divergence.apply(*u, grid=grid, backend=backend, lead=lead)


def spatial_gradient(p, grid):
    """Gradient of the cell field ``p`` on the faces: ``(p_f − p_{f−e_k}) / Δx_k`` for component ``k``.

    Ghost values outside the domain: periodic wraps, dirichlet is 0; on a neumann boundary face the gradient
    is 0 (a solid wall), and so on every face that touches a solid cell of ``grid.solid``. ``p`` has shape
    ``grid.shape`` or ``(B, *grid.shape)``. Returns a tuple of ``D`` face arrays (Tensors when ``p`` is a
    Tensor), component ``k`` of shape ``grid.face_shape(k)`` with the same batch prefix. Gradients flow to
    ``p`` through the transposed gradient kernel.
    """
    fn = "spatial_gradient"
    V.check_grid(fn, grid)
    backend = get_backend()
    _, lead = check_cells(fn, "p", p, grid, backend)
    return SpatialGradient.apply(p, grid=grid, backend=backend, lead=lead)


def laplace(p, grid):
    """Laplacian ``Σ_k (p_{i+e_k} − 2 p_i + p_{i−e_k}) / Δx_k²`` of the cell field ``p`` with the grid's ghost
    rules; equals ``divergence(spatial_gradient(p))``, also with obstacles (then faces touching a solid cell
    carry no flux, and the result is 0 in solid cells). ``p`` has shape ``grid.shape`` or
    ``(B, *grid.shape)``; the result has the same shape. Symmetric: its adjoint is itself."""
    fn = "laplace"
    V.check_grid(fn, grid)
    backend = get_backend()
    _, lead = check_cells(fn, "p", p, grid, backend)
    return Laplace.apply(p, grid=grid, backend=backend, lead=lead)
