from typing import Any

import torch
from torch import Tensor

__all__ = ["CrossEntropyLoss", "InputError", "InputTypeError", "LinearCrossEntropyLoss", "cross_entropy",
           "linear_cross_entropy", "vocab_parallel_cross_entropy"]

class InputError(ValueError, RuntimeError): ...
class InputTypeError(TypeError, RuntimeError): ...

def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average: Any = None, ignore_index: int = -100, reduce: Any = None,
                  reduction: str = "mean", label_smoothing: float = 0.0, *,
                  z_loss: float = 0.0, softcap: float | None = None,
                  sample_weight: Tensor | None = None, n_threads: int | None = None,
                  allow_retain_graph: bool = False) -> Tensor: ...
def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *,
                         linear_bias: Tensor | None = None, weight: Tensor | None = None,
                         ignore_index: int | None = -100, reduction: str = "mean",
                         label_smoothing: float = 0.0, z_loss: float = 0.0,
                         softcap: float | None = None, chunk_size: int | None = None,
                         n_threads: int | None = None,
                         allow_retain_graph: bool = False) -> Tensor: ...
def vocab_parallel_cross_entropy(local_logits: Tensor, target: Tensor, *, vocab_start: int,
                                 vocab_size: int | None = None, group: Any = None,
                                 weight: Tensor | None = None, ignore_index: int = -100,
                                 reduction: str = "mean", label_smoothing: float = 0.0,
                                 sample_weight: Tensor | None = None, z_loss: float = 0.0,
                                 softcap: float | None = None, n_threads: int | None = None,
                                 allow_retain_graph: bool = False) -> Tensor: ...

class CrossEntropyLoss(torch.nn.Module):
    weight: Tensor | None
    ignore_index: int
    reduction: str
    label_smoothing: float
    z_loss: float
    softcap: float | None
    n_threads: int | None
    allow_retain_graph: bool
    def __init__(self, weight: Tensor | None = None, size_average: Any = None,
                 ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, z_loss: float = 0.0,
                 softcap: float | None = None, n_threads: int | None = None,
                 allow_retain_graph: bool = False) -> None: ...
    def forward(self, input: Tensor, target: Tensor) -> Tensor: ...

class LinearCrossEntropyLoss(torch.nn.Module):
    weight: Tensor | None
    num_classes: int
    linear: torch.nn.Linear
    reduction: str
    ignore_index: int | None
    label_smoothing: float
    z_loss: float
    softcap: float | None
    chunk_size: int | None
    n_threads: int | None
    allow_retain_graph: bool
    def __init__(self, in_features: int, num_classes: int, *,
                 out_features: tuple[int, ...] = (), bias: bool = False, device: Any = None,
                 dtype: Any = None, reduction: str = "mean", weight: Tensor | None = None,
                 ignore_index: int | None = None, label_smoothing: float = 0.0,
                 z_loss: float = 0.0, softcap: float | None = None,
                 chunk_size: int | None = None, n_threads: int | None = None,
                 allow_retain_graph: bool = False) -> None: ...
    def forward(self, input: Tensor, target: Tensor) -> Tensor: ...
