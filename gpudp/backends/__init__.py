"""Backend discovery and selection.

Three backends implement the same kernel interface (:class:`gpudp.backends.base.Backend`):

``cupy``        CuPy arrays; CUDA C kernels from ``kernels/*.cu`` compiled with NVRTC.
``numba-cuda``  ``numba.cuda.jit`` kernels; CuPy arrays where CuPy is usable, else Numba device arrays
                (also under Numba's CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``).
``cpu``         NumPy arrays; ``numba.njit(parallel=True)`` kernels.

Probing never raises: a backend that cannot run is reported unavailable with the reason. ``auto`` picks the
first available of ``cupy``, ``numba-cuda`` (real device only, never the simulator) and ``cpu``.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections import namedtuple

from ..errors import BackendError

BACKEND_NAMES = ("cupy", "numba-cuda", "cpu")

#: What :func:`available_backends` reports per backend.
BackendInfo = namedtuple("BackendInfo", ["name", "available", "device", "reason"])

_probe_cache = {}
_instances = {}
_lock = threading.Lock()


class _State(threading.local):
    stack = None  # this thread's use_backend() stack (a list of names), None until the first use


_state = _State()
_default = {"name": None}


def _cuda_simulator():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _probe_cupy():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA installation
        return False, "", f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return False, "", "CuPy found no CUDA device"
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        cupy.zeros(1).sum().item()  # a real runtime call: fails on a missing or too old driver
    except Exception as exc:
        return False, "", f"CuPy is installed but no CUDA device answers ({type(exc).__name__}: {exc})"
    return True, f"{name} (device {cupy.cuda.Device().id})", ""


def _probe_numba_cuda():
    try:
        from numba import cuda
    except Exception as exc:
        return False, "", f"numba.cuda is not importable ({type(exc).__name__}: {exc})"
    if _cuda_simulator():
        return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1, runs on the CPU)", ""
    try:
        if not cuda.is_available():
            return False, "", "Numba sees no CUDA device (no GPU or no driver; set NUMBA_ENABLE_CUDASIM=1 " \
                              "to run the kernels under the simulator)"
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    except Exception as exc:
        return False, "", f"Numba CUDA could not open a device ({type(exc).__name__}: {exc})"
    return True, f"{name} (device {dev.id})", ""


def _probe_cpu():
    try:
        import numba
    except Exception as exc:
        return False, "", f"Numba is not importable ({type(exc).__name__}: {exc})"
    import platform
    return True, f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, Numba " \
                 f"{numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads)", ""


_PROBES = {"cupy": _probe_cupy, "numba-cuda": _probe_numba_cuda, "cpu": _probe_cpu}


def backend_info(name):
    """:class:`BackendInfo` of one backend (probed once, then cached)."""
    _check_name(name)
    with _lock:
        if name not in _probe_cache:
            ok, device, reason = _PROBES[name]()
            _probe_cache[name] = BackendInfo(name, ok, device, reason)
        return _probe_cache[name]


def available_backends():
    """A dict ``name -> BackendInfo(name, available, device, reason)`` for every backend, in ``auto``'s order
    of preference. ``reason`` says why an unavailable backend cannot run."""
    return {name: backend_info(name) for name in BACKEND_NAMES}


def _check_name(name):
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; expected one of {list(BACKEND_NAMES) + ['auto']}")


def _resolve(name):
    if name is None or name == "auto":
        for cand in BACKEND_NAMES:
            if cand == "numba-cuda" and _cuda_simulator():
                continue  # the simulator is for testing kernels, never an automatic choice
            if backend_info(cand).available:
                return cand
        raise BackendError("no backend is available: " + "; ".join(
            f"{n}: {i.reason}" for n, i in available_backends().items()))
    _check_name(name)
    info = backend_info(name)
    if not info.available:
        raise BackendError(f"backend {name!r} is not available: {info.reason}")
    return name


def get_backend(name=None):
    """The backend object called ``name``, or the active one when ``name`` is None."""
    if name is None:
        stack = _state.stack
        name = stack[-1] if stack else _default["name"] or current_backend_name()  # resolved and available
        inst = _instances.get(name)
        if inst is not None:
            return inst
    name = _resolve(name)
    with _lock:
        if name not in _instances:
            if name == "cpu":
                from .cpu import CpuBackend as cls
            elif name == "numba-cuda":
                from .numba_cuda import NumbaCudaBackend as cls
            else:
                from .cupy_backend import CupyBackend as cls
            _instances[name] = cls()
        return _instances[name]


def current_backend_name():
    """Name of the active backend (resolving ``auto`` and ``GPUDP_BACKEND`` on first use)."""
    override = _state.stack
    if override:
        return override[-1]
    if _default["name"] is None:
        _default["name"] = _resolve(os.environ.get("GPUDP_BACKEND", "auto") or "auto")
    return _default["name"]


def set_backend(name):
    """Make ``name`` (``"cupy"``, ``"numba-cuda"``, ``"cpu"`` or ``"auto"``) the active backend.

    Raises :class:`gpudp.BackendError` with the reason when it is unavailable."""
    _default["name"] = _resolve(name)
    return _default["name"]


@contextlib.contextmanager
def use_backend(name):
    """Context manager: ``with gpudp.use_backend("cpu"): ...`` (thread-local, nestable)."""
    resolved = _resolve(name)
    stack = _state.stack
    if stack is None:
        stack = _state.stack = []
    stack.append(resolved)
    try:
        yield get_backend(resolved)
    finally:
        stack.pop()
