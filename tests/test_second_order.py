"""cross_entropy_grad_hess and cross_entropy_hvp: the Hessian's diagonal and
its products with vectors, on every kernel path and with every option,
against finite differences of the float64 reference's gradient, the dense
Hessian, the reference's matrix-free formulas, and scikit-learn."""

import itertools

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _kernels

from conftest import (
    OPTION_GRID, PATHS, lm_id, option_case as case, option_id, shape_id, tolerance,
)
import reference as ref

SMALL = _kernels.SMALL_ROW_LEN
LM_OPTIONS = [{}, dict(z_loss=0.05), dict(softcap=2.5), dict(z_loss=0.02, softcap=4.0)]


def second_tolerance(dtype, lm):
    tol = tolerance(dtype)
    if np.dtype(dtype) == np.float32 and lm.get("softcap") is not None:
        tol = {"rtol": 4e-6, "atol": 4e-6}       # (the capped logits are rounded once more)
    return tol


# --- against finite differences of the reference's gradient -------------------------

def reference_gradient(logits, target, **kwargs):
    return ref.cross_entropy_full(logits, target, **kwargs)[1]


@pytest.mark.parametrize("lm", LM_OPTIONS, ids=lm_id)
@pytest.mark.parametrize("options", OPTION_GRID, ids=option_id)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dense_hessian_matches_finite_differences(rng, options, lm, reduction):
    """The whole Hessian, column by column from cross_entropy_hvp with unit
    vectors, is the central difference of the reference's gradient; its
    diagonal is grad_hess's."""
    logits, target, kwargs = case(rng, (3, 5), -1, options)
    kwargs.update(lm, reduction=reduction)
    eps = 1e-5
    n = logits.size
    dense_fd = np.empty((n, n))
    dense = np.empty((n, n))
    for k in range(n):
        e = np.zeros(n)
        e[k] = 1.0
        e = e.reshape(logits.shape)
        up = reference_gradient(logits + eps * e, target, **kwargs)
        down = reference_gradient(logits - eps * e, target, **kwargs)
        dense_fd[:, k] = ((up - down) / (2 * eps)).ravel()
        dense[:, k] = ce.cross_entropy_hvp(logits, target, e, **kwargs).ravel()
    np.testing.assert_allclose(dense, dense_fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dense, dense.T, rtol=1e-12, atol=1e-15)
    _, _, hess = ce.cross_entropy_grad_hess(logits, target, **kwargs)
    np.testing.assert_allclose(hess.ravel(), np.diag(dense_fd), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(hess.ravel(), np.diag(dense), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("lm", LM_OPTIONS, ids=lm_id)
@pytest.mark.parametrize("shape, axis", [((40, 7), -1), ((3, SMALL + 9), -1), ((2, 6, 3), 1)],
                         ids=shape_id)
def test_products_are_directional_derivatives_of_the_gradient(rng, shape, axis, lm):
    logits, target, kwargs = case(rng, shape, axis, (False, True, True, 0.1, True))
    kwargs.update(lm, axis=axis)
    v = rng.standard_normal(shape)
    eps = 1e-5
    fd = (reference_gradient(logits + eps * v, target, **kwargs)
          - reference_gradient(logits - eps * v, target, **kwargs)) / (2 * eps)
    np.testing.assert_allclose(ce.cross_entropy_hvp(logits, target, v, **kwargs), fd,
                               rtol=1e-6, atol=1e-9)


# --- every path, both dtypes, against the reference's formulas ------------------------

@pytest.mark.parametrize("lm", LM_OPTIONS, ids=lm_id)
@pytest.mark.parametrize("options", [(False, True, True, 0.0, True), (False, False, False, 0.2,
                                                                       False),
                                     (True, False, True, 0.1, True)], ids=option_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", PATHS, ids=shape_id)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_every_path_matches_the_reference(rng, shape, axis, dtype, options, lm, reduction):
    logits, target, kwargs = case(rng, shape, axis, options, dtype)
    kwargs.update(lm, axis=axis, reduction=reduction)
    v = rng.standard_normal(shape).astype(dtype)
    loss_ref, grad_ref = ref.cross_entropy_full(logits, target, **kwargs)
    diag_ref, hv_ref = ref.cross_entropy_second_order(logits, target, v, **kwargs)
    loss, grad, hess = ce.cross_entropy_grad_hess(logits, target, grad_scale=0.5, **kwargs)
    hv = ce.cross_entropy_hvp(logits, target, v, grad_scale=0.5, **kwargs)
    tol = second_tolerance(dtype, lm)
    np.testing.assert_allclose(loss, loss_ref, **tol)
    np.testing.assert_allclose(grad, 0.5 * grad_ref, **tol)
    np.testing.assert_allclose(hess, 0.5 * diag_ref, **tol)
    scale = np.abs(hv_ref).max(initial=1.0)       # (a product's entries sum terms of v)
    np.testing.assert_allclose(hv / scale, 0.5 * hv_ref / scale, **tol)
    assert grad.dtype == hess.dtype == hv.dtype == dtype
    assert grad.shape == hess.shape == hv.shape == logits.shape


@pytest.mark.parametrize("lm", LM_OPTIONS, ids=lm_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", PATHS, ids=shape_id)
def test_loss_and_gradient_are_cross_entropy_and_grads(rng, shape, axis, dtype, lm):
    """The same bits, on every path (the across-rows block of short rows
    writes the Hessian's diagonal too)."""
    logits, target, kwargs = case(rng, shape, axis, (False, True, True, 0.0, True), dtype)
    kwargs.update(lm, axis=axis, return_lse=True)
    loss, grad, hess, lse = ce.cross_entropy_grad_hess(logits, target, **kwargs)
    expected = ce.cross_entropy_and_grad(logits, target, **kwargs)
    for got, want in zip((loss, grad, lse), expected):
        np.testing.assert_array_equal(got, want)


def test_a_probability_near_one_keeps_its_digits():
    """p (1 - p) where p is 1 - 4e-9, which rounds to 1 in float32: the
    float64 sum of the row's exps gives 1 - p (to about 1e-16 absolute)."""
    logits = np.array([[0.0, -20.0, -20.0], [0.0, -20.0, -20.0]], np.float32)
    _, _, hess = ce.cross_entropy_grad_hess(logits, [0, 1], reduction="sum")
    q = 2 * np.exp(-20.0)
    np.testing.assert_allclose(hess[:, 0], (1 - q / (1 + q)) * q / (1 + q), rtol=1e-6)


@pytest.mark.parametrize("lm", [{}, dict(z_loss=0.01, softcap=5.0, label_smoothing=0.1)],
                         ids=["block", "options"])
def test_thread_count_and_layout_never_change_a_bit(rng, lm):
    logits, target, kwargs = case(rng, (300, 40, 6), 1, (False, True, True, 0.0, True))
    kwargs.update(lm, axis=1)
    v = rng.standard_normal(logits.shape)
    first = ce.cross_entropy_grad_hess(logits, target, n_threads=1, **kwargs)
    first_hv = ce.cross_entropy_hvp(logits, target, v, n_threads=1, **kwargs)
    fortran = np.asfortranarray(logits)
    for n_threads, z in itertools.product([2, 3], [logits, fortran]):
        got = ce.cross_entropy_grad_hess(z, target, n_threads=n_threads, **kwargs)
        for a, b in zip(got, first):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(
            ce.cross_entropy_hvp(z, target, np.asfortranarray(v), n_threads=n_threads,
                                 **kwargs), first_hv)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_is_the_float32_result_rounded(rng, half):
    dtype = np.dtype(half) if half == "float16" else np.dtype(pytest.importorskip(
        "ml_dtypes").bfloat16)
    logits = (rng.standard_normal((50, 30)) * 3).astype(dtype)
    target = rng.integers(0, 30, 50)
    v = rng.standard_normal((50, 30)).astype(dtype)
    wide, v32 = logits.astype(np.float32), v.astype(np.float32)
    loss, grad, hess = ce.cross_entropy_grad_hess(logits, target, z_loss=0.01)
    loss32, grad32, hess32 = ce.cross_entropy_grad_hess(wide, target, z_loss=0.01)
    assert grad.dtype == hess.dtype == dtype
    np.testing.assert_array_equal(grad, grad32.astype(dtype))
    np.testing.assert_array_equal(hess, hess32.astype(dtype))
    hv = ce.cross_entropy_hvp(logits, target, v, softcap=3.0)
    np.testing.assert_array_equal(hv, ce.cross_entropy_hvp(wide, target, v32,
                                                           softcap=3.0).astype(dtype))


def test_ignored_positions_and_all_ignored():
    logits = np.arange(12.0).reshape(3, 4)
    _, grad, hess = ce.cross_entropy_grad_hess(logits, [1, -100, 2])
    assert not grad[1].any() and not hess[1].any() and hess[0].all()
    _, grad, hess = ce.cross_entropy_grad_hess(logits, [-100] * 3)
    assert not grad.any() and not hess.any()
    assert not ce.cross_entropy_hvp(logits, [-100] * 3, np.ones((3, 4))).any()


def test_hand_computed_values():
    """Two classes with logits (0, log 3): p = (1/4, 3/4), so each diagonal
    entry is 3/16 and H v = 3/16 (v0 - v1, v1 - v0)."""
    logits = np.array([[0.0, np.log(3.0)]])
    _, grad, hess = ce.cross_entropy_grad_hess(logits, [1], reduction="sum")
    np.testing.assert_allclose(grad, [[0.25, -0.25]], rtol=1e-15)
    np.testing.assert_allclose(hess, [[3 / 16, 3 / 16]], rtol=1e-15)
    np.testing.assert_allclose(ce.cross_entropy_hvp(logits, [1], [[2.0, -1.0]],
                                                    reduction="sum"),
                               [[9 / 16, -9 / 16]], rtol=1e-15)


# --- outputs and errors --------------------------------------------------------------

def test_out_buffers_and_inplace(rng):
    logits = rng.standard_normal((20, 9))
    target = rng.integers(0, 9, 20)
    expected = ce.cross_entropy_grad_hess(logits, target)
    grad_out, hess_out = np.empty_like(logits), np.empty((9, 20)).T
    loss, grad, hess = ce.cross_entropy_grad_hess(logits, target, out=(grad_out, hess_out))
    assert grad is grad_out and hess is hess_out
    np.testing.assert_array_equal(hess, expected[2])
    _, grad, hess = ce.cross_entropy_grad_hess(logits, target, out=(None, hess_out))
    np.testing.assert_array_equal(grad, expected[1])
    z = logits.copy()
    _, grad, hess = ce.cross_entropy_grad_hess(z, target, inplace=True)
    assert grad is z
    np.testing.assert_array_equal(grad, expected[1])
    np.testing.assert_array_equal(hess, expected[2])
    v = rng.standard_normal(logits.shape)
    out = np.empty_like(logits)
    assert ce.cross_entropy_hvp(logits, target, v, out=out) is out
    np.testing.assert_array_equal(out, ce.cross_entropy_hvp(logits, target, v))


def test_v_is_converted_to_the_logits_dtype(rng):
    logits = rng.standard_normal((6, 5)).astype(np.float32)
    target = rng.integers(0, 5, 6)
    v = rng.integers(-3, 4, (6, 5))
    hv = ce.cross_entropy_hvp(logits, target, v)
    assert hv.dtype == np.float32
    np.testing.assert_array_equal(hv, ce.cross_entropy_hvp(logits, target, v.astype(np.float32)))


BAD = [
    (dict(out=[None, None]), TypeError, "out must be a tuple"),
    (dict(out=(None,)), TypeError, "of length 1"),
    (dict(out=(None, np.empty((4, 3)))), ValueError, r"out\[1\] must have shape"),
    (dict(out=(None, np.empty((4, 5), np.float32))), TypeError, r"out\[1\] must have dtype"),
    (dict(out=(np.empty((4, 6)), None)), ValueError, r"out\[0\] must have shape"),
    (dict(inplace=True, out=(np.empty((4, 5)), None)), ValueError, "not both"),
    (dict(z_loss=-1.0), ValueError, "z_loss"),
    (dict(softcap=0.0), ValueError, "softcap"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD, ids=lambda x: None)
def test_grad_hess_refuses_bad_arguments_before_writing(kwargs, error, match):
    logits = np.zeros((4, 5))
    for a in kwargs.get("out", ()) or ():
        if isinstance(a, np.ndarray):
            a[...] = 7
    with pytest.raises(error, match=match):
        ce.cross_entropy_grad_hess(logits, [0, 1, 2, 3], **kwargs)
    for a in kwargs.get("out", ()) or ():
        if isinstance(a, np.ndarray):
            assert (a == 7).all()


def test_outputs_may_not_overlap():
    logits = np.zeros((4, 5))
    buffer = np.full((4, 5), 7.0)
    with pytest.raises(ValueError, match=r"out\[0\] and out\[1\] overlap"):
        ce.cross_entropy_grad_hess(logits, [0, 1, 2, 3], out=(buffer, buffer))
    with pytest.raises(ValueError, match="overlaps logits"):
        ce.cross_entropy_grad_hess(logits, [0, 1, 2, 3], out=(None, logits))
    z = np.zeros((4, 5))
    with pytest.raises(ValueError, match="overlaps"):
        ce.cross_entropy_grad_hess(z, [0, 1, 2, 3], inplace=True, out=(None, z))
    v = np.ones((4, 5))
    with pytest.raises(ValueError, match="out overlaps v"):
        ce.cross_entropy_hvp(logits, [0, 1, 2, 3], v, out=v)
    assert (buffer == 7).all() and (v == 1).all() and not z.any()


@pytest.mark.parametrize("v, error, match", [
    (np.zeros((4, 4)), ValueError, r"v must have the logits' shape \(4, 5\), got \(4, 4\)"),
    (np.zeros(5), ValueError, "v must have the logits' shape"),
    (np.zeros((4, 5), complex), TypeError, "v must hold real numbers"),
    (np.zeros((4, 5), bool), TypeError, "v must hold real numbers"),
    ("abc", TypeError, "v must hold real numbers"),
], ids=["shape", "broadcast", "complex", "bool", "str"])
def test_hvp_refuses_bad_vectors(v, error, match):
    out = np.full((4, 5), 7.0)
    with pytest.raises(error, match=match):
        ce.cross_entropy_hvp(np.zeros((4, 5)), [0, 1, 2, 3], v, out=out)
    assert (out == 7).all()


def test_hvp_refuses_bad_targets_before_writing():
    out = np.full((4, 5), 7.0)
    with pytest.raises(IndexError):
        ce.cross_entropy_hvp(np.zeros((4, 5)), [0, 1, 2, 5], np.ones((4, 5)), out=out)
    assert (out == 7).all()


# --- scikit-learn -----------------------------------------------------------------------

def test_matches_scikit_learns_multinomial_gradient_hessian(rng):
    """scikit-learn's HalfMultinomialLoss (classes as float labels, the
    gradient and Hessian of the summed loss, per sample weighted) meets our
    reduction='sum' with sample weights; its loss is per sample."""
    loss_module = pytest.importorskip("sklearn._loss.loss")
    n, k = 500, 6
    raw = rng.standard_normal((n, k)) * 2
    y = rng.integers(0, k, n)
    sw = rng.random(n)
    sk = loss_module.HalfMultinomialLoss(n_classes=k)
    sk_grad, sk_hess = sk.gradient_hessian(y.astype(np.float64), raw, sample_weight=sw)
    sk_loss = sk.loss(y.astype(np.float64), raw, sample_weight=sw)
    loss, grad, hess = ce.cross_entropy_grad_hess(raw, y, sample_weight=sw, reduction="none")
    np.testing.assert_allclose(loss, sk_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, sk_grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hess, sk_hess, rtol=1e-12, atol=1e-15)
