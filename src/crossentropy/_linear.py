"""The fused linear cross-entropy: the loss of
``cross_entropy(input @ linear_weight.T + linear_bias, target)`` without ever
holding the (tokens x classes) logits.

Per chunk of tokens: one matrix product into a reused buffer, the fused kernel
in place on it (the buffer becomes the chunk's gradient with respect to its
logits), then the two products of the gradients.  The matrix products are
NumPy's (its BLAS); every argument is checked, and the targets counted for the
mean, before the first product.
"""

import ctypes
import functools
import math

import numpy as np

from . import _kernels
from ._api import _mean_scale, _reduce, _results, _run, _to_half
from ._kernels import Mode
from ._validate import (
    _as_float_array, _asarray, _check_integer, _check_loss_options, _check_nonnegative_weights,
    _check_reduction, _half_kind, _is_floating, _kernel_ready, _native, _target_indices,
)

__all__ = ["linear_cross_entropy", "linear_cross_entropy_and_grad"]

# The logits buffer of one chunk, by default (chunk_size tokens overrides it).
_CHUNK_BYTES = 64 << 20
# Without a BLAS to add into it (_accumulating_gemm), grad_linear_weight gains
# each chunk's share a block of classes at a time, through a buffer this size.
_WEIGHT_BLOCK_BYTES = 4 << 20


def _check_chunk_size(chunk_size, n_classes, itemsize):
    """Tokens per chunk: chunk_size, or as many as _CHUNK_BYTES of logits hold."""
    if chunk_size is None:
        return max(1, _CHUNK_BYTES // max(1, n_classes * itemsize))
    rows = _check_integer(chunk_size, "chunk_size", "a positive integer or None")
    if rows <= 0:
        raise ValueError(f"chunk_size must be a positive integer or None, got {rows}")
    return rows


def _same_dtype(a, name, dtype):
    if _native(a.dtype) != dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but input has {dtype}; pass them in one "
                        f"dtype ({name}.astype(input.dtype))")


def _blas_ready(a):
    """Whether NumPy's matmul hands the 2-D array `a` to BLAS as it is
    (otherwise it copies it, or for some strides multiplies in a plain loop):
    native, aligned, one axis of unit stride, the other stepping past it."""
    if not (a.dtype.isnative and a.flags.aligned):
        return False
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return True
    (s0, s1), (n0, n1), item = a.strides, a.shape, a.itemsize
    return (s0 % item == 0 and s1 % item == 0
            and ((s1 == item and s0 >= n1 * item) or (s0 == item and s1 >= n0 * item)))


def _rows_of(h, positions, features):
    """A function giving the (tokens, features) rows [a, e) of `h`: views of
    it where its layout allows, else a copy of those rows alone (never a copy
    of the whole input)."""
    try:
        h2 = h.reshape((math.prod(positions), features), copy=False)
    except ValueError:
        h2 = None
    if h2 is not None and _blas_ready(h2):
        return lambda a, e: h2[a:e]

    def gathered(a, e):
        rows = h[np.unravel_index(np.arange(a, e), positions)] if positions else h[None]
        return np.ascontiguousarray(rows, dtype=_native(h.dtype))
    return gathered


@functools.cache
def _accumulating_gemm(dtype):
    """NumPy's own BLAS's cblas_?gemm, for C += A.T @ B (beta = 1), which
    NumPy's matmul cannot do; None where it is not found.

    Only the ILP64 names of NumPy's wheels (scipy-openblas: 64-bit integers,
    known from the name) are taken; other builds add through a block.
    """
    letter = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}[dtype]
    scalar = ctypes.c_float if letter == "s" else ctypes.c_double
    try:
        lib = ctypes.CDLL(np._core._multiarray_umath.__file__)
    except (AttributeError, OSError):
        return None
    for name in (f"scipy_cblas_{letter}gemm64_", f"cblas_{letter}gemm64_"):
        f = getattr(lib, name, None)
        if f is not None:
            i64, p = ctypes.c_int64, ctypes.c_void_p
            f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar, p,
                          i64, p, i64, scalar, p, i64]
            f.restype = None
            return f
    return None


def _widen(a, bfloat16, out, threads=1):
    """out[...] = the float32 values of the 1-D or 2-D half-precision `a`."""
    a = _kernel_ready(a)
    shape3 = (1, a.size, 1) if a.ndim == 1 else a.shape + (1,)
    _kernels.widen(a.view(np.uint16).reshape(shape3), out.reshape(shape3), bfloat16, threads)
    return out


