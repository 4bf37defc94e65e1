"""Public functions: validate, normalise, dispatch to one kernel, shape the result.

Every check happens here, before any output (or, with ``inplace=True``, the
logits) is written.  The kernels in ``_kernels.pyx`` trust what they are given.
"""

import math
import numbers
import os
import sys

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
# Effort np.shares_memory may spend deciding an overlap exactly (strides that
# interleave, as as_strided makes, are the only case that needs any).
_OVERLAP_WORK = 100_000


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


# What a masked array's owner probably meant, for the message that refuses it.
_MASK_HINTS = {
    "logits": "logits.filled(-np.inf) leaves the masked classes out of the softmax",
    "x": "x.filled(-np.inf) leaves the masked entries out of the softmax",
    "target": "target.filled(ignore_index) ignores the masked positions",
    "weight": "weight.filled(0) gives the masked classes no weight",
    "sample_weight": "sample_weight.filled(0) gives the masked positions no weight",
}


def _asarray(x, name):
    """`x` as an ndarray, a view of its memory where it has one (an ndarray, a
    memoryview, a tensor...); a masked array is a TypeError, since its mask
    would be lost."""
    if _is_masked(x):
        raise TypeError(f"{name} is a masked array, whose mask would be ignored; "
                        f"pass a plain array: {_MASK_HINTS.get(name, name + '.filled(value)')}")
    return np.asarray(x)


def _is_masked(x):
    ma = sys.modules.get("numpy.ma")         # (no masked array exists before it is imported)
    return ma is not None and isinstance(x, ma.MaskedArray)


def _as_float_array(x, name):
    """`x` as an ndarray of float32 or float64 (either byte order), or a
    TypeError naming `name`."""
    a = _asarray(x, name)
    if a.dtype not in _FLOAT_DTYPES and _native(a.dtype) not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {a.dtype}"
            + (f"; convert it with {name}.astype(np.float32)" if a.dtype.kind in "biuf" else "")
        )
    return a


def _native(dtype):
    """`dtype` in the machine's byte order."""
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def _check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")


