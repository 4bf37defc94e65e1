"""Long rows in runs, against the float64 reference.

Rows of at least RUNS_MIN_LEN classes (hard targets without smoothing) are
not given a max pass first: each run of a row is shifted by its own max and
rescaled to the row's max at the end, so that the row is read from memory
once.  The rows here have stretches at levels far apart, so that runs have
very different maxima: a stretch of -inf (a run of it has exps 0, not NaN),
one 100 below the max (its probabilities are subnormal floats), one far above.
"""

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _kernels

from conftest import tolerance
import reference as ref

RUNS = _kernels.RUNS_MIN_LEN
DTYPES = [np.float32, np.float64]
# the longest row without runs, the shortest with, and one of many runs
LENGTHS = [RUNS - 1, RUNS, 40_961]
LEVELS = [0.0, -30.0, 8.0, -np.inf, -100.0, 3.0, 0.0, -5.0, 25.0, -60.0, 1.0]


def stretched_rows(rng, n_rows, m, dtype):
    """Rows of m logits, each made of stretches at the levels of LEVELS (in
    an order of its own); the -inf stretch is about a tenth of the row."""
    z = rng.standard_normal((n_rows, m)) * 2
    for r in range(n_rows):
        edges = np.sort(rng.choice(np.arange(1, m), len(LEVELS) - 1, replace=False))
        for piece, level in zip(np.split(np.arange(m), edges), rng.permutation(LEVELS)):
            z[r, piece] += level
    return z.astype(dtype)


def finite_targets(rng, z):
    """A target per row where its logit is finite (a -inf target logit is an
    infinite loss: tested apart)."""
    return np.array([rng.choice(np.flatnonzero(np.isfinite(row))) for row in z])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", LENGTHS)
