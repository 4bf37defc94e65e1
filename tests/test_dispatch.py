"""Every code path of the runtime dispatch, against NumPy.

The extension runs the widest clones the CPU has (x86-64-v4, -v3 or
baseline), so the others never run in it here.  This test compiles a small
harness over the same _simd.h with dispatch (the clones this CPU picks) and,
with -DCE_NO_DISPATCH, once for each level (baseline x86-64, -march=x86-64-v3,
-march=x86-64-v4), runs each level the CPU can run, and checks the exp, the
fused exp-sum and the across-rows short-row kernel against NumPy; that the
one-scale exp agrees bit for bit with the two-scale one and the register-tile
moves with the element-by-element ones; and that the AVX2 and AVX-512 levels
give the same bits.  Skipped where there is no C compiler or no source tree.
"""

import os
import platform
import shutil
import subprocess

import numpy as np
import pytest

import reference as ref

HEADER_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "src", "crossentropy")
CC = shutil.which("gcc") or shutil.which("cc")

pytestmark = pytest.mark.skipif(
    CC is None or not os.path.exists(os.path.join(HEADER_DIR, "_simd.h"))
    or platform.machine() != "x86_64" or not os.path.exists("/proc/cpuinfo"),
    reason="needs a C compiler, the source tree and x86-64",
)

