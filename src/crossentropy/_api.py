"""Public functions: validate, normalise, dispatch to one kernel, shape the result.

Every check happens here, before any output (or, with ``inplace=True``, the
logits) is written.  The kernels in ``_kernels.pyx`` trust what they are given.
"""

import math
import numbers
import os

import numpy as np
from numpy.lib.array_utils import normalize_axis_index

from . import _kernels
from ._kernels import Mode

__all__ = [
    "cross_entropy",
    "cross_entropy_and_grad",
    "log_softmax",
    "logsumexp",
    "softmax",
]

_REDUCTIONS = ("mean", "sum", "none")
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Rows are handed to threads in chunks of about this many elements: enough work
# per chunk to amortise scheduling, small enough to balance.  The chunking
# depends only on the shape, so results do not depend on the thread count.
_CHUNK_ELEMENTS = 1 << 15
# An explicit n_threads above this multiple of the CPU count is capped: beyond
# it threads only add overhead, and a huge count could exhaust the system.
_MAX_OVERSUBSCRIPTION = 4
_INTP_MIN = int(np.iinfo(np.intp).min)
_INTP_MAX = int(np.iinfo(np.intp).max)
# float32(x) is inf from here on (FLT_MAX plus half an ulp rounds up).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


# --- argument checks -----------------------------------------------------------

def _cpu_count():
    """CPUs this process may run on (affinity- and container-aware where possible)."""
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _resolve_n_threads(n_threads):
    """Thread count requested by the user, before capping by the amount of work.

    None: OpenMP's current limit (``OMP_NUM_THREADS``, threadpoolctl), capped at
    the CPUs available.  A negative count counts back from the CPU count
    (-1: all of them).  0 is an error.
    """
    if n_threads is None:
        return max(1, min(_kernels.max_threads(), _cpu_count()))
    n = _check_integer(n_threads, "n_threads", "an integer or None")
    if n == 0:
        raise ValueError("n_threads must be a positive or negative integer or None, got 0")
    if 0 < n <= _MAX_OVERSUBSCRIPTION:
        return n                # within the cap on any machine: no need to count CPUs
    cpus = _cpu_count()
    if n < 0:
        n = cpus + 1 + n
    return max(1, min(n, _MAX_OVERSUBSCRIPTION * cpus))


def _check_integer(value, name, what="an integer"):
    """`value` as an int; bools and non-integers are a TypeError naming `name`."""
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return int(value)


def _position(flat_index, shape):
    """A flat index as an error message shows it: i in 1-D, (i, j, ...) otherwise."""
    where = np.unravel_index(flat_index, shape)
    return int(where[0]) if len(where) == 1 else tuple(int(i) for i in where)


def _as_float_array(x, name):
    """`x` as an ndarray of float32 or float64, or a TypeError naming `name`."""
    a = np.asarray(x)
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {a.dtype}"
            + (f"; convert it with {name}.astype(np.float32)" if a.dtype.kind in "biuf" else "")
        )
    return a


def _check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")


def _check_axis(axis, ndim, name):
    axis = _check_integer(axis, "axis")
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis), got a 0-d array")
    return normalize_axis_index(axis, ndim, msg_prefix=f"axis for {name}")


def _check_writable_output(out, like, name, *, forbid_overlap):
    """Validate a caller-supplied output array for an array shaped like `like`."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != like.dtype:
        raise TypeError(f"{name} must have dtype {like.dtype} (as the logits), got {out.dtype}")
    if out.shape != like.shape:
        raise ValueError(f"{name} must have shape {like.shape} (as the logits), got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    for other, what in forbid_overlap:
        if other is not None and np.may_share_memory(out, other):
            raise ValueError(f"{name} overlaps {what}; pass a separate array (or inplace=True)")


def _same_elements(a, b):
    """Whether two arrays of one shape address exactly the same elements."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides)


