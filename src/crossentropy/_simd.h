/*
 * Vectorisable row primitives for the cross-entropy kernels.
 *
 * Cython cannot express what the compiler needs to vectorise these loops:
 * `#pragma omp simd` reductions, an exp that GCC can inline into a SIMD loop,
 * and `target_clones` runtime dispatch.  Everything else lives in _kernels.pyx.
 *
 * Portability: no -march=native, no -ffast-math.  The build adds
 * -fno-trapping-math (lets GCC if-convert the clamps in the exp loop; it changes
 * no result) and each hot function is cloned for x86-64-v4 (AVX-512) and
 * x86-64-v3 (AVX2 + FMA), with a baseline fallback; the dynamic linker picks
 * the widest one the CPU runs, at load time.
 */
#ifndef CROSSENTROPY_SIMD_H
#define CROSSENTROPY_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

/*
 * Threads across fork().  GNU OpenMP's thread pool does not survive a fork: a
 * child whose parent had started one waits forever for the pool's threads at
 * its first parallel region.  Before every fork the forking thread releases
 * its pool (omp_pause_resource_all; the parent starts a new one at its next
 * region), so the child starts its own, with every thread.  Where that fails
 * (the runtime refuses, or the release was switched off for a test), the
 * child runs every call on one thread, which needs no pool: slower, never
 * stuck.
 */
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__)) && !defined(CE_NO_FORK_HANDLERS)
#include <pthread.h>
#define CE_FORK_HANDLERS 1
static int ce_release_before_fork = 1;  /* off only in tests of the fallback */
static int ce_pool_released;            /* by the last fork's prepare handler */
static int ce_one_thread;               /* in a child whose pool was not released */

static void ce_before_fork(void)
{
    /* a pool inherited from a parent it was not released in cannot be
       released either (that would wait for threads that do not exist) */
    ce_pool_released = ce_release_before_fork && !ce_one_thread
                       && omp_pause_resource_all(omp_pause_soft) == 0;
}

static void ce_in_forked_child(void)
{
    if (!ce_pool_released) ce_one_thread = 1;
}

/* Registers the handlers once per process; 0 on success. */
static inline int ce_register_fork_handlers(void)
{
    static int registered;
    if (!registered && pthread_atfork(ce_before_fork, NULL, ce_in_forked_child) == 0)
        registered = 1;
    return !registered;
}
static inline void ce_set_release_before_fork(int on) { ce_release_before_fork = on; }
#else
#define CE_FORK_HANDLERS 0
static const int ce_one_thread = 0;
static inline int ce_register_fork_handlers(void) { return 0; }
static inline void ce_set_release_before_fork(int on) { (void)on; }
#endif

/* The threads a parallel region may have: n, or 1 where the pool is unusable. */
static inline int ce_usable_threads(int n) { return ce_one_thread ? 1 : n; }

#ifdef _OPENMP
static inline int ce_omp_max_threads(void) { return ce_usable_threads(omp_get_max_threads()); }

/* How many threads a parallel region asking for n gets here (1 or more). */
static inline int ce_team_size(int n)
{
    int size = 1;
#pragma omp parallel num_threads(ce_usable_threads(n))
    {
#pragma omp single
        size = omp_get_num_threads();
    }
    return size;
}
#else
static inline int ce_omp_max_threads(void) { return 1; }
static inline int ce_team_size(int n) { (void)n; return 1; }
#endif

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && \
    defined(__x86_64__) && defined(__linux__) && !defined(CE_NO_DISPATCH)
#define CE_DISPATCH \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define CE_HAVE_DISPATCH 1
#else
#define CE_DISPATCH
#define CE_HAVE_DISPATCH 0
#endif

/* The clones that run here: the resolver's own test, widest level first.
   "baseline" without dispatch (another compiler or architecture). */
static inline const char *ce_dispatch_target(void)
{
#if CE_HAVE_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
#endif
    return "baseline";
}

#define CE_INLINE static inline __attribute__((always_inline))

#if defined(_OPENMP) || defined(CE_OPENMP_SIMD)
#define CE_SIMD_MAXMIN(hi, lo, flag) \
    CE_PRAGMA(omp simd reduction(max:hi) reduction(min:lo) reduction(|:flag))
#define CE_PRAGMA(x) _Pragma(#x)
#define CE_SIMD_MIN(v) CE_PRAGMA(omp simd reduction(min:v))
#define CE_SIMD_SUM _Pragma("omp simd reduction(+:acc)")
#define CE_SIMD _Pragma("omp simd")
#else
#define CE_SIMD_MAXMIN(hi, lo, flag)
#define CE_SIMD_MIN(v)
#define CE_SIMD_SUM
#define CE_SIMD
#endif

/*
 * exp(x) for every float x, branch-free so that it vectorises.
 *
 * x = n*ln2 + r with |r| <= ln2/2, exp(x) = 2^n * p(r).  The clamps keep n in a
 * range where 2^n is built exactly; scaling in two halves (2^n1 * 2^n2) makes
 * results below FLT_MIN gradual (subnormal) and results past FLT_MAX +inf, both
 * correctly rounded from p(r).  exp(-inf) = 0, exp(+inf) = +inf, NaN stays NaN
 * (a comparison with NaN is false, so the clamps pass it through).
 * Polynomial: 1 + r + r^2 q(r), q of degree 4 fitted for the least relative
 * error of exp on |r| <= ln2/2 (3e-9 before rounding; about 1 ulp in all, as
 * Cephes' degree-5 q).
 */
CE_INLINE float ce_expf_tail(float x);

CE_INLINE float ce_expf(float x)
{
    x = x < -110.0f ? -110.0f : x;
    x = x > 89.0f ? 89.0f : x;
    return ce_expf_tail(x);
}

/* exp(x) for x <= 0 or NaN (x = z - max in a softmax): no overflow to guard. */
CE_INLINE float ce_expf_nonpos(float x)
{
    x = x < -110.0f ? -110.0f : x;
    return ce_expf_tail(x);
}

