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
    cpus = _cpu_count()
    if n_threads is None:
        return max(1, min(_kernels.max_threads(), cpus))
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be an integer or None, got {type(n_threads).__name__}")
    n = int(n_threads)
    if n == 0:
        raise ValueError("n_threads must be a positive or negative integer or None, got 0")
    if n < 0:
        n = cpus + 1 + n
    return max(1, min(n, _MAX_OVERSUBSCRIPTION * cpus))


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
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis), got a 0-d array")
    return normalize_axis_index(int(axis), ndim, msg_prefix=f"axis for {name}")


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
    if not a.flags.aligned or any(s % a.itemsize for s in a.strides):
        return np.array(a)
    return a


def _split_shape(shape, axis):
    """(outer, classes, inner) for viewing `shape` around `axis`."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def _view3(a, axis):
    """`a` as (outer, classes, inner) without copying, or None if that needs a copy."""
    try:
        return np.reshape(a, _split_shape(a.shape, axis), copy=False)
    except ValueError:
        return None


def _input3(a, axis):
    """`a` as (outer, classes, inner), copying only when the layout forces it."""
    return _kernel_ready(np.reshape(a, _split_shape(a.shape, axis)))


def _target_indices(target, logits_shape, axis):
    """Check integer class targets and return them as an (outer, inner) intp view."""
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    expected = logits_shape[:axis] + logits_shape[axis + 1:]
    if t.shape != expected:
        raise ValueError(
            f"target has shape {t.shape}, expected {expected}: "
            f"the logits' shape {logits_shape} without the class axis {axis}"
        )
    n_classes = logits_shape[axis]
    if t.size:
        bad = (t < 0) | (t >= n_classes)
        if bad.any():
            where = np.unravel_index(int(np.argmax(bad)), t.shape)
            where = where[0] if len(where) == 1 else tuple(int(w) for w in where)
            raise IndexError(
                f"target[{where}] = {t[where]} is not a class index: "
                f"logits have {n_classes} classes along axis {axis}, so targets must be in [0, {n_classes})"
            )
    outer, _, inner = _split_shape(logits_shape, axis)
    return _kernel_ready(np.reshape(t, (outer, inner)).astype(np.intp, copy=False))


# --- dispatch --------------------------------------------------------------------

def _chunking(n_rows, n_classes, n_threads):
    """(rows per chunk, number of chunks, threads actually worth starting)."""
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(n_classes, 1))
    n_chunks = -(-n_rows // rows_per_chunk)
    return rows_per_chunk, n_chunks, max(1, min(n_threads, n_chunks))


def _run(mode, z3, out3, target2, row_value, grad_scale, n_threads):
    """Call the kernel once; returns the per-chunk loss sums."""
    n_rows = z3.shape[0] * z3.shape[2]
    m = z3.shape[1]
    rows_per_chunk, n_chunks, n_threads = _chunking(n_rows, m, n_threads)
    chunk_sums = np.zeros(n_chunks, dtype=np.float64)
    scratch = None
    unit = z3.itemsize
    if m > _kernels.BLOCK and (z3.strides[1] != unit or (out3 is not None and out3.strides[1] != unit)):
        scratch = np.empty((n_threads, m), dtype=z3.dtype)
    _kernels.run(z3, out3, target2, row_value, chunk_sums, rows_per_chunk,
                 scratch, grad_scale, n_threads, int(mode))
    return chunk_sums


def _reduce(chunk_sums, row_value, denominator, reduction, dtype, shape):
    if reduction == "none":
        return row_value.reshape(shape).astype(dtype)[()]
    total = float(np.sum(chunk_sums))
    if reduction == "mean":
        total = total / denominator if denominator else math.nan
    return dtype.type(total)


def _loss(logits, target, reduction, axis, n_threads, grad_out, want_grad):
    """Shared body of cross_entropy and cross_entropy_and_grad."""
    _check_reduction(reduction)
    axis = _check_axis(axis, logits.ndim, "logits")
    threads = _resolve_n_threads(n_threads)
    target2 = _target_indices(target, logits.shape, axis)

    z3 = _input3(logits, axis)
    n_rows = z3.shape[0] * z3.shape[2]
    denominator = n_rows
    row_value = np.empty((z3.shape[0], z3.shape[2])) if reduction == "none" else None
    grad_scale = 1.0 / denominator if reduction == "mean" and denominator else 1.0

    out3 = staging = None
    if want_grad:
        out3 = _view3(grad_out, axis)
        if out3 is None or _kernel_ready(out3) is not out3:
            # The output's layout cannot be addressed as (outer, classes, inner):
            # compute into a fresh array and copy it over at the end.
            staging = np.empty(logits.shape, dtype=logits.dtype)
            out3 = _view3(staging, axis)
    chunk_sums = _run(Mode.LOSS_GRAD if want_grad else Mode.LOSS,
                      z3, out3, target2, row_value, grad_scale, threads)
    if staging is not None:
        grad_out[...] = staging
    shape = logits.shape[:axis] + logits.shape[axis + 1:]
    return _reduce(chunk_sums, row_value, denominator, reduction, logits.dtype, shape)


# --- public functions --------------------------------------------------------------

def cross_entropy(logits, target, *, reduction="mean", axis=-1, n_threads=None):
    """Softmax cross-entropy loss between logits and integer class targets.

    For each position, ``loss = logsumexp(logits) - logits[target]`` along the
    class axis, computed stably (the row maximum is subtracted first) in one
    pass, with the GIL released.  Semantics follow
    ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    logits : array_like of float32 or float64, shape (..., C, ...)
        Unnormalised scores; the class axis is ``axis``.
    target : array_like of int, shape ``logits.shape`` without ``axis``
        Class indices in ``[0, C)``; any integer dtype.
    reduction : {'mean', 'sum', 'none'}, keyword-only
        ``'mean'`` averages over positions, ``'sum'`` adds them up,
        ``'none'`` returns one loss per position.
    axis : int, keyword-only
        The class axis.  ``-1`` (NumPy convention); PyTorch's ``(N, C, d1, ...)``
        layout is ``axis=1``.
    n_threads : int or None, keyword-only
        OpenMP threads.  None follows ``OMP_NUM_THREADS`` / threadpoolctl,
        capped at the available CPUs; negative values count back from the CPU
        count (-1: all).  Small inputs use one thread whatever is asked.

    Returns
    -------
    loss : numpy scalar, or ndarray for ``reduction='none'``
        In the logits' dtype; sums are accumulated in float64.

    Raises
    ------
    TypeError
        Logits not float32/float64, targets not integer, or an option of the
        wrong type.
    ValueError
        Shapes that do not match, an unknown reduction, an axis out of range.
    IndexError
        A target outside ``[0, C)``; the message gives the first one and where.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import cross_entropy
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> round(float(cross_entropy(logits, [0, 2])), 6)
    0.669962
    >>> cross_entropy(logits, [0, 2], reduction="none").round(6)
    array([0.241311, 1.098612])
    """
    logits = _as_float_array(logits, "logits")
    return _loss(logits, target, reduction, axis, n_threads, None, want_grad=False)


def cross_entropy_and_grad(logits, target, *, reduction="mean", axis=-1, n_threads=None,
                           out=None, inplace=False):
    """Cross-entropy loss and its gradient with respect to the logits, fused.

    One pass over each row gives both: the gradient is
    ``softmax(logits) - onehot(target)``, divided by the number of positions for
    ``reduction='mean'``.  Arguments as :func:`cross_entropy`, plus:

    Parameters
    ----------
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
        The logits' shape and dtype: ``out``, ``logits`` (in place) or a new array.
        For ``reduction='none'`` it is the gradient of the sum of the losses.

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
    if inplace:
        if not logits.flags.writeable:
            raise ValueError("inplace=True needs writeable logits, but logits is read-only")
        grad = logits
    elif out is not None:
        _check_writable_output(out, logits, "out", forbid_overlap=[
            (logits, "logits"), (target if isinstance(target, np.ndarray) else None, "target")])
        grad = out
    else:
        grad = np.empty(logits.shape, dtype=logits.dtype)
    loss = _loss(logits, target, reduction, axis, n_threads, grad, want_grad=True)
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
    out3 = _view3(out, axis)
    staging = None
    if out3 is None or _kernel_ready(out3) is not out3:
        staging = np.empty(x.shape, dtype=x.dtype)
        out3 = _view3(staging, axis)
    _run(mode, z3, out3, None, None, 1.0, threads)
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
    row_value = np.empty((z3.shape[0], z3.shape[2]))
    _run(Mode.LOGSUMEXP, z3, None, None, row_value, 1.0, threads)
    shape = x.shape[:axis] + ((1,) if keepdims else ()) + x.shape[axis + 1:]
    return row_value.reshape(shape).astype(x.dtype)[()]