def _kernel_ready(a):
    """`a`, or a copy of it if the kernels cannot address it element-wise."""
    flags = a.flags
    if flags.aligned and flags.c_contiguous:
        return a
    if not flags.aligned or any(s % a.itemsize for s in a.strides):
        return np.array(a)
    return a


def _split_shape(shape, axis):
    """(outer, classes, inner) for viewing `shape` around `axis`."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def _view3(a, axis):
    """`a` as (outer, classes, inner) without copying, or None if that needs a copy."""
    try:
        return a.reshape(_split_shape(a.shape, axis), copy=False)
    except ValueError:
        return None


def _input3(a, axis):
    """`a` as (outer, classes, inner), copying only when the layout forces it."""
    return _kernel_ready(a.reshape(_split_shape(a.shape, axis)))


def _output3(out, axis):
    """(the array the kernel writes, as (outer, classes, inner); staging or None).

    When `out`'s layout cannot be addressed as (outer, classes, inner), the
    kernel writes a fresh staging array, which the caller copies into `out`.
    """
    out3 = _view3(np.asarray(out), axis)     # (an np.matrix is 2-D whatever its shape)
    if out3 is not None and _kernel_ready(out3) is out3:
        return out3, None
    staging = np.empty(out.shape, dtype=out.dtype)
    return _view3(staging, axis), staging


def _check_real(value, name):
    if type(value) is float:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _check_label_smoothing(label_smoothing):
    eps = _check_real(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {eps}")
    return eps


def _check_nonnegative_weights(w, name, expected_shape, what):
    """`w` as a float64 array of `expected_shape` with finite entries >= 0."""
    a = np.asarray(w)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    if a.shape != expected_shape:
        raise ValueError(f"{name} must have shape {expected_shape} ({what}), got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        where = _position(int(np.argmax(bad)), a.shape)
        raise ValueError(f"{name} must be finite and non-negative, but {name}[{where}] = {a[where]}")
    return a


def _target_indices(t, logits_shape, axis, ignore_index, weight, sample_weight2):
    """Check integer class targets in one pass.

    Returns the (outer, inner) intp view the kernel reads, the ignore_index it
    should use, the number of positions not ignored, and the mean's denominator.
    """
    expected = logits_shape[:axis] + logits_shape[axis + 1:]
    if t.shape != expected:
        raise ValueError(
            f"target has shape {t.shape}, expected {expected}: "
            f"the logits' shape {logits_shape} without the class axis {axis}"
        )
    n_classes = logits_shape[axis]
    outer, _, inner = _split_shape(logits_shape, axis)
    t = t.reshape((outer, inner))
    if t.dtype.kind == "u" and t.size and t.max() > _INTP_MAX:
        # Values that would wrap in the cast to intp: unless they are all
        # ignore_index, one of them (or an earlier target) is out of range.
        bad = (t >= n_classes) & (t != ignore_index)
        if bad.any():
            _raise_bad_target(t, int(np.argmax(bad)), expected, n_classes, axis, ignore_index)
    kernel_ignore = ignore_index
    if not _INTP_MIN <= ignore_index <= _INTP_MAX:
        # An ignore_index the kernel cannot hold (it can still equal a uint64
        # target): check the rest here, then mark the ignored positions with
        # -1 for the kernel (no other target can be -1 once checked).
        keep = t != ignore_index
        bad = keep & ((t < 0) | (t >= n_classes))
        if bad.any():
            _raise_bad_target(t, int(np.argmax(bad)), expected, n_classes, axis, ignore_index)
        t2 = np.full(t.shape, -1, dtype=np.intp)
        t2[keep] = t[keep].astype(np.intp)
        kernel_ignore = -1
    else:
        t2 = _kernel_ready(t.astype(np.intp, copy=False))
    first_bad, n_active, denominator = _kernels.check_targets(
        t2, n_classes, kernel_ignore, weight, sample_weight2)
    if first_bad >= 0:
        _raise_bad_target(t, first_bad, expected, n_classes, axis, ignore_index)
    return t2, kernel_ignore, n_active, denominator


def _raise_bad_target(t, flat_index, positions, n_classes, axis, ignore_index):
    raise IndexError(
        f"target[{_position(flat_index, positions)}] = {t.reshape(-1)[flat_index]} is not a class index: "
        f"logits have {n_classes} classes along axis {axis}, so targets must be "
        f"in [0, {n_classes}) or equal ignore_index ({ignore_index})"
    )


def _target_probabilities(y, logits, axis, ignore_index):
    """Check class-probability targets and return them as (outer, C, inner)."""
    if y.shape != logits.shape:
        raise ValueError(
            f"target holds floating values, so it is read as class probabilities and must "
            f"have the logits' shape {logits.shape}, got {y.shape}; class indices need an "
            f"integer dtype"
        )
    if ignore_index >= 0:
        raise ValueError(
            f"ignore_index ({ignore_index}) is not supported with class-probability "
            f"(floating) targets"
        )
    return _input3(y.astype(logits.dtype, copy=False), axis)


# --- dispatch --------------------------------------------------------------------

def _chunking(n_rows, n_classes, n_threads):
    """(rows per chunk, number of chunks, threads actually worth starting)."""
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(n_classes, 1))
    if n_classes <= _kernels.SMALL_ROW_LEN:
        # whole blocks of the across-rows path (64 rows) in every chunk
        block = _kernels.FAST_ROWS_LEN
        rows_per_chunk = max(block, rows_per_chunk - rows_per_chunk % block)
    n_chunks = -(-n_rows // rows_per_chunk)
    if n_classes >= _kernels.SPLIT_MIN_CLASSES_LEN and n_rows <= _kernels.SPLIT_MAX_ROWS_LEN:
        return rows_per_chunk, n_chunks, n_threads     # rows the threads share, segment-wise
    return rows_per_chunk, n_chunks, max(1, min(n_threads, n_chunks))


def _run(mode, z3, threads, *, out3=None, y3=None, target2=None, sample_weight2=None,
         row_value=None, weight=None, ignore_index=-100, label_smoothing=0.0,
         grad_scale=1.0):
    """Call the kernel once; returns the per-chunk loss sums."""
    n_rows = z3.shape[0] * z3.shape[2]
    m = z3.shape[1]
    rows_per_chunk, n_chunks, threads = _chunking(n_rows, m, threads)
    chunk_sums = np.zeros(n_chunks, dtype=np.float64)
    scratch = None
    if _kernels.needs_scratch(z3, out3, y3):
        scratch = np.empty((threads, 3 * m), dtype=z3.dtype)
    weight_total = float(np.sum(weight)) if weight is not None else float(m)
    _kernels.run(int(mode), z3, out3, y3, target2, sample_weight2, row_value,
                 weight, weight_total, ignore_index, label_smoothing, grad_scale,
                 chunk_sums, rows_per_chunk, scratch, threads)
    return chunk_sums


def _reduce(chunk_sums, row_value, denominator, reduction, dtype, shape):
    if reduction == "none":
        return row_value.reshape(shape)[()]
    total = float(chunk_sums.sum())
    if reduction == "mean":
        total = total / denominator if denominator else math.nan
    if dtype == np.float32 and abs(total) >= _FLOAT32_OVERFLOW:
        total = math.copysign(math.inf, total)      # (without NumPy's overflow warning)
    return dtype.type(total)


def _loss(logits, target, *, reduction, axis, n_threads, weight, ignore_index,
          label_smoothing, sample_weight, grad_scale, grad_out):
    """Shared body of cross_entropy and cross_entropy_and_grad: validate every
    argument, then run the kernel once.  `grad_out` is None for the loss only."""
    _check_reduction(reduction)
    axis = _check_axis(axis, logits.ndim, "logits")
    threads = _resolve_n_threads(n_threads)
    ignore_index = _check_integer(ignore_index, "ignore_index")
    label_smoothing = _check_label_smoothing(label_smoothing)
    grad_scale = _check_real(grad_scale, "grad_scale")
    n_classes = logits.shape[axis]
    positions = logits.shape[:axis] + logits.shape[axis + 1:]
    outer, _, inner = _split_shape(logits.shape, axis)
    if weight is not None:
        weight = _check_nonnegative_weights(weight, "weight", (n_classes,), "one per class")
    sample_weight2 = None
    if sample_weight is not None:
        sample_weight = _check_nonnegative_weights(
            sample_weight, "sample_weight", positions, "one per position: the target's shape")
        sample_weight2 = _kernel_ready(sample_weight.reshape((outer, inner)))

    t = np.asarray(target)
    y3 = target2 = None
    if t.dtype.kind in "iu":
        target2, kernel_ignore, n_active, denominator = _target_indices(
            t, logits.shape, axis, ignore_index, weight, sample_weight2)
    elif t.dtype.kind == "f":
        y3 = _target_probabilities(t, logits, axis, ignore_index)
        kernel_ignore = -1
        n_active = math.prod(positions)
        denominator = float(n_active if sample_weight is None else np.sum(sample_weight))
    else:
        raise TypeError(
            f"target must hold integer class indices or floating class probabilities, "
            f"got dtype {t.dtype}"
        )

    if reduction == "mean":
        if denominator:
            grad_scale = grad_scale / denominator
        else:
            # No position counts: PyTorch gives a zero gradient when every
            # position is ignored, and NaN when the weights of the rest are 0.
            grad_scale = 0.0 if n_active == 0 else math.nan
    row_value = np.empty((outer, inner), logits.dtype) if reduction == "none" else None

    z3 = _input3(logits, axis)
    out3 = staging = None
    if grad_out is not None:
        out3, staging = _output3(grad_out, axis)
    chunk_sums = _run(Mode.LOSS_GRAD if grad_out is not None else Mode.LOSS, z3, threads,
                      out3=out3, y3=y3, target2=target2, sample_weight2=sample_weight2,
                      row_value=row_value, weight=weight, ignore_index=kernel_ignore,
                      label_smoothing=label_smoothing, grad_scale=grad_scale)
    if staging is not None:
        grad_out[...] = staging
    return _reduce(chunk_sums, row_value, denominator, reduction, logits.dtype, positions)


# --- public functions --------------------------------------------------------------

def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, sample_weight=None, axis=-1, n_threads=None):
    """Softmax cross-entropy between logits and class targets.

    Per position, ``loss = -sum_j c_j log softmax(logits)_j`` along the class
    axis, with ``c`` the one-hot target (or the given class probabilities),
    smoothed and weighted as in ``torch.nn.functional.cross_entropy``.  Computed
    stably (the row maximum is subtracted first) in one pass over the logits,
    with the GIL released.

    Parameters
    ----------
    logits : array_like of float32 or float64, shape (..., C, ...)
        Unnormalised scores; the class axis is ``axis``.
    target : array_like
        Either class indices (any integer dtype, ``logits.shape`` without
        ``axis``, each in ``[0, C)`` or equal to ``ignore_index``), or class
        probabilities (floating, ``logits.shape``).
    weight : array_like of shape (C,), optional, keyword-only
        Per-class weights, finite and >= 0.
    ignore_index : int, keyword-only
        Positions whose target equals it contribute nothing, to the loss or to
        the mean's denominator.  Not with probability targets (unless negative).
    reduction : {'mean', 'sum', 'none'}, keyword-only
        ``'none'``: one loss per position.  ``'sum'``: their sum.  ``'mean'``:
        the sum divided, for class indices, by the summed weight
        (``weight[target] * sample_weight``) of the positions not ignored, and
        for probabilities by the number of positions (or the sum of
        ``sample_weight``).  A mean over nothing is NaN.
    label_smoothing : float in [0, 1], keyword-only
        Mixes the target with the uniform distribution:
        ``(1 - label_smoothing) * target + label_smoothing / C``.
    sample_weight : array_like, optional, keyword-only
        Per-position weights (the shape of the targets' positions), finite and
        >= 0: each position's loss is multiplied by it, and the mean divides by
        the weighted count (see ``reduction``).
    axis : int, keyword-only
        The class axis.  ``-1`` (NumPy convention); PyTorch's ``(N, C, d1, ...)``
        layout is ``axis=1``.
    n_threads : int or None, keyword-only
        OpenMP threads.  None follows ``OMP_NUM_THREADS`` / threadpoolctl,
        capped at the available CPUs; negative values count back from the CPU
        count (-1: all).  Small inputs use one thread whatever is asked.  The
        result does not depend on it.

    Returns
    -------
    loss : numpy scalar, or ndarray for ``reduction='none'``
        In the logits' dtype; sums are accumulated in float64.

    Raises
    ------
    TypeError
        Logits not float32/float64, targets neither integer nor floating, or an
        option of the wrong type.
    ValueError
        Shapes that do not match, an unknown reduction, an axis out of range,
        label_smoothing outside [0, 1], negative or non-finite weights,
        ignore_index with probability targets.
    IndexError
        A class index outside ``[0, C)`` other than ``ignore_index``; the
        message gives the first one and where it is.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import cross_entropy
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> round(float(cross_entropy(logits, [0, 2])), 6)
    0.669962
    >>> cross_entropy(logits, [0, 2], reduction="none").round(6)
    array([0.241311, 1.098612])
    >>> round(float(cross_entropy(logits, [0, -100])), 6)    # second position ignored
    0.241311
    >>> round(float(cross_entropy(logits, [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])), 6)
    0.669962
    """
    logits = _as_float_array(logits, "logits")
    return _loss(logits, target, reduction=reduction, axis=axis, n_threads=n_threads,
                 weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                 sample_weight=sample_weight, grad_scale=1.0, grad_out=None)


def cross_entropy_and_grad(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0, sample_weight=None, grad_scale=1.0, axis=-1,
                           n_threads=None, out=None, inplace=False):
    """Cross-entropy loss and its gradient with respect to the logits, fused.

    One pass over each row gives both.  The gradient of a position is
    ``sum_j c_j * (softmax(logits) - onehot_j)`` (``softmax - onehot(target)``
    without weights or smoothing), times its sample weight, divided by the
    mean's denominator for ``reduction='mean'``, times ``grad_scale``.
    Arguments as :func:`cross_entropy`, plus:

    Parameters
    ----------
    grad_scale : float, keyword-only
        Multiplies the gradient: the upstream gradient of the loss, so that a
        framework's backward needs no second pass.
    out : ndarray, optional, keyword-only
        Where to write the gradient: the logits' shape and dtype, writeable,
        not overlapping ``logits`` or ``target``.  Nothing is allocated for it.
    inplace : bool, keyword-only
        Write the gradient over ``logits`` (which must be a writeable float32 or
        float64 ndarray): no memory at all for the gradient.  Not with ``out``.

    Returns
    -------
    loss : numpy scalar, or ndarray for ``reduction='none'``
        As :func:`cross_entropy`.
    grad : ndarray
        The logits' shape and dtype: ``out``, ``logits`` (in place) or a new
        array.  For ``reduction='none'`` it is the gradient of the sum of the
        losses.  Ignored positions get a zero gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import cross_entropy_and_grad
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> loss, grad = cross_entropy_and_grad(logits, [0, 2])
    >>> grad.round(4)
    array([[-0.1072,  0.0876,  0.0196],
           [ 0.1667,  0.1667, -0.3333]])
    """
    if not isinstance(inplace, (bool, np.bool_)):
        raise TypeError(f"inplace must be True or False, got {type(inplace).__name__}")
    if inplace:
        if out is not None:
            raise ValueError("pass either out= or inplace=True, not both")
        if not isinstance(logits, np.ndarray):
            raise TypeError(
                f"inplace=True needs logits to be a numpy.ndarray, got {type(logits).__name__}"
            )
    logits = _as_float_array(logits, "logits")
    overlap_checks = [(logits, "logits")]
    for other, name in ((target, "target"), (weight, "weight"), (sample_weight, "sample_weight")):
        if isinstance(other, np.ndarray):
            overlap_checks.append((other, name))
    if inplace:
        if not logits.flags.writeable:
            raise ValueError("inplace=True needs writeable logits, but logits is read-only")
        for other, name in overlap_checks[1:]:
            if np.may_share_memory(logits, other):
                raise ValueError(f"inplace=True would overwrite {name}, which shares memory "
                                 f"with logits")
        grad = logits
    elif out is not None:
        _check_writable_output(out, logits, "out", forbid_overlap=overlap_checks)
        grad = out
    else:
        grad = np.empty(logits.shape, dtype=logits.dtype)
    loss = _loss(logits, target, reduction=reduction, axis=axis, n_threads=n_threads,
                 weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                 sample_weight=sample_weight, grad_scale=grad_scale, grad_out=grad)
    return loss, grad


def _normaliser(mode, x, axis, n_threads, out):
    """softmax / log_softmax: validate, run, return the output array."""
    x = _as_float_array(x, "x")
    axis = _check_axis(axis, x.ndim, "x")
    threads = _resolve_n_threads(n_threads)
    if out is None:
        out = np.empty(x.shape, dtype=x.dtype)
    else:
        _check_writable_output(out, x, "out", forbid_overlap=[])
    if np.may_share_memory(out, x) and not _same_elements(out, x):
        raise ValueError("out overlaps x without being x itself; pass a separate array, or x")
    z3 = _input3(x, axis)
    out3, staging = _output3(out, axis)
    _run(mode, z3, threads, out3=out3)
    if staging is not None:
        out[...] = staging
    return out


def softmax(x, *, axis=-1, n_threads=None, out=None):
    """Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``.

    Parameters
    ----------
    x : array_like of float32 or float64
    axis : int, keyword-only
        Axis to normalise over (default: the last).
    n_threads : int or None, keyword-only
        As in :func:`cross_entropy`.
    out : ndarray, optional, keyword-only
        Output of x's shape and dtype; may be ``x`` itself.

    Returns
    -------
    ndarray of x's shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import softmax
    >>> softmax(np.array([1.0, 2.0, 3.0])).round(4)
    array([0.09  , 0.2447, 0.6652])
    """
    return _normaliser(Mode.SOFTMAX, x, axis, n_threads, out)


def log_softmax(x, *, axis=-1, n_threads=None, out=None):
    """Log-softmax along ``axis``: ``(x - max) - log(sum(exp(x - max)))``.

    Parameters as :func:`softmax`.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import log_softmax
    >>> log_softmax(np.array([1.0, 2.0, 3.0])).round(4)
    array([-2.4076, -1.4076, -0.4076])
    """
    return _normaliser(Mode.LOG_SOFTMAX, x, axis, n_threads, out)


def logsumexp(x, *, axis=-1, keepdims=False, n_threads=None):
    """``log(sum(exp(x)))`` along ``axis``, computed stably.

    Parameters
    ----------
    x : array_like of float32 or float64
    axis : int, keyword-only
        Axis to reduce (default: the last).
    keepdims : bool, keyword-only
        Keep the reduced axis with length one.
    n_threads : int or None, keyword-only
        As in :func:`cross_entropy`.

    Returns
    -------
    numpy scalar or ndarray, in x's dtype (accumulated in float64).
    An empty axis gives ``-inf``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import logsumexp
    >>> round(float(logsumexp(np.array([1.0, 2.0, 3.0]))), 6)
    3.407606
    """
    x = _as_float_array(x, "x")
    axis = _check_axis(axis, x.ndim, "x")
    threads = _resolve_n_threads(n_threads)
    z3 = _input3(x, axis)
    row_value = np.empty((z3.shape[0], z3.shape[2]), dtype=z3.dtype)
    _run(Mode.LOGSUMEXP, z3, threads, row_value=row_value)
    shape = x.shape[:axis] + ((1,) if keepdims else ()) + x.shape[axis + 1:]
    return row_value.reshape(shape)[()]