/* x = n*ln2 + r: returns p(r) ~ exp(r) and sets *b to x/ln2 + 1.5*2^23, a
   float whose low mantissa bits hold the integer n (two's complement). */
CE_INLINE float ce_expf_poly(float x, float *b)
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

/* exp(x) for every double x; same scheme, 1 + r + r^2 q(r) with q of degree 9
   from Chebyshev economisation on |r| <= ln2/2 (relative error 1.7e-17 before
   rounding, 2 multiply-adds fewer than the degree-13 Taylor series it
   replaces; about 1 ulp in all). */
CE_INLINE double ce_exp_tail(double x);

CE_INLINE double ce_exp(double x)
{
    x = x < -750.0 ? -750.0 : x;
    x = x > 710.0 ? 710.0 : x;
    return ce_exp_tail(x);
}

/* exp(x) for x <= 0 or NaN. */
CE_INLINE double ce_exp_nonpos(double x)
{
    x = x < -750.0 ? -750.0 : x;
    return ce_exp_tail(x);
}

/* As ce_expf_poly: p(r) ~ exp(r), *b holds n in its low bits. */
CE_INLINE double ce_exp_poly(double x, double *b)
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

/*
 * 2^n, the exp's tail and its one-scale forms, for both types: T, its
 * same-width unsigned U, M mantissa bits, exponent bias B, MAGIC = 1.5 * 2^M.
 *
 *   POW2(b)     2^n for the n held in b's low bits (see ce_expf_poly), n a
 *               normal exponent; the magic's own bits shift out of the word
 *   NAME_tail   exp of an x already clamped ([-110, 89] for float, [-750, 710]
 *               for double): 2^n applied in two halves, so that results below
 *               the least normal number are gradual (subnormal) and results
 *               past the largest +inf, both correctly rounded from p(r)
 *   NAME_normal for CE_NORMAL <= x <= 0, or NaN: every result is a normal
 *               number, so 2^n is one normal number and a single multiply
 *               rounds p * 2^n, the same rounding the tail's (p * 2^n1) * 2^n2
 *               makes (p * 2^n1 is exact).  Same bits, 8 fewer operations
 *   NAME_normal_nonan
 *               the same for x not NaN, one multiply cheaper: the result's
 *               exponent field is p's plus n and at least 1 (float: p >=
 *               exp(-ln2/2) has field >= 126 and n >= -125, n = -126 only
 *               where r > 0.33 and p > 1; double: field >= 1022, n >= -1021),
 *               so an integer add of n to p's exponent field is the product
 *               p * 2^n, exactly.  A NaN x could come out as a number (n is
 *               taken from b's low bits, a NaN's payload): callers rule NaN
 *               out (ce_max's lo)
 */
#define CE_DEFINE_EXP_SCALING(T, U, M, B, MAGIC, NAME, POLY, POW2)              \
CE_INLINE T POW2(T b)                                                         \
{                                                                             \
    U u;                                                                      \
    T s;                                                                      \
    memcpy(&u, &b, sizeof u);                                                 \
    u = (u << M) + ((U)B << M);                                               \
    memcpy(&s, &u, sizeof s);                                                 \
    return s;                                                                 \
}                                                                             \
CE_INLINE T NAME##_tail(T x)                                                  \
{                                                                             \
    T b, p = POLY(x, &b);                                                     \
    T n = b - MAGIC;                                                          \
    T n1 = (n * (T)0.5 + MAGIC) - MAGIC;                                      \
    T n2 = n - n1;                                                            \
    return p * POW2(n1 + MAGIC) * POW2(n2 + MAGIC);                           \
}                                                                             \
CE_INLINE T NAME##_normal(T x)                                                \
{                                                                             \
    T b, p = POLY(x, &b);                                                     \
    return p * POW2(b);                                                       \
}                                                                             \
CE_INLINE T NAME##_normal_nonan(T x)                                          \
{                                                                             \
    T b, p = POLY(x, &b);                                                     \
    U u, n;                                                                   \
    memcpy(&u, &p, sizeof u);                                                 \
    memcpy(&n, &b, sizeof n);                                                 \
    u += n << M;                                                              \
    memcpy(&p, &u, sizeof p);                                                 \
    return p;                                                                 \
}
#define CE_NORMAL_f32 (-87.0f)                /* n >= round(-87 / ln2) = -126 */
#define CE_NORMAL_f64 (-708.0)                /* n >= round(-708 / ln2) = -1021 */
CE_DEFINE_EXP_SCALING(float, uint32_t, 23, 127u, 0x1.8p23f, ce_expf, ce_expf_poly, ce_pow2f)
CE_DEFINE_EXP_SCALING(double, uint64_t, 52, UINT64_C(1023), 0x1.8p52, ce_exp, ce_exp_poly,
                      ce_pow2)

/*
 * The primitives, instantiated for float (suffix f32) and double (f64).
 *
 *   ce_max      max over x[0:n], and the min into *lo, which is NaN when an
 *               x[i] is; the max may or may not be NaN then (callers do not
 *               care: a NaN in the row makes the exp sum NaN anyway); -inf
 *               (and +inf) for n == 0
 *   ce_expsum   out[i] = exp(x[i] - shift), returns the sum of out; lo is a
 *               lower bound of x (ce_max's, or -inf) and NaN if an x[i] is,
 *               which picks the exp; out may equal x (in place)
 *   ce_sumexp   the same sum without storing anything
 *   ce_exp      out[i] = exp(x[i]) (the row-block path and the tests)
 *   ce_scale    x[i] *= a
 *   ce_shift    out[i] = (x[i] - a) - b; out may equal x
 *   ce_gapsum   sum of w[i] * (top - x[i]) in double (w NULL: all ones); a
 *               term with w[i] == 0 counts 0 even where x[i] is -inf
 *   ce_scale_sub  g[i] = g[i] * a - b * w[i], in double (w NULL: all ones)
 *
 * Sums accumulate in double whatever the element type.  The exp values are
 * computed a block at a time and then summed by a second loop over the (L1-hot)
 * block: fused into one loop, GCC sinks the exp's NaN-preserving clamps past the
 * float->double conversion and the loop runs at half speed.  The sum uses
 * CE_LANES independent accumulators, which GCC vectorises without -ffast-math
 * or an OpenMP reduction, so the summation order is the same on every ISA and
 * thread count.  Max is exact in any order, so it needs no such care.
 */
