"""crossentropy.special: SciPy's signatures over the fused kernels.  The new
arguments (weights b, return_sign, tuples of axes, axis=None, SciPy's dtypes)
against an mpmath reference, the edges against values worked by hand, and a
seeded sweep against scipy.special itself where it is installed.
(SciPy's own tests run against these in test_scipy_special.py.)"""

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _kernels, special

mpmath = pytest.importorskip("mpmath")

SHORT = _kernels.SMALL_ROW_LEN


def exact_logsumexp(a, axis=None, b=None, keepdims=False):
    """(log|sum(b exp(a))|, sign) over `axis` at 60 digits, for finite a, b:
    the reduced axes moved last and flattened."""
    a = np.asarray(a, np.float64)
    b = np.ones_like(a) if b is None else np.asarray(b, np.float64)
    a, b = np.broadcast_arrays(a, b)
    axes = tuple(range(a.ndim)) if axis is None else np.atleast_1d(axis).tolist()
    axes = tuple(sorted(ax % a.ndim for ax in axes))
    kept = [d for d in range(a.ndim) if d not in axes]
    rows_a = np.transpose(a, kept + list(axes)).reshape(-1, int(np.prod([a.shape[d] for d in axes])))
    rows_b = np.transpose(b, kept + list(axes)).reshape(rows_a.shape)
    out, sign = [], []
    with mpmath.workdps(60):
        for ra, rb in zip(rows_a, rows_b):
            s = mpmath.fsum(mpmath.mpf(float(w)) * mpmath.exp(mpmath.mpf(float(v)))
                            for v, w in zip(ra, rb))
            out.append(float(mpmath.log(abs(s))) if s != 0 else -np.inf)
            sign.append(float(mpmath.sign(s)))
    shape = [1 if d in axes else n for d, n in enumerate(a.shape)] if keepdims else \
        [a.shape[d] for d in kept]
    return np.reshape(out, shape), np.reshape(sign, shape)


# --- against the reference -----------------------------------------------------------

CASES = [((7,), None), ((3, 5), 1), ((3, 5), 0), ((3, 5), None), ((2, 3, 4), (0, 2)),
         ((2, 3, 4), (2, 0)), ((2, 3, 4), (-1, -2)), ((2, 3, 4, 5), (1, 3)), ((4, 300), -1),
         ((3, SHORT + 3, 2), 1)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape, axis", CASES)
def test_logsumexp_as_the_exact_sum(rng, shape, axis, keepdims):
    a = rng.standard_normal(shape) * 5
    got = special.logsumexp(a, axis, keepdims=keepdims)
    want, _ = exact_logsumexp(a, axis, keepdims=keepdims)
    assert np.shape(got) == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    got32 = special.logsumexp(a.astype(np.float32), axis, keepdims=keepdims)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=3e-6, atol=3e-6)


@pytest.mark.parametrize("weights", ["positive", "signed", "zeros", "broadcast"])
@pytest.mark.parametrize("shape, axis", CASES[:7])
def test_weighted_logsumexp_and_its_sign(rng, shape, axis, weights):
    a = rng.standard_normal(shape) * 3
    b = rng.uniform(0.1, 3, shape)
    if weights == "signed":
        b = b * rng.choice([-1, 1], shape)
    elif weights == "zeros":
        b = b * (rng.random(shape) < 0.5)
    elif weights == "broadcast":
        b = b[(0,) * (len(shape) - 1)] * -1.0   # the last axis only, negative
    want, want_sign = exact_logsumexp(a, axis, b)
    got, sign = special.logsumexp(a, axis, b, return_sign=True)
    assert np.shape(got) == np.shape(sign) == want.shape
    np.testing.assert_array_equal(sign, want_sign)
    finite = np.isfinite(want)
    np.testing.assert_allclose(np.asarray(got)[finite], want[finite], rtol=1e-11, atol=1e-12)
    assert np.all(np.asarray(got)[~finite] == -np.inf)
    # without return_sign: NaN where the sum is negative, as SciPy
    plain = special.logsumexp(a, axis, b)
    np.testing.assert_array_equal(np.isnan(plain), want_sign < 0)


def test_weights_widen_the_result():
    """The result has a's and b's joint shape, reduced."""
    a = np.zeros((4, 1))
    b = np.ones((3, 1, 5))
    got = special.logsumexp(a, axis=-1, b=b)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, np.log(5.0))
    with pytest.raises(ValueError, match="a and b must broadcast"):
        special.logsumexp(np.zeros(3), b=np.ones(4))


