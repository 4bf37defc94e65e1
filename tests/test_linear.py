"""linear_cross_entropy and linear_cross_entropy_and_grad: the unfused float64
computation (logits = input @ linear_weight.T + linear_bias, then the
reference cross-entropy) as reference, at every chunk boundary, with finite
differences for every gradient, memory that does not grow with the tokens,
and torch's F.linear_cross_entropy where torch has the options."""

import itertools
import tracemalloc

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _kernels, _linear

from conftest import tolerance
import reference as ref

SMALL = _kernels.SMALL_ROW_LEN


def problem(rng, positions, d, n_classes, dtype=np.float64, ignored=0.25):
    h = rng.standard_normal(positions + (d,)).astype(dtype)
    w = (rng.standard_normal((n_classes, d)) / np.sqrt(d) * 3).astype(dtype)
    b = rng.standard_normal(n_classes).astype(dtype)
    t = rng.integers(0, n_classes, positions)
    t[rng.random(positions) < ignored] = -100
    return h, w, b, t


def unfused(h, w, b, t, **options):
    """loss, grad_input, grad_weight, grad_bias, lse in float64, from the full logits."""
    h64, w64 = h.astype(np.float64), w.astype(np.float64)
    z = h64 @ w64.T + (0.0 if b is None else b.astype(np.float64))
    loss, g, lse = ref.cross_entropy_full(z, t, return_lse=True, **options)
    g2 = g.reshape(-1, w.shape[0])
    return (loss, (g2 @ w64).reshape(h.shape), g2.T @ h64.reshape(-1, w.shape[1]),
            g2.sum(axis=0), lse)


OPTIONS = [{}, dict(weight=True, sample_weight=True), dict(label_smoothing=0.2),
           dict(z_loss=1e-3, softcap=4.0), dict(weight=True, label_smoothing=0.1, z_loss=0.01)]


def materialise(rng, options, n_classes, positions):
    options = dict(options)
    if options.get("weight"):
        options["weight"] = rng.random(n_classes) + 0.5
    if options.get("sample_weight"):
        options["sample_weight"] = rng.random(positions) * 2
    return options


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [7, SMALL + 36, 3000])
@pytest.mark.parametrize("chunk_size", [1, 5, 23, 24, 100, None])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", range(len(OPTIONS)))
def test_fused_matches_the_unfused_computation(rng, dtype, n_classes, chunk_size, reduction,
                                               options):
    h, w, b, t = problem(rng, (23,), 16, n_classes, dtype)
    options = materialise(rng, OPTIONS[options], n_classes, (23,))
    loss, gh, gw, gb, lse = ce.linear_cross_entropy_and_grad(
        h, w, t, linear_bias=b, reduction=reduction, chunk_size=chunk_size, return_lse=True,
        **options)
    expected = unfused(h, w, b, t, reduction=reduction, **options)
    tol = tolerance(dtype) if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-5}
    for got, want in zip((loss, gh, gw, gb, lse), expected):
        np.testing.assert_allclose(got, want, **tol)
    assert gh.dtype == gw.dtype == gb.dtype == dtype and gh.shape == h.shape
    alone, lse_alone = ce.linear_cross_entropy(h, w, t, linear_bias=b, reduction=reduction,
                                               chunk_size=chunk_size, return_lse=True, **options)
    np.testing.assert_array_equal(alone, loss)
    np.testing.assert_array_equal(lse_alone, lse)


def test_chunk_size_changes_only_the_rounding(rng):
    h, w, b, t = problem(rng, (50,), 8, 200)
    results = [ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, chunk_size=c)
               for c in (1, 7, 50, 1000)]
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_allclose(a, c, rtol=1e-13, atol=1e-15)


