"""``logsumexp``, ``softmax`` and ``log_softmax`` with ``scipy.special``'s
signatures and conventions, computed by this package's fused kernels.

They take what SciPy's take and return what SciPy's return: ``axis``
positional, None (every element, the default) or a tuple of axes; integers,
booleans, scalars and array-likes, computed in the floating dtype SciPy
gives them; ``logsumexp``'s weights ``b`` (broadcast against ``a``,
negative ones with ``return_sign``); the same values at the edges (empty
arrays, infinities, NaN, zero weights).  Beyond SciPy's: ``n_threads``, and
``out`` for ``softmax`` and ``log_softmax``.  Complex input is refused.

The top-level ``crossentropy.softmax``, ``log_softmax`` and ``logsumexp``
are the same code with the machine-learning convention (the last axis by
default, options keyword-only).

>>> import numpy as np
>>> from crossentropy import special
>>> float(special.logsumexp([0, 0]))            # integers, in float64
0.6931471805599453
>>> r, sign = special.logsumexp([1.0, 1.0], b=[1, -2], return_sign=True)
>>> float(r), float(sign)
(1.0, -1.0)
>>> special.softmax(np.zeros((2, 2))).tolist()  # axis=None: all four at once
[[0.25, 0.25], [0.25, 0.25]]
"""

import numpy as np

from . import _api
from ._kernels import Mode
from ._validate import (
    _asarray, _check_axes, _check_bool, _is_floating, _resolve_n_threads, _split_shape)

__all__ = ["log_softmax", "logsumexp", "softmax"]

_LN2 = float(np.log(2.0))


def _check_dtype(dtype, name):
    """A TypeError unless `dtype` is what the kernels compute: float16,
    bfloat16, float32 or float64."""
    if dtype.kind == "c":
        raise TypeError(f"{name} is complex ({dtype}): complex input is not supported; "
                        f"pass real numbers")
    if not _is_floating(dtype) or dtype.itemsize > 8:
        hint = "; convert it to float64" if dtype.kind == "f" else ""
        raise TypeError(f"{name} must hold real numbers (floating, integer or boolean), "
                        f"got dtype {dtype}{hint}")


def _exp_input(x, name):
    """`x` as an array of the dtype SciPy's softmax gives it, which is NumPy's
    exp's (integers and booleans: float16 up to 8 bits, float32 for 16,
    float64 beyond)."""
    a = _asarray(x, name)
    if a.dtype.kind == "c":
        _check_dtype(a.dtype, name)
    if a.dtype.kind in "biu":
        a = a.astype(np.exp.resolve_dtypes((a.dtype, None))[1])
    _check_dtype(a.dtype, name)
    return a


def _promote(a, b):
    """`a` and `b` (or None) as arrays of one floating dtype, SciPy's
    (``xp_promote(a, b, force_floating=True)``): NumPy's promotion of the two
    with a Python float (integers and booleans become float64; a Python
    scalar does not widen an array), broadcast against each other."""
    args = [(name, _asarray(v, name) if np.iterable(v) else v)
            for name, v in (("a", a), ("b", b)) if v is not None]
    for name, v in args:
        try:
            promoted = np.result_type(v, 1.0)
        except TypeError:
            raise TypeError(f"{name} must hold real numbers (floating, integer or boolean), "
                            f"got dtype {np.asarray(v).dtype}") from None
        _check_dtype(promoted, name)
    try:
        dtype = np.result_type(*(v for _, v in args), 1.0)
    except TypeError:
        raise TypeError(f"a and b have no common floating dtype: "
                        f"{' and '.join(str(np.asarray(v).dtype) for _, v in args)}") from None
    _check_dtype(dtype, "a" if len(args) == 1 else "a and b")
    arrays = [np.asarray(v, dtype=dtype) for _, v in args]
    if len(arrays) == 2:
        try:
            shape = np.broadcast_shapes(arrays[0].shape, arrays[1].shape)
        except ValueError:
            raise ValueError(f"a and b must broadcast against each other, got shapes "
                             f"{arrays[0].shape} and {arrays[1].shape}") from None
        arrays = [np.broadcast_to(v, shape) for v in arrays]
    return arrays[0], arrays[1] if len(arrays) == 2 else None


