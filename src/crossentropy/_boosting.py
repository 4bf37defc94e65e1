"""The multiclass objective that crossentropy.xgboost and crossentropy.lightgbm
adapt to their libraries: gradient and Hessian diagonal of the summed,
sample-weighted softmax cross-entropy, from cross_entropy_grad_hess."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ._api import cross_entropy_grad_hess


def multiclass_gradient(preds: npt.ArrayLike, labels: npt.ArrayLike, weights: Any, *,
                        library: str, hess_factor: Callable[[int], float],
                        hess_floor: float = 0.0
                        ) -> tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.floating[Any]]]:
    """(grad, hess) of shape (samples, classes) for margins `preds` of that
    shape, class labels (floats holding whole numbers, as the libraries store
    them) and per-sample weights (None or empty: all ones); the Hessian
    times `hess_factor(classes)`, then at least `hess_floor`.  `library`
    names the caller in messages."""
    preds = np.asarray(preds)
    if preds.ndim != 2:
        raise ValueError(
            f"preds must be {library}'s (samples, classes) margins of a multiclass model, got "
            f"shape {preds.shape}; set num_class in the parameters")
    labels = np.asarray(labels)
    if labels.shape != (preds.shape[0],):
        raise ValueError(f"the training data must have one label per sample: "
                         f"{preds.shape[0]} samples, labels of shape {labels.shape}")
    with np.errstate(invalid="ignore"):          # (NaN and inf fail the test below)
        classes = labels.astype(np.intp)
    bad = np.flatnonzero((classes != labels) | (classes < 0) | (classes >= preds.shape[1]))
    if bad.size:
        raise ValueError(f"the labels must be class indices in [0, {preds.shape[1]}): label "
                         f"{labels[bad[0]].item()!r} of sample {bad[0]} is not")
    if weights is not None and np.size(weights) == 0:
        weights = None
    _, grad, hess = cross_entropy_grad_hess(preds, classes, sample_weight=weights,
                                            reduction="sum")
    factor = hess_factor(preds.shape[1])
    if factor != 1.0:
        hess *= factor
    if hess_floor:
        np.maximum(hess, hess_floor, out=hess)
    return grad, hess
