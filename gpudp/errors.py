"""Exception classes of gpudp.

Every error derives from :class:`GpudpError`; most also derive from the built-in exception a NumPy user
would expect (``ValueError``, ``TypeError``, ``RuntimeError``) so existing ``except`` clauses keep working.
"""


class GpudpError(Exception):
    """Base class of every error raised by gpudp."""


class BackendError(GpudpError, RuntimeError):
    """A backend was asked for that is unknown or unavailable on this machine, or arrays of another backend
    were passed to an operator."""


class GridError(GpudpError, ValueError):
    """A :class:`gpudp.Grid` was constructed with invalid parameters."""


class ShapeError(GpudpError, ValueError):
    """An array's shape does not fit the grid or the other arguments of a call."""


class StabilityError(GpudpError, ValueError):
    """An explicit time step violates its stability (CFL) condition."""


class SolveError(GpudpError, RuntimeError):
    """An iterative solver did not converge. Carries ``iterations`` and ``residual``."""

    def __init__(self, message, iterations=None, residual=None):
        super().__init__(message)
        self.iterations = iterations
        self.residual = residual


class ProblemError(GpudpError, RuntimeError):
    """Problems of a batched run failed (:mod:`gpudp.dask`). Carries ``errors``: ``{problem index: exception}``."""

    def __init__(self, message, errors=None):
        super().__init__(message)
        self.errors = dict(errors or {})


class TapeError(GpudpError, RuntimeError):
    """The tape was misused: backward twice, a non-scalar loss without a seed, a tensor modified in place
    after it was recorded, nested tapes."""


class GradcheckError(GpudpError, AssertionError):
    """:func:`gpudp.gradcheck` found a gradient that disagrees with finite differences."""