def test_positions_of_any_shape_and_no_bias(rng):
    h, w, _, t = problem(rng, (3, 4), 5, 9)
    loss, gh, gw, gb = ce.linear_cross_entropy_and_grad(h, w, t, reduction="none", chunk_size=5)
    expected = unfused(h, w, None, t, reduction="none")
    assert gb is None and loss.shape == (3, 4) and gh.shape == (3, 4, 5)
    for got, want in zip((loss, gh, gw), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # one token: a 1-D input and a scalar target
    loss1 = ce.linear_cross_entropy(h[0, 0], w, t[0, 0] if t[0, 0] >= 0 else 1)
    assert np.ndim(loss1) == 0


@pytest.mark.parametrize("chunk_size", [2, 3, None])
def test_gradients_match_finite_differences(rng, chunk_size):
    h, w, b, t = problem(rng, (5,), 3, 6, ignored=0.0)
    t[1] = -100
    options = dict(weight=rng.random(6) + 0.5, label_smoothing=0.1, z_loss=0.01, softcap=3.0,
                   sample_weight=rng.random(5) + 0.5)
    _, gh, gw, gb = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b,
                                                     chunk_size=chunk_size, **options)

    def loss(hh=h, ww=w, bb=b):
        return float(ce.linear_cross_entropy(hh, ww, t, linear_bias=bb, chunk_size=chunk_size,
                                             **options))

    np.testing.assert_allclose(gh, ref.finite_difference_grad(lambda x: loss(hh=x), h),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gw, ref.finite_difference_grad(lambda x: loss(ww=x), w),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gb, ref.finite_difference_grad(lambda x: loss(bb=x), b),
                               rtol=1e-6, atol=1e-9)


def test_grad_scale_and_reduction_none_give_the_gradients_of_the_scaled_sum(rng):
    h, w, b, t = problem(rng, (9,), 4, 11)
    total = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, reduction="sum")
    rows = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, reduction="none",
                                            grad_scale=-2.0, chunk_size=4)
    np.testing.assert_allclose(rows[0].sum(), total[0], rtol=1e-14)
    for a, c in zip(total[1:], rows[1:]):
        np.testing.assert_allclose(-2.0 * a, c, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_token_ignored(rng, reduction):
    h, w, b, t = problem(rng, (8,), 4, 5)
    t[:] = -100
    loss, gh, gw, gb, lse = ce.linear_cross_entropy_and_grad(
        h, w, t, linear_bias=b, reduction=reduction, chunk_size=3, return_lse=True)
    if reduction == "mean":
        assert np.isnan(loss)                      # a mean over nothing, as torch
    else:
        assert np.all(loss == 0)
    assert not gh.any() and not gw.any() and not gb.any() and not lse.any()


def test_chunks_of_ignored_tokens_are_skipped_but_counted_right(rng):
    h, w, b, t = problem(rng, (12,), 4, 5, ignored=0.0)
    t[4:8] = -100                                  # the whole second chunk of 4
    got = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, chunk_size=4,
                                           reduction="none", return_lse=True)
    expected = unfused(h, w, b, t, reduction="none")
    for a, c in zip(got, expected):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)


def test_no_tokens(rng):
    h = np.zeros((0, 4))
    w = rng.standard_normal((5, 4))
    loss, gh, gw, gb = ce.linear_cross_entropy_and_grad(h, w, np.zeros(0, np.int64),
                                                        linear_bias=np.zeros(5))
    assert np.isnan(loss) and gh.shape == (0, 4) and not gw.any() and not gb.any()
    assert ce.linear_cross_entropy(h, w, np.zeros(0, np.int64), reduction="sum") == 0


def test_memory_does_not_grow_with_the_tokens(rng):
    # the logits of 4096 tokens x 2000 classes would take 64 MB; with chunks
    # of 64 tokens, the call holds one chunk's (1 MB) beyond what it returns
    d, n_classes, chunk = 8, 2000, 64
    for n in (1024, 4096):
        h = rng.standard_normal((n, d))
        w = rng.standard_normal((n_classes, d))
        t = rng.integers(0, n_classes, n)
        returned = (n * d + n_classes * d) * 8
        tracemalloc.start()
        ce.linear_cross_entropy_and_grad(h, w, t, chunk_size=chunk)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak - returned < 2.5 * chunk * n_classes * 8, (n, peak - returned)


