"""Bad input, edge shapes, non-finite values, concurrency and leaks: it never
crashes, never lies, never leaks."""

import concurrent.futures
import gc
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import crossentropy as ce

import reference as ref

GOOD_LOGITS = np.arange(12.0).reshape(4, 3) / 7
GOOD_TARGET = np.array([0, 1, 2, 1])

NOT_FLOAT = "logits must be a float16, bfloat16, float32 or float64"
# (keyword arguments that make the call invalid, the exception, part of its message)
BAD_CALLS = [
    ({"logits": GOOD_LOGITS.astype(np.complex128)}, TypeError, NOT_FLOAT),
    ({"logits": GOOD_LOGITS.astype(object)}, TypeError, NOT_FLOAT),
    ({"logits": GOOD_LOGITS > 1}, TypeError, NOT_FLOAT),
    ({"logits": GOOD_LOGITS.astype(str)}, TypeError, NOT_FLOAT),
    ({"logits": np.array(1.0), "target": 0}, ValueError, "at least one dimension"),
    ({"target": np.array([0, 1, 2])}, ValueError, "target has shape"),
    ({"target": np.array([[0, 1, 2, 1]])}, ValueError, "target has shape"),
    ({"target": np.array([0, 1, 3, 1])}, IndexError, r"target\[2\] = 3"),
    ({"target": np.array([0, -1, 2, 1])}, IndexError, r"target\[1\] = -1"),
    ({"target": GOOD_TARGET.astype(complex)}, TypeError, "target must hold integer class indices"),
    ({"target": np.full((4, 2), 0.5)}, ValueError, "class probabilities"),
    ({"weight": [1.0, np.inf, 1.0]}, ValueError, "weight must be finite"),
    ({"weight": [1.0, -1.0, 1.0]}, ValueError, "weight must be finite and non-negative"),
    ({"weight": [1.0, 1.0]}, ValueError, r"weight must have shape \(3,\)"),
    ({"sample_weight": [1.0, 1.0, np.nan, 1.0]}, ValueError, "sample_weight must be finite"),
    ({"reduction": "avg"}, ValueError, "reduction must be one of"),
    ({"axis": 2}, ValueError, "axis"),
    ({"axis": "last"}, TypeError, "axis must be an integer"),
    ({"n_threads": 0}, ValueError, "n_threads"),
    ({"n_threads": 2.0}, TypeError, "n_threads"),
    ({"label_smoothing": 2.0}, ValueError, "label_smoothing"),
    ({"ignore_index": 0.5}, TypeError, "ignore_index"),
    ({"grad_scale": None}, TypeError, "grad_scale"),
    ({"target": np.full((4, 3), 1 / 3), "ignore_index": 1}, ValueError, "ignore_index"),
    ({"logits": np.ma.masked_array(GOOD_LOGITS, GOOD_LOGITS > 1)}, TypeError,
     r"logits is a masked array.*logits.filled\(-np.inf\)"),
    ({"target": np.ma.masked_array(GOOD_TARGET, [0, 1, 0, 0])}, TypeError,
     r"target is a masked array.*target.filled\(ignore_index\)"),
    ({"weight": np.ma.masked_array(np.ones(3), [0, 1, 0])}, TypeError,
     r"weight is a masked array.*weight.filled\(0\)"),
    ({"sample_weight": np.ma.masked_array(np.ones(4), [0, 1, 0, 0])}, TypeError,
     r"sample_weight is a masked array.*sample_weight.filled\(0\)"),
]


def bad_call_id(case):
    """A BAD_CALLS row as its argument and error, e.g. 'weight-ValueError-2'."""
    bad, error, _ = case
    return f"{'+'.join(bad)}-{error.__name__}"


BAD_IDS = [f"{bad_call_id(c)}-{i}" for i, c in enumerate(BAD_CALLS)]


@pytest.mark.parametrize("bad, error, message", BAD_CALLS, ids=BAD_IDS)
@pytest.mark.parametrize("where", ["out", "inplace"])
def test_bad_input_raises_before_anything_is_written(bad, error, message, where):
    kwargs = {"logits": GOOD_LOGITS.copy(), "target": GOOD_TARGET}
    kwargs.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in bad.items()})
    logits = kwargs.pop("logits")
    target = kwargs.pop("target")
    before = np.array(logits, copy=True)
    if where == "out":
        out = np.full(np.shape(logits), 7.0)
        with pytest.raises(error, match=message):
            ce.cross_entropy_and_grad(logits, target, out=out, **kwargs)
        assert (out == 7.0).all()
    else:
        with pytest.raises(error, match=message):
            ce.cross_entropy_and_grad(logits, target, inplace=True, **kwargs)
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize("bad, error, message",
                         [c for c in BAD_CALLS if "grad_scale" not in c[0]],
                         ids=[i for c, i in zip(BAD_CALLS, BAD_IDS) if "grad_scale" not in c[0]])
