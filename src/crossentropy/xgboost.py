"""XGBoost's multiclass objective from the fused kernels.

``softprob_objective`` is a custom objective for ``xgboost.train(params,
dtrain, obj=softprob_objective)`` with ``num_class`` in ``params``: the
gradient and Hessian of ``multi:softprob`` in one fused pass, with XGBoost's
conventions, ``(p - onehot) * w`` and ``max(2 p (1 - p) w, 1e-16)``.  It reads
the labels and weights from the ``DMatrix``, so this module does not import
XGBoost itself.
"""

from typing import Any

import numpy as np
import numpy.typing as npt

from ._boosting import multiclass_gradient

_FloatArray = npt.NDArray[np.floating[Any]]

__all__ = ["softprob_objective"]

# XGBoost's multiclass Hessian: twice the softmax's p (1 - p), and at least
# this (src/objective/multiclass_obj.cu)
_HESSIAN_FLOOR = 1e-16


def softprob_objective(predt: npt.ArrayLike, dtrain: Any) -> tuple[_FloatArray, _FloatArray]:
    """Gradient and Hessian of XGBoost's ``multi:softprob`` objective.

    Parameters
    ----------
    predt : ndarray of shape (samples, classes)
        The margins XGBoost passes a custom objective (float32).
    dtrain : xgboost.DMatrix
        Its labels (``get_label``: class indices) and weights
        (``get_weight``: per sample, or none).

    Returns
    -------
    grad, hess : ndarrays of predt's shape and dtype
        ``(p - onehot) * w`` and ``max(2 p (1 - p) w, 1e-16)``, p the
        softmax of each sample's margins, w its weight.

    Examples
    --------
    >>> import xgboost                                   # doctest: +SKIP
    >>> from crossentropy.xgboost import softprob_objective
    >>> params = {"num_class": 3, "base_score": 0.0, "disable_default_eval_metric": True}
    >>> booster = xgboost.train(params, dtrain, 10, obj=softprob_objective)  # doctest: +SKIP
    """
    return multiclass_gradient(predt, dtrain.get_label(), dtrain.get_weight(),
                               library="XGBoost", hess_factor=lambda k: 2.0,
                               hess_floor=_HESSIAN_FLOOR)