def test_default_chunk_holds_about_64_mib():
    assert _linear._check_chunk_size(None, 32000, 4) * 32000 * 4 == pytest.approx(64 << 20,
                                                                                 rel=1e-3)
    assert _linear._check_chunk_size(None, 10**9, 8) == 1


@pytest.mark.parametrize("call, error, message", [
    (lambda h, w, t: ce.linear_cross_entropy(h, w[:, :3], t), ValueError,
     r"input has 4 features \(its last axis\) but linear_weight has 3"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w[None], t), ValueError,
     r"linear_weight must have shape \(classes, features\)"),
    (lambda h, w, t: ce.linear_cross_entropy(h[0, 0], w, t), ValueError,
     "input must have at least one dimension"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w.astype(np.float32), t), TypeError,
     "linear_weight has dtype float32 but input has float64"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, t, linear_bias=np.zeros(4)), ValueError,
     r"linear_bias must have shape \(5,\)"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, t, linear_bias=np.zeros(5, np.float32)),
     TypeError, "linear_bias has dtype float32"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, t[:2]), ValueError,
     r"target must have shape \(3,\)"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, np.eye(5)[:3]), TypeError,
     "probability targets would be as large as the logits"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, [0, 1, 5]), IndexError,
     r"target\[2\] = 5 is not a class index"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, t, chunk_size=0), ValueError,
     "chunk_size must be a positive integer or None, got 0"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, t, chunk_size=2.0), TypeError,
     "chunk_size must be a positive integer or None"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, t, softcap=-1.0), ValueError,
     "softcap must be None or a finite number > 0"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, t, z_loss=np.inf), ValueError,
     "z_loss must be finite"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, t, weight=np.ones(4)), ValueError,
     r"weight must have shape \(5,\)"),
    (lambda h, w, t: ce.linear_cross_entropy(h, w, t, reduction="avg"), ValueError,
     "reduction must be one of"),
    (lambda h, w, t: ce.linear_cross_entropy(h.astype(int), w, t), TypeError,
     "input must be a float16, bfloat16, float32 or float64 array"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_are_clear_errors(rng, call, error, message):
    h = rng.standard_normal((3, 4))
    w = rng.standard_normal((5, 4))
    with pytest.raises(error, match=message):
        call(h, w, np.array([0, 1, 2]))


TORCH_GRID = list(itertools.product([np.float32, np.float64], ["mean", "sum", "none"],
                                    [False, True], [0.0, 0.2], [False, True]))


@pytest.mark.parametrize("dtype, reduction, weighted, eps, bias", TORCH_GRID)
def test_same_as_torch_linear_cross_entropy(rng, dtype, reduction, weighted, eps, bias):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    h, w, b, t = problem(rng, (37,), 8, 120, dtype)
    weight = rng.random(120) + 0.5 if weighted else None
    th = torch.tensor(h, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    loss = F.linear_cross_entropy(th, tw, torch.tensor(t), linear_bias=tb,
                                  weight=None if weight is None else torch.tensor(weight, dtype=th.dtype),
                                  reduction=reduction, label_smoothing=eps)
    (loss.sum() if reduction == "none" else loss).backward()
    got = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b if bias else None, weight=weight,
                                           reduction=reduction, label_smoothing=eps,
                                           chunk_size=10)
    rtol, atol = (2e-5, 2e-6) if dtype == np.float32 else (1e-12, 1e-13)
    np.testing.assert_allclose(got[0], loss.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(got[1], th.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(got[2], tw.grad.numpy(), rtol=rtol, atol=atol)
    if bias:
        np.testing.assert_allclose(got[3], tb.grad.numpy(), rtol=rtol, atol=atol)


RUNS = _kernels.RUNS_MIN_LEN
SPLIT = _kernels.SPLIT_MIN_CLASSES_LEN


@pytest.mark.parametrize("n_classes, chunk_size", [(RUNS + 5, 3), (SPLIT + 7, 2)],
                         ids=["runs", "rows-shared-by-threads"])
def test_vocabulary_sized_rows(rng, n_classes, chunk_size):
    h, w, b, t = problem(rng, (5,), 3, n_classes, np.float32)
    t[3] = -100
    options = dict(weight=rng.random(n_classes) + 0.5, z_loss=1e-3, softcap=5.0)
    got = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, chunk_size=chunk_size,
                                           return_lse=True, **options)
    expected = unfused(h, w, b, t, **options)
    for a, c in zip(got, expected):
        np.testing.assert_allclose(a, c, rtol=2e-5, atol=2e-6)


def test_kernel_threads_change_no_bit(rng):
    h, w, b, t = problem(rng, (300,), 8, 3000, np.float32)
    one = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, chunk_size=100, n_threads=1)
    two = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, chunk_size=100, n_threads=2)
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)


