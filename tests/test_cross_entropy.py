"""cross_entropy and cross_entropy_and_grad against the float64 reference."""

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _kernels, special

from conftest import tolerance
import reference as ref

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
SMALL = _kernels.SMALL_ROW_LEN
# Row lengths on both sides of the path boundary (row blocks up to SMALL, long
# rows above), and long enough for several SIMD blocks.
CLASS_COUNTS = [1, 2, 10, SMALL, SMALL + 1, 1000, 5000]


def make_problem(rng, shape, axis=-1, dtype=np.float64, scale=3.0):
    logits = (rng.standard_normal(shape) * scale).astype(dtype)
    n_classes = shape[axis]
    target_shape = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    target = rng.integers(0, n_classes, size=target_shape)
    return logits, target


# --- values --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n_classes", CLASS_COUNTS)
def test_loss_matches_reference(rng, dtype, reduction, n_classes):
    logits, target = make_problem(rng, (37, n_classes), dtype=dtype)
    loss = ce.cross_entropy(logits, target, reduction=reduction)
    np.testing.assert_allclose(loss, ref.cross_entropy(logits, target, reduction), **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n_classes", CLASS_COUNTS)
def test_loss_and_grad_match_reference(rng, dtype, reduction, n_classes):
    logits, target = make_problem(rng, (37, n_classes), dtype=dtype)
    loss, grad = ce.cross_entropy_and_grad(logits, target, reduction=reduction)
    np.testing.assert_allclose(loss, ref.cross_entropy(logits, target, reduction), **tolerance(dtype))
    np.testing.assert_allclose(grad, ref.cross_entropy_grad(logits, target, reduction), **tolerance(dtype))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("n_classes", [1, 3, 7, 70])
def test_grad_matches_finite_differences(rng, reduction, n_classes):
    logits, target = make_problem(rng, (4, n_classes), scale=1.0)
    _, grad = ce.cross_entropy_and_grad(logits, target, reduction=reduction)
    numeric = ref.finite_difference_grad(
        lambda z: float(ce.cross_entropy(z, target, reduction=reduction)), logits)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_rows, n_classes", [(20000, 3), (5000, 10), (700, SMALL), (40, 4000)])
def test_many_rows_cross_block_and_chunk_boundaries(rng, dtype, n_rows, n_classes):
    logits, target = make_problem(rng, (n_rows, n_classes), dtype=dtype)
    loss, grad = ce.cross_entropy_and_grad(logits, target, reduction="none")
    np.testing.assert_allclose(loss, ref.cross_entropy(logits, target, "none"), **tolerance(dtype))
    np.testing.assert_allclose(grad, ref.cross_entropy_grad(logits, target, "none"), **tolerance(dtype))


def test_grad_of_none_reduction_is_grad_of_the_sum(rng):
    logits, target = make_problem(rng, (5, 6))
    _, grad_none = ce.cross_entropy_and_grad(logits, target, reduction="none")
    _, grad_sum = ce.cross_entropy_and_grad(logits, target, reduction="sum")
    np.testing.assert_array_equal(grad_none, grad_sum)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [10, 1000])
def test_cross_entropy_equals_loss_of_cross_entropy_and_grad(rng, dtype, n_classes):
    logits, target = make_problem(rng, (300, n_classes), dtype=dtype)
    for reduction in REDUCTIONS:
        loss_only = ce.cross_entropy(logits, target, reduction=reduction)
        loss, _ = ce.cross_entropy_and_grad(logits, target, reduction=reduction)
        np.testing.assert_array_equal(loss_only, loss)


def test_hand_computed_example():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    expected = [np.log(np.exp(2.0) + np.exp(0.5) + np.exp(-1.0)) - 2.0, np.log(3.0)]
    np.testing.assert_allclose(ce.cross_entropy(logits, [0, 2], reduction="none"), expected, rtol=1e-15)
    np.testing.assert_allclose(ce.cross_entropy(logits, [0, 2]), np.mean(expected), rtol=1e-15)


def test_confident_correct_prediction_keeps_gradient_precision():
    # p_target is 1 - 3e-9: computed as (p - 1) in float32 this would be 0.
    logits = np.array([[20.0, 0.0, 0.0, -5.0]], dtype=np.float32)
    _, grad = ce.cross_entropy_and_grad(logits, [0], reduction="sum")
    expected = ref.cross_entropy_grad(logits, [0], "sum")
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    assert grad[0, 0] < 0