def _check_axis(axis, ndim, name, *, allow_none=False):
    """`axis` as an index into `ndim` axes; None (every element) where allowed."""
    if axis is None and allow_none:
        return None
    axis = _check_integer(axis, "axis", "an integer or None" if allow_none else "an integer")
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis), got a 0-d array")
    return normalize_axis_index(axis, ndim, msg_prefix=f"axis for {name}")


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def _check_output(out, like, dtype, like_name):
    """A caller's `out` for an array shaped like `like`, of float dtype `dtype`
    (either byte order)."""
    if not isinstance(out, np.ndarray) or _is_masked(out):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}"
                        + ("; pass out.data, its unmasked array" if _is_masked(out) else ""))
    if _native(out.dtype) != dtype:
        raise TypeError(f"out must have dtype {dtype} (as {like_name}), got {out.dtype}")
    if out.shape != like.shape:
        raise ValueError(f"out must have shape {like.shape} (as {like_name}), got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    _check_distinct_elements(out, "out")


def _check_distinct_elements(a, name):
    """A ValueError unless every element of the writeable array `a` has memory
    of its own: threads write elements at once, and a loss would be computed
    from logits that its own gradient overwrote."""
    if a.flags.c_contiguous or a.flags.f_contiguous or a.size <= 1:
        return
    # Nested strides (what slicing and transposing make) cannot overlap: each
    # axis, by increasing stride, steps over everything the smaller ones span.
    span = a.itemsize
    for stride, n in sorted((abs(s), n) for n, s in zip(a.shape, a.strides) if n > 1):
        if stride < span:
            break
        span += stride * (n - 1)
    else:
        return
    # Otherwise (as_strided): two distinct elements whose first differing
    # index is along axis d differ by the offsets between a[0.., 0, ...] and
    # a[0.., 1:, ...], so one exact check per axis decides it.
    for d, n in enumerate(a.shape):
        lead = (0,) * d
        if n > 1 and _shares(a[lead + (slice(0, 1),)], a[lead + (slice(1, None),)],
                             f"the elements of {name}"):
            raise ValueError(
                f"{name} has elements that share memory (zero or overlapping strides, as "
                f"np.broadcast_to or as_strided make), which the results would overwrite "
                f"in turn; pass an array whose elements are distinct, such as {name}.copy()")


def _shares(a, b, what):
    """Whether arrays `a` and `b` share an element, exactly (np.shares_memory
    within a bounded effort: a ValueError naming `what` if that is not enough)."""
    try:
        return np.shares_memory(a, b, max_work=_OVERLAP_WORK)
    except np.exceptions.TooHardError:
        raise ValueError(
            f"could not decide whether {what} share memory: their strides interleave "
            f"beyond what can be checked quickly; pass a copy") from None


def _same_elements(a, b):
    """Whether two arrays of one shape address exactly the same elements (the
    strides of axes of length one do not matter)."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and all(sa == sb for n, sa, sb in zip(a.shape, a.strides, b.strides) if n > 1))


def _addressable(a):
    """Whether the kernels can address `a` element-wise as it is: aligned, in
    the machine's byte order, strides a multiple of the item."""
    flags = a.flags
    if flags.aligned and flags.c_contiguous:
        return a.dtype.isnative
    return flags.aligned and a.dtype.isnative and not any(s % a.itemsize for s in a.strides)


def _kernel_ready(a):
    """`a`, or a copy of it the kernels can address (_addressable)."""
    return a if _addressable(a) else np.array(a, dtype=_native(a.dtype))


def _split_shape(shape, axis):
    """(outer, classes, inner) for viewing `shape` around `axis` (None: every
    element is one row's)."""
    if axis is None:
        return 1, math.prod(shape), 1
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def _view3(a, axis):
    """`a` as (outer, classes, inner) for the kernel to write, without
    copying, or None if its layout does not allow that."""
    try:    # (as an ndarray: an np.matrix stays 2-D whatever its shape)
        a3 = np.asarray(a).reshape(_split_shape(a.shape, axis), copy=False)
    except ValueError:
        return None
    return a3 if _addressable(a3) else None


def _input3(a, axis):
    """`a` as (outer, classes, inner) for the kernel to read, and whether that
    took a copy (only when the layout forces it)."""
    a3 = _kernel_ready(a.reshape(_split_shape(a.shape, axis)))
    return a3, a.size > 0 and not np.may_share_memory(a3, a)


def _destination(dest, z3, z_copied, shape, axis):
    """Where the kernel writes an array result: (out3, result, staged).

    `dest` is None for a new array, else the array to fill (``out``, or the
    logits themselves in place).  `out3` is what the kernel writes, as
    (outer, classes, inner); `result` the array returned; `staged`, when not
    None, holds the kernel's output in `shape`, to be copied into `result`
    afterwards (`dest` has a layout the kernel cannot write).  When the
    logits were copied for the kernel, it works in place on that copy: beyond
    `dest`, at most one array the logits' size is ever allocated.
    """
    if dest is not None:
        direct = _view3(dest, axis)
        if direct is not None:
            return direct, dest, None
    if z_copied:
        out3, made = z3, z3.reshape(shape)
    else:
        made = np.empty(shape, dtype=z3.dtype)
        out3 = made.reshape(z3.shape)
    return (out3, made, None) if dest is None else (out3, dest, made)


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
    return _input3(y.astype(_native(logits.dtype), copy=False), axis)[0]


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
    weight_total = float(np.sum(weight)) if weight is not None else float(m)
    _kernels.run(mode=int(mode), z=z3, out=out3, y=y3, target=target2,
                 sample_weight=sample_weight2, row_value=row_value, weight=weight,
                 weight_total=weight_total, ignore_index=ignore_index,
                 label_smoothing=label_smoothing, grad_scale=grad_scale,
                 chunk_sums=chunk_sums, rows_per_chunk=rows_per_chunk, n_threads=threads)
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
          label_smoothing, sample_weight, grad_scale, gradient, out=None, inplace=False):
    """Shared body of cross_entropy and cross_entropy_and_grad: validate every
    argument, then run the kernel once.

    `gradient` is False for the loss alone, True for the gradient too: into
    `out`, a new array, or (`inplace`) the logits.  Returns the loss, and with
    `gradient` the gradient array too.
    """
    _check_reduction(reduction)
    axis = _check_axis(axis, logits.ndim, "logits")
    threads = _resolve_n_threads(n_threads)
    ignore_index = _check_integer(ignore_index, "ignore_index")
    label_smoothing = _check_label_smoothing(label_smoothing)
    grad_scale = _check_real(grad_scale, "grad_scale")
    n_classes = logits.shape[axis]
    positions = logits.shape[:axis] + logits.shape[axis + 1:]
    outer, _, inner = _split_shape(logits.shape, axis)
    t = _asarray(target, "target")
    weight = None if weight is None else _asarray(weight, "weight")
    sample_weight = None if sample_weight is None else _asarray(sample_weight, "sample_weight")

    if inplace:
        if not logits.flags.writeable:
            raise ValueError("inplace=True needs writeable logits, but logits is read-only")
        _check_distinct_elements(logits, "logits")
    elif out is not None:
        _check_output(out, logits, _native(logits.dtype), "the logits")

    if weight is not None:
        weight = _check_nonnegative_weights(weight, "weight", (n_classes,), "one per class")
    sample_weight2 = None
    if sample_weight is not None:
        sample_weight = _check_nonnegative_weights(
            sample_weight, "sample_weight", positions, "one per position: the target's shape")
        sample_weight2 = _kernel_ready(sample_weight.reshape((outer, inner)))

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
    row_value = np.empty((outer, inner), _native(logits.dtype)) if reduction == "none" else None

    z3, z_copied = _input3(logits, axis)
    out3 = grad = staged = None
    if gradient:
        out3, grad, staged = _destination(logits if inplace else out, z3, z_copied,
                                          logits.shape, axis)
        # What the kernel writes must share no element with what it reads:
        # checked on the arrays it reads, once every input is converted.
        reads = [(target2, "target"), (y3, "target"), (weight, "weight"),
                 (sample_weight2, "sample_weight")]
        if inplace:
            for other, name in reads:
                if other is not None and _shares(out3, other, f"logits and {name}"):
                    raise ValueError(f"inplace=True would overwrite {name}, which shares "
                                     f"memory with logits")
        else:
            # (out3 is z3 where the kernel works in place on its own copy)
            for other, name in [(None if out3 is z3 else z3, "logits")] + reads:
                if other is not None and _shares(out3, other, f"out and {name}"):
                    raise ValueError(f"out overlaps {name}; pass a separate array"
                                     + (" (or inplace=True)" if name == "logits" else ""))
    chunk_sums = _run(Mode.LOSS_GRAD if gradient else Mode.LOSS, z3, threads,
                      out3=out3, y3=y3, target2=target2, sample_weight2=sample_weight2,
                      row_value=row_value, weight=weight, ignore_index=kernel_ignore,
                      label_smoothing=label_smoothing, grad_scale=grad_scale)
    if staged is not None:
        grad[...] = staged
    loss = _reduce(chunk_sums, row_value, denominator, reduction, _native(logits.dtype), positions)
    return (loss, grad) if gradient else loss


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
                 sample_weight=sample_weight, grad_scale=1.0, gradient=False)


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
        sharing no element with what the call reads (logits, target,
        weights).  Nothing is allocated for it where the kernels can write
        its layout, else one staging array.
    inplace : bool, keyword-only
        Write the gradient over ``logits`` (which must be a writeable float32 or
        float64 ndarray): no memory for the gradient where the kernels can
        address the logits' layout, else one temporary copy.  Not with ``out``.

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
    inplace = _check_bool(inplace, "inplace")
    if inplace:
        if out is not None:
            raise ValueError("pass either out= or inplace=True, not both")
        if not isinstance(logits, np.ndarray):
            raise TypeError(
                f"inplace=True needs logits to be a numpy.ndarray, got {type(logits).__name__}"
            )
    logits = _as_float_array(logits, "logits")
    return _loss(logits, target, reduction=reduction, axis=axis, n_threads=n_threads,
                 weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                 sample_weight=sample_weight, grad_scale=grad_scale, gradient=True, out=out,
                 inplace=inplace)