HARNESS = r"""
#include "_simd.h"
#include <stdio.h>
#include <stdlib.h>

/* The one-scale exps (a multiply by 2^n, or an integer add of n) must give
   the same bits as the two-scale one wherever the kernels use them: every
   17th float in [-87, 0] (every residue of the low mantissa bits comes up),
   every float in its lowest 2^20 and a sample of doubles in [-708, 0].
   Returns the number of disagreements. */
CE_DISPATCH long long exp_disagreements(void)
{
    long long bad = 0;
    uint32_t stop;
    float lowest = CE_NORMAL_f32;
    memcpy(&stop, &lowest, 4);
    for (uint32_t u = 0x80000000u; u <= stop; u += u + 0x100000u < stop ? 17 : 1) {
        float x, a, b;
        memcpy(&x, &u, 4);
        a = ce_expf_normal(x);
        b = ce_expf_nonpos(x);
        bad += memcmp(&a, &b, 4) != 0;
        a = ce_expf_normal_nonan(x);
        bad += memcmp(&a, &b, 4) != 0;
    }
    uint64_t state = 12345;
    for (int i = 0; i < 10000000; i++) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        double x = CE_NORMAL_f64 * (double)(state >> 11) * 0x1p-53, a, b;
        a = ce_exp_normal(x);
        b = ce_exp_nonpos(x);
        bad += memcmp(&a, &b, 8) != 0;
        a = ce_exp_normal_nonan(x);
        bad += memcmp(&a, &b, 8) != 0;
    }
    return bad;
}

/* The short-row block moves rows with contiguous classes by register tiles
   (whole and half) and strided rows element by element: both must give the
   same bits (loss, block sum and gradient; NaN for NaN), for every row length
   1..64 and every block size 1..64, with rows given by a first row and a
   step or by a list of addresses.  Each contiguous row sits at the very end
   of a page followed by an inaccessible one, or at the very start of a page
   after one, so a tile that reads or writes past a row's classes crashes the
   harness.  Odd blocks span more than the one-scale exp's range (the
   two-scale exp runs there) and hold a -inf and a NaN logit; row 3 is
   ignored.  Returns the number of disagreements. */
#include <sys/mman.h>
#include <unistd.h>
static char *guarded_pages(int n)       /* n read-write pages, 2 pages apart, */
{                                       /* each between two inaccessible ones */
    long pg = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, (2 * n + 1) * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    for (int k = 0; k < n; k++) mprotect(p + (2 * k + 1) * pg, pg, PROT_READ | PROT_WRITE);
    return p + pg;
}
#define CE_SAME(a, b) ((a) != (a) ? (b) != (b) : memcmp(&(a), &(b), sizeof(a)) == 0)
#define TILE_CHECK(T, SFX)                                                    \
static long long tile_disagreements_##SFX(void)                               \
{                                                                             \
    static char *zpages, *gpages;                                             \
    static T zt[64 * CE_ROWS], g2[64 * CE_ROWS];                              \
    long pg = sysconf(_SC_PAGESIZE);                                          \
    long long bad = 0;                                                        \
    uint64_t st = 99;                                                         \
    static T blk[CE_SHORT_MAX * CE_ROWS] __attribute__((aligned(32)));       \
    if (zpages == NULL) { zpages = guarded_pages(CE_ROWS); gpages = guarded_pages(CE_ROWS); } \
    for (int at_end = 0; at_end < 2; at_end++)                                \
    for (int m = 1; m <= 64; m++)                                             \
    for (int n = 1; n <= CE_ROWS; n++) {                                      \
        void *zl[CE_ROWS], *gl[CE_ROWS], *zl2[CE_ROWS], *gl2[CE_ROWS];        \
        ptrdiff_t t[2 * CE_ROWS];                                             \
        double l1[CE_ROWS], l2[CE_ROWS], l3[CE_ROWS];                         \
        size_t off = at_end ? (size_t)pg - m * sizeof(T) : 0;                 \
        for (int k = 0; k < n; k++) {                                         \
            T *z = (T *)(zpages + 2 * k * pg + off);                          \
            for (int j = 0; j < m; j++) {                                     \
                st = st * 6364136223846793005u + 1442695040888963407u;       \
                z[j] = (T)(((double)(st >> 11) * 0x1p-53 - 0.5) * (n % 2 ? 2000.0 : 20.0)); \
            }                                                                 \
            if (n % 2 && k == 1) z[0] = -INFINITY;                            \
            if (n % 2 && k == 2) z[m / 2] = NAN;                              \
            st = st * 6364136223846793005u + 1442695040888963407u;           \
            t[2 * k] = k == 3 ? -100 : (ptrdiff_t)((st >> 33) % (uint64_t)m); \
            t[2 * k + 1] = 0;                                                 \
            for (int j = 0; j < m; j++) zt[j * CE_ROWS + k] = z[j];           \
            zl[k] = z;                                                        \
            gl[k] = gpages + 2 * k * pg + off;                                \
            zl2[k] = zt + k;                                                  \
            gl2[k] = g2 + k;                                                  \
        }                                                                     \
        /* contiguous rows: evenly spaced, then listed; strided rows */      \
        ce_rows z1 = {zpages + off, 2 * pg, NULL}, g1 = {gpages + off, 2 * pg, NULL}; \
        ce_rows z3 = {NULL, 0, zl}, g3 = {NULL, 0, gl};                       \
        ce_rows z2 = {NULL, 0, zl2}, gs2 = {NULL, 0, gl2};                    \
        ptrdiff_t ts = 2 * sizeof(ptrdiff_t);                                 \
        double s2 = ce_short_xent_##SFX(&z2, CE_ROWS, t, ts, -100, NULL, n, m, &gs2, CE_ROWS, 0.5, l2, blk); \
        for (int pass = 0; pass < 2; pass++) {                                \
            for (int k = 0; k < n; k++)       /* nothing left from the last */ \
                for (int j = 0; j < m; j++) ((T *)gl[k])[j] = (T)12345;       \
            double s1 = ce_short_xent_##SFX(pass ? &z3 : &z1, 1, t, ts, -100, NULL, n, m, \
                                            pass ? &g3 : &g1, 1, 0.5, l1, blk); \
            bad += !CE_SAME(s1, s2);                                          \
            for (int k = 0; k < n; k++) {                                     \
                bad += !CE_SAME(l1[k], l2[k]);                                \
                T *g = (T *)gl[k];                                            \
                for (int j = 0; j < m; j++)                                   \
                    bad += !CE_SAME(g[j], g2[j * CE_ROWS + k]);               \
            }                                                                 \
        }                                                                     \
        /* the loss alone: the same losses */                                \
        ce_short_xent_##SFX(&z1, 1, t, ts, -100, NULL, n, m, NULL, 1, 0.5, l3, blk); \
        for (int k = 0; k < n; k++) bad += !CE_SAME(l3[k], l2[k]);            \
        if (n > 3) bad += l2[3] != 0.0;          /* the ignored row */        \
    }                                                                         \
    return bad;                                                               \
}
TILE_CHECK(float, f32)
TILE_CHECK(double, f64)

/* A NaN in a row whose other logits are all within the one-scale exp's range
   keeps the row off that exp (ce_max's min is NaN), whatever the NaN's
   payload: the row's exp sum must be NaN, with and without storing the exps.
   Returns the number of rows that came out as numbers. */
#define NAN_CHECK(T, SFX, UINT, QUIET)                                        \
static long long nan_misses_##SFX(void)                                       \
{                                                                             \
    static T x[1000], out[1000], blk[CE_BLOCK];                               \
    static const UINT payloads[] = {1, 0x1FF, 0x123, 0x3FF};                  \
    long long bad = 0;                                                        \
    for (int i = 0; i < 1000; i++) x[i] = (T)((i * 37 % 1000) / 100.0 - 5.0); \
    for (int q = 0; q < 4; q++)                                               \
        for (int sign = 0; sign < 2; sign++)                                  \
            for (int pos = 0; pos < 1000; pos += 111) {                       \
                T keep = x[pos], lo, top;                                     \
                UINT bits = QUIET | payloads[q] | ((UINT)sign << (8 * sizeof(T) - 1)); \
                memcpy(&x[pos], &bits, sizeof(T));                            \
                top = ce_max_##SFX(x, 1000, &lo);                             \
                double s1 = ce_expsum_##SFX(x, out, 1000, top, lo, NULL);     \
                double s2 = ce_sumexp_##SFX(x, 1000, top, lo, NULL, blk);     \
                bad += !(s1 != s1) + !(s2 != s2);                             \
                x[pos] = keep;                                                \
            }                                                                 \
    return bad;                                                               \
}
NAN_CHECK(float, f32, uint32_t, 0x7FC00000u)
NAN_CHECK(double, f64, uint64_t, UINT64_C(0x7FF8000000000000))

/* A row in runs, as long_rows computes it: its exp sum, max and run scales. */
static double row_in_runs(const float *x, float *out, ptrdiff_t m, ptrdiff_t run,
                          float *top, double *scale)
{
    double tops[CE_MAX_RUNS], sums[CE_MAX_RUNS], hi;
    ce_run_parts_f32(x, out, m, run, tops, sums);
    double s = ce_runs_total(tops, sums, (m + run - 1) / run, &hi, scale);
    *top = (float)hi;
    return s;
}

/* With an argument: "exp", "tiles" or "nan", the checks above.  Otherwise
   stdin: n_rows, m, then n_rows*m floats (logits), then n_rows int64 targets.
   stdout: n_rows*m exps of the flat logits, the expsum of row 0, then the
   short-row loss (n_rows doubles) and gradient (n_rows*m floats), zeros for
   m > CE_SHORT_MAX; for row 0 in runs, its exp sum (storing the exps, and
   not), its max (both ways) and its softmax (m floats); every row's exp sum
   in runs (n_rows doubles); then the clones that ran. */
int main(int argc, char **argv)
{
    if (argc > 1) {
        if (strcmp(argv[1], "exp") == 0)
            printf("%lld", exp_disagreements());
        else if (strcmp(argv[1], "nan") == 0)
            printf("%lld", nan_misses_f32() + nan_misses_f64());
        else
            printf("%lld", tile_disagreements_f32() + tile_disagreements_f64());
        return 0;
    }
    long long n, m;
    if (fread(&n, 8, 1, stdin) != 1 || fread(&m, 8, 1, stdin) != 1) return 1;
    float *z = malloc(n * m * 4), *e = malloc(n * m * 4), *g = malloc(n * m * 4);
    ptrdiff_t *t = malloc(n * sizeof(ptrdiff_t));
    double *loss = malloc(n * 8);
    long long *t64 = malloc(n * 8);
    if (fread(z, 4, n * m, stdin) != (size_t)(n * m) || fread(t64, 8, n, stdin) != (size_t)n) return 1;
    for (long long k = 0; k < n; k++) t[k] = (ptrdiff_t)t64[k];
    ce_exp_f32(z, e, n * m);
    float *row = malloc(m * 4);
    float lo, top = ce_max_f32(z, m, &lo);
    double s = ce_expsum_f32(z, row, m, top, lo, NULL);
    memset(loss, 0, n * 8);
    memset(g, 0, n * m * 4);
    static float blk[CE_SHORT_MAX * CE_ROWS] __attribute__((aligned(32)));
    for (long long b = 0; m <= CE_SHORT_MAX && b < n; b += CE_ROWS) {
        long long len = n - b < CE_ROWS ? n - b : CE_ROWS;
        ce_rows zr = {(char *)(z + b * m), m * 4, NULL}, gr = {(char *)(g + b * m), m * 4, NULL};
        ce_short_xent_f32(&zr, 1, t + b, sizeof(ptrdiff_t), -100, NULL, len, m, &gr, 1, 1.0,
                          loss + b, blk);
    }
    /* row 0 in runs: its sum (storing the exps and not), max and softmax */
    ptrdiff_t run = ce_run_length(m);
    double *scale = malloc(CE_MAX_RUNS * 8), runs[2];
    float run_top[2];
    runs[0] = row_in_runs(z, row, m, run, &run_top[0], scale);
    runs[1] = row_in_runs(z, NULL, m, run, &run_top[1], scale);
    ce_scale_runs_f32(row, m, run, 1.0 / runs[0], scale);
    double *row_sums = malloc(n * 8);
    for (long long k = 0; k < n; k++)
        row_sums[k] = row_in_runs(z + k * m, NULL, m, run, &run_top[1], scale);
    fwrite(e, 4, n * m, stdout);
    fwrite(&s, 8, 1, stdout);
    fwrite(loss, 8, n, stdout);
    fwrite(g, 4, n * m, stdout);
    fwrite(runs, 8, 2, stdout);
    fwrite(run_top, 4, 2, stdout);
    fwrite(row, 4, m, stdout);
    fwrite(row_sums, 8, n, stdout);
    printf("%s", ce_dispatch_target());
    return 0;
}
"""


