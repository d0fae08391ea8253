"""Finding, compiling and launching the CUDA C kernels of ``kernels/*.cu`` (the one loader of every file).

Where the sources are:

- an installed wheel ships them inside the package as ``gpudp/kernels/*.cu`` (``pyproject.toml``
  force-includes the repository's ``kernels/`` there);
- a source checkout or editable install has them at ``<repository>/kernels/``.

``GPUDP_KERNEL_DIR`` overrides both. A source's ``#include "x.cuh"`` lines naming a header of the same folder are
inlined before compilation, so NVRTC needs no include path and CuPy's on-disk cache (keyed by the source text)
sees header changes. Each file is compiled once per device with ``cupy.RawModule`` (NVRTC) and kept.

Kernels are looked up by base name and dtype: ``advect_forward`` with float64 data is ``advect_forward_f64``.
Every launch through :func:`launch` increments ``launches[base_name]`` of the given counter.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np

#: Threads per block of every launch; equals GPUDP_BLOCK in kernels/gpudp_common.cuh (the reduction kernels
#: rely on it).
BLOCK = 256

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)
_lock = threading.Lock()
_modules = {}       # (device id, file name) -> cupy.RawModule
_functions = {}     # (device id, file name, kernel name) -> cupy.RawKernel
_sm_counts = {}     # device id -> multiprocessor count


def kernel_dirs():
    """Candidate folders holding the ``.cu`` sources, in the order they are tried."""
    env = os.environ.get("GPUDP_KERNEL_DIR")
    pkg = Path(__file__).resolve().parents[2]          # .../gpudp
    dirs = [Path(env)] if env else []
    dirs += [pkg / "kernels", pkg.parent / "kernels"]
    return dirs


def kernel_dir():
    """The folder the sources are read from; raises ``FileNotFoundError`` naming every place tried."""
    for d in kernel_dirs():
        if (d / "advection.cu").is_file():
            return d
    raise FileNotFoundError("gpudp's CUDA C sources (advection.cu, ...) were not found in any of: " +
                            ", ".join(str(d) for d in kernel_dirs()) +
                            "; reinstall gpudp or set GPUDP_KERNEL_DIR to the folder holding kernels/*.cu")


def source_files():
    """Every ``.cu`` file of the kernel folder, sorted."""
    return sorted(kernel_dir().glob("*.cu"))


def read_source(filename):
    """The text of ``kernels/<filename>`` with its local ``#include "..."`` headers inlined (each once)."""
    folder = kernel_dir()
    seen = set()

    def expand(path):
        text = path.read_text()

        def repl(m):
            inc = folder / m.group(1)
            if not inc.is_file():
                return m.group(0)  # not one of ours: leave it to the compiler
            if inc in seen:
                return ""
            seen.add(inc)
            return f"// ---- begin {m.group(1)} (inlined) ----\n{expand(inc)}\n// ---- end {m.group(1)} ----"

        return _INCLUDE.sub(repl, text)

    return expand(folder / filename)


def suffix(dtype):
    """``f32`` or ``f64`` for a float dtype; ``TypeError`` otherwise."""
    try:
        return _SUFFIX[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"gpudp's CUDA kernels support float32 and float64, got {np.dtype(dtype)}") from None


def _device_id():
    import cupy
    return cupy.cuda.Device().id


def get_module(filename):
    """The compiled ``cupy.RawModule`` of ``kernels/<filename>`` for the current device (cached)."""
    import cupy
    key = (_device_id(), filename)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cupy.RawModule(code=read_source(filename), options=("--std=c++14",))
                _modules[key] = mod
    return mod


def get_function(filename, name):
    """The kernel ``name`` (full name, e.g. ``advect_forward_f64``) of ``kernels/<filename>`` (cached)."""
    key = (_device_id(), filename, name)
    fn = _functions.get(key)
    if fn is None:
        fn = get_module(filename).get_function(name)
        _functions[key] = fn
    return fn


def launch(counter, filename, name, dtype, grid, args):
    """Launch kernel ``name`` (base name; ``dtype`` picks the _f32/_f64 variant, ``None`` for a kernel without
    one) of ``kernels/<filename>`` on the current stream, ``BLOCK`` threads per block. Scalars in ``args``
    must be NumPy scalars of the kernel's parameter types (int32, int64, float32, float64)."""
    full = name if dtype is None else f"{name}_{suffix(dtype)}"
    get_function(filename, full)(tuple(int(g) for g in grid), (BLOCK,), tuple(args))
    counter[name] += 1


def sm_count():
    """Multiprocessor count of the current device (cached)."""
    dev = _device_id()
    n = _sm_counts.get(dev)
    if n is None:
        import cupy
        n = int(cupy.cuda.Device(dev).attributes["MultiProcessorCount"])
        _sm_counts[dev] = n
    return n


def grid_1d(total):
    """Blocks of a grid-stride launch over ``total`` threads (at least 1, at most 2**31 - 1)."""
    return (max(1, min((int(total) + BLOCK - 1) // BLOCK, 2**31 - 1)),)
