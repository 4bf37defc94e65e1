/*
 * Row primitives: the loops over one row (or a stretch of one) that the
 * Cython kernels call, dispatched per ISA; rows_template.h holds those
 * written once for both types.  Also here: the rules the kernels share about
 * a row's target, loss and gradient, and the runs of long rows.
 */
#ifndef CE_ROWS_H
#define CE_ROWS_H

#include "platform.h"
#include "expmath.h"

/* Rows in runs: CE_RUN elements a run, or more for rows of more than
   CE_MAX_RUNS runs (whole blocks, so that no run is longer than needed). */
_Static_assert(CE_RUN_PART % CE_LANES == 0, "run parts must hold whole lane rounds");
static inline ptrdiff_t ce_run_length(ptrdiff_t n)
{
    ptrdiff_t per = (n + CE_MAX_RUNS - 1) / CE_MAX_RUNS;
    return per <= CE_RUN ? CE_RUN : (per + CE_BLOCK - 1) / CE_BLOCK * CE_BLOCK;
}
/* ce_expsum and ce_sumexp split rows into blocks of CE_BLOCK or CE_BLOCK / 4;
   both multiples of CE_LANES, so every element meets the same lane in the same
   order either way (the same sum, bit for bit). */
_Static_assert(CE_BLOCK / 4 % CE_LANES == 0, "blocks must hold whole lane rounds");

/* A row with a later row to fetch (ahead != NULL) goes in quarter blocks, each
   fetching the same span, bytes [from, to), of that row: the requests
   spread over the row's exps instead of queueing up at its start. */
CE_INLINE ptrdiff_t ce_block(const void *ahead)
{
    return ahead != NULL ? CE_BLOCK / 4 : CE_BLOCK;
}

/* write: the span is about to be written, and its lines come in owned, so
   that the stores need not wait for them (write-allocate).  A constant at
   every call, as the prefetch's hint must be. */
CE_INLINE void ce_fetch(const void *ahead, ptrdiff_t from, ptrdiff_t to, int write)
{
    if (ahead != NULL)
        for (ptrdiff_t p = from; p < to; p += 64) {
            if (write)
                CE_PREFETCH((const char *)ahead + p, 1);
            else
                CE_PREFETCH((const char *)ahead + p, 0);
        }
}

CE_INLINE double ce_lanetotal(const double *lane)
{
    double acc = 0.0;
    for (int k = 0; k < CE_LANES; k++) acc += lane[k];
    return acc;
}

/* A loss term w * x: w a weight >= 0 (a class weight, a sample weight or both),
   x the term's loss in a row whose sum of exps has the log log_s.  A zero
   weight gives 0 even where x is infinite (a target logit of -inf: 0 log 0 is
   taken as its limit), but not in a row holding a NaN or +inf, whose log_s is
   NaN: that shows as NaN, whatever the weights, as in PyTorch. */
CE_INLINE double ce_weigh(double w, double x, double log_s)
{
    return w != 0.0 || log_s != log_s ? w * x : 0.0;
}

/*
 * A hard target's own terms, the same rule on every path (the long rows'
 * finish and split rows in _kernels.pyx, the short-row block below):
 *
 *   ce_target_loss  c (lse - z_t) = c ((zmax - z_t) + log_s), c the target's
 *                   weight (ce_weigh: 0 where c is 0, unless the row holds
 *                   NaN or +inf)
 *   ce_target_grad  the gradient's target entry scale (a p_t - c_t - c_s), in
 *                   double, with p_t = e_t / s from the unshifted exp: p_t - 1
 *                   is then exact where p_t is near 1, which is where a float
 *                   subtraction would cancel.  a is what multiplies every
 *                   probability of the row, c_t the target's own mass and
 *                   c_s smoothing's share of it (0 without smoothing).
 */
CE_INLINE double ce_target_loss(double c, double zmax, double zt, double log_s)
{
    return ce_weigh(c, (zmax - zt) + log_s, log_s);
}

CE_INLINE double ce_target_grad(double scale, double a, double p_t, double c_t, double c_s)
{
    return scale * (a * p_t - c_t - c_s);
}

/* A row's log-sum-exp in the loss modes (z-loss, return_lse), from its max
   and the log of its sum of exps: NaN where the max is infinite (or NaN), as
   the row's loss is; the logits may be overwritten by then, so they are not
   summed again unshifted. */
CE_INLINE double ce_loss_lse(double zmax, double log_s)
{
    return isfinite(zmax) ? zmax + log_s : NAN;
}

/* A target as the kernels use it: its class, or -1 when it is `ignore` (or,
   defensively, outside 0..m-1; the shim has checked the targets). */
CE_INLINE ptrdiff_t ce_class_or_ignored(ptrdiff_t t, ptrdiff_t ignore, ptrdiff_t m)
{
    return t == ignore || (size_t)t >= (size_t)m ? -1 : t;
}

#endif /* CE_ROWS_H */
