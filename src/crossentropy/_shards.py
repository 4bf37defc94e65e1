"""Cross-entropy of rows whose classes are split into shards (across the
chunks of a dask array, or the ranks of a tensor-parallel vocabulary).

Per row, each shard of classes gives four float64 numbers, its partials:
its max ``m``, its sum of exps ``s = sum_j exp(z_j - m)``, its target mass
``a = sum_j c_j`` and ``d = sum_j c_j (m - z_j)``, with ``c_j`` the weight of
``-log p_j`` in the row's loss (class weight times the smoothed one-hot or
probability target).  Shifted to a common max ``M`` they add up, which makes
the combination exact and associative; the row's loss is then
``a log s + d`` (plus the z-loss, times the sample weight), the same sum the
kernels form for a whole row.  Each shard's gradient slice is the kernels'
whole-row gradient, taken with the combined ``M``, ``s`` and ``a``.

The kernels do the passes over the logits (modes PARTIALS and SHARD_GRAD);
this module combines the rows' numbers and finishes the loss.
"""

import math

import numpy as np

from ._api import _PARTS, _check_inplace, _loss, _reduce, _to_half
from ._validate import (
    _as_float_array, _asarray, _check_axis, _check_bool, _check_integer,
    _check_nonnegative_weights, _check_reduction, _check_z_loss, _half_kind, _native,
    _target_indices,
)

__all__ = [
    "combine_partials",
    "cross_entropy_from_partials",
    "cross_entropy_partials",
    "cross_entropy_shard_grad",
]


def _shard(logits, axis, class_start, n_classes):
    """(class_start, n_classes) checked against the shard's logits."""
    class_start = _check_integer(class_start, "class_start")
    n_classes = _check_integer(n_classes, "n_classes")
    width = logits.shape[_check_axis(axis, logits.ndim, "logits")]
    if not 0 <= class_start <= n_classes - width:
        raise ValueError(
            f"the shard's {width} classes from class_start={class_start} do not fit in "
            f"n_classes={n_classes}: need 0 <= class_start <= n_classes - {width}")
    return class_start, n_classes


def cross_entropy_partials(logits, target, *, class_start, n_classes, weight=None,
                           ignore_index=-100, label_smoothing=0.0, softcap=None, axis=-1,
                           n_threads=None):
    """What a shard of the classes adds to each position's cross-entropy:
    one fused pass over the shard's logits.

    Parameters
    ----------
    logits : array_like of float16, bfloat16, float32 or float64
        The classes ``[class_start, class_start + C)`` of every position,
        along ``axis``.
    target : array_like
        The whole rows' class indices (``[0, n_classes)`` or
        ``ignore_index``), shaped as the positions; or the shard's columns
        of class-probability targets, shaped as ``logits``.
    class_start, n_classes : int, keyword-only
        Where the shard starts, and the classes of a whole row.
    weight : array_like of shape (n_classes,), optional, keyword-only
        The whole rows' class weights.
    ignore_index, label_smoothing, softcap, axis, n_threads
        As :func:`crossentropy.cross_entropy`; smoothing spreads over all
        ``n_classes``.

    Returns
    -------
    ndarray of float64, shape ``positions + (4,)``
        Per position: the shard's max (of the capped logits), its sum of
        ``exp(z - max)``, its target mass ``sum_j c_j`` and
        ``sum_j c_j (max - z_j)``, ``c_j`` the weight of ``-log p_j`` in the
        loss.  An ignored position gets ``(-inf, 0, 0, 0)``, which adds
        nothing.  Combine shards with :func:`combine_partials`.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> z = np.array([[2.0, 0.5, -1.0, 0.0]])
    >>> parts = [ce.cross_entropy_partials(z[:, a:b], [3], class_start=a, n_classes=4)
    ...          for a, b in ((0, 1), (1, 4))]
    >>> totals = ce.combine_partials(parts)
    >>> bool(np.isclose(ce.cross_entropy_from_partials(totals, [3], n_classes=4),
    ...                 ce.cross_entropy(z, [3])))
    True
    """
    logits = _as_float_array(logits, "logits")
    shard = _shard(logits, axis, class_start, n_classes)
    return _loss(logits, target, reduction="sum", axis=axis, n_threads=n_threads,
                 weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                 sample_weight=None, grad_scale=1.0, z_loss=0.0, softcap=softcap,
                 return_lse=False, outputs="partials", shard=shard)


