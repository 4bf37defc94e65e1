from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "combine_partials",
    "cross_entropy_from_partials",
    "cross_entropy_partials",
    "cross_entropy_shard_grad",
]

_FloatArray = npt.NDArray[np.floating[Any]]
_Partials = npt.NDArray[np.float64]
# (the loss: a NumPy scalar, or an array for reduction='none')
_Loss = Any

def cross_entropy_partials(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    class_start: int,
    n_classes: int,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    softcap: float | None = None,
    axis: int = -1,
    n_threads: int | None = None,
) -> _Partials: ...
def combine_partials(
    parts: npt.ArrayLike | list[_Partials] | tuple[_Partials, ...], axis: int = 0
) -> _Partials: ...
@overload
def cross_entropy_from_partials(
    totals: _Partials,
    target: npt.ArrayLike | None,
    *,
    n_classes: int,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    return_lse: Literal[False] = False,
    dtype: npt.DTypeLike = ...,
) -> _Loss: ...
@overload
def cross_entropy_from_partials(
    totals: _Partials,
    target: npt.ArrayLike | None,
    *,
    n_classes: int,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    return_lse: Literal[True],
    dtype: npt.DTypeLike = ...,
) -> tuple[_Loss, Any]: ...
def cross_entropy_shard_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    totals: _Partials,
    *,
    class_start: int,
    n_classes: int,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
    out: _FloatArray | None = None,
    inplace: bool = False,
) -> _FloatArray: ...