# --- dtypes and result types ----------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_outputs_keep_the_logits_dtype(rng, dtype):
    logits, target = make_problem(rng, (8, 5), dtype=dtype)
    loss, grad = ce.cross_entropy_and_grad(logits, target)
    assert type(loss) is np.dtype(dtype).type
    assert grad.dtype == dtype
    assert ce.cross_entropy(logits, target, reduction="none").dtype == dtype
    assert type(ce.cross_entropy(logits, target, reduction="sum")) is np.dtype(dtype).type


@pytest.mark.parametrize("target_dtype", [np.int8, np.int16, np.int32, np.int64,
                                          np.uint8, np.uint16, np.uint32, np.uint64])
def test_every_integer_target_dtype_gives_the_same_result(rng, target_dtype):
    logits, target = make_problem(rng, (20, 7))
    expected = ce.cross_entropy(logits, target, reduction="none")
    got = ce.cross_entropy(logits, target.astype(target_dtype), reduction="none")
    np.testing.assert_array_equal(got, expected)


def test_array_likes_are_accepted():
    loss = ce.cross_entropy([[1.0, 2.0], [3.0, 1.0]], [1, 0])
    np.testing.assert_allclose(loss, ref.cross_entropy([[1.0, 2.0], [3.0, 1.0]], [1, 0]))


def test_float32_sums_accumulate_in_float64():
    # 2**20 equal losses of log(2): a float32 running sum would drift visibly.
    logits = np.zeros((1 << 20, 2), dtype=np.float32)
    target = np.zeros(1 << 20, dtype=np.int64)
    total = ce.cross_entropy(logits, target, reduction="sum")
    expected = np.float32(np.float32(np.log(2.0)) * (1 << 20))
    assert abs(float(total) - float(expected)) <= 1e-6 * float(expected)


# --- shapes and the class axis --------------------------------------------------

