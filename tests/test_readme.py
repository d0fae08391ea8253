"""The README's code blocks marked ``<!-- tested -->`` run as written (in order, one namespace, on cpu, as the
main module: blocks guarded by ``if __name__ == "__main__":`` run too)."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"<!-- tested -->\s*\n```python\n(.*?)\n```", re.S)


def test_readme_examples_run():
    blocks = BLOCK.findall(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    namespace = {"__name__": "__main__"}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)
    u = namespace["u"]
    # the tour's gradient descent has moved u towards u_true where the density is
    assert np.all(np.isfinite(u.numpy()))
    assert float(namespace["gpudp"].to_numpy(namespace["value"])) < 0.1
    # Scaling out: 100 problems on a LocalCluster, problem 17 violates the CFL limit
    res = namespace["res"]
    assert res.values.shape == (100, 64) and list(res.errors) == [17]
    assert np.isnan(res.values[17]).all() and np.isfinite(np.delete(res.values, 17, axis=0)).all()


def test_readme_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first_block = text.split("```")[1].splitlines()[1:]
    commands = [ln for ln in first_block if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(commands) >= 2
    assert "pip install" in commands[0] and "python -m gpudp demo" in commands[0]
    assert "python -m pytest" in commands[1]
