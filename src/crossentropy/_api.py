"""Public functions: validate (``_validate.py``), normalise, dispatch to one
kernel, shape the result.

Every check happens before any output (or, with ``inplace=True``, the logits)
is written.  The kernels in ``_kernels.pyx`` trust what they are given.
"""

import math

import numpy as np

from . import _kernels
from ._kernels import Mode
from ._validate import (
    _as_float_array, _asarray, _check_axes, _check_axis, _check_bool, _check_distinct_elements,
    _check_loss_options, _check_nonnegative_weights, _check_output, _check_reduction,
    _destination, _half_kind, _input3, _is_floating, _kernel_ready, _native, _resolve_n_threads,
    _same_elements, _shares, _split_shape, _target_indices, _target_probabilities, _vector,
)

__all__ = [
    "cross_entropy",
    "cross_entropy_and_grad",
    "cross_entropy_grad_hess",
    "cross_entropy_hvp",
    "log_softmax",
    "logsumexp",
    "softmax",
]

# Rows are handed to threads in chunks of about this many elements: enough work
# per chunk to amortise scheduling, small enough to balance.  The chunking
# depends only on the shape, so results do not depend on the thread count.
_CHUNK_ELEMENTS = 1 << 15
# float32(x) is inf from here on (FLT_MAX plus half an ulp rounds up).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103
# Half-precision logits are computed in float32 a block of rows at a time,
# through a buffer of about this many elements (4 MiB; one row, if longer).
_HALF_BLOCK_ELEMENTS = 1 << 20


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
         grad_scale=1.0, lse=None, z_loss=0.0, softcap=0.0, inf_row_lse=False, hess3=None,
         v3=None, part=None, shard=(0, None)):
    """Call the kernel once; returns the per-chunk loss sums.  `shard` is
    (offset, n_all) in the shard modes, whose rows have n_all classes."""
    n_rows = z3.shape[0] * z3.shape[2]
    m = z3.shape[1]
    offset, n_all = shard
    n_all = m if n_all is None else n_all
    rows_per_chunk, n_chunks, threads = _chunking(n_rows, m, threads)
    chunk_sums = np.zeros(n_chunks, dtype=np.float64)
    weight_total = float(np.sum(weight)) if weight is not None else float(n_all)
    _kernels.run(mode=int(mode), z=z3, out=out3, y=y3, target=target2,
                 sample_weight=sample_weight2, row_value=row_value, weight=weight,
                 weight_total=weight_total, ignore_index=ignore_index,
                 label_smoothing=label_smoothing, grad_scale=grad_scale,
                 chunk_sums=chunk_sums, rows_per_chunk=rows_per_chunk, n_threads=threads,
                 lse=lse, z_loss=z_loss, softcap=softcap, inf_row_lse=inf_row_lse,
                 hess=hess3, vec=v3, part=part, offset=offset, n_all=n_all)
    return chunk_sums