def cpu_level():
    """The widest x86-64 level /proc/cpuinfo's flags admit (GCC's levels, less
    the flags every x86-64 CPU with AVX has)."""
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    v3 = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "xsave"}
    v4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    if v3 <= flags:
        return "x86-64-v4" if v4 <= flags else "x86-64-v3"
    return "baseline"


LEVELS = ["baseline", "x86-64-v3", "x86-64-v4"]


def runnable(build):
    """`build`, skipped where this CPU cannot run its instructions."""
    need = build if build in LEVELS else "baseline"
    if LEVELS.index(need) > LEVELS.index(cpu_level()):
        pytest.skip(f"this CPU cannot run {need} code")
    return build


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dispatch")
    src = tmp / "harness.c"
    src.write_text(HARNESS)
    built = {}
    for name, defines in [("dispatched", []), ("baseline", ["-DCE_NO_DISPATCH"]),
                          ("x86-64-v3", ["-DCE_NO_DISPATCH", "-march=x86-64-v3"]),
                          ("x86-64-v4", ["-DCE_NO_DISPATCH", "-march=x86-64-v4"]),
                          ("old-shuffle", ["-DCE_NO_DISPATCH", "-DCE_OLD_SHUFFLE"])]:
        exe = tmp / name
        subprocess.run([CC, "-O3", "-fno-trapping-math", "-fno-math-errno", "-fopenmp", *defines,
                        "-I", HEADER_DIR, str(src), "-o", str(exe), "-lm"], check=True)
        built[name] = exe
    return built