def _sign_of(out):
    """The sign of exp(out) as SciPy gives it without weights: 1, 0 where
    out is -inf (the sum is 0), NaN where out is."""
    return np.where(np.isnan(out), out, np.where(out == -np.inf, 0, 1).astype(out.dtype))


def _weighted(a, b, axes, keepdims, n_threads):
    """log|sum(b * exp(a))| and its sign (float64, SciPy's shape): the
    kernels' log-sum-exp of a + log|b|, once for the positive weights and
    once for the negative ones where there are any, then combined.  A zero
    weight drops its element, even an infinite or NaN one."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c = a.astype(np.float64) + np.log(np.abs(b.astype(np.float64)))
    c[b == 0] = -np.inf
    negative = b < 0
    if not negative.any():
        out = _api._logsumexp(c, axes, keepdims, n_threads)
        return out, _sign_of(np.asarray(out))
    positive = _api._logsumexp(np.where(negative, -np.inf, c), axes, keepdims, n_threads)
    minus = _api._logsumexp(np.where(negative, c, -np.inf), axes, keepdims, n_threads)
    hi, lo = np.maximum(positive, minus), np.minimum(positive, minus)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = lo - hi                                  # log(1 - e^d), accurately for both ends
        out = hi + np.where(d > -_LN2, np.log(-np.expm1(d)), np.log1p(-np.exp(d)))
    sign = np.sign(positive - minus)
    return out, np.where(np.isnan(out), np.nan, sign)


def _unstable(out, sign, a, b, axes, return_sign):
    """SciPy's values where its stable result is not finite: log of the
    plain sum of b * exp(a) (its magnitude with `return_sign`), and that
    sum's sign, from the rows concerned alone (so a NaN or infinite element
    with a zero weight counts again there).  `out` and `sign` have the
    kept-axes shape (keepdims) and a's dtype; changed in place."""
    bad = ~np.isfinite(out)
    if not bad.any():
        return
    am, span, _ = _api._adjacent(a, axes)
    outer, m, inner = _split_shape(am.shape, span)
    o, i = np.nonzero(bad.reshape(outer, inner))
    rows = am.reshape(outer, m, inner)[o, :, i]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        weights = _api._adjacent(b, axes)[0].reshape(outer, m, inner)[o, :, i]
        total = np.sum(weights * np.exp(rows), axis=1)
        flat_sign = sign.reshape(outer, inner)
        flat_sign[o, i] = np.sign(total)
        out.reshape(outer, inner)[o, i] = np.log(np.abs(total) if return_sign else total)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, *, n_threads=None):
    """``log(sum(b * exp(a)))`` over ``axis``: ``scipy.special.logsumexp``.

    Parameters
    ----------
    a : array_like of real numbers
        Integers and booleans are computed in float64; float16, bfloat16,
        float32 and float64 in their own dtype (accumulated in float64).
    axis : int, tuple of ints or None
        Axes to reduce; None (the default): every axis.
    b : array_like, optional
        Weights, broadcast against ``a`` (the result has their joint shape,
        reduced).  A zero weight drops its element; negative weights need
        ``return_sign`` unless the sum stays positive.
    keepdims : bool
        Keep the reduced axes with length one.
    return_sign : bool
        Also return the sign of the sum (1, -1, 0 for a sum of 0, NaN for
        NaN), the first result then being log of its magnitude.
    n_threads : int or None, keyword-only
        As in :func:`crossentropy.cross_entropy`.

    Returns
    -------
    res : numpy scalar or ndarray
        In the promoted dtype of ``a`` and ``b``.  An empty array gives
        -inf, a negative sum without ``return_sign`` NaN.
    sgn : numpy scalar or ndarray, with ``return_sign``
        (-1 for an empty array, as SciPy.)

    Examples
    --------
    >>> from crossentropy.special import logsumexp
    >>> float(logsumexp([[1000.0, 1000.0]]))
    1000.6931471805599
    >>> logsumexp([[0.0, 0.0], [1.0, 1.0]], axis=1).round(3).tolist()
    [0.693, 1.693]
    """
    n_threads = _resolve_n_threads(n_threads)            # (checked before the work)
    a, b = _promote(a, b)
    keepdims = _check_bool(keepdims, "keepdims")
    return_sign = _check_bool(return_sign, "return_sign")
    dtype = a.dtype
    if a.ndim == 0:                                      # (SciPy's: at least one axis)
        a, b = a.reshape(1), None if b is None else b.reshape(1)
    axes = _check_axes(axis, a.ndim, "a")
    if a.size == 0:
        out = np.full(tuple(1 if d in axes else n for d, n in enumerate(a.shape)), -np.inf, dtype)
        sign = np.full(out.shape, -1, dtype)
    elif b is None:
        # (the kernels' -inf, +inf and NaN rows are SciPy's)
        out = _api._logsumexp(a, axes, True, n_threads)
        sign = _sign_of(out) if return_sign else out
    else:
        out, sign = _weighted(a, b, axes, True, n_threads)
        if not return_sign:
            out[sign < 0] = np.nan
        with np.errstate(over="ignore"):
            out, sign = out.astype(dtype), sign.astype(dtype)
        _unstable(out, sign, a, b, axes, return_sign)
    if not keepdims:
        out, sign = out.squeeze(axes), sign.squeeze(axes)
    return (out[()], sign[()]) if return_sign else out[()]


