"""PyTorch on the CPU: drop-ins for ``torch.nn.functional.cross_entropy`` and
``torch.nn.functional.linear_cross_entropy``, with autograd and
``torch.compile``.

Each is a ``torch.library.custom_op`` with a fake (meta) implementation and a
registered backward, so that ``torch.compile(fullgraph=True)`` sees one opaque
node and ``torch.library.opcheck`` passes.  The forward runs the NumPy API on
zero-copy views of the tensors and computes the gradient in the same fused
pass; it saves only that gradient (never the log-probabilities), and the
backward multiplies it in place by the upstream gradient.  For
``linear_cross_entropy(..., reduction="none")`` the backward recomputes the
chunks with the per-token upstream gradient folded in, so that no
(tokens x classes) array is ever held.

``vocab_parallel_cross_entropy``, for a vocabulary split across the ranks of
a process group, is a ``torch.autograd.Function`` instead (a process group
is no custom op's argument), with the same forward and backward.

Importing this module imports torch; ``import crossentropy`` does not.
"""

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

try:
    import torch
except ImportError as error:                    # pragma: no cover - torch is an extra
    raise ImportError("crossentropy.torch needs PyTorch: pip install 'crossentropy[torch]'") \
        from error

from . import _api, _linear, _shards
from ._validate import _check_integer, _check_real, _check_reduction

__all__ = [
    "CrossEntropyLoss",
    "InputError",
    "InputTypeError",
    "LinearCrossEntropyLoss",
    "cross_entropy",
    "linear_cross_entropy",
    "vocab_parallel_cross_entropy",
]

Tensor = torch.Tensor
_FLOATS = (torch.float32, torch.float64)
_HALVES = (torch.bfloat16, torch.float16)


class InputError(ValueError, RuntimeError):
    """A bad argument: a ValueError, and a RuntimeError as torch raises for
    most misuse, so that code written against either catches it."""


class InputTypeError(TypeError, RuntimeError):
    """An argument of the wrong type or dtype (TypeError and RuntimeError)."""


@contextlib.contextmanager
def _torch_errors() -> Iterator[None]:
    """The NumPy API's ValueError and TypeError, as errors torch code catches
    too (IndexError, for a target out of range, is torch's own)."""
    try:
        yield
    except IndexError:
        raise
    except TypeError as error:
        raise InputTypeError(str(error)) from None
    except ValueError as error:
        raise InputError(str(error)) from None


def _bfloat16() -> np.dtype:
    try:
        import ml_dtypes
    except ImportError:
        raise InputTypeError("bfloat16 tensors need ml_dtypes (NumPy's bfloat16): pip install "
                             "ml_dtypes, or 'crossentropy[torch]'") from None
    return np.dtype(ml_dtypes.bfloat16)


def _numpy(t: Tensor | None) -> np.ndarray | None:
    """A zero-copy NumPy view of a CPU tensor, whatever its strides (bfloat16
    as ml_dtypes' dtype)."""
    if t is None:
        return None
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_bfloat16())
    return t.resolve_conj().resolve_neg().numpy()


def _threads(n_threads: int) -> int:
    """An op's n_threads: 0 follows torch.get_num_threads(), read as it runs."""
    return n_threads or torch.get_num_threads()