def run_harness(exe, z, t):
    n, m = z.shape
    payload = (np.array([n, m], dtype=np.int64).tobytes() + z.astype(np.float32).tobytes()
               + t.astype(np.int64).tobytes())
    out = subprocess.run([str(exe)], input=payload, capture_output=True, check=True).stdout
    k = n * m * 4
    exps = np.frombuffer(out[:k], dtype=np.float32).reshape(n, m)
    expsum = np.frombuffer(out[k:k + 8], dtype=np.float64)[0]
    loss = np.frombuffer(out[k + 8:k + 8 + 8 * n], dtype=np.float64)
    grad = np.frombuffer(out[k + 8 + 8 * n:2 * k + 8 + 8 * n], dtype=np.float32).reshape(n, m)
    at = 2 * k + 8 + 8 * n
    run_sums = np.frombuffer(out[at:at + 16], dtype=np.float64)
    run_tops = np.frombuffer(out[at + 16:at + 24], dtype=np.float32)
    run_softmax = np.frombuffer(out[at + 24:at + 24 + 4 * m], dtype=np.float32)
    at += 24 + 4 * m
    row_sums = np.frombuffer(out[at:at + 8 * n], dtype=np.float64)
    target = out[at + 8 * n:].decode()
    return exps, expsum, loss, grad, target, (run_sums, run_tops, run_softmax, row_sums)


