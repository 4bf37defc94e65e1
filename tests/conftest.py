import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def tolerance(dtype):
    """Absolute/relative tolerance for comparing against the float64 reference
    (logits of scale about 3; see test_properties.scaled_tolerance for others)."""
    return {"rtol": 2e-6, "atol": 2e-6} if np.dtype(dtype) == np.float32 else {"rtol": 1e-12, "atol": 1e-13}


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
