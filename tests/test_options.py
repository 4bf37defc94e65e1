"""weight, ignore_index, label_smoothing, probability targets, sample_weight,
grad_scale and K-dimensional input."""

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _kernels

from conftest import OPTION_GRID, option_id, random_case, shape_id, tolerance
import reference as ref

SMALL = _kernels.SMALL_ROW_LEN
LOG2 = np.log(2.0)


# --- hand-computed cases ---------------------------------------------------------

L2, L3, L4 = np.log(2.0), np.log(3.0), np.log(4.0)
Q = np.log(3.0)             # logits (0, Q) give p = (1/4, 3/4)

# (id, logits, target, options, loss, gradient), each worked out by hand from
# loss = -sum_j c_j log p_j and gradient = (p * sum_j c_j - c) * sample weight,
# over the mean's denominator (sum of weight[target] * sample_weight)
SPECIFIC_VALUES = [
    ("uniform", [[0, 0]], [0], {}, L2, [[-1 / 2, 1 / 2]]),
    ("confident", [[0, Q]], [1], {}, L4 - L3, [[1 / 4, -1 / 4]]),
    ("class weights, mean", [[0, 0], [0, 0]], [0, 1], {"weight": [1, 3]}, L2,
     [[-1 / 8, 1 / 8], [3 / 8, -3 / 8]]),
    ("class weights, sum", [[0, 0], [0, 0]], [0, 1], {"weight": [1, 3], "reduction": "sum"},
     4 * L2, [[-1 / 2, 1 / 2], [3 / 2, -3 / 2]]),
    ("class weights, none", [[0, 0], [0, 0]], [0, 1], {"weight": [1, 3], "reduction": "none"},
     [L2, 3 * L2], [[-1 / 2, 1 / 2], [3 / 2, -3 / 2]]),
    ("ignored position", [[0, Q], [5, -5]], [1, -100], {}, L4 - L3, [[1 / 4, -1 / 4], [0, 0]]),
    ("ignore_index 0", [[0, Q], [5, -5]], [1, 0], {"ignore_index": 0}, L4 - L3,
     [[1 / 4, -1 / 4], [0, 0]]),
    ("smoothing", [[0, Q]], [1], {"label_smoothing": 0.5},      # c = (1/4, 3/4) = p
     0.25 * L4 + 0.75 * (L4 - L3), [[0, 0]]),
    ("smoothing with class weights", [[0, Q]], [1],             # c = (2 * 0.1, 1 * 0.9)
     {"label_smoothing": 0.2, "weight": [2, 1]}, 0.2 * L4 + 0.9 * (L4 - L3),
     [[0.25 * 1.1 - 0.2, 0.75 * 1.1 - 0.9]]),
    ("probabilities", [[0, Q]], [[0.5, 0.5]], {}, L4 - 0.5 * L3, [[-1 / 4, 1 / 4]]),
    ("probabilities, smoothing", [[0, Q]], [[1.0, 0.0]], {"label_smoothing": 0.5},
     0.75 * L4 + 0.25 * (L4 - L3), [[-1 / 2, 1 / 2]]),        # c = (3/4, 1/4)
    ("sample weights", [[0, 0], [0, Q]], [0, 1], {"sample_weight": [2, 0.5]},
     (2 * L2 + 0.5 * (L4 - L3)) / 2.5, [[-0.4, 0.4], [0.05, -0.05]]),
    ("sample and class weights", [[0, 0], [0, Q]], [0, 1],       # weights 2*1, 0.5*4
     {"sample_weight": [2, 0.5], "weight": [1, 4]}, (2 * L2 + 2 * (L4 - L3)) / 4,
     [[-1 / 4, 1 / 4], [1 / 8, -1 / 8]]),
    ("-inf target logit", [[-np.inf, 0, 0]], [0], {}, np.inf, [[-1, 1 / 2, 1 / 2]]),
    ("-inf target logit of weight 0", [[-np.inf, 0, 0], [0, 0, 0]], [0, 1],
     {"weight": [0, 1, 1], "reduction": "sum"}, L3, [[0, 0, 0], [1 / 3, -2 / 3, 1 / 3]]),
    ("every position ignored", [[0, 0]], [-100], {}, np.nan, [[0, 0]]),
]


