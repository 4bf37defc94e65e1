/*
 * A test harness over the kernels' C layer (src/crossentropy/csrc), compiled
 * by tests/test_dispatch.py: with runtime dispatch (the level this CPU
 * picks), and without it for baseline, x86-64-v3 and x86-64-v4 (and GCC <
 * 12's shuffle spelling).  It checks what the extension cannot reach from
 * Python, the levels it does not run.
 *
 *   harness exp | tiles | nan   the checks below; prints the number of
 *                               disagreements (0 is a pass)
 *   harness < problem           the row primitives on a problem (see main)
 */
#define _DEFAULT_SOURCE            /* mmap and sysconf under -std=c11 */
#include "csrc/ce.h"
#include <stdio.h>
#include <stdlib.h>

/* The one-scale exps (a multiply by 2^n, or an integer add of n) must give
   the same bits as the two-scale one wherever the kernels use them: every
   17th float in [-87, 0] (every residue of the low mantissa bits comes up),
   every float in its lowest 2^20 and a sample of doubles in [-708, 0].
   Returns the number of disagreements. */
static long long exp_disagreements(void)
{
    long long bad = 0;
    uint32_t stop;
    float lowest = CE_NORMAL_f32;
    memcpy(&stop, &lowest, 4);
    for (uint32_t u = 0x80000000u; u <= stop; u += u + 0x100000u < stop ? 17 : 1) {
        float x, a, b;
        memcpy(&x, &u, 4);
        a = ce_exp_normal_f32(x);
        b = ce_exp_nonpos_f32(x);
        bad += memcmp(&a, &b, 4) != 0;
        a = ce_exp_normal_nonan_f32(x);
        bad += memcmp(&a, &b, 4) != 0;
    }
    uint64_t state = 12345;
    for (int i = 0; i < 10000000; i++) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        double x = CE_NORMAL_f64 * (double)(state >> 11) * 0x1p-53, a, b;
        a = ce_exp_normal_f64(x);
        b = ce_exp_nonpos_f64(x);
        bad += memcmp(&a, &b, 8) != 0;
        a = ce_exp_normal_nonan_f64(x);
        bad += memcmp(&a, &b, 8) != 0;
    }
    return bad;
}

/* n read-write pages, 2 pages apart, each between two inaccessible ones */
#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#include <windows.h>
static long page_size(void)
{
    SYSTEM_INFO info;
    GetSystemInfo(&info);
    return (long)info.dwPageSize;
}

static char *guarded_pages(int n)
{
    long pg = page_size();
    DWORD old;
    char *p = VirtualAlloc(NULL, (2 * n + 1) * pg, MEM_RESERVE | MEM_COMMIT, PAGE_NOACCESS);
    if (p == NULL) abort();
    for (int k = 0; k < n; k++) VirtualProtect(p + (2 * k + 1) * pg, pg, PAGE_READWRITE, &old);
    return p + pg;
}
#else
#include <sys/mman.h>
#include <unistd.h>
static long page_size(void) { return sysconf(_SC_PAGESIZE); }

static char *guarded_pages(int n)
{
    long pg = page_size();
    char *p = mmap(NULL, (2 * n + 1) * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    for (int k = 0; k < n; k++) mprotect(p + (2 * k + 1) * pg, pg, PROT_READ | PROT_WRITE);
    return p + pg;
}
#endif
#define CE_SAME(a, b) ((a) != (a) ? (b) != (b) : memcmp(&(a), &(b), sizeof(a)) == 0)

#include "csrc/type_f32.h"
#include "checks_template.h"
#include "csrc/type_undef.h"
#include "csrc/type_f64.h"
#include "checks_template.h"
#include "csrc/type_undef.h"

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

/* With an argument: "exp", "tiles" (then optionally the step of its block
   sizes) or "nan", the checks above.  Otherwise
   stdin: n_rows, m, then n_rows*m floats (logits), then n_rows int64 targets.
   stdout: n_rows*m exps of the flat logits, the expsum of row 0, then the
   short-row loss (n_rows doubles) and gradient (n_rows*m floats), zeros for
   m > CE_SHORT_MAX; for row 0 in runs, its exp sum (storing the exps, and
   not), its max (both ways) and its softmax (m floats); every row's exp sum
   in runs (n_rows doubles); then the clones that ran. */
int main(int argc, char **argv)
{
#ifdef _WIN32
    _setmode(_fileno(stdin), _O_BINARY);          /* the problem comes as bytes */
    _setmode(_fileno(stdout), _O_BINARY);
#endif
    ce_select_kernels();
    if (argc > 1) {
        if (strcmp(argv[1], "exp") == 0)
            printf("%lld", exp_disagreements());
        else if (strcmp(argv[1], "nan") == 0)
            printf("%lld", nan_misses_f32() + nan_misses_f64());
        else {
            int step = argc > 2 ? atoi(argv[2]) : 1;
            printf("%lld", tile_disagreements_f32(step) + tile_disagreements_f64(step));
        }
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
    double s = ce_expsum_f32(z, row, m, top, lo, NULL, NULL);
    memset(loss, 0, n * 8);
    memset(g, 0, n * m * 4);
    static float blk[CE_SHORT_MAX * CE_ROWS] CE_ALIGNED(32);
    for (long long b = 0; m <= CE_SHORT_MAX && b < n; b += CE_ROWS) {
        long long len = n - b < CE_ROWS ? n - b : CE_ROWS;
        ce_rows zr = {(char *)(z + b * m), m * 4, NULL}, gr = {(char *)(g + b * m), m * 4, NULL};
        ce_short_xent_f32(&zr, 1, t + b, sizeof(ptrdiff_t), -100, NULL, len, m, &gr, 1, NULL, 1,
                          1.0, loss + b, NULL, blk);
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