def _check_tensor(t: Any, name: str, torch_function: str, *, floating: bool = False,
                  half: bool = False) -> None:
    if not isinstance(t, Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise InputError(f"{name} is on {t.device}: crossentropy.torch runs on the CPU; "
                         f"for {t.device.type} tensors use {torch_function}")
    if floating and t.dtype not in _FLOATS + (_HALVES if half else ()):
        kinds = "bfloat16, float16, float32 or float64" if half else "float32 or float64"
        raise InputTypeError(f"{name} must be {kinds}, got {t.dtype}")


def _check_no_grad(tensors: Sequence[tuple[Tensor | None, str]], function: str) -> None:
    if not torch.is_grad_enabled():
        return
    for t, name in tensors:
        if t is not None and t.requires_grad:
            raise InputError(f"{function} gives no gradient with respect to {name}, which "
                             f"requires grad: pass {name}.detach()")


def _check_loss_tensors(logits: Any, name: str, target: Any, weight: Any, sample_weight: Any,
                        torch_function: str, ours: str) -> None:
    """The tensors of a loss: the logits (`name`) floating, half precision
    included, with a class dimension; target and the weights CPU tensors
    that require no grad (`ours`: the function of crossentropy.torch)."""
    _check_tensor(logits, name, torch_function, floating=True, half=True)
    _check_tensor(target, "target", torch_function)
    for t, what in ((weight, "weight"), (sample_weight, "sample_weight")):
        if t is not None:
            _check_tensor(t, what, torch_function)
    _check_no_grad([(target, "target"), (weight, "weight"), (sample_weight, "sample_weight")],
                   f"crossentropy.torch.{ours}")
    if logits.dim() == 0:
        raise InputError(f"{name} must have at least one dimension (the classes), got a 0-d "
                         f"tensor")


def _refuse_deprecated(size_average: Any, reduce: Any) -> None:
    if size_average is not None or reduce is not None:
        raise InputTypeError("size_average and reduce are deprecated in torch and not taken "
                             "here: pass reduction='mean', 'sum' or 'none'")


def _check_options(ignore_index: Any, reduction: Any, label_smoothing: Any, z_loss: Any,
                   softcap: Any, n_threads: Any) -> tuple[int, str, float, float,
                                                          float | None, int]:
    """The scalar options, of the types the ops' schemas take, or the NumPy
    API's errors (the values' ranges are checked where the op runs).
    n_threads None becomes 0: torch.get_num_threads(), read when the op runs."""
    with _torch_errors():
        _check_reduction(reduction)
        ignore_index = _check_integer(ignore_index, "ignore_index")
        if not -(1 << 63) <= ignore_index < 1 << 63:
            raise ValueError(f"ignore_index must fit in 64 bits, got {ignore_index}")
        label_smoothing = _check_real(label_smoothing, "label_smoothing")
        z_loss = _check_real(z_loss, "z_loss")
        softcap = None if softcap is None else _check_real(softcap, "softcap")
        if n_threads is not None:
            n_threads = _check_integer(n_threads, "n_threads", "an integer or None")
            if n_threads == 0:
                raise ValueError("n_threads must not be 0 (None follows "
                                 "torch.get_num_threads())")
    return ignore_index, reduction, label_smoothing, z_loss, softcap, n_threads or 0


def _loss_tensor(loss: Any) -> Tensor:
    return _from_numpy(np.array(loss))


def _from_numpy(a: np.ndarray) -> Tensor:
    """A NumPy result as a contiguous tensor, without a copy where it is one.
    (Results come from NumPy's allocator, which asks for huge pages: a
    first write to fresh memory costs a third of what torch.empty's does.)"""
    if not a.flags.c_contiguous:
        a = a.copy()
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _tensor_or_empty(a: np.ndarray | None, like: Tensor) -> Tensor:
    """A gradient the op computed, or an empty tensor for one it was not
    asked for (an op's outputs are tensors)."""
    return like.new_empty((0,)) if a is None else _from_numpy(a)


def _no_double_backward() -> None:
    if torch.is_grad_enabled():
        raise RuntimeError("crossentropy.torch has no double backward (create_graph=True): "
                           "its backward scales a gradient the forward computed")


def _scaled_gradient(ctx: Any, name: str, upstream: Tensor) -> Tensor:
    """The gradient the forward saved as ctx.<name>, times the upstream
    gradient.  Without ctx.allow_retain_graph it is handed over once and
    scaled in place, or not at all for loss.backward()'s upstream of exactly
    1; with it, or while traced (no data-dependent branch, no mutation of an
    op's output there), a new tensor."""
    g = getattr(ctx, name)
    if g is None:
        raise RuntimeError("backward through crossentropy.torch ran twice: the forward's "
                           "gradient is scaled in place and gone; pass allow_retain_graph=True "
                           "for retain_graph=True or torch.autograd.gradcheck")
    if not ctx.allow_retain_graph:
        setattr(ctx, name, None)
    if ctx.allow_retain_graph or type(upstream) is not Tensor or torch.compiler.is_compiling():
        return g * upstream
    if upstream.dim() == 0 and upstream.item() == 1.0:
        return g
    return g.mul_(upstream)


# --- cross_entropy -----------------------------------------------------------------

@torch.library.custom_op("crossentropy::cross_entropy", mutates_args=())
def _cross_entropy_op(input: Tensor, target: Tensor, weight: Tensor | None,
                      sample_weight: Tensor | None, ignore_index: int, reduction: str,
                      label_smoothing: float, z_loss: float, softcap: float | None,
                      n_threads: int, compute_grad: bool,
                      allow_retain_graph: bool) -> tuple[Tensor, Tensor]:
    """(loss, gradient of the loss at an upstream gradient of 1, or an empty
    tensor without compute_grad)."""
    options = dict(weight=_numpy(weight), sample_weight=_numpy(sample_weight),
                   ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                   axis=1 if input.dim() > 1 else 0, n_threads=_threads(n_threads))
    with _torch_errors():
        if not compute_grad:
            loss, grad = _api.cross_entropy(_numpy(input), _numpy(target), **options), None
        else:
            loss, grad = _api.cross_entropy_and_grad(_numpy(input), _numpy(target), **options)
    return _loss_tensor(loss), _tensor_or_empty(grad, input)


@_cross_entropy_op.register_fake
def _(input, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss,
      softcap, n_threads, compute_grad, allow_retain_graph):
    positions = (input.shape[:1] + input.shape[2:]) if input.dim() > 1 else ()
    loss = input.new_empty(positions if reduction == "none" else ())
    return loss, input.new_empty(input.shape if compute_grad else (0,))


def _cross_entropy_setup(ctx, inputs, output):
    (input, _, _, _, _, reduction, _, _, _, _, compute_grad, allow_retain_graph) = inputs
    # (no zeros for the gradient output's own, unused, upstream gradient)
    ctx.set_materialize_grads(False)
    ctx.n_inputs = len(inputs)
    ctx.class_dim = 1 if input.dim() > 1 else 0
    ctx.per_position = reduction == "none"
    ctx.allow_retain_graph = allow_retain_graph
    ctx.grad = output[1].detach() if compute_grad else None


def _cross_entropy_backward(ctx, grad_loss, _):
    _no_double_backward()
    if grad_loss is None:                       # (an undefined upstream: zero)
        return (None,) * ctx.n_inputs
    upstream = grad_loss.unsqueeze(ctx.class_dim) if ctx.per_position else grad_loss
    return (_scaled_gradient(ctx, "grad", upstream),) + (None,) * (ctx.n_inputs - 1)


_cross_entropy_op.register_autograd(_cross_entropy_backward, setup_context=_cross_entropy_setup)


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average: Any = None, ignore_index: int = -100, reduce: Any = None,
                  reduction: str = "mean", label_smoothing: float = 0.0, *,
                  z_loss: float = 0.0, softcap: float | None = None,
                  sample_weight: Tensor | None = None, n_threads: int | None = None,
                  allow_retain_graph: bool = False) -> Tensor:
    """``torch.nn.functional.cross_entropy``, fused, for CPU tensors.

    Arguments as torch's (class dimension 1 of ``(N, C, d1, ...)``, or 0 of
    a ``(C,)`` input; class indices or probabilities), plus this package's
    ``z_loss``, ``softcap`` and ``sample_weight`` (see
    :func:`crossentropy.cross_entropy`).  The deprecated ``size_average``
    and ``reduce`` are refused.  float32, float64, bfloat16 (with
    ``ml_dtypes`` installed) and float16; half precision is computed in
    float32 with float64 sums.

    The forward computes the loss and its gradient in one pass and keeps
    only the gradient, which the backward scales in place by the upstream
    gradient: a second backward through the same graph raises unless
    ``allow_retain_graph=True`` (which costs one gradient-sized array per
    backward).  Gradients flow to ``input`` only.

    ``n_threads`` None follows ``torch.get_num_threads()``.

    Examples
    --------
    >>> import torch
    >>> from crossentropy.torch import cross_entropy
    >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]], requires_grad=True)
    >>> loss = cross_entropy(logits, torch.tensor([0, 2]))
    >>> loss.backward()
    >>> round(loss.item(), 5), logits.grad[1].tolist()
    (0.66996, [0.1666666716337204, 0.1666666716337204, -0.3333333432674408])
    """
    _refuse_deprecated(size_average, reduce)
    _check_loss_tensors(input, "input", target, weight, sample_weight,
                        "torch.nn.functional.cross_entropy", "cross_entropy")
    ignore_index, reduction, label_smoothing, z_loss, softcap, threads = _check_options(
        ignore_index, reduction, label_smoothing, z_loss, softcap, n_threads)
    compute_grad = torch.is_grad_enabled() and input.requires_grad
    loss, _ = _cross_entropy_op(input, target, weight, sample_weight, ignore_index, reduction,
                                label_smoothing, z_loss, softcap, threads, compute_grad,
                                bool(allow_retain_graph))
    return loss


