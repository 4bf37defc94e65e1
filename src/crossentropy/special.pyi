from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

__all__ = ["log_softmax", "logsumexp", "softmax"]

_Axis = int | tuple[int, ...] | None
_Float = np.float16 | np.float32 | np.float64
_FloatArray = npt.NDArray[np.floating[Any]]

@overload
def logsumexp(
    a: npt.ArrayLike,
    axis: _Axis = None,
    b: npt.ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: Literal[False] = False,
    *,
    n_threads: int | None = None,
) -> _Float | _FloatArray: ...
@overload
def logsumexp(
    a: npt.ArrayLike,
    axis: _Axis = None,
    b: npt.ArrayLike | None = None,
    keepdims: bool = False,
    *,
    return_sign: Literal[True],
    n_threads: int | None = None,
) -> tuple[_Float | _FloatArray, _Float | _FloatArray]: ...
@overload
def logsumexp(
    a: npt.ArrayLike,
    axis: _Axis,
    b: npt.ArrayLike | None,
    keepdims: bool,
    return_sign: Literal[True],
    *,
    n_threads: int | None = None,
) -> tuple[_Float | _FloatArray, _Float | _FloatArray]: ...
def softmax(
    x: npt.ArrayLike, axis: _Axis = None, *, n_threads: int | None = None,
    out: _FloatArray | None = None,
) -> _FloatArray: ...
def log_softmax(
    x: npt.ArrayLike, axis: _Axis = None, *, n_threads: int | None = None,
    out: _FloatArray | None = None,
) -> _FloatArray: ...