def _normaliser(mode, x, axis, n_threads, out):
    """softmax / log_softmax: validate, run, return the output array."""
    x = _as_float_array(x, "x")
    axis = _check_axis(axis, x.ndim, "x", allow_none=True)
    threads = _resolve_n_threads(n_threads)
    if out is not None:
        _check_output(out, x, _native(x.dtype), "x")
    z3, z_copied = _input3(x, axis)
    out3, result, staged = _destination(out, z3, z_copied, x.shape, axis)
    if not _same_elements(out3, z3) and _shares(out3, z3, "out and x"):
        raise ValueError("out overlaps x without being x itself; pass a separate array, or x")
    _run(mode, z3, threads, out3=out3)
    if staged is not None:
        result[...] = staged
    return result


def softmax(x, *, axis=-1, n_threads=None, out=None):
    """Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``.

    Parameters
    ----------
    x : array_like of float32 or float64
    axis : int or None, keyword-only
        Axis to normalise over (default: the last); None: every element.
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
    axis : int or None, keyword-only
        Axis to reduce (default: the last); None: every element.
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
    axis = _check_axis(axis, x.ndim, "x", allow_none=True)
    keepdims = _check_bool(keepdims, "keepdims")
    threads = _resolve_n_threads(n_threads)
    z3, _ = _input3(x, axis)
    row_value = np.empty((z3.shape[0], z3.shape[2]), dtype=z3.dtype)
    _run(Mode.LOGSUMEXP, z3, threads, row_value=row_value)
    if axis is None:
        shape = (1,) * x.ndim if keepdims else ()
    else:
        shape = x.shape[:axis] + ((1,) if keepdims else ()) + x.shape[axis + 1:]
    return row_value.reshape(shape)[()]
