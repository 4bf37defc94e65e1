"""Half-precision logits (float16, and ml_dtypes' bfloat16 where installed): read
and written in their own dtype, computed in float32 a block of rows at a time.
The conversions against NumPy's and ml_dtypes' over every bit pattern; the
results against the float32 path on the same values (the gradient bit for bit)
and the float64 reference; every option, layout and kernel path."""

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _api, _kernels, special

from conftest import random_case
from reference import cross_entropy_full

try:
    import ml_dtypes
except ImportError:                                 # bfloat16 cases skip without it
    ml_dtypes = None

DTYPES = [pytest.param(np.float16, id="float16"),
          pytest.param("bfloat16", id="bfloat16",
                       marks=pytest.mark.skipif(ml_dtypes is None, reason="needs ml_dtypes"))]
SMALL = _kernels.SMALL_ROW_LEN
RUNS = _kernels.RUNS_MIN_LEN
SPLIT = _kernels.SPLIT_MIN_CLASSES_LEN


def half(dtype):
    return np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


def ulp_tolerance(dtype):
    """Half an ulp of the half dtype, relative (the results' own rounding)."""
    return 2.0 ** -(11 if half(dtype) == np.float16 else 8)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few hundred elements, so that every case takes many."""
    monkeypatch.setattr(_api, "_HALF_BLOCK_ELEMENTS", 300)


# --- the conversions -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_widen_is_exact_for_every_bit_pattern(dtype):
    bits = np.arange(1 << 16, dtype=np.uint16)
    out = np.empty(bits.size, np.float32)
    _kernels.widen(bits.reshape(1, -1, 1), out.reshape(1, -1, 1), dtype == "bfloat16")
    expected = bits.view(half(dtype)).astype(np.float32)
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(out), nan)
    assert np.array_equal(out.view(np.uint32)[~nan], expected.view(np.uint32)[~nan])


@pytest.mark.parametrize("dtype", DTYPES)
def test_narrow_rounds_to_nearest_even_as_numpy_casts(dtype):
    rng = np.random.default_rng(0)
    every = np.arange(1 << 16, dtype=np.uint16).view(half(dtype)).astype(np.float32)
    every = every[np.isfinite(every)]
    with np.errstate(invalid="ignore", over="ignore"):
        x = np.concatenate([
            rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32),
            every, np.nextafter(every, np.float32(np.inf)), np.nextafter(every, -np.inf),
            ((every[:-1].astype(np.float64) + every[1:]) / 2).astype(np.float32),   # ties
            np.array([65504, 65519.996, 65520, 65536, 2.0**-24, 2.0**-25, 3 * 2.0**-26,
                      1e-40, -0.0, np.inf, -np.inf, np.nan, -np.nan], np.float32),
        ])
        expected = x.astype(half(dtype))
    bits = np.empty(x.size, np.uint16)
    _kernels.narrow(x.reshape(1, -1, 1), bits.reshape(1, -1, 1), dtype == "bfloat16")
    nan = np.isnan(expected.astype(np.float32))
    got = bits.view(half(dtype))
    assert np.array_equal(np.isnan(got.astype(np.float32)), nan)
    assert np.array_equal(bits[~nan], expected.view(np.uint16)[~nan])
    assert np.array_equal(bits[nan] >> 15, x.view(np.uint32)[nan] >> 31)     # signs kept


def test_conversions_follow_strides_and_threads():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 9, 5)).astype(np.float32)
    bits = np.empty((7, 5, 9), np.uint16).transpose(0, 2, 1)        # classes strided
    _kernels.narrow(x, bits, False, 2)
    assert np.array_equal(bits.view(np.float16), x.astype(np.float16))
    back = np.empty((9, 7, 5), np.float32).transpose(1, 0, 2)
    _kernels.widen(bits, back, False, 2)
    assert np.array_equal(back, x.astype(np.float16).astype(np.float32))


# --- the results -----------------------------------------------------------------------

CASES = {
    "plain": {}, "ignore": {"ignore": True}, "weight": {"weighted": True},
    "smoothing": {"label_smoothing": 0.2}, "probabilities": {"probabilities": True},
    "sample_weight": {"sample_weighted": True},
    "z_loss-softcap": {"z_loss": 1e-3, "softcap": 4.0},
}
SHAPES = {"short": ((300, 10), -1), "short-long": ((40, SMALL + 30), -1),
          "runs": ((5, RUNS + 100), -1), "k-dim": ((6, 50, 7), 1), "one-row": ((SMALL + 3,), 0)}


def split(case):
    case = dict(case)
    data = {k: case.pop(k) for k in ("ignore", "weighted", "probabilities", "sample_weighted")
            if k in case}
    return data, case


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_as_float32_on_the_same_values(small_blocks, dtype, name, shape, reduction):
    data, options = split(CASES[name])
    (shape_, axis) = SHAPES[shape]
    logits, target, kwargs = random_case(np.random.default_rng(len(name) + len(shape)), shape_,
                                         axis, dtype=np.float32, **data)
    x = logits.astype(half(dtype))
    if data.get("probabilities"):
        target = target.astype(half(dtype))
    kwargs.update(options)
    loss, grad, lse = ce.cross_entropy_and_grad(x, target, axis=axis, reduction=reduction,
                                                return_lse=True, n_threads=2, **kwargs)
    loss32, grad32, lse32 = ce.cross_entropy_and_grad(
        x.astype(np.float32), target if target.dtype.kind in "iu" else target.astype(np.float32),
        axis=axis, reduction=reduction, return_lse=True, **kwargs)
    assert grad.dtype == half(dtype) and np.asarray(loss).dtype == half(dtype)
    assert np.asarray(lse).dtype == half(dtype)
    # the gradient: float32's, rounded once
    assert np.array_equal(grad.view(np.uint16), grad32.astype(half(dtype)).view(np.uint16))
    for got, want in ((loss, loss32), (lse, lse32)):
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                                   rtol=ulp_tolerance(dtype), atol=1e-30)
    # and both near the float64 reference on those values
    expected, expected_grad = cross_entropy_full(
        x.astype(np.float64), target if target.dtype.kind in "iu" else target.astype(np.float64),
        axis=axis, reduction=reduction, **kwargs)
    tol = 4 * ulp_tolerance(dtype)
    np.testing.assert_allclose(np.asarray(loss, np.float64), expected, rtol=tol, atol=1e-6)
    np.testing.assert_allclose(grad.astype(np.float64), expected_grad, rtol=tol,
                               atol=tol * np.abs(expected_grad).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_alone_and_every_destination(small_blocks, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((130, 70)).astype(half(dtype))
    t = rng.integers(0, 70, 130)
    loss, grad = ce.cross_entropy_and_grad(x, t)
    assert ce.cross_entropy(x, t) == loss
    out = np.empty_like(x)
    assert ce.cross_entropy_and_grad(x, t, out=out)[1] is out
    strided = np.empty((70, 130), half(dtype)).T                   # written through a stage
    ce.cross_entropy_and_grad(x, t, out=strided)
    x_copy = x.copy()
    _, same = ce.cross_entropy_and_grad(x_copy, t, inplace=True)
    assert same is x_copy
    for g in (out, strided, x_copy):
        assert np.array_equal(g.view(np.uint16), grad.view(np.uint16))


def test_thread_count_and_block_size_never_change_a_bit(monkeypatch):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((257, 300)) * 4).astype(np.float16)
    t = rng.integers(0, 300, 257)
    results = []
    for block in (1 << 20, 5000, 300):
        monkeypatch.setattr(_api, "_HALF_BLOCK_ELEMENTS", block)
        for threads in (1, 2):
            loss, grad = ce.cross_entropy_and_grad(x, t, label_smoothing=0.1, n_threads=threads)
            results.append((loss.tobytes(), grad.tobytes()))
    assert len(set(results)) == 1


def test_rows_shared_by_threads_give_the_bits_of_long_rows(monkeypatch):
    # 70 rows of SPLIT classes are not shared by threads as a whole, but
    # blocks of 8 rows are: the same bits (split_rows gives long_rows')
    monkeypatch.setattr(_api, "_HALF_BLOCK_ELEMENTS", 8 * SPLIT)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((70, SPLIT + 3)).astype(np.float16)
    t = rng.integers(0, SPLIT, 70)
    loss, grad = ce.cross_entropy_and_grad(x, t, n_threads=2)
    loss32, grad32 = ce.cross_entropy_and_grad(x.astype(np.float32), t)
    assert np.array_equal(grad.view(np.uint16), grad32.astype(np.float16).view(np.uint16))
    assert loss == np.float16(loss32)


@pytest.mark.parametrize("shape, axis", [((160, 100_000), 0), ((2, 64, 125_000), 1),
                                         ((128, SPLIT), -1), ((16_000, 1000), -1)],
                         ids=["axis-0", "k-dim", "long-rows", "rows"])
def test_no_float32_copy_of_the_logits_is_made(shape, axis):
    import tracemalloc
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape, np.float32).astype(np.float16)        # 32 MB
    positions = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    t = rng.integers(0, shape[axis], positions)
    y = rng.random(shape, np.float32).astype(">f8")   # (nor of byte-swapped targets)
    out = np.empty_like(x)
    for target in (t, y):
        tracemalloc.start()
        ce.cross_entropy_and_grad(x, target, axis=axis, out=out, n_threads=2)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # two 4 MiB buffers, the per-position arrays and the kernel's
        # workspace; a float32 copy of the logits would be 64 MB
        assert peak < 0.6 * x.nbytes, (peak, x.nbytes)


def test_edges_as_float32():
    x = np.array([[0.0, np.inf, 1.0], [np.nan, 0.0, 0.0], [-np.inf, 0.0, 0.0],
                  [60000.0, -60000.0, 0.0]], np.float16)
    t = np.array([0, 1, 1, 0])
    for reduction in ("none", "sum"):
        loss, grad = ce.cross_entropy_and_grad(x, t, reduction=reduction)
        loss32, grad32 = ce.cross_entropy_and_grad(x.astype(np.float32), t, reduction=reduction)
        np.testing.assert_array_equal(np.asarray(loss, np.float32), np.float16(loss32))
        np.testing.assert_array_equal(grad, grad32.astype(np.float16))
    with np.errstate(over="ignore"):
        assert ce.cross_entropy(np.array([[0.0, 0.0]], np.float16), [0], sample_weight=[1e6],
                                reduction="sum") == np.float16(np.inf)     # 693147 overflows


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_cross_entropy_as_float32_on_the_same_values(dtype, layout, reduction):
    rng = np.random.default_rng(5)
    h = rng.standard_normal((3, 13, 8)).astype(half(dtype))
    w = (rng.standard_normal((70, 8)) * 0.5).astype(half(dtype))
    b = rng.standard_normal(70).astype(half(dtype))
    if layout == "strided":                        # (copied a chunk at a time, and once)
        h, w = h[:, ::-1].copy()[:, ::-1], np.asfortranarray(w)
    t = rng.integers(0, 70, (3, 13))
    t[0] = -100                                    # a chunk all ignored
    t[1, ::3] = -100
    kwargs = dict(reduction=reduction, label_smoothing=0.1, z_loss=1e-3, chunk_size=13,
                  return_lse=True)
    got = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, **kwargs)
    want = ce.linear_cross_entropy_and_grad(h.astype(np.float32), w.astype(np.float32), t,
                                            linear_bias=b.astype(np.float32), **kwargs)
    assert all(np.asarray(g).dtype == half(dtype) for g in got)
    for g, v in zip(got[1:3], want[1:3]):          # the gradients: float32's, rounded once
        assert np.array_equal(g.view(np.uint16), v.astype(half(dtype)).view(np.uint16))
    for g, v in (got[0], want[0]), (got[3], want[3]), (got[4], want[4]):
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(v, np.float64),
                                   rtol=ulp_tolerance(dtype), atol=1e-30)


@pytest.mark.parametrize("axis", [-1, 0, (0, 2), None])
@pytest.mark.parametrize("dtype", DTYPES)
def test_normalisers_as_float32_on_the_same_values(small_blocks, dtype, axis):
    x = (np.random.default_rng(8).standard_normal((5, 7, 40)) * 4).astype(half(dtype))
    x[1, 2, 3], x[2, 0, 0], x[3, 5, :] = np.inf, np.nan, -np.inf
    x32 = x.astype(np.float32)
    with np.errstate(invalid="ignore"):
        for function in ce.softmax, ce.log_softmax, special.log_softmax:
            got, want = function(x, axis=axis), function(x32, axis=axis).astype(x.dtype)
            assert got.dtype == x.dtype
            assert np.array_equal(got.view(np.uint16), want.view(np.uint16)), function
        got = ce.logsumexp(x[:, ::-2], axis=axis, keepdims=True)
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(
            got.astype(np.float32),
            ce.logsumexp(x32[:, ::-2], axis=axis, keepdims=True).astype(x.dtype))


def test_half_errors_name_what_is_taken():
    x = np.zeros((2, 3), np.float16)
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        ce.cross_entropy(x.astype(np.int16), [0, 1])
    with pytest.raises(TypeError, match="linear_weight has dtype float32 but input has float16"):
        ce.linear_cross_entropy(x, np.zeros((4, 3), np.float32), [0, 1])
