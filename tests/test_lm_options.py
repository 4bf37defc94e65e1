"""The language-model options of cross_entropy and cross_entropy_and_grad:
z-loss, logit softcapping and the log-sum-exps returned, on every kernel path
(class counts from the kernels' own boundaries), against the float64
reference and finite differences."""

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _kernels

from conftest import OPTION_GRID, PATHS, lm_id, option_id, random_case, shape_id, tolerance
import reference as ref

SMALL = _kernels.SMALL_ROW_LEN
RUNS = _kernels.RUNS_MIN_LEN
SPLIT = _kernels.SPLIT_MIN_CLASSES_LEN
# (PATHS' short rows are the across-rows block's shapes, here sent to
# short_rows, which takes these options)
LM_OPTIONS = [dict(z_loss=1e-3), dict(softcap=4.0), dict(z_loss=0.02, softcap=2.5)]


def lm_tolerance(dtype, softcap):
    tol = tolerance(dtype)
    if softcap is not None and np.dtype(dtype) == np.float32:
        # the capped logits are rounded to float32 once more than the logits
        tol = {"rtol": 4e-6, "atol": 4e-6}
    return tol


@pytest.mark.parametrize("lm", LM_OPTIONS, ids=lm_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", PATHS, ids=shape_id)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_options_on_every_path_match_the_reference(rng, lm, dtype, shape, axis, reduction):
    logits, target, kwargs = random_case(rng, shape, axis, dtype=dtype, ignore=True,
                                         weighted=True, sample_weighted=True)
    expected = ref.cross_entropy_full(logits, target, reduction=reduction, axis=axis,
                                      return_lse=True, **kwargs, **lm)
    loss, grad, lse = ce.cross_entropy_and_grad(logits, target, reduction=reduction, axis=axis,
                                                return_lse=True, grad_scale=0.5, **kwargs, **lm)
    tol = lm_tolerance(dtype, lm.get("softcap"))
    np.testing.assert_allclose(loss, expected[0], **tol)
    np.testing.assert_allclose(grad, 0.5 * expected[1], **tol)
    np.testing.assert_allclose(lse, expected[2], **tol)
    assert lse.dtype == dtype and lse.shape == target.shape
    # the loss alone is the same sum, bit for bit
    alone, lse_alone = ce.cross_entropy(logits, target, reduction=reduction, axis=axis,
                                        return_lse=True, **kwargs, **lm)
    np.testing.assert_array_equal(alone, loss)
    np.testing.assert_array_equal(lse_alone, lse)


@pytest.mark.parametrize("probabilities, ignore, weighted, eps, sample_weighted", OPTION_GRID,
                         ids=[option_id(o) for o in OPTION_GRID])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((17, 6), -1), ((9, SMALL + 9), -1), ((2, 150, 3), 1)],
                         ids=shape_id)
def test_options_combine_with_every_other_option(rng, probabilities, ignore, weighted, eps,
                                                 sample_weighted, dtype, shape, axis):
    logits, target, kwargs = random_case(rng, shape, axis, dtype=dtype, probabilities=probabilities,
                                         ignore=ignore, weighted=weighted,
                                         sample_weighted=sample_weighted)
    lm = dict(z_loss=0.01, softcap=3.0)
    expected = ref.cross_entropy_full(logits, target, label_smoothing=eps, axis=axis,
                                      return_lse=True, **kwargs, **lm)
    loss, grad, lse = ce.cross_entropy_and_grad(logits, target, label_smoothing=eps, axis=axis,
                                                return_lse=True, **kwargs, **lm)
    tol = lm_tolerance(dtype, 3.0)
    for got, want in zip((loss, grad, lse), expected):
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("lm", LM_OPTIONS, ids=lm_id)
@pytest.mark.parametrize("n_classes", [5, SMALL + 3])
@pytest.mark.parametrize("probabilities", [False, True])
def test_gradients_match_finite_differences(rng, lm, n_classes, probabilities):
    logits, target, kwargs = random_case(rng, (4, n_classes), -1, probabilities=probabilities,
                                         ignore=not probabilities, weighted=True,
                                         sample_weighted=True)
    logits /= 3
    if not probabilities:
        target[1] = 2

    def f(z):
        return float(ce.cross_entropy(z, target, label_smoothing=0.1, **kwargs, **lm))

    _, grad = ce.cross_entropy_and_grad(logits, target, label_smoothing=0.1, **kwargs, **lm)
    np.testing.assert_allclose(grad, ref.finite_difference_grad(f, logits), rtol=1e-6, atol=1e-9)


# (each of several chunks of rows, so that two threads do run; the last
# shares its rows between the threads)
@pytest.mark.parametrize("shape", [(3000, 40), (40, 3000), (20, RUNS + 100), (2, SPLIT + 7)],
                         ids=shape_id)
