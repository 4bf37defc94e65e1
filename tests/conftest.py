import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def tolerance(dtype):
    """Absolute/relative tolerance for comparing against the float64 reference."""
    return {"rtol": 2e-6, "atol": 2e-6} if np.dtype(dtype) == np.float32 else {"rtol": 1e-12, "atol": 1e-13}
