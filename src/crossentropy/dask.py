"""Dask arrays: the cross-entropy of logits chunked along the rows and along
the class axis, as a lazy graph of dask.array's own operations.

Each block of logits gives its rows' partials (:func:`crossentropy.
cross_entropy_partials`: four float64 numbers per row); ``dask.array.
reduction`` combines them across the class chunks in a tree
(:func:`crossentropy.combine_partials`), so that no task ever holds more
than one block of logits, or a row's classes from more than one block; the
loss is finished per row chunk and summed, and each gradient block is
computed from its logits block and its rows' totals
(:func:`crossentropy.cross_entropy_shard_grad`), with the logits' chunks.

Importing this module imports dask.array; ``import crossentropy`` does not.
"""

import string

import numpy as np

try:
    import dask.array as da
except ImportError as error:                    # pragma: no cover - dask is an extra
    raise ImportError("crossentropy.dask needs dask: pip install 'crossentropy[dask]'") \
        from error

from . import _shards
from ._api import _PARTS, _mean_scale, _reduce
from ._validate import (
    _check_axis, _check_index_target_shape, _check_loss_options, _check_nonnegative_weights,
    _check_probability_target, _check_reduction, _half_kind, _is_floating, _native,
)

__all__ = ["cross_entropy", "cross_entropy_and_grad"]

# What _finish_block gives per row: loss and log-sum-exp (float64), its
# share of the mean's denominator, and whether it counts (1) or is ignored.
_LOSS, _LSE, _WEIGHT, _ACTIVE = range(4)


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, sample_weight=None, z_loss=0.0, softcap=None,
                  return_lse=False, axis=-1, n_threads=None):
    """:func:`crossentropy.cross_entropy` of a dask array, lazily.

    ``logits`` may be chunked along any axis, the class axis included;
    ``target`` (class indices shaped as the positions, or probabilities
    shaped as the logits) and ``sample_weight`` may be dask or NumPy arrays,
    rechunked to the logits' chunks; ``weight`` is a NumPy array.  Each task
    runs the kernels with ``n_threads`` threads, None following its worker's
    settings (distributed's workers set ``OMP_NUM_THREADS=1``).  Other
    options as :func:`crossentropy.cross_entropy`.

    Returns
    -------
    loss : dask.array.Array
        0-d for ``reduction='mean'`` or ``'sum'``, the positions' shape for
        ``'none'``; in the logits' dtype.  ``(loss, lse)`` with
        ``return_lse``.  The NumPy result to float64 rounding (the sums are
        grouped by chunk).

    Target values and sample weights are checked in the tasks that read
    them: a bad one raises its IndexError or ValueError from ``compute()``,
    before any result is formed.
    """
    return _graph(logits, target, weight=weight, ignore_index=ignore_index,
                  reduction=reduction, label_smoothing=label_smoothing,
                  sample_weight=sample_weight, z_loss=z_loss, softcap=softcap,
                  return_lse=return_lse, axis=axis, n_threads=n_threads, grad_scale=None)


def cross_entropy_and_grad(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0, sample_weight=None, z_loss=0.0, softcap=None,
                           return_lse=False, grad_scale=1.0, axis=-1, n_threads=None):
    """:func:`crossentropy.cross_entropy_and_grad` of a dask array, lazily:
    ``(loss, grad)`` (and ``lse`` last), the gradient a dask array with the
    logits' shape, dtype and chunks.  Arguments as :func:`cross_entropy`."""
    return _graph(logits, target, weight=weight, ignore_index=ignore_index,
                  reduction=reduction, label_smoothing=label_smoothing,
                  sample_weight=sample_weight, z_loss=z_loss, softcap=softcap,
                  return_lse=return_lse, axis=axis, n_threads=n_threads, grad_scale=grad_scale)


# --- the graph ---------------------------------------------------------------------