@pytest.mark.parametrize("function", [special.softmax, special.log_softmax])
@pytest.mark.parametrize("shape, axis", CASES)
def test_normalisers_over_axes_as_the_reference(rng, function, shape, axis):
    x = rng.standard_normal(shape) * 4
    lse, _ = exact_logsumexp(x, axis, keepdims=True)
    want = x - lse if function is special.log_softmax else np.exp(x - lse)
    got = function(x, axis)
    assert got.shape == x.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
    got32 = function(x.astype(np.float32), axis)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("function", [special.softmax, special.log_softmax])
def test_out_over_axes_that_are_not_adjacent(rng, function):
    x = rng.standard_normal((3, 4, 5))
    want = function(x, (0, 2))
    out = np.empty_like(x)
    assert function(x, (0, 2), out=out) is out
    np.testing.assert_array_equal(out, want)
    fortran = np.empty_like(x, order="F")[:, ::-1][:, ::-1]
    assert function(x, (0, 2), out=fortran) is fortran
    np.testing.assert_array_equal(fortran, want)
    y = x.copy()
    assert function(y, (0, 2), out=y) is y
    np.testing.assert_array_equal(y, want)
    with pytest.raises(TypeError, match="out"):
        function(x, (0, 2), out=np.empty(x.shape, np.float32))


def test_results_do_not_depend_on_the_thread_count(rng):
    x = rng.standard_normal((64, 3, 700))
    b = rng.uniform(-1, 2, x.shape)
    for call in (lambda n: special.logsumexp(x, (0, 2), b, return_sign=True, n_threads=n),
                 lambda n: special.softmax(x, (0, 2), n_threads=n),
                 lambda n: special.log_softmax(x, None, n_threads=n)):
        np.testing.assert_array_equal(call(1), call(2))


# --- dtypes, scalars, array-likes --------------------------------------------------

@pytest.mark.parametrize("dtype, computed", [
    (np.int8, np.float16), (np.uint8, np.float16), (np.bool_, np.float16),
    (np.int16, np.float32), (np.uint16, np.float32), (np.int32, np.float64),
    (np.int64, np.float64), (np.uint64, np.float64), (np.float16, np.float16),
    (np.float32, np.float32), (np.float64, np.float64)])
def test_dtypes_as_scipy_gives_them(dtype, computed):
    """softmax and log_softmax in the dtype NumPy's exp gives (SciPy's);
    logsumexp in float64 for integers and booleans (SciPy's xp_promote)."""
    x = np.array([[1, 0, 1], [0, 1, 1]], dtype)
    for function in special.softmax, special.log_softmax:
        got = function(x, 1)
        assert got.dtype == computed
        want = function(x.astype(np.float64), 1)
        np.testing.assert_allclose(got, want, rtol=1e-3 if computed == np.float16 else 1e-6)
    lse = special.logsumexp(x, 1)
    assert lse.dtype == (dtype if np.dtype(dtype).kind == "f" else np.float64)
    np.testing.assert_allclose(lse, np.log(2 * np.e + 1), rtol=1e-3)


def test_extreme_integers_are_not_wrapped():
    """(SciPy subtracts the max in the integer dtype: int8 [-128, 127] wraps.)"""
    got = special.softmax(np.array([-128, 127], np.int8))
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, [0, 1])
    got = special.logsumexp(np.array([2**62, 2**62], np.int64))
    assert got == np.float64(2**62)


def test_bfloat16_stays_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array([[1.0, 2.0, 3.0]], ml_dtypes.bfloat16)
    for function in special.softmax, special.log_softmax:
        assert function(x).dtype == x.dtype
    assert special.logsumexp(x).dtype == x.dtype
    np.testing.assert_allclose(special.logsumexp(x).astype(np.float64),
                               np.log(np.exp([1, 2, 3]).sum()), rtol=2 ** -8)


def test_scalars_and_array_likes():
    assert special.logsumexp(3) == np.float64(3.0) and np.ndim(special.logsumexp(3)) == 0
    assert special.softmax(1000) == 1.0 and isinstance(special.softmax(1000), np.float64)
    assert special.log_softmax(2.5) == 0.0 and isinstance(special.log_softmax(2.5), np.float64)
    assert special.logsumexp(np.float32(1)).dtype == np.float32
    np.testing.assert_allclose(special.logsumexp([[0, 0], [1, 1]], 1), np.log(2) + [0, 1])
    np.testing.assert_allclose(special.softmax([1, 1, 2, 2], None), np.exp([1, 1, 2, 2]) / (
        2 * np.e + 2 * np.e ** 2))
    assert special.logsumexp([]) == -np.inf
    r, s = special.logsumexp(3.0, b=-2.0, return_sign=True)
    assert (r, s) == (pytest.approx(3 + np.log(2)), -1.0)
    # a scalar takes axis 0 or -1, as NumPy's reductions and SciPy do
    for axis in 0, -1, (0,):
        assert special.softmax(1.0, axis) == 1.0 and special.log_softmax(np.float32(2), axis) == 0
        assert special.logsumexp(2.0, axis) == 2.0
    with pytest.raises(np.exceptions.AxisError, match="0-d x"):
        special.softmax(1.0, 1)