# each case on a short row, and (but for smoothing, which spreads over every
# class) padded with classes of -inf logits and weight 1 into a long row
SPECIFIC_CASES = [(case, padded) for case in SPECIFIC_VALUES for padded in (False, True)
                  if not (padded and "label_smoothing" in case[3])]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case, padded", SPECIFIC_CASES,
                         ids=[f"{c[0]}{', long row' if p else ''}" for c, p in SPECIFIC_CASES])
def test_loss_and_gradient_on_specific_values(case, padded, dtype):
    _, logits, target, options, loss, grad = case
    logits, grad = np.array(logits, dtype), np.array(grad)
    target = np.array(target)
    if padded:
        extra = SMALL + 40 - logits.shape[1]
        logits = np.pad(logits, ((0, 0), (0, extra)), constant_values=-np.inf)
        grad = np.pad(grad, ((0, 0), (0, extra)))
        if "weight" in options:
            options = dict(options, weight=np.pad(options["weight"], (0, extra),
                                                  constant_values=1.0))
        if target.dtype.kind == "f":
            target = np.pad(target, ((0, 0), (0, extra)))
    got_loss, got_grad = ce.cross_entropy_and_grad(logits, target, **options)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got_loss, loss, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(got_grad, grad, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(ce.cross_entropy(logits, target, **options), got_loss)



def test_class_weights_and_their_mean_denominator():
    logits = np.zeros((3, 2))                     # every loss is log 2 before weighting
    target = [0, 1, 1]
    weight = [1.0, 3.0]
    assert ce.cross_entropy(logits, target, weight=weight, reduction="sum") == pytest.approx(7 * LOG2)
    # mean divides by the summed weights of the targets, 1 + 3 + 3
    assert ce.cross_entropy(logits, target, weight=weight) == pytest.approx(LOG2)
    np.testing.assert_allclose(ce.cross_entropy(logits, target, weight=weight, reduction="none"),
                               [LOG2, 3 * LOG2, 3 * LOG2])


def test_ignored_positions_count_nowhere():
    logits = np.array([[0.0, np.log(3.0)], [5.0, -5.0]])   # p = (1/4, 3/4) in row 0
    loss, grad = ce.cross_entropy_and_grad(logits, [1, -100])
    assert loss == pytest.approx(-np.log(0.75))              # mean over one position
    np.testing.assert_allclose(grad, [[0.25, -0.25], [0.0, 0.0]])
    assert ce.cross_entropy(logits, [1, 0], ignore_index=0) == pytest.approx(-np.log(0.75))


def test_label_smoothing_mixes_in_the_uniform_distribution():
    logits = np.array([[0.0, np.log(3.0)]])                 # p = (1/4, 3/4)
    loss, grad = ce.cross_entropy_and_grad(logits, [1], label_smoothing=0.5)
    c = np.array([0.25, 0.75])                               # 0.5 * onehot + 0.5 / 2
    assert loss == pytest.approx(-(c * np.log([0.25, 0.75])).sum())
    np.testing.assert_allclose(grad, [[0.25 - 0.25, 0.75 - 0.75]], atol=1e-16)


def test_label_smoothing_with_weights_weights_every_class():
    logits = np.array([[0.0, np.log(3.0)], [0.0, 0.0]])
    weight = np.array([2.0, 1.0])
    eps = 0.2
    logp = np.log([[0.25, 0.75], [0.5, 0.5]])
    per_row = [-(1 - eps) * weight[1] * logp[0, 1] - eps / 2 * (weight * logp[0]).sum(),
               -(1 - eps) * weight[0] * logp[1, 0] - eps / 2 * (weight * logp[1]).sum()]
    got = ce.cross_entropy(logits, [1, 0], weight=weight, label_smoothing=eps)
    assert got == pytest.approx(sum(per_row) / (weight[1] + weight[0]))


def test_probability_targets():
    logits = np.array([[0.0, np.log(3.0)]])
    y = np.array([[0.4, 0.6]])
    loss, grad = ce.cross_entropy_and_grad(logits, y)
    assert loss == pytest.approx(-(0.4 * np.log(0.25) + 0.6 * np.log(0.75)))
    np.testing.assert_allclose(grad, [[0.25 - 0.4, 0.75 - 0.6]])


def test_probability_targets_mean_divides_by_positions_not_weights():
    logits = np.zeros((2, 2))
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert ce.cross_entropy(logits, y, weight=[1.0, 3.0]) == pytest.approx((LOG2 + 3 * LOG2) / 2)


def test_sample_weight_scales_each_position_and_the_mean():
    logits = np.array([[0.0, 0.0], [0.0, np.log(3.0)]])
    sw = np.array([1.0, 3.0])
    losses = np.array([LOG2, -np.log(0.75)])
    assert ce.cross_entropy(logits, [0, 1], sample_weight=sw, reduction="sum") == pytest.approx(
        (sw * losses).sum())
    assert ce.cross_entropy(logits, [0, 1], sample_weight=sw) == pytest.approx(
        (sw * losses).sum() / sw.sum())
    # with class weights the denominator is sum(sample_weight * weight[target])
    w = np.array([2.0, 0.5])
    assert ce.cross_entropy(logits, [0, 1], sample_weight=sw, weight=w) == pytest.approx(
        (sw * w[[0, 1]] * losses).sum() / (sw * w[[0, 1]]).sum())


def test_grad_scale_multiplies_only_the_gradient(rng):
    logits, target, _ = random_case(rng, (5, 4), -1)
    loss, grad = ce.cross_entropy_and_grad(logits, target)
    loss3, grad3 = ce.cross_entropy_and_grad(logits, target, grad_scale=-3.0)
    assert loss3 == loss
    np.testing.assert_allclose(grad3, -3.0 * grad, rtol=1e-15)


# --- every option against the reference, values and finite differences ------------

@pytest.mark.parametrize("probabilities, ignore, weighted, eps, sample_weighted", OPTION_GRID,
                         ids=[option_id(o) for o in OPTION_GRID])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((17, 6), -1), ((9, SMALL + 9), -1), ((3, 5, 4, 2), 1),
                                         ((2, 150, 3), 1)], ids=shape_id)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_option_matches_the_reference(rng, probabilities, ignore, weighted, eps,
                                            sample_weighted, dtype, shape, axis, reduction):
    logits, target, kwargs = random_case(rng, shape, axis, dtype=dtype, probabilities=probabilities,
                                         ignore=ignore, weighted=weighted,
                                         sample_weighted=sample_weighted)
    expected_loss, expected_grad = ref.cross_entropy_full(
        logits, target, reduction=reduction, label_smoothing=eps, axis=axis, **kwargs)
    loss, grad = ce.cross_entropy_and_grad(logits, target, reduction=reduction,
                                           label_smoothing=eps, axis=axis, grad_scale=0.5, **kwargs)
    tol = tolerance(dtype)
    np.testing.assert_allclose(loss, expected_loss, **tol)
    np.testing.assert_allclose(grad, 0.5 * expected_grad, **tol)
    np.testing.assert_array_equal(
        ce.cross_entropy(logits, target, reduction=reduction, label_smoothing=eps, axis=axis,
                         **kwargs), loss)


