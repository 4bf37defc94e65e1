/*
 * The exp of expmath.h for one type T (type_f32.h or type_f64.h is included
 * before this file, type_undef.h after it).
 *
 *   ce_pow2     2^n for the n held in b's low bits (see ce_exp_poly_f32), n a
 *               normal exponent; the magic's own bits shift out of the word
 *   ce_exp_tail exp of an x already clamped to [CE_EXP_LOW, CE_EXP_HIGH]:
 *               2^n applied in two halves, so that results below the least
 *               normal number are gradual (subnormal) and results past the
 *               largest +inf, both correctly rounded from p(r)
 *   ce_exp_any  exp of every x
 *   ce_exp_nonpos
 *               exp of x <= 0 or NaN (x = z - max in a softmax): no overflow
 *               to guard
 *   ce_exp_normal
 *               for CE_NORMAL <= x <= 0, or NaN: every result is a normal
 *               number, so 2^n is one normal number and a single multiply
 *               rounds p * 2^n, the same rounding the tail's (p * 2^n1) * 2^n2
 *               makes (p * 2^n1 is exact).  Same bits, 8 fewer operations
 *   ce_exp_normal_nonan
 *               the same for x not NaN, one multiply cheaper: the result's
 *               exponent field is p's plus n and at least 1 (float: p >=
 *               exp(-ln2/2) has field >= 126 and n >= -125, n = -126 only
 *               where r > 0.33 and p > 1; double: field >= 1022, n >= -1021),
 *               so an integer add of n to p's exponent field is the product
 *               p * 2^n, exactly.  A NaN x could come out as a number (n is
 *               taken from b's low bits, a NaN's payload): callers rule NaN
 *               out (ce_max's lo)
 */

CE_INLINE T CE_FN(ce_pow2)(T b)
{
    U u;
    T s;
    memcpy(&u, &b, sizeof u);
    u = (u << CE_MANT) + ((U)CE_BIAS << CE_MANT);
    memcpy(&s, &u, sizeof s);
    return s;
}

CE_INLINE T CE_FN(ce_exp_tail)(T x)
{
    T b, p = CE_FN(ce_exp_poly)(x, &b);
    T n = b - CE_MAGIC;
    T n1 = (n * (T)0.5 + CE_MAGIC) - CE_MAGIC;
    T n2 = n - n1;
    return p * CE_FN(ce_pow2)(n1 + CE_MAGIC) * CE_FN(ce_pow2)(n2 + CE_MAGIC);
}

CE_INLINE T CE_FN(ce_exp_any)(T x)
{
    x = x < CE_EXP_LOW ? CE_EXP_LOW : x;
    x = x > CE_EXP_HIGH ? CE_EXP_HIGH : x;
    return CE_FN(ce_exp_tail)(x);
}

CE_INLINE T CE_FN(ce_exp_nonpos)(T x)
{
    x = x < CE_EXP_LOW ? CE_EXP_LOW : x;
    return CE_FN(ce_exp_tail)(x);
}

CE_INLINE T CE_FN(ce_exp_normal)(T x)
{
    T b, p = CE_FN(ce_exp_poly)(x, &b);
    return p * CE_FN(ce_pow2)(b);
}

CE_INLINE T CE_FN(ce_exp_normal_nonan)(T x)
{
    T b, p = CE_FN(ce_exp_poly)(x, &b);
    U u, n;
    memcpy(&u, &p, sizeof u);
    memcpy(&n, &b, sizeof n);
    u += n << CE_MANT;
    memcpy(&p, &u, sizeof p);
    return p;
}