#define CE_LANES 16
#define CE_BLOCK 1024
/* Rows in runs: CE_RUN elements a run, or more for rows of more than
   CE_MAX_RUNS runs (whole blocks, so that no run is longer than needed). */
#define CE_RUN 2048
#define CE_MAX_RUNS 512
#define CE_RUN_PART 128
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

/* A row with a next row to fetch (ahead != NULL) goes in quarter blocks, each
   fetching the same span, bytes [from, to), of the next row: the requests
   spread over the row's exps instead of queueing up at its start. */
CE_INLINE ptrdiff_t ce_block(const void *ahead)
{
    return ahead != NULL ? CE_BLOCK / 4 : CE_BLOCK;
}

CE_INLINE void ce_fetch(const void *ahead, ptrdiff_t from, ptrdiff_t to)
{
    if (ahead != NULL)
        for (ptrdiff_t p = from; p < to; p += 64)
            __builtin_prefetch((const char *)ahead + p, 0, 3);
}

CE_INLINE double ce_lanetotal(const double *lane)
{
    double acc = 0.0;
    for (int k = 0; k < CE_LANES; k++) acc += lane[k];
    return acc;
}

/* The runs of a row combined (ce_run_parts): *top = the row's max, scale[b] =
   exp(tops[b] - the row's max); returns the sum of the runs' sums times their
   scales, in order.  A row of -inf gets NaN scales and sum, as exp(-inf - -inf)
   gives them unshifted.  Dispatched, not inline, so that every caller gets
   the same bits (an inlined copy could contract other multiply-adds); the
   fma makes the baseline clone's sum the same too (libm's fma is exact). */
CE_DISPATCH double ce_runs_total(const double *tops, const double *sums, ptrdiff_t n_runs,
                                 double *top, double *scale)
{
    double hi = -INFINITY, acc = 0.0;
    for (ptrdiff_t k = 0; k < n_runs; k++) hi = tops[k] > hi ? tops[k] : hi;
    for (ptrdiff_t k = 0; k < n_runs; k++) scale[k] = ce_exp_nonpos(tops[k] - hi);
    /* an explicit fma: left to GCC, the in-order vector reduction fuses only
       the terms past its last whole vector, which differ with the width */
    for (ptrdiff_t k = 0; k < n_runs; k++) acc = __builtin_fma(sums[k], scale[k], acc);
    *top = hi;
    return acc;
}

#define CE_DEFINE_PRIMITIVES(T, SFX, EXP, NEG_INF)                              \
CE_INLINE T ce_maxmin_##SFX(const T *x, ptrdiff_t n, T *lo)                  \
{                                                                             \
    T acc = NEG_INF, low = -(NEG_INF);                                        \
    int nan = 0;                                                              \
    CE_SIMD_MAXMIN(acc, low, nan)                                             \
    for (ptrdiff_t i = 0; i < n; i++) {                                       \
        acc = x[i] > acc ? x[i] : acc;                                        \
        low = x[i] < low ? x[i] : low;                                        \
        nan |= x[i] != x[i] ? -1 : 0;      /* the compare's mask, as is */    \
    }                                                                         \
    *lo = nan ? (T)NAN : low;                                                 \
    return acc;                                                               \
}                                                                             \
CE_DISPATCH T ce_max_##SFX(const T *x, ptrdiff_t n, T *lo)                   \
{                                                                             \
    return ce_maxmin_##SFX(x, n, lo);                                         \
}                                                                             \
/* out[i] = exp(x[i] - shift) for x[i] <= shift, where lo <= every x[i] (or   \
   lo = -inf), and lo is NaN if an x[i] is.  When lo - shift >= CE_NORMAL,    \
   every result is a normal number and no x[i] is NaN: the exp needs one      \
   scaling, not two, and that by an integer add (the same bits, fewer         \
   operations). */                                                           \
CE_INLINE void ce_expshift_##SFX(const T *x, T *out, ptrdiff_t n, T shift,    \
                                 T lo)                                        \
{                                                                             \
    if (lo - shift >= CE_NORMAL_##SFX) {                                      \
        CE_SIMD                                                               \
        for (ptrdiff_t i = 0; i < n; i++)                                     \
            out[i] = EXP##_normal_nonan(x[i] - shift);                        \
    } else {                                                                  \
        CE_SIMD                                                               \
        for (ptrdiff_t i = 0; i < n; i++) out[i] = EXP##_nonpos(x[i] - shift); \
    }                                                                         \
}                                                                             \
CE_INLINE void ce_lanesum_##SFX(const T *x, ptrdiff_t n, double *lane)        \
{                                                                             \
    ptrdiff_t i = 0;                                                          \
    for (; i + CE_LANES <= n; i += CE_LANES)                                  \
        for (int k = 0; k < CE_LANES; k++) lane[k] += (double)x[i + k];       \
    for (int k = 0; i + k < n; k++) lane[k] += (double)x[i + k];              \
}                                                                             \
CE_DISPATCH double ce_expsum_##SFX(const T *x, T *out, ptrdiff_t n, T shift, \
                                   T lo, const T *ahead)                      \
{                                                                             \
    double lane[CE_LANES] = {0};                                              \
    ptrdiff_t block = ce_block(ahead);                                        \
    for (ptrdiff_t i = 0; i < n; i += block) {                                \
        ptrdiff_t len = n - i < block ? n - i : block;                        \
        ce_fetch(ahead, i * sizeof(T), (i + len) * sizeof(T));                \
        ce_expshift_##SFX(x + i, out + i, len, shift, lo);                    \
        ce_lanesum_##SFX(out + i, len, lane);                                 \
    }                                                                         \
    return ce_lanetotal(lane);                                                \
}                                                                             \
/* The same loop as ce_expsum, into a block buffer buf (CE_BLOCK elements,   \
   the caller's: not on the stack): it must sum in the same order            \
   (cross_entropy equals the loss of cross_entropy_and_grad bit for bit).    \
   One shared loop choosing its destination at run time measured slower on   \
   the gradient path, so the twins stay. */                                  \