# --- the edges -----------------------------------------------------------------------

INF, NAN = np.inf, np.nan


@pytest.mark.parametrize("a, b, value, sign", [
    ([INF, 0.0], None, INF, 1.0),
    ([-INF, -INF], None, -INF, 0.0),
    ([NAN, 0.0], None, NAN, NAN),
    ([INF, NAN], None, NAN, NAN),
    ([INF, -INF], None, INF, 1.0),
    ([1.0, 10000.0], [1.0, 0.0], 1.0, 1.0),       # a zero weight drops its element
    ([1.0, INF], [1.0, 0.0], 1.0, 1.0),
    ([1.0, NAN], [1.0, 0.0], 1.0, 1.0),
    ([1.0, 1.0], [1.0, -1.0], -INF, 0.0),        # a sum of exactly 0
    ([1.0, 1.0], [0.0, 0.0], -INF, 0.0),
    ([1.0, 1.0, 1.0], [1.0, -1.0, -1.0], 1.0, -1.0),
    ([INF], [-1.0], INF, -1.0),                  # SciPy's gh-23548
    ([INF, INF], [1.0, -1.0], NAN, NAN),         # inf - inf
    ([0.0, 0.0], [INF, 1.0], INF, 1.0),
])
def test_logsumexp_edges(a, b, value, sign):
    with np.errstate(invalid="ignore"):
        got, got_sign = special.logsumexp(a, b=b, return_sign=True)
    np.testing.assert_allclose([got, got_sign], [value, sign], rtol=1e-15, atol=0)
    with np.errstate(invalid="ignore"):
        plain = special.logsumexp(a, b=b)
    np.testing.assert_allclose(plain, NAN if sign < 0 else value, rtol=1e-15, atol=0)


def test_empty_inputs():
    got, sign = special.logsumexp(np.zeros((0, 3)), return_sign=True)
    assert (got, sign) == (-INF, -1.0)                     # SciPy's sign for empty input
    assert special.logsumexp(np.zeros((2, 0)), 1).tolist() == [-INF, -INF]
    assert special.logsumexp(np.zeros((0, 3)), 1).shape == (0,)
    assert special.logsumexp(np.zeros((0, 3)), 0, keepdims=True).tolist() == [[-INF] * 3]
    # (SciPy raises for these: an empty reduction has no max)
    for function in special.softmax, special.log_softmax:
        assert function(np.zeros((2, 0)), 1).shape == (2, 0)
        assert function(np.zeros((0, 3)), None).shape == (0, 3)


def test_normaliser_edges_follow_scipy():
    x = np.array([[INF, 0.0, 1.0], [INF, INF, 0.0], [INF, NAN, 0.0], [-INF, -INF, -INF],
                  [-INF, 0.0, 1.0], [NAN, 0.0, 0.0]])
    with np.errstate(invalid="ignore"):
        logp = special.log_softmax(x, 1)
        p = special.softmax(x, 1)
        top = ce.log_softmax(x)
    np.testing.assert_array_equal(logp[:3], [[NAN, -INF, -INF], [NAN, NAN, -INF],
                                             [NAN, NAN, NAN]])
    np.testing.assert_array_equal(logp[3], [NAN] * 3)
    np.testing.assert_allclose(logp[4], [-INF, -np.log1p(np.e), 1 - np.log1p(np.e)])
    assert np.isnan(logp[5]).all()
    np.testing.assert_array_equal(p[[0, 1, 2, 3, 5]], np.full((5, 3), NAN))
    np.testing.assert_allclose(p[4], [0, 1 / (1 + np.e), np.e / (1 + np.e)])
    # the top-level function keeps PyTorch's: NaN throughout a row holding +inf
    np.testing.assert_array_equal(top[:3], np.full((3, 3), NAN))
    np.testing.assert_allclose(top[4], logp[4])


@pytest.mark.parametrize("n", [3, SHORT + 5])
def test_log_softmax_of_inf_rows_on_every_path(n):
    x = np.zeros((n, 4, 3))
    x[1, 2, 0] = INF
    x[:, 3, 2] = -INF
    x[0, 1, 1] = NAN
    with np.errstate(invalid="ignore"):
        got = special.log_softmax(x, 0)
        strided = special.log_softmax(np.moveaxis(np.moveaxis(x, 0, 2).copy(), 2, 0), 0)
    want = np.full(n, -INF)
    want[1] = NAN
    np.testing.assert_array_equal(got[:, 2, 0], want)
    assert np.isnan(got[:, 3, 2]).all() and np.isnan(got[:, 1, 1]).all()
    np.testing.assert_array_equal(strided, got)