def _graph(logits, target, *, weight, ignore_index, reduction, label_smoothing, sample_weight,
           z_loss, softcap, return_lse, axis, n_threads, grad_scale):
    """Check what can be checked without computing, then build the graph."""
    _check_reduction(reduction)
    z = da.asarray(logits)
    dtype = _native(z.dtype)
    if not _is_floating(dtype):
        raise TypeError(f"logits must be float16, bfloat16, float32 or float64, got {dtype}")
    if z.ndim == 0:
        raise ValueError("logits must have a class axis, got a 0-d array")
    compute = np.dtype(np.float32) if _half_kind(dtype) else dtype
    # (n_threads checked here and resolved in each task, by its worker's settings)
    (_, ignore_index, label_smoothing, grad_scale_, z_loss, _,
     return_lse) = _check_loss_options(n_threads, ignore_index, label_smoothing,
                                       1.0 if grad_scale is None else grad_scale, z_loss,
                                       softcap, return_lse, compute)
    axis = _check_axis(axis, z.ndim, "logits")
    shape = z.shape
    last = axis == z.ndim - 1
    z = z if last else da.moveaxis(z, axis, -1)
    n_classes = z.shape[-1]
    positions = z.shape[:-1]
    weight = None if weight is None else _check_nonnegative_weights(
        np.asarray(weight), "weight", (n_classes,), "one per class")

    t = da.asarray(target)
    if t.dtype.kind in "iu":
        probabilities = False
        _check_index_target_shape(t.shape, shape, axis)
        t = t.rechunk(z.chunks[:-1])
    elif _is_floating(t.dtype):
        probabilities = True
        _check_probability_target(t.shape, shape, ignore_index)
        t = (t if last else da.moveaxis(t, axis, -1)).rechunk(z.chunks)
    else:
        raise TypeError(f"target must hold integer class indices or floating class "
                        f"probabilities, got dtype {t.dtype}")
    sw = None
    if sample_weight is not None:
        sw = da.asarray(sample_weight)
        if sw.shape != positions:
            raise ValueError(f"sample_weight has shape {sw.shape}, expected {positions} "
                             f"(one per position: the target's shape)")
        sw = sw.rechunk(z.chunks[:-1])

    rows = "".join(c for c in string.ascii_lowercase if c not in "kqr")[:z.ndim - 1]
    t_index = rows + "k" if probabilities else rows
    sw_args = (sw, rows) if sw is not None else (None, None)
    # (each class chunk's first class, as a block of one: blockwise pairs it
    # with the chunk, the arrays' chunks left as they are)
    starts = da.from_array(np.cumsum((0,) + z.chunks[-1][:-1]).astype(np.intp), chunks=1)
    shard_options = dict(n_classes=n_classes, weight=weight, ignore_index=ignore_index,
                         label_smoothing=label_smoothing, softcap=softcap, n_threads=n_threads)

    # partials: (rows..., one per class chunk, 4), reduced over the class chunks
    parts = da.blockwise(_partials_block, rows + "kq", z, rows + "k", t, t_index, starts, "k",
                         new_axes={"q": _PARTS}, adjust_chunks={"k": 1}, dtype=np.float64,
                         align_arrays=False,
                         meta=np.empty((0,) * (z.ndim + 1), np.float64), **shard_options)
    totals = da.reduction(parts, _first_block, _combine_blocks, combine=_combine_blocks,
                          axis=z.ndim - 1, dtype=np.float64, concatenate=True,
                          meta=np.empty((0,) * z.ndim, np.float64))

    finished = da.blockwise(
        _finish_block, rows + "r", totals, rows + "q",
        *((None, None) if probabilities else (t, rows)), *sw_args,
        new_axes={"r": 4}, dtype=np.float64, meta=np.empty((0,) * z.ndim, np.float64),
        concatenate=True, n_classes=n_classes, weight=weight, ignore_index=ignore_index,
        z_loss=z_loss)
    rows_loss, rows_lse = finished[..., _LOSS], finished[..., _LSE]
    denominator = finished[..., _WEIGHT].sum()
    n_active = finished[..., _ACTIVE].sum()
    if reduction == "none":
        loss = rows_loss.map_blocks(_shards._in_dtype, dtype, dtype=dtype)
    else:
        loss = da.blockwise(_reduce_block, "", rows_loss.sum(), "", denominator, "",
                            dtype=dtype, meta=np.empty((), dtype), reduction=reduction,
                            result_dtype=dtype)
    results = (loss,)
    if grad_scale is not None:
        scale = da.blockwise(_scale_block, "", denominator, "", n_active, "", dtype=np.float64,
                             meta=np.empty((), np.float64), grad_scale=grad_scale_,
                             reduction=reduction)
        grad = da.blockwise(
            _grad_block, rows + "k", z, rows + "k", t, t_index, totals, rows + "q", starts, "k",
            *sw_args, scale, "", dtype=dtype, meta=np.empty((0,) * z.ndim, dtype),
            align_arrays=False,
            concatenate=True, z_loss=z_loss, **shard_options)
        results += (grad if last else da.moveaxis(grad, -1, axis),)
    if return_lse:
        results += (rows_lse.map_blocks(_shards._in_dtype, dtype, dtype=dtype),)
    return results if len(results) > 1 else loss


# --- the tasks -----------------------------------------------------------------------

def _partials_block(z, t, start, **options):
    """A block's partials, as one block of the class chunks' axis."""
    return _shards.cross_entropy_partials(z, t, class_start=int(start[0]), **options)[..., None, :]


def _first_block(x, axis, keepdims):
    """da.reduction's first step: each block is one class chunk's partials already."""
    return x if keepdims else np.squeeze(x, axis)


def _combine_blocks(x, axis, keepdims):
    (axis,) = axis
    totals = _shards.combine_partials(x, axis=axis)
    return np.expand_dims(totals, axis) if keepdims else totals


def _finish_block(totals, t, sample_weight, **options):
    loss, lse, weight, active, _, _ = _shards._finish_rows(totals, t, sample_weight=sample_weight,
                                                           **options)
    return np.stack([loss, lse, weight, active], axis=-1)


def _reduce_block(total, denominator, *, reduction, result_dtype):
    return np.asarray(_reduce(np.array([float(total)]), None, float(denominator), reduction,
                              result_dtype, ()))


def _scale_block(denominator, n_active, *, grad_scale, reduction):
    return np.asarray(_mean_scale(grad_scale, reduction, float(denominator), int(n_active)))


def _grad_block(z, t, totals, start, sample_weight, scale, **options):
    return _shards.cross_entropy_shard_grad(z, t, totals, class_start=int(start[0]),
                                            reduction="sum", sample_weight=sample_weight,
                                            grad_scale=float(scale), **options)
