"""Property-based tests: random shapes, dtypes and options against invariants."""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import crossentropy as ce  # noqa: E402

import reference as ref  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)


@st.composite
def problems(draw):
    """A random call: logits, target and options."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n_classes = draw(st.sampled_from([1, 2, 3, 10, 63, 64, 65, 200]))
    kdim = draw(st.booleans())
    n = draw(st.integers(0, 9))
    shape, axis = ((n, n_classes, draw(st.integers(1, 3))), 1) if kdim else ((n, n_classes), -1)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.1, 3.0, 30.0]))
    logits = (rng.standard_normal(shape) * scale).astype(dtype)
    positions = shape[:1] + shape[2:] if kdim else shape[:1]
    kwargs = {"axis": axis, "reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    probabilities = draw(st.booleans())
    if probabilities:
        target = rng.random(shape).astype(dtype)
        target /= target.sum(axis=axis, keepdims=True)
    else:
        target = rng.integers(0, n_classes, positions)
        if draw(st.booleans()):
            target[rng.random(positions) < 0.3] = -100
    if draw(st.booleans()):
        kwargs["weight"] = rng.random(n_classes) + 0.1
    if draw(st.booleans()):
        kwargs["label_smoothing"] = draw(st.sampled_from([0.1, 0.5, 1.0]))
    if draw(st.booleans()):
        kwargs["sample_weight"] = rng.random(positions) + 0.1
    return logits, target, kwargs


def scaled_tolerance(dtype, magnitude=1.0):
    """Tolerance against the reference for logits of any scale up to 30 (looser
    than conftest.tolerance), the absolute part scaled by the loss's magnitude."""
    return ({"rtol": 1e-5, "atol": 1e-5 * magnitude} if dtype == np.float32
            else {"rtol": 1e-11, "atol": 1e-11 * magnitude})


@SETTINGS
@given(problems())
def test_loss_and_gradient_equal_the_reference(problem):
    logits, target, kwargs = problem
    loss, grad = ce.cross_entropy_and_grad(logits, target, **kwargs)
    expected_loss, expected_grad = ref.cross_entropy_full(logits, target, **kwargs)
    finite = np.isfinite(expected_loss)
    magnitude = 1.0 + float(np.max(np.abs(expected_loss), initial=0.0, where=finite))
    np.testing.assert_allclose(loss, expected_loss, **scaled_tolerance(logits.dtype, magnitude))
    np.testing.assert_allclose(grad, expected_grad, **scaled_tolerance(logits.dtype))


@SETTINGS
@given(problems())
def test_cross_entropy_equals_the_loss_of_cross_entropy_and_grad(problem):
    logits, target, kwargs = problem
    loss, _ = ce.cross_entropy_and_grad(logits, target, **kwargs)
    np.testing.assert_array_equal(ce.cross_entropy(logits, target, **kwargs), loss)


@SETTINGS
@given(problems())
def test_gradient_rows_sum_to_zero(problem):
    # sum_j (p_j * S - c_j) = 0 with S = sum_k c_k, for every target distribution c;
    # the rounding is relative to the terms that cancel, p * S and c (each sums to S).
    logits, target, kwargs = problem
    kwargs["reduction"] = "sum"
    _, grad = ce.cross_entropy_and_grad(logits, target, **kwargs)
    axis = kwargs["axis"]
    row_sums = np.moveaxis(grad, axis, -1).astype(np.float64).sum(axis=-1)
    logp = np.moveaxis(ref.log_softmax(logits, axis), axis, -1)
    c, _ = ref._target_distribution(logp, target, axis, -100, kwargs.get("label_smoothing", 0.0),
                                    kwargs.get("weight"))
    terms = 2 * c.sum(axis=-1) * kwargs.get("sample_weight", 1.0)
    eps = 1e-6 if logits.dtype == np.float32 else 1e-14
    assert np.all(np.abs(row_sums) <= eps * terms + 1e-30)


@SETTINGS
@given(problems(), st.floats(-50, 50))
def test_shifting_a_row_by_a_constant_changes_nothing(problem, shift):
    logits, target, kwargs = problem
    shift = logits.dtype.type(shift)
    loss, grad = ce.cross_entropy_and_grad(logits, target, **kwargs)
    loss2, grad2 = ce.cross_entropy_and_grad(logits + shift, target, **kwargs)
    # the shift is exact only to the rounding of logits + shift
    rounding = float(np.max(np.abs(logits), initial=0.0) + abs(shift)) * np.finfo(logits.dtype).eps
    magnitude = 1.0 + float(np.max(np.abs(loss), initial=0.0))
    np.testing.assert_allclose(loss2, loss, rtol=0, atol=8 * rounding * magnitude + 1e-30)
    np.testing.assert_allclose(grad2, grad, rtol=0, atol=8 * rounding + 1e-30)


@SETTINGS
@given(problems(), st.sampled_from([1, 2, 3]))
def test_thread_count_never_changes_a_bit(problem, n_threads):
    logits, target, kwargs = problem
    loss, grad = ce.cross_entropy_and_grad(logits, target, **kwargs)
    loss2, grad2 = ce.cross_entropy_and_grad(logits, target, n_threads=n_threads, **kwargs)
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(grad2, grad)