def test_bad_input_raises_from_the_loss_alone_too(bad, error, message):
    kwargs = {"logits": GOOD_LOGITS, "target": GOOD_TARGET, **bad}
    with pytest.raises(error, match=message):
        ce.cross_entropy(kwargs.pop("logits"), kwargs.pop("target"), **kwargs)


def test_out_overlapping_the_target_is_refused():
    backing = np.zeros(16)
    target = backing[:4].view(np.int64)
    target[:] = [0, 1, 2, 1]
    out = backing[2:14].reshape(4, 3)
    with pytest.raises(ValueError, match="out overlaps target"):
        ce.cross_entropy_and_grad(GOOD_LOGITS, target, out=out)


def test_inplace_refuses_logits_that_share_memory_with_the_weights():
    backing = np.ones(12)
    logits = backing.reshape(4, 3)
    with pytest.raises(ValueError, match="inplace=True would overwrite weight"):
        ce.cross_entropy_and_grad(logits, GOOD_TARGET, weight=backing[9:], inplace=True)


# --- edge shapes --------------------------------------------------------------------

def test_a_million_classes():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((1, 1_000_000), dtype=np.float32) * 3
    loss, grad = ce.cross_entropy_and_grad(logits, [123_456])
    np.testing.assert_allclose(loss, ref.cross_entropy(logits, [123_456]), rtol=2e-6)
    np.testing.assert_allclose(grad, ref.cross_entropy_grad(logits, [123_456]), rtol=2e-6, atol=1e-12)
    assert abs(float(grad.sum(dtype=np.float64))) < 1e-6