def specials_case():
    """150 rows of 10 logits, row 0 with -inf, NaN, 88 and -100; an ignored
    target and one out of range (ignored too)."""
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((150, 10)) * 5).astype(np.float32)
    z[0, :4] = [-np.inf, np.nan, 88.0, -100.0]
    t = rng.integers(0, 10, 150)
    t[3] = -100
    t[4] = 10
    return z, t


@pytest.mark.parametrize("build", ["dispatched", *LEVELS])
def test_each_dispatch_target_matches_numpy(harnesses, build):
    z, t = specials_case()
    exps, expsum, loss, grad, *_ = run_harness(harnesses[runnable(build)], z, t)

    with np.errstate(over="ignore", invalid="ignore"):
        np.testing.assert_allclose(exps, np.exp(z.astype(np.float64)), rtol=3e-7, equal_nan=True,
                                   atol=np.finfo(np.float32).smallest_subnormal)
    rows = slice(1, None)                                   # row 0 holds the specials
    ignored = (t[rows] < 0) | (t[rows] >= 10)
    kept = np.where(ignored, 0, t[rows])
    expected = ref.cross_entropy(z[rows], kept, "none")
    expected[ignored] = 0.0
    np.testing.assert_allclose(loss[rows], expected, rtol=2e-6, atol=2e-6)
    expected_grad = ref.cross_entropy_grad(z[rows], kept, "none")
    expected_grad[ignored] = 0.0
    np.testing.assert_allclose(grad[rows], expected_grad, rtol=2e-6, atol=1e-7)
    top = np.float64(np.nanmax(z[0]))
    with np.errstate(invalid="ignore"):
        assert np.isnan(expsum) == np.isnan(np.exp(z[0].astype(np.float64) - top).sum())


def runs_row(rng, m):
    """One row of m logits at levels far apart, stretch by stretch (a stretch
    of -inf, one 100 below the max, whose exps are subnormal floats), so that
    runs of the row have very different maxima."""
    z = rng.standard_normal(m) * 2
    edges = np.sort(rng.choice(np.arange(1, m), 12, replace=False))
    for piece, level in zip(np.split(np.arange(m), edges), [0, -30, 8, -np.inf, -100, 3, 0, -5, 10, -60, 1, -2, 4]):
        z[piece] += level
    return z.astype(np.float32)[None, :]


