"""Compile every ``kernels/*.cu`` with ``nvcc`` (no GPU needed); exit status 1 on any failure.

    python -m gpudp.backends.cupy_backend.compile_check [--arch sm_90] [--nvcc PATH] [--ptx]

The sources are found the way the cupy backend finds them (``_module.kernel_dir``); each is compiled to an
object (or to PTX with ``--ptx``) that is thrown away. Exit status 2 when ``nvcc`` is missing.
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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpudp.backends.cupy_backend.compile_check",
                                 description="Compile gpudp's CUDA C kernels with nvcc.")
    ap.add_argument("--arch", default="sm_90", help="target architecture (default sm_90)")
    ap.add_argument("--nvcc", default=None, help="nvcc to use (default: $NVCC, PATH, $CUDA_HOME/bin)")
    ap.add_argument("--ptx", action="store_true", help="stop at PTX instead of compiling to an object")
    args = ap.parse_args(argv)
    nvcc = find_nvcc(args.nvcc)
    if nvcc is None:
        print("compile_check: nvcc not found (set NVCC or CUDA_HOME, or put nvcc on PATH)", file=sys.stderr)
        return 2
    results = compile_all(nvcc, args.arch, args.ptx)
    if not results:
        print(f"compile_check: no .cu files in {kernel_dir()}", file=sys.stderr)
        return 1
    for name, ok, log in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        if log:
            print("    " + log.replace("\n", "\n    "))
    failed = [name for name, ok, _ in results if not ok]
    print(f"compile_check: {len(results) - len(failed)} of {len(results)} compiled with {nvcc} "
          f"(-arch={args.arch})" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
