"""Argument checks: every argument validated and converted, and the arrays the
kernel reads and writes laid out, before anything is written.

The public functions (``_api.py``) call these first; what they hand the
kernels (``_kernels.pyx``) is then trusted: targets in range or ignored,
shapes and dtypes right, outputs that share no element with the inputs.
"""

import math
import numbers
import os
import sys

import numpy as np
from numpy.lib.array_utils import normalize_axis_index, normalize_axis_tuple

from . import _kernels

_REDUCTIONS = ("mean", "sum", "none")
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# An explicit n_threads above this multiple of the CPU count is capped: beyond
# it threads only add overhead, and a huge count could exhaust the system.
_MAX_OVERSUBSCRIPTION = 4
_INTP_MIN = int(np.iinfo(np.intp).min)
_INTP_MAX = int(np.iinfo(np.intp).max)
# Effort np.shares_memory may spend deciding an overlap exactly (strides that
# interleave, as as_strided makes, are the only case that needs any).
_OVERLAP_WORK = 100_000


# --- options and threads ------------------------------------------------------

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
    """`x` as an ndarray of float16, bfloat16, float32 or float64 (either
    byte order), or a TypeError naming `name`."""
    a = _asarray(x, name)
    if _native(a.dtype) not in _FLOAT_DTYPES and not _half_kind(a.dtype):
        raise TypeError(
            f"{name} must be a float16, bfloat16, float32 or float64 array, got dtype {a.dtype}"
            + (f"; convert it with {name}.astype(np.float32)" if a.dtype.kind in "biuf" else "")
        )
    return a


def _half_kind(dtype):
    """'float16' or 'bfloat16' (ml_dtypes' dtype, known by its name), else None."""
    if dtype.itemsize == 2 and (dtype.kind == "f" or dtype.name == "bfloat16"):
        return "bfloat16" if dtype.name == "bfloat16" else "float16"
    return None


def _is_floating(dtype):
    return dtype.kind == "f" or _half_kind(dtype) is not None


def _native(dtype):
    """`dtype` in the machine's byte order."""
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def _check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")


def _check_axis(axis, ndim, name):
    """`axis` as an index into `ndim` axes."""
    axis = _check_integer(axis, "axis")
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis), got a 0-d array")
    return normalize_axis_index(axis, ndim, msg_prefix=f"axis for {name}")


