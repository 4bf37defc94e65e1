/*
 * exp and log, branch-free so that they vectorise; inlined into the row loops.
 *
 * exp(x) for every x: x = n*ln2 + r with |r| <= ln2/2, exp(x) = 2^n * p(r),
 * p(r) = 1 + r + r^2 q(r).  The clamps keep n in a range where 2^n is built
 * exactly; scaling in two halves (2^n1 * 2^n2) makes results below the least
 * normal number gradual (subnormal) and results past the largest +inf, both
 * correctly rounded from p(r).  exp(-inf) = 0, exp(+inf) = +inf, NaN stays NaN
 * (a comparison with NaN is false, so the clamps pass it through).  The
 * polynomials are per type; everything else is exp_template.h, once per type.
 *
 * Accuracy (tools/exp_coefficients.py measures it, tests/test_simd.py checks
 * it): float at most 1.03 ulp over every argument with a normal result,
 * double at most 1.06 ulp on a sample (against mpmath).
 */
#ifndef CE_EXPMATH_H
#define CE_EXPMATH_H

#include "platform.h"

/* x = n*ln2 + r: returns p(r) ~ exp(r) and sets *b to x/ln2 + 1.5*2^23, a
   float whose low mantissa bits hold the integer n (two's complement).  q:
   degree 4, the minimax relative error of p on |r| <= 0.34675 (3.07e-9
   before rounding), rounded to float.  The fit that made them was not
   recorded; tools/exp_coefficients.py reproduces them exactly with that
   half-width, found by search (ln2/2 itself gives two coefficients that
   differ in the last place). */
CE_INLINE float ce_exp_poly_f32(float x, float *b)
{
    const float magic = 0x1.8p23f;
    *b = x * 0x1.715476p0f + magic;
    float n = *b - magic;                                /* round(x / ln2) */
    float r = x - n * 0.693359375f;                      /* ln2, high part */
    r = r - n * -2.12194440e-4f;                         /* ln2, low part */
    float p = 1.381453825e-3f;
    p = p * r + 8.368745446e-3f;
    p = p * r + 4.166838899e-2f;
    p = p * r + 1.666652113e-1f;
    p = p * r + 4.999999404e-1f;
    return p * r * r + r + 1.0f;
}

/* As ce_exp_poly_f32, for double: q of degree 9, close to the Taylor series
   (relative error of p 1.65e-17 on |r| <= ln2/2 before rounding, which
   tools/exp_coefficients.py measures; how they were fitted is not
   recorded, and the script's own minimax fit differs in the last bits). */
CE_INLINE double ce_exp_poly_f64(double x, double *b)
{
    const double magic = 0x1.8p52;
    *b = x * 0x1.71547652b82fep0 + magic;
    double n = *b - magic;
    double r = x - n * 6.93147180369123816490e-01;       /* 32 significant bits */
    r = r - n * 1.90821492927058770002e-10;
    double p = 2.5105313423078524e-08;
    p = p * r + 2.76202026313159e-07;
    p = p * r + 2.7557255168123062e-06;
    p = p * r + 2.4801521055364205e-05;
    p = p * r + 0.00019841269875003973;
    p = p * r + 0.0013888888917368964;
    p = p * r + 0.008333333333326082;
    p = p * r + 0.04166666666662382;
    p = p * r + 0.1666666666666667;
    p = p * r + 0.5000000000000001;
    return p * r * r + r + 1.0;
}

/* From here on exp(x) is a normal number for x >= CE_NORMAL (and x <= 0). */
#define CE_NORMAL_f32 (-87.0f)                /* n >= round(-87 / ln2) = -126 */
#define CE_NORMAL_f64 (-708.0)                /* n >= round(-708 / ln2) = -1021 */

#include "type_f32.h"
#include "exp_template.h"
#include "type_undef.h"
#include "type_f64.h"
#include "exp_template.h"
#include "type_undef.h"

/*
 * tanh(x) in double, branch-free so that it vectorises (logit softcapping,
 * c tanh(z / c)).  |x| < 0.375: the Taylor series to x^25 (coefficients
 * 2^2k (2^2k - 1) B_2k / (2k)!; truncation below half an ulp); beyond, (1 - e) /
 * (1 + e) with e = exp(-2|x|), which no longer cancels there.  At most 3 ulp
 * (tests/test_lm_options.py, against mpmath); tanh(+-inf) = +-1, NaN stays NaN.
 */
CE_INLINE double ce_tanh(double x)
{
    double a = fabs(x), a2 = a * a;
    double e = ce_exp_nonpos_f64(-2.0 * a);
    double far = (1.0 - e) / (1.0 + e);
    double p = 1.5918905069328964e-05;
    p = p * a2 + -3.927832388331683e-05;
    p = p * a2 + 9.691537956929451e-05;
    p = p * a2 + -0.00023912911424355248;
    p = p * a2 + 0.000590027440945586;
    p = p * a2 + -0.0014558343870513183;
    p = p * a2 + 0.003592128036572481;
    p = p * a2 + -0.008863235529902197;
    p = p * a2 + 0.021869488536155203;
    p = p * a2 + -0.05396825396825397;
    p = p * a2 + 0.13333333333333333;
    p = p * a2 + -0.3333333333333333;
    double near = a + a * a2 * p;
    return copysign(a < 0.375 ? near : far, x);
}

/* Whether x is a positive normal double (what ce_log_normal takes); false
   for NaN. */
CE_INLINE int ce_normal_double(double x)
{
    return x >= 0x1p-1022 && x <= 0x1.fffffffffffffp1023;
}

/*
 * log(x) for double x > 0 (normal, finite), branch-free so that it vectorises.
 * x = 2^e * f with f in [sqrt(1/2), sqrt(2)); log f = 2 atanh(u), u = (f-1)/(f+1),
 * |u| < 0.172, summed to u^23 (truncation < 1e-19).  Other inputs (0,
 * subnormals, inf, NaN, negatives) give garbage: callers fix those lanes up
 * with libm's log (as ce_short_xent does).
 */
CE_INLINE double ce_log_normal(double x)
{
    uint64_t u, e_bits;
    double f, e;
    memcpy(&u, &x, 8);
    e_bits = u >> 52;                                         /* biased exponent */
    u = (u & UINT64_C(0x000FFFFFFFFFFFFF)) | UINT64_C(0x3FF0000000000000);
    memcpy(&f, &u, 8);                                        /* f in [1, 2) */
    /* the exponent as a double without a 64-bit int conversion (not in AVX2) */
    e_bits |= UINT64_C(0x4330000000000000);
    memcpy(&e, &e_bits, 8);
    e -= 0x1p52 + 1023.0;
    if (f > 1.4142135623730951) { f *= 0.5; e += 1.0; }
    double v = (f - 1.0) / (f + 1.0), v2 = v * v;
    double p = 1.0 / 23;
    p = p * v2 + 1.0 / 21;
    p = p * v2 + 1.0 / 19;
    p = p * v2 + 1.0 / 17;
    p = p * v2 + 1.0 / 15;
    p = p * v2 + 1.0 / 13;
    p = p * v2 + 1.0 / 11;
    p = p * v2 + 1.0 / 9;
    p = p * v2 + 1.0 / 7;
    p = p * v2 + 1.0 / 5;
    p = p * v2 + 1.0 / 3;
    return e * 6.93147180369123816490e-01 + (2.0 * v * p * v2 + 2.0 * v)
           + e * 1.90821492927058770002e-10;
}

#endif /* CE_EXPMATH_H */
