"""The vectorised exp used by every kernel, against NumPy's exp."""

import os
import subprocess
import sys

import numpy as np
import pytest

from crossentropy import _kernels

TOOL = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "exp_coefficients.py")


def _exp(x):
    got = np.empty_like(x)
    _kernels.exp(x, got)
    return got


def _ulp(got, exact):
    """|got - exact| in units of the last place of the exact value (in got's dtype)."""
    bits = np.finfo(got.dtype).nmant + 1
    spacing = np.ldexp(1.0, np.frexp(exact)[1] - bits)
    return np.abs(got.astype(np.float64) - exact) / spacing


def test_float32_exp_is_within_the_readmes_bound_over_its_range():
    # README: at most 1.03 ulp over every float with a normal result (1.0267,
    # measured by tools/exp_coefficients.py --ulp); here every 97th float and
    # the worst one.  The float64 exp is the reference (exact to 2^-29 ulp).
    every = np.arange(0, 2**32, 97, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([every[(every >= -104) & (every <= 88.72)],
                        np.array([float.fromhex("0x1.da1e4p+5")], np.float32)])
    exact = np.exp(x.astype(np.float64))
    normal = exact >= np.finfo(np.float32).tiny
    errors = _ulp(_exp(x)[normal], exact[normal])
    assert errors.max() <= 1.03, errors.max()
    if _kernels.dispatch_target() != "baseline":
        assert errors[-1] > 1.02          # (the FMA levels' worst point is in the sample)
    # subnormal results: gradual underflow, within one subnormal step
    tiny_step = np.finfo(np.float32).smallest_subnormal
    assert np.abs(_exp(x[~normal]) - exact[~normal]).max() <= tiny_step


def test_float64_exp_is_within_the_readmes_bound_over_its_range():
    # README: at most 1.06 ulp (1.0508 on 250 000 points); the reference is
    # mpmath at 120 bits, not long double (which is double on some platforms).
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 120
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-708, 709.7, 6000), rng.uniform(-1, 1, 2000),
                        [float.fromhex("-0x1.2bc937b0e1072p+8")]])
    got = _exp(x)
    exact = [mpmath.exp(mpmath.mpf(float(v))) for v in x]
    spacing = [mpmath.ldexp(1, int(mpmath.frexp(e)[1]) - 53) for e in exact]
    errors = np.array([float(abs(mpmath.mpf(float(g)) - e) / u)
                       for g, e, u in zip(got, exact, spacing)])
    assert errors.max() <= 1.06, errors.max()
    if _kernels.dispatch_target() != "baseline":
        assert errors[-1] > 1.05
    # subnormal results: within one subnormal step of the rounded exact value
    low = np.linspace(-745.0, -708.5, 20001)
    exact_low = np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in low])
    assert np.abs(_exp(low) - exact_low).max() <= np.finfo(np.float64).smallest_subnormal


@pytest.mark.skipif(not os.path.exists(TOOL), reason="needs the source tree's tools/")
def test_the_float_exps_coefficients_are_what_the_fit_gives():
    pytest.importorskip("mpmath")
    done = subprocess.run([sys.executable, TOOL, "--check"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


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
