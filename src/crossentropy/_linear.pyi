from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

__all__ = ["linear_cross_entropy", "linear_cross_entropy_and_grad"]

_Float = np.float32 | np.float64
_FloatArray = npt.NDArray[np.floating[Any]]
_Scalar = Literal["mean", "sum"]

@overload
def linear_cross_entropy(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> _Float: ...
@overload
def linear_cross_entropy(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> _FloatArray: ...
@overload
def linear_cross_entropy(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> tuple[_Float, _Float | _FloatArray]: ...
@overload
def linear_cross_entropy(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> tuple[_FloatArray, _Float | _FloatArray]: ...
@overload
def linear_cross_entropy_and_grad(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    grad_scale: float = 1.0,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> tuple[_Float, _FloatArray, _FloatArray, _FloatArray | None]: ...
@overload
def linear_cross_entropy_and_grad(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[False] = False,
    grad_scale: float = 1.0,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray, _FloatArray, _FloatArray | None]: ...
@overload
def linear_cross_entropy_and_grad(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Scalar = "mean",
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    grad_scale: float = 1.0,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> tuple[_Float, _FloatArray, _FloatArray, _FloatArray | None, _Float | _FloatArray]: ...
@overload
def linear_cross_entropy_and_grad(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    sample_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: Literal[True],
    grad_scale: float = 1.0,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray, _FloatArray, _FloatArray | None, _Float | _FloatArray]: ...

# NumPy's BLAS's cblas_?gemm that adds into its output, or None (show_config names it)
def _accumulating_gemm(dtype: np.dtype[Any]) -> Any: ...
