from typing import Any

import numpy.typing as npt

__all__ = ["cross_entropy", "cross_entropy_and_grad"]

# (dask arrays: dask ships no types for them)
_DaskArray = Any

def cross_entropy(
    logits: Any,
    target: Any,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    axis: int = -1,
    n_threads: int | None = None,
) -> _DaskArray: ...
def cross_entropy_and_grad(
    logits: Any,
    target: Any,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    grad_scale: float = 1.0,
    axis: int = -1,
    n_threads: int | None = None,
) -> tuple[_DaskArray, ...]: ...
