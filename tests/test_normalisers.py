"""softmax, log_softmax and logsumexp against the float64 reference."""

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _kernels

from conftest import tolerance
import reference as ref

DTYPES = [np.float32, np.float64]
CLASS_COUNTS = [1, 3, 10, _kernels.SMALL_ROW_LEN, _kernels.SMALL_ROW_LEN + 1, 3000]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", CLASS_COUNTS)
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_log_softmax_logsumexp_match_reference(rng, dtype, n_classes, axis):
    shape = (n_classes, 6) if axis == 0 else (6, n_classes)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    tol = tolerance(dtype)
    np.testing.assert_allclose(ce.softmax(x, axis=axis), ref.softmax(x, axis), **tol)
    np.testing.assert_allclose(ce.log_softmax(x, axis=axis), ref.log_softmax(x, axis), **tol)
    np.testing.assert_allclose(ce.logsumexp(x, axis=axis), ref.logsumexp(x, axis), **tol)
    assert ce.softmax(x, axis=axis).dtype == dtype
    assert ce.log_softmax(x, axis=axis).dtype == dtype
    assert ce.logsumexp(x, axis=axis).dtype == dtype


def test_softmax_rows_sum_to_one(rng):
    x = rng.standard_normal((50, 300)).astype(np.float32) * 10
    np.testing.assert_allclose(ce.softmax(x).sum(axis=-1, dtype=np.float64), 1.0, rtol=1e-6)


def test_log_softmax_of_a_dominant_class_is_not_rounded_to_zero():
    # (x - max) - log(sum) with the sum in float64 keeps log p = -1.9e-13 of a
    # dominant class; a float32 sum would round 1 + 1.9e-13 to 1 and give 0.
    x = np.array([30.0, 0.0, 0.0], dtype=np.float32)
    expected = -2 * np.exp(-30.0)
    got = ce.log_softmax(x)[0]
    assert got < 0
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=0)


def test_logsumexp_keepdims_and_scalar_result(rng):
    x = rng.standard_normal((3, 4, 5))
    assert ce.logsumexp(x, axis=1, keepdims=True).shape == (3, 1, 5)
    assert ce.logsumexp(x, axis=1).shape == (3, 5)
    assert isinstance(ce.logsumexp(x[0, 0]), np.float64)


def test_logsumexp_of_an_empty_axis_is_minus_infinity():
    assert ce.logsumexp(np.empty((2, 0))).tolist() == [-np.inf, -np.inf]


def test_logsumexp_does_not_overflow():
    x = np.array([1e30, 1e30], dtype=np.float32)
    assert ce.logsumexp(x) == np.float32(1e30)
    np.testing.assert_allclose(ce.logsumexp(np.array([1000.0, 1000.0])), 1000.0 + np.log(2.0))


