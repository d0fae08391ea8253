"""gpudp.dask: batches of independent problems on Dask, failures by problem index, bitwise equal to one process.

The cluster test starts a ``dask.distributed.LocalCluster`` of two worker processes (CPU) and runs the ``many``
demo's batched gradient descent (:func:`gpudp.demo.many.descend`, importable on the workers) on a small family.
"""
import sys

import numpy as np
import pytest

import gpudp

dask = pytest.importorskip("dask", reason="gpudp.dask needs dask (pip install 'dask[distributed]')")
distributed = pytest.importorskip("distributed", reason="gpudp.dask's cluster tests need dask.distributed "
                                                        "(pip install 'dask[distributed]')")
import dask.array as da  # noqa: E402

import gpudp.dask as gd  # noqa: E402
from gpudp.demo import learn, many  # noqa: E402

P = 24  # problems
BAD = 13  # the problem whose initial guess violates the CFL condition


def _config():
    fam = learn.Config(n=32, steps=20, dt=0.005, dtype="float64")
    return many.Config(problems=P, iterations=3, workers=2, family=fam, seed=3)


@pytest.fixture(scope="module")
def problems():
    cfg = _config()
    d0, target, u0 = many.make(cfg)
    bad_u0 = u0.copy()
    bad_u0[BAD] = 50.0  # CFL number 50 · dt / dx = 8
    return cfg, many.problem_kwargs(cfg), d0, target, u0, bad_u0


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


def _serial(kw, *arrays):
    """The single-process reference: the whole set as one batched call, no Dask."""
    return tuple(np.asarray(a) for a in many.descend(*(gpudp.asarray(a) for a in arrays), **kw))


def test_dask_import_is_lazy():
    import subprocess
    code = "import sys, gpudp, gpudp.dask; print('dask' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_local_cluster_results_bitwise_equal_serial_and_failure_by_index(problems, client):
    cfg, kw, d0, target, u0, bad_u0 = problems
    u_ref, loss_ref = _serial(kw, d0, target, u0)
    assert np.all(np.isfinite(loss_ref)) and not np.array_equal(u_ref, u0)  # the descent moved

    res = gd.map_problems(many.descend, d0, target, u0, batch_size=8, client=client, **kw)
    assert res.ok and not res.failed.any()
    u, loss = res.values
    assert u.shape == u0.shape and loss.shape == (P,)
    assert np.array_equal(u, u_ref) and np.array_equal(loss, loss_ref)
    workers = {b.worker for b in res.batches}
    assert len(res.batches) == 3 and None not in workers  # ran on the cluster's workers
    assert all(b.backend == "cpu" and b.threads == 1 for b in res.batches)  # Numba limited per worker

    bad = gd.map_problems(many.descend, d0, target, bad_u0, batch_size=8, client=client, **kw)
    assert list(bad.errors) == [BAD] and isinstance(bad.errors[BAD], gpudp.StabilityError)
    assert "CFL" in str(bad.errors[BAD])
    assert bad.failed.nonzero()[0].tolist() == [BAD]
    ub, lb = bad.values
    assert np.isnan(ub[BAD]).all() and np.isnan(lb[BAD])
    keep = np.arange(P) != BAD
    assert np.array_equal(ub[keep], u_ref[keep]) and np.array_equal(lb[keep], loss_ref[keep])
    with pytest.raises(gpudp.ProblemError, match=rf"1 of {P} problems failed \({BAD}: StabilityError") as err:
        bad.raise_errors()
    assert list(err.value.errors) == [BAD]


def test_client_map_with_batched_split_combine(problems, client):
    cfg, kw, d0, target, u0, bad_u0 = problems
    u_ref, loss_ref = _serial(kw, d0, target, u0)
    starts, parts = gd.split(d0, target, bad_u0, batch_size=10)
    assert starts == [0, 10, 20] and [len(p) for p in parts[0]] == [10, 10, 4]
    futures = client.map(gd.batched(many.descend, **kw), starts, *parts)
    res = gd.combine(client.gather(futures))
    assert list(res.errors) == [BAD]
    keep = np.arange(P) != BAD
    assert np.array_equal(res.values[0][keep], u_ref[keep])
    assert np.array_equal(res.values[1][keep], loss_ref[keep])


def test_dask_array_inputs_follow_their_chunks(problems, client):
    cfg, kw, d0, target, u0, _ = problems
    u_ref, loss_ref = _serial(kw, d0, target, u0)
    dd0 = da.from_array(d0, chunks=(6, -1))
    res = gd.map_problems(many.descend, dd0, target, u0, client=client, **kw)
    assert [b.count for b in res.batches] == [6, 6, 6, 6]
    assert np.array_equal(res.values[0], u_ref) and np.array_equal(res.values[1], loss_ref)


def _rollout(d0, u, *, grid, dt, steps):
    return gpudp.advect_upwind(d0, u, dt, grid, steps=steps)


def _rollout_flat(d0, u, *, grid, dt, steps):
    """``u`` as ``(B, n)``: map_blocks lines up blocks of arrays of the same number of dimensions."""
    return _rollout(d0, u.reshape(u.shape[0], 1, u.shape[1]), grid=grid, dt=dt, steps=steps)