CE_DISPATCH double ce_sumexp_##SFX(const T *x, ptrdiff_t n, T shift, T lo,   \
                                   const T *ahead, T *buf)                    \
{                                                                             \
    double lane[CE_LANES] = {0};                                              \
    ptrdiff_t block = ce_block(ahead);                                        \
    for (ptrdiff_t i = 0; i < n; i += block) {                                \
        ptrdiff_t len = n - i < block ? n - i : block;                        \
        ce_fetch(ahead, i * sizeof(T), (i + len) * sizeof(T));                \
        ce_expshift_##SFX(x + i, buf, len, shift, lo);                        \
        ce_lanesum_##SFX(buf, len, lane);                                     \
    }                                                                         \
    return ce_lanetotal(lane);                                                \
}                                                                             \
CE_DISPATCH void ce_exp_##SFX(const T *x, T *out, ptrdiff_t n)               \
{                                                                             \
    CE_SIMD                                                                   \
    for (ptrdiff_t i = 0; i < n; i++) out[i] = EXP(x[i]);                     \
}                                                                             \
/* A row in runs (ce_run_length): each run's max and min, then its exps       \
   shifted by its own max, into out (may equal x) or, for the sum alone, a    \
   buffer for a part; each run summed in its own lanes.  The row is read      \
   once: a run's max pass brings it into L1 and its exp pass reads it there,  \
   while it fetches CE_RUN elements ahead (the next run, in rows of runs of   \
   CE_RUN), CE_RUN_PART at a time (with the hardware prefetcher alone, 12-20  \
   % more time).  One function for both uses, unlike ce_expsum's twins: the   \
   destination is picked per part, outside the element loops (not measured    \
   against twins).  Run b's max goes to tops[b], the sum of its exp(x - that  \
   max) to sums[b].  A run of -inf is shifted by 0: its exps are 0, not NaN.  \
   x[0:n] is a row or whole runs of one (a segment that a thread takes);     \
   ce_runs_total then combines the runs. */                                   \
CE_DISPATCH void ce_run_parts_##SFX(const T *x, T *out, ptrdiff_t n,         \
                                    ptrdiff_t run, double *tops, double *sums) \
{                                                                             \
    T buf[CE_RUN_PART];                                                       \
    ptrdiff_t b = 0;                                                          \
    for (ptrdiff_t i = 0; i < n; i += run, b++) {                             \
        ptrdiff_t len = n - i < run ? n - i : run;                            \
        double lane[CE_LANES] = {0};                                          \
        T lo, shift = ce_maxmin_##SFX(x + i, len, &lo);                       \
        tops[b] = shift;                                                      \
        if (shift == NEG_INF) shift = 0;                                      \
        for (ptrdiff_t k = i; k < i + len; k += CE_RUN_PART) {                \
            ptrdiff_t part = i + len - k < CE_RUN_PART ? i + len - k         \
                                                       : CE_RUN_PART;         \
            T *dest = out != NULL ? out + k : buf;                            \
            ptrdiff_t ahead = k + CE_RUN < n ? k + CE_RUN : n;                \
            ce_fetch(x, ahead * sizeof(T),                                    \
                     (ahead + part < n ? ahead + part : n) * sizeof(T));      \
            ce_expshift_##SFX(x + k, dest, part, shift, lo);                  \
            ce_lanesum_##SFX(dest, part, lane);                               \
        }                                                                     \
        sums[b] = ce_lanetotal(lane);                                         \
    }                                                                         \
}                                                                             \
CE_DISPATCH void ce_scale_##SFX(T *x, ptrdiff_t n, T a)                      \
{                                                                             \
    CE_SIMD                                                                   \
    for (ptrdiff_t i = 0; i < n; i++) x[i] *= a;                              \
}                                                                             \
CE_DISPATCH void ce_shift_##SFX(const T *x, T *out, ptrdiff_t n, T a, T b)   \
{                                                                             \
    CE_SIMD                                                                   \
    for (ptrdiff_t i = 0; i < n; i++) out[i] = (x[i] - a) - b;                \
}                                                                             \
CE_DISPATCH double ce_gapsum_##SFX(const T *x, const double *w, ptrdiff_t n, \
                                   T top)                                     \
{                                                                             \
    double acc = 0.0;                                                         \
    if (w == NULL) {                                                          \
        CE_SIMD_SUM                                                           \
        for (ptrdiff_t i = 0; i < n; i++) acc += (double)top - (double)x[i];  \
    } else {                                                                  \
        CE_SIMD_SUM                                                           \
        for (ptrdiff_t i = 0; i < n; i++) {                                   \
            double d = w[i] * ((double)top - (double)x[i]);                   \
            acc += w[i] == 0.0 ? 0.0 : d;                                     \
        }                                                                     \
    }                                                                         \
    return acc;                                                               \
}                                                                             \
CE_DISPATCH void ce_scale_sub_##SFX(T *g, const double *w, ptrdiff_t n,      \
                                    double a, double b)                       \
{                                                                             \
    if (w == NULL) {                                                          \
        CE_SIMD                                                               \
        for (ptrdiff_t i = 0; i < n; i++) g[i] = (T)((double)g[i] * a - b);   \
    } else {                                                                  \
        CE_SIMD                                                               \
        for (ptrdiff_t i = 0; i < n; i++)                                     \
            g[i] = (T)((double)g[i] * a - b * w[i]);                          \
    }                                                                         \
}                                                                             \
/* g[i] *= a * scale[run of i]: in T where that factor is a normal T, else   \
   in double (a factor that overflows T, or, for a run far below the row's   \
   max, one that underflows, while the products may be normal numbers). */   \
