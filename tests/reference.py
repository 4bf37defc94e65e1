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