@pytest.mark.parametrize("probabilities, ignore, weighted, eps, sample_weighted", OPTION_GRID,
                         ids=[option_id(o) for o in OPTION_GRID])
@pytest.mark.parametrize("n_classes", [5, SMALL + 3])
def test_every_option_grad_matches_finite_differences(rng, probabilities, ignore, weighted, eps,
                                                      sample_weighted, n_classes):
    logits, target, kwargs = random_case(rng, (4, n_classes), -1, probabilities=probabilities,
                                         ignore=ignore, weighted=weighted,
                                         sample_weighted=sample_weighted)
    logits /= 3
    if ignore:
        target[0] = -100
        target[1] = 1

    def f(z):
        return float(ce.cross_entropy(z, target, label_smoothing=eps, **kwargs))

    _, grad = ce.cross_entropy_and_grad(logits, target, label_smoothing=eps, **kwargs)
    numeric = ref.finite_difference_grad(f, logits)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_k_dimensional_input_is_not_copied(rng, monkeypatch):
    from crossentropy import _api
    logits, target, _ = random_case(rng, (4, 7, 5, 3), 1)
    seen = []
    original = _kernels.run
    monkeypatch.setattr(_api._kernels, "run", lambda **kw: (seen.append(kw["z"]), original(**kw)))
    ce.cross_entropy(logits, target, axis=1)
    assert np.shares_memory(np.asarray(seen[0]), logits)