def combine_partials(parts, axis=0):
    """Combine partials of shards of the same rows, exactly (up to float64
    rounding) and associatively: the result is itself a partial of the union
    of the shards.

    Parameters
    ----------
    parts : array_like of float64, or a sequence of such arrays
        Partials (``positions + (4,)``) stacked along ``axis``; a sequence
        is stacked along a new first axis.
    axis : int
        The axis that runs over the shards, among the axes before the last
        (-1 is the one just before it).

    Returns
    -------
    ndarray of float64, ``parts``'s shape without ``axis``
    """
    p = _asarray(np.stack(parts) if isinstance(parts, (list, tuple)) else parts, "parts")
    if p.dtype != np.float64:
        raise TypeError(f"parts must be float64 (as the partials are), got {p.dtype}")
    if p.ndim < 2 or p.shape[-1] != _PARTS:
        raise ValueError(f"parts has shape {p.shape}: expected shards along an axis and "
                         f"{_PARTS} numbers last")
    p = np.moveaxis(p, _check_axis(axis, p.ndim - 1, "parts"), 0)
    top, s, mass, gap = (p[..., k] for k in range(_PARTS))
    with np.errstate(invalid="ignore", over="ignore"):
        m = top.max(axis=0) if p.shape[0] else np.full(p.shape[1:-1], -np.inf)
        # A shard whose max is -inf (all its exps 0) adds no exps, and its
        # terms c_j (M - z_j) are infinite where c_j is not 0.
        empty = top == -np.inf
        s = np.where(empty, 0.0, s * np.exp(top - m)).sum(axis=0)
        gap = np.where(empty, np.where(mass == 0.0, 0.0, mass * np.inf),
                       gap + mass * (m - top)).sum(axis=0)
    return np.stack([m, s, mass.sum(axis=0), gap], axis=-1)


def _weigh(w, x, log_s):
    """w * x, 0 where w is 0 unless the row is NaN (csrc/rows.h's ce_weigh)."""
    return np.where((w != 0.0) | np.isnan(log_s), w * x, 0.0)


def _finish_rows(totals, target, *, n_classes, weight, ignore_index, sample_weight, z_loss):
    """The positions' losses and log-sum-exps (float64) from their combined
    totals, each position's share of the mean's denominator (0 where
    ignored), whether it counts (False where ignored), and the mean's
    (n_active, denominator): the checks and the formulas of
    cross_entropy_from_partials."""
    totals = _asarray(totals, "totals")
    if totals.dtype != np.float64:
        raise TypeError(f"totals must be float64 (as the partials are), got {totals.dtype}")
    if totals.ndim < 1 or totals.shape[-1] != _PARTS:
        raise ValueError(f"totals has shape {totals.shape}, expected the positions' shape "
                         f"and {_PARTS} numbers last")
    positions = totals.shape[:-1]
    n_classes = _check_integer(n_classes, "n_classes")
    z_loss = _check_z_loss(z_loss)
    weight = None if weight is None else _check_nonnegative_weights(
        _asarray(weight, "weight"), "weight", (n_classes,), "one per class")
    sw = None if sample_weight is None else _check_nonnegative_weights(
        _asarray(sample_weight, "sample_weight"), "sample_weight", positions,
        "one per position: the totals' positions").reshape(-1)
    wt = None
    active = np.ones(math.prod(positions), bool)
    row_weight = np.ones(active.shape) if sw is None else sw
    if target is None:                  # (probability targets: their terms are in the totals)
        n_active = math.prod(positions)
        denominator = float(n_active if sw is None else np.sum(sw))
    else:
        t = _asarray(target, "target")
        if t.dtype.kind not in "iu":
            raise TypeError(f"target must hold integer class indices (or be None for "
                            f"probability targets), got dtype {t.dtype}")
        if t.shape != positions:
            raise ValueError(f"target has shape {t.shape}, expected {positions}: the totals' "
                             f"positions")
        ignore_index = _check_integer(ignore_index, "ignore_index")
        t2, kernel_ignore, n_active, denominator = _target_indices(
            t, positions + (n_classes,), len(positions), ignore_index, weight,
            None if sw is None else sw.reshape((-1, 1)))
        t2 = t2.reshape(-1)
        active = t2 != kernel_ignore
        wt = np.ones(t2.shape) if weight is None else weight[np.where(active, t2, 0)]
        row_weight = np.where(active, wt, 0.0) * row_weight
    m, s, mass, gap = (totals.reshape((-1, _PARTS))[:, k] for k in range(_PARTS))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # (all the exps 0: a row of -inf, whose loss is NaN as a whole row's)
        log_s = np.where(m == -np.inf, np.nan, np.log(s))
        lse = np.where(np.isfinite(m), m + log_s, np.nan)
        loss = mass * log_s + gap
        if z_loss != 0.0:
            term = z_loss * lse * lse
            loss = loss + (term if wt is None else _weigh(wt, term, log_s))
        if sw is not None:
            loss = _weigh(sw, loss, log_s)
    loss = np.where(active, loss, 0.0)
    lse = np.where(active, lse, 0.0)
    return (loss.reshape(positions), lse.reshape(positions), row_weight.reshape(positions),
            active.reshape(positions), n_active, denominator)


