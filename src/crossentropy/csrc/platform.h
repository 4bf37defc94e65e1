/*
 * What every other header needs: threads (OpenMP, and fork() with them),
 * runtime dispatch (target_clones), inlining and the SIMD pragmas, and the
 * sizes that the Cython kernels share (declared in _kernels.pxd).
 *
 * Portability: no -march=native, no -ffast-math.  The build adds
 * -fno-trapping-math (lets GCC if-convert the clamps in the exp loop; it changes
 * no result) and each hot function is cloned for x86-64-v4 (AVX-512) and
 * x86-64-v3 (AVX2 + FMA), with a baseline fallback; the dynamic linker picks
 * the widest one the CPU runs, at load time.
 */
#ifndef CE_PLATFORM_H
#define CE_PLATFORM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

/* Sizes the kernels share with _kernels.pyx (through _kernels.pxd). */
enum {
    CE_ROWS = 64,           /* rows in a block of the across-rows short-row kernel */
    CE_SHORT_MAX = 64,      /* classes of a row short enough for it */
    CE_LANES = 16,          /* independent float64 sums of a row (a fixed order) */
    CE_BLOCK = 1024,        /* elements of a row computed, then summed, at a time */
    CE_RUN = 2048,          /* elements of a run (rows in runs), at least */
    CE_MAX_RUNS = 512,      /* runs of a row at most (runs grow beyond) */
    CE_RUN_PART = 128       /* elements of a run fetched ahead at a time */
};

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
#define CE_PRAGMA(x) _Pragma(#x)
#define CE_SIMD_MAXMIN(hi, lo, flag) \
    CE_PRAGMA(omp simd reduction(max:hi) reduction(min:lo) reduction(|:flag))
#define CE_SIMD_MIN(v) CE_PRAGMA(omp simd reduction(min:v))
#define CE_SIMD_SUM _Pragma("omp simd reduction(+:acc)")
#define CE_SIMD _Pragma("omp simd")
#else
#define CE_SIMD_MAXMIN(hi, lo, flag)
#define CE_SIMD_MIN(v)
#define CE_SIMD_SUM
#define CE_SIMD
#endif

#endif /* CE_PLATFORM_H */