def test_row_offsets_beyond_two_to_the_31_elements():
    # Two rows 2**32 elements apart in a lazily zero-filled buffer: only the
    # pages that are touched take memory, but every offset needs 64 bits.
    backing = np.zeros(2**32 + 16, dtype=np.float32)
    logits = np.lib.stride_tricks.as_strided(backing, shape=(2, 8), strides=(2**32 * 4, 4))
    logits[1, 3] = 5.0
    loss, grad = ce.cross_entropy_and_grad(logits, [0, 3], reduction="none")
    np.testing.assert_allclose(loss, ref.cross_entropy(np.array(logits), [0, 3], "none"), rtol=1e-6)
    np.testing.assert_allclose(grad, ref.cross_entropy_grad(np.array(logits), [0, 3], "none"),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(os.environ.get("CROSSENTROPY_SKIP_HUGE") == "1", reason="asked to skip")
def test_more_than_two_to_the_31_elements():
    # 2**31 + 2000 float32 zeros, never written: reading them maps the shared
    # zero page, so this costs time (about a second) but almost no memory.
    n_rows, n_classes = 2**31 // 1000 + 2, 1000
    logits = np.zeros((n_rows, n_classes), dtype=np.float32)
    target = np.zeros(n_rows, dtype=np.int32)
    target[-1] = n_classes - 1
    losses = ce.cross_entropy(logits, target, reduction="none")
    assert losses.shape == (n_rows,)
    np.testing.assert_allclose(losses[[0, -1]], np.log(1000.0), rtol=1e-6)
    assert ce.cross_entropy(logits, target) == pytest.approx(np.log(1000.0), rel=1e-6)


# --- huge and non-finite values -------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [5, 100])
@pytest.mark.parametrize("magnitude", [1e30, "max"])
def test_huge_magnitudes_do_not_overflow(dtype, n_classes, magnitude):
    big = np.finfo(dtype).max if magnitude == "max" else dtype(magnitude)
    logits = np.zeros((3, n_classes), dtype=dtype)
    logits[0, 1] = big                 # target 1: loss 0
    logits[1, 2] = big                 # target 0: loss big
    logits[2, 0] = -big                # target 0: loss big (and exp(-big) = 0)
    loss, grad = ce.cross_entropy_and_grad(logits, [1, 0, 0], reduction="none")
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(loss, [0.0, big, big], rtol=1e-6)
    np.testing.assert_allclose(grad[0], np.eye(n_classes)[1] * 0, atol=1e-30)
    assert grad[1, 0] == -1 and grad[1, 2] == 1


# --- concurrency ----------------------------------------------------------------------

def test_many_python_threads_at_once_give_identical_results():
    rng = np.random.default_rng(1)
    problems = [(rng.standard_normal((500, m)).astype(dt), rng.integers(0, m, 500))
                for m in (7, 300) for dt in (np.float32, np.float64)]
    expected = [ce.cross_entropy_and_grad(z, t, n_threads=1) for z, t in problems]

    def work(i):
        z, t = problems[i % len(problems)]
        return i % len(problems), ce.cross_entropy_and_grad(z, t, n_threads=1 + i % 3)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for k, (loss, grad) in pool.map(work, range(200)):
            assert loss == expected[k][0]
            np.testing.assert_array_equal(grad, expected[k][1])


def test_inplace_calls_in_parallel_on_separate_buffers():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((2000, 50))
    t = rng.integers(0, 50, 2000)
    _, expected = ce.cross_entropy_and_grad(z, t)

    def work(i):
        buffer = z.copy()
        ce.cross_entropy_and_grad(buffer, t, inplace=True, n_threads=1 + i % 2)
        return buffer

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        for buffer in pool.map(work, range(24)):
            np.testing.assert_array_equal(buffer, expected)


# --- leaks ----------------------------------------------------------------------------

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_memory_does_not_grow_over_a_hundred_thousand_calls():
    z = np.random.default_rng(3).standard_normal((8, 5)).astype(np.float32)
    t = np.arange(8) % 5
    bad_t = t.copy()
    bad_t[3] = 9
    out = np.empty_like(z)
    w = np.ones(5)

    def batch(n):
        for i in range(n):
            ce.cross_entropy_and_grad(z, t, out=out, weight=w)
            ce.cross_entropy(z, t, reduction="none", label_smoothing=0.1)
            ce.logsumexp(z)
            if i % 4 == 0:
                try:
                    ce.cross_entropy(z, bad_t)
                except IndexError:
                    pass

    batch(5_000)                        # warm up allocator pools and caches
    gc.collect()
    before = _rss_bytes()
    batch(25_000)                       # 100 000 calls in all, 6 250 of them raising
    gc.collect()
    grown = _rss_bytes() - before
    assert grown < 4 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"


@pytest.mark.parametrize("kwargs", [{}, {"weight": [1.0, 2.0, 3.0]}, {"sample_weight": np.ones((2, 4))}])
def test_the_first_bad_target_is_reported_with_or_without_weights(kwargs):
    # contiguous targets without weights take a flat pre-pass, the others a
    # strided one: both report the same first position
    target = np.zeros((2, 4), dtype=np.int64)
    target[1, 2] = 3
    target[1, 3] = -5
    with pytest.raises(IndexError, match=r"target\[\(1, 2\)\] = 3"):
        ce.cross_entropy(np.zeros((2, 3, 4)), target, axis=1, **kwargs)
    with pytest.raises(IndexError, match=r"target\[\(1, 2\)\] = 3"):
        ce.cross_entropy(np.zeros((2, 3, 4)), np.asfortranarray(target), axis=1, **kwargs)


# --- the last edge contracts ----------------------------------------------------------

@pytest.mark.parametrize("function", [ce.softmax, ce.log_softmax])
def test_normaliser_messages_name_x(function):
    with pytest.raises(ValueError, match=r"out must have shape \(4, 3\) \(as x\)"):
        function(GOOD_LOGITS, out=np.empty((3, 3)))
    with pytest.raises(TypeError, match=r"out must have dtype float64 \(as x\)"):
        function(GOOD_LOGITS, out=np.empty((4, 3), np.float32))
    with pytest.raises(TypeError, match="x is a masked array"):
        function(np.ma.masked_array(GOOD_LOGITS))
    with pytest.raises(TypeError, match="out must be a numpy.ndarray, got MaskedArray"):
        function(GOOD_LOGITS, out=np.ma.masked_array(np.empty((4, 3))))


@pytest.mark.parametrize("n_classes", [5, 100])
def test_a_float32_loss_past_the_float_range_is_inf_without_a_warning(n_classes):
    logits = np.zeros((2, n_classes), np.float32)
    logits[:, 0] = -3e38                         # the target's logit: loss 3e38, times 10
    out = np.zeros_like(logits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = ce.cross_entropy_and_grad(logits, [0, 0], sample_weight=[10.0, 1.0],
                                               reduction="none", out=out)
        assert ce.cross_entropy(logits, [0, 0], sample_weight=[10.0, 1.0],
                                reduction="sum") == np.inf
    assert loss.dtype == np.float32
    np.testing.assert_array_equal(loss, np.array([np.inf, 3e38], np.float32))
    assert grad is out and (out[:, 0] == [-10, -1]).all()


def test_keepdims_must_be_a_bool():
    with pytest.raises(TypeError, match="keepdims must be True or False, got str"):
        ce.logsumexp(GOOD_LOGITS, keepdims="no")
    assert ce.logsumexp(GOOD_LOGITS, keepdims=np.True_).shape == (4, 1)


@pytest.mark.parametrize("shape", [(), (7,), (3, 70), (2, 3, 4)])
def test_axis_none_reduces_over_every_element(shape):
    x = np.random.default_rng(4).standard_normal(shape) * 3
    flat = np.reshape(x, (1, -1))
    expected = ref.logsumexp(flat)[0]
    np.testing.assert_allclose(ce.logsumexp(x, axis=None), expected, rtol=1e-13)
    assert ce.logsumexp(x, axis=None).shape == ()
    assert ce.logsumexp(x, axis=None, keepdims=True).shape == (1,) * x.ndim
    np.testing.assert_allclose(ce.softmax(x, axis=None), ref.softmax(flat).reshape(shape),
                               rtol=1e-13)
    np.testing.assert_allclose(ce.log_softmax(x, axis=None),
                               ref.log_softmax(flat).reshape(shape), rtol=1e-13, atol=1e-13)
    with pytest.raises(TypeError, match="axis must be an integer, a tuple of integers or None"):
        ce.logsumexp(x, axis="all")
    if x.ndim:
        transposed = np.asfortranarray(x)
        np.testing.assert_allclose(ce.logsumexp(transposed, axis=None), expected, rtol=1e-13)


# n_classes on every path: short rows (hard; with smoothing, the general
# block), long rows, rows in runs, and few very long rows shared by threads
PATH_CLASSES = [3, 40, 100, 9000, 140_000]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", PATH_CLASSES)
@pytest.mark.parametrize("zero", ["class weight", "sample weight"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_a_nan_or_inf_row_is_nan_even_where_its_weight_is_zero(dtype, n_classes, zero, smoothing):
    # rows: NaN, +inf, a -inf target logit (its limit: 0 at weight 0), NaN but ignored
    logits = np.zeros((4, n_classes), dtype)
    logits[0, 2], logits[1, 2], logits[2, 1], logits[3, 2] = np.nan, np.inf, -np.inf, np.nan
    target = np.array([1, 1, 1, -100])
    kwargs = {"label_smoothing": smoothing, "reduction": "none"}
    if zero == "class weight":
        kwargs["weight"] = np.where(np.arange(n_classes) == 1, 0.0, 1.0)
        if smoothing:       # smoothing brings every class's weight in: zero them all
            kwargs["weight"] = np.zeros(n_classes)
    else:
        kwargs["sample_weight"] = np.zeros(4)
    loss, grad = ce.cross_entropy_and_grad(logits, target, **kwargs)
    assert np.isnan(loss[0]) and np.isnan(loss[1])
    assert loss[2] == 0 and loss[3] == 0
    np.testing.assert_array_equal(ce.cross_entropy(logits, target, **kwargs), loss)
    assert np.isnan(grad[:2]).all() and (grad[3] == 0).all()
    # and the reductions carry the NaN
    kwargs.pop("reduction")
    assert np.isnan(ce.cross_entropy(logits, target, reduction="sum", **kwargs))


@pytest.mark.parametrize("n_classes", [3, 100])
def test_a_nan_row_with_probability_targets_is_nan_even_at_sample_weight_zero(n_classes):
    logits = np.zeros((2, n_classes))
    logits[0, 1] = np.nan
    target = np.full((2, n_classes), 1.0 / n_classes)
    loss = ce.cross_entropy(logits, target, sample_weight=[0.0, 0.0], reduction="none")
    assert np.isnan(loss[0]) and loss[1] == 0


SMALL_STACK_SCRIPT = """
import sys, threading
import numpy as np
import crossentropy as ce

def every_path():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for m, kwargs in ((10, {}), (10, {"label_smoothing": 0.1}), (64, {}), (1000, {}),
                          (20000, {}), (140000, {})):
            z = rng.standard_normal((4 if m > 100000 else 300, m)).astype(dtype)
            t = rng.integers(0, m, len(z))
            for n_threads in (1, 2):
                ce.cross_entropy_and_grad(z, t, n_threads=n_threads, **kwargs)
                ce.cross_entropy_and_grad(np.asfortranarray(z), t, n_threads=n_threads)
                ce.softmax(z, n_threads=n_threads)
                ce.logsumexp(z, n_threads=n_threads)
                # (log-probabilities with a dominant class: logsumexp's log1p pass)
                ce.logsumexp(ce.log_softmax(z * 8), n_threads=n_threads)
    print("done")

threading.stack_size(int(sys.argv[1]))
worker = threading.Thread(target=every_path)
worker.start()
worker.join()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="Linux stack sizes")
def test_every_path_runs_on_a_thread_with_the_smallest_stack_python_allows(tmp_path):
    # 32 KiB is the least threading.stack_size takes; NumPy's own ufuncs and
    # sorts run there, and so must every kernel (scratch lives on the heap)
    script = tmp_path / "small_stack.py"
    script.write_text(SMALL_STACK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script), str(32 * 1024)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "done", (done.returncode, done.stderr)