# --- linear_cross_entropy ----------------------------------------------------------

def _linear_options(ignore_index, reduction, label_smoothing, z_loss, softcap, chunk_size,
                    n_threads):
    """_linear's keyword arguments from an op's (chunk_size and n_threads 0:
    the defaults)."""
    return dict(ignore_index=ignore_index, reduction=reduction,
                label_smoothing=label_smoothing, sample_weight=None, z_loss=z_loss,
                softcap=softcap, return_lse=False, chunk_size=chunk_size or None,
                n_threads=_threads(n_threads), grad_scale=1.0)


def _linear_result(grads, input):
    return tuple(_tensor_or_empty(g, input) for g in grads)


def _linear_fake_grads(input, linear_weight, linear_bias, wanted):
    shapes = (input.shape, linear_weight.shape,
              None if linear_bias is None else linear_bias.shape)
    return tuple(input.new_empty(shape if want and shape is not None else (0,))
                 for shape, want in zip(shapes, wanted))


@torch.library.custom_op("crossentropy::linear_cross_entropy", mutates_args=())
def _linear_op(input: Tensor, linear_weight: Tensor, target: Tensor,
               linear_bias: Tensor | None, weight: Tensor | None, ignore_index: int,
               reduction: str, label_smoothing: float, z_loss: float, softcap: float | None,
               chunk_size: int, n_threads: int, compute_input_grad: bool,
               compute_weight_grad: bool, compute_bias_grad: bool,
               allow_retain_graph: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, grad_input, grad_linear_weight, grad_linear_bias) for a reduction
    to one number, the gradients at an upstream gradient of 1 (empty tensors
    for those not asked for)."""
    options = _linear_options(ignore_index, reduction, label_smoothing, z_loss, softcap,
                              chunk_size, n_threads)
    wanted = (compute_input_grad, compute_weight_grad, compute_bias_grad)
    with _torch_errors():
        result = _linear._linear(_numpy(input), _numpy(linear_weight), _numpy(target),
                                 linear_bias=_numpy(linear_bias), weight=_numpy(weight),
                                 gradient=any(wanted), wanted=wanted, **options)
    loss, *grads = result if any(wanted) else (result, None, None, None)
    return (_loss_tensor(loss),) + _linear_result(grads, input)


@_linear_op.register_fake
def _(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
      label_smoothing, z_loss, softcap, chunk_size, n_threads, compute_input_grad,
      compute_weight_grad, compute_bias_grad, allow_retain_graph):
    wanted = (compute_input_grad, compute_weight_grad, compute_bias_grad)
    return ((input.new_empty(()),)
            + _linear_fake_grads(input, linear_weight, linear_bias, wanted))


_LINEAR_GRADS = ("grad_h", "grad_w", "grad_b")


def _linear_setup(ctx, inputs, output):
    *_, compute_input_grad, compute_weight_grad, compute_bias_grad, allow_retain_graph = inputs
    ctx.set_materialize_grads(False)
    ctx.n_inputs = len(inputs)
    ctx.allow_retain_graph = allow_retain_graph
    for name, g, wanted in zip(_LINEAR_GRADS, output[1:],
                               (compute_input_grad, compute_weight_grad, compute_bias_grad)):
        setattr(ctx, name, g.detach() if wanted else None)


def _linear_backward(ctx, grad_loss, *_):
    _no_double_backward()
    grads = [None if grad_loss is None or getattr(ctx, name) is None
             else _scaled_gradient(ctx, name, grad_loss) for name in _LINEAR_GRADS]
    grad_h, grad_w, grad_b = grads
    return (grad_h, grad_w, None, grad_b) + (None,) * (ctx.n_inputs - 4)


_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup)


@torch.library.custom_op("crossentropy::linear_cross_entropy_none", mutates_args=())
def _linear_none_op(input: Tensor, linear_weight: Tensor, target: Tensor,
                    linear_bias: Tensor | None, weight: Tensor | None, ignore_index: int,
                    label_smoothing: float, z_loss: float, softcap: float | None,
                    chunk_size: int, n_threads: int) -> Tensor:
    """The per-token losses; the backward recomputes the chunks."""
    options = _linear_options(ignore_index, "none", label_smoothing, z_loss, softcap,
                              chunk_size, n_threads)
    with _torch_errors():
        loss = _linear._linear(_numpy(input), _numpy(linear_weight), _numpy(target),
                               linear_bias=_numpy(linear_bias), weight=_numpy(weight),
                               gradient=False, **options)
    return _loss_tensor(loss)


@_linear_none_op.register_fake
def _(input, linear_weight, target, linear_bias, weight, ignore_index, label_smoothing, z_loss,
      softcap, chunk_size, n_threads):
    return input.new_empty(input.shape[:-1])


@torch.library.custom_op("crossentropy::linear_cross_entropy_none_backward", mutates_args=())
def _linear_none_backward_op(grad_loss: Tensor, input: Tensor, linear_weight: Tensor,
                             target: Tensor, linear_bias: Tensor | None, weight: Tensor | None,
                             ignore_index: int, label_smoothing: float, z_loss: float,
                             softcap: float | None, chunk_size: int, n_threads: int,
                             compute_input_grad: bool, compute_weight_grad: bool,
                             compute_bias_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients of sum(grad_loss * loss) asked for, the chunks recomputed
    with each token's upstream gradient folded into its row of the kernel."""
    options = _linear_options(ignore_index, "none", label_smoothing, z_loss, softcap,
                              chunk_size, n_threads)
    _, *grads = _linear._linear(
        _numpy(input), _numpy(linear_weight), _numpy(target), linear_bias=_numpy(linear_bias),
        weight=_numpy(weight), gradient=True, row_scale=_numpy(grad_loss),
        wanted=(compute_input_grad, compute_weight_grad, compute_bias_grad), **options)
    return _linear_result(grads, input)