def _check_axes(axis, ndim, name):
    """`axis` of a reduction (an integer, a tuple of them, or None: every
    axis) as a sorted tuple of distinct axes of `ndim`."""
    if axis is None:
        return tuple(range(ndim))
    what = "an integer, a tuple of integers or None"
    items = axis if isinstance(axis, tuple) else (axis,)
    items = tuple(_check_integer(a, "axis", what) for a in items)
    return tuple(sorted(normalize_axis_tuple(items, ndim, argname=f"axis for {name}")))


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def _check_output(out, like, dtype, like_name, name="out"):
    """A caller's `out` (called `name`) for an array shaped like `like`, of
    float dtype `dtype` (either byte order)."""
    if not isinstance(out, np.ndarray) or _is_masked(out):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}"
                        + (f"; pass {name}.data, its unmasked array" if _is_masked(out) else ""))
    if _native(out.dtype) != dtype:
        raise TypeError(f"{name} must have dtype {dtype} (as {like_name}), got {out.dtype}")
    if out.shape != like.shape:
        raise ValueError(f"{name} must have shape {like.shape} (as {like_name}), got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    _check_distinct_elements(out, name)


def _vector(v, shape, dtype):
    """The vectors a Hessian multiplies: real numbers of the logits' `shape`,
    as `dtype` (float32 for half-precision logits, converted a block at a
    time by the kernels' caller: kept in their own float dtype then)."""
    v = _asarray(v, "v")
    if not (_is_floating(v.dtype) or v.dtype.kind in "iu"):
        raise TypeError(f"v must hold real numbers (integer or floating), got dtype {v.dtype}")
    if v.shape != shape:
        raise ValueError(f"v must have the logits' shape {shape}, got {v.shape}")
    if _half_kind(v.dtype) and dtype == np.float32:
        return v
    return v.astype(dtype, copy=False)


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
    element is one row's; a slice: those adjacent axes are the classes')."""
    if axis is None:
        return 1, math.prod(shape), 1
    if isinstance(axis, slice):
        return math.prod(shape[:axis.start]), math.prod(shape[axis]), math.prod(shape[axis.stop:])
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


def _check_loss_options(n_threads, ignore_index, label_smoothing, grad_scale, z_loss, softcap,
                        return_lse, dtype):
    """The options every loss function takes, checked in this order and
    converted: (threads, ignore_index, label_smoothing, grad_scale, z_loss,
    softcap, return_lse)."""
    return (_resolve_n_threads(n_threads), _check_integer(ignore_index, "ignore_index"),
            _check_label_smoothing(label_smoothing), _check_real(grad_scale, "grad_scale"),
            _check_z_loss(z_loss), _check_softcap(softcap, dtype),
            _check_bool(return_lse, "return_lse"))


def _check_z_loss(z_loss):
    value = _check_real(z_loss, "z_loss")
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"z_loss must be finite and >= 0, got {value}")
    return value


def _check_softcap(softcap, dtype):
    """None as 0.0 (no capping, as the kernels take it), else a finite c > 0,
    at least the least normal number of the logits' dtype (below it the capped
    logits would round to 0)."""
    if softcap is None:
        return 0.0
    value = _check_real(softcap, "softcap")
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"softcap must be None or a finite number > 0, got {value}")
    tiny = float(np.finfo(dtype).tiny)
    if value < tiny:
        raise ValueError(f"softcap must be at least {tiny} (the least normal {dtype}), "
                         f"got {value}")
    return value


def _check_nonnegative_weights(w, name, expected_shape, what):
    """`w` as a float64 array of `expected_shape` with finite entries >= 0."""
    a = np.asarray(w)
    if a.dtype.kind not in "iu" and not _is_floating(a.dtype):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    if a.shape != expected_shape:
        raise ValueError(f"{name} must have shape {expected_shape} ({what}), got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        where = _position(int(np.argmax(bad)), a.shape)
        raise ValueError(f"{name} must be finite and non-negative, but {name}[{where}] = {a[where]}")
    return a


def _check_index_target_shape(shape, logits_shape, axis):
    """The positions' shape, which class-index targets must have."""
    expected = logits_shape[:axis] + logits_shape[axis + 1:]
    if shape != expected:
        raise ValueError(
            f"target has shape {shape}, expected {expected}: "
            f"the logits' shape {logits_shape} without the class axis {axis}"
        )
    return expected


def _check_probability_target(shape, logits_shape, ignore_index):
    """Class-probability targets: the logits' shape, and no ignore_index."""
    if shape != logits_shape:
        raise ValueError(
            f"target holds floating values, so it is read as class probabilities and must "
            f"have the logits' shape {logits_shape}, got {shape}; class indices need an "
            f"integer dtype"
        )
    if ignore_index >= 0:
        raise ValueError(
            f"ignore_index ({ignore_index}) is not supported with class-probability "
            f"(floating) targets"
        )


def _target_indices(t, logits_shape, axis, ignore_index, weight, sample_weight2):
    """Check integer class targets in one pass.

    Returns the (outer, inner) intp view the kernel reads, the ignore_index it
    should use, the number of positions not ignored, and the mean's denominator.
    """
    expected = _check_index_target_shape(t.shape, logits_shape, axis)
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


def _target_probabilities(y, logits, axis, ignore_index, dtype):
    """Check class-probability targets and return them as (outer, C, inner):
    in `dtype`, native and kernel-ready, or with None as they are (read, and
    converted, a block at a time)."""
    _check_probability_target(y.shape, logits.shape, ignore_index)
    if dtype is None:
        return y.reshape(_split_shape(y.shape, axis))
    return _input3(y.astype(dtype, copy=False), axis)[0]
