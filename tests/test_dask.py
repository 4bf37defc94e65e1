"""crossentropy.dask on a real two-worker LocalCluster: logits chunked along
both axes, every option, against the NumPy API; the graph's shape; errors;
and logits several times a worker's memory, generated on the workers."""

import numpy as np
import pytest

import crossentropy as ce

da = pytest.importorskip("dask.array")
cdask = pytest.importorskip("crossentropy.dask")

from conftest import OPTION_GRID, lm_id, option_case as case, option_id  # noqa: E402

LM_OPTIONS = [{}, dict(z_loss=0.02, softcap=4.0)]
WORKER_MEMORY = 768 * 2**20


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit=WORKER_MEMORY, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def lazy(a, chunks):
    return a if a is None or np.ndim(a) == 0 else da.from_array(a, chunks=chunks)


# --- against the NumPy API, on the cluster -------------------------------------------

REDUCTIONS = ("mean", "sum", "none")


def check_every_reduction(compute, rng, options, lm):
    """Logits chunked along both axes, the targets and sample weights
    chunked otherwise: loss, gradient and lse of every reduction, computed
    together, against the NumPy API's."""
    logits, target, kwargs = case(rng, (90, 70), -1, options)
    kwargs.update(lm)
    z = da.from_array(logits, chunks=(40, 25))
    lazy_target = lazy(target, (40, 25) if target.ndim == 2 else 30)
    lazy_kwargs = dict(kwargs, sample_weight=lazy(kwargs.get("sample_weight"), 50))
    graphs = [cdask.cross_entropy_and_grad(z, lazy_target, reduction=reduction,
                                           return_lse=True, **lazy_kwargs)
              for reduction in REDUCTIONS]
    graphs += [cdask.cross_entropy(z, lazy_target, reduction=reduction, **lazy_kwargs)
               for reduction in REDUCTIONS]
    results = compute(graphs)
    for reduction, (loss, grad, lse), alone in zip(REDUCTIONS, results[:3], results[3:]):
        want = ce.cross_entropy_and_grad(logits, target, reduction=reduction, return_lse=True,
                                         **kwargs)
        np.testing.assert_allclose(loss, want[0], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(grad, want[1], rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(lse, want[2], rtol=1e-14)
        np.testing.assert_allclose(alone, want[0], rtol=1e-13, atol=1e-15)
    assert all(g[1].chunks == z.chunks for g in graphs[:3])


@pytest.mark.parametrize("lm", LM_OPTIONS, ids=lm_id)
@pytest.mark.parametrize("options", OPTION_GRID, ids=option_id)
def test_every_option_gives_the_numpy_result(rng, options, lm):
    check_every_reduction(lambda graphs: da.compute(*graphs, scheduler="threads"), rng,
                          options, lm)


@pytest.mark.parametrize("lm", LM_OPTIONS, ids=lm_id)
@pytest.mark.parametrize("options", [(False, False, False, 0.0, False),
                                     (False, True, True, 0.3, True),
                                     (True, False, True, 0.3, True)], ids=option_id)
def test_every_option_on_the_cluster_gives_the_numpy_result(client, rng, options, lm):
    check_every_reduction(lambda graphs: client.gather(client.compute(graphs)), rng,
                          options, lm)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_dtypes_and_a_class_axis_in_the_middle(client, rng, dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    logits = (rng.standard_normal((6, 300, 5)) * 3).astype(dtype)
    target = rng.integers(0, 300, (6, 5))
    target[1, 2] = -100
    z = da.from_array(logits, chunks=(4, 70, 3))
    loss, grad = client.gather(client.compute(cdask.cross_entropy_and_grad(
        z, target, axis=1, label_smoothing=0.1, z_loss=0.01)))
    want, want_grad = ce.cross_entropy_and_grad(logits, target, axis=1, label_smoothing=0.1,
                                                z_loss=0.01)
    assert loss.dtype == want.dtype and grad.dtype == want_grad.dtype
    eps = float(np.finfo(want.dtype).eps)
    np.testing.assert_allclose(float(loss), float(want), rtol=2 * eps)
    np.testing.assert_allclose(grad.astype(np.float64), want_grad.astype(np.float64),
                               rtol=2 * eps, atol=2 * eps * float(np.abs(want_grad).max()))


def test_all_ignored_and_one_chunk(client, rng):
    logits = rng.standard_normal((20, 30))
    target = np.full(20, -100)
    loss, grad = client.gather(client.compute(cdask.cross_entropy_and_grad(
        da.from_array(logits, chunks=(7, 9)), target)))
    assert np.isnan(loss) and not grad.any()
    target = rng.integers(0, 30, 20)
    loss = client.compute(cdask.cross_entropy(logits, target)).result()   # a NumPy array
    assert loss == pytest.approx(float(ce.cross_entropy(logits, target)), rel=1e-14)


# --- the graph -------------------------------------------------------------------------

def test_no_task_holds_more_than_a_block_of_logits(rng):
    from dask.callbacks import Callback

    # (generated block by block: da.from_array would hold the whole array in a task)
    z = da.random.default_rng(3).standard_normal((64, 4000), chunks=(16, 500))
    logits = z.compute()
    target = rng.integers(0, 4000, 64)
    sizes = []
    def record(key, result, *args):
        name = key[0] if isinstance(key, tuple) else key
        if not str(name).startswith("finalize"):      # (compute's joining of the results)
            sizes.append(np.size(result))

    with Callback(posttask=record):
        loss, grad = da.compute(*cdask.cross_entropy_and_grad(z, target, z_loss=0.1),
                                scheduler="sync")
    block = 16 * 500
    assert max(sizes) == block           # the logits' and the gradient's blocks, no more
    assert grad.shape == logits.shape
    np.testing.assert_allclose(loss, ce.cross_entropy(logits, target, z_loss=0.1), rtol=1e-14)
    # the partials go through a tree of combinations, not one task
    graph = dict(cdask.cross_entropy(z, target).__dask_graph__())
    assert len(graph) > 3 * 8 * 4


# --- errors --------------------------------------------------------------------------

def test_errors_before_the_graph_and_in_its_tasks(rng):
    z = da.from_array(rng.standard_normal((10, 6)), chunks=(5, 3))
    target = rng.integers(0, 6, 10)
    with pytest.raises(ValueError, match="target has shape"):
        cdask.cross_entropy(z, target[:9])
    with pytest.raises(ValueError, match="label_smoothing"):
        cdask.cross_entropy(z, target, label_smoothing=2.0)
    with pytest.raises(ValueError, match="reduction"):
        cdask.cross_entropy(z, target, reduction="avg")
    with pytest.raises(ValueError, match="weight"):
        cdask.cross_entropy(z, target, weight=np.ones(5))
    with pytest.raises(ValueError, match="sample_weight"):
        cdask.cross_entropy(z, target, sample_weight=np.ones(9))
    with pytest.raises(TypeError, match="logits"):
        cdask.cross_entropy(z.astype(np.int32), target)
    with pytest.raises(TypeError, match="target"):
        cdask.cross_entropy(z, target.astype(bool))
    with pytest.raises(ValueError, match="ignore_index"):
        cdask.cross_entropy(z, np.full((10, 6), 1 / 6), ignore_index=0)
    with pytest.raises(ValueError, match="softcap"):
        cdask.cross_entropy(z, target, softcap=-1.0)
    bad = target.copy()
    bad[7] = 6
    with pytest.raises(IndexError, match="6 classes"):
        cdask.cross_entropy(z, bad).compute(scheduler="sync")
    with pytest.raises(ValueError, match="sample_weight"):
        cdask.cross_entropy(z, target, sample_weight=-np.ones(10)).compute(scheduler="sync")


# --- out of core -------------------------------------------------------------------------

def test_logits_several_times_a_workers_memory(client):
    """2.5 GiB of float32 logits, generated on the workers, 3.3 times a
    worker's memory limit: the loss, without a worker spilling or dying."""
    rows, classes, chunks = 20480, 32768, (2048, 8192)
    assert rows * classes * 4 > 3 * WORKER_MEMORY
    rng = da.random.default_rng(7)
    logits = rng.standard_normal((rows, classes), chunks=chunks, dtype=np.float32)
    target = rng.integers(0, classes, rows, chunks=chunks[0])
    workers = set(client.scheduler_info()["workers"])
    loss = client.compute(cdask.cross_entropy(logits, target, reduction="sum")).result()
    assert set(client.scheduler_info()["workers"]) == workers        # none restarted
    spilled = client.run(lambda dask_worker: dask_worker.data.spilled_total.disk)
    assert not any(spilled.values())
    # against the NumPy API on whole rows, a band at a time in this process
    want = 0.0
    for a in range(0, rows, chunks[0]):
        z, t = da.compute(logits[a:a + chunks[0]], target[a:a + chunks[0]], scheduler="sync")
        want += float(ce.cross_entropy(z, t, reduction="sum"))
    assert loss == pytest.approx(want, rel=1e-6)


def test_import_crossentropy_imports_no_dask():
    import subprocess
    import sys

    code = "import sys, crossentropy; assert not {'dask', 'distributed'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
