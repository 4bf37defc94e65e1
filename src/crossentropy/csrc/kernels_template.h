/*
 * The kernels of one ISA level: the row primitives and the short-row block
 * for both types, the target check and the half-precision conversions,
 * compiled for the level's target.
 * dispatch.h includes this file once per level, with CE_TARGET (the level's
 * target attribute, or nothing) and CE_LEVEL_NAME(name) (the name with the
 * level's suffix) defined, and undefines them after.
 */

#include "type_f32.h"
#include "rows_template.h"
#include "short_rows_template.h"
#include "type_undef.h"
#include "type_f64.h"
#include "rows_template.h"
#include "short_rows_template.h"
#include "type_undef.h"

/* half-precision storage to float32 and back (half.h) */
CE_CONVERT_LOOP(ce_widen_bf16, uint16_t, float, ce_bf16_to_float)
CE_CONVERT_LOOP(ce_narrow_bf16, float, uint16_t, ce_float_to_bf16)
CE_CONVERT_LOOP(ce_widen_f16, uint16_t, float, ce_f16_to_float)
CE_CONVERT_LOOP(ce_narrow_f16, float, uint16_t, ce_float_to_f16)

/*
 * One pass over n contiguous class-index targets, before anything is written:
 * returns the index of the first that is neither `ignore` nor in [0, m), or
 * -1, and sets *active to the number that are not `ignore`.  No early exit, so
 * that it vectorises (a bad target is an error: the second loop finds it).
 */
static CE_TARGET ptrdiff_t CE_LEVEL_NAME(ce_check_targets)(const ptrdiff_t *t, ptrdiff_t n,
                                                          ptrdiff_t m, ptrdiff_t ignore,
                                                          ptrdiff_t *active)
{
    ptrdiff_t count = 0;
    int bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        int kept = t[i] != ignore;
        count += kept;
        bad |= kept & ((size_t)t[i] >= (size_t)m);        /* t < 0 or t >= m */
    }
    *active = count;
    if (bad)
        for (ptrdiff_t i = 0; i < n; i++)
            if (t[i] != ignore && (size_t)t[i] >= (size_t)m) return i;
    return -1;
}

/* The runs of a row combined (ce_run_parts): *top = the row's max, scale[b] =
   exp(tops[b] - the row's max); returns the sum of the runs' sums times their
   scales, in order.  A row of -inf gets NaN scales and sum, as exp(-inf - -inf)
   gives them unshifted.  A kernel of its own, not inline, so that every
   caller gets the same bits (an inlined copy could contract other
   multiply-adds); the explicit fma gives every level the same sum. */
static CE_TARGET double CE_LEVEL_NAME(ce_runs_total)(const double *tops, const double *sums,
                                                     ptrdiff_t n_runs, double *top,
                                                     double *scale)
{
    double hi = -INFINITY, acc = 0.0;
    for (ptrdiff_t k = 0; k < n_runs; k++) hi = tops[k] > hi ? tops[k] : hi;
    for (ptrdiff_t k = 0; k < n_runs; k++) scale[k] = ce_exp_nonpos_f64(tops[k] - hi);
    /* an explicit fma: left to GCC, the in-order vector reduction fuses only
       the terms past its last whole vector, which differ with the width */
    for (ptrdiff_t k = 0; k < n_runs; k++) acc = fma(sums[k], scale[k], acc);
    *top = hi;
    return acc;
}
