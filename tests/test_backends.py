"""Backend discovery and selection: available_backends, set_backend, use_backend, GPUDP_BACKEND, the CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gpudp

NAMES = ("cupy", "numba-cuda", "cpu")


def _python(code, **env):
    """Run ``code`` in a fresh interpreter with extra environment variables; return the CompletedProcess."""
    full = dict(os.environ)
    for key in ("GPUDP_BACKEND", "NUMBA_ENABLE_CUDASIM"):
        full.pop(key, None)
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def _unavailable():
    return [n for n, i in gpudp.available_backends().items() if not i.available]


def test_available_backends_reports_every_backend():
    info = gpudp.available_backends()
    assert tuple(info) == NAMES  # auto's order of preference
    for name, i in info.items():
        assert isinstance(i, gpudp.BackendInfo)
        assert i.name == name
        assert isinstance(i.available, bool)
        if i.available:
            assert i.device and i.reason == ""
        else:
            assert i.reason, f"{name} is unavailable without a reason"
    assert info["cpu"].available


def test_cpu_device_description():
    assert "cores" in gpudp.available_backends()["cpu"].device


def test_use_backend_activates_nests_and_restores():
    assert gpudp.current_backend_name() == "cpu"  # conftest runs tests on cpu
    with gpudp.use_backend("cpu") as b:
        assert b.name == "cpu" and gpudp.get_backend() is b
        assert gpudp.current_backend_name() == "cpu"
        with gpudp.use_backend("auto"):
            assert gpudp.current_backend_name() in NAMES
        assert gpudp.current_backend_name() == "cpu"
    assert gpudp.current_backend_name() == "cpu"


def test_use_backend_restores_after_an_exception():
    with pytest.raises(KeyError):
        with gpudp.use_backend("cpu"):
            raise KeyError("boom")
    assert gpudp.current_backend_name() == "cpu"


@pytest.mark.parametrize("call", [gpudp.set_backend, gpudp.get_backend,
                                  lambda n: gpudp.use_backend(n).__enter__()])
def test_unknown_backend(call):
    with pytest.raises(gpudp.BackendError) as err:
        call("tpu")
    msg = str(err.value)
    assert "'tpu'" in msg and "cpu" in msg and "cupy" in msg and "numba-cuda" in msg


def test_unavailable_backend_raises_with_the_reason():
    missing = _unavailable()
    if not missing:
        pytest.skip("every backend is available on this machine")
    name = missing[0]
    reason = gpudp.available_backends()[name].reason
    for call in (gpudp.set_backend, lambda n: gpudp.use_backend(n).__enter__(), gpudp.get_backend):
        with pytest.raises(gpudp.BackendError) as err:
            call(name)
        assert name in str(err.value) and reason in str(err.value)
    assert gpudp.current_backend_name() == "cpu"


def test_backend_error_is_a_runtime_error():
    assert issubclass(gpudp.BackendError, RuntimeError) and issubclass(gpudp.BackendError, gpudp.GpudpError)


def test_set_backend_in_a_fresh_process():
    r = _python("import gpudp\n"
                "print(gpudp.set_backend('cpu'))\n"
                "print(gpudp.current_backend_name())\n"
                "print(gpudp.get_backend().name)\n"
                "print(gpudp.set_backend('auto') in ('cupy', 'numba-cuda', 'cpu'))\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["cpu", "cpu", "cpu", "True"]


def test_gpudp_backend_environment_variable():
    r = _python("import gpudp; print(gpudp.current_backend_name())", GPUDP_BACKEND="cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "cpu"


def test_gpudp_backend_unknown_name_fails_on_first_use_not_on_import():
    code = ("import gpudp\n"
            "print('imported')\n"
            "try:\n"
            "    gpudp.current_backend_name()\n"
            "except gpudp.BackendError as exc:\n"
            "    print('BackendError:', exc)\n")
    r = _python(code, GPUDP_BACKEND="quantum")
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout and "BackendError:" in r.stdout and "'quantum'" in r.stdout


def test_gpudp_backend_unavailable_name_gives_the_reason():
    missing = _unavailable()
    if not missing:
        pytest.skip("every backend is available on this machine")
    code = ("import gpudp\n"
            "try:\n"
            "    gpudp.current_backend_name()\n"
            "except gpudp.BackendError as exc:\n"
            "    print('BackendError:', exc)\n")
    r = _python(code, GPUDP_BACKEND=missing[0])
    assert r.returncode == 0, r.stderr
    assert "BackendError:" in r.stdout and "not available" in r.stdout


def test_auto_never_picks_the_simulator():
    r = _python("import gpudp; print(gpudp.current_backend_name())", NUMBA_ENABLE_CUDASIM="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("cupy", "cpu")


def test_cli_info():
    env = {k: v for k, v in os.environ.items() if k not in ("GPUDP_BACKEND", "NUMBA_ENABLE_CUDASIM")}
    r = subprocess.run([sys.executable, "-m", "gpudp", "info"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith(f"gpudp {gpudp.__version__}")
    info = gpudp.available_backends()
    for name, i in info.items():
        line = next(ln for ln in out.splitlines() if ln.split() and ln.split()[0] == name)
        if i.available:
            assert "available" in line and "unavailable" not in line
        else:
            assert "unavailable" in line and len(line.split("unavailable", 1)[1].strip()) > 0
    assert "active backend:" in out


# -- per-backend array handling --------------------------------------------------------------------------

def test_asarray_and_tensor_move_to_the_active_backend(backend):
    host = np.arange(12.0).reshape(3, 4)
    a = gpudp.asarray(host)
    assert backend.is_own(a)
    np.testing.assert_array_equal(gpudp.to_numpy(a), host)
    t = gpudp.tensor(host, dtype=np.float32)
    assert backend.is_own(t.data) and t.dtype == np.float32 and t.shape == (3, 4)
    np.testing.assert_array_equal(t.numpy(), host.astype(np.float32))
    assert gpudp.tensor([1.0, 2.0]).shape == (2,)


def test_backend_has_launch_counter(backend):
    import collections
    assert isinstance(backend.impl.launches, collections.Counter)
    assert backend.impl.name == backend.name