CE_DISPATCH void ce_scale_runs_##SFX(T *g, ptrdiff_t n, ptrdiff_t run,       \
                                     double a, const double *scale)           \
{                                                                             \
    for (ptrdiff_t i = 0, b = 0; i < n; i += run, b++) {                      \
        ptrdiff_t len = n - i < run ? n - i : run;                            \
        double f = a * scale[b];                                              \
        if (__builtin_isnormal((T)f))                                         \
            ce_scale_##SFX(g + i, len, (T)f);                                 \
        else                                                                  \
            ce_scale_sub_##SFX(g + i, NULL, len, f, 0.0);                     \
    }                                                                         \
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

/* A target as the kernels use it: its class, or -1 when it is `ignore` (or,
   defensively, outside 0..m-1; the shim has checked the targets). */
CE_INLINE ptrdiff_t ce_class_or_ignored(ptrdiff_t t, ptrdiff_t ignore, ptrdiff_t m)
{
    return t == ignore || (size_t)t >= (size_t)m ? -1 : t;
}

/*
 * One pass over n contiguous class-index targets, before anything is written:
 * returns the index of the first that is neither `ignore` nor in [0, m), or
 * -1, and sets *active to the number that are not `ignore`.  No early exit, so
 * that it vectorises (a bad target is an error: the second loop finds it).
 */
CE_DISPATCH ptrdiff_t ce_check_targets(const ptrdiff_t *t, ptrdiff_t n, ptrdiff_t m,
                                       ptrdiff_t ignore, ptrdiff_t *active)
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

/*
 * Square tiles for moving a block of rows between row-major memory and the
 * [class][row] layout of the short-row path: one 32-byte vector per row (8
 * floats or 4 doubles), transposed in registers.  Written with GCC vector
 * extensions so that every clone gets its own instructions (two SSE halves
 * in the baseline clone, AVX shuffles in the x86-64-v3 and -v4 ones).  Rows
 * need no alignment: the ce_uvec types load and store a vector at any element address
 * (memcpy would do the same, but GCC 12 copies it in 16-byte pieces, and a
 * 32-byte load of what two 16-byte stores just wrote stalls).
 */
typedef float ce_vec_f32 __attribute__((vector_size(32)));
typedef double ce_vec_f64 __attribute__((vector_size(32)));
typedef float ce_uvec_f32 __attribute__((vector_size(32), aligned(4), may_alias));
typedef double ce_uvec_f64 __attribute__((vector_size(32), aligned(8), may_alias));
typedef int32_t ce_idx_f32 __attribute__((vector_size(32)));
typedef int64_t ce_idx_f64 __attribute__((vector_size(32)));
#define CE_VL_f32 8
#define CE_VL_f64 4

/* Two-vector shuffles with constant indices (CE_SHUF8, CE_SHUF4), and for the
   half tiles below, two half vectors joined into one (CE_JOIN) and a vector's
   halves (CE_LOW, CE_HIGH): GCC >= 12 and clang spell these
   __builtin_shufflevector; older GCC only has __builtin_shuffle with a mask,
   which cannot change the width, so there the joins and halves are built
   element by element.  CE_OLD_SHUFFLE forces the older spelling (the tests
   build it both ways). */
#if (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)) && !defined(CE_OLD_SHUFFLE)
#define CE_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
    __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#define CE_SHUF4(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#define CE_JOIN_f32(a, b) __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7)
#define CE_JOIN_f64(a, b) __builtin_shufflevector(a, b, 0, 1, 2, 3)
#define CE_LOW_f32(v) __builtin_shufflevector(v, v, 0, 1, 2, 3)
#define CE_HIGH_f32(v) __builtin_shufflevector(v, v, 4, 5, 6, 7)
#define CE_LOW_f64(v) __builtin_shufflevector(v, v, 0, 1)
#define CE_HIGH_f64(v) __builtin_shufflevector(v, v, 2, 3)
#else
#define CE_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
    __builtin_shuffle(a, b, (ce_idx_f32){i0, i1, i2, i3, i4, i5, i6, i7})
#define CE_SHUF4(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (ce_idx_f64){i0, i1, i2, i3})
#define CE_JOIN_f32(a, b) \
    ((ce_vec_f32){(a)[0], (a)[1], (a)[2], (a)[3], (b)[0], (b)[1], (b)[2], (b)[3]})
#define CE_JOIN_f64(a, b) ((ce_vec_f64){(a)[0], (a)[1], (b)[0], (b)[1]})
#define CE_LOW_f32(v) ((ce_half_f32){(v)[0], (v)[1], (v)[2], (v)[3]})
#define CE_HIGH_f32(v) ((ce_half_f32){(v)[4], (v)[5], (v)[6], (v)[7]})
#define CE_LOW_f64(v) ((ce_half_f64){(v)[0], (v)[1]})
#define CE_HIGH_f64(v) ((ce_half_f64){(v)[2], (v)[3]})
#endif

CE_INLINE void ce_transpose_f32(ce_vec_f32 r[8])
{
    ce_vec_f32 t[8], u[8];
    for (int i = 0; i < 4; i++) {           /* interleave row pairs */
        t[2 * i] = CE_SHUF8(r[2 * i], r[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[2 * i + 1] = CE_SHUF8(r[2 * i], r[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 2; i++)             /* then pairs of pairs */
        for (int h = 0; h < 2; h++) {
            u[4 * i + 2 * h] = CE_SHUF8(t[4 * i + h], t[4 * i + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[4 * i + 2 * h + 1] = CE_SHUF8(t[4 * i + h], t[4 * i + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int i = 0; i < 4; i++) {           /* then 128-bit halves */
        r[i] = CE_SHUF8(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[i + 4] = CE_SHUF8(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

CE_INLINE void ce_transpose_f64(ce_vec_f64 r[4])
{
    ce_vec_f64 t0 = CE_SHUF4(r[0], r[1], 0, 4, 2, 6), t1 = CE_SHUF4(r[0], r[1], 1, 5, 3, 7);
    ce_vec_f64 t2 = CE_SHUF4(r[2], r[3], 0, 4, 2, 6), t3 = CE_SHUF4(r[2], r[3], 1, 5, 3, 7);
    r[0] = CE_SHUF4(t0, t2, 0, 1, 4, 5);
    r[1] = CE_SHUF4(t1, t3, 0, 1, 4, 5);
    r[2] = CE_SHUF4(t0, t2, 2, 3, 6, 7);
    r[3] = CE_SHUF4(t1, t3, 2, 3, 6, 7);
}

/*
 * Short rows, many at a time: softmax cross-entropy with hard targets for up
 * to CE_ROWS rows of m <= CE_SHORT_MAX classes.  The rows are transposed into
 * a [class][row] buffer so that max, exp, sum, log and scaling all run as SIMD
 * over rows; a 10-class row then costs no per-row scalar chains.  Rows with
 * contiguous classes (at least half a vector's worth of them) move in and out
 * of the buffer by register tiles, whole or half (ce_tiles); a last tile
 * overlaps the one before it rather than reading past the row, so no masked
 * access is needed.
 *
 *   z           where the rows' logits start (ce_rows); classes at stride zc
 *   target, ts  row k's target at byte offset k * ts from target; a target
 *               equal to `ignore` (or, defensively, outside 0..m-1) ignores
 *               the row
 *   weight[k]   row k's weight (class weight x sample weight), or NULL for 1
 *   g           where the rows' gradients go (stride gc), or g == NULL
 *   gscale      multiplies every gradient (upstream gradient / denominator)
 *   loss[k]     receives row k's weighted loss (0 for ignored rows), or
 *               loss == NULL
 *
 *   buf         the [class][row] block: CE_SHORT_MAX * CE_ROWS elements,
 *               32-byte aligned, the caller's (too large for a thread's stack)
 *
 * Returns the sum of the n losses (in a fixed order: ce_sum64).
 * A row of weight 0 contributes 0 even where its target logit is -inf.
 */
#define CE_ROWS 64
#define CE_SHORT_MAX 64

/* Where a block's rows start: at at[k], or, where at == NULL, at base + k *
   step bytes (rows evenly spaced, as rows of a matrix are: then the caller
   sets up nothing per row).  The same struct describes the logits (read
   only) and the gradient rows. */
typedef struct {
    char *base;
    ptrdiff_t step;
    void *const *at;
} ce_rows;

/* Row k's address in `rows`, as a pointer to T. */
#define CE_ROW(T, rows, k) \
    ((T *)((rows)->at != NULL ? (rows)->at[k] : (void *)((rows)->base + (k) * (rows)->step)))

/* x[0] + ... + x[63] in a fixed order that vectorises: four lanes, then
   (lane 0 + lane 1) + (lane 2 + lane 3). */
CE_INLINE double ce_sum64(const double *x)
{
    double lane[4] = {0.0, 0.0, 0.0, 0.0};
    for (int k = 0; k < CE_ROWS; k += 4)
        for (int l = 0; l < 4; l++) lane[l] += x[k + l];
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

/*
 * Half tiles, for the classes a whole tile would overshoot: VL rows of VL/2
 * elements, loaded as VL/2 vectors [row kk | row kk + VL/2].  A transpose
 * within each 128-bit half (the first stages of the whole-tile transpose)
 * turns them into VL/2 columns of VL rows, and the same transpose turns
 * columns back into such row pairs.
 */
typedef float ce_half_f32 __attribute__((vector_size(16)));
typedef double ce_half_f64 __attribute__((vector_size(16)));
typedef float ce_uhalf_f32 __attribute__((vector_size(16), aligned(4), may_alias));
typedef double ce_uhalf_f64 __attribute__((vector_size(16), aligned(8), may_alias));

CE_INLINE void ce_transpose_half_f32(ce_vec_f32 r[4])
{
    ce_vec_f32 t0 = CE_SHUF8(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13);
    ce_vec_f32 t1 = CE_SHUF8(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
    ce_vec_f32 t2 = CE_SHUF8(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13);
    ce_vec_f32 t3 = CE_SHUF8(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
    r[0] = CE_SHUF8(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
    r[1] = CE_SHUF8(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
    r[2] = CE_SHUF8(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
    r[3] = CE_SHUF8(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
}

CE_INLINE void ce_transpose_half_f64(ce_vec_f64 r[2])
{
    ce_vec_f64 t0 = CE_SHUF4(r[0], r[1], 0, 4, 2, 6), t1 = CE_SHUF4(r[0], r[1], 1, 5, 3, 7);
    r[0] = t0;
    r[1] = t1;
}

/*
 * Moving VL rows (rows[0..VL-1], classes contiguous) into and out of the
 * [class][row] buffer, VL columns from class jt on (tile) or VL/2 (half).
 * col points at the buffer's (class jt, row 0 of these rows); each class's
 * VL rows are contiguous there, classes CE_ROWS apart.  On the way out every
 * row kk is multiplied by a[kk] (the same products, per column of rows).
 */
#define CE_DEFINE_TILES(T, SFX)                                                 \
CE_INLINE void ce_tile_in_##SFX(const T *const *rows, ptrdiff_t jt, T *col)   \
{                                                                             \
    enum { VL = CE_VL_##SFX };                                                \
    ce_vec_##SFX r[VL];                                                       \
    for (int kk = 0; kk < VL; kk++) r[kk] = *(const ce_uvec_##SFX *)(rows[kk] + jt); \
    ce_transpose_##SFX(r);                                                    \
    for (int kk = 0; kk < VL; kk++) *(ce_vec_##SFX *)(col + kk * CE_ROWS) = r[kk]; \
}                                                                             \
CE_INLINE void ce_half_in_##SFX(const T *const *rows, ptrdiff_t jt, T *col)   \
{                                                                             \
    enum { H = CE_VL_##SFX / 2 };                                             \
    ce_vec_##SFX r[H];                                                        \
    for (int kk = 0; kk < H; kk++)                                            \
        r[kk] = CE_JOIN_##SFX(*(const ce_uhalf_##SFX *)(rows[kk] + jt),       \
                              *(const ce_uhalf_##SFX *)(rows[kk + H] + jt));  \
    ce_transpose_half_##SFX(r);                                               \
    for (int kk = 0; kk < H; kk++) *(ce_vec_##SFX *)(col + kk * CE_ROWS) = r[kk]; \
}                                                                             \
CE_INLINE void ce_tile_out_##SFX(const T *col, const T *a, T *const *rows,    \
                                 ptrdiff_t jt)                                \
{                                                                             \
    enum { VL = CE_VL_##SFX };                                                \
    ce_vec_##SFX r[VL], av = *(const ce_vec_##SFX *)a;                        \
    for (int kk = 0; kk < VL; kk++) r[kk] = *(const ce_vec_##SFX *)(col + kk * CE_ROWS) * av; \
    ce_transpose_##SFX(r);                                                    \
    for (int kk = 0; kk < VL; kk++) *(ce_uvec_##SFX *)(rows[kk] + jt) = r[kk]; \
}                                                                             \
CE_INLINE void ce_half_out_##SFX(const T *col, const T *a, T *const *rows,    \
                                 ptrdiff_t jt)                                \
{                                                                             \
    enum { H = CE_VL_##SFX / 2 };                                             \
    ce_vec_##SFX r[H], av = *(const ce_vec_##SFX *)a;                         \
    for (int kk = 0; kk < H; kk++) r[kk] = *(const ce_vec_##SFX *)(col + kk * CE_ROWS) * av; \
    ce_transpose_half_##SFX(r);                                               \
    for (int kk = 0; kk < H; kk++) {                                          \
        *(ce_uhalf_##SFX *)(rows[kk] + jt) = CE_LOW_##SFX(r[kk]);             \
        *(ce_uhalf_##SFX *)(rows[kk + H] + jt) = CE_HIGH_##SFX(r[kk]);        \
    }                                                                         \
}
CE_DEFINE_TILES(float, f32)
CE_DEFINE_TILES(double, f64)

/* The tiles that cover classes 0..m-1 for vectors of vl elements (m >=
   vl/2): whole tiles, then for the rest a whole tile ending at m when more
   than half a tile is left, else half tiles (two when m < vl, which may
   overlap).  Overlapping tiles move the same values twice.  Returns the
   number of tiles; tile i starts at class start[i], half[i] says which kind. */
CE_INLINE int ce_tiles(ptrdiff_t m, ptrdiff_t vl, ptrdiff_t *start, int *half)
{
    int n = 0;
    ptrdiff_t j = 0;
    for (; j + vl <= m; j += vl) { start[n] = j; half[n++] = 0; }
    if (j < m) {
        if (m - j > vl / 2 && m >= vl) {
            start[n] = m - vl; half[n++] = 0;
        } else {
            if (m - j > vl / 2) { start[n] = j; half[n++] = 1; }
            start[n] = m - vl / 2; half[n++] = 1;
        }
    }
    return n;
}

#define CE_DEFINE_SHORT_ROWS(T, SFX, EXP, NEG_INF)                              \
CE_DISPATCH double ce_short_xent_##SFX(                                       \
    const ce_rows *z, ptrdiff_t zc, const ptrdiff_t *target, ptrdiff_t ts,    \
    ptrdiff_t ignore, const double *weight, ptrdiff_t n, ptrdiff_t m,          \
    const ce_rows *g, ptrdiff_t gc, double gscale, double *loss, T *buf)      \
{                                                                             \
    enum { VL = CE_VL_##SFX };                                                \
    buf = __builtin_assume_aligned(buf, 32);                                  \
    T mx[CE_ROWS], mn[CE_ROWS], a[CE_ROWS] __attribute__((aligned(32)));      \
    double s[CE_ROWS], lg[CE_ROWS];                                           \
    const T *zrows[CE_ROWS];                                                  \
    T *grow_list[CE_ROWS], *const *grows = g != NULL ? grow_list : NULL;      \
    ptrdiff_t t[CE_ROWS], j, k;                                               \
    /* Row addresses (for evenly spaced rows a loop that vectorises), and     \
       each target as its class or -1. */                                    \
    for (k = 0; k < n; k++) zrows[k] = CE_ROW(const T, z, k);                \
    if (g != NULL)                                                            \
        for (k = 0; k < n; k++) grow_list[k] = CE_ROW(T, g, k);              \
    for (k = 0; k < n; k++)                                                   \
        t[k] = ce_class_or_ignored(                                           \
            *(const ptrdiff_t *)((const char *)target + k * ts), ignore, m);  \
    /* The gradient rows are written last: start fetching their lines now    \
       (rows shorter than a line share lines, and fetching each costs more    \
       than it saves). */                                                     \
    if (grows != NULL && m > 0 && ((m - 1) * gc + 1) * (ptrdiff_t)sizeof(T) >= 64) \
        for (k = 0; k < n; k++) {                                             \
            __builtin_prefetch(grows[k], 1, 3);                               \
            __builtin_prefetch(grows[k] + (m - 1) * gc, 1, 3);                \
        }                                                                     \
    ptrdiff_t start[CE_SHORT_MAX / 2 + 2];                                    \
    int half[CE_SHORT_MAX / 2 + 2], n_tiles = 0, i;                           \
    if (m >= VL / 2) n_tiles = ce_tiles(m, VL, start, half);                  \
    k = 0;                                                                    \
    if (zc == 1 && n_tiles > 0)                                               \
        for (; k + VL <= n; k += VL)                                          \
            for (i = 0; i < n_tiles; i++) {                                   \
                if (half[i])                                                  \
                    ce_half_in_##SFX(zrows + k, start[i], buf + start[i] * CE_ROWS + k); \
                else                                                          \
                    ce_tile_in_##SFX(zrows + k, start[i], buf + start[i] * CE_ROWS + k); \
            }                                                                 \
    for (; k < n; k++) {                                                      \
        const T *zr = zrows[k];                                               \
        for (j = 0; j < m; j++) buf[j * CE_ROWS + k] = zr[j * zc];            \
    }                                                                         \
    for (j = 0; j < m; j++)                                                   \
        for (k = n; k < CE_ROWS; k++) buf[j * CE_ROWS + k] = 0;               \
    for (k = 0; k < CE_ROWS; k++) { mx[k] = NEG_INF; mn[k] = -(NEG_INF); }    \
    for (j = 0; j < m; j++) {                                                 \
        const T *col = buf + j * CE_ROWS;                                     \
        for (k = 0; k < CE_ROWS; k++) {                                       \
            mx[k] = col[k] > mx[k] ? col[k] : mx[k];                          \
            mn[k] = col[k] < mn[k] ? col[k] : mn[k];                          \
        }                                                                     \
    }                                                                         \
    T lo = -(NEG_INF);                  /* the least exp argument */          \
    CE_SIMD_MIN(lo)                                                           \
    for (k = 0; k < CE_ROWS; k++) {                                           \
        T d = mn[k] - mx[k];                                                  \
        lo = d < lo ? d : lo;                                                 \
    }                                                                         \
    for (j = 0; j < m; j++) {                                                 \
        T *col = buf + j * CE_ROWS;                                           \
        if (lo >= CE_NORMAL_##SFX)                                            \
            for (k = 0; k < CE_ROWS; k++) col[k] = EXP##_normal(col[k] - mx[k]); \
        else                                                                  \
            for (k = 0; k < CE_ROWS; k++) col[k] = EXP##_nonpos(col[k] - mx[k]); \
    }                                                                         \
    for (k = 0; k < CE_ROWS; k++) s[k] = m > 0 ? (double)buf[k] : 0.0;       \
    for (j = 1; j < m; j++)                                                   \
        for (k = 0; k < CE_ROWS; k++) s[k] += (double)buf[j * CE_ROWS + k];   \
    /* Per-row terms as arrays over all CE_ROWS rows (the padding rows past \
       n have weight 0 and are never written), so that the loss and the     \
       gradient factors are SIMD over rows too. */                          \
    double w[CE_ROWS], wl[CE_ROWS], zt[CE_ROWS], et[CE_ROWS], lossv[CE_ROWS]; \
    int on[CE_ROWS];                  /* the row counts: not ignored, not padding */ \
    for (k = 0; k < n; k++) {                                                 \
        on[k] = t[k] >= 0;                                                    \
        w[k] = weight ? weight[k] : 1.0;                                      \
        wl[k] = t[k] < 0 ? 0.0 : w[k];                                        \
        zt[k] = t[k] < 0 ? 0.0 : (double)zrows[k][t[k] * zc];                \
        et[k] = t[k] < 0 ? 0.0 : (double)buf[t[k] * CE_ROWS + k];             \
    }                                                                         \
    for (; k < CE_ROWS; k++) { w[k] = wl[k] = zt[k] = et[k] = 0.0; on[k] = 0; } \
    int odd = 0;                          /* a sum that is not a normal number */ \
    for (k = 0; k < CE_ROWS; k++) {                                           \
        lg[k] = ce_log_normal(s[k]);                                          \
        odd |= !(s[k] >= 0x1p-1022 && s[k] <= 0x1.fffffffffffffp1023);        \
    }                                                                         \
    if (odd)                                                                  \
        for (k = 0; k < CE_ROWS; k++)                                         \
            if (!(s[k] >= 0x1p-1022 && s[k] <= 0x1.fffffffffffffp1023))       \
                lg[k] = log(s[k]);            /* NaN, inf: libm's answer */   \
    for (k = 0; k < CE_ROWS; k++)                                             \
        lossv[k] = ce_weigh(wl[k], ((double)mx[k] - zt[k]) + lg[k], on[k] ? lg[k] : 0.0); \
    double total = ce_sum64(lossv);                                           \
    if (loss != NULL)                                                         \
        for (k = 0; k < n; k++) loss[k] = lossv[k];                           \
    if (grows == NULL) return total;                                          \
    /* Gradient: p = e / s scaled by gscale * w, then p_t - 1 at the target, \
       formed in double from the unscaled exp (exact where p_t is near 1). */ \
    double gt[CE_ROWS], f[CE_ROWS];                                           \
    int overflow = 0;                                                         \
    for (k = 0; k < CE_ROWS; k++) {                                           \
        double gw = gscale * w[k], inv = 1.0 / s[k];                          \
        f[k] = gw * inv;                                                      \
        a[k] = (T)f[k];                                                       \
        gt[k] = gw * (et[k] * inv - 1.0);                                     \
        overflow |= (a[k] == -(NEG_INF) || a[k] == NEG_INF)                   \
                    && !(f[k] == INFINITY || f[k] == -INFINITY);              \
    }                                                                         \
    k = 0;                                                                    \
    if (overflow) {            /* a factor overflows T; the products may not */ \
        for (; k < n; k++)                                                    \
            for (j = 0; j < m; j++)                                           \
                grows[k][j * gc] = (T)(buf[j * CE_ROWS + k] * f[k]);          \
    } else if (gc == 1 && n_tiles > 0) {                                      \
        for (; k + VL <= n; k += VL)                                          \
            for (i = 0; i < n_tiles; i++) {                                   \
                if (half[i])                                                  \
                    ce_half_out_##SFX(buf + start[i] * CE_ROWS + k, a + k, grows + k, start[i]); \
                else                                                          \
                    ce_tile_out_##SFX(buf + start[i] * CE_ROWS + k, a + k, grows + k, start[i]); \
            }                                                                 \
    }                                                                         \
    for (; k < n; k++)                                                        \
        for (j = 0; j < m; j++) grows[k][j * gc] = buf[j * CE_ROWS + k] * a[k]; \
    for (k = 0; k < n; k++) {                                                 \
        T *gk = grows[k];                                                     \
        if (t[k] < 0) { for (j = 0; j < m; j++) gk[j * gc] = 0; continue; }  \
        gk[t[k] * gc] = (T)gt[k];                                             \
    }                                                                         \
    return total;                                                             \
}

CE_DEFINE_PRIMITIVES(float, f32, ce_expf, -__builtin_inff())
CE_DEFINE_PRIMITIVES(double, f64, ce_exp, -__builtin_inf())
CE_DEFINE_SHORT_ROWS(float, f32, ce_expf, -__builtin_inff())
CE_DEFINE_SHORT_ROWS(double, f64, ce_exp, -__builtin_inf())

#endif /* CROSSENTROPY_SIMD_H */
