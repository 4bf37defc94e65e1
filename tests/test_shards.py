"""Rows whose classes are split into shards: cross_entropy_partials,
combine_partials, cross_entropy_from_partials and cross_entropy_shard_grad
give the whole rows' loss and gradient, on every kernel path and with every
option, against the float64 reference, the NumPy API and finite
differences."""

import numpy as np
import pytest

import crossentropy as ce

from conftest import (
    OPTION_GRID, PATHS, lm_id, option_case as case, option_id, shape_id, tolerance,
)
import reference as ref

LM_OPTIONS = [{}, dict(z_loss=0.05), dict(softcap=2.5), dict(z_loss=0.02, softcap=4.0)]
PARTIAL_OPTIONS = ("weight", "ignore_index", "label_smoothing", "softcap")
FINISH_OPTIONS = ("weight", "ignore_index", "sample_weight", "z_loss")


def cuts_of(rng, n_classes, n_shards=3):
    """Shard boundaries: random, with an empty shard among them."""
    inner = sorted(rng.integers(0, n_classes + 1, n_shards - 1).tolist())
    return [0] + inner + inner[-1:] + [n_classes]


def sharded(logits, target, cuts, axis=-1, reduction="mean", **options):
    """The loss and gradient of the whole rows, a shard of classes at a time."""
    axis = axis % logits.ndim
    n_classes = logits.shape[axis]
    probabilities = np.asarray(target).dtype.kind == "f"

    def part(a, b):
        return (slice(None),) * axis + (slice(a, b),)

    def shard_target(a, b):
        return np.asarray(target)[part(a, b)] if probabilities else target

    shards = list(zip(cuts, cuts[1:]))
    parts = [ce.cross_entropy_partials(
        logits[part(a, b)], shard_target(a, b), class_start=a, n_classes=n_classes, axis=axis,
        **{k: v for k, v in options.items() if k in PARTIAL_OPTIONS}) for a, b in shards]
    totals = ce.combine_partials(parts)
    loss = ce.cross_entropy_from_partials(
        totals, None if probabilities else target, n_classes=n_classes, reduction=reduction,
        dtype=logits.dtype, **{k: v for k, v in options.items() if k in FINISH_OPTIONS})
    grad = np.concatenate([ce.cross_entropy_shard_grad(
        logits[part(a, b)], shard_target(a, b), totals, class_start=a, n_classes=n_classes,
        axis=axis, reduction=reduction, **options) for a, b in shards], axis=axis)
    return loss, grad, totals


# --- the whole rows' results ---------------------------------------------------------

