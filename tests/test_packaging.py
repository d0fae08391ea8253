"""``pip install ".[test]"`` must resolve where CuPy has no wheels: the CUDA packages of the ``test`` extra carry
environment markers. ``pip --dry-run --platform`` cannot check this (pip evaluates markers for the running
interpreter, not the target platform), so the markers are evaluated here for each target environment."""
import sys
from pathlib import Path

import pytest

packaging = pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
CUDA_PACKAGES = {"cupy-cuda13x", "cupy-cuda12x", "numba-cuda"}


def _env(sys_platform, platform_system, machine):
    return {"sys_platform": sys_platform, "platform_system": platform_system, "platform_machine": machine,
            "python_version": "3.11", "python_full_version": "3.11.7", "os_name": "nt" if sys_platform == "win32"
            else "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "extra": "test"}


TARGETS = {
    "linux-x86_64": (_env("linux", "Linux", "x86_64"), {"cupy-cuda13x", "numba-cuda"}),
    "linux-aarch64": (_env("linux", "Linux", "aarch64"), {"cupy-cuda13x", "numba-cuda"}),
    "windows-amd64": (_env("win32", "Windows", "AMD64"), {"cupy-cuda13x", "numba-cuda"}),
    "macos-arm64": (_env("darwin", "Darwin", "arm64"), set()),
    "macos-x86_64": (_env("darwin", "Darwin", "x86_64"), set()),
    "linux-ppc64le": (_env("linux", "Linux", "ppc64le"), {"numba-cuda"}),
}


def _test_extra():
    with PYPROJECT.open("rb") as f:
        project = tomllib.load(f)["project"]
    return [Requirement(r) for r in project["optional-dependencies"]["test"]], \
        [Requirement(r) for r in project["dependencies"]]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_cuda_packages_only_where_they_install(target):
    env, expected_cuda = TARGETS[target]
    extra, base = _test_extra()
    chosen = {r.name for r in extra if r.marker is None or r.marker.evaluate(env)}
    assert chosen & CUDA_PACKAGES == expected_cuda, f"{target}: the test extra selects {sorted(chosen)}"
    # what the tests themselves need is there everywhere
    assert {"pytest", "matplotlib"} <= chosen
    assert {r.name for r in base if r.marker is None or r.marker.evaluate(env)} >= {"numpy", "numba", "scipy"}