def test_map_blocks_and_local_scheduler(problems):
    """Without a client: Dask's local scheduler in this process; ``blockwise`` for ``da.map_blocks``."""
    cfg, kw, d0, target, u0, bad_u0 = problems
    grid = gpudp.Grid(cfg.family.n, spacing=1.0 / cfg.family.n)
    opts = dict(grid=grid, dt=cfg.family.dt, steps=cfg.family.steps)
    ref = gpudp.to_numpy(_rollout(d0, u0, **opts))
    block = gd.blockwise(_rollout_flat, **opts)
    u2, bad_u2 = u0[:, 0, :], bad_u0[:, 0, :]
    out = da.map_blocks(block, da.from_array(d0, chunks=(5, -1)), da.from_array(u2, chunks=(5, -1)), dtype=d0.dtype)
    assert np.array_equal(out.compute(scheduler="sync"), ref)
    bad = da.map_blocks(block, da.from_array(d0, chunks=(5, -1)), da.from_array(bad_u2, chunks=(5, -1)),
                        dtype=d0.dtype)
    with pytest.raises(gpudp.ProblemError, match=rf"\({BAD}: StabilityError") as err:
        bad.compute(scheduler="sync")
    assert list(err.value.errors) == [BAD]

    res = gd.map_problems(_rollout, d0, u0, batch_size=7, client=False, **opts)  # batches in this process
    assert np.array_equal(res.values, ref) and [b.worker for b in res.batches] == [None] * 4


def test_run_batch_isolates_failures_by_bisection():
    grid = gpudp.Grid(16, spacing=1.0 / 16)
    rng = np.random.default_rng(0)
    d0 = rng.random((9, 16))
    u = 0.5 + 0.1 * rng.random((9, 1, 16))
    u[[2, 7]] = 100.0
    res = gd.run_batch(_rollout, d0, u, start=40, grid=grid, dt=0.01, steps=4)
    assert sorted(res.errors) == [42, 47] and res.count == 9 and not res.multiple
    out = res.values[0]
    keep = np.array([k not in (2, 7) for k in range(9)])
    assert np.isnan(out[~keep]).all()
    assert np.array_equal(out[keep], gpudp.to_numpy(_rollout(d0[keep], u[keep], grid=grid, dt=0.01, steps=4)))
    assert 1 < res.calls <= 1 + 2 * 2 * 4  # bisection: a few calls per failing problem, not one per problem


def test_run_batch_everything_failing_and_other_errors():
    grid = gpudp.Grid(16, spacing=1.0 / 16)
    d0 = np.ones((3, 16))
    res = gd.run_batch(_rollout, d0, np.full((3, 1, 16), 100.0), grid=grid, dt=0.01, steps=2)
    assert res.values is None and sorted(res.errors) == [0, 1, 2]
    combined = gd.combine([res])
    assert combined.values is None and combined.failed.all()
    # a shape error is not a problem's failure: it propagates, naming the batch's problems
    with pytest.raises(gpudp.ShapeError) as err:
        gd.run_batch(_rollout, d0, np.full((3, 1, 15), 0.5), start=5, grid=grid, dt=0.01, steps=2)
    if sys.version_info >= (3, 11):
        assert any("problems 5…7" in n for n in err.value.__notes__)


def test_bad_inputs_raise_clear_errors():
    grid = gpudp.Grid(8, spacing=1.0 / 8)
    with pytest.raises(ValueError, match=r"same leading length.*\[4, 3\]"):
        gd.run_batch(_rollout, np.ones((4, 8)), np.ones((3, 1, 8)), grid=grid, dt=0.01, steps=1)
    with pytest.raises(TypeError, match="leading problem axis"):
        gd.run_batch(_rollout, np.ones((4, 8)), 0.5, grid=grid, dt=0.01, steps=1)
    with pytest.raises(TypeError, match="at least one"):
        gd.run_batch(_rollout, grid=grid)
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 0"):
        gd.split(np.ones((4, 8)), batch_size=0)
    with pytest.raises(ValueError, match="threads must be a positive integer; got 0"):
        gd.run_batch(_rollout, np.ones((2, 8)), np.full((2, 1, 8), 0.1), threads=0, grid=grid, dt=0.01, steps=1)
    with pytest.raises(ValueError, match=r"leading axis \(2 rows\); got shape \(\)"):
        gd.run_batch(lambda d, u: gpudp.l2_loss(d, d), np.ones((2, 8)), np.ones((2, 8)))
    with pytest.raises(ValueError, match="without gaps or overlaps; a batch starts at problem 3, expected 0"):
        gd.combine([gd.BatchResult(start=3, count=1, values=None, errors={}, calls=1, seconds=0.0, backend="cpu")])
    with pytest.raises(TypeError, match="fn must be callable"):
        gd.batched(3)
    d0 = np.ones((2, 8))
    before = d0.copy()
    gd.run_batch(_rollout, d0, np.full((2, 1, 8), 0.1), grid=grid, dt=0.01, steps=1)
    assert np.array_equal(d0, before)  # inputs are never modified


def test_many_demo_runs_and_reports(tmp_path, capsys):
    cfg = _config()
    cfg.problems, cfg.iterations, cfg.repeats = 16, 2, 1
    out = many.run(tmp_path, quiet=True, config=cfg)
    text = capsys.readouterr().out
    assert out["bitwise"] is True and out["problems"] == 16 and out["workers"] == 2
    assert out["loss_after"] < out["loss_before"]  # two descent steps reduce the mean loss
    assert out["overhead"] == pytest.approx(out["seconds_dask"] / out["seconds_serial"])
    assert "results bitwise equal to the single process: True" in text and "cluster overhead" in text
    assert (tmp_path / "many_losses.png").stat().st_size > 0