# --- edges --------------------------------------------------------------------------

def test_all_positions_ignored():
    logits = np.random.default_rng(0).standard_normal((3, 4))
    target = [-100, -100, -100]
    loss, grad = ce.cross_entropy_and_grad(logits, target)
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, 0.0)
    loss, grad = ce.cross_entropy_and_grad(logits, target, reduction="sum", label_smoothing=0.1)
    assert loss == 0.0
    np.testing.assert_array_equal(grad, 0.0)
    np.testing.assert_array_equal(ce.cross_entropy(logits, target, reduction="none"), 0.0)


def test_zero_total_weight_gives_nan_loss_and_gradient_as_pytorch():
    logits = np.random.default_rng(0).standard_normal((3, 4))
    loss, grad = ce.cross_entropy_and_grad(logits, [0, 0, 0], weight=[0.0, 1.0, 1.0, 1.0])
    assert np.isnan(loss)
    assert np.isnan(grad).all()


@pytest.mark.parametrize("n_classes", [4, SMALL + 4])
def test_minus_infinity_on_a_zero_probability_class_contributes_nothing(n_classes):
    logits = np.zeros((2, n_classes))
    logits[:, 1] = -np.inf
    y = np.full((2, n_classes), 1.0 / (n_classes - 1))
    y[:, 1] = 0.0
    loss, grad = ce.cross_entropy_and_grad(logits, y)
    assert loss == pytest.approx(np.log(n_classes - 1))      # PyTorch: NaN
    assert np.isfinite(grad).all()
    assert (grad[:, 1] == 0).all()
    # the same with hard targets and a zero class weight under smoothing
    w = np.ones(n_classes)
    w[1] = 0.0
    loss = ce.cross_entropy(logits, [0, 2], weight=w, label_smoothing=0.1)
    assert np.isfinite(loss)


@pytest.mark.parametrize("n_classes", [4, SMALL + 4])
def test_minus_infinity_where_the_target_has_mass_gives_infinity(n_classes):
    logits = np.zeros((1, n_classes))
    logits[0, 1] = -np.inf
    assert ce.cross_entropy(logits, [1]) == np.inf
    assert ce.cross_entropy(logits, [0], label_smoothing=0.1) == np.inf
    assert np.isfinite(ce.cross_entropy(logits, [0]))        # a class with no mass: fine


@pytest.mark.parametrize("n_classes", [4, SMALL + 4])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_plus_infinity_in_a_row_gives_nan_for_that_row(n_classes, bad):
    logits = np.zeros((2, n_classes))
    logits[0, 2] = bad
    loss, grad = ce.cross_entropy_and_grad(logits, [0, 1], reduction="none")
    assert np.isnan(loss[0]) and np.isnan(grad[0]).all()
    assert np.isfinite(loss[1]) and np.isfinite(grad[1]).all()


NAN_BITS = {np.float32: [0x7FC00001, 0x7FC001FF, 0xFFC00123, 0x7F800001],
            np.float64: [0x7FF8000000000001, 0x7FF8000000000FFF, 0xFFF8000000000123,
                         0x7FF0000000000001]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [4, SMALL + 4, 1000, _kernels.SPLIT_MIN_CLASSES_LEN + 5])
