"""Independent float64 NumPy reference implementations, written for clarity.

They share no code with the package: plain NumPy on float64 copies, the class
axis moved last.
"""

import numpy as np


def log_softmax(x, axis=-1):
    z = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    shifted = z - z.max(axis=-1, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return np.moveaxis(out, -1, axis)


def softmax(x, axis=-1):
    return np.exp(log_softmax(x, axis))


def logsumexp(x, axis=-1):
    z = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    zmax = z.max(axis=-1)
    return zmax + np.log(np.exp(z - zmax[..., None]).sum(axis=-1))


def cross_entropy(logits, target, reduction="mean", axis=-1):
    """Per-position loss -log softmax(logits)[target], then the reduction."""
    logp = np.moveaxis(log_softmax(logits, axis), axis, -1)
    target = np.asarray(target).astype(np.int64)
    losses = -np.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.mean() if losses.size else np.nan


def cross_entropy_grad(logits, target, reduction="mean", axis=-1):
    """d(loss)/d(logits) = softmax - onehot, divided by N for the mean."""
    p = np.moveaxis(softmax(logits, axis), axis, -1)
    target = np.asarray(target).astype(np.int64)
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, target[..., None], 1.0, axis=-1)
    grad = p - onehot
    if reduction == "mean" and target.size:
        grad /= target.size
    return np.moveaxis(grad, -1, axis)


def finite_difference_grad(f, x, eps=1e-6):
    """Central differences of the scalar function f at float64 x."""
    x = np.array(x, dtype=np.float64)
    grad = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        orig = x[idx]
        x[idx] = orig + eps
        up = f(x)
        x[idx] = orig - eps
        down = f(x)
        x[idx] = orig
        grad[idx] = (up - down) / (2 * eps)
    return grad


def _target_distribution(logits_moved, target, axis, ignore_index, label_smoothing, weight):
    """c[..., j] = w_j ((1 - eps) y_j + eps / C), zero on ignored positions;
    and the mask of positions that count."""
    n_classes = logits_moved.shape[-1]
    target = np.asarray(target)
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    if target.dtype.kind == "f":
        y = np.moveaxis(target.astype(np.float64), axis, -1)
        active = np.ones(y.shape[:-1], dtype=bool)
    else:
        active = target != ignore_index
        y = np.zeros(logits_moved.shape)
        safe = np.where(active, target, 0).astype(np.int64)
        np.put_along_axis(y, safe[..., None], 1.0, axis=-1)
    c = ((1.0 - label_smoothing) * y + label_smoothing / n_classes) * w
    c[~active] = 0.0
    return c, active


def cross_entropy_full(logits, target, weight=None, ignore_index=-100, reduction="mean",
                       label_smoothing=0.0, sample_weight=None, axis=-1, z_loss=0.0,
                       softcap=None, return_lse=False):
    """PyTorch's cross_entropy with every option, plus sample_weight, z-loss
    (``z_loss * lse**2`` per position, weighted as the position's loss) and
    softcapping (``softcap * tanh(logits / softcap)`` first), in float64.

    Returns (loss, grad), and the positions' log-sum-exps (0 where ignored)
    with `return_lse`; a class with c_j == 0 contributes 0 even at logp = -inf.
    """
    z = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    if softcap is not None:
        z = softcap * np.tanh(z / softcap)
    logp = log_softmax(z)
    c, active = _target_distribution(logp, target, axis, ignore_index, label_smoothing, weight)
    sw = np.ones(active.shape) if sample_weight is None else np.asarray(sample_weight, np.float64)
    target = np.asarray(target)
    w = np.ones(logp.shape[-1]) if weight is None else np.asarray(weight, np.float64)
    if target.dtype.kind == "f":
        row_weight = sw
        denominator = sw.sum()
    else:
        row_weight = np.where(active, w[np.where(active, target, 0).astype(np.int64)], 0.0) * sw
        denominator = row_weight[active].sum()
    lse = np.where(active, logsumexp(z), 0.0)
    with np.errstate(invalid="ignore"):
        losses = -np.where(c == 0, 0.0, c * logp).sum(axis=-1) * sw
    losses = losses + z_loss * lse**2 * row_weight
    p = np.exp(logp)
    grad = (p * c.sum(axis=-1, keepdims=True) - c) * sw[..., None]
    grad = grad + 2.0 * z_loss * (lse * row_weight)[..., None] * p
    if softcap is not None:
        grad = grad * (1.0 - (z / softcap) ** 2)
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = losses.sum()
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = losses.sum() / denominator if denominator else np.nan
            grad = grad / denominator if denominator else grad * (0.0 if not active.any() else np.nan)
    grad = np.moveaxis(grad, -1, axis)
    return (loss, grad, lse) if return_lse else (loss, grad)