def test_loss_and_gradient_in_runs_match_the_reference(rng, dtype, m):
    z = stretched_rows(rng, 6, m, dtype)
    t = finite_targets(rng, z)
    t[4] = -100                                          # an ignored row
    weight = rng.random(m) + 0.5
    sample_weight = rng.random(6) * 2
    for kwargs in [{}, {"weight": weight, "sample_weight": sample_weight}]:
        for reduction in ["none", "sum", "mean"]:
            loss, grad = ce.cross_entropy_and_grad(z, t, reduction=reduction, **kwargs)
            expected_loss, expected_grad = ref.cross_entropy_full(z, t, reduction=reduction, **kwargs)
            np.testing.assert_allclose(loss, expected_loss, **tolerance(dtype))
            np.testing.assert_allclose(grad, expected_grad, **tolerance(dtype))
            assert np.all(grad[4] == 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", LENGTHS)
def test_softmax_log_softmax_and_logsumexp_in_runs_match_the_reference(rng, dtype, m):
    z = stretched_rows(rng, 4, m, dtype)
    np.testing.assert_allclose(ce.softmax(z), ref.softmax(z), **tolerance(dtype))
    np.testing.assert_allclose(ce.logsumexp(z), ref.logsumexp(z), **tolerance(dtype))
    expected = ref.log_softmax(z)
    got = ce.log_softmax(z)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[~finite], expected[~finite])
    np.testing.assert_allclose(got[finite], expected[finite], **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_far_below_the_max_is_rounded_once_where_it_is_subnormal(rng, dtype):
    # Probabilities a few subnormal steps large: each later run's factor is
    # then not a normal number either, and the scaling runs in double.  For
    # float32 that is one rounding, as the reference's (a float factor would be
    # rounded to a few bits first, and its products again: off by a step in
    # about 3 %, measured); float64 has no wider type, and is within a step.
    z = np.full((1, 3 * RUNS), -np.inf, dtype=dtype)
    z[0, 0] = 0.0
    top = -101.5 if dtype == np.float32 else -741.0
    z[0, RUNS:] = top - rng.random(2 * RUNS) * 3
    _, grad = ce.cross_entropy_and_grad(z, [0], reduction="sum")
    expected = ref.cross_entropy_grad(z, [0], "sum").astype(dtype)
    far = slice(RUNS, None)
    assert (grad[0, far] < np.finfo(dtype).tiny).all() and np.mean(grad[0, far] > 0) > 0.7
    if dtype == np.float32:
        # two correctly rounded values differ only where the exact one is near a tie
        assert np.mean(grad[0, far] != expected[0, far]) < 0.01
    else:
        assert np.abs(grad[0, far] - expected[0, far]).max() <= np.finfo(dtype).smallest_subnormal
    np.testing.assert_allclose(grad[0, :RUNS], expected[0, :RUNS], rtol=1e-6, atol=0)


def test_a_huge_grad_scale_overflows_only_where_the_product_does(rng):
    # The factor for the max's run overflows float32 (1e39 / s, s about 1.1),
    # the products with the probabilities of the runs 12 below do not.
    z = np.full((1, 2 * RUNS), -np.inf, dtype=np.float32)
    z[0, 0] = 2.0
    z[0, RUNS:] = -10.0
    t = [RUNS + 5]
    _, grad = ce.cross_entropy_and_grad(z, t, reduction="sum", grad_scale=1e39)
    with np.errstate(over="ignore"):
        expected = (ref.cross_entropy_grad(z, t, "sum") * 1e39).astype(np.float32)
    assert grad[0, 0] == np.inf and grad[0, t[0]] == -np.inf
    assert np.isfinite(np.delete(grad[0, RUNS:], 5)).all()
    np.testing.assert_allclose(grad, expected, rtol=2e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_logits_in_runs(rng, dtype):
    m = 3 * RUNS
    z = stretched_rows(rng, 6, m, dtype)
    z[0] = -np.inf                       # every logit -inf: NaN, as PyTorch
    z[1, 2 * RUNS + 7] = np.inf          # +inf in a late run: NaN
    z[2, RUNS + 3] = np.nan              # NaN in a middle run: NaN
    z[3, :] = -np.inf                    # one finite logit, the target: loss 0
    z[3, 5] = 1.0
    z[4, :RUNS + 100] = -np.inf          # whole runs of -inf before the rest
    t = finite_targets(rng, np.where(np.isfinite(z), z, 0.0))
    t[3] = 5
    loss, grad = ce.cross_entropy_and_grad(z, t, reduction="none")
    for r in (0, 1, 2):
        assert np.isnan(loss[r]) and np.isnan(grad[r]).all()
    assert loss[3] == 0.0 and np.all(grad[3] == 0.0)
    np.testing.assert_allclose(loss[4:], ref.cross_entropy(z[4:], t[4:], "none"), **tolerance(dtype))
    np.testing.assert_allclose(grad[4:], ref.cross_entropy_grad(z[4:], t[4:], "none"), **tolerance(dtype))
    # a -inf target logit: an infinite loss
    z[5, t[5]] = -np.inf
    assert ce.cross_entropy(z[5:], t[5:], reduction="sum") == np.inf
    # logsumexp of a row of -inf is -inf, of a row with +inf +inf
    lse = ce.logsumexp(z[:2])
    assert lse[0] == -np.inf and lse[1] == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_in_runs_give_exact_finite_results(rng, dtype):
    big = np.finfo(dtype).max
    z = np.zeros((2, 3 * RUNS), dtype=dtype)
    z[0, 2 * RUNS + 1] = big             # the max in the last run, far above
    z[0, 1] = -big
    z[1, 1] = 1e30
    z[1, RUNS + 1] = 1e30                # the max twice, in two runs
    loss, grad = ce.cross_entropy_and_grad(z, [2 * RUNS + 1, 1], reduction="none")
    assert loss[0] == 0.0 and np.all(grad[0] == 0.0)
    np.testing.assert_allclose(loss[1], np.log(2.0), rtol=1e-6)
    assert grad[1, 1] == -0.5 and grad[1, RUNS + 1] == 0.5 and np.count_nonzero(grad[1]) == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_runs_give_the_same_bits_whatever_the_layout_threads_or_mode(rng, dtype):
    m = 40_961
    z = stretched_rows(rng, 5, m, dtype)
    t = finite_targets(rng, z)
    loss, grad = ce.cross_entropy_and_grad(z, t, reduction="none", n_threads=1)
    np.testing.assert_array_equal(ce.cross_entropy(z, t, reduction="none"), loss)
    for n_threads in (2, 3):
        again = ce.cross_entropy_and_grad(z, t, reduction="none", n_threads=n_threads)
        np.testing.assert_array_equal(again[0], loss)
        np.testing.assert_array_equal(again[1], grad)
    # classes strided (gathered into a scratch row), class axis first
    transposed = np.asfortranarray(z)
    strided = ce.cross_entropy_and_grad(transposed, t, reduction="none")
    np.testing.assert_array_equal(strided[0], loss)
    np.testing.assert_array_equal(strided[1], grad)
    by_axis = ce.cross_entropy_and_grad(np.ascontiguousarray(z.T), t, reduction="none", axis=0)
    np.testing.assert_array_equal(by_axis[0], loss)
    np.testing.assert_array_equal(by_axis[1], grad.T)
    # into the logits themselves
    buffer = z.copy()
    in_place = ce.cross_entropy_and_grad(buffer, t, reduction="none", inplace=True)
    np.testing.assert_array_equal(in_place[0], loss)
    np.testing.assert_array_equal(buffer, grad)
    # softmax in place
    buffer = z.copy()
    ce.softmax(buffer, out=buffer)
    np.testing.assert_array_equal(buffer, ce.softmax(z))


def test_rows_of_more_runs_than_the_kernel_holds_take_longer_runs(rng):
    # CE_MAX_RUNS runs of 2048 hold 1 048 576 classes; longer rows take longer
    # runs.  65 rows (more than few very long rows, which threads share),
    # broadcast from two distinct rows to save memory.
    m = 1_048_576 + 4099
    distinct = stretched_rows(rng, 2, m, np.float32)
    z = np.broadcast_to(distinct[np.arange(65) % 2][:, None, :], (65, 1, m))[:, 0, :]
    t = np.array([finite_targets(rng, distinct[[r % 2]])[0] for r in range(65)])
    loss, grad = ce.cross_entropy_and_grad(z, t, reduction="none")
    for r in (0, 1, 64):
        row = distinct[[r % 2]]
        np.testing.assert_allclose(loss[r], ref.cross_entropy(row, t[[r]], "none")[0],
                                   **tolerance(np.float32))
        np.testing.assert_allclose(grad[r], ref.cross_entropy_grad(row, t[[r]], "none")[0],
                                   **tolerance(np.float32))
    np.testing.assert_allclose(ce.log_softmax(distinct)[np.isfinite(distinct)],
                               ref.log_softmax(distinct)[np.isfinite(distinct)],
                               **tolerance(np.float32))
    # the two rows alone are few very long rows, which the threads share: the same bits
    split_loss, split_grad = ce.cross_entropy_and_grad(distinct, t[:2], reduction="none")
    np.testing.assert_array_equal(split_loss, loss[:2])
    np.testing.assert_array_equal(split_grad, grad[:2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_few_very_long_rows_shared_by_the_threads_give_the_bits_of_long_rows(rng, dtype):
    # At most SPLIT_MAX_ROWS rows of SPLIT_MIN_CLASSES classes or more: each row's
    # runs are spread over the threads.  The same rows among more rows go one
    # row per thread; both ways must give the same bits, at any thread count.
    m = _kernels.SPLIT_MIN_CLASSES_LEN + 3
    few = stretched_rows(rng, 2, m, dtype)
    t = finite_targets(rng, few)
    many = few[np.arange(_kernels.SPLIT_MAX_ROWS_LEN + 1) % 2]
    many_t = t[np.arange(_kernels.SPLIT_MAX_ROWS_LEN + 1) % 2]
    loss, grad = ce.cross_entropy_and_grad(many, many_t, reduction="none", n_threads=1)
    for n_threads in (1, 2):
        split = ce.cross_entropy_and_grad(few, t, reduction="none", n_threads=n_threads)
        np.testing.assert_array_equal(split[0], loss[:2])
        np.testing.assert_array_equal(split[1], grad[:2])
        np.testing.assert_array_equal(ce.cross_entropy(few, t, reduction="none", n_threads=n_threads),
                                      loss[:2])
        np.testing.assert_array_equal(ce.softmax(few, n_threads=n_threads), ce.softmax(many)[:2])
        np.testing.assert_array_equal(ce.logsumexp(few, n_threads=n_threads), ce.logsumexp(many)[:2])
    np.testing.assert_allclose(loss[:2], ref.cross_entropy(few, t, "none"), **tolerance(dtype))
    np.testing.assert_allclose(grad[:2], ref.cross_entropy_grad(few, t, "none"), **tolerance(dtype))
