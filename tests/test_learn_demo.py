"""The learn demo's wiring on a reduced configuration (the full run trains for about a minute)."""
import pathlib

import pytest

pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0); the learn demo needs it")
pytest.importorskip("matplotlib", reason="matplotlib is not installed; the learn demo draws figures")

import gpudp  # noqa: E402
from gpudp.demo import learn  # noqa: E402


@pytest.mark.slow
def test_learn_demo_reduced(tmp_path, capsys):
    cfg = learn.Config(n=32, dt=0.01, steps=20, n_train=256, n_test=32, batch=16, train_steps=200, eval_every=50,
                       channels=8, gd_budgets=(1, 3), gd_rates=(0.1, 0.3), lr=1e-2)
    with gpudp.use_backend("cpu"):
        res = learn.run(tmp_path, quiet=True, config=cfg)
    out = capsys.readouterr().out
    assert "network prediction" in out and "gradient descent" in out
    # the network learnt something through the solver: training loss fell, and it beats the mean guess
    assert res["train_loss_last"] < 0.5 * res["train_loss_first"]
    assert res["test_loss_network"] < res["test_loss_mean_guess"]
    # per-problem gradient descent is reported at the configured budgets plus the network's training budget
    assert set(res["test_loss_gd"]) == {1, 3, res["train_calls_per_problem"]}
    assert res["test_loss_gd"][3] < res["test_loss_mean_guess"]
    assert res["ms_per_train_step"] > 0
    for path in res["figures"].values():
        assert pathlib.Path(path).stat().st_size > 0
