"""Shared pytest fixtures.

``backend``: parametrised over the backends. ``cpu`` always runs; ``numba-cuda`` is marked ``cudasim`` (it runs
under ``NUMBA_ENABLE_CUDASIM=1`` or on a GPU); ``cupy`` is marked ``gpu``. A backend that cannot run here is
skipped with the reason :func:`gpudp.available_backends` gives, so the plain run skips nothing silently;
a backend named in ``GPUDP_REQUIRE_BACKENDS`` fails instead of skipping.
Tests that do not ask for ``backend`` run on the ``cpu`` backend whatever ``auto`` would pick.
"""
import collections
import os

import numpy as np
import pytest

import gpudp
from gpudp import arrays as _arrays

#: Backends that must run rather than skip (comma-separated names), e.g. ``numba-cuda`` in CI's simulator run.
REQUIRED_BACKENDS = {n.strip() for n in os.environ.get("GPUDP_REQUIRE_BACKENDS", "").split(",") if n.strip()}

BACKEND_PARAMS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("numba-cuda", id="numba-cuda", marks=pytest.mark.cudasim),
    pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
]


class BackendHarness:
    """The active backend of a test, with helpers to move NumPy data to it and back."""

    def __init__(self, name, impl):
        self.name = name
        self.impl = impl
        info = gpudp.available_backends()[name]
        self.device = info.device
        #: True under Numba's CUDA simulator: keep grids small there.
        self.simulated = name == "numba-cuda" and "simulator" in info.device.lower()

    def small(self, shape, cap=None):
        """``shape`` with every axis capped at ``cap`` cells (default 3, in 3-D 2) under the CUDA simulator,
        unchanged elsewhere."""
        if not self.simulated:
            return tuple(shape)
        cap = cap or (2 if len(shape) == 3 else 3)
        return tuple(min(n, cap) for n in shape)

    def simulate_only(self, selected):
        """Skip under the CUDA simulator unless ``selected``: slow tests run a representative subset there."""
        if self.simulated and not selected:
            pytest.skip("CUDA simulator: this test runs a representative subset of its cases there")

    def count_calls(self, monkeypatch, method):
        """Count the calls of one kernel method of this backend (e.g. ``"cg_solve"``): returns a list that
        grows by one entry per call for the rest of the test."""
        calls = []
        original = getattr(self.impl, method)

        def counted(*args, **kwargs):
            calls.append(method)
            return original(*args, **kwargs)
        monkeypatch.setattr(self.impl, method, counted)
        return calls

    def asarray(self, x, dtype=None):
        """A NumPy array (or list) as an array of this backend."""
        return gpudp.asarray(np.asarray(x) if not _arrays.is_array(x) else x, dtype=dtype)

    def tensor(self, x, requires_grad=False, dtype=None):
        return gpudp.tensor(np.asarray(x), requires_grad=requires_grad, dtype=dtype)

    def to_numpy(self, x):
        return np.array(gpudp.to_numpy(x), copy=True)

    def is_own(self, x):
        return self.impl.is_own(x.data if isinstance(x, gpudp.Tensor) else x)

    def __repr__(self):
        return f"<backend {self.name}: {self.device}>"


@pytest.fixture(autouse=True)
def _cpu_by_default():
    """Run every test on ``cpu`` unless it activates another backend (e.g. through ``backend``)."""
    with gpudp.use_backend("cpu"):
        yield


def activate_backend(name):
    """Generator for backend fixtures: skip (or, for a backend in ``GPUDP_REQUIRE_BACKENDS``, fail) when
    ``name`` cannot run here, else activate it and yield its :class:`BackendHarness`."""
    info = gpudp.available_backends()[name]
    if not info.available:
        if name in REQUIRED_BACKENDS:
            pytest.fail(f"backend {name!r} is required (GPUDP_REQUIRE_BACKENDS) but unavailable: {info.reason}")
        pytest.skip(f"backend {name!r} is not available here: {info.reason}")
    with gpudp.use_backend(name) as impl:
        yield BackendHarness(name, impl)


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Activate one backend for the test (``gpudp.use_backend``) and hand over a :class:`BackendHarness`."""
    yield from activate_backend(request.param)


# -- the skip summary: one line per reason with a count ------------------------------------------------------

def _skip_reason(report):
    """The reason of a skipped test's report, without pytest's ``Skipped: `` prefix and without its location."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def pytest_terminal_summary(terminalreporter):
    """Summarise the skipped tests by reason (a line each, most frequent first) instead of pytest's ``-rs``
    listing, which prints a line per test location."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if getattr(r, "longrepr", None) is not None]
    if not skipped:
        return
    counts = collections.Counter(_skip_reason(r) for r in skipped)
    terminalreporter.section(f"{len(skipped)} skipped, by reason", sep="-")
    for reason, n in counts.most_common():
        terminalreporter.line(f"{n:6d}  {reason}")
