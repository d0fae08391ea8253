"""The test command's skip summary (tests/conftest.py): one line per reason, with a count."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_skips_are_summarised_by_reason(tmp_path):
    (tmp_path / "test_sample.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_a(i):
            pytest.skip("no device here")

        def test_b():
            pytest.skip("needs a library")

        def test_c():
            pass
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                          "test_sample.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "4 skipped, by reason" in out
    lines = [line.strip() for line in out.splitlines()]
    assert "3  no device here" in lines and "1  needs a library" in lines
    # most frequent first, and no per-location listing
    assert lines.index("3  no device here") < lines.index("1  needs a library")
    assert "SKIPPED [" not in out