def test_thread_count_and_layout_never_change_a_bit(rng, shape):
    logits, target, kwargs = random_case(rng, shape, -1, dtype=np.float32, ignore=True,
                                         weighted=True)
    lm = dict(z_loss=1e-3, softcap=5.0, return_lse=True)
    one = ce.cross_entropy_and_grad(logits, target, n_threads=1, **kwargs, **lm)
    two = ce.cross_entropy_and_grad(logits, target, n_threads=2, **kwargs, **lm)
    fortran = ce.cross_entropy_and_grad(np.asfortranarray(logits), target, n_threads=2,
                                        **kwargs, **lm)
    for a, b, c in zip(one, two, fortran):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("m", [7, SMALL + 9, RUNS + 5, SPLIT + 7])
def test_in_place_and_out_give_the_same_bits_and_leave_nothing_capped(rng, m):
    logits, target, _ = random_case(rng, (6 if m < SPLIT else 2, m), -1, ignore=True)
    lm = dict(z_loss=1e-3, softcap=3.0, return_lse=True)
    loss, grad, lse = ce.cross_entropy_and_grad(logits, target, **lm)
    kept = logits.copy()
    ce.cross_entropy(logits, target, **lm)
    np.testing.assert_array_equal(logits, kept)       # the logits are not capped in place
    out = np.full_like(logits, np.nan)
    assert ce.cross_entropy_and_grad(logits, target, out=out, **lm)[1] is out
    np.testing.assert_array_equal(out, grad)
    loss2, grad2, lse2 = ce.cross_entropy_and_grad(logits, target, inplace=True, **lm)
    assert grad2 is logits
    np.testing.assert_array_equal(grad2, grad)
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(lse2, lse)


@pytest.mark.parametrize("m", [1, 100])
def test_softcap_matches_tanh_to_three_ulp(m):
    # with one class, the log-sum-exp is the capped logit itself: c tanh(z / c)
    # with c = 1 is tanh(z), computed in double (as for float32 logits)
    mpmath = pytest.importorskip("mpmath")
    z = np.concatenate([np.linspace(-25, 25, 20001), np.geomspace(1e-300, 30, 3000),
                        [0.0, -0.0, 0.374999, 0.375, 0.375001, 1e-8, np.inf, -np.inf]])
    z = np.concatenate([z, -z])
    logits = np.repeat(z[:, None], m, axis=1)
    _, lse = ce.cross_entropy(logits, np.zeros(len(z), np.int64), softcap=1.0, return_lse=True)
    capped = lse - (np.log(m) if m > 1 else 0.0)
    with mpmath.workdps(40):
        exact = np.array([float(mpmath.tanh(mpmath.mpf(float(v)))) for v in z])
    if m == 1:
        ulps = np.abs(capped - exact) / np.spacing(np.abs(exact) + np.finfo(float).tiny)
        assert ulps.max() <= 3
        assert np.array_equal(np.signbit(capped), np.signbit(exact))
    else:
        np.testing.assert_allclose(capped, exact, rtol=0, atol=1e-14)


def test_softcap_bounds_the_logits():
    logits = np.array([[1e30, -1e30, 0.0], [np.inf, 0.0, 0.0]])
    loss, grad, lse = ce.cross_entropy_and_grad(logits, [0, 1], softcap=10.0, return_lse=True,
                                                reduction="none")
    expected = ref.cross_entropy_full(np.array([[10.0, -10.0, 0.0], [10.0, 0.0, 0.0]]), [0, 1],
                                      reduction="none", return_lse=True)
    np.testing.assert_allclose(loss, expected[0], rtol=1e-13)
    np.testing.assert_allclose(lse, expected[2], rtol=1e-13)
    # the cap's derivative is 0 where it is saturated
    assert grad[0, 0] == 0.0 and grad[0, 1] == 0.0 and grad[1, 0] == 0.0
    assert np.all(np.isfinite(grad))


def test_z_loss_on_specific_values():
    # one row [0, 0, 0, 0]: lse = log 4, loss = log 4 + z (log 4)^2, and the
    # gradient 1/4 (1 + 2 z log 4) - onehot
    z, log4 = 0.1, np.log(4.0)
    loss, grad = ce.cross_entropy_and_grad(np.zeros((1, 4)), [2], z_loss=z)
    assert loss == pytest.approx(log4 + z * log4**2, rel=1e-15)
    expected = np.full(4, 0.25 * (1 + 2 * z * log4))
    expected[2] -= 1
    np.testing.assert_allclose(grad[0], expected, rtol=1e-15)
    # class weights weigh it, and it is in the weighted mean
    loss_w = ce.cross_entropy(np.zeros((2, 4)), [2, 0], z_loss=z, weight=[3.0, 1, 1, 1])
    assert loss_w == pytest.approx(log4 + z * log4**2, rel=1e-15)


