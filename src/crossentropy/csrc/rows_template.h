/*
 * The row primitives of rows.h for one type T and one ISA level: compiled
 * once per (type, level) by kernels_template.h, with the type's parameters
 * (type_f32.h, type_f64.h) and the level's (CE_TARGET, CE_FNL's suffix).
 *
 *   ce_max      max over x[0:n], and the min into *lo, which is NaN when an
 *               x[i] is; the max may or may not be NaN then (callers do not
 *               care: a NaN in the row makes the exp sum NaN anyway); -inf
 *               (and +inf) for n == 0
 *   ce_expsum   out[i] = exp(x[i] - shift), returns the sum of out; lo is a
 *               lower bound of x (ce_max's, or -inf) and NaN if an x[i] is,
 *               which picks the exp; out may equal x (in place); ahead
 *               and ahead_out, if not NULL, are a later row's logits and
 *               output (n elements each), fetched meanwhile, in the
 *               blocks that ahead picks (ce_block)
 *   ce_sumexp   the same sum without storing anything
 *   ce_exp      out[i] = exp(x[i]) (the row-block path and the tests)
 *   ce_run_parts  a row in runs, each shifted by its own max (below)
 *   ce_scale    x[i] *= a
 *   ce_shift    out[i] = (x[i] - a) - b; out may equal x
 *   ce_gapsum   sum of w[i] * (top - x[i]) in double (w NULL: all ones); a
 *               term with w[i] == 0 counts 0 even where x[i] is -inf
 *   ce_scale_sub  g[i] = g[i] * a - b * w[i], in double (w NULL: all ones)
 *   ce_scale_runs g[i] *= a * scale[run of i]
 *   ce_softcap  out[i] = cap * tanh(x[i] / cap), in double; out may equal x
 *   ce_softcap_grad  g[i] *= 1 - (y[i] / cap)^2, the derivative of the cap at
 *               the capped logit y[i] (as torch's tanh backward takes it),
 *               at least 0 (a saturated y rounded to T can exceed cap)
 *
 * Sums accumulate in double whatever the element type.  The exp values are
 * computed a block at a time and then summed by a second loop over the (L1-hot)
 * block: fused into one loop, GCC sinks the exp's NaN-preserving clamps past the
 * float->double conversion and the loop runs at half speed.  The sum uses
 * CE_LANES independent accumulators, which GCC vectorises without -ffast-math
 * or an OpenMP reduction, so the summation order is the same on every ISA and
 * thread count.  Max is exact in any order, so it needs no such care.
 */

CE_INLINE T CE_FNL(ce_maxmin)(const T *x, ptrdiff_t n, T *lo)
{
    /* In CE_LANES lanes, which every compiler vectorises (clang does not
       take the select form as a reduction without -ffast-math); max and min
       are exact in any order.  A lane of nan holds a NaN once one came by
       (a select of T, the data's own width). */
    T hi[CE_LANES], low[CE_LANES], nan[CE_LANES];
    for (int k = 0; k < CE_LANES; k++) { hi[k] = -CE_INF; low[k] = CE_INF; nan[k] = 0; }
    ptrdiff_t i = 0;
    for (; i + CE_LANES <= n; i += CE_LANES) {
        CE_SIMD
        for (int k = 0; k < CE_LANES; k++) {
            T v = x[i + k];
            hi[k] = v > hi[k] ? v : hi[k];
            low[k] = v < low[k] ? v : low[k];
            nan[k] = v != v ? v : nan[k];
        }
    }
    for (int k = 0; i + k < n; k++) {
        T v = x[i + k];
        hi[k] = v > hi[k] ? v : hi[k];
        low[k] = v < low[k] ? v : low[k];
        nan[k] = v != v ? v : nan[k];
    }
    T acc = hi[0], least = low[0];
    int any_nan = nan[0] != nan[0];
    for (int k = 1; k < CE_LANES; k++) {
        acc = hi[k] > acc ? hi[k] : acc;
        least = low[k] < least ? low[k] : least;
        any_nan |= nan[k] != nan[k];
    }
    *lo = any_nan ? (T)NAN : least;
    return acc;
}

static CE_TARGET T CE_FNL(ce_max)(const T *x, ptrdiff_t n, T *lo)
{
    return CE_FNL(ce_maxmin)(x, n, lo);
}

/* out[i] = exp(x[i] - shift) for x[i] <= shift, where lo <= every x[i] (or
   lo = -inf), and lo is NaN if an x[i] is.  When lo - shift >= CE_NORMAL,
   every result is a normal number and no x[i] is NaN: the exp needs one
   scaling, not two, and that by an integer add (the same bits, fewer
   operations). */
