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

/*
 * GNU C (GCC, clang) gets the vector extensions, builtins and runtime
 * dispatch; any other C11 compiler (MSVC), or CE_PORTABLE, a portable build:
 * the same results from standard C alone, without the register tiles of the
 * short-row block and at the baseline ISA level.
 */
#if defined(__GNUC__) && !defined(CE_PORTABLE)
#define CE_GNU 1
#else
#define CE_GNU 0
#endif
#if CE_GNU
#define CE_INLINE static inline __attribute__((always_inline))
#define CE_ALIGNED(n) __attribute__((aligned(n)))
#define CE_PREFETCH(p, write) __builtin_prefetch((p), (write), 3)
#define CE_ASSUME_ALIGNED(p, n) __builtin_assume_aligned((p), (n))
#elif defined(_MSC_VER)
#define CE_INLINE static __forceinline
#define CE_ALIGNED(n)
#define CE_PREFETCH(p, write) ((void)(p))
#define CE_ASSUME_ALIGNED(p, n) (p)
#else
#define CE_INLINE static inline
#define CE_ALIGNED(n)
#define CE_PREFETCH(p, write) ((void)(p))
#define CE_ASSUME_ALIGNED(p, n) (p)
#endif

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
static int ce_pool_live;                /* a region may have started threads since */
static int ce_pool_released;            /* by the last fork's prepare handler */
static int ce_one_thread;               /* in a child whose pool was not released */

static void ce_before_fork(void)
{
    /* Nothing to release if no region ran since the last release (LLVM's
       libomp refuses to pause a paused runtime); a pool inherited from a
       parent it was not released in cannot be released either (that would
       wait for threads that do not exist). */
    if (!ce_pool_live && !ce_one_thread) {
        ce_pool_released = ce_release_before_fork;
        return;
    }
    ce_pool_released = ce_release_before_fork && !ce_one_thread
                       && omp_pause_resource_all(omp_pause_soft) == 0;
    if (ce_pool_released) ce_pool_live = 0;
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
/* Before a parallel region that may start threads (the caller holds the GIL). */
static inline void ce_pool_in_use(void) { ce_pool_live = 1; }
#else
#define CE_FORK_HANDLERS 0
static const int ce_one_thread = 0;
static inline void ce_pool_in_use(void) {}
static inline int ce_register_fork_handlers(void) { return 0; }
static inline void ce_set_release_before_fork(int on) { (void)on; }
#endif

/* What was built, for show_config(): the compiler, the OpenMP setup the build
   found (setup.py defines CE_BUILD_OPENMP), and its OpenMP version. */
#define CE_STR2(x) #x
#define CE_STR(x) CE_STR2(x)
#ifndef CE_BUILD_OPENMP
#define CE_BUILD_OPENMP "unknown"
#endif
static inline const char *ce_build_openmp(void) { return CE_BUILD_OPENMP; }
static inline const char *ce_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "GCC " __VERSION__;
#elif defined(_MSC_VER)
    return "MSVC " CE_STR(_MSC_FULL_VER);
#else
    return "a C11 compiler";
#endif
}
static inline int ce_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}
static inline int ce_simd_pragmas(void)
{
#if (defined(_OPENMP) && _OPENMP >= 201307) || defined(CE_OPENMP_SIMD)
    return 1;
#else
    return 0;
#endif
}

/* The threads a parallel region about to run may have: n, or 1 where the
   pool is unusable. */
static inline int ce_usable_threads(int n)
{
    if (ce_one_thread) return 1;
    ce_pool_in_use();
    return n;
}

#ifdef _OPENMP
static inline int ce_omp_max_threads(void) { return ce_one_thread ? 1 : omp_get_max_threads(); }

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

/*
 * Runtime dispatch: the kernels are compiled once per ISA level, and the
 * widest level the CPU (and its operating system) supports runs.  The levels
 * are x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and baseline; this table is
 * the one place they are defined: the target each level's code is compiled
 * for, and the CPU features it needs (those of the level's -march).  Any GNU C
 * compiler on x86-64 (GCC, clang) gets the levels; elsewhere, or with
 * CE_NO_DISPATCH or CE_PORTABLE, the baseline alone is compiled.
 */
#if defined(__x86_64__) && CE_GNU && !defined(CE_NO_DISPATCH)
#define CE_HAVE_DISPATCH 1
#if defined(__clang__) || __GNUC__ >= 11
#define CE_ARCH_V3 "arch=x86-64-v3"
#define CE_ARCH_V4 "arch=x86-64-v4"
#else                                   /* GCC 10 knows the features, not the levels */
#define CE_ARCH_V3 "avx,avx2,bmi,bmi2,f16c,fma,lzcnt,movbe,xsave"
#define CE_ARCH_V4 CE_ARCH_V3 ",avx512f,avx512bw,avx512cd,avx512dq,avx512vl"
#endif
#include <cpuid.h>

/* The widest level this CPU runs: 4 (x86-64-v4), 3 (x86-64-v3) or 0, by its
   CPUID features and the register state the operating system saves (XCR0). */
static inline int ce_cpu_level(void)
{
    unsigned a, b, c, d, b7, c81 = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    unsigned c1 = c;
    if (!__get_cpuid_count(7, 0, &a, &b7, &c, &d)) return 0;
    if (__get_cpuid(0x80000001u, &a, &b, &c, &d)) c81 = c;
    if (!(c1 & bit_OSXSAVE)) return 0;
    unsigned xcr0_lo, xcr0_hi;
    __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    int v3 = (c1 & bit_AVX) && (c1 & bit_FMA) && (c1 & bit_F16C) && (c1 & bit_MOVBE)
             && (c81 & bit_LZCNT) && (b7 & bit_AVX2) && (b7 & bit_BMI) && (b7 & bit_BMI2)
             && (xcr0_lo & 0x6) == 0x6;                      /* XMM and YMM state */
    int v4 = v3 && (b7 & bit_AVX512F) && (b7 & bit_AVX512BW) && (b7 & bit_AVX512CD)
             && (b7 & bit_AVX512DQ) && (b7 & bit_AVX512VL)
             && (xcr0_lo & 0xE6) == 0xE6;                    /* and opmask, ZMM state */
    return v4 ? 4 : v3 ? 3 : 0;
}
#else
#define CE_HAVE_DISPATCH 0
static inline int ce_cpu_level(void) { return 0; }
#endif

/* For loops that clang would vectorise with AVX-512 gathers or scatters,
   which cost more than the scalar loop. */
#if defined(__clang__)
#define CE_NO_VECTORIZE _Pragma("clang loop vectorize(disable)")
#else
#define CE_NO_VECTORIZE
#endif

#if (defined(_OPENMP) && _OPENMP >= 201307) || defined(CE_OPENMP_SIMD)    /* OpenMP 4.0 */
#define CE_PRAGMA(x) _Pragma(#x)
#define CE_SIMD _Pragma("omp simd")
#else
#define CE_SIMD
#endif

#endif /* CE_PLATFORM_H */