def _in_dtype(a, dtype):
    """float64 results in the logits' dtype, rounded once (inf beyond its range)."""
    half = _half_kind(dtype)
    if half:
        return _to_half(a.astype(np.float32), dtype, half == "bfloat16")
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def cross_entropy_from_partials(totals, target, *, n_classes, weight=None, ignore_index=-100,
                                reduction="mean", sample_weight=None, z_loss=0.0,
                                return_lse=False, dtype=np.float64):
    """The cross-entropy of rows from their combined partials.

    Parameters
    ----------
    totals : ndarray of float64, shape ``positions + (4,)``
        :func:`combine_partials` over all the shards of the rows.
    target : array_like of int, or None
        The class indices given to :func:`cross_entropy_partials`; None for
        probability targets (their terms are in the totals).
    n_classes : int, keyword-only
        The classes of a whole row.
    weight, ignore_index, reduction, sample_weight, z_loss, return_lse
        As :func:`crossentropy.cross_entropy` (label smoothing and softcap
        are in the partials already).
    dtype : dtype, keyword-only
        The logits' dtype, that of the results (float64 by default).

    Returns
    -------
    loss, or ``(loss, lse)`` with ``return_lse``
        As :func:`crossentropy.cross_entropy` over the whole rows, up to
        float64 rounding (the sums are grouped by shard).
    """
    _check_reduction(reduction)
    return_lse = _check_bool(return_lse, "return_lse")
    dtype = _native(np.dtype(dtype))
    if dtype.kind != "f" and not _half_kind(dtype):
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    loss, lse, _, _, n_active, denominator = _finish_rows(
        totals, target, n_classes=n_classes, weight=weight, ignore_index=ignore_index,
        sample_weight=sample_weight, z_loss=z_loss)
    value = _reduce(np.array([loss.sum()]), _in_dtype(loss, dtype), denominator, reduction,
                    dtype, loss.shape)
    return (value, _in_dtype(lse, dtype)[()]) if return_lse else value


def cross_entropy_shard_grad(logits, target, totals, *, class_start, n_classes, weight=None,
                             ignore_index=-100, reduction="mean", label_smoothing=0.0,
                             sample_weight=None, z_loss=0.0, softcap=None, grad_scale=1.0,
                             axis=-1, n_threads=None, out=None, inplace=False):
    """A shard's slice of the cross-entropy's gradient with respect to its
    logits, from the rows' combined totals: one fused pass.

    Arguments as :func:`cross_entropy_partials`, with the loss's own
    (``reduction``, ``sample_weight``, ``z_loss``, ``grad_scale``, ``out``,
    ``inplace``) as :func:`crossentropy.cross_entropy_and_grad`.  For
    ``reduction='mean'`` the denominator is that of the positions given: when
    the loss runs over more positions than these (rows split too), pass
    ``reduction='sum'`` and the mean's ``1 / denominator`` in ``grad_scale``.

    Returns
    -------
    ndarray
        The slice ``[class_start, class_start + C)`` of the gradient that
        :func:`crossentropy.cross_entropy_and_grad` gives for the whole rows,
        in the logits' shape and dtype (``out``, the logits with
        ``inplace=True``, or a new array).
    """
    inplace = _check_inplace(logits, out, inplace)
    logits = _as_float_array(logits, "logits")
    shard = _shard(logits, axis, class_start, n_classes)
    return _loss(logits, target, reduction=reduction, axis=axis, n_threads=n_threads,
                 weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                 sample_weight=sample_weight, grad_scale=grad_scale, z_loss=z_loss,
                 softcap=softcap, return_lse=False, outputs="shard_grad", out=out,
                 inplace=inplace, shard=shard, totals=totals)