def test_single_row_unbatched_input(rng):
    logits = rng.standard_normal(6)
    loss = ce.cross_entropy(logits, 4)
    np.testing.assert_allclose(loss, ref.cross_entropy(logits[None], [4]))
    loss_none, grad = ce.cross_entropy_and_grad(logits, np.int64(4), reduction="none")
    assert np.ndim(loss_none) == 0
    np.testing.assert_allclose(grad, ref.cross_entropy_grad(logits[None], [4], "none")[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [5, 100, 1500])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_axis_one_matches_pytorch_layout(rng, dtype, n_classes, reduction):
    logits, target = make_problem(rng, (3, n_classes, 4, 2), axis=1, dtype=dtype)
    loss, grad = ce.cross_entropy_and_grad(logits, target, axis=1, reduction=reduction)
    np.testing.assert_allclose(loss, ref.cross_entropy(logits, target, reduction, axis=1), **tolerance(dtype))
    np.testing.assert_allclose(grad, ref.cross_entropy_grad(logits, target, reduction, axis=1),
                               **tolerance(dtype))
    np.testing.assert_array_equal(ce.cross_entropy(logits, target, axis=1, reduction=reduction), loss)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_every_axis(rng, axis):
    logits, target = make_problem(rng, (4, 5, 6), axis=axis)
    loss, grad = ce.cross_entropy_and_grad(logits, target, axis=axis, reduction="none")
    np.testing.assert_allclose(loss, ref.cross_entropy(logits, target, "none", axis=axis), rtol=1e-12)
    np.testing.assert_allclose(grad, ref.cross_entropy_grad(logits, target, "none", axis=axis), atol=1e-13)


LAYOUTS = {
    "fortran": lambda a: np.asfortranarray(a),
    "every_other_row": lambda a: np.repeat(a, 2, axis=0)[::2],
    "every_other_class": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
    "reversed_rows": lambda a: a[::-1].copy()[::-1],
    "reversed_classes": lambda a: a[:, ::-1].copy()[:, ::-1],
    "read_only": lambda a: _read_only(a),
}


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n_classes", [7, SMALL, SMALL + 1, 3000])
def test_any_memory_layout_gives_the_contiguous_result(rng, layout, n_classes):
    logits, target = make_problem(rng, (9, n_classes))
    expected_loss, expected_grad = ce.cross_entropy_and_grad(logits, target, reduction="none")
    arranged = LAYOUTS[layout](logits)
    np.testing.assert_array_equal(arranged, logits)
    loss, grad = ce.cross_entropy_and_grad(arranged, target, reduction="none")
    # Every path sums and scales in the same order: bit-identical results.
    np.testing.assert_array_equal(loss, expected_loss)
    np.testing.assert_array_equal(grad, expected_grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [3, 4, 5, 7, 8, 9, 10, 15, 16, 17, 31, 33, SMALL - 1, SMALL])
def test_row_block_tiles_match_reference_and_strided_rows(rng, dtype, n_classes):
    """Rows with contiguous classes enter and leave the across-rows block by
    register tiles (a vector of rows by a vector of classes, the last tile of a
    row overlapping the one before); strided rows move one element at a time.
    Both must give the reference and each other's exact bits: for row counts
    around the tile size and the block size, and with ignored rows, whose
    gradient rows are cleared after the tiles are written."""
    n_rows = 150                                     # 2 full blocks of 64 and a partial one
    logits, target = make_problem(rng, (n_rows, n_classes), dtype=dtype)
    target[[0, 9, 64, 149]] = -100
    for rows in [slice(0, 1), slice(0, 7), slice(0, 9), slice(0, 64), slice(0, 67), slice(None)]:
        z, t = logits[rows], target[rows]
        loss, grad = ce.cross_entropy_and_grad(z, t, reduction="none")
        expected_loss = ref.cross_entropy(z, np.where(t < 0, 0, t), "none")
        expected_grad = ref.cross_entropy_grad(z, np.where(t < 0, 0, t), "none")
        expected_loss[t < 0] = 0.0
        expected_grad[t < 0] = 0.0
        np.testing.assert_allclose(loss, expected_loss, **tolerance(dtype))
        np.testing.assert_allclose(grad, expected_grad, **tolerance(dtype))
        strided_out = np.empty((z.shape[0], 2 * n_classes), dtype=dtype)[:, ::2]
        strided_loss, strided_grad = ce.cross_entropy_and_grad(
            np.asfortranarray(z), t, reduction="none", out=strided_out)
        np.testing.assert_array_equal(strided_loss, loss)
        np.testing.assert_array_equal(strided_grad, grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [3, 10, 17])
def test_channels_last_logits_with_class_axis_one(rng, dtype, n_classes):
    """(N, C, D) logits stored channels-last, class axis 1: the rows' classes
    are contiguous but the rows are not evenly spaced, so the across-rows
    block gets a list of row addresses and still moves them by register
    tiles.  out= (channels-last too) and inplace=True must give the bits of
    the same logits stored contiguously."""
    stored = (rng.standard_normal((9, 11, n_classes)) * 3).astype(dtype)
    logits = stored.transpose(0, 2, 1)                   # (9, C, 11), classes contiguous
    target = rng.integers(0, n_classes, (9, 11))
    target[0, :3] = -100
    expected_loss, expected_grad = ce.cross_entropy_and_grad(
        np.ascontiguousarray(logits), target, axis=1, reduction="none")
    out = np.full(stored.shape, np.nan, dtype=dtype).transpose(0, 2, 1)
    loss, grad = ce.cross_entropy_and_grad(logits, target, axis=1, reduction="none", out=out)
    assert grad is out
    np.testing.assert_array_equal(out, expected_grad)
    np.testing.assert_array_equal(loss, expected_loss)
    buffer = stored.copy().transpose(0, 2, 1)
    ce.cross_entropy_and_grad(buffer, target, axis=1, inplace=True)
    np.testing.assert_array_equal(buffer, ce.cross_entropy_and_grad(
        np.ascontiguousarray(logits), target, axis=1)[1])


def test_zero_rows(rng):
    logits = np.empty((0, 5))
    target = np.empty(0, dtype=np.int64)
    assert np.isnan(ce.cross_entropy(logits, target))
    assert ce.cross_entropy(logits, target, reduction="sum") == 0.0
    assert ce.cross_entropy(logits, target, reduction="none").shape == (0,)
    loss, grad = ce.cross_entropy_and_grad(logits, target)
    assert np.isnan(loss) and grad.shape == (0, 5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [10, 3000, 200000])
def test_rows_spanning_the_subnormal_range_keep_gradual_underflow(dtype, n_classes):
    """Rows whose exps are all normal numbers take a cheaper exp (chosen per
    long row, per block of short rows); a wider spread takes the exact one.
    Row 0 spans just less than the cheap exp's range, row 1 reaches into
    subnormal (and zero) probabilities, which must not be flushed."""
    low = -80.0 if dtype == np.float32 else -700.0
    deep = [-95.0, -100.0, -103.0, -120.0] if dtype == np.float32 else [-730.0, -740.0, -744.0, -800.0]
    logits = np.full((2, n_classes), low, dtype=dtype)
    logits[:, 0] = 0.0
    logits[1, 1:1 + len(deep)] = deep
    target = np.array([1, 0])
    loss, grad = ce.cross_entropy_and_grad(logits, target, reduction="none")
    np.testing.assert_allclose(loss, ref.cross_entropy(logits, target, "none"), **tolerance(dtype))
    expected = ref.cross_entropy_grad(logits, target, "none")
    tiny = np.finfo(dtype).smallest_subnormal
    np.testing.assert_allclose(grad, expected, rtol=tolerance(dtype)["rtol"], atol=tiny)
    assert (grad[0] != 0).all()
    subnormal = grad[1, 1:len(deep)]
    assert ((0 < subnormal) & (subnormal < np.finfo(dtype).tiny)).all()     # not flushed
    assert grad[1, len(deep)] == 0.0


def test_one_class_has_zero_loss_and_gradient():
    logits = np.array([[3.0], [-2.0]])
    loss, grad = ce.cross_entropy_and_grad(logits, [0, 0], reduction="none")
    np.testing.assert_array_equal(loss, [0.0, 0.0])
    np.testing.assert_array_equal(grad, [[0.0], [0.0]])


# --- out= and inplace=True ------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [10, 1000])
def test_out_receives_the_gradient(rng, dtype, n_classes):
    logits, target = make_problem(rng, (50, n_classes), dtype=dtype)
    expected_loss, expected_grad = ce.cross_entropy_and_grad(logits, target)
    out = np.full_like(logits, np.nan)
    loss, grad = ce.cross_entropy_and_grad(logits, target, out=out)
    assert grad is out
    np.testing.assert_array_equal(out, expected_grad)
    assert loss == expected_loss


def test_out_with_a_layout_of_its_own(rng):
    logits, target = make_problem(rng, (6, 5, 4), axis=1)
    out = np.zeros((4, 5, 6)).transpose(2, 1, 0)   # (6, 5, 4), no (outer, C, inner) view
    _, grad = ce.cross_entropy_and_grad(logits, target, axis=1, out=out)
    assert grad is out
    np.testing.assert_allclose(out, ref.cross_entropy_grad(logits, target, axis=1), atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [1, 10, SMALL + 1, 3000])
@pytest.mark.parametrize("axis", [-1, 0])
def test_inplace_writes_the_gradient_over_the_logits(rng, dtype, n_classes, axis):
    logits, target = make_problem(rng, (n_classes, 30) if axis == 0 else (30, n_classes),
                                  axis=axis, dtype=dtype)
    expected_loss, expected_grad = ce.cross_entropy_and_grad(logits, target, axis=axis)
    buffer = logits.copy()
    loss, grad = ce.cross_entropy_and_grad(buffer, target, axis=axis, inplace=True)
    assert grad is buffer
    np.testing.assert_array_equal(buffer, expected_grad)
    assert loss == expected_loss


def test_inplace_on_a_strided_view_writes_only_that_view(rng):
    backing = rng.standard_normal((10, 16))
    before = backing.copy()
    view = backing[::2, ::2]
    target = np.arange(5) % 8
    expected = ref.cross_entropy_grad(view, target)
    ce.cross_entropy_and_grad(view, target, inplace=True)
    np.testing.assert_allclose(backing[::2, ::2], expected, atol=1e-16)
    np.testing.assert_array_equal(backing[1::2], before[1::2])
    np.testing.assert_array_equal(backing[::2, 1::2], before[::2, 1::2])


# --- threads --------------------------------------------------------------------

def test_split_rows_reaching_deep_below_the_max_under_threads(rng):
    """Few very long rows are split into segments that the threads share; the
    least logit over all segments picks the row's exp.  Each thread must see
    every segment's min: once, a temporary shared between threads let another
    segment's min through (about 1 call in 2000), and the one-scale exp then
    ran outside its range.  Repeated calls make such a race likely to show."""
    m = _kernels.SPLIT_MIN_CLASSES_LEN * 2
    logits = rng.standard_normal((2, m)).astype(np.float32)
    logits[0, 5] = -1000.0
    logits[1, m - 3] = -1000.0
    target = np.array([3, 7])
    expected = ref.cross_entropy(logits, target, "none")
    loss_1, grad_1 = ce.cross_entropy_and_grad(logits, target, reduction="none", n_threads=1)
    np.testing.assert_allclose(loss_1, expected, **tolerance(np.float32))
    for _ in range(3000):
        loss = ce.cross_entropy(logits, target, reduction="none", n_threads=2)
        assert np.array_equal(loss, loss_1)
    _, grad = ce.cross_entropy_and_grad(logits, target, reduction="none", n_threads=2)
    np.testing.assert_array_equal(grad, grad_1)


@pytest.mark.parametrize("shape", [(5000, 10), (300, 2000), (3, 40000)])
def test_results_do_not_depend_on_the_thread_count(rng, shape):
    logits, target = make_problem(rng, shape, dtype=np.float32)
    results = [ce.cross_entropy_and_grad(logits, target, n_threads=n) for n in (1, 2, 3, -1, None)]
    for loss, grad in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(grad, results[0][1])


def test_none_threads_follow_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from crossentropy._validate import _resolve_n_threads
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert _resolve_n_threads(None) == 1


def test_negative_threads_count_back_from_the_cpu_count():
    from crossentropy._validate import _cpu_count, _resolve_n_threads
    assert _resolve_n_threads(-1) == _cpu_count()
    assert _resolve_n_threads(-10_000) == 1


# --- bad input --------------------------------------------------------------------

@pytest.mark.parametrize("bad_dtype", [np.int64, np.int16, np.complex128, np.longdouble, bool,
                                       object, "U3"])
def test_logits_of_an_unsupported_dtype_are_a_type_error(bad_dtype):
    logits = np.zeros((2, 3)).astype(bad_dtype)
    words = "logits must be a float16, bfloat16, float32 or float64 array"
    with pytest.raises(TypeError, match=words):
        ce.cross_entropy(logits, [0, 1])
    with pytest.raises(TypeError, match=words):
        ce.cross_entropy_and_grad(logits, [0, 1])


@pytest.mark.parametrize("bad_target", [np.array([True, False]), ["a", "b"], np.array([1j, 2j]),
                                        np.array([0, 1], dtype=object)])
def test_targets_neither_integer_nor_floating_are_a_type_error(bad_target):
    with pytest.raises(TypeError, match="target must hold integer class indices or floating class"):
        ce.cross_entropy(np.zeros((2, 3)), bad_target)


def test_floating_class_indices_are_a_value_error_that_explains():
    with pytest.raises(ValueError, match="read as class probabilities.*integer dtype"):
        ce.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))


