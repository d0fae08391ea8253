"""gpudp objects that cross process boundaries (Dask workers, multiprocessing) pickle and round-trip."""
import inspect
import pickle

import numpy as np
import pytest

import gpudp
from gpudp import errors


def roundtrip(obj):
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


@pytest.mark.parametrize("make", [
    lambda: gpudp.Grid(16, spacing=1 / 16, boundary="periodic"),
    lambda: gpudp.Grid((8, 12), spacing=(0.5, 0.25), boundary=("dirichlet", "neumann")),
    lambda: gpudp.Grid((4, 5, 6), spacing=0.1, boundary="neumann"),
], ids=["1d-periodic", "2d-mixed", "3d-neumann"])
def test_grid_roundtrip(make):
    grid = make()
    copy = roundtrip(grid)
    assert copy == grid
    assert copy.shape == grid.shape and copy.spacing == grid.spacing and copy.boundary == grid.boundary
    assert hash(copy) == hash(grid)


def test_grid_with_obstacles_roundtrip():
    solid = np.zeros((10, 8), bool)
    solid[3:6, 2:5] = True
    grid = gpudp.Grid((10, 8), spacing=0.1, boundary="dirichlet", solid=solid)
    copy = roundtrip(grid)
    assert copy == grid
    np.testing.assert_array_equal(gpudp.to_numpy(copy.solid), solid)
    other = solid.copy()
    other[0, 0] = True
    assert roundtrip(gpudp.Grid((10, 8), spacing=0.1, boundary="dirichlet", solid=other)) != grid


def test_tensor_roundtrip_keeps_data_and_requires_grad():
    data = np.random.default_rng(0).random((3, 4))
    t = gpudp.tensor(data, requires_grad=True)
    copy = roundtrip(t)
    assert isinstance(copy, gpudp.Tensor)
    assert copy.requires_grad and copy.grad is None
    np.testing.assert_array_equal(gpudp.to_numpy(copy), data)
    assert copy.data is not t.data
    assert not roundtrip(gpudp.tensor(data)).requires_grad


def test_tensor_from_a_tape_comes_back_as_a_fresh_leaf():
    """A recorded tensor pickles its data only: the copy is on no tape, a leaf of its own."""
    u = gpudp.tensor(np.linspace(0.0, 1.0, 5), requires_grad=True)
    with gpudp.Tape() as tape:
        y = u * 3.0
        loss = (y * y).sum()
    y.grad = np.ones(5)
    copy = roundtrip(y)
    assert copy.grad is None and copy.version == 0
    np.testing.assert_array_equal(gpudp.to_numpy(copy), 3.0 * np.linspace(0.0, 1.0, 5))
    # the original tape still differentiates; the copy is not part of it
    g = tape.gradient(loss, u)
    np.testing.assert_allclose(gpudp.to_numpy(g), 18.0 * np.linspace(0.0, 1.0, 5))
    with gpudp.Tape() as tape2:
        z = (copy * copy).sum()
    np.testing.assert_allclose(gpudp.to_numpy(tape2.gradient(z, copy)), 6.0 * np.linspace(0.0, 1.0, 5))


def test_solve_info_roundtrip():
    grid = gpudp.Grid((8, 8), spacing=1 / 8, boundary="dirichlet")
    b = np.random.default_rng(1).standard_normal((8, 8))
    _, info = gpudp.poisson_solve(b, grid, return_info=True)
    copy = roundtrip(info)
    assert copy == info and type(copy) is type(info)
    assert copy.iterations == info.iterations and copy.converged


def test_rollout_and_backend_info_roundtrip():
    info = gpudp.revolve_counts(100, 10)
    assert roundtrip(info) == info
    backends = gpudp.available_backends()
    assert "cpu" in backends
    for b in backends.values():
        assert roundtrip(b) == b


def _error_classes():
    return sorted((cls for _, cls in inspect.getmembers(errors, inspect.isclass)
                   if issubclass(cls, Exception) and cls.__module__ == errors.__name__), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_roundtrips(cls):
    err = cls(f"{cls.__name__}: what was given, what was expected")
    copy = roundtrip(err)
    assert type(copy) is cls and str(copy) == str(err) and copy.args == err.args
    assert isinstance(copy, errors.GpudpError)


def test_solve_error_keeps_its_attributes():
    err = errors.SolveError("poisson_solve: CG did not converge", iterations=123, residual=4.5e-3)
    copy = roundtrip(err)
    assert (copy.iterations, copy.residual, str(copy)) == (123, 4.5e-3, str(err))


def test_problem_error_keeps_the_errors_by_index():
    inner = errors.StabilityError("advect_upwind: CFL number 8 exceeds 1")
    err = errors.ProblemError("1 of 24 problems failed", {13: inner})
    copy = roundtrip(err)
    assert str(copy) == str(err) and list(copy.errors) == [13]
    assert type(copy.errors[13]) is errors.StabilityError and str(copy.errors[13]) == str(inner)


def test_solve_error_from_a_solver_roundtrips():
    grid = gpudp.Grid((16, 16), spacing=1 / 16, boundary="dirichlet")
    b = np.random.default_rng(2).standard_normal((16, 16))
    with pytest.raises(errors.SolveError) as caught:
        gpudp.poisson_solve(b, grid, tol=1e-12, maxiter=2, preconditioner="none")
    copy = roundtrip(caught.value)
    assert copy.iterations == caught.value.iterations and copy.residual == caught.value.residual
    assert str(copy) == str(caught.value)
