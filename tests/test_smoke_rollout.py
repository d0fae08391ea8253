"""The smoke demo's long rollouts: its step run through ``gpudp.rollout(..., checkpoints=c)`` gives the same
loss and gradient, to the bit, as the plain loop and as the four lines of the step written out; the memory
figures the demo reports; its command-line options and their errors."""
import subprocess
import sys

import numpy as np
import pytest

import gpudp
from gpudp.demo import smoke

#: a 40 × 40 box still holds the demo's disc (centre (32, 34), radius 6) and blob
SHAPE, STEPS, C = (40, 40), 12, 3


def _written_out_loss(problem, u0):
    """The loss of the demo's rollout written out from the module docstring (not through ``step``)."""
    grid, solve = problem.grid, problem.solve
    u = gpudp.project(u0, grid, **solve)
    d = problem.d0
    for _ in range(problem.steps):
        d_new = gpudp.advect_mac(d, u, smoke.DT, grid)
        w = gpudp.advect_mac(u, u, smoke.DT, grid)
        w = (w[0], w[1] + (smoke.DT * smoke.BETA) * gpudp.at_faces(d_new, grid)[1])
        u = gpudp.project(w, grid, **solve)
        d = d_new
    return gpudp.l2_loss(d, problem.target)


def _bits(a):
    a = np.ascontiguousarray(gpudp.to_numpy(a))
    return a.dtype, a.shape, a.view(np.uint8).tobytes()


@pytest.fixture(scope="module")
def control():
    rng = np.random.default_rng(4)
    grid = smoke.SmokeProblem(shape=SHAPE, steps=1).grid
    return tuple(0.05 * rng.standard_normal(grid.face_shape(k)) for k in range(2))


def test_checkpointed_rollout_is_bitwise_the_plain_loop(control):
    plain = smoke.SmokeProblem(shape=SHAPE, steps=STEPS)
    ckpt = smoke.SmokeProblem(shape=SHAPE, steps=STEPS, checkpoints=C)
    assert plain.solid.any()                                   # the disc is in the box
    assert _bits(plain.target) == _bits(ckpt.target)           # the target is always the plain rollout
    loss_p, grads_p = plain.loss_and_grad(control)
    loss_c, grads_c = ckpt.loss_and_grad(control)
    leaves = [gpudp.tensor(c, requires_grad=True) for c in control]
    with gpudp.Tape() as tape:
        loss_w = _written_out_loss(plain, leaves)
    grads_w = tape.gradient(loss_w, leaves)
    assert loss_p == loss_c == float(loss_w.item()) and np.isfinite(loss_p) and loss_p > 0
    for gp_, gc, gw in zip(grads_p, grads_c, grads_w):
        assert _bits(gp_) == _bits(gc) == _bits(gw)
    assert any(np.abs(gpudp.to_numpy(g)).max() > 0 for g in grads_c)
    # the schedule and the memory: at most C states, the predicted recomputations, a smaller tape
    info = ckpt.rollout_info
    assert plain.rollout_info is None and info is not None
    assert (info.steps, info.checkpoints) == (STEPS, C)
    assert info.recomputed_steps == gpudp.revolve_counts(STEPS, C).recomputed_steps > 0
    assert info.peak_states <= C and info.peak_bytes > 0
    state = ckpt.state_bytes()
    assert state == 8 * (40 * 40 + 41 * 40 + 40 * 41)
    assert ckpt.tape_bytes <= C * state + 40 * 40 * 8            # C states and the loss's density
    assert ckpt.peak_tape_bytes() == max(ckpt.tape_bytes, info.peak_bytes) < plain.tape_bytes
    # storing every step, as estimated (steps x one step's saved arrays + one state), against the real tape
    step_bytes = plain.step_tape_bytes()
    assert step_bytes >= state                                  # a step keeps at least its input state
    assert plain.tape_bytes <= plain.stored_tape_bytes(step_bytes) <= plain.tape_bytes + state


