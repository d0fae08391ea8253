"""The learn demo's training under PyTorch's DistributedDataParallel: two ``gloo`` processes on this machine train
on their shares of the same global minibatches and end with the single-process run's parameters."""
import contextlib
import os
import pathlib
import pickle
import socket
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0); DDP needs it")

import gpudp  # noqa: E402
from gpudp.demo import learn  # noqa: E402

WORLD = 2
STEPS = 3
CFG = learn.Config(n=32, dt=0.01, steps=20, n_train=64, n_test=16, batch=8, train_steps=STEPS, eval_every=2,
                   channels=8, gd_budgets=(1,), gd_rates=(0.1,), dtype="float64")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _gloo_unavailable():
    import torch.distributed as dist
    if not dist.is_available():
        return f"this PyTorch build ({torch.__version__}) has no torch.distributed"
    if not dist.is_gloo_available():
        return f"this PyTorch build ({torch.__version__}) has no gloo backend for torch.distributed"
    return None


needs_gloo = pytest.mark.skipif(_gloo_unavailable() is not None, reason=str(_gloo_unavailable()))


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _problems(cfg):
    grid = gpudp.Grid(cfg.n, spacing=1.0 / cfg.n)
    d0, _, target = learn.make_problems(cfg, cfg.n_train, np.random.default_rng(cfg.seed), grid)
    return grid, (torch.from_numpy(d0), torch.from_numpy(target))


def _train(cfg):
    """``STEPS`` steps through :func:`learn.train_steps`; returns the parameters, the last step's gradients,
    the reported losses and the problems (d0) each step's rollout received."""
    grid, data = _problems(cfg)
    trainer = learn.make_trainer(cfg, grid)
    initial = [p.detach().clone().numpy() for p in trainer.net.parameters()]
    seen = []
    loss = trainer.loss

    def recording(d0, u, target):
        seen.append(d0.detach().clone().numpy())
        return loss(d0, u, target)

    trainer.loss = recording
    losses = learn.train_steps(trainer, data, STEPS)
    return {"initial": initial, "params": [p.detach().numpy().copy() for p in trainer.net.parameters()],
            "grads": [p.grad.numpy().copy() for p in trainer.net.parameters()], "losses": losses, "seen": seen,
            "rank": trainer.rank, "world": trainer.world, "step": trainer.step}