def test_a_nan_with_any_payload_gives_nan_for_its_row(dtype, n_classes):
    # The exp has a cheaper form for rows whose arguments are all in the normal
    # range; a NaN, whatever its bits, must keep a row off it and come out NaN.
    ints = np.uint32 if dtype == np.float32 else np.uint64
    for bits in NAN_BITS[dtype]:
        logits = np.zeros((2, n_classes), dtype=dtype)
        logits[0, n_classes // 2] = np.array(bits, dtype=ints).view(dtype)
        for call in (lambda: ce.cross_entropy_and_grad(logits, [0, 1], reduction="none"),
                     lambda: (ce.cross_entropy(logits, [0, 1], reduction="none"),
                              ce.softmax(logits))):
            loss, grad = call()
            assert np.isnan(loss[0]) and np.isnan(grad[0]).all(), hex(bits)
            assert np.isfinite(loss[1]) and np.isfinite(grad[1]).all(), hex(bits)


# --- bad options ----------------------------------------------------------------------

def test_ignore_index_with_probability_targets_is_a_value_error():
    y = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="ignore_index .* not supported with class-probability"):
        ce.cross_entropy(np.zeros((2, 3)), y, ignore_index=0)
    ce.cross_entropy(np.zeros((2, 3)), y, ignore_index=-1)    # negative: accepted, as PyTorch


def test_probability_targets_of_the_wrong_shape_are_a_value_error():
    with pytest.raises(ValueError, match=r"class probabilities and must have the logits' shape \(2, 3\)"):
        ce.cross_entropy(np.zeros((2, 3)), np.full((3, 3), 1 / 3))


@pytest.mark.parametrize("weight, error, message", [
    ([1.0, 1.0], ValueError, r"weight must have shape \(3,\)"),
    ([1.0, -1.0, 1.0], ValueError, r"weight must be finite and non-negative, but weight\[1\] = -1.0"),
    ([1.0, np.nan, 1.0], ValueError, "weight must be finite"),
    ([1.0, np.inf, 1.0], ValueError, "weight must be finite"),
    (["a", "b", "c"], TypeError, "weight must be an array of real numbers"),
])
def test_bad_weight(weight, error, message):
    with pytest.raises(error, match=message):
        ce.cross_entropy(np.zeros((2, 3)), [0, 1], weight=weight)


