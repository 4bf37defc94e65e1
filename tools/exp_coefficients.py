"""Where the exp's polynomial coefficients come from (src/crossentropy/csrc/expmath.h).

    python tools/exp_coefficients.py           # fit, compare with expmath.h, report
    python tools/exp_coefficients.py --check   # exit 1 unless the float fit reproduces them
    python tools/exp_coefficients.py --ulp     # also measure the float exp over every float

exp(x) = 2^n p(r), r = x - n ln2, p(r) = 1 + r + r^2 q(r).  For float, q (degree
4) is the minimax fit of the relative error of p on |r| <= 0.34675, by the
Remez exchange algorithm in mpmath, each coefficient then rounded to float:
that gives expmath.h's float coefficients exactly.  How they were first made
is not recorded: the half-width 0.34675 was found by searching for one that
reproduces them (0.34674 and 0.34676 each miss some, and ln2/2 = 0.346574 two
of the five by a unit in the last place; the reduction's rounding would
justify a margin of about 1e-5, not the 1.8e-4 used).  For double (degree 9) expmath.h's coefficients are
close to the Taylor series; how they were fitted is not recorded, and this
fit (minimax, |r| <= ln2/2) differs from them in the last bits, so the script
reports its own and measures theirs.  The log (ce_log_normal) sums the atanh
series, whose coefficients are 1/(2k+1): nothing to fit.

Needs mpmath (pip install mpmath); --ulp needs the built package.
"""

import argparse
import os
import re
import sys

import mpmath as mp

HEADER = os.path.join(os.path.dirname(__file__), os.pardir, "src", "crossentropy", "csrc",
                      "expmath.h")
FLOAT_HALF_WIDTH = "0.34675"


def shipped():
    """expmath.h's coefficients of q, constant term first: (float, double)."""
    text = open(HEADER).read()
    out = []
    for name in ("ce_exp_poly_f32", "ce_exp_poly_f64"):
        body = text[text.index(name):]
        body = body[:body.index("return")]
        values = re.findall(r"p = (?:p \* r \+ )?([-0-9.e]+)f?;", body)
        out.append([float(v) for v in reversed(values)])
    out[0] = [float32(v) for v in out[0]]         # the float literals, as the compiler reads them
    return out


def q_target(r):
    """q(r) = (e^r - 1 - r) / r^2, its limit 1/2 at 0."""
    return (mp.exp(r) - 1 - r) / r**2 if r != 0 else mp.mpf(1) / 2


def weight(r):
    """The relative error of p is weight(r) (q_fit(r) - q(r))."""
    return r**2 / mp.exp(r)


def remez(degree, half_width, iterations=8, grid=1200):
    """Coefficients of the degree-`degree` polynomial that minimises the
    largest weighted error on [-half_width, half_width], and that error."""
    a, b = -half_width, half_width
    n = degree + 2
    xs = [(a + b) / 2 + (b - a) / 2 * mp.cos(mp.pi * (n - 1 - i) / (n - 1)) for i in range(n)]
    for _ in range(iterations):
        A = mp.matrix(n, n)
        rhs = mp.matrix(n, 1)
        for i, x in enumerate(xs):
            for j in range(degree + 1):
                A[i, j] = weight(x) * x**j
            A[i, degree + 1] = -(-1) ** i
            rhs[i] = weight(x) * q_target(x)
        sol = mp.lu_solve(A, rhs)
        c = [sol[j] for j in range(degree + 1)]

        def err(x, c=c):
            return weight(x) * (mp.polyval(c[::-1], x) - q_target(x))

        # the extrema of the error between its sign changes become the new reference
        pts = [a + (b - a) * k / grid for k in range(grid + 1)]
        vals = [err(x) for x in pts]
        bounds = [a] + [mp.findroot(err, (pts[k], pts[k + 1]), solver="anderson")
                        for k in range(grid) if vals[k] * vals[k + 1] < 0] + [b]
        new = []
        for lo, hi in zip(bounds, bounds[1:]):
            # the largest |error| between two zeros: sampled, then golden section
            best = max((lo + (hi - lo) * t / 64 for t in range(65)), key=lambda t: abs(err(t)))
            left, right = max(lo, best - (hi - lo) / 64), min(hi, best + (hi - lo) / 64)
            for _ in range(50):
                m1, m2 = left + (right - left) * 0.382, left + (right - left) * 0.618
                if abs(err(m1)) > abs(err(m2)):
                    right = m2
                else:
                    left = m1
            new.append((left + right) / 2)
        if len(new) == n:
            xs = new
    return c, max(abs(err(a + (b - a) * k / grid)) for k in range(grid + 1))