CE_INLINE void CE_FNL(ce_expshift)(const T *x, T *out, ptrdiff_t n, T shift,
                                  T lo)
{
    if (lo - shift >= CE_NORMAL) {
        CE_SIMD
        for (ptrdiff_t i = 0; i < n; i++)
            out[i] = CE_FN(ce_exp_normal_nonan)(x[i] - shift);
    } else {
        CE_SIMD
        for (ptrdiff_t i = 0; i < n; i++) out[i] = CE_FN(ce_exp_nonpos)(x[i] - shift);
    }
}

CE_INLINE void CE_FNL(ce_lanesum)(const T *x, ptrdiff_t n, double *lane)
{
    ptrdiff_t i = 0;
    for (; i + CE_LANES <= n; i += CE_LANES) {
        CE_SIMD
        for (int k = 0; k < CE_LANES; k++) lane[k] += (double)x[i + k];
    }
    for (int k = 0; i + k < n; k++) lane[k] += (double)x[i + k];
}

static CE_TARGET double CE_FNL(ce_expsum)(const T *x, T *out, ptrdiff_t n, T shift,
                                    T lo, const T *ahead, T *ahead_out)
{
    double lane[CE_LANES] = {0};
    ptrdiff_t block = ce_block(ahead);
    for (ptrdiff_t i = 0; i < n; i += block) {
        ptrdiff_t len = n - i < block ? n - i : block;
        ce_fetch(ahead, i * sizeof(T), (i + len) * sizeof(T), 0);
        ce_fetch(ahead_out, i * sizeof(T), (i + len) * sizeof(T), 1);
        CE_FNL(ce_expshift)(x + i, out + i, len, shift, lo);
        CE_FNL(ce_lanesum)(out + i, len, lane);
    }
    return ce_lanetotal(lane);
}

/* The same loop as ce_expsum, into a block buffer buf (CE_BLOCK elements,
   or n if fewer: a full block is too large for small thread stacks, so the
   caller's workspace holds it): it must sum in the same order
   (cross_entropy equals the loss of cross_entropy_and_grad bit for bit).
   A twin, not one loop choosing its destination at run time, which is
   slower on the gradient path. */
static CE_TARGET double CE_FNL(ce_sumexp)(const T *x, ptrdiff_t n, T shift, T lo,
                                    const T *ahead, T *buf)
{
    double lane[CE_LANES] = {0};
    ptrdiff_t block = ce_block(ahead);
    for (ptrdiff_t i = 0; i < n; i += block) {
        ptrdiff_t len = n - i < block ? n - i : block;
        ce_fetch(ahead, i * sizeof(T), (i + len) * sizeof(T), 0);
        CE_FNL(ce_expshift)(x + i, buf, len, shift, lo);
        CE_FNL(ce_lanesum)(buf, len, lane);
    }
    return ce_lanetotal(lane);
}

static CE_TARGET void CE_FNL(ce_exp)(const T *x, T *out, ptrdiff_t n)
{
    CE_SIMD
    for (ptrdiff_t i = 0; i < n; i++) out[i] = CE_FN(ce_exp_any)(x[i]);
}

/* A row in runs (ce_run_length): each run's max and min, then its exps
   shifted by its own max, into out (may equal x) or, for the sum alone, a
   buffer for a part; each run summed in its own lanes.  The row is read
   once: a run's max pass brings it into L1 and its exp pass reads it there,
   while it fetches CE_RUN elements ahead (the next run, in rows of runs of
   CE_RUN), CE_RUN_PART at a time, and out's elements there to write (unless
   out is x): the hardware prefetcher alone leaves the run's max pass
   waiting.  One function for both uses, unlike ce_expsum's twins: the
   destination is picked per part, outside the element loops.
   Run b's max goes to tops[b], the sum of its exp(x - that
   max) to sums[b].  A run of -inf is shifted by 0: its exps are 0, not NaN.
   x[0:n] is a row or whole runs of one (a segment that a thread takes);
   ce_runs_total then combines the runs. */