def _worker(rank, port, mode, out):
    """One process of the job, placed as torchrun would place it (its environment variables)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    out = pathlib.Path(out)
    torch.set_num_threads(1)
    gpudp.set_backend("cpu")
    if mode == "steps":
        import torch.distributed as dist
        device, joined = learn.init_distributed(learn.torchrun_env())
        try:
            result = dict(_train(CFG), device=str(device), joined=joined,
                          group_backend=dist.get_backend())
        finally:
            dist.destroy_process_group()
    else:  # the whole demo, its output captured
        with open(out / f"stdout{rank}.txt", "w") as f, contextlib.redirect_stdout(f):
            result = learn.run(out / f"figures{rank}", quiet=True, config=CFG)
    with open(out / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(result, f)


def _launch(mode, out, timeout=120):
    import torch.multiprocessing as mp
    ctx = mp.start_processes(_worker, args=(_free_port(), mode, str(out)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1):  # raises with the child's traceback when a process fails
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} DDP processes did not finish within {timeout} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    results = []
    for rank in range(WORLD):
        with open(out / f"rank{rank}.pkl", "rb") as f:
            results.append(pickle.load(f))
    return results


def _max_rel_diff(a, b):
    return max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(a, b))


@needs_gloo
@pytest.mark.slow
def test_ddp_training_equals_single_process(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with gpudp.use_backend("cpu"):
            single = _train(CFG)
    finally:
        torch.set_num_threads(threads)
    assert (single["rank"], single["world"], single["step"]) == (0, 1, STEPS)
    ranks = _launch("steps", tmp_path)

    for rank, r in enumerate(ranks):
        assert (r["rank"], r["world"], r["step"]) == (rank, WORLD, STEPS)
        assert (r["device"], r["joined"], r["group_backend"]) == ("cpu", True, "gloo")
        # every process starts from the single-process initialisation ...
        assert _max_rel_diff(r["initial"], single["initial"]) == 0.0
        # ... and ends, after the gradient averaging, with the single-process parameters and gradients
        assert _max_rel_diff(r["params"], single["params"]) <= 1e-12
        assert _max_rel_diff(r["grads"], single["grads"]) <= 1e-12
        np.testing.assert_allclose(r["losses"], single["losses"], rtol=1e-12, atol=0)
        # each process rolled out only its contiguous half of every global minibatch
        for step in range(STEPS):
            assert r["seen"][step].shape == (CFG.batch // WORLD, CFG.n)
            np.testing.assert_array_equal(r["seen"][step], single["seen"][step][learn.shard(CFG.batch, rank, WORLD)])
    for step in range(STEPS):
        np.testing.assert_array_equal(np.concatenate([r["seen"][step] for r in ranks]), single["seen"][step])
    # the training moved the parameters (so the comparison above could fail)
    assert _max_rel_diff(single["params"], single["initial"]) > 1e-6
    assert single["losses"][0] != single["losses"][-1]


@needs_gloo
@pytest.mark.slow
def test_ddp_demo_run_reports_on_rank_zero_only(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed; the learn demo draws figures")
    ranks = _launch("run", tmp_path)
    res = ranks[0]
    assert ranks[1] is None
    assert res["processes"] == WORLD and res["train_steps"] == STEPS and res["batch"] == CFG.batch
    for path in res["figures"].values():
        assert pathlib.Path(path).parent == tmp_path / "figures0" and pathlib.Path(path).stat().st_size > 0
    assert not (tmp_path / "figures1").exists()
    out0 = (tmp_path / "stdout0.txt").read_text()
    assert f"trained under DistributedDataParallel on {WORLD} processes, {CFG.batch // WORLD} problems" in out0
    assert "network prediction" in out0
    assert (tmp_path / "stdout1.txt").read_text() == ""
    # each process's threads: its share of the cores
    share = max(1, (os.cpu_count() or 1) // WORLD)
    assert res["torch_threads"] == 1 and res["numba_threads"] == min(share, _numba_max_threads())


def _numba_max_threads():
    import numba
    return numba.config.NUMBA_NUM_THREADS


# -- wrong setups --------------------------------------------------------------------------------------------

def test_shards_are_contiguous_and_cover_the_batch():
    parts = [learn.shard(12, r, 3) for r in range(3)]
    assert parts == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert learn.shard(12, 0, 1) == slice(0, 12)


@pytest.mark.parametrize("batch,rank,world,message", [
    (10, 0, 4, "the global batch of 10 problems does not split evenly over 4 processes (WORLD_SIZE=4); "
               "expected a multiple of 4, e.g. 8 or 12"),
    (3, 1, 4, "the global batch of 3 problems does not split evenly over 4 processes (WORLD_SIZE=4); "
              "expected a multiple of 4, e.g. 4"),
    (8, 2, 2, "rank 2 is not among the 2 processes (expected 0 <= rank < 2)"),
])
def test_shard_rejects_what_does_not_split(batch, rank, world, message):
    with pytest.raises(ValueError) as exc:
        learn.shard(batch, rank, world)
    assert message in str(exc.value)


def test_torchrun_env():
    assert learn.torchrun_env({}) is None
    assert learn.torchrun_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}) == \
        learn.Distributed(rank=1, world=4, local_rank=1, local_world=2)
    # LOCAL_WORLD_SIZE defaults to WORLD_SIZE (all processes on one machine)
    assert learn.torchrun_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}).local_world == 2
    with pytest.raises(ValueError, match=r"RANK, WORLD_SIZE set but LOCAL_RANK not"):
        learn.torchrun_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match=r"WORLD_SIZE='two' is not an integer"):
        learn.torchrun_env({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match=r"RANK=2, WORLD_SIZE=2, LOCAL_RANK=0, LOCAL_WORLD_SIZE=2 do not fit"):
        learn.torchrun_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def _as_torchrun(monkeypatch, rank=0, world=3):
    for k in TORCHRUN_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(rank))


def test_run_rejects_a_batch_that_does_not_split_before_joining(monkeypatch, tmp_path):
    _as_torchrun(monkeypatch, world=3)
    with pytest.raises(ValueError, match=r"global batch of 8 problems does not split evenly over 3 processes "
                                         r"\(WORLD_SIZE=3\); expected a multiple of 3, e.g. 6 or 9"):
        learn.run(tmp_path / "out", quiet=True, config=CFG)
    assert not (tmp_path / "out").exists()
    import torch.distributed as dist
    assert not (dist.is_available() and dist.is_initialized())


def test_cli_under_torchrun_checks_the_batch_and_the_demos(monkeypatch, tmp_path):
    from gpudp.demo import run_demos
    _as_torchrun(monkeypatch, world=3)
    with pytest.raises(SystemExit, match=r"global batch of 64 problems does not split evenly over 3 processes"):
        run_demos(["learn"], out=tmp_path, backend="cpu")
    with pytest.raises(SystemExit, match=r"global batch of 10 problems does not split evenly over 3 processes"):
        run_demos(["learn"], out=tmp_path, backend="cpu", batch=10)
    with pytest.raises(SystemExit, match=r"under torchrun \(WORLD_SIZE=3\) only the learn demo runs distributed; "
                                         r"got the demos advection, learn"):
        run_demos(["advection", "learn"], out=tmp_path, backend="cpu")


def test_learn_options_need_the_learn_demo(tmp_path):
    from gpudp.demo import run_demos
    with pytest.raises(SystemExit, match=r"--train-steps, --batch: options of the learn demo"):
        run_demos(["advection"], out=tmp_path, train_steps=3, batch=8)


def test_cli_passes_the_learn_options(monkeypatch):
    import gpudp.__main__ as cli
    import gpudp.demo
    seen = {}
    monkeypatch.setattr(gpudp.demo, "run_demos", lambda which, **kw: seen.update(which=which, **kw) or 0)
    assert cli.main(["demo", "learn", "--train-steps", "20", "--batch", "32"]) == 0
    assert (seen["which"], seen["train_steps"], seen["batch"]) == (["learn"], 20, 32)
    assert cli.main(["demo", "learn"]) == 0
    assert (seen["train_steps"], seen["batch"]) == (None, None)