# --- errors --------------------------------------------------------------------------

def test_complex_input_is_refused_by_name():
    for call in (lambda: special.logsumexp([1 + 1j, 2]),
                 lambda: special.logsumexp([1.0, 2.0], b=[1j, 1]),
                 lambda: special.logsumexp(1j),
                 lambda: special.softmax(np.ones(3, np.complex64)),
                 lambda: special.log_softmax([1j])):
        with pytest.raises(TypeError, match="complex input is not supported"):
            call()


@pytest.mark.parametrize("bad", [np.ones(3, np.longdouble), np.array(["a", "b"]),
                                 np.array([1.0, None], dtype=object)])
def test_other_dtypes_are_a_type_error(bad):
    for function in special.logsumexp, special.softmax, special.log_softmax:
        with pytest.raises(TypeError, match="real numbers|float"):
            function(bad)


def test_bad_arguments_name_themselves():
    x = np.zeros((2, 3))
    with pytest.raises(np.exceptions.AxisError):
        special.logsumexp(x, 2)
    with pytest.raises(ValueError, match="repeated axis"):
        special.softmax(x, (1, 1))
    with pytest.raises(TypeError, match="axis must be an integer, a tuple of integers or None"):
        special.log_softmax(x, 1.5)
    with pytest.raises(TypeError, match="keepdims"):
        special.logsumexp(x, keepdims="yes")
    with pytest.raises(TypeError, match="return_sign"):
        special.logsumexp(x, return_sign=1)
    with pytest.raises(ValueError, match="n_threads"):
        special.softmax(x, n_threads=0)
    with pytest.raises(ValueError, match="n_threads"):
        special.logsumexp(x, b=-x, return_sign=True, n_threads=0)
    with pytest.raises(TypeError, match="b must hold real numbers .* got dtype <U1"):
        special.logsumexp(x, b=np.full(x.shape, "w"))
    with pytest.raises(TypeError, match="b is complex"):
        special.logsumexp(x, b=x + 1j)
    with pytest.raises(TypeError):
        ce.softmax(x, 1)                        # the top level keeps axis keyword-only


# --- against SciPy itself ------------------------------------------------------------

def test_a_seeded_sweep_matches_scipy():
    """Random shapes, axes, dtypes, weights and special values: the same
    shapes, dtypes and values as scipy.special (to rounding), wherever SciPy
    gives a result."""
    scipy_special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(21)
    specials = np.array([INF, -INF, NAN, 0.0, 700.0, -700.0])
    for trial in range(600):
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(rng.integers(1, 6)) for _ in range(ndim))
        a = rng.standard_normal(shape) * 3
        mask = rng.random(shape) < 0.15
        a[mask] = rng.choice(specials, int(mask.sum()))
        dtype = [np.float64, np.float32, np.int64][trial % 3]
        if dtype == np.int64:
            a = np.nan_to_num(a, nan=1, posinf=5, neginf=-5)
        a = a.astype(dtype)
        axes = [None, *range(-ndim, ndim)]
        if ndim >= 2:
            axes.append(tuple(int(v) for v in rng.choice(ndim, 2, replace=False)))
        axis = axes[int(rng.integers(len(axes)))]
        kwargs = {}
        if trial % 4 == 0:
            kind = int(rng.integers(3))
            if kind == 0:
                kwargs = {"keepdims": bool(rng.integers(2)), "return_sign": bool(rng.integers(2))}
                if rng.integers(2):
                    b = rng.choice([1.0, 2.0, -1.0, 0.0, 0.5, -3.0],
                                   size=shape[int(rng.integers(ndim + 1)):])
                    kwargs["b"] = b.astype([np.float64, np.float32, np.int64][trial % 5 % 3])
            name = ["logsumexp", "softmax", "log_softmax"][kind]
        else:
            name = ["logsumexp", "softmax", "log_softmax"][trial % 3]
        with np.errstate(all="ignore"):
            want = getattr(scipy_special, name)(a, axis, **kwargs)
            got = getattr(special, name)(a, axis, **kwargs)
        pairs = zip(got, want) if isinstance(want, tuple) else [(got, want)]
        for g, w in pairs:
            g, w = np.asarray(g), np.asarray(w)
            assert (g.shape, g.dtype) == (w.shape, w.dtype), (trial, name)
            # (SciPy rounds float32 sums in float32; its errors are the larger)
            tol = {"rtol": 1e-5, "atol": 1e-6} if g.dtype == np.float32 else \
                {"rtol": 1e-12, "atol": 1e-13}
            np.testing.assert_allclose(g, w, equal_nan=True, err_msg=f"{trial} {name}", **tol)
