"""gpudp.Grid: construction, validation and derived properties."""
import math

import numpy as np
import pytest

import gpudp


def test_int_shape_is_1d_and_defaults():
    g = gpudp.Grid(16)
    assert g.shape == (16,) and g.ndim == 1 and g.size == 16
    assert g.spacing == (1.0,) and g.boundary == ("periodic",)


def test_per_axis_spacing_and_boundary():
    g = gpudp.Grid((4, 5, 6), spacing=(0.5, 1, 2.0), boundary=("periodic", "dirichlet", "neumann"))
    assert g.shape == (4, 5, 6) and g.ndim == 3 and g.size == 120
    assert g.spacing == (0.5, 1.0, 2.0)
    assert all(isinstance(h, float) for h in g.spacing)
    assert g.boundary == ("periodic", "dirichlet", "neumann")
    assert g.boundary_codes == (0, 1, 2)


def test_scalar_spacing_and_boundary_apply_to_every_axis():
    g = gpudp.Grid((3, 4), spacing=0.25, boundary="neumann")
    assert g.spacing == (0.25, 0.25) and g.boundary == ("neumann", "neumann")


@pytest.mark.parametrize("shape", [0, -3, (), (2, 3, 4, 5), (4, 0), (2.5,), (True, 3), "abc", None, (4, -1)])
def test_bad_shape(shape):
    with pytest.raises(gpudp.GridError, match="shape"):
        gpudp.Grid(shape)


@pytest.mark.parametrize("spacing", [0, -1.0, float("nan"), float("inf"), (1.0,), (1.0, 2.0, 3.0), (1.0, 0.0),
                                     "x", True, None])
def test_bad_spacing(spacing):
    with pytest.raises(gpudp.GridError, match="spacing"):
        gpudp.Grid((4, 4), spacing=spacing)


@pytest.mark.parametrize("boundary", ["wall", ("periodic",), ("periodic", "open"), ("periodic",) * 3, None])
def test_bad_boundary(boundary):
    with pytest.raises(gpudp.GridError, match="boundary"):
        gpudp.Grid((4, 4), boundary=boundary)


def test_unknown_boundary_message_lists_the_choices():
    with pytest.raises(gpudp.GridError) as err:
        gpudp.Grid(8, boundary="wall")
    msg = str(err.value)
    assert "'wall'" in msg and "periodic" in msg and "dirichlet" in msg and "neumann" in msg


def test_grid_error_is_a_value_error():
    assert issubclass(gpudp.GridError, ValueError)
    assert issubclass(gpudp.GridError, gpudp.GpudpError)


def test_value_semantics():
    a = gpudp.Grid((4, 4), spacing=0.5, boundary="dirichlet")
    b = gpudp.Grid([4, 4], spacing=(0.5, 0.5), boundary=("dirichlet", "dirichlet"))
    c = gpudp.Grid((4, 4), spacing=0.5)
    assert a == b and hash(a) == hash(b)
    assert a != c and a != "grid"
    assert len({a, b, c}) == 2
    assert "Grid(" in repr(a) and "dirichlet" in repr(a)
    with pytest.raises(AttributeError):
        a.shape = (2, 2)


def test_face_shape_and_singularity():
    g = gpudp.Grid((4, 5), boundary=("periodic", "neumann"))
    assert g.face_shape(0) == (4, 5)
    assert g.face_shape(1) == (4, 6)
    assert g.is_singular
    assert not gpudp.Grid((4, 5), boundary=("periodic", "dirichlet")).is_singular
    assert gpudp.Grid(8).is_singular


def test_cell_centers():
    g = gpudp.Grid((4, 2), spacing=(0.25, 3.0))
    np.testing.assert_allclose(g.cell_centers(0), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(g.cell_centers(1), [1.5, 4.5])
    assert g.cell_centers().dtype == np.float64
    assert math.isclose(gpudp.Grid(128, spacing=1 / 128).cell_centers()[-1], 1 - 0.5 / 128)
