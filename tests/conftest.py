import itertools

import numpy as np
import pytest

from crossentropy import _kernels


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def tolerance(dtype):
    """Absolute/relative tolerance for comparing against the float64 reference
    (logits of scale about 3; see test_properties.scaled_tolerance for others)."""
    return {"rtol": 2e-6, "atol": 2e-6} if np.dtype(dtype) == np.float32 else {"rtol": 1e-12, "atol": 1e-13}


# (shape, axis) for each kernel path: short rows, both sides of the short-row
# bound, long rows, runs, the shape whose rows the threads share, and a
# K-dimensional layout (class axis 1)
PATHS = [((70, 7), -1), ((9, _kernels.SMALL_ROW_LEN), -1), ((9, _kernels.SMALL_ROW_LEN + 9), -1),
         ((5, 1000), -1), ((4, _kernels.RUNS_MIN_LEN + 5), -1),
         ((2, _kernels.SPLIT_MIN_CLASSES_LEN + 7), -1), ((3, 5, 4, 2), 1)]

# Every combination of (probabilities, ignore some positions, class weights,
# label smoothing, sample weights) but ignore_index with probabilities, which
# does not apply to them.
OPTION_GRID = [
    options for options in itertools.product([False, True], [False, True], [False, True],
                                             [0.0, 0.3], [False, True])
    if not (options[0] and options[1])
]


def option_case(rng, shape, axis, options, dtype=np.float64):
    """random_case for one entry of OPTION_GRID, label smoothing in the options."""
    probabilities, ignore, weighted, eps, sample_weighted = options
    logits, target, kwargs = random_case(rng, shape, axis, dtype=dtype,
                                         probabilities=probabilities, ignore=ignore,
                                         weighted=weighted, sample_weighted=sample_weighted)
    return logits, target, dict(kwargs, label_smoothing=eps)


def lm_id(options):
    """A readable id for a dict of language-model options: 'z_loss0.05-softcap2.5'."""
    return "-".join(f"{k}{v}" for k, v in options.items()) or "nolm"


def option_id(options):
    """A readable id for one case of an option grid (probabilities, ignore,
    weighted, eps, sample_weighted): e.g. 'probs-weight-smooth0.3'."""
    probabilities, ignore, weighted, eps, sample_weighted = options
    names = [name for name, on in (("probs", probabilities), ("ignore", ignore),
                                   ("weight", weighted), (f"smooth{eps}", eps),
                                   ("sample_weight", sample_weighted)) if on]
    return "-".join(names) or "plain"


def shape_id(value):
    """(17, 6) as '17x6'; other values as pytest shows them."""
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    return None


def random_case(rng, shape, axis, *, dtype=np.float64, probabilities=False, ignore=False,
                weighted=False, sample_weighted=False):
    """Random logits, targets and options: probabilities or class indices (some
    ignored), class weights, sample weights."""
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    n_classes = shape[axis]
    positions = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    if probabilities:
        target = rng.random(shape).astype(dtype)
        target /= target.sum(axis=axis, keepdims=True)
    else:
        target = rng.integers(0, n_classes, positions)
        if ignore:
            target[rng.random(positions) < 0.3] = -100
            target.flat[0] = 0                     # at least one position counts
    kwargs = {}
    if weighted:
        kwargs["weight"] = rng.random(n_classes) + 0.1
    if sample_weighted:
        kwargs["sample_weight"] = rng.random(positions) * 2
    return logits, target, kwargs