def test_without_numpys_blas_the_weight_gradient_adds_through_blocks(rng, monkeypatch):
    h, w, b, t = problem(rng, (40,), 6, 300)
    direct = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, chunk_size=7)
    monkeypatch.setattr(_linear, "_accumulating_gemm", lambda dtype: None)
    monkeypatch.setattr(_linear, "_WEIGHT_BLOCK_BYTES", 6 * 8 * 64)     # blocks of 64 classes
    blocks = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, chunk_size=7)
    for a, c in zip(direct, blocks):
        np.testing.assert_allclose(a, c, rtol=1e-13, atol=1e-15)


def test_every_layout_gives_the_same_results(rng):
    h3, w, b, t3 = problem(rng, (4, 7), 6, 50)
    sliced = h3[:, :-1]                        # positions that do not collapse into one axis
    t = t3[:, :-1]
    expected = ce.linear_cross_entropy_and_grad(np.ascontiguousarray(sliced), w, t,
                                                linear_bias=b, chunk_size=5)
    for h_, w_, b_ in [(sliced, w, b), (np.asfortranarray(sliced), w, b),
                       (sliced, w[::-1].copy()[::-1], b[::-1].copy()[::-1]),      # negative strides
                       (sliced, np.asfortranarray(w), b),
                       (sliced[..., ::-1].copy()[..., ::-1], w.astype(">f8"), b.astype(">f8")),
                       (sliced, np.repeat(w, 2, axis=1)[:, ::2], b)]:
        got = ce.linear_cross_entropy_and_grad(h_, w_, t, linear_bias=b_, chunk_size=5)
        for a, c in zip(got, expected):
            np.testing.assert_allclose(a, c, rtol=1e-13, atol=1e-15)


def test_an_input_that_does_not_collapse_is_copied_a_chunk_at_a_time(rng):
    h = rng.standard_normal((64, 65, 8))[:, :64]          # 4096 tokens, not one axis
    w = rng.standard_normal((10, 8))
    t = rng.integers(0, 10, (64, 64))
    tracemalloc.start()
    ce.linear_cross_entropy(h, w, t, chunk_size=256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < h.nbytes / 4, peak       # a copy of the input would be 256 KiB


@pytest.mark.parametrize("chunk_size", [3, 100])
def test_rows_with_a_longer_step_reach_blas_as_they_are(rng, chunk_size):
    h, w, b, t = problem(rng, (40,), 6, 50)
    wide = np.concatenate([h, rng.standard_normal((40, 3))], axis=1)[:, :6]
    assert _linear._blas_ready(wide) and not wide.flags.c_contiguous
    got = ce.linear_cross_entropy_and_grad(wide, w, t, linear_bias=b, chunk_size=chunk_size)
    expected = ce.linear_cross_entropy_and_grad(h, w, t, linear_bias=b, chunk_size=chunk_size)
    for a, c in zip(got, expected):
        np.testing.assert_allclose(a, c, rtol=1e-13, atol=1e-15)


def test_ignore_index_none_is_torchs_default(rng):
    h, w, b, t = problem(rng, (9,), 4, 6)
    assert ce.linear_cross_entropy(h, w, t, ignore_index=None) == \
        ce.linear_cross_entropy(h, w, t)