def relative_error(coeffs, half_width, grid=4000):
    """The largest relative error of p on |r| <= half_width, q's coefficients
    taken as exact."""
    q = [mp.mpf(c) for c in coeffs]
    return max(abs(weight(r) * (mp.polyval(q[::-1], r) - q_target(r)))
               for r in (half_width * (2 * k / grid - 1) for k in range(grid + 1)))


def float32(x):
    import numpy as np
    return float(np.float32(float(x)))


def float_ulp_over_every_float():
    """The float exp's largest error in ulp over every float with a normal
    result, against float64 (exact to 2^-29 of a float ulp)."""
    import numpy as np
    from crossentropy import _kernels
    worst, where = 0.0, None
    step = 1 << 24
    for sign, stop in ((0, np.float32(88.72)), (1, np.float32(-104.0))):
        last = int(np.array(stop, np.float32).view(np.uint32))
        first = 0x80000000 if sign else 0
        for start in range(first, last + 1, step):
            bits = np.arange(start, min(start + step, last + 1), dtype=np.uint32)
            x = bits.view(np.float32)
            got = np.empty_like(x)
            _kernels.exp(x, got)
            exact = np.exp(x.astype(np.float64))
            normal = exact >= np.finfo(np.float32).tiny
            exact, got, x = exact[normal], got[normal], x[normal]
            spacing = np.ldexp(1.0, np.frexp(exact)[1] - 24)
            err = np.abs(got.astype(np.float64) - exact) / spacing
            k = int(np.argmax(err)) if err.size else 0
            if err.size and err[k] > worst:
                worst, where = float(err[k]), float(x[k])
    return worst, where


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless the float fit gives expmath.h's coefficients")
    parser.add_argument("--ulp", action="store_true",
                        help="measure the float exp over every float (about a minute)")
    args = parser.parse_args()
    mp.mp.dps = 40
    float_shipped, double_shipped = shipped()

    coeffs, error = remez(4, mp.mpf(FLOAT_HALF_WIDTH))
    fitted = [float32(c) for c in coeffs]
    same = fitted == float_shipped
    print(f"float: q of degree 4, minimax on |r| <= {FLOAT_HALF_WIDTH}: relative error "
          f"{mp.nstr(error, 3)} before rounding")
    for f, s in zip(fitted, float_shipped):
        print(f"  {f!r:>24}  {'==' if f == s else '!='}  expmath.h {s!r}")
    if args.check:
        sys.exit(0 if same else 1)

    ln2_half = mp.log(2) / 2
    print(f"double: expmath.h's q (degree 9): relative error "
          f"{mp.nstr(relative_error(double_shipped, ln2_half), 3)} before rounding on |r| <= ln2/2")
    coeffs, error = remez(9, ln2_half, iterations=14, grid=2000)
    print(f"  a minimax fit of the same degree would reach {mp.nstr(error, 3)}:")
    for c in coeffs:
        print(f"  {float(c)!r}")
    if args.ulp:
        worst, where = float_ulp_over_every_float()
        print(f"float exp: at most {worst:.4f} ulp over every float with a normal result "
              f"(at x = {where!r})")


if __name__ == "__main__":
    main()
