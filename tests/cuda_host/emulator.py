"""Runs gpudp's CUDA C kernels (``kernels/*.cu``) on the CPU, for tests on machines without a GPU.

The sources are compiled with the host C++ compiler against ``cuda_host_shim.h`` (which emulates blocks,
threads, ``__shared__`` and ``__syncthreads``) into a shared library; :class:`EmulatedCupyBackend` is the cupy
backend with NumPy arrays and this library in place of CuPy and NVRTC, so the backend's own launch wrappers
(grids, argument lists, ping-pong loops, the CG driver) run unchanged. Every launch checks its arguments against
the kernel's C signature (count, pointer vs. scalar, int32/int64/float32/float64) and CUDA's grid limits.
Blocks have ``block`` threads (default 32, to keep the fibers cheap; the kernels are written for any power of
two, and the GPU uses 256).

Out-of-bounds accesses: ``GPUDP_EMU_SANITIZE=1`` builds with AddressSanitizer and UBSan; run Python with
``LD_PRELOAD=$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0`` so NumPy's buffers get red zones.

What it cannot show: timing, races between blocks (blocks run one after another), memory coalescing, NVRTC
specifics (compile those with ``gpudp.backends.cupy_backend.compile_check``).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from gpudp.backends.cupy_backend import CupyBackend, _module

SHIM = Path(__file__).resolve().parent / "cuda_host_shim.h"
_KERNEL_NAME = re.compile(r'extern\s+"C"\s+void\s+(\w+)\s*\(')
_CODES = {np.int32: "i", np.int64: "q", np.float32: "f", np.float64: "d"}
_CTYPES = {"i": ctypes.c_int32, "q": ctypes.c_int64, "f": ctypes.c_float, "d": ctypes.c_double}
#: Kernels that synchronise their block (run as fibers); any other kernel calling __syncthreads is an error.
_BARRIER_PREFIXES = ("cg_",)


def compiler():
    """The host C++ compiler (``$CXX``, ``g++`` or ``c++``), or ``None``."""
    for cand in (os.environ.get("CXX"), "g++", "c++"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


class Emulator:
    """The kernels of ``kernel_dir`` compiled for the host (cached by content under the temp folder)."""

    def __init__(self, kernel_dir=None, block=32, sanitize=None):
        if sanitize is None:   # GPUDP_EMU_SANITIZE=1: an ASan + UBSan build (run Python with libasan preloaded)
            sanitize = os.environ.get("GPUDP_EMU_SANITIZE", "0") not in ("", "0")
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no host C++ compiler (g++/c++) for the CUDA host emulator")
        kdir = Path(kernel_dir or _module.kernel_dir())
        sources = sorted(kdir.glob("*.cu"))
        names = []
        define = f"-DGPUDP_BLOCK={int(block)}"
        base = [cxx, "-std=c++17", define, "-x", "c++", "-include", str(SHIM), "-I", str(kdir)]
        for src in sources:
            pre = subprocess.run(base + ["-E", "-P", str(src)], capture_output=True, text=True)
            if pre.returncode != 0:
                raise RuntimeError(f"preprocessing {src.name} for the host emulator failed:\n{pre.stderr}")
            names += [n for n in _KERNEL_NAME.findall(pre.stdout) if not n.startswith("gpudp_emu_")]
        lines = [f'#include "{SHIM}"'] + [f'#include "{s}"' for s in sources]
        lines.append('extern "C" int gpudp_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, '
                     'unsigned bx, unsigned by, unsigned bz, void** args, int fibers) {\n  try {')
        for n in names:
            lines.append(f'    if (!std::strcmp(name, "{n}")) {{ gpudp_emu_run({n}, dim3{{gx, gy, gz}}, '
                         f'dim3{{bx, by, bz}}, args, fibers); return 0; }}')
        lines.append('  } catch (const std::exception&) { return -2; }\n  return -1;\n}')
        lines.append('extern "C" const char* gpudp_emu_signature(const char* name) {\n  static std::string s;')
        for n in names:
            lines.append(f'  if (!std::strcmp(name, "{n}")) {{ s = gpudp_emu_signature_of({n}); return s.c_str(); }}')
        lines.append('  return "";\n}\n')
        text = "\n".join(lines)
        digest = hashlib.sha256("\0".join(
            [text, SHIM.read_text(), define, str(sanitize)] + [p.read_text() for p in sorted(kdir.glob("*.cu*"))]
        ).encode()).hexdigest()[:20]
        build = Path(tempfile.gettempdir()) / f"gpudp-cuda-host-{os.getuid()}"
        build.mkdir(exist_ok=True)
        lib = build / f"kernels-{digest}.so"
        if not lib.exists():
            cpp = build / f"kernels-{digest}.{os.getpid()}.cpp"   # per process: parallel test runs
            cpp.write_text(text)
            flags = ["-O2"]
            if sanitize:   # ASan follows ucontext fibers, not the hand-written stack switch
                flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-DGPUDP_EMU_UCONTEXT"]
            tmp = build / f"kernels-{digest}.{os.getpid()}.so"
            proc = subprocess.run([cxx, "-std=c++17", define, "-shared", "-fPIC", "-Wall", "-Wno-unknown-pragmas",
                                   *flags, "-I", str(kdir), "-o", str(tmp), str(cpp)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling the kernels for the host emulator failed:\n{proc.stderr}")
            os.replace(tmp, lib)
            cpp.unlink()
        self.names = names
        self.block = int(block)
        self.lib = ctypes.CDLL(str(lib))
        self.lib.gpudp_emu_launch.restype = ctypes.c_int
        self.lib.gpudp_emu_signature.restype = ctypes.c_char_p

    def signature(self, name):
        if name not in self.names:
            raise KeyError(f"the kernels define no {name!r} (they define {self.names})")
        return self.lib.gpudp_emu_signature(name.encode()).decode()

    def launch(self, name, grid, block, args):
        sig = self.signature(name)
        if len(args) != len(sig):
            raise TypeError(f"{name}: {len(args)} arguments for a kernel of {len(sig)} parameters ({sig})")
        keep = []
        for i, (a, code) in enumerate(zip(args, sig)):
            if isinstance(a, np.ndarray):
                if code != "p":
                    raise TypeError(f"{name}: argument {i} is an array where the kernel takes '{code}'")
                if not a.flags.c_contiguous:
                    raise TypeError(f"{name}: argument {i} is not C-contiguous")
                keep.append(ctypes.c_void_p(a.ctypes.data))
            else:
                got = _CODES.get(type(a))
                if got != code:
                    raise TypeError(f"{name}: argument {i} is {type(a).__name__} where the kernel takes '{code}'")
                keep.append(_CTYPES[code](a.item()))
        argv = (ctypes.c_void_p * max(1, len(keep)))(*[ctypes.cast(ctypes.pointer(k), ctypes.c_void_p)
                                                       for k in keep])
        g = tuple(int(v) for v in grid) + (1,) * (3 - len(grid))
        b = tuple(int(v) for v in block) + (1,) * (3 - len(block))
        if not (1 <= g[0] <= 2**31 - 1 and 1 <= g[1] <= 65535 and 1 <= g[2] <= 65535
                and min(b) >= 1 and b[0] * b[1] * b[2] <= 1024):
            raise ValueError(f"{name}: launch configuration {g} x {b} is outside CUDA's limits")
        fibers = int(name.startswith(_BARRIER_PREFIXES))
        rc = self.lib.gpudp_emu_launch(name.encode(), *g, *b, argv, fibers)
        if rc == -2:
            raise RuntimeError(f"{name} called __syncthreads but is not listed as a barrier kernel")
        if rc != 0:
            raise RuntimeError(f"the emulator could not launch {name} (rc {rc})")


class _NumpyAsCupy:
    """The few CuPy functions the launch wrappers use, served by NumPy."""

    ndarray = np.ndarray

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asnumpy(x):
        return np.asarray(x)


class EmulatedCupyBackend(CupyBackend):
    """The cupy backend's wrappers and kernels on NumPy arrays, kernels run by :class:`Emulator`."""

    def __init__(self, emulator=None):   # not CupyBackend.__init__, which needs CuPy and a device
        self.emulator = emulator or Emulator()
        self.xp = np
        self.cp = _NumpyAsCupy()
        self.launches = Counter()
        self.device = "CUDA host emulator (CPU)"

    def launch(self, filename, name, dtype, grid, args):
        full = name if dtype is None else f"{name}_{_module.suffix(dtype)}"
        self.emulator.launch(full, grid, (self.emulator.block,), args)
        self.launches[name] += 1

    def sm_count(self):
        return 2

    def synchronize(self):
        pass