@pytest.mark.parametrize("target_shape", [(3,), (2, 1), ()])
def test_target_of_the_wrong_shape_is_a_value_error(target_shape):
    with pytest.raises(ValueError, match=r"target has shape .*expected \(2,\)"):
        ce.cross_entropy(np.zeros((2, 3)), np.zeros(target_shape, dtype=int))


@pytest.mark.parametrize("bad, where", [(3, "target\\[1\\] = 3"), (-1, "target\\[1\\] = -1")])
def test_target_out_of_range_is_an_index_error_naming_it(bad, where):
    with pytest.raises(IndexError, match=where + ".*3 classes"):
        ce.cross_entropy(np.zeros((3, 3)), [0, bad, 1])


def test_out_of_range_target_reports_the_first_position_in_nd():
    target = np.zeros((2, 3), dtype=np.uint64)
    target[1, 2] = 2**64 - 1
    target[1, 1] = 7
    with pytest.raises(IndexError, match=r"target\[\(1, 1\)\] = 7"):
        ce.cross_entropy(np.zeros((2, 5, 3)), target, axis=1)


def test_huge_unsigned_target_is_an_index_error_not_a_wrap():
    with pytest.raises(IndexError, match=str(2**64 - 1)):
        ce.cross_entropy(np.zeros((1, 3)), np.array([2**64 - 1], dtype=np.uint64))