@pytest.mark.parametrize("lm", LM_OPTIONS, ids=lm_id)
@pytest.mark.parametrize("options", OPTION_GRID, ids=option_id)
@pytest.mark.parametrize("shape", [(70, 7), (5, 1000)], ids=shape_id)
def test_every_option_gives_the_whole_rows_result(rng, shape, options, lm):
    logits, target, kwargs = case(rng, shape, -1, options)
    kwargs.update(lm)
    cuts = cuts_of(rng, shape[-1])
    for reduction in ("mean", "sum", "none"):
        loss, grad, _ = sharded(logits, target, cuts, reduction=reduction, **kwargs)
        want, want_grad = ce.cross_entropy_and_grad(logits, target, reduction=reduction, **kwargs)
        np.testing.assert_allclose(loss, want, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-16)
        ref_loss, ref_grad = ref.cross_entropy_full(logits, target, reduction=reduction, **kwargs)
        np.testing.assert_allclose(loss, ref_loss, **tolerance(np.float64))
        np.testing.assert_allclose(grad, ref_grad, **tolerance(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lm", LM_OPTIONS[::3], ids=lm_id)
@pytest.mark.parametrize("options", [(False, True, True, 0.3, True), (True, False, True, 0.0, False),
                                     (False, False, False, 0.0, False)], ids=option_id)
@pytest.mark.parametrize("shape,axis", PATHS, ids=shape_id)
def test_every_path_gives_the_reference(rng, shape, axis, options, lm, dtype):
    logits, target, kwargs = case(rng, shape, axis, options, dtype)
    kwargs.update(lm)
    cuts = cuts_of(rng, shape[axis])
    loss, grad, _ = sharded(logits, target, cuts, axis=axis, **kwargs)
    ref_loss, ref_grad = ref.cross_entropy_full(logits, target, axis=axis, **kwargs)
    tol = tolerance(dtype)
    if dtype == np.float32 and lm.get("softcap"):
        tol = {"rtol": 4e-6, "atol": 4e-6}
    assert loss.dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(loss, ref_loss, **tol)
    np.testing.assert_allclose(grad, ref_grad, **tol)
    # and the NumPy API's: the same float64 sums, grouped by shard, rounded once
    want, want_grad = ce.cross_entropy_and_grad(logits, target, axis=axis, **kwargs)
    eps = np.finfo(dtype).eps if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(loss, want, rtol=2 * eps)
    np.testing.assert_allclose(grad, want_grad, rtol=4 * eps, atol=4 * eps * np.abs(want_grad).max())


def test_finite_differences_of_the_sharded_loss(rng):
    logits = rng.standard_normal((4, 9)) * 2
    target = np.array([1, -100, 8, 4])
    kwargs = dict(weight=rng.random(9) + 0.2, label_smoothing=0.2, sample_weight=rng.random(4),
                  z_loss=0.1, softcap=3.0)
    cuts = [0, 2, 2, 7, 9]
    _, grad, _ = sharded(logits, target, cuts, **kwargs)
    numeric = ref.finite_difference_grad(lambda z: float(sharded(z, target, cuts, **kwargs)[0]),
                                         logits)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
def test_half_precision_gives_the_whole_rows_bits(rng, kind):
    dtype = np.float16 if kind == "float16" else pytest.importorskip("ml_dtypes").bfloat16
    logits = (rng.standard_normal((40, 300)) * 3).astype(dtype)
    target = rng.integers(0, 300, 40)
    loss, grad, _ = sharded(logits, target, [0, 120, 300], z_loss=0.01)
    want, want_grad = ce.cross_entropy_and_grad(logits, target, z_loss=0.01)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert abs(float(loss) - float(want)) <= float(np.finfo(dtype).eps) * abs(float(want))
    np.testing.assert_allclose(grad.astype(np.float32), want_grad.astype(np.float32),
                               rtol=float(np.finfo(dtype).eps), atol=1e-7)


# --- the combination ---------------------------------------------------------------

def test_combining_is_associative_and_any_split_agrees(rng):
    logits = rng.standard_normal((30, 50)) * 4
    target = rng.integers(0, 50, 30)
    kwargs = dict(weight=rng.random(50), label_smoothing=0.1)

    def part(a, b):
        return ce.cross_entropy_partials(logits[:, a:b], target, class_start=a, n_classes=50,
                                         **kwargs)

    p, q, r = part(0, 10), part(10, 11), part(11, 50)
    left = ce.combine_partials([ce.combine_partials([p, q]), r])
    right = ce.combine_partials([p, ce.combine_partials([q, r])])
    whole = part(0, 50)
    np.testing.assert_allclose(left, right, rtol=1e-14)
    np.testing.assert_allclose(left, whole, rtol=1e-13)
    np.testing.assert_array_equal(ce.combine_partials([whole]), whole)
    # one class per shard, stacked along another axis
    singles = np.stack([part(j, j + 1) for j in range(50)], axis=1)
    np.testing.assert_allclose(ce.combine_partials(singles, axis=1), whole, rtol=1e-13)
    np.testing.assert_allclose(ce.combine_partials(singles, axis=-1), whole, rtol=1e-13)


def test_an_ignored_position_adds_nothing():
    parts = ce.cross_entropy_partials(np.ones((2, 3)), [-100, 1], class_start=0, n_classes=5)
    np.testing.assert_array_equal(parts[0], [-np.inf, 0, 0, 0])
    empty = ce.cross_entropy_partials(np.ones((2, 0)), [-100, 1], class_start=3, n_classes=5)
    np.testing.assert_array_equal(empty, [[-np.inf, 0, 0, 0]] * 2)
    np.testing.assert_array_equal(ce.combine_partials([parts, empty]), parts)


EDGE_LOGITS = np.array([[1, 2, 3, 4, 5, 6],
                        [-np.inf, -np.inf, -np.inf, 1, 2, 3],
                        [-np.inf] * 6,
                        [1, np.nan, 2, 3, 4, 5],
                        [1, np.inf, 2, 3, 4, 5],
                        [-np.inf, 0, 0, 0, 0, 0],
                        [0, 0, 0, -np.inf, -np.inf, -np.inf],
                        # (a shard of NaN alone, or NaN among -inf: the max passes over NaN)
                        [1, 2, 3, np.nan, np.nan, np.nan],
                        [np.nan, -np.inf, -np.inf, 1, 2, 3],
                        [-np.inf, -np.inf, -np.inf, -np.inf, np.nan, -np.inf]])
EDGE_TARGETS = np.array([0, 0, 3, 2, 1, 0, 4, 0, 4, 1])


@pytest.mark.parametrize("options", [
    {}, dict(label_smoothing=0.1), dict(weight=np.array([0, 1, 1, 1, 1, 1.0])),
    dict(z_loss=0.1), dict(sample_weight=np.array([1, 1, 1, 1, 1, 0, 0, 1, 0, 1.0])),
    dict(softcap=2.0), dict(label_smoothing=0.2, weight=np.array([1, 0, 1, 1, 0, 1.0]))],
    ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("cuts", [(0, 3, 6), (0, 1, 3, 3, 6), (0, 6)], ids=str)
def test_infinities_and_nans_as_the_whole_rows(options, cuts):
    with np.errstate(invalid="ignore"):
        want, want_grad = ce.cross_entropy_and_grad(EDGE_LOGITS, EDGE_TARGETS, reduction="none",
                                                    **options)
    loss, grad, _ = sharded(EDGE_LOGITS, EDGE_TARGETS, list(cuts), reduction="none", **options)
    np.testing.assert_allclose(loss, want, rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-16, equal_nan=True)


def test_all_ignored_and_the_lse(rng):
    logits = rng.standard_normal((6, 20))
    target = np.full(6, -100)
    loss, grad, totals = sharded(logits, target, [0, 5, 20])
    assert np.isnan(loss) and not grad.any()
    target = rng.integers(0, 20, 6)
    target[2] = -100
    totals = sharded(logits, target, [0, 5, 20])[2]
    _, lse = ce.cross_entropy_from_partials(totals, target, n_classes=20, return_lse=True,
                                            dtype=np.float32)
    want = ce.cross_entropy(logits.astype(np.float32), target, return_lse=True)[1]
    assert lse.dtype == np.float32
    np.testing.assert_allclose(lse, want, rtol=2e-7)
    assert lse[2] == 0


# --- outputs, threads ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["float16", "float32"])
def test_an_empty_shard_of_a_middle_class_axis(rng, kind):
    logits = np.zeros((3, 0, 5), kind)
    target = rng.integers(0, 4, (3, 5))
    parts = ce.cross_entropy_partials(logits, target, class_start=2, n_classes=4, axis=1)
    np.testing.assert_array_equal(parts, np.broadcast_to([-np.inf, 0, 0, 0], (3, 5, 4)))
    grad = ce.cross_entropy_shard_grad(logits, target, ce.combine_partials([parts]),
                                       class_start=2, n_classes=4, axis=1)
    assert grad.shape == (3, 0, 5) and grad.dtype == kind


def test_read_only_totals(rng):
    logits = rng.standard_normal((6, 8))
    target = rng.integers(0, 8, 6)
    totals = sharded(logits, target, [0, 3, 8])[2]
    want = ce.cross_entropy_shard_grad(logits[:, 3:], target, totals, class_start=3, n_classes=8)
    totals.setflags(write=False)
    got = ce.cross_entropy_shard_grad(logits[:, 3:], target, totals, class_start=3, n_classes=8)
    np.testing.assert_array_equal(got, want)


def test_gradient_in_place_and_into_out(rng):
    logits = rng.standard_normal((20, 40)).astype(np.float32)
    target = rng.integers(0, 40, 20)
    totals = sharded(logits, target, [0, 15, 40])[2]
    want = ce.cross_entropy_shard_grad(logits[:, 15:], target, totals, class_start=15,
                                       n_classes=40)
    shard = logits[:, 15:].copy()
    got = ce.cross_entropy_shard_grad(shard, target, totals, class_start=15, n_classes=40,
                                      inplace=True)
    assert got is shard
    np.testing.assert_array_equal(shard, want)
    out = np.empty((20, 25), np.float32)
    assert ce.cross_entropy_shard_grad(logits[:, 15:], target, totals, class_start=15,
                                       n_classes=40, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_thread_count_never_changes_a_bit(rng):
    logits = rng.standard_normal((3000, 300)).astype(np.float32)
    target = rng.integers(0, 300, 3000)
    results = []
    for n_threads in (1, 2, 3):
        parts = ce.cross_entropy_partials(logits[:, 100:], target, class_start=100,
                                          n_classes=300, n_threads=n_threads)
        grad = ce.cross_entropy_shard_grad(logits[:, 100:], target, parts, class_start=100,
                                           n_classes=300, n_threads=n_threads)
        results.append((parts, grad))
    for parts, grad in results[1:]:
        np.testing.assert_array_equal(parts, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])


# --- errors --------------------------------------------------------------------------

def test_errors_name_the_argument_and_write_nothing(rng):
    logits = rng.standard_normal((4, 5))
    target = np.array([0, 1, 2, 9])
    totals = ce.combine_partials([ce.cross_entropy_partials(
        logits, target, class_start=5, n_classes=10)])
    with pytest.raises(ValueError, match="class_start"):
        ce.cross_entropy_partials(logits, target, class_start=6, n_classes=10)
    with pytest.raises(ValueError, match="class_start"):
        ce.cross_entropy_partials(logits, target, class_start=-1, n_classes=10)
    with pytest.raises(TypeError, match="class_start"):
        ce.cross_entropy_partials(logits, target, class_start=1.5, n_classes=10)
    with pytest.raises(IndexError, match="10 classes"):
        ce.cross_entropy_partials(logits, [0, 1, 2, 10], class_start=0, n_classes=10)
    with pytest.raises(ValueError, match="weight"):
        ce.cross_entropy_partials(logits, target, class_start=0, n_classes=10,
                                  weight=np.ones(5))
    with pytest.raises(ValueError, match="target"):
        ce.cross_entropy_partials(logits, [0, 1], class_start=0, n_classes=10)
    with pytest.raises(TypeError, match="parts must be float64"):
        ce.combine_partials(totals.astype(np.float32)[None])
    with pytest.raises(ValueError, match="parts has shape"):
        ce.combine_partials(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="totals has shape"):
        ce.cross_entropy_from_partials(totals[:, :3], target, n_classes=10)
    with pytest.raises(ValueError, match="target has shape .* the totals' positions"):
        ce.cross_entropy_from_partials(totals[:3], target, n_classes=10)
    with pytest.raises(TypeError, match="totals must be float64"):
        ce.cross_entropy_from_partials(totals.astype(np.float32), target, n_classes=10)
    with pytest.raises(IndexError):
        ce.cross_entropy_from_partials(totals, [0, 1, 2, 10], n_classes=10)
    with pytest.raises(ValueError, match="z_loss"):
        ce.cross_entropy_from_partials(totals, target, n_classes=10, z_loss=-1.0)
    with pytest.raises(TypeError, match="dtype"):
        ce.cross_entropy_from_partials(totals, target, n_classes=10, dtype=np.int32)
    out = np.full((4, 5), 7.0)
    for bad in (dict(totals=totals[:3]), dict(target=[0, 1, 2, 10]),
                dict(totals=totals.astype(np.float32)), dict(class_start=6)):
        args = dict(logits=logits, target=target, totals=totals, class_start=5, n_classes=10)
        args.update(bad)
        with pytest.raises((ValueError, TypeError, IndexError)):
            ce.cross_entropy_shard_grad(args.pop("logits"), args.pop("target"),
                                        args.pop("totals"), out=out, **args)
        assert (out == 7.0).all()
    buffer = np.zeros(40)
    shared = buffer[:16].reshape(4, 4)
    shared[...] = totals
    with pytest.raises(ValueError, match="overlaps totals"):
        ce.cross_entropy_shard_grad(logits, target, shared, class_start=5, n_classes=10,
                                    out=buffer[:20].reshape(4, 5))