def test_bad_sample_weight():
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(2,\)"):
        ce.cross_entropy(np.zeros((2, 3)), [0, 1], sample_weight=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sample_weight must be finite and non-negative"):
        ce.cross_entropy(np.zeros((2, 3)), [0, 1], sample_weight=[1.0, -2.0])


@pytest.mark.parametrize("eps, error", [(-0.1, ValueError), (1.5, ValueError), (np.nan, ValueError),
                                        ("0.1", TypeError), (True, TypeError)])
def test_bad_label_smoothing(eps, error):
    with pytest.raises(error, match="label_smoothing"):
        ce.cross_entropy(np.zeros((2, 3)), [0, 1], label_smoothing=eps)


@pytest.mark.parametrize("value", [1.5, "-100", None])
def test_bad_ignore_index(value):
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        ce.cross_entropy(np.zeros((2, 3)), [0, 1], ignore_index=value)


def test_bad_grad_scale():
    with pytest.raises(TypeError, match="grad_scale must be a real number"):
        ce.cross_entropy_and_grad(np.zeros((2, 3)), [0, 1], grad_scale="1")


def test_target_equal_to_ignore_index_is_not_an_index_error():
    ce.cross_entropy(np.zeros((2, 3)), [0, 7], ignore_index=7)
    with pytest.raises(IndexError, match=r"target\[1\] = 7 .* or equal ignore_index \(-100\)"):
        ce.cross_entropy(np.zeros((2, 3)), [0, 7])


def test_huge_unsigned_ignore_index():
    target = np.array([1, 2**64 - 1], dtype=np.uint64)
    loss = ce.cross_entropy(np.zeros((2, 3)), target, ignore_index=2**64 - 1, reduction="none")
    np.testing.assert_allclose(loss, [np.log(3.0), 0.0])


# --- found in review -------------------------------------------------------------------

@pytest.mark.parametrize("n_classes", [3, SMALL + 3])
def test_a_zero_weight_target_class_at_minus_infinity_contributes_nothing(n_classes):
    logits = np.zeros((1, n_classes))
    logits[0, 1] = -np.inf
    weight = np.ones(n_classes)
    weight[1] = 0.0
    assert ce.cross_entropy(logits, [1], weight=weight, reduction="sum") == 0.0
    one_hot = np.zeros((1, n_classes))
    one_hot[0, 1] = 1.0
    smoothed = ce.cross_entropy(logits, [1], weight=weight, label_smoothing=0.1, reduction="sum")
    assert smoothed == pytest.approx(ce.cross_entropy(
        logits, one_hot, weight=weight, label_smoothing=0.1, reduction="sum"), rel=1e-14)
    assert np.isfinite(smoothed)


def test_full_smoothing_with_the_target_at_minus_infinity_is_infinite():
    # eps = 1: the target's own term vanishes, but every class still has mass eps / C
    assert ce.cross_entropy(np.array([[0.0, -np.inf, 1.0]]), [1], label_smoothing=1.0) == np.inf


def test_non_contiguous_weights_are_accepted():
    logits = np.random.default_rng(0).standard_normal((4, 5))
    target = [0, 1, 2, 3]
    weight = np.arange(1.0, 11.0)[::2]
    assert ce.cross_entropy(logits, target, weight=weight) == ce.cross_entropy(
        logits, target, weight=weight.copy())


def test_gradient_factor_beyond_float32_range_does_not_overflow():
    # grad_scale * weight / sum = 1e39 overflows float32, but every gradient
    # entry (1e39 * p with p ~ 4e-44) is finite.
    logits = np.array([[0.0, -100.0, -100.0]], dtype=np.float32)
    _, grad = ce.cross_entropy_and_grad(logits, [0], weight=[10.0, 1.0, 1.0], grad_scale=1e38,
                                        reduction="sum")
    expected = 1e38 * 10.0 * ref.cross_entropy_grad(logits, [0], "sum")
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, expected, rtol=0.05)   # p is a float32 subnormal


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_out_receives_the_gradient(rng):
    logits = rng.standard_normal((3, 4))
    out = np.asmatrix(np.zeros((3, 4)))
    _, grad = ce.cross_entropy_and_grad(logits, [0, 1, 2], out=out)
    assert grad is out
    np.testing.assert_allclose(np.asarray(out), ref.cross_entropy_grad(logits, [0, 1, 2]), atol=1e-16)


@pytest.mark.parametrize("n_classes", [3, SMALL + 3, 131072 + 3])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_a_position_of_sample_weight_zero_contributes_nothing_on_every_path(n_classes, eps):
    logits = np.zeros((2, n_classes))
    logits[0, 1] = -np.inf                       # an infinite loss at position 0 ...
    loss = ce.cross_entropy(logits, [1, 0], sample_weight=[0.0, 1.0], label_smoothing=eps,
                            reduction="none")
    assert loss[0] == 0.0                        # ... weighted by 0
    assert loss[1] == pytest.approx(ref.cross_entropy_full(logits[1:], [0], label_smoothing=eps,
                                                           reduction="none")[0][0])


@pytest.mark.parametrize("ignore_index", [2**70, -2**70, 2**64 - 1])
def test_an_ignore_index_beyond_int64_still_rejects_other_bad_targets(ignore_index):
    message = rf"target\[1\] = -1 .* or equal ignore_index \({ignore_index}\)"
    with pytest.raises(IndexError, match=message):
        ce.cross_entropy(np.zeros((2, 3)), np.array([0, -1]), ignore_index=ignore_index)