@pytest.mark.parametrize("build", ["dispatched", *LEVELS])
@pytest.mark.parametrize("m", [100, 2047, 2049, 40_000, 1_100_000])
def test_rows_in_runs_match_numpy_in_each_target(harnesses, build, m):
    # One run (m < 2048), a run and a bit, many runs, and more runs than
    # CE_MAX_RUNS at the shortest length (runs grow).
    z = runs_row(np.random.default_rng(m), m)
    sums, tops, softmax, _ = run_harness(harnesses[runnable(build)], z, np.zeros(1, dtype=np.int64))[5]
    z64 = z[0].astype(np.float64)
    exps = np.exp(z64 - z64.max())
    assert tops[0] == tops[1] == z.max()
    assert sums[0] == sums[1]                       # storing the exps or not: the same sum
    np.testing.assert_allclose(sums[0], exps.sum(), rtol=1e-6)
    # Each exp's argument z - shift is a float, rounded: a relative error of
    # up to |z - shift| 2^-24 (shift: the run's max, or the row's, which is
    # further), beside a few ulp from the exp and the scaling.
    expected = exps / exps.sum()
    spread = np.where(np.isinf(z64), 0.0, z64.max() - z64)          # (exp(-inf) is 0)
    bound = expected * (4e-7 + spread * 2.0**-24)
    assert np.all(np.abs(softmax - expected) <= bound + np.finfo(np.float32).smallest_subnormal)


BUILDS = ["dispatched", *LEVELS, "old-shuffle"]   # the last: GCC < 12's shuffle spelling


@pytest.mark.parametrize("build", BUILDS)
def test_one_scale_exp_gives_the_two_scale_bits_in_its_range(harnesses, build):
    # Rows whose exps are all normal numbers take the cheaper exp; results
    # must not depend on which one ran.
    out = subprocess.run([str(harnesses[runnable(build)]), "exp"], capture_output=True,
                         check=True)
    assert out.stdout == b"0"


@pytest.mark.parametrize("build", BUILDS)
def test_register_tiles_give_the_strided_bits_and_stay_inside_the_rows(harnesses, build):
    # float and double, every row length and block size up to 64, rows against
    # inaccessible pages (a stray access crashes the harness: check=True).
    out = subprocess.run([str(harnesses[runnable(build)]), "tiles"], capture_output=True,
                         check=True)
    assert out.stdout == b"0"


@pytest.mark.parametrize("build", BUILDS)
def test_a_nan_with_any_payload_keeps_its_row_off_the_one_scale_exp(harnesses, build):
    out = subprocess.run([str(harnesses[runnable(build)]), "nan"], capture_output=True,
                         check=True)
    assert out.stdout == b"0"


def test_the_avx2_and_avx512_clones_give_the_same_bits(harnesses):
    # The README says so: FMA contracts the same operations at both widths,
    # and every sum runs in a fixed order of lanes.
    runnable("x86-64-v4")
    rng = np.random.default_rng(3)
    for m in (1, 3, 4, 5, 7, 8, 10, 13, 16, 33, 64, 100, 1000, 5000):
        z = (rng.standard_normal((70, m)) * 6).astype(np.float32)
        z[1, 0] = -np.inf
        t = rng.integers(0, m, 70)
        v3 = run_harness(harnesses["x86-64-v3"], z, t)
        v4 = run_harness(harnesses["x86-64-v4"], z, t)
        for a, b in zip([*v3[:4], *v3[5]], [*v4[:4], *v4[5]]):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), m
    # rows in runs: 100 rows for every count of runs from 2 to 21 (the sum of
    # the runs' terms once fused some of them, which depended on the vector
    # width: about 1 row in 80 differed), and many runs
    for m in [2048 * k + 5 for k in range(1, 21)] + [150_000]:
        z = np.concatenate([runs_row(rng, m) for _ in range(100 if m < 150_000 else 1)])
        t = np.zeros(len(z), dtype=np.int64)
        v3 = run_harness(harnesses["x86-64-v3"], z, t)
        v4 = run_harness(harnesses["x86-64-v4"], z, t)
        for a, b in zip(v3[5], v4[5]):
            assert a.tobytes() == b.tobytes(), m


def test_the_dispatched_build_runs_the_widest_clones_the_cpu_has(harnesses):
    z, t = np.zeros((1, 3), dtype=np.float32), np.zeros(1, dtype=np.int64)
    assert run_harness(harnesses["dispatched"], z, t)[4] == cpu_level()
    assert run_harness(harnesses["baseline"], z, t)[4] == "baseline"


def test_the_installed_extension_runs_the_widest_clones_the_cpu_has():
    from crossentropy import _kernels
    assert _kernels.dispatch_target() == cpu_level()