def test_lse_of_ignored_and_non_finite_rows():
    logits = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0], [5.0, 5.0, 5.0],
                       [np.inf, 0.0, 0.0], [-np.inf, -np.inf, -np.inf]])
    loss, lse = ce.cross_entropy(logits, [0, 1, -100, 1, 2], reduction="none", return_lse=True)
    assert lse[0] == pytest.approx(ref.logsumexp(logits[0]), rel=1e-15)
    assert np.isnan(lse[1]) and np.isnan(loss[1])
    assert lse[2] == 0.0 and loss[2] == 0.0            # ignored: not read
    assert np.isnan(lse[3]) and np.isnan(loss[3])
    assert np.isnan(lse[4]) and np.isnan(loss[4])


def test_lse_shapes():
    loss, lse = ce.cross_entropy(np.zeros(5), 1, return_lse=True)
    assert lse.shape == () and lse == pytest.approx(np.log(5))
    _, _, lse = ce.cross_entropy_and_grad(np.zeros((2, 5, 3), np.float32),
                                          np.zeros((2, 3), np.int64), axis=1, return_lse=True)
    assert lse.shape == (2, 3) and lse.dtype == np.float32
    _, lse = ce.cross_entropy(np.zeros((0, 5)), np.zeros(0, np.int64), return_lse=True)
    assert lse.shape == (0,)


@pytest.mark.parametrize("shape", [(150, 10), (9, SMALL + 9), (4, RUNS + 5)], ids=shape_id)
def test_defaults_and_return_lse_change_no_bit(rng, shape):
    # (150 x 10: the across-rows block, which computes the lse too)
    logits, target, kwargs = random_case(rng, shape, -1, ignore=True, weighted=True)
    plain = ce.cross_entropy_and_grad(logits, target, **kwargs)
    zero = ce.cross_entropy_and_grad(logits, target, z_loss=0.0, softcap=None, **kwargs)
    with_lse = ce.cross_entropy_and_grad(logits, target, return_lse=True, **kwargs)
    for a, b, c in zip(plain, zero, with_lse):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    expected = np.where(target != -100, ref.logsumexp(logits), 0.0)
    np.testing.assert_allclose(with_lse[2], expected, rtol=1e-14)


def test_cap_derivative_is_never_negative():
    # c = 0.1 is not a float32: a saturated capped logit rounds above it
    logits = np.array([[50.0, -50.0, 0.0, 0.09]], np.float32)
    _, grad = ce.cross_entropy_and_grad(logits, [2], softcap=0.1)
    assert grad[0, 0] == 0.0 and grad[0, 1] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_tiny_softcap_stays_finite_and_a_subnormal_one_is_refused(dtype):
    tiny = float(np.finfo(dtype).tiny)
    logits = np.array([[0.0, 1.0, -1.0]], dtype)
    loss, grad, lse = ce.cross_entropy_and_grad(logits, [1], softcap=tiny, return_lse=True)
    assert np.isfinite(loss) and np.all(np.isfinite(grad)) and np.isfinite(lse)
    assert loss == pytest.approx(np.log(3.0))
    # the cap's derivative is 0 at the saturated logits, 1 at the one left at 0
    np.testing.assert_allclose(grad, [[1 / 3 * 1, 0.0, 0.0]], atol=1e-7)
    with pytest.raises(ValueError, match="softcap must be at least"):
        ce.cross_entropy(logits, [1], softcap=tiny / 4)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(z_loss=-1e-3), ValueError, "z_loss must be finite and >= 0"),
    (dict(z_loss=np.nan), ValueError, "z_loss must be finite"),
    (dict(z_loss=np.inf), ValueError, "z_loss must be finite"),
    (dict(z_loss="0.1"), TypeError, "z_loss must be a real number"),
    (dict(softcap=0.0), ValueError, "softcap must be None or a finite number > 0"),
    (dict(softcap=-2.0), ValueError, "softcap must be None"),
    (dict(softcap=np.inf), ValueError, "softcap must be None"),
    (dict(softcap=np.nan), ValueError, "softcap must be None"),
    (dict(softcap=True), TypeError, "softcap must be a real number"),
    (dict(return_lse=1), TypeError, "return_lse must be True or False"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_options_are_refused_before_anything_is_written(kwargs, error, message):
    logits = np.ones((3, 4))
    with pytest.raises(error, match=message):
        ce.cross_entropy(logits, [0, 1, 2], **kwargs)
    with pytest.raises(error, match=message):
        ce.cross_entropy_and_grad(logits, [0, 1, 2], inplace=True, **kwargs)
    np.testing.assert_array_equal(logits, 1.0)