def _add_weight_grad(grad_w, g, h):
    """grad_w += g.T @ h: through NumPy's BLAS with beta = 1 where it can be
    called and the rows are laid out for it, else a block of grad_w's rows
    at a time."""
    gemm = _accumulating_gemm(grad_w.dtype)
    (n_classes, features), item = grad_w.shape, grad_w.itemsize
    if grad_w.size == 0:
        return
    # (rows in memory with unit steps along them, as cblas's leading dimensions say)
    if (gemm is not None and grad_w.flags.c_contiguous
            and g.strides[1] == item and g.strides[0] % item == 0
            and g.strides[0] >= n_classes * item
            and h.strides[1] == item and h.strides[0] % item == 0
            and h.strides[0] >= features * item):
        row_major, no_trans, trans = 101, 111, 112
        gemm(row_major, trans, no_trans, n_classes, features, g.shape[0], 1.0,
             g.ctypes.data, g.strides[0] // item, h.ctypes.data, h.strides[0] // item, 1.0,
             grad_w.ctypes.data, features)
        return
    rows = max(1, min(n_classes, _WEIGHT_BLOCK_BYTES // max(1, features * item)))
    block = np.empty((rows, features), grad_w.dtype)
    for v0 in range(0, n_classes, rows):
        v1 = min(v0 + rows, n_classes)
        part = block[:v1 - v0]
        np.matmul(g[:, v0:v1].T, h, out=part)
        np.add(grad_w[v0:v1], part, out=grad_w[v0:v1])


def _linear(input, linear_weight, target, *, linear_bias, weight, ignore_index, reduction,
            label_smoothing, sample_weight, z_loss, softcap, return_lse, chunk_size, n_threads,
            grad_scale, gradient, row_scale=None, wanted=(True, True, True)):
    """Shared body of linear_cross_entropy and linear_cross_entropy_and_grad.

    `row_scale` (one float64 per token, of any sign) multiplies each token's
    gradient: an upstream gradient of reduction='none' (the loss it returns
    is then not meaningful).  `wanted` says which of the input's, the
    weight's and the bias's gradients to compute (None for the others).
    """
    h = _as_float_array(input, "input")
    w = _as_float_array(linear_weight, "linear_weight")
    if h.ndim == 0:
        raise ValueError("input must have at least one dimension (the features), got a 0-d array")
    if w.ndim != 2:
        raise ValueError(f"linear_weight must have shape (classes, features), got {w.shape}")
    dtype = _native(h.dtype)
    # half precision: the products and the kernel in float32, the results rounded once
    half = _half_kind(dtype)
    compute = np.dtype(np.float32) if half else dtype
    _same_dtype(w, "linear_weight", dtype)
    n_classes, features = w.shape
    if h.shape[-1] != features:
        raise ValueError(f"input has {h.shape[-1]} features (its last axis) but linear_weight "
                         f"has {features} (its shape {w.shape} is (classes, features))")
    b = None
    if linear_bias is not None:
        b = _as_float_array(linear_bias, "linear_bias")
        _same_dtype(b, "linear_bias", dtype)
        if b.shape != (n_classes,):
            raise ValueError(f"linear_bias must have shape ({n_classes},) (one per class, as "
                             f"linear_weight's rows), got {b.shape}")
        b = _kernel_ready(b)
    positions = h.shape[:-1]
    t = _asarray(target, "target")
    if _is_floating(t.dtype):
        raise TypeError("target must hold class indices: probability targets would be as large "
                        "as the logits, which linear_cross_entropy never holds; compute the "
                        "logits and call cross_entropy")
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != positions:
        raise ValueError(f"target must have shape {positions} (input's shape {h.shape} without "
                         f"its features), got {t.shape}")
    _check_reduction(reduction)
    # (None is torch's default for F.linear_cross_entropy, meaning -100)
    threads, ignore_index, label_smoothing, grad_scale, z_loss, softcap, return_lse = (
        _check_loss_options(n_threads, -100 if ignore_index is None else ignore_index,
                            label_smoothing, grad_scale, z_loss, softcap, return_lse, compute))
    rows = _check_chunk_size(chunk_size, n_classes, compute.itemsize)
    if weight is not None:
        weight = _check_nonnegative_weights(_asarray(weight, "weight"), "weight", (n_classes,),
                                            "one per class")
    n = math.prod(positions)
    sample_weight2 = None
    if sample_weight is not None:
        sample_weight = _check_nonnegative_weights(
            _asarray(sample_weight, "sample_weight"), "sample_weight", positions,
            "one per position: the target's shape")
        sample_weight2 = _kernel_ready(sample_weight.reshape((n, 1)))
    target2, kernel_ignore, n_active, denominator = _target_indices(
        t, positions + (n_classes,), len(positions), ignore_index, weight, sample_weight2)
    scale = _mean_scale(grad_scale, reduction, denominator, n_active)
    if row_scale is not None:
        # (the kernel's per-row weight scales its gradient: past the checks, as it may be < 0)
        row_scale = np.asarray(row_scale, np.float64).reshape((n, 1))
        sample_weight2 = row_scale if sample_weight2 is None else sample_weight2 * row_scale

    rows = min(rows, max(n, 1))
    rows_of = _rows_of(h, positions, features)
    if half:
        bfloat16 = half == "bfloat16"
        # (the weight once in float32, for BLAS; the input a chunk at a time)
        w = _widen(w, bfloat16, np.empty(w.shape, np.float32), threads)
        b = None if b is None else _widen(b, bfloat16, np.empty(b.shape, np.float32))
        half_rows, h_chunk = rows_of, np.empty((rows, features), np.float32)

        def rows_of(a, e):
            return _widen(half_rows(a, e), bfloat16, h_chunk[:e - a], threads)
    elif not _blas_ready(w):
        w = np.ascontiguousarray(w, dtype=dtype)          # once, not once per product
    logits = np.empty((rows, n_classes), compute)
    row_value = np.empty((n, 1), compute) if reduction == "none" else None
    lse = np.empty((n, 1), compute) if return_lse else None
    loss_sum = 0.0
    grad_h = grad_w = grad_b = None
    if gradient:
        grad_h = np.empty((n, features), dtype) if wanted[0] else None
        grad_h_chunk = np.empty((rows, features), compute) if wanted[0] and half else None
        grad_w = np.zeros((n_classes, features), compute) if wanted[1] else None
        grad_b = np.zeros(n_classes, np.float64) if b is not None and wanted[2] else None
        column_sum = np.empty(n_classes, np.float64)
        weight_started = False
    for a in range(0, n, rows):
        e = min(a + rows, n)
        kept = target2[a:e, 0] != kernel_ignore
        if not kept.any():
            # every token ignored: nothing to add, and no product to make
            for per_row in (row_value, lse):
                if per_row is not None:
                    per_row[a:e] = 0
            if grad_h is not None:
                grad_h[a:e] = 0
            continue
        z = logits[:e - a]
        hc = rows_of(a, e)
        np.matmul(hc, w.T, out=z)
        if b is not None:
            np.add(z, b, out=z)
        z3 = z.reshape((e - a, n_classes, 1))
        loss_sum += float(np.sum(_run(Mode.LOSS_GRAD if gradient else Mode.LOSS, z3, threads,
                         out3=z3 if gradient else None, target2=target2[a:e],
                         sample_weight2=None if sample_weight2 is None else sample_weight2[a:e],
                         row_value=None if row_value is None else row_value[a:e],
                         weight=weight, ignore_index=kernel_ignore,
                         label_smoothing=label_smoothing, grad_scale=scale,
                         lse=None if lse is None else lse[a:e], z_loss=z_loss, softcap=softcap)))
        if grad_h is not None:
            if half:
                np.matmul(z, w, out=grad_h_chunk[:e - a])
                _kernels.narrow(grad_h_chunk[:e - a, :, None],
                                grad_h.view(np.uint16)[a:e, :, None], bfloat16, threads)
            else:
                np.matmul(z, w, out=grad_h[a:e])
        if grad_w is not None:
            if weight_started:
                _add_weight_grad(grad_w, z, hc)
            else:
                np.matmul(z.T, hc, out=grad_w)
                weight_started = True
        if grad_b is not None:
            np.add(grad_b, np.add.reduce(z, axis=0, dtype=np.float64, out=column_sum),
                   out=grad_b)
    if half:
        row_value, lse, grad_w = (None if a is None else _to_half(a, dtype, bfloat16)
                                  for a in (row_value, lse, grad_w))
    loss = _reduce(np.array([loss_sum]), row_value, denominator, reduction, dtype, positions)
    grads = ((None if grad_h is None else grad_h.reshape(h.shape), grad_w,
              None if grad_b is None else grad_b.astype(dtype)) if gradient else ())
    return _results(loss, grads, lse, positions)


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=-100, reduction="mean", label_smoothing=0.0,
                         sample_weight=None, z_loss=0.0, softcap=None, return_lse=False,
                         chunk_size=None, n_threads=None):
    """Cross-entropy of a linear layer's output, without holding its logits.

    The loss of ``cross_entropy(input @ linear_weight.T + linear_bias, target,
    ...)`` (the arguments of ``torch.nn.functional.linear_cross_entropy``,
    plus this package's options), computed ``chunk_size`` tokens at a time:
    each chunk's logits go into one reused buffer (about 64 MiB by default),
    so that memory does not grow with the number of tokens.

    Parameters
    ----------
    input : array_like of float16, bfloat16, float32 or float64, shape (..., d)
        The hidden states; every position (all axes but the last) is a token.
        Half precision is computed in float32: the weight is read into
        float32 once (and with the gradients, the weight's summed in
        float32), the input a chunk at a time.
    linear_weight : array_like, shape (C, d), input's dtype
        As ``torch.nn.Linear(d, C).weight``.
    target : array_like of int, shape input.shape[:-1]
        Class indices in ``[0, C)`` or ``ignore_index``.  Probability targets
        are refused: they would be as large as the logits.
    linear_bias : array_like of shape (C,), input's dtype, optional, keyword-only
    weight, ignore_index, reduction, label_smoothing, sample_weight, z_loss, softcap, return_lse
        As :func:`cross_entropy`, keyword-only.
    chunk_size : int or None, keyword-only
        Tokens per chunk; None: as many as 64 MiB of logits hold.  The
        result does not depend on it beyond the rounding of the sums.
        Inputs whose layout NumPy's BLAS cannot take are copied: the
        weight once, the input a chunk at a time.
    n_threads : int or None, keyword-only
        The kernel's threads, as in :func:`cross_entropy`; the matrix
        products use NumPy's BLAS and its threads.

    Returns
    -------
    loss : numpy scalar, or ndarray for ``reduction='none'``
        In input's dtype; with ``return_lse=True``, ``(loss, lse)``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import cross_entropy, linear_cross_entropy
    >>> rng = np.random.default_rng(0)
    >>> h, w = rng.standard_normal((6, 4)), rng.standard_normal((10, 4))
    >>> t = np.array([0, 3, 9, 2, -100, 5])
    >>> bool(np.isclose(linear_cross_entropy(h, w, t, chunk_size=4),
    ...                 cross_entropy(h @ w.T, t)))
    True
    """
    return _linear(input, linear_weight, target, linear_bias=linear_bias, weight=weight,
                   ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing, sample_weight=sample_weight, z_loss=z_loss,
                   softcap=softcap, return_lse=return_lse, chunk_size=chunk_size,
                   n_threads=n_threads, grad_scale=1.0, gradient=False)


def linear_cross_entropy_and_grad(input, linear_weight, target, *, linear_bias=None,
                                  weight=None, ignore_index=-100, reduction="mean",
                                  label_smoothing=0.0, sample_weight=None, z_loss=0.0,
                                  softcap=None, return_lse=False, grad_scale=1.0,
                                  chunk_size=None, n_threads=None):
    """:func:`linear_cross_entropy` and its gradients, in the same pass.

    Per chunk the kernel turns the chunk's logits into their gradient in
    place, and two products give the chunk's share of the input's and the
    weight's gradients (the bias's is summed in float64).  For
    ``reduction='none'`` they are the gradients of the sum of the losses;
    ``grad_scale`` multiplies them all (an upstream gradient).

    Returns
    -------
    loss : numpy scalar, or ndarray for ``reduction='none'``
    grad_input : ndarray of input's shape
    grad_linear_weight : ndarray of shape (C, d)
    grad_linear_bias : ndarray of shape (C,), or None without a bias
    lse : numpy scalar or ndarray
        With ``return_lse=True`` only, last.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import linear_cross_entropy_and_grad
    >>> h, w = np.ones((2, 3)), np.zeros((4, 3))
    >>> loss, grad_h, grad_w, grad_b = linear_cross_entropy_and_grad(h, w, [1, 2])
    >>> grad_w.round(3)
    array([[ 0.25,  0.25,  0.25],
           [-0.25, -0.25, -0.25],
           [-0.25, -0.25, -0.25],
           [ 0.25,  0.25,  0.25]])
    >>> grad_b is None
    True
    """
    return _linear(input, linear_weight, target, linear_bias=linear_bias, weight=weight,
                   ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing, sample_weight=sample_weight, z_loss=z_loss,
                   softcap=softcap, return_lse=return_lse, chunk_size=chunk_size,
                   n_threads=n_threads, grad_scale=grad_scale, gradient=True)
