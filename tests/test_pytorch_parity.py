"""Same results as torch.nn.functional.cross_entropy, loss and gradient, over a
randomised grid of options.  Runs where torch is installed (.ci/run installs
the CPU build), skipped elsewhere."""

import itertools

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _kernels

from conftest import random_case

torch = pytest.importorskip("torch")
F = torch.nn.functional

SMALL = _kernels.SMALL_ROW_LEN
SHAPES = [((13,), 0), ((16, 5), 1), ((7, SMALL + 36), 1), ((3, 6, 4), 1), ((2, 5, 3, 2), 1),
          ((2, 300, 5), 1)]
GRID = [
    case for case in itertools.product(
        [np.float32, np.float64],
        ["mean", "sum", "none"],
        [False, True],          # class weights
        [False, True],          # ignored positions
        [0.0, 0.25],            # label smoothing
        [False, True],          # probability targets
        range(len(SHAPES)),
    )
    if not (case[3] and case[5])
]


def torch_loss_and_grad(logits, target, reduction, **kwargs):
    z = torch.tensor(logits, requires_grad=True)
    t = torch.tensor(target if target.dtype.kind == "f" else target.astype(np.int64))
    if "weight" in kwargs:
        kwargs["weight"] = torch.tensor(kwargs["weight"], dtype=z.dtype)
    loss = F.cross_entropy(z, t, reduction=reduction, **kwargs)
    (loss.sum() if reduction == "none" else loss).backward()
    return loss.detach().numpy(), z.grad.numpy()


def case_id(case):
    dtype, reduction, weighted, ignore, eps, probabilities, shape_index = case
    shape = "x".join(map(str, SHAPES[shape_index][0]))
    flags = [name for name, on in (("weight", weighted), ("ignore", ignore),
                                   (f"smooth{eps}", eps), ("probs", probabilities)) if on]
    return "-".join([np.dtype(dtype).name, reduction, shape, *flags])


@pytest.mark.parametrize("seed, case", list(enumerate(GRID)), ids=[case_id(c) for c in GRID])
def test_same_loss_and_gradient_as_pytorch(seed, case):
    dtype, reduction, weighted, ignore, eps, probabilities, shape_index = case
    shape, _ = SHAPES[shape_index]
    axis = 0 if len(shape) == 1 else 1
    logits, target, kwargs = random_case(np.random.default_rng(seed), shape, axis, dtype=dtype,
                                         probabilities=probabilities, ignore=ignore,
                                         weighted=weighted)
    expected_loss, expected_grad = torch_loss_and_grad(logits, target, reduction,
                                                       label_smoothing=eps, **kwargs)
    loss, grad = ce.cross_entropy_and_grad(logits, target, reduction=reduction, label_smoothing=eps,
                                           axis=axis, **kwargs)
    rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-14)
    np.testing.assert_allclose(loss, expected_loss, rtol=rtol, atol=atol)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=atol)
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype


@pytest.mark.parametrize("case", ["all ignored", "zero target weights", "nan", "plus inf",
                                  "minus inf off target", "minus inf smoothed"])
def test_same_edge_behaviour_as_pytorch(case):
    logits = np.random.default_rng(3).standard_normal((3, 4))
    target = np.array([0, 1, 2])
    kwargs = {}
    if case == "all ignored":
        target[:] = -100
    elif case == "zero target weights":
        target[:] = 0
        kwargs["weight"] = np.array([0.0, 1.0, 1.0, 1.0])
    elif case == "nan":
        logits[1, 3] = np.nan
    elif case == "plus inf":
        logits[1, 3] = np.inf
    elif case == "minus inf off target":
        logits[1, 3] = -np.inf
    elif case == "minus inf smoothed":
        logits[1, 3] = -np.inf
        kwargs["label_smoothing"] = 0.1
    for reduction in ("mean", "sum", "none"):
        expected_loss, expected_grad = torch_loss_and_grad(logits, target, reduction, **kwargs)
        loss, grad = ce.cross_entropy_and_grad(logits, target, reduction=reduction, **kwargs)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15, equal_nan=True)


def test_pytorch_gives_nan_where_we_give_the_limit_for_zero_probability_at_minus_inf():
    logits = np.array([[0.0, -np.inf, 0.0]])
    y = np.array([[0.5, 0.0, 0.5]])
    expected_loss, _ = torch_loss_and_grad(logits, y, "mean")
    assert np.isnan(expected_loss)                    # the documented difference
    assert ce.cross_entropy(logits, y) == pytest.approx(np.log(2.0))


def test_pytorch_gives_nan_where_we_give_the_limit_for_a_zero_weight_class_at_minus_inf():
    logits = np.array([[0.0, -np.inf, 0.0]])
    weight = np.array([1.0, 0.0, 1.0])
    expected_loss, _ = torch_loss_and_grad(logits, np.array([0]), "mean", weight=weight,
                                           label_smoothing=0.1)
    assert np.isnan(expected_loss)                    # the documented difference
    loss = ce.cross_entropy(logits, [0], weight=weight, label_smoothing=0.1)
    # terms: 0.9 * 1 * log 2 + 0.1 / 3 * (1 * log 2 + 0 + 1 * log 2), over weight 1
    assert loss == pytest.approx(0.9 * np.log(2.0) + 0.2 / 3 * np.log(2.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [6, SMALL + 36, 3000])
def test_z_loss_and_softcap_as_torch_composes_them(dtype, m):
    # torch has neither option in F.cross_entropy: the same loss written with
    # torch ops (Gemma 2's tanh cap, PaLM's z-loss weighted per position)
    rng = np.random.default_rng(m)
    logits, target, kwargs = random_case(rng, (9, m), -1, dtype=dtype, ignore=True,
                                         weighted=True)
    z = torch.tensor(logits, requires_grad=True)
    w = torch.tensor(kwargs["weight"], dtype=z.dtype)
    t = torch.tensor(target)
    capped = 3.0 * torch.tanh(z / 3.0)
    lse = torch.logsumexp(capped, dim=1)
    kept = t != -100
    row_weight = torch.where(kept, w[torch.where(kept, t, 0)], 0.0)
    loss = (F.cross_entropy(capped, t, weight=w, reduction="sum")
            + 1e-2 * (row_weight * lse**2).sum()) / row_weight.sum()
    loss.backward()
    got, grad, got_lse = ce.cross_entropy_and_grad(logits, target, z_loss=1e-2, softcap=3.0,
                                                   return_lse=True, **kwargs)
    rtol, atol = (2e-5, 2e-6) if dtype == np.float32 else (1e-12, 1e-14)
    np.testing.assert_allclose(got, loss.item(), rtol=rtol)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(got_lse, np.where(target != -100, lse.detach().numpy(), 0.0),
                               rtol=rtol, atol=atol)