@_linear_none_backward_op.register_fake
def _(grad_loss, input, linear_weight, target, linear_bias, weight, ignore_index,
      label_smoothing, z_loss, softcap, chunk_size, n_threads, compute_input_grad,
      compute_weight_grad, compute_bias_grad):
    return _linear_fake_grads(input, linear_weight, linear_bias,
                              (compute_input_grad, compute_weight_grad, compute_bias_grad))


def _linear_none_setup(ctx, inputs, output):
    input, linear_weight, target, linear_bias, weight, *options = inputs
    ctx.save_for_backward(input.detach(), linear_weight.detach(), target,
                          None if linear_bias is None else linear_bias.detach(),
                          None if weight is None else weight.detach())
    ctx.n_inputs = len(inputs)
    ctx.options = options


def _linear_none_backward(ctx, grad_loss):
    _no_double_backward()
    input, linear_weight, target, linear_bias, weight = ctx.saved_tensors
    needs = ctx.needs_input_grad
    wanted = (needs[0], needs[1], linear_bias is not None and needs[3])
    if not any(wanted):
        return (None,) * ctx.n_inputs
    grads = _linear_none_backward_op(grad_loss.to(torch.float64), input, linear_weight, target,
                                     linear_bias, weight, *ctx.options, *wanted)
    grad_h, grad_w, grad_b = (g if want else None for g, want in zip(grads, wanted))
    return (grad_h, grad_w, None, grad_b) + (None,) * (ctx.n_inputs - 4)