def test_checkpointed_rollout_with_frames_and_without_a_tape(control):
    ckpt = smoke.SmokeProblem(shape=SHAPE, steps=4, checkpoints=2)
    d_roll = ckpt.simulate(control)                             # through gpudp.rollout (no tape: the loop)
    d_frames = ckpt.simulate(control, frames={0, 2, 4})         # the plain loop
    assert _bits(d_roll) == _bits(d_frames)
    assert [t for t, _ in ckpt.frames] == [0, 2, 4]
    np.testing.assert_array_equal(ckpt.frames[-1][1], gpudp.to_numpy(d_frames))


def test_smoke_problem_rejects_bad_counts():
    with pytest.raises(ValueError, match=r"checkpoints must be an int >= 1, got 0"):
        smoke.SmokeProblem(shape=SHAPE, steps=2, checkpoints=0)
    with pytest.raises(ValueError, match=r"steps must be an int >= 1, got 0"):
        smoke.SmokeProblem(shape=SHAPE, steps=0)
    with pytest.raises(TypeError, match=r"checkpoints must be an int, got float 2.5"):
        smoke.SmokeProblem(shape=SHAPE, steps=2, checkpoints=2.5)
    for kwargs, match in [({"checkpoints": 0}, "checkpoints must be an int >= 1, got 0"),
                          ({"iterations": 0}, "iterations must be an int >= 1, got 0"),
                          ({"memory_budget": -1.0}, "memory_budget must be a positive number of MiB, got -1.0")]:
        with pytest.raises(ValueError, match=match):
            smoke.run("unused", quiet=True, **kwargs)


def test_smoke_run_reports_the_checkpointed_memory(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the demo's figures need matplotlib (pip install 'gpudp[demo]')")
    result = smoke.run(tmp_path, quiet=True, steps=6, checkpoints=2, iterations=2, memory_budget=0.5)
    out = capsys.readouterr().out
    counts = gpudp.revolve_counts(6, 2)
    assert result["steps"] == 6 and result["checkpoints"] == 2 and len(result["losses"]) == 3
    assert result["recomputed_steps"] == result["predicted_recomputed_steps"] == counts.recomputed_steps
    assert result["peak_states"] <= 2
    assert result["peak_tape_bytes"] < result["stored_tape_bytes"]
    assert result["stored_tape_bytes"] == 6 * result["step_tape_bytes"] + 8 * (64 * 64 + 2 * 65 * 64)
    assert f"{counts.recomputed_steps} steps recomputed per backward pass" in out
    assert "peak tape memory" in out and "storing every step would need" in out
    assert "memory budget 0.5 MiB (reported only): the checkpointed rollout fits, storing every step does NOT fit" \
        in out
    assert (tmp_path / "smoke_frames.png").exists()


def test_cli_passes_the_rollout_options(monkeypatch):
    import gpudp.__main__ as cli
    import gpudp.demo
    seen = {}
    monkeypatch.setattr(gpudp.demo, "run_demos", lambda which, **kw: seen.update(which=which, **kw) or 0)
    assert cli.main(["demo", "smoke", "--steps", "1000", "--checkpoints", "32", "--iterations", "3",
                     "--memory-budget", "64"]) == 0
    assert seen["which"] == ["smoke"]
    assert (seen["steps"], seen["checkpoints"], seen["iterations"], seen["memory_budget"]) == (1000, 32, 3, 64.0)
    assert cli.main(["demo", "smoke"]) == 0
    assert (seen["steps"], seen["checkpoints"], seen["iterations"], seen["memory_budget"]) == (None,) * 4


@pytest.mark.parametrize("args,message", [
    (["--checkpoints", "0"], "argument --checkpoints: expected an integer >= 1, got 0"),
    (["--steps", "-3"], "argument --steps: expected an integer >= 1, got -3"),
    (["--iterations", "two"], "argument --iterations: expected an integer >= 1, got 'two'"),
    (["--memory-budget", "0"], "argument --memory-budget: expected a positive number of MiB, got 0"),
])
def test_cli_rejects_bad_rollout_options(args, message):
    r = subprocess.run([sys.executable, "-m", "gpudp", "demo", "smoke"] + args, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_rollout_options_need_the_smoke_demo(tmp_path):
    from gpudp.demo import run_demos
    with pytest.raises(SystemExit, match=r"--steps, --checkpoints: options of the smoke demo"):
        run_demos(["advection"], out=tmp_path, steps=10, checkpoints=2)