@pytest.mark.parametrize("reduction", ["avg", "MEAN", None, 1])
def test_unknown_reduction_is_a_value_error(reduction):
    with pytest.raises(ValueError, match="reduction must be one of"):
        ce.cross_entropy(np.zeros((2, 3)), [0, 1], reduction=reduction)


def test_axis_out_of_range_is_an_error_naming_axis():
    with pytest.raises(ValueError, match="axis"):
        ce.cross_entropy(np.zeros((2, 3)), [0, 1], axis=2)
    with pytest.raises(TypeError, match="axis must be an integer"):
        ce.cross_entropy(np.zeros((2, 3)), [0, 1], axis=1.0)


def test_zero_dimensional_logits_are_a_value_error():
    with pytest.raises(ValueError, match="logits must have at least one dimension"):
        ce.cross_entropy(np.float64(1.0), 0)


@pytest.mark.parametrize("n_threads, error", [(0, ValueError), (1.5, TypeError), ("2", TypeError),
                                              (True, TypeError)])
def test_bad_n_threads(n_threads, error):
    with pytest.raises(error, match="n_threads"):
        ce.cross_entropy(np.zeros((2, 3)), [0, 1], n_threads=n_threads)


def test_bad_out_arguments_leave_out_untouched():
    logits = np.zeros((2, 3))
    cases = [
        (np.zeros((2, 3), np.float32), TypeError, "out must have dtype float64"),
        (np.zeros((3, 2)), ValueError, r"out must have shape \(2, 3\)"),
        ([[0.0] * 3] * 2, TypeError, "out must be a numpy.ndarray"),
    ]
    for out, error, message in cases:
        with pytest.raises(error, match=message):
            ce.cross_entropy_and_grad(logits, [0, 1], out=out)
    read_only = np.full((2, 3), 7.0)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        ce.cross_entropy_and_grad(logits, [0, 1], out=read_only)


