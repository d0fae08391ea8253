"""Compile every ``kernels/*.cu`` with ``nvcc`` (no GPU needed); exit status 1 on any failure.

    python -m gpudp.backends.cupy_backend.compile_check [--arch sm_90] [--nvcc PATH] [--ptx] [--nvrtc]

The sources are found the way the cupy backend finds them (``_module.kernel_dir``); each is compiled to an
object (or to PTX with ``--ptx``) that is thrown away, with warnings as errors. ``--nvrtc`` also compiles the
text the backend hands to NVRTC (headers inlined) with the NVRTC library CuPy loads, which needs no GPU
either. Exit status 2 when ``nvcc`` (or, with ``--nvrtc``, NVRTC) is missing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from ._module import kernel_dir, source_files


def find_nvcc(explicit=None):
    """Path of ``nvcc``: ``explicit``, ``$NVCC``, ``PATH``, then ``$CUDA_HOME/bin`` and ``/usr/local/cuda/bin``."""
    for cand in (explicit, os.environ.get("NVCC")):
        if cand:
            return cand
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return None


def compile_all(nvcc, arch="sm_90", ptx=False, werror=True):
    """Compile every source; returns a list of ``(file name, ok, compiler output)``."""
    results = []
    folder = kernel_dir()
    with tempfile.TemporaryDirectory() as tmp:
        for src in source_files():
            out = os.path.join(tmp, src.stem + (".ptx" if ptx else ".o"))
            cmd = [nvcc, f"-arch={arch}", "-std=c++14", "-I", str(folder), "-o", out,
                   "--ptx" if ptx else "-c", str(src)]
            if werror:
                cmd[1:1] = ["-Werror", "all-warnings"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            results.append((src.name, proc.returncode == 0, (proc.stdout + proc.stderr).strip()))
    return results


def nvrtc_compile_all(arch="compute_90"):
    """Compile every source as the backend does, through NVRTC (``cupy_backends``' binding, no device needed).

    Returns a list of ``(file name, ok, log)``; raises ``RuntimeError`` when NVRTC cannot be loaded."""
    from ._module import read_source
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as exc:  # CuPy missing, or no libnvrtc on this machine
        raise RuntimeError(f"NVRTC is not available ({type(exc).__name__}: {exc})") from None
    results = []
    for src in source_files():
        prog = nvrtc.createProgram(read_source(src.name), src.name, (), ())
        try:
            nvrtc.compileProgram(prog, ("--std=c++14", f"-arch={arch}"))
            ok = True
        except Exception:
            ok = False
        log = nvrtc.getProgramLog(prog)
        log = log.decode() if isinstance(log, bytes) else str(log)
        nvrtc.destroyProgram(prog)
        results.append((src.name, ok, log.strip()))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpudp.backends.cupy_backend.compile_check",
                                 description="Compile gpudp's CUDA C kernels with nvcc.")
    ap.add_argument("--arch", default="sm_90", help="target architecture (default sm_90)")
    ap.add_argument("--nvcc", default=None, help="nvcc to use (default: $NVCC, PATH, $CUDA_HOME/bin)")
    ap.add_argument("--ptx", action="store_true", help="stop at PTX instead of compiling to an object")
    ap.add_argument("--nvrtc", action="store_true", help="also compile with NVRTC, as the backend does")
    args = ap.parse_args(argv)
    nvcc = find_nvcc(args.nvcc)
    if nvcc is None:
        print("compile_check: nvcc not found (set NVCC or CUDA_HOME, or put nvcc on PATH)", file=sys.stderr)
        return 2
    runs = [(f"{nvcc} -arch={args.arch}", compile_all(nvcc, args.arch, args.ptx))]
    if args.nvrtc:
        arch = "compute_" + args.arch.split("_")[-1]
        try:
            runs.append((f"NVRTC -arch={arch}", nvrtc_compile_all(arch)))
        except RuntimeError as exc:
            print(f"compile_check: {exc}", file=sys.stderr)
            return 2
    status = 0
    for compiler, results in runs:
        if not results:
            print(f"compile_check: no .cu files in {kernel_dir()}", file=sys.stderr)
            return 1
        for name, ok, log in results:
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
            if log:
                print("    " + log.replace("\n", "\n    "))
        failed = [name for name, ok, _ in results if not ok]
        print(f"compile_check: {len(results) - len(failed)} of {len(results)} compiled with {compiler}"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
        status = status or (1 if failed else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
