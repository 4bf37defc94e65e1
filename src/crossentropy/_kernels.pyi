from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

class Mode(IntEnum):
    LOSS = 0
    LOSS_GRAD = 1
    LOGSUMEXP = 2
    SOFTMAX = 3
    LOG_SOFTMAX = 4
    LOSS_GRAD_HESS = 5
    HVP = 6
    PARTIALS = 7
    SHARD_GRAD = 8

SMALL_ROW_LEN: int
FAST_ROWS_LEN: int
SPLIT_MIN_CLASSES_LEN: int
SPLIT_MAX_ROWS_LEN: int
RUNS_MIN_LEN: int
FORK_HANDLERS: bool
__test__: dict[str, str]

def max_threads() -> int: ...
def team_size(n: int) -> int: ...
def _release_pool_before_fork(on: bool) -> None: ...
def dispatch_target() -> str: ...
def dispatch_levels() -> list[str]: ...
def build_config() -> dict[str, Any]: ...
def check_targets(
    target: npt.NDArray[np.intp],
    n_classes: int,
    ignore_index: int,
    weight: npt.NDArray[np.float64] | None,
    sample_weight: npt.NDArray[np.float64] | None,
) -> tuple[int, int, float]: ...
def needs_scratch(z: Any, out: Any, y: Any) -> bool: ...
def run(
    *,
    mode: int,
    z: npt.NDArray[np.floating[Any]],
    out: npt.NDArray[np.floating[Any]] | None,
    y: npt.NDArray[np.floating[Any]] | None,
    target: npt.NDArray[np.intp] | None,
    sample_weight: npt.NDArray[np.float64] | None,
    row_value: npt.NDArray[np.floating[Any]] | None,
    weight: npt.NDArray[np.float64] | None,
    weight_total: float,
    ignore_index: int,
    label_smoothing: float,
    grad_scale: float,
    chunk_sums: npt.NDArray[np.float64],
    rows_per_chunk: int,
    n_threads: int,
    lse: npt.NDArray[np.floating[Any]] | None,
    z_loss: float,
    softcap: float,
    inf_row_lse: bool,
    hess: npt.NDArray[np.floating[Any]] | None,
    vec: npt.NDArray[np.floating[Any]] | None,
    part: npt.NDArray[np.float64] | None,
    offset: int,
    n_all: int,
) -> None: ...
def exp(x: npt.NDArray[np.floating[Any]], out: npt.NDArray[np.floating[Any]]) -> None: ...
def widen(bits: npt.NDArray[np.uint16], out: npt.NDArray[np.float32], bfloat16: bool,
          n_threads: int = 1) -> None: ...
def narrow(x: npt.NDArray[np.float32], bits: npt.NDArray[np.uint16], bfloat16: bool,
           n_threads: int = 1) -> None: ...