def test_out_overlapping_the_logits_is_a_value_error():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match="out overlaps logits"):
        ce.cross_entropy_and_grad(logits, [0, 1], out=logits)


def test_inplace_refuses_what_it_cannot_write():
    with pytest.raises(TypeError, match="inplace=True needs logits to be a numpy.ndarray"):
        ce.cross_entropy_and_grad([[0.0, 1.0]], [0], inplace=True)
    read_only = np.zeros((1, 2))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ce.cross_entropy_and_grad(read_only, [0], inplace=True)
    with pytest.raises(ValueError, match="either out= or inplace=True"):
        ce.cross_entropy_and_grad(np.zeros((1, 2)), [0], inplace=True, out=np.zeros((1, 2)))


def test_errors_leave_inplace_logits_untouched():
    logits = np.arange(6.0).reshape(2, 3)
    before = logits.copy()
    with pytest.raises(IndexError):
        ce.cross_entropy_and_grad(logits, [0, 3], inplace=True)
    with pytest.raises(ValueError):
        ce.cross_entropy_and_grad(logits, [0, 1], inplace=True, reduction="bogus")
    np.testing.assert_array_equal(logits, before)


# --- few very long rows, shared by the threads ------------------------------------

SPLIT = 131072      # rows this long, when there are few of them, are split into segments


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_few_very_long_rows(rng, dtype, reduction):
    logits, target = make_problem(rng, (3, SPLIT + 1000), dtype=dtype)
    target[1] = -100                                     # an ignored row
    weight = rng.random(SPLIT + 1000) + 0.5
    sample_weight = np.array([0.5, 1.0, 2.0])
    expected_loss, expected_grad = ref.cross_entropy_full(logits, target, weight=weight,
                                                          sample_weight=sample_weight,
                                                          reduction=reduction)
    results = []
    for n_threads in (1, 2, 3):
        loss, grad = ce.cross_entropy_and_grad(logits, target, weight=weight, reduction=reduction,
                                               sample_weight=sample_weight, n_threads=n_threads)
        np.testing.assert_allclose(loss, expected_loss, **tolerance(dtype))
        np.testing.assert_allclose(grad, expected_grad, **tolerance(dtype))
        results.append((loss, grad))
    for loss, grad in results[1:]:
        np.testing.assert_array_equal(loss, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])
    np.testing.assert_array_equal(
        ce.cross_entropy(logits, target, weight=weight, sample_weight=sample_weight,
                         reduction=reduction), results[0][0])
    # strided classes (axis 0) give the same bits
    loss_t, grad_t = ce.cross_entropy_and_grad(np.ascontiguousarray(logits.T), target, axis=0,
                                               weight=weight, sample_weight=sample_weight,
                                               reduction=reduction)
    np.testing.assert_array_equal(loss_t, results[0][0])
    np.testing.assert_array_equal(grad_t.T, results[0][1])


