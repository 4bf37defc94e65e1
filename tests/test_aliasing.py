"""What a call writes never overlaps what it reads: the check sees every input
as the array the kernel reads (whatever object it came as), decides element
overlap exactly, refuses outputs whose own elements overlap, and costs at most
one temporary array the logits' size for layouts the kernels cannot address."""

import tracemalloc

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _validate

import reference as ref

C = 100                                 # long rows: the gradient is written before y is read


class ArrayInterface:
    """A foreign buffer: only __array_interface__, as many libraries export."""

    def __init__(self, a):
        self.__array_interface__ = a.__array_interface__
        self._keep = a


class ArrayMethod:
    """A foreign object that converts with __array__ (as a torch tensor does)."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a


def _torch_tensor(a):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(a)


WRAPPERS = {
    "ndarray": lambda a: a,
    "memoryview": memoryview,
    "__array_interface__": ArrayInterface,
    "__array__": ArrayMethod,
    "torch tensor": _torch_tensor,
}


def _problem(rng):
    logits = rng.standard_normal((4, C))
    probabilities = rng.random((4, C))
    probabilities /= probabilities.sum(1, keepdims=True)
    return logits, probabilities


@pytest.mark.parametrize("wrap", list(WRAPPERS))
@pytest.mark.parametrize("argument", ["target", "weight", "sample_weight"])
def test_out_sharing_memory_with_any_input_is_refused_whatever_its_type(rng, wrap, argument):
    logits, probabilities = _problem(rng)
    out = np.zeros((4, C))
    # (each as the kernel reads it: float64, contiguous, so not a copy)
    shared = {"target": out, "weight": out[0], "sample_weight": out[1, :4]}[argument]
    shared[...] = {"target": probabilities, "weight": 1.0, "sample_weight": 1.0}[argument]
    kwargs = {"target": probabilities, argument: WRAPPERS[wrap](shared)}
    before = out.copy()
    with pytest.raises(ValueError, match=f"out overlaps {argument}"):
        ce.cross_entropy_and_grad(logits, kwargs.pop("target"), out=out, **kwargs)
    np.testing.assert_array_equal(out, before)


@pytest.mark.parametrize("wrap", list(WRAPPERS))
def test_inplace_logits_sharing_memory_with_any_input_are_refused(rng, wrap):
    logits = rng.standard_normal((5, C))
    logits[1] = np.abs(logits[1])               # (a row usable as class weights)
    target = logits[4].view(np.int64)[:5]       # the target lives in the logits' last row
    target[...] = [0, 1, 2, 3, 4]
    before = logits.copy()
    with pytest.raises(ValueError, match="inplace=True would overwrite weight"):
        ce.cross_entropy_and_grad(logits, np.arange(5), weight=WRAPPERS[wrap](logits[1]),
                                  inplace=True)
    np.testing.assert_array_equal(logits, before)
    with pytest.raises(ValueError, match="inplace=True would overwrite target"):
        ce.cross_entropy_and_grad(logits, WRAPPERS[wrap](target), inplace=True)
    np.testing.assert_array_equal(logits, before)


def test_an_input_the_kernel_reads_as_a_copy_may_share_memory_with_the_output(rng):
    # the check is on the arrays the kernel reads: an int32 target is read
    # as an intp copy, so the logits it lives in may be overwritten in place
    logits = rng.standard_normal((5, C))
    target = logits[4].view(np.int32)[:5]
    target[...] = [0, 1, 2, 3, 4]
    expected_loss, expected_grad = ce.cross_entropy_and_grad(logits.copy(), target.copy())
    loss, grad = ce.cross_entropy_and_grad(logits, target, inplace=True)
    assert grad is logits and loss == expected_loss
    np.testing.assert_array_equal(logits, expected_grad)


def test_out_that_is_x_through_another_view_is_x(rng):
    # the same elements, whatever the strides of axes of length one
    a = rng.standard_normal((5, 3))
    x, out = a[:, 0:1], a[:, 0][:, None]
    assert x.strides != out.strides
    expected = ce.softmax(x.copy())
    assert ce.softmax(x, out=out) is out
    np.testing.assert_array_equal(a[:, 0:1], expected)


def test_a_foreign_probability_target_aliasing_out_would_have_given_wrong_numbers(rng):
    # What the refusal prevents: the gradient overwrites y before y is read.
    logits, probabilities = _problem(rng)
    expected = ce.cross_entropy_and_grad(logits, probabilities)[1]
    alias = probabilities.copy()
    with pytest.raises(ValueError, match="out overlaps target"):
        ce.cross_entropy_and_grad(logits, memoryview(alias), out=alias)
    np.testing.assert_array_equal(alias, probabilities)
    got = ce.cross_entropy_and_grad(logits, memoryview(alias.copy()), out=alias)[1]
    np.testing.assert_array_equal(got, expected)


# --- exact overlap: arrays that share an address range but no element ------------

def test_fields_of_one_structured_array_are_separate_arrays(rng):
    record = np.zeros(6, dtype=[("logits", "f8", (5,)), ("target", "i8")])
    record["logits"] = rng.standard_normal((6, 5))
    record["target"] = [0, 1, 2, 3, 4, 0]
    logits = record["logits"]
    expected_loss, expected_grad = ce.cross_entropy_and_grad(logits.copy(), record["target"])
    loss, grad = ce.cross_entropy_and_grad(logits, record["target"], inplace=True)
    assert grad is logits and loss == expected_loss
    np.testing.assert_array_equal(logits, expected_grad)
    np.testing.assert_array_equal(record["target"], [0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize("n_classes", [5, C])
def test_interleaved_columns_of_one_array_are_separate_arrays(rng, n_classes):
    backing = rng.standard_normal((6, 2 * n_classes))
    logits, out = backing[:, ::2], backing[:, 1::2]
    target = np.arange(6) % n_classes
    expected_loss, expected_grad = ce.cross_entropy_and_grad(logits.copy(), target)
    loss, grad = ce.cross_entropy_and_grad(logits, target, out=out)
    assert grad is out and loss == expected_loss
    np.testing.assert_array_equal(out, expected_grad)
    for function in (ce.softmax, ce.log_softmax):
        expected = function(logits.copy())
        assert function(logits, out=out) is out
        np.testing.assert_array_equal(out, expected)


def test_an_overlap_that_cannot_be_decided_cheaply_is_refused_and_says_so(rng, monkeypatch):
    monkeypatch.setattr(_validate, "_OVERLAP_WORK", 0)
    backing = rng.standard_normal((6, 20))
    with pytest.raises(ValueError, match="could not decide whether out and logits share memory"):
        ce.cross_entropy_and_grad(backing[:, ::2], np.zeros(6, int), out=backing[:, 1::2])
    # arrays whose address ranges are apart need no effort at all
    ce.cross_entropy_and_grad(backing[:3], np.zeros(3, int), out=backing[3:])


def test_softmax_out_overlapping_x_partly_is_refused(rng):
    backing = rng.standard_normal((5, 8))
    with pytest.raises(ValueError, match="out overlaps x without being x itself"):
        ce.softmax(backing[:4], out=backing[1:])


# --- outputs whose own elements overlap ---------------------------------------------

def _self_overlapping(kind, shape):
    buffer = np.zeros(shape[0] * shape[1] + 64)
    ast = np.lib.stride_tricks.as_strided
    if kind == "zero stride":
        return ast(buffer, shape=shape, strides=(0, 8))
    if kind == "rows overlapping":
        return ast(buffer, shape=shape, strides=(8 * (shape[1] // 2), 8))
    return ast(buffer, shape=shape, strides=(8, 8))          # a sliding window


@pytest.mark.parametrize("kind", ["zero stride", "rows overlapping", "sliding window"])
@pytest.mark.parametrize("n_classes", [5, C])
def test_outputs_whose_elements_overlap_are_refused(rng, kind, n_classes):
    logits = rng.standard_normal((4, n_classes))
    target = np.arange(4) % n_classes
    out = _self_overlapping(kind, (4, n_classes))
    before = out.copy()
    with pytest.raises(ValueError, match="out has elements that share memory"):
        ce.cross_entropy_and_grad(logits, target, out=out)
    with pytest.raises(ValueError, match="out has elements that share memory"):
        ce.softmax(logits, out=out)
    inplace = _self_overlapping(kind, (4, n_classes))
    inplace[...] = 0.5
    with pytest.raises(ValueError, match="logits has elements that share memory"):
        ce.cross_entropy_and_grad(inplace, target, inplace=True)
    np.testing.assert_array_equal(out, before)


def test_broadcast_read_only_inputs_are_still_accepted(rng):
    row = rng.standard_normal(C)
    logits = np.broadcast_to(row, (4, C))
    loss, grad = ce.cross_entropy_and_grad(logits, [0, 1, 2, 3])
    expected_loss, expected_grad = ref.cross_entropy_full(np.array(logits), [0, 1, 2, 3])
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)


def test_an_as_strided_output_whose_elements_are_distinct_is_accepted(rng):
    # strides that interleave without overlapping: offsets 0 24 | 16 40 | 32 56
    buffer = np.zeros(8)
    out = np.lib.stride_tricks.as_strided(buffer, shape=(3, 2), strides=(16, 24))
    logits = rng.standard_normal((3, 2))
    _, grad = ce.cross_entropy_and_grad(logits, [0, 1, 1], out=out)
    np.testing.assert_allclose(out, ref.cross_entropy_grad(logits, [0, 1, 1]), atol=1e-15)


# --- unusual layouts: converted, with at most one temporary array ---------------------

@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_the_other_byte_order_is_accepted_everywhere(rng, dtype):
    native = np.dtype(dtype)
    logits = (rng.standard_normal((6, 70)) * 3).astype(native)
    probabilities = rng.random((6, 70)).astype(native)
    target = np.arange(6) * 7
    weight = rng.random(70) + 0.5
    other = lambda a: a.astype(a.dtype.newbyteorder("S"))      # noqa: E731  (swapped)
    for t in (target, probabilities):
        expected = ce.cross_entropy_and_grad(logits, t, weight=weight, reduction="none")
        got = ce.cross_entropy_and_grad(other(logits), other(t), weight=other(weight),
                                        reduction="none")
        assert got[0].dtype == native and got[1].dtype == native
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        out = other(np.zeros_like(logits))
        assert ce.cross_entropy_and_grad(other(logits), t, out=out)[1] is out
        np.testing.assert_array_equal(out, ce.cross_entropy_and_grad(logits, t)[1])
        buffer = other(logits)
        ce.cross_entropy_and_grad(buffer, t, inplace=True)
        np.testing.assert_array_equal(buffer, ce.cross_entropy_and_grad(logits, t)[1])
    np.testing.assert_array_equal(ce.softmax(other(logits)), ce.softmax(logits))
    np.testing.assert_array_equal(ce.logsumexp(other(logits)), ce.logsumexp(logits))


def _transposed_4d(rng, dtype=np.float32):
    """Class axis 1 of a 4-D view that no (outer, classes, inner) view addresses."""
    base = rng.standard_normal((6, 40, 50, 30)).astype(dtype)
    return base.transpose(2, 1, 3, 0)                          # (50, 40, 30, 6)


def _swapped(a):
    return a.astype(a.dtype.newbyteorder("S"))


def _misaligned(a):
    buffer = np.empty(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buffer[1:].data, a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _peak_bytes(call):
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# layouts the kernels cannot address: (logits, the same layout for out, class axis)
LAYOUTS = {
    "transposed 4-D": lambda rng: (_transposed_4d(rng), 1),
    "other byte order": lambda rng: (_swapped(rng.standard_normal((300, 2000))), -1),
    "misaligned": lambda rng: (_misaligned(rng.standard_normal((300, 2000))), -1),
}


def _like(a):
    """An empty array of `a`'s shape in `a`'s layout kind."""
    if not a.flags.aligned:
        return _misaligned(np.zeros(a.shape, a.dtype))
    if not a.dtype.isnative:
        return np.zeros(a.shape, a.dtype)
    return np.empty_like(a.base).transpose(2, 1, 3, 0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_without_a_view_cost_one_temporary_array_at_most(rng, layout):
    logits, axis = LAYOUTS[layout](rng)
    assert _validate._view3(logits, axis) is None
    positions = logits.shape[:axis % logits.ndim] + logits.shape[axis % logits.ndim + 1:]
    target = rng.integers(0, logits.shape[axis], positions)
    plain = np.ascontiguousarray(logits, dtype=logits.dtype.newbyteorder("="))
    expected_loss, expected_grad = ce.cross_entropy_and_grad(plain, target, axis=axis)
    expected_softmax = ce.softmax(plain, axis=axis)
    buffer = _like(logits)
    buffer[...] = logits
    out = _like(logits)
    x = _like(logits)
    x[...] = logits
    calls = [
        ("inplace", lambda: ce.cross_entropy_and_grad(buffer, target, axis=axis, inplace=True),
         lambda result: result[1] is buffer, expected_grad),
        ("out", lambda: ce.cross_entropy_and_grad(logits, target, axis=axis, out=out),
         lambda result: result[1] is out, expected_grad),
        ("new", lambda: ce.cross_entropy_and_grad(logits, target, axis=axis),
         lambda result: True, expected_grad),
        ("softmax out", lambda: ce.softmax(logits, axis=axis, out=out),
         lambda result: result is out, expected_softmax),
        ("softmax in place", lambda: ce.softmax(x, axis=axis, out=x),
         lambda result: result is x, expected_softmax),
    ]
    for name, call, delivered, expected in calls:
        results = []
        peak = _peak_bytes(lambda: results.append(call()))
        # the temporary is the kernel's copy of the logits (or, new, the result itself)
        assert peak < 1.05 * logits.nbytes, (name, peak / logits.nbytes)
        result = results[0]
        assert delivered(result), name
        grad = result[1] if isinstance(result, tuple) else result
        np.testing.assert_array_equal(grad, expected)
        if isinstance(result, tuple):
            assert result[0] == expected_loss