def _half_blocks(outer, m, inner):
    """How half-precision logits of shape (outer, m, inner) are computed a
    block of rows at a time: (by_outer, blocks).  Every block is a whole
    number of the kernel's chunks of rows (so the chunks, and every bit,
    are those of one call over float32 logits) of about
    _HALF_BLOCK_ELEMENTS elements.  by_outer: the blocks are ranges
    [o0, o1) of outer indices, computed in their own (k, m, inner) layout;
    else ranges [r0, r1) of the rows r = o * inner + i, gathered as (k, m)
    (when whole outer indices would make blocks too large)."""
    rows_per_chunk = _chunking(outer * inner, m, 1)[0]
    per_outer = rows_per_chunk // math.gcd(rows_per_chunk, inner)
    by_outer = inner > 1 and 0 < per_outer * m * inner <= _HALF_BLOCK_ELEMENTS
    if by_outer:
        step = max(per_outer, _HALF_BLOCK_ELEMENTS // (m * inner) // per_outer * per_outer)
        n = outer
    else:
        step = max(rows_per_chunk,
                   _HALF_BLOCK_ELEMENTS // max(1, m) // rows_per_chunk * rows_per_chunk)
        n = outer * inner
    return by_outer, [(a, min(a + step, n)) for a in range(0, n, step)]


def _half_pieces(r0, r1, inner):
    """The rows [r0, r1) as (o, i0, i1, a): rows (o, i0..i1) of the logits
    are rows a.. of the block."""
    for o in range(r0 // inner, (r1 - 1) // inner + 1):
        i0, i1 = max(r0 - o * inner, 0), min(r1 - o * inner, inner)
        yield o, i0, i1, o * inner + i0 - r0


def _run_half(mode, zbits3, threads, bfloat16, *, outbits3, hessbits3, y3, v3, target2,
              sample_weight2, row_value, lse, part=None, **options):
    """_run over half-precision logits (their bits, uint16): each block of
    rows read into one float32 buffer, computed there (the gradient in
    place), the gradient (and the Hessian's diagonal, from a buffer of its
    own) written back rounded to nearest; probability targets y3 and the
    vectors v3 are cast into float32 buffers block by block.  Returns the
    chunk sums."""
    outer, m, inner = zbits3.shape
    by_outer, blocks = _half_blocks(outer, m, inner)
    size = max(((e - a) * m * (inner if by_outer else 1) for a, e in blocks), default=0)
    z_buffer = np.empty(size, np.float32)
    # (the float32 buffers beside the logits': probability targets, the
    # vectors a Hessian multiplies, its diagonal)
    extra = {name: np.empty(size, np.float32)
             for name, a in (("y", y3), ("v", v3), ("hess", hessbits3)) if a is not None}
    if not by_outer:          # (per-position arrays by row: small, copied if need be)
        target2, sample_weight2, row_value, lse = (
            None if a is None else a.reshape((-1, 1)) for a in (target2, sample_weight2,
                                                                 row_value, lse))
        part = None if part is None else part.reshape((-1, 1, part.shape[-1]))
    sums = []
    for a, e in blocks:
        k = e - a
        if by_outer or inner == 1:
            z = z_buffer[:k * m * inner].reshape((k, m, inner))
            block = {name: b[:z.size].reshape(z.shape) for name, b in extra.items()}
            pieces = [((slice(a, e),), z, block)]
        else:
            z = z_buffer[:k * m].reshape((k, m, 1))
            flat = z.reshape((k, m))
            flats = {name: b[:k * m].reshape((k, m)) for name, b in extra.items()}
            block = {name: f.reshape((k, m, 1)) for name, f in flats.items()}
            pieces = [((slice(o, o + 1), slice(None), slice(i0, i1)),
                       flat[b:b + i1 - i0].T[None],
                       {name: f[b:b + i1 - i0].T[None] for name, f in flats.items()})
                      for o, i0, i1, b in _half_pieces(a, e, inner)]
        for where, values, others in pieces:
            _kernels.widen(zbits3[where], values, bfloat16, threads)
            for name, source in (("y", y3), ("v", v3)):
                if source is not None:
                    with np.errstate(over="ignore"):         # (as float32 inputs would)
                        others[name][...] = source[where]
        sums.append(_run(mode, z, threads, out3=None if outbits3 is None else z,
                         y3=block.get("y"), v3=block.get("v"), hess3=block.get("hess"),
                         **{name: None if v is None else v[a:e] for name, v in (
                             ("target2", target2), ("sample_weight2", sample_weight2),
                             ("row_value", row_value), ("lse", lse), ("part", part))},
                         **options))
        for where, values, others in pieces:
            if outbits3 is not None:
                _kernels.narrow(values, outbits3[where], bfloat16, threads)
            if hessbits3 is not None:
                _kernels.narrow(others["hess"], hessbits3[where], bfloat16, threads)
    return np.concatenate(sums) if sums else np.zeros(0)


def _run_any(mode, z3, threads, half, *, out3=None, hess3=None, y3=None, v3=None,
             target2=None, sample_weight2=None, row_value=None, lse=None, part=None,
             **options):
    """_run, or for half-precision logits (`half` their kind, else None)
    _run_half over their bits; returns the chunk sums."""
    if not half:
        return _run(mode, z3, threads, out3=out3, hess3=hess3, y3=y3, v3=v3, target2=target2,
                    sample_weight2=sample_weight2, row_value=row_value, lse=lse, part=part,
                    **options)
    return _run_half(mode, z3.view(np.uint16), threads, half == "bfloat16",
                     outbits3=None if out3 is None else out3.view(np.uint16),
                     hessbits3=None if hess3 is None else hess3.view(np.uint16), y3=y3, v3=v3,
                     target2=target2, sample_weight2=sample_weight2, row_value=row_value,
                     lse=lse, part=part, **options)


def _to_half(a, dtype, bfloat16):
    """A float32 array of per-position results in the half dtype `dtype`."""
    bits = np.empty(a.shape, np.uint16)
    _kernels.narrow(a.reshape((1, -1, 1)), bits.reshape((1, -1, 1)), bfloat16)
    return bits.view(dtype)


def _mean_scale(grad_scale, reduction, denominator, n_active):
    """What multiplies the gradient: grad_scale, over the mean's denominator
    for reduction='mean'."""
    if reduction != "mean":
        return grad_scale
    if denominator:
        return grad_scale / denominator
    # No position counts: PyTorch gives a zero gradient when every position
    # is ignored, and NaN when the weights of the rest are 0.
    return 0.0 if n_active == 0 else math.nan


def _partials_array(a, positions, name):
    """Partials or totals of these positions as the kernels read them:
    float64, the positions' shape + (_PARTS,), native and aligned."""
    a = _asarray(a, name)
    if a.dtype != np.float64:
        raise TypeError(f"{name} must be float64 (as the partials are), got {a.dtype}")
    if a.shape != positions + (_PARTS,):
        raise ValueError(f"{name} has shape {a.shape}, expected {positions + (_PARTS,)}: "
                         f"the positions' shape and {_PARTS} numbers for each")
    # (the kernels take one writeable view for partials and totals alike)
    return _kernel_ready(a) if a.flags.writeable else np.array(a)


def _check_inplace(logits, out, inplace):
    """inplace as a bool, checked against out and the logits given."""
    inplace = _check_bool(inplace, "inplace")
    if inplace:
        if out is not None:
            raise ValueError("pass either out= or inplace=True, not both")
        if not isinstance(logits, np.ndarray):
            raise TypeError(
                f"inplace=True needs logits to be a numpy.ndarray, got {type(logits).__name__}"
            )
    return inplace


def _results(loss, arrays, lse, positions):
    """What a loss function returns: the loss alone, or with the arrays that
    go with it, and the log-sum-exps (shaped as the positions) last."""
    result = (loss, *arrays)
    if lse is not None:
        result += (lse.reshape(positions)[()],)
    return result if len(result) > 1 else loss


def _reduce(chunk_sums, row_value, denominator, reduction, dtype, shape):
    if reduction == "none":
        return row_value.reshape(shape)[()]
    total = float(chunk_sums.sum())
    if reduction == "mean":
        total = total / denominator if denominator else math.nan
    if dtype == np.float32 and abs(total) >= _FLOAT32_OVERFLOW:
        total = math.copysign(math.inf, total)      # (without NumPy's overflow warning)
    with np.errstate(over="ignore"):                # (float16 and bfloat16 overflow to inf)
        return dtype.type(total)


_MODES = {"loss": Mode.LOSS, "grad": Mode.LOSS_GRAD, "hess": Mode.LOSS_GRAD_HESS,
          "hvp": Mode.HVP, "partials": Mode.PARTIALS, "shard_grad": Mode.SHARD_GRAD}
# What a row's partials hold: its max, float64 sum of exps, target mass
# sum_j c_j and sum_j c_j (max - z_j) (_shards.py combines them).
_PARTS = 4


def _loss(logits, target, *, reduction, axis, n_threads, weight, ignore_index,
          label_smoothing, sample_weight, grad_scale, z_loss, softcap, return_lse,
          outputs, out=None, inplace=False, hess_out=None, v=None, shard=None, totals=None):
    """Shared body of the loss functions: validate every argument, then run
    the kernel once (half precision: once per block).

    `outputs` is "loss" for the loss alone; "grad" for the gradient too, into
    `out`, a new array, or (`inplace`) the logits; "hess" for the gradient
    and the Hessian's diagonal (into `hess_out` or a new array); "hvp" for
    the Hessian times `v` alone, into `out` or a new array.  Returns the
    loss, with the arrays after it, and with `return_lse` the log-sum-exps
    last; for "hvp", the product alone.

    With `shard` = (class_start, n_classes), the logits are classes
    [class_start, class_start + C) of rows of n_classes (class-index targets
    and `weight` are the whole rows'): "partials" returns the rows' partials
    (the positions' shape + (_PARTS,), float64), "shard_grad" the shard's
    gradient from the rows' combined `totals` (the same shape).
    """
    _check_reduction(reduction)
    out_name = "out[0]" if outputs == "hess" else "out"
    axis = _check_axis(axis, logits.ndim, "logits")
    dtype = _native(logits.dtype)
    half = _half_kind(dtype)                # (computed in float32, a block of rows at a time)
    compute = np.dtype(np.float32) if half else dtype
    threads, ignore_index, label_smoothing, grad_scale, z_loss, softcap, return_lse = (
        _check_loss_options(n_threads, ignore_index, label_smoothing, grad_scale, z_loss,
                            softcap, return_lse, compute))
    n_classes = logits.shape[axis] if shard is None else shard[1]
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
        _check_output(out, logits, dtype, "the logits", out_name)
    if hess_out is not None:
        _check_output(hess_out, logits, dtype, "the logits", "out[1]")
    if outputs == "hvp":
        v = _vector(v, logits.shape, compute)

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
            t, logits.shape[:axis] + (n_classes,) + logits.shape[axis + 1:], axis, ignore_index,
            weight, sample_weight2)
    elif _is_floating(t.dtype):
        y3 = _target_probabilities(t, logits, axis, ignore_index, None if half else dtype)
        kernel_ignore = -1
        n_active = math.prod(positions)
        denominator = float(n_active if sample_weight is None else np.sum(sample_weight))
    else:
        raise TypeError(
            f"target must hold integer class indices or floating class probabilities, "
            f"got dtype {t.dtype}"
        )

    grad_scale = _mean_scale(grad_scale, reduction, denominator, n_active)
    row_value = np.empty((outer, inner), compute) if reduction == "none" else None
    lse = np.empty((outer, inner), compute) if return_lse else None

    part = totals3 = None
    if outputs == "partials":
        part = np.empty((outer, inner, _PARTS), np.float64)
    elif outputs == "shard_grad":
        totals3 = _partials_array(totals, positions, "totals").reshape((outer, inner, _PARTS))
    z3, z_copied = _input3(logits, axis)
    v3 = None if v is None else _input3(v, axis)[0]
    out3 = grad = staged = hess3 = hess = hess_staged = None
    if outputs not in ("loss", "partials"):
        out3, grad, staged = _destination(logits if inplace else out, z3, z_copied,
                                          logits.shape, axis)
        # What the kernel writes must share no element with what it reads:
        # checked on the arrays it reads, once every input is converted.
        reads = [(target2, "target"), (y3, "target"), (weight, "weight"),
                 (sample_weight2, "sample_weight"), (v3, "v"), (totals3, "totals")]
        if outputs == "hess":
            hess3, hess, hess_staged = _destination(hess_out, z3, False, logits.shape, axis)
            for other, name in [(logits, "logits"), (z3, "logits"), (grad, "the gradient"),
                                (out3, "the gradient")] + reads:
                if other is not None and _shares(hess3, other, f"out[1] and {name}"):
                    raise ValueError(f"out[1], the Hessian's diagonal, overlaps {name}; "
                                     f"pass a separate array")
        if inplace:
            for other, name in reads:
                if other is not None and _shares(out3, other, f"logits and {name}"):
                    raise ValueError(f"inplace=True would overwrite {name}, which shares "
                                     f"memory with logits")
        else:
            # (out3 is z3 where the kernel works in place on its own copy)
            for other, name in [(None if out3 is z3 else z3, "logits")] + reads:
                if other is not None and _shares(out3, other, f"{out_name} and {name}"):
                    raise ValueError(f"{out_name} overlaps {name}; pass a separate array"
                                     + (" (or inplace=True)" if name == "logits" else ""))
    options = dict(y3=y3, target2=target2, sample_weight2=sample_weight2, row_value=row_value,
                   lse=lse, weight=weight, ignore_index=kernel_ignore,
                   label_smoothing=label_smoothing, grad_scale=grad_scale, z_loss=z_loss,
                   softcap=softcap)
    if shard is not None:
        options["shard"] = shard
    chunk_sums = _run_any(_MODES[outputs], z3, threads, half, out3=out3, hess3=hess3, v3=v3,
                          part=part if totals3 is None else totals3, **options)
    if half:
        row_value, lse = (None if a is None else _to_half(a, dtype, half == "bfloat16")
                          for a in (row_value, lse))
    for staging, result in ((staged, grad), (hess_staged, hess)):
        if staging is not None:
            result[...] = staging
    if outputs in ("hvp", "shard_grad"):
        return grad
    if outputs == "partials":
        return part.reshape(positions + (_PARTS,))
    loss = _reduce(chunk_sums, row_value, denominator, reduction, dtype, positions)
    arrays = {"loss": (), "grad": (grad,), "hess": (grad, hess)}[outputs]
    return _results(loss, arrays, lse, positions)


# --- public functions --------------------------------------------------------------

def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, sample_weight=None, z_loss=0.0, softcap=None,
                  return_lse=False, axis=-1, n_threads=None):
    """Softmax cross-entropy between logits and class targets.

    Per position, ``loss = -sum_j c_j log softmax(logits)_j`` along the class
    axis, with ``c`` the one-hot target (or the given class probabilities),
    smoothed and weighted as in ``torch.nn.functional.cross_entropy``.  Computed
    stably (the row maximum is subtracted first) in one pass over the logits,
    with the GIL released.

    Parameters
    ----------
    logits : array_like of float16, bfloat16, float32 or float64, shape (..., C, ...)
        Unnormalised scores; the class axis is ``axis``.  Half precision
        (float16, or ``ml_dtypes.bfloat16``) is read and written in its own
        dtype and computed in float32, a block of rows (4 MiB) at a time:
        the gradient is the float32 path's on the same values, rounded once.
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
    z_loss : float >= 0, keyword-only
        Adds ``z_loss * lse**2`` to each position's loss (PaLM's auxiliary
        loss; ``lse`` the log-sum-exp of its logits), weighted as the rest of
        the position's loss (``weight[target] * sample_weight``; for
        probability targets ``sample_weight`` alone) and in the same mean.
    softcap : float > 0 or None, keyword-only
        Caps the logits as ``softcap * tanh(logits / softcap)`` before the
        softmax (Gemma 2); the logits are not changed.
    return_lse : bool, keyword-only
        Also return each position's log-sum-exp (of the capped logits), in the
        logits' dtype, shaped as the positions: 0 for ignored positions (whose
        logits are not read), NaN where the row's largest (capped) logit is
        NaN or infinite (without softcap: a NaN or +inf logit, or all -inf),
        where the loss is NaN too.
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
        In the logits' dtype; sums are accumulated in float64 (and rounded
        once to a half-precision dtype).
    lse : numpy scalar or ndarray
        With ``return_lse=True`` only: ``(loss, lse)`` is returned.

    Raises
    ------
    TypeError
        Logits not float16, bfloat16, float32 or float64, targets neither
        integer nor floating, or an option of the wrong type.
    ValueError
        Shapes that do not match, an unknown reduction, an axis out of range,
        label_smoothing outside [0, 1], negative or non-finite weights,
        ignore_index with probability targets, z_loss negative or not finite,
        softcap not a finite number > 0.
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
                 sample_weight=sample_weight, grad_scale=1.0, z_loss=z_loss, softcap=softcap,
                 return_lse=return_lse, outputs="loss")


def cross_entropy_and_grad(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0, sample_weight=None, z_loss=0.0, softcap=None,
                           return_lse=False, grad_scale=1.0, axis=-1, n_threads=None,
                           out=None, inplace=False):
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
        Write the gradient over ``logits`` (which must be a writeable
        ndarray): no memory for the gradient where the kernels can
        address the logits' layout, else one temporary copy.  Not with ``out``.

    Returns
    -------
    loss : numpy scalar, or ndarray for ``reduction='none'``
        As :func:`cross_entropy`.
    grad : ndarray
        The logits' shape and dtype: ``out``, ``logits`` (in place) or a new
        array.  For ``reduction='none'`` it is the gradient of the sum of the
        losses.  Ignored positions get a zero gradient.  With z-loss and
        softcapping it is the gradient of the whole loss with respect to the
        logits as given (through the cap).
    lse : numpy scalar or ndarray
        With ``return_lse=True`` only: ``(loss, grad, lse)`` is returned.

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
    inplace = _check_inplace(logits, out, inplace)
    logits = _as_float_array(logits, "logits")
    return _loss(logits, target, reduction=reduction, axis=axis, n_threads=n_threads,
                 weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                 sample_weight=sample_weight, grad_scale=grad_scale, z_loss=z_loss,
                 softcap=softcap, return_lse=return_lse, outputs="grad", out=out,
                 inplace=inplace)


def cross_entropy_grad_hess(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                            label_smoothing=0.0, sample_weight=None, z_loss=0.0, softcap=None,
                            return_lse=False, grad_scale=1.0, axis=-1, n_threads=None,
                            out=None, inplace=False):
    """Cross-entropy loss, its gradient and the diagonal of its Hessian with
    respect to the logits, fused.

    The loss and the gradient are :func:`cross_entropy_and_grad`'s (the
    same arguments, reductions and scaling).  Per position, the Hessian with
    respect to its logits is ``S * (diag(p) - p p^T)``, with ``p`` the
    softmax and ``S = sum_j c_j`` the position's target mass after class
    weights and smoothing (``weight[target]`` without smoothing), times its
    sample weight, the mean's ``1 / denominator`` and ``grad_scale``, as the
    gradient.  ``hess`` is its diagonal, ``S * p * (1 - p)``.  The z-loss
    adds its own second derivative, and softcapping takes both through the
    cap: ``hess`` is always the exact diagonal for the options given.
    Positions do not interact, so this diagonal and the gradient are all
    that gradient boosting needs (see :mod:`crossentropy.xgboost` and
    :mod:`crossentropy.lightgbm`).

    Parameters
    ----------
    out : tuple of two ndarrays or None, optional, keyword-only
        ``(grad_out, hess_out)``, either of them None, as ``out=`` of
        :func:`cross_entropy_and_grad`; they must not overlap.
    inplace : bool, keyword-only
        Write the gradient over ``logits``, as :func:`cross_entropy_and_grad`.

    Other arguments as :func:`cross_entropy_and_grad`.

    Returns
    -------
    loss, grad, hess
        The loss (numpy scalar, or ndarray for ``reduction='none'``); the
        gradient and the Hessian's diagonal, each of the logits' shape and
        dtype (zero at ignored positions); with ``return_lse=True`` the
        log-sum-exps last.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import cross_entropy_grad_hess
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> loss, grad, hess = cross_entropy_grad_hess(logits, [0, 2], reduction="sum")
    >>> hess.round(4)
    array([[0.1684, 0.1446, 0.0376],
           [0.2222, 0.2222, 0.2222]])
    """
    inplace = _check_bool(inplace, "inplace")
    if out is None:
        out = (None, None)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"out must be a tuple (grad_out, hess_out), either of them None, "
                        f"got {type(out).__name__}"
                        + (f" of length {len(out)}" if isinstance(out, tuple) else ""))
    grad_out, hess_out = out
    if inplace:
        if grad_out is not None:
            raise ValueError("pass either out[0] or inplace=True, not both")
        if not isinstance(logits, np.ndarray):
            raise TypeError(
                f"inplace=True needs logits to be a numpy.ndarray, got {type(logits).__name__}"
            )
    if grad_out is not None and hess_out is not None and _shares(grad_out, hess_out,
                                                                 "out[0] and out[1]"):
        raise ValueError("out[0] and out[1] overlap; pass separate arrays")
    logits = _as_float_array(logits, "logits")
    return _loss(logits, target, reduction=reduction, axis=axis, n_threads=n_threads,
                 weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                 sample_weight=sample_weight, grad_scale=grad_scale, z_loss=z_loss,
                 softcap=softcap, return_lse=return_lse, outputs="hess", out=grad_out,
                 inplace=inplace, hess_out=hess_out)


def cross_entropy_hvp(logits, target, v, *, weight=None, ignore_index=-100, reduction="mean",
                      label_smoothing=0.0, sample_weight=None, z_loss=0.0, softcap=None,
                      grad_scale=1.0, axis=-1, n_threads=None, out=None):
    """The Hessian of the cross-entropy loss with respect to the logits,
    applied to ``v``, fused: no Hessian matrix is formed.

    Per position, ``S * (p * v - p * sum(p * v))`` along the class axis
    (``p`` the softmax, ``S`` as in :func:`cross_entropy_grad_hess`), scaled
    as the gradient of :func:`cross_entropy_and_grad` (sample weight, the
    mean's ``1 / denominator``, ``grad_scale``), with the z-loss's and the
    cap's second derivatives when those options are on.  This is what a
    Newton-CG solver's ``hessp`` needs: for logits ``X @ W``, the product
    with a direction ``D`` is ``X.T @ cross_entropy_hvp(X @ W, y, X @ D)``.

    Parameters
    ----------
    v : array_like of real numbers, the logits' shape
        The vectors to multiply (converted to the logits' dtype; for half
        precision, computed in float32).
    out : ndarray, optional, keyword-only
        Where to write the product: the logits' shape and dtype, sharing no
        element with what the call reads (``v`` included).

    Other arguments as :func:`cross_entropy_and_grad`.

    Returns
    -------
    ndarray of the logits' shape and dtype, zero at ignored positions.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import cross_entropy_hvp
    >>> logits = np.array([[2.0, 0.5, -1.0]])
    >>> cross_entropy_hvp(logits, [0], np.array([[1.0, 0.0, 0.0]])).round(4)
    array([[ 0.1684, -0.1377, -0.0307]])
    """
    logits = _as_float_array(logits, "logits")
    return _loss(logits, target, reduction=reduction, axis=axis, n_threads=n_threads,
                 weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                 sample_weight=sample_weight, grad_scale=grad_scale, z_loss=z_loss,
                 softcap=softcap, return_lse=False, outputs="hvp", out=out, v=v)


# --- softmax, log_softmax, logsumexp ------------------------------------------------
# (shared with crossentropy.special, which gives them SciPy's signatures)

def _adjacent(x, axes):
    """`x` with its sorted, distinct `axes` adjacent, as (view, span, moved):
    x itself, or (moved) x with those axes moved to the end, and the slice of
    the view's axes they span."""
    k = len(axes)
    if k == 0 or axes[-1] - axes[0] == k - 1:
        start = axes[0] if k else x.ndim
        return x, slice(start, start + k), False
    return np.moveaxis(x, axes, range(x.ndim - k, x.ndim)), slice(x.ndim - k, x.ndim), True


def _normaliser(mode, x, axis, n_threads, out, *, scipy=False):
    """softmax / log_softmax of the float array `x` over `axis` (an integer,
    a tuple of them, or None: every axis); returns the output array.  With
    `scipy`, the log-softmax of a row holding +inf is SciPy's (z - its
    log-sum-exp, +inf) rather than NaN throughout."""
    dtype = _native(x.dtype)
    half = _half_kind(dtype)
    axes = _check_axes(axis, x.ndim, "x")
    threads = _resolve_n_threads(n_threads)
    if out is not None:
        _check_output(out, x, dtype, "x")
    xm, span, moved = _adjacent(x, axes)
    z3, z_copied = _input3(xm, span)
    dest = None if out is None else _adjacent(out, axes)[0]
    out3, result, staged = _destination(dest, z3, z_copied, xm.shape, span)
    if not _same_elements(out3, z3) and _shares(out3, z3, "out and x"):
        raise ValueError("out overlaps x without being x itself; pass a separate array, or x")
    _run_any(mode, z3, threads, half, out3=out3,
             inf_row_lse=scipy and mode == Mode.LOG_SOFTMAX)
    if staged is not None:
        result[...] = staged
    if out is not None:
        return out
    if moved:
        result = np.moveaxis(result, range(x.ndim - len(axes), x.ndim), axes)
    return result[()]


def _logsumexp(x, axis, keepdims, n_threads):
    """logsumexp of the float array `x` over `axis` (as _normaliser's), in
    x's dtype: the reduced axes dropped, or kept with length one."""
    dtype = _native(x.dtype)
    half = _half_kind(dtype)
    axes = _check_axes(axis, x.ndim, "x")
    keepdims = _check_bool(keepdims, "keepdims")
    threads = _resolve_n_threads(n_threads)
    xm, span, _ = _adjacent(x, axes)
    z3, _ = _input3(xm, span)
    # (rows in the order of the axes kept, with the reduced ones adjacent or last)
    row_value = np.empty((z3.shape[0], z3.shape[2]), np.float32 if half else dtype)
    _run_any(Mode.LOGSUMEXP, z3, threads, half, row_value=row_value)
    if half:
        row_value = _to_half(row_value, dtype, half == "bfloat16")
    shape = tuple(1 if d in axes else n for d, n in enumerate(x.shape) if keepdims or d not in axes)
    return row_value.reshape(shape)[()]


def softmax(x, *, axis=-1, n_threads=None, out=None):
    """Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``.

    Parameters
    ----------
    x : array_like of float16, bfloat16, float32 or float64
    axis : int, tuple of ints or None, keyword-only
        Axis (or axes, together) to normalise over (default: the last);
        None: every element.
    n_threads : int or None, keyword-only
        As in :func:`cross_entropy`.
    out : ndarray, optional, keyword-only
        Output of x's shape and dtype; may be ``x`` itself.

    Returns
    -------
    ndarray of x's shape and dtype.  A row holding NaN, +inf, or only -inf
    is NaN throughout (as PyTorch).  :func:`crossentropy.special.softmax`
    takes SciPy's signature.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import softmax
    >>> softmax(np.array([1.0, 2.0, 3.0])).round(4)
    array([0.09  , 0.2447, 0.6652])
    """
    return _normaliser(Mode.SOFTMAX, _as_float_array(x, "x"), axis, n_threads, out)


def log_softmax(x, *, axis=-1, n_threads=None, out=None):
    """Log-softmax along ``axis``: ``(x - max) - log(sum(exp(x - max)))``.

    Parameters as :func:`softmax`; a row holding NaN, +inf, or only -inf is
    NaN throughout (as PyTorch; :func:`crossentropy.special.log_softmax`
    follows SciPy there).

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import log_softmax
    >>> log_softmax(np.array([1.0, 2.0, 3.0])).round(4)
    array([-2.4076, -1.4076, -0.4076])
    """
    return _normaliser(Mode.LOG_SOFTMAX, _as_float_array(x, "x"), axis, n_threads, out)


def logsumexp(x, *, axis=-1, keepdims=False, n_threads=None):
    """``log(sum(exp(x)))`` along ``axis``, computed stably.

    Parameters
    ----------
    x : array_like of float16, bfloat16, float32 or float64
    axis : int, tuple of ints or None, keyword-only
        Axis (or axes) to reduce (default: the last); None: every element.
    keepdims : bool, keyword-only
        Keep the reduced axes with length one.
    n_threads : int or None, keyword-only
        As in :func:`cross_entropy`.

    Returns
    -------
    numpy scalar or ndarray, in x's dtype (accumulated in float64).
    An empty axis gives ``-inf``, a row of -inf ``-inf``, a row with +inf
    (and no NaN) ``+inf``.  :func:`crossentropy.special.logsumexp` takes
    SciPy's signature, with weights ``b`` and ``return_sign``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import logsumexp
    >>> round(float(logsumexp(np.array([1.0, 2.0, 3.0]))), 6)
    3.407606
    """
    return _logsumexp(_as_float_array(x, "x"), axis, keepdims, n_threads)
