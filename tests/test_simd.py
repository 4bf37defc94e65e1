"""The vectorised exp used by every kernel, against NumPy's exp."""

import numpy as np
import pytest

from crossentropy import _kernels


def ulp_error(got, expected):
    """|got - expected| in units of the last place of expected (in got's dtype)."""
    expected_rounded = expected.astype(got.dtype)
    spacing = np.spacing(np.abs(expected_rounded).astype(got.dtype))
    return np.abs(got.astype(np.float64) - expected) / spacing.astype(np.float64)


@pytest.mark.parametrize("dtype, low, high", [(np.float32, -104.0, 88.7), (np.float64, -745.0, 709.7)])
def test_exp_is_within_two_ulp_over_its_whole_range(dtype, low, high):
    x = np.linspace(low, high, 2_000_003).astype(dtype)
    got = np.empty_like(x)
    _kernels.exp(x, got)
    expected = np.exp(x.astype(np.longdouble)).astype(np.float64)
    normal = expected >= np.finfo(dtype).tiny
    assert ulp_error(got[normal], expected[normal]).max() <= 2.0
    # Subnormal results: gradual underflow, within one subnormal step.
    tiny_step = np.finfo(dtype).smallest_subnormal
    assert np.abs(got[~normal] - expected[~normal]).max() <= tiny_step


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, -1e30, 1e30], dtype=dtype)
    got = np.empty_like(x)
    _kernels.exp(x, got)
    np.testing.assert_array_equal(got, [0.0, np.inf, np.nan, 1.0, 1.0, 0.0, np.inf])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_overflow_and_underflow_edges(dtype):
    info = np.finfo(dtype)
    log_max = np.log(np.float64(info.max))
    x = np.array([np.nextafter(dtype(log_max), dtype(0)), dtype(log_max) * dtype(1.001)], dtype=dtype)
    got = np.empty_like(x)
    _kernels.exp(x, got)
    assert np.isfinite(got[0]) and got[1] == np.inf
