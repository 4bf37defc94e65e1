from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "cross_entropy",
    "cross_entropy_and_grad",
    "cross_entropy_grad_hess",
    "cross_entropy_hvp",
    "log_softmax",
    "logsumexp",
    "softmax",
]

# (bfloat16 logits, ml_dtypes', give its scalars and arrays: not typed here)
_Float = np.float16 | np.float32 | np.float64
_FloatArray = npt.NDArray[np.floating[Any]]
_Scalar = Literal["mean", "sum"]

@overload
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    axis: int = -1,
    n_threads: int | None = None,
) -> _Float: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    axis: int = -1,
    n_threads: int | None = None,
) -> _FloatArray: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    axis: int = -1,
    n_threads: int | None = None,
) -> tuple[_Float, _Float | _FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    axis: int = -1,
    n_threads: int | None = None,
) -> tuple[_FloatArray, _Float | _FloatArray]: ...
@overload
def cross_entropy_and_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
    out: _FloatArray | None = None,
    inplace: bool = False,
) -> tuple[_Float, _FloatArray]: ...
@overload
def cross_entropy_and_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
    out: _FloatArray | None = None,
    inplace: bool = False,
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def cross_entropy_and_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
    out: _FloatArray | None = None,
    inplace: bool = False,
) -> tuple[_Float, _FloatArray, _Float | _FloatArray]: ...
@overload
def cross_entropy_and_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
    out: _FloatArray | None = None,
    inplace: bool = False,
) -> tuple[_FloatArray, _FloatArray, _Float | _FloatArray]: ...
@overload
def cross_entropy_grad_hess(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
    out: tuple[_FloatArray | None, _FloatArray | None] | None = None,
    inplace: bool = False,
) -> tuple[_Float, _FloatArray, _FloatArray]: ...
@overload
def cross_entropy_grad_hess(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
    out: tuple[_FloatArray | None, _FloatArray | None] | None = None,
    inplace: bool = False,
) -> tuple[_FloatArray, _FloatArray, _FloatArray]: ...
@overload
def cross_entropy_grad_hess(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
    out: tuple[_FloatArray | None, _FloatArray | None] | None = None,
    inplace: bool = False,
) -> tuple[_Float, _FloatArray, _FloatArray, _Float | _FloatArray]: ...
@overload
def cross_entropy_grad_hess(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
    out: tuple[_FloatArray | None, _FloatArray | None] | None = None,
    inplace: bool = False,
) -> tuple[_FloatArray, _FloatArray, _FloatArray, _Float | _FloatArray]: ...
def cross_entropy_hvp(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    v: npt.ArrayLike,
    *,
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
) -> _FloatArray: ...
def softmax(
    x: npt.ArrayLike, *, axis: int | tuple[int, ...] | None = -1, n_threads: int | None = None, out: _FloatArray | None = None
) -> _FloatArray: ...
def log_softmax(
    x: npt.ArrayLike, *, axis: int | tuple[int, ...] | None = -1, n_threads: int | None = None, out: _FloatArray | None = None
) -> _FloatArray: ...
def logsumexp(
    x: npt.ArrayLike, *, axis: int | tuple[int, ...] | None = -1, keepdims: bool = False, n_threads: int | None = None
) -> _Float | _FloatArray: ...

# the shim's chunking rule, which the main job uses to name its threads
def _chunking(n_rows: int, n_classes: int, n_threads: int) -> tuple[int, int, int]: ...