static CE_TARGET void CE_FNL(ce_run_parts)(const T *x, T *out, ptrdiff_t n,
                                     ptrdiff_t run, double *tops, double *sums)
{
    T buf[CE_RUN_PART];
    ptrdiff_t b = 0;
    for (ptrdiff_t i = 0; i < n; i += run, b++) {
        ptrdiff_t len = n - i < run ? n - i : run;
        double lane[CE_LANES] = {0};
        T lo, shift = CE_FNL(ce_maxmin)(x + i, len, &lo);
        tops[b] = shift;
        if (shift == -CE_INF) shift = 0;
        for (ptrdiff_t k = i; k < i + len; k += CE_RUN_PART) {
            ptrdiff_t part = i + len - k < CE_RUN_PART ? i + len - k
                                                       : CE_RUN_PART;
            T *dest = out != NULL ? out + k : buf;
            ptrdiff_t ahead = k + CE_RUN < n ? k + CE_RUN : n;
            ptrdiff_t ahead_end = ahead + part < n ? ahead + part : n;
            ce_fetch(x, ahead * sizeof(T), ahead_end * sizeof(T), 0);
            ce_fetch(out != x ? out : NULL, ahead * sizeof(T), ahead_end * sizeof(T), 1);
            CE_FNL(ce_expshift)(x + k, dest, part, shift, lo);
            CE_FNL(ce_lanesum)(dest, part, lane);
        }
        sums[b] = ce_lanetotal(lane);
    }
}

static CE_TARGET void CE_FNL(ce_scale)(T *x, ptrdiff_t n, T a)
{
    CE_SIMD
    for (ptrdiff_t i = 0; i < n; i++) x[i] *= a;
}

static CE_TARGET void CE_FNL(ce_shift)(const T *x, T *out, ptrdiff_t n, T a, T b)
{
    CE_SIMD
    for (ptrdiff_t i = 0; i < n; i++) out[i] = (x[i] - a) - b;
}

/* In CE_LANES lanes, as the exp sums: the same order on every ISA level. */
static CE_TARGET double CE_FNL(ce_gapsum)(const T *x, const double *w, ptrdiff_t n, T top)
{
    double lane[CE_LANES] = {0};
    ptrdiff_t i = 0;
    if (w == NULL) {
        for (; i + CE_LANES <= n; i += CE_LANES)
            for (int k = 0; k < CE_LANES; k++) lane[k] += (double)top - (double)x[i + k];
        for (int k = 0; i + k < n; k++) lane[k] += (double)top - (double)x[i + k];
    } else {
        for (; i + CE_LANES <= n; i += CE_LANES)
            for (int k = 0; k < CE_LANES; k++) {
                double d = w[i + k] * ((double)top - (double)x[i + k]);
                lane[k] += w[i + k] == 0.0 ? 0.0 : d;
            }
        for (int k = 0; i + k < n; k++) {
            double d = w[i + k] * ((double)top - (double)x[i + k]);
            lane[k] += w[i + k] == 0.0 ? 0.0 : d;
        }
    }
    return ce_lanetotal(lane);
}

static CE_TARGET void CE_FNL(ce_scale_sub)(T *g, const double *w, ptrdiff_t n,
                                     double a, double b)
{
    if (w == NULL) {
        CE_SIMD
        for (ptrdiff_t i = 0; i < n; i++) g[i] = (T)((double)g[i] * a - b);
    } else {
        CE_SIMD
        for (ptrdiff_t i = 0; i < n; i++)
            g[i] = (T)((double)g[i] * a - b * w[i]);
    }
}

/* g[i] *= a * scale[run of i]: in T where that factor is a normal T, else
   in double (a factor that overflows T, or, for a run far below the row's
   max, one that underflows, while the products may be normal numbers). */
static CE_TARGET void CE_FNL(ce_scale_runs)(T *g, ptrdiff_t n, ptrdiff_t run,
                                      double a, const double *scale)
{
    for (ptrdiff_t i = 0, b = 0; i < n; i += run, b++) {
        ptrdiff_t len = n - i < run ? n - i : run;
        double f = a * scale[b];
        if (isnormal((T)f))
            CE_FNL(ce_scale)(g + i, len, (T)f);
        else
            CE_FNL(ce_scale_sub)(g + i, NULL, len, f, 0.0);
    }
}

/* cap is at least the least normal double (the shim's check), so 1 / cap
   is finite: a multiply, where a vector division would take most of the time */
static CE_TARGET void CE_FNL(ce_softcap)(const T *x, T *out, ptrdiff_t n, double cap)
{
    double inv = 1.0 / cap;
    CE_SIMD
    for (ptrdiff_t i = 0; i < n; i++) out[i] = (T)(cap * ce_tanh((double)x[i] * inv));
}

static CE_TARGET void CE_FNL(ce_softcap_grad)(T *g, const T *y, ptrdiff_t n, double cap)
{
    double inv = 1.0 / cap;
    CE_SIMD
    for (ptrdiff_t i = 0; i < n; i++) {
        double u = (double)y[i] * inv, d = 1.0 - u * u;
        g[i] = (T)((double)g[i] * (d > 0.0 ? d : 0.0));
    }
}