def cross_entropy_second_order(logits, target, v=None, weight=None, ignore_index=-100,
                               reduction="mean", label_smoothing=0.0, sample_weight=None,
                               axis=-1, z_loss=0.0, softcap=None):
    """The Hessian of cross_entropy_full's loss with respect to the logits,
    matrix-free: (its diagonal, its product with `v` or None).

    Per position, with y the (capped) logits, p = softmax(y), c the target
    distribution, S = sum c, sw the sample weight and rw the z-loss's weight,
    the gradient with respect to y is g = sw (S p - c) + 2 z_loss rw lse p,
    whose derivative is H = A (diag p - p p^T) + B p p^T with
    A = sw S + 2 z_loss rw lse and B = 2 z_loss rw.  Through the cap
    y = s tanh(z / s): H_z = D H D + diag(g y''), D = diag(1 - (y / s)^2),
    y'' = -2 y / s^2 (1 - (y / s)^2).  Scaled as the gradient.
    """
    z = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    y = z if softcap is None else softcap * np.tanh(z / softcap)
    logp = log_softmax(y)
    p = np.exp(logp)
    c, active = _target_distribution(logp, target, axis, ignore_index, label_smoothing, weight)
    sw = np.ones(active.shape) if sample_weight is None else np.asarray(sample_weight, np.float64)
    target = np.asarray(target)
    w = np.ones(p.shape[-1]) if weight is None else np.asarray(weight, np.float64)
    if target.dtype.kind == "f":
        rw, denominator = sw, sw.sum()
    else:
        rw = np.where(active, w[np.where(active, target, 0).astype(np.int64)], 0.0) * sw
        denominator = rw[active].sum()
    lse = np.where(active, logsumexp(y), 0.0)
    S = c.sum(axis=-1)
    A = (sw * S + 2.0 * z_loss * rw * lse)[..., None]
    B = (2.0 * z_loss * rw)[..., None]
    diag = A * p * (1.0 - p) + B * p * p
    g = sw[..., None] * (S[..., None] * p - c) + 2.0 * z_loss * (rw * lse)[..., None] * p

    def h_y(u):
        pu = (p * u).sum(axis=-1, keepdims=True)
        return A * (p * u - p * pu) + B * p * pu

    hv = None
    vm = None if v is None else np.moveaxis(np.asarray(v, dtype=np.float64), axis, -1)
    if softcap is None:
        hv = None if vm is None else h_y(vm)
    else:
        d = 1.0 - (y / softcap) ** 2
        ypp = -2.0 * y / softcap**2 * d
        diag = d * d * diag + g * ypp
        hv = None if vm is None else d * h_y(d * vm) + g * ypp * vm
    diag[~active] = 0.0
    if hv is not None:
        hv[~active] = 0.0
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = 1.0 / denominator if denominator else (0.0 if not active.any() else np.nan)
        diag = diag * scale
        hv = None if hv is None else hv * scale
    diag = np.moveaxis(diag, -1, axis)
    return diag, None if hv is None else np.moveaxis(hv, -1, axis)
