"""Fused, exact and fast softmax cross-entropy for NumPy arrays on the CPU.

>>> import numpy as np
>>> import crossentropy as ce
>>> loss, grad = ce.cross_entropy_and_grad(np.zeros((2, 4), np.float32), [1, 3])
>>> float(loss) == float(np.log(np.float32(4)))
True
"""

__version__ = "0.1.0"

from ._api import (
    cross_entropy, cross_entropy_and_grad, cross_entropy_grad_hess, cross_entropy_hvp, log_softmax,
    logsumexp, softmax,
)
from ._config import show_config
from ._linear import linear_cross_entropy, linear_cross_entropy_and_grad
from ._shards import (
    combine_partials, cross_entropy_from_partials, cross_entropy_partials,
    cross_entropy_shard_grad,
)

__all__ = [
    "__version__",
    "combine_partials",
    "cross_entropy",
    "cross_entropy_and_grad",
    "cross_entropy_from_partials",
    "cross_entropy_grad_hess",
    "cross_entropy_hvp",
    "cross_entropy_partials",
    "cross_entropy_shard_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_and_grad",
    "log_softmax",
    "logsumexp",
    "show_config",
    "softmax",
]