_linear_none_op.register_autograd(_linear_none_backward, setup_context=_linear_none_setup)


def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *,
                         linear_bias: Tensor | None = None, weight: Tensor | None = None,
                         ignore_index: int | None = -100, reduction: str = "mean",
                         label_smoothing: float = 0.0, z_loss: float = 0.0,
                         softcap: float | None = None, chunk_size: int | None = None,
                         n_threads: int | None = None,
                         allow_retain_graph: bool = False) -> Tensor:
    """``torch.nn.functional.linear_cross_entropy``, for CPU tensors, never
    holding the (tokens x classes) logits.

    The loss of ``cross_entropy(input @ linear_weight.T + linear_bias,
    target)``, ``chunk_size`` tokens at a time (see
    :func:`crossentropy.linear_cross_entropy`), with gradients for
    ``input``, ``linear_weight`` and ``linear_bias`` (only those that
    require grad are computed).  For ``'mean'`` and ``'sum'`` the forward
    computes the gradients in the same pass and the backward scales them in
    place (``allow_retain_graph`` as in :func:`cross_entropy`); for
    ``'none'`` the backward recomputes the chunks with each token's upstream
    gradient.  Class-index targets only.  Half precision (bfloat16, float16)
    is computed in float32: the weight is read into float32 once, and its
    gradient summed in float32, both (classes x features).

    Examples
    --------
    >>> import torch
    >>> from crossentropy.torch import linear_cross_entropy
    >>> h = torch.ones(2, 3, requires_grad=True)
    >>> w = torch.zeros(4, 3, requires_grad=True)
    >>> linear_cross_entropy(h, w, torch.tensor([1, 2])).backward()
    >>> w.grad[0].tolist()
    [0.25, 0.25, 0.25]
    """
    function = "torch.nn.functional.linear_cross_entropy"
    _check_tensor(input, "input", function, floating=True, half=True)
    _check_tensor(linear_weight, "linear_weight", function, floating=True, half=True)
    _check_tensor(target, "target", function)
    for t, name in ((linear_bias, "linear_bias"), (weight, "weight")):
        if t is not None:
            _check_tensor(t, name, function)
    _check_no_grad([(target, "target"), (weight, "weight")],
                   "crossentropy.torch.linear_cross_entropy")
    ignore_index, reduction, label_smoothing, z_loss, softcap, threads = _check_options(
        -100 if ignore_index is None else ignore_index, reduction, label_smoothing, z_loss,
        softcap, n_threads)
    if chunk_size is not None:
        with _torch_errors():
            chunk_size = _check_integer(chunk_size, "chunk_size", "a positive integer or None")
        if chunk_size <= 0:
            raise InputError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    args = (input, linear_weight, target, linear_bias, weight, ignore_index)
    tail = (label_smoothing, z_loss, softcap, chunk_size or 0, threads)
    if reduction == "none":
        return _linear_none_op(*args, *tail)
    grad_enabled = torch.is_grad_enabled()
    wanted = [grad_enabled and t is not None and t.requires_grad
              for t in (input, linear_weight, linear_bias)]
    return _linear_op(*args, reduction, *tail, *wanted, bool(allow_retain_graph))[0]