def test_few_very_long_rows_normalisers(rng):
    x = rng.standard_normal((2, SPLIT + 5)) * 4
    x[1, 7] = np.inf
    np.testing.assert_allclose(ce.softmax(x[:1]), ref.softmax(x[:1]), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(ce.log_softmax(x[:1]), ref.log_softmax(x[:1]), rtol=1e-12)
    lse = ce.logsumexp(x, n_threads=2)
    np.testing.assert_allclose(lse[0], ref.logsumexp(x[:1])[0], rtol=1e-14)
    assert lse[1] == np.inf
    x32 = x[:1].astype(np.float32)
    inplace = x32.copy()
    assert ce.softmax(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, ce.softmax(x32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_few_very_long_rows_log_softmax_is_shared_and_keeps_its_bits(rng, dtype):
    """The threads share a long row's log-softmax: every thread count, a
    strided row, in place and a row split into fewer rows give the same bits."""
    x = (rng.standard_normal((2, SPLIT + 5)) * 4).astype(dtype)
    results = [ce.log_softmax(x, n_threads=n) for n in (1, 2, 3)]
    np.testing.assert_allclose(results[0], ref.log_softmax(x), **tolerance(dtype))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])
    np.testing.assert_array_equal(ce.log_softmax(np.ascontiguousarray(x.T), axis=0).T, results[0])
    inplace = x.copy()
    assert ce.log_softmax(inplace, out=inplace, n_threads=2) is inplace
    np.testing.assert_array_equal(inplace, results[0])
    # (70 rows are not shared by the threads: each row by itself, the same bits)
    many = np.repeat(x[:1], 70, axis=0)
    np.testing.assert_array_equal(ce.log_softmax(many, n_threads=2)[69], results[0][0])
    # a row whose max is +inf: NaN throughout here, SciPy's convention in special
    x[1, 7] = np.inf
    assert np.isnan(ce.log_softmax(x, n_threads=2)[1]).all()
    scipy_like = special.log_softmax(x, 1, n_threads=2)[1]
    assert np.isnan(scipy_like[7]) and (np.delete(scipy_like, 7) == -np.inf).all()


@pytest.mark.parametrize("shape", [(20000, 10), (2000, 1000), (2, SPLIT + 1)])
def test_out_and_inplace_allocate_nothing_like_the_logits(rng, shape):
    import tracemalloc
    logits, target = make_problem(rng, shape, dtype=np.float32)
    out = np.empty_like(logits)
    ce.cross_entropy_and_grad(logits, target, out=out)       # warm up
    for call in (lambda: ce.cross_entropy_and_grad(logits, target, out=out),
                 lambda: ce.cross_entropy_and_grad(logits, target, inplace=True)):
        tracemalloc.start()
        call()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < logits.nbytes / 20, peak


@pytest.mark.parametrize("dtype", DTYPES)
def test_few_very_long_rows_in_place_give_the_same_loss(rng, dtype):
    logits, target = make_problem(rng, (2, SPLIT), dtype=dtype)
    expected = ce.cross_entropy(logits, target)
    loss, grad = ce.cross_entropy_and_grad(logits.copy(), target, inplace=True)
    assert loss == expected
    np.testing.assert_array_equal(grad, ce.cross_entropy_and_grad(logits, target)[1])


def test_a_single_very_long_row_is_shared_by_the_threads():
    from crossentropy._api import _chunking
    assert _chunking(1, 2_000_000, 2)[2] == 2          # one row, both threads
    assert _chunking(1, 1000, 2)[2] == 1               # a short row: one thread