@pytest.mark.parametrize("function", [ce.softmax, ce.log_softmax])
def test_out_and_in_place(rng, function):
    x = rng.standard_normal((7, 33))
    expected = function(x)
    out = np.empty_like(x)
    assert function(x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    assert function(x, out=x) is x
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("function", [ce.softmax, ce.log_softmax])
def test_out_partly_overlapping_x_is_a_value_error(function):
    x = np.zeros(10)
    with pytest.raises(ValueError, match="out overlaps x"):
        function(x[:6], out=x[4:])


@pytest.mark.parametrize("function", [ce.softmax, ce.log_softmax, ce.logsumexp])
def test_bad_input_is_a_clear_error(function):
    with pytest.raises(TypeError, match="x must be a float16, bfloat16, float32 or float64 array"):
        function(np.arange(3))
    with pytest.raises(ValueError, match="axis"):
        function(np.zeros((2, 3)), axis=5)
    with pytest.raises(ValueError, match="n_threads"):
        function(np.zeros((2, 3)), n_threads=0)


@pytest.mark.parametrize("n_classes", [2, _kernels.SMALL_ROW_LEN + 2])
def test_logsumexp_of_infinite_rows(n_classes):
    x = np.zeros((4, n_classes))
    x[0] = -np.inf                      # -inf, as scipy and torch
    x[1, 0] = np.inf                    # +inf
    x[2, 0] = np.inf
    x[2, 1] = np.nan                    # NaN wins
    x[3, :] = -np.inf
    x[3, 1] = np.nan
    got = ce.logsumexp(x)
    assert got[0] == -np.inf and got[1] == np.inf
    assert np.isnan(got[2]) and np.isnan(got[3])


@pytest.mark.parametrize("axis", [(0, 2), (2, 0), (-1, -2), (1, 3), (0, 1, 2, 3), None])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tuples_of_axes_are_normalised_together(rng, dtype, axis):
    """The axes of a tuple as one: as the reference over those axes moved
    last and flattened, in the input's shape (or reduced: logsumexp)."""
    x = (rng.standard_normal((2, 3, 4, 5)) * 4).astype(dtype)
    axes = tuple(range(4)) if axis is None else tuple(sorted(a % 4 for a in axis))
    kept = [d for d in range(4) if d not in axes]
    rows = np.transpose(x, kept + list(axes)).reshape(-1, int(np.prod([x.shape[d] for d in axes])))
    back = [*kept, *axes]

    def as_x(y):
        return np.transpose(y.reshape([x.shape[d] for d in back]), np.argsort(back))

    tol = tolerance(dtype)
    np.testing.assert_allclose(ce.softmax(x, axis=axis), as_x(ref.softmax(rows)), **tol)
    np.testing.assert_allclose(ce.log_softmax(x, axis=axis), as_x(ref.log_softmax(rows)), **tol)
    lse = ce.logsumexp(x, axis=axis, keepdims=True)
    assert lse.shape == tuple(1 if d in axes else n for d, n in enumerate(x.shape))
    np.testing.assert_allclose(lse.reshape(-1), ref.logsumexp(rows), **tol)
    out = np.empty_like(x)
    assert ce.softmax(x, axis=axis, out=out) is out
    np.testing.assert_array_equal(out, ce.softmax(x, axis=axis))
    with pytest.raises(ValueError, match="repeated axis"):
        ce.softmax(x, axis=(1, -3))


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 2e-15), (np.float32, 4e-7)])
@pytest.mark.parametrize("n", [2, 9, _kernels.SMALL_ROW_LEN + 1, 255, 257, 3000, 10_000,
                               140_000])
def test_a_small_logsumexp_keeps_its_relative_precision(dtype, rtol, n):
    """log(1 + t) for a tiny t (a row of log-probabilities dominated by one
    class): the max's term 1 would swallow t's low bits (SciPy's gh-18295)."""
    mpmath = pytest.importorskip("mpmath")
    rows = np.full((4, n), -60.0)
    rows[:, 0] = 0.0                             # the max first, last, in between
    rows[1] = rows[1, ::-1]
    rows[2, [n // 2, 1]] = rows[2, [1, n // 2]]
    rows[3, 1] = -0.5                            # t about 0.6: no longer tiny
    rows[0, 1:] = np.linspace(-45, -38, n - 1)
    x = rows.astype(dtype)
    with mpmath.workdps(60):
        want = [float(mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in row)))
                for row in x]
    rtol = max(rtol, n * 1e-19)                  # (a float64 sum of n terms rounds more)
    for got in (ce.logsumexp(x), ce.logsumexp(np.asfortranarray(x)),
                ce.logsumexp(x, n_threads=2), ce.logsumexp(x.T, axis=0)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0)
    if n > _kernels.SPLIT_MIN_CLASSES_LEN:
        # (4 rows are shared by the threads, 70 are not: the same bits)
        many = np.repeat(x, 18, axis=0)[:70]
        np.testing.assert_array_equal(ce.logsumexp(many, n_threads=2)[::18], ce.logsumexp(x))


def test_exp_checks_its_output_length():
    with pytest.raises(ValueError, match="out has 2 elements"):
        _kernels.exp(np.zeros(10), np.zeros(2))