# --- vocab_parallel_cross_entropy --------------------------------------------------

# What every rank sends first, as float64 (exact for these integers): whether
# its own checks passed, its slice's first class and width, its number of
# positions, and checksums of the target and the two weights, which must be
# the same on every rank.
_HEADER = ("ok", "vocab_start", "width", "positions", "target", "weight", "sample_weight")


def _gather(packed: np.ndarray, group: Any) -> list[np.ndarray]:
    import torch.distributed as dist

    t = torch.from_numpy(packed)
    gathered = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, t, group=group)
    return [g.numpy() for g in gathered]


def _checksum(t: Tensor | None) -> float:
    import zlib
    return -1.0 if t is None else float(zlib.crc32(np.ascontiguousarray(_numpy(t)).tobytes()))


def _agree(gathered: list[np.ndarray], error: BaseException | None) -> None:
    """Raise on every rank if one failed: its own error there, a pointer to
    it elsewhere."""
    if error is not None:
        raise error
    failed = [rank for rank, g in enumerate(gathered) if g[0] != 1.0]
    if failed:
        raise InputError(f"vocab_parallel_cross_entropy failed on rank(s) {failed}: see the "
                         f"error raised there")


def _vocabulary(headers: list[np.ndarray]) -> int:
    """The vocabulary the ranks' slices [start, start + width) make: they
    must tile [0, V) (in any rank order)."""
    start, width = _HEADER.index("vocab_start"), _HEADER.index("width")
    slices = sorted((int(h[start]), int(h[width])) for h in headers)
    end = 0
    for a, n in slices:
        if a != end:
            raise InputError(f"the ranks' vocabulary slices (vocab_start, width) {slices} do "
                             f"not tile [0, V): a slice should start at {end}, not {a}")
        end = a + n
    return end


class _VocabParallel(torch.autograd.Function):
    """The loss from every rank's partials, gathered once; the gradient of
    the rank's own slice computed in the forward and scaled in the backward,
    as the custom ops do."""

    @staticmethod
    def forward(ctx: Any, local_logits: Tensor, target: Tensor, weight: Tensor | None,
                sample_weight: Tensor | None, options: dict[str, Any],
                compute_grad: bool) -> Tensor:
        z, t = _numpy(local_logits), _numpy(target)
        w, sw = _numpy(weight), _numpy(sample_weight)
        start, vocab_size = options["vocab_start"], options["vocab_size"]
        class_dim = 1 if local_logits.dim() > 1 else 0
        shard = dict(weight=w, ignore_index=options["ignore_index"],
                     label_smoothing=options["label_smoothing"], softcap=options["softcap"],
                     axis=class_dim, n_threads=_threads(options["n_threads"]))
        packed = np.zeros(1 + _api._PARTS * options["positions"])
        error = None
        try:
            with _torch_errors():
                parts = _shards.cross_entropy_partials(z, t, class_start=start,
                                                       n_classes=vocab_size, **shard)
            packed[0] = 1.0
            packed[1:] = parts.reshape(-1)
        except Exception as caught:              # (raised once the others know)
            error = caught
        gathered = _gather(packed, options["group"])
        _agree(gathered, error)
        totals = _shards.combine_partials([g[1:].reshape(parts.shape) for g in gathered])
        with _torch_errors():
            loss = _shards.cross_entropy_from_partials(
                totals, t, n_classes=vocab_size, weight=w, ignore_index=options["ignore_index"],
                reduction=options["reduction"], sample_weight=sw, z_loss=options["z_loss"],
                dtype=z.dtype)
            grad = None
            if compute_grad:
                grad = _shards.cross_entropy_shard_grad(
                    z, t, totals, class_start=start, n_classes=vocab_size,
                    reduction=options["reduction"], sample_weight=sw, z_loss=options["z_loss"],
                    **shard)
        ctx.class_dim = class_dim
        ctx.per_position = options["reduction"] == "none"
        ctx.allow_retain_graph = options["allow_retain_graph"]
        ctx.grad = None if grad is None else _from_numpy(grad)
        return _loss_tensor(loss)

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        _no_double_backward()
        upstream = grad_loss.unsqueeze(ctx.class_dim) if ctx.per_position else grad_loss
        return (_scaled_gradient(ctx, "grad", upstream),) + (None,) * 5