def _normalise(mode, x, axis, n_threads, out):
    """softmax or log_softmax (`mode`) as SciPy's: `x` in the dtype NumPy's
    exp gives it; a 0-d `x` takes axis 0 or -1 too, as NumPy's reductions
    do."""
    a = _exp_input(x, "x")
    if a.ndim == 0 and axis is not None:
        _check_axes(axis, 1, "a 0-d x")
        axis = None
    return _api._normaliser(mode, a, axis, n_threads, out, scipy=True)


def softmax(x, axis=None, *, n_threads=None, out=None):
    """``exp(x) / sum(exp(x))`` over ``axis``: ``scipy.special.softmax``.

    Parameters
    ----------
    x : array_like of real numbers
        Integers and booleans take the dtype NumPy's ``exp`` gives them
        (float16 up to 8 bits, float32 for 16, float64 beyond), as SciPy's
        result does.
    axis : int, tuple of ints or None
        Axes normalised together; None (the default): every element.
    n_threads : int or None, keyword-only
        As in :func:`crossentropy.cross_entropy`.
    out : ndarray, optional, keyword-only
        Output of x's shape and (computed) dtype; may be ``x`` itself.

    Returns
    -------
    ndarray of x's shape (a numpy scalar for a scalar).  A row holding NaN,
    +inf or only -inf is NaN throughout, as SciPy's.

    Examples
    --------
    >>> from crossentropy.special import softmax
    >>> softmax([[0.0, 0.0], [0.0, 0.0]], axis=1).tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """
    return _normalise(Mode.SOFTMAX, x, axis, n_threads, out)


def log_softmax(x, axis=None, *, n_threads=None, out=None):
    """``x - logsumexp(x)`` over ``axis``: ``scipy.special.log_softmax``.

    Parameters and dtypes as :func:`softmax`.  As SciPy's, a row whose
    largest element is +inf gives NaN there and -inf elsewhere (NaN
    throughout if it also holds a NaN); a row of only -inf gives NaN.

    Examples
    --------
    >>> from crossentropy.special import log_softmax
    >>> log_softmax([1000.0, 1.0]).tolist()
    [0.0, -999.0]
    """
    return _normalise(Mode.LOG_SOFTMAX, x, axis, n_threads, out)
