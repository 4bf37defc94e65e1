"""LightGBM's multiclass objective from the fused kernels.

``multiclass_objective`` is a custom objective for LightGBM: pass it as
``params["objective"]`` (with ``num_class``) to ``lightgbm.train``, or as
``objective=`` of ``LGBMClassifier``'s low-level ``Booster``.  It gives the
gradient and Hessian of ``objective="multiclass"`` in one fused pass, with
LightGBM's conventions, ``(p - onehot) * w`` and ``K / (K - 1) p (1 - p) w``
for K classes.  It reads the labels and weights from the ``Dataset``, so
this module does not import LightGBM itself.
"""

from typing import Any

import numpy as np
import numpy.typing as npt

from ._boosting import multiclass_gradient

_FloatArray = npt.NDArray[np.floating[Any]]

__all__ = ["multiclass_objective"]


def multiclass_objective(preds: npt.ArrayLike, train_data: Any) -> tuple[_FloatArray, _FloatArray]:
    """Gradient and Hessian of LightGBM's ``multiclass`` objective.

    Parameters
    ----------
    preds : ndarray of shape (samples, classes)
        The raw scores LightGBM passes a custom objective (float64).
    train_data : lightgbm.Dataset
        Its labels (``get_label``: class indices) and weights
        (``get_weight``: per sample, or None).

    Returns
    -------
    grad, hess : ndarrays of preds' shape and dtype
        ``(p - onehot) * w`` and ``K / (K - 1) * p (1 - p) w``
        (src/objective/multiclass_objective.hpp's factor), p the softmax
        of each sample's scores, w its weight.

    Examples
    --------
    >>> import lightgbm                                  # doctest: +SKIP
    >>> from crossentropy.lightgbm import multiclass_objective
    >>> booster = lightgbm.train({"objective": multiclass_objective, "num_class": 3},
    ...                          train_data, num_boost_round=10)  # doctest: +SKIP
    """
    return multiclass_gradient(preds, train_data.get_label(), train_data.get_weight(),
                               library="LightGBM", hess_factor=_hessian_factor)


def _hessian_factor(k: int) -> float:
    """LightGBM's multiclass Hessian factor, K / (K - 1) (1 for one class,
    which LightGBM refuses anyway)."""
    return k / (k - 1.0) if k > 1 else 1.0