def _vocab_parallel_checks(local_logits: Any, target: Any, weight: Any, sample_weight: Any,
                           vocab_start: Any, vocab_size: Any,
                           options: tuple[Any, ...]) -> tuple[Any, ...]:
    """This rank's own checks: the options as _check_options gives them, and
    the header it sends."""
    _check_loss_tensors(local_logits, "local_logits", target, weight, sample_weight,
                        "megatron.core.tensor_parallel.vocab_parallel_cross_entropy",
                        "vocab_parallel_cross_entropy")
    if target.is_floating_point():
        raise InputTypeError("vocab_parallel_cross_entropy takes class-index targets: a rank's "
                             "class probabilities would be its slice of them, not target")
    checked = _check_options(*options)
    with _torch_errors():
        vocab_start = _check_integer(vocab_start, "vocab_start")
        if vocab_size is not None:
            _check_integer(vocab_size, "vocab_size")
    width = local_logits.shape[1 if local_logits.dim() > 1 else 0]
    header = dict(ok=1.0, vocab_start=vocab_start, width=width, positions=target.numel(),
                  target=_checksum(target), weight=_checksum(weight),
                  sample_weight=_checksum(sample_weight))
    return checked, np.array([header[name] for name in _HEADER], np.float64)


def vocab_parallel_cross_entropy(local_logits: Tensor, target: Tensor, *, vocab_start: int,
                                 vocab_size: int | None = None, group: Any = None,
                                 weight: Tensor | None = None, ignore_index: int = -100,
                                 reduction: str = "mean", label_smoothing: float = 0.0,
                                 sample_weight: Tensor | None = None, z_loss: float = 0.0,
                                 softcap: float | None = None, n_threads: int | None = None,
                                 allow_retain_graph: bool = False) -> Tensor:
    """Cross-entropy over a vocabulary split across the ranks of a process
    group (tensor parallelism, as Megatron-LM's ``vocab_parallel_cross_entropy``).

    Each rank passes its slice of the logits, the classes
    ``[vocab_start, vocab_start + C_local)`` along dimension 1 of
    ``(N, C_local, d1, ...)`` (or 0 of a ``(C_local,)`` input), and the same
    ``target`` (whole-vocabulary class indices), ``weight`` (one per class
    of the whole vocabulary) and ``sample_weight`` as the others.  Every
    rank gets the loss of the whole vocabulary, and backward gives each the
    gradient of its own slice: both the single-process
    :func:`cross_entropy`'s up to float64 rounding, label smoothing and
    class weights exact (not Megatron's per-partition smoothing).  Options
    as :func:`cross_entropy`; class-index targets only.

    Each rank makes one pass over its logits for its rows' partials (four
    float64 numbers each) and, with a gradient, one pass for its slice, in
    the forward, which backward scales.  Two ``all_gather`` calls: a header
    of seven numbers (the rank's slice, whether its checks passed, checksums
    of ``target``, ``weight`` and ``sample_weight``), so that ranks that
    disagree or fail all raise rather than wait or go wrong, then the
    partials.  The slices must tile ``[0, V)``; ``vocab_size``, when given,
    must be V.  ``group`` None is the default process group
    (``torch.distributed``, any backend that gathers CPU tensors: gloo).

    Examples
    --------
    On each of two ranks (``torch.distributed.init_process_group("gloo", ...)``),
    with ``logits`` the whole ``(N, V)`` and ``rank`` 0 or 1::

        half = V // 2
        local = logits[:, rank * half:(rank + 1) * half].requires_grad_()
        loss = vocab_parallel_cross_entropy(local, target, vocab_start=rank * half)
        loss.backward()     # local.grad: this rank's slice of the gradient
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise InputError("vocab_parallel_cross_entropy needs torch.distributed's process "
                         "group: call torch.distributed.init_process_group first")
    header = np.zeros(len(_HEADER))
    error = checked = None
    try:
        checked, header = _vocab_parallel_checks(
            local_logits, target, weight, sample_weight, vocab_start, vocab_size,
            (ignore_index, reduction, label_smoothing, z_loss, softcap, n_threads))
    except Exception as caught:                  # (raised once the others know)
        error = caught
    headers = _gather(header, group)
    _agree(headers, error)
    for name, what in (("positions", "numbers of positions"), ("target", "targets"),
                       ("weight", "class weights"), ("sample_weight", "sample weights")):
        k = _HEADER.index(name)
        if len({h[k] for h in headers}) > 1:
            raise InputError(f"the ranks pass different {what}: every rank must pass the same "
                             f"target, weight and sample_weight")
    made = _vocabulary(headers)
    if vocab_size is not None and made != vocab_size:
        raise InputError(f"the ranks' vocabulary slices make {made} classes, but vocab_size "
                         f"is {vocab_size}")
    ignore_index, reduction, label_smoothing, z_loss, softcap, threads = checked
    options = dict(vocab_start=int(header[_HEADER.index("vocab_start")]), vocab_size=made,
                   positions=int(header[_HEADER.index("positions")]), group=group,
                   ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                   n_threads=threads, allow_retain_graph=bool(allow_retain_graph))
    compute_grad = torch.is_grad_enabled() and local_logits.requires_grad
    loss: Tensor = _VocabParallel.apply(local_logits, target, weight, sample_weight, options,
                                        compute_grad)
    return loss


# --- modules -----------------------------------------------------------------------

class CrossEntropyLoss(torch.nn.Module):
    """``torch.nn.CrossEntropyLoss`` over :func:`cross_entropy`.

    The same constructor, plus ``z_loss``, ``softcap``, ``n_threads`` and
    ``allow_retain_graph``; ``weight`` is a buffer, as torch's.
    """

    def __init__(self, weight: Tensor | None = None, size_average: Any = None,
                 ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, z_loss: float = 0.0,
                 softcap: float | None = None, n_threads: int | None = None,
                 allow_retain_graph: bool = False) -> None:
        super().__init__()
        _refuse_deprecated(size_average, reduce)
        self.register_buffer("weight", weight)
        self.weight: Tensor | None
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.n_threads = n_threads
        self.allow_retain_graph = allow_retain_graph

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing,
                             z_loss=self.z_loss, softcap=self.softcap, n_threads=self.n_threads,
                             allow_retain_graph=self.allow_retain_graph)

    def extra_repr(self) -> str:
        return (f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, z_loss={self.z_loss}, "
                f"softcap={self.softcap}")


class LinearCrossEntropyLoss(torch.nn.Module):
    """``torch.nn.LinearCrossEntropyLoss`` over :func:`linear_cross_entropy`:
    a ``torch.nn.Linear(in_features, num_classes, bias=bias)`` as
    ``self.linear``, then the loss, without holding the logits.

    torch's constructor (``out_features`` must be ``()``: K-dimensional
    logits are refused), plus ``z_loss``, ``softcap``, ``chunk_size``,
    ``n_threads`` and ``allow_retain_graph``.
    """

    def __init__(self, in_features: int, num_classes: int, *,
                 out_features: tuple[int, ...] = (), bias: bool = False, device: Any = None,
                 dtype: Any = None, reduction: str = "mean", weight: Tensor | None = None,
                 ignore_index: int | None = None, label_smoothing: float = 0.0,
                 z_loss: float = 0.0, softcap: float | None = None,
                 chunk_size: int | None = None, n_threads: int | None = None,
                 allow_retain_graph: bool = False) -> None:
        super().__init__()
        if tuple(out_features) != ():
            raise InputError(f"out_features must be () (one class axis), got {out_features}")
        if weight is not None and tuple(weight.shape) != (num_classes,):
            raise InputError(f"expected weight shape to be {(num_classes,)}, got "
                             f"{tuple(weight.shape)}")
        self.register_buffer("weight", weight)
        self.weight: Tensor | None
        self.num_classes = num_classes
        self.linear = torch.nn.Linear(in_features, num_classes, bias=bias, device=device,
                                      dtype=dtype)
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.chunk_size = chunk_size
        self.n_threads = n_threads
        self.allow_retain_graph = allow_retain_graph

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return linear_cross_entropy(
            input, self.linear.weight, target, linear_bias=self.linear.bias,
            weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
            label_smoothing=self.label_smoothing, z_loss=self.z_loss, softcap=self.softcap,
            chunk_size=self.chunk_size, n_threads=self.n_threads,
            allow_retain_graph=self.allow_retain_graph)

    def extra_repr(self) -> str:
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"bias={self.linear.bias is not None}, reduction={self.reduction}, "
                f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, "
                f"z_loss={self.z_loss}, softcap={self.softcap}")
