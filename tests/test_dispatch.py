"""Both code paths of the runtime dispatch, against NumPy.

The extension picks its x86-64-v3 (AVX2+FMA) clones on a machine that has
AVX2, so its baseline clones never run here.  This test compiles a small
harness over the same _simd.h twice, with dispatch (the clone this CPU picks)
and with -DCE_NO_DISPATCH (baseline x86-64 code only), and checks the exp, the
fused exp-sum and the across-rows short-row kernel of each against NumPy, and
that the one-scale exp agrees bit for bit with the two-scale one and the
register-tile moves with the element-by-element ones.
Skipped where there is no C compiler or no source tree.
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
    or platform.machine() != "x86_64",
    reason="needs a C compiler, the source tree and x86-64",
)

HARNESS = r"""
#include "_simd.h"
#include <stdio.h>
#include <stdlib.h>

/* The one-scale exps (a multiply by 2^n, or an integer add of n) must give
   the same bits as the two-scale one wherever the kernels use them: every 17th float in [-87, 0] (every residue of the low
   mantissa bits comes up), every float in its lowest 2^20 and a sample of
   doubles in [-708, 0].  Returns the number of disagreements. */
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
   and strided rows element by element: both must give the same bits (loss,
   block sum and gradient; NaN for NaN), for row lengths around the tile width
   and the block size.  The second block spans more than the one-scale exp's
   range (the two-scale exp runs there) and holds a -inf and a NaN logit.
   Returns the number of disagreements. */
#define CE_SAME(a, b) ((a) != (a) ? (b) != (b) : memcmp(&(a), &(b), sizeof(a)) == 0)
#define TILE_CHECK(T, SFX)                                                    \
static long long tile_disagreements_##SFX(void)                               \
{                                                                             \
    enum { N = 70 };                                                          \
    static const int ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 16, 17, 20, 31, 63, 64}; \
    static T z[N * 64], zt[N * 64], g1[N * 64], g2[N * 64];                   \
    ptrdiff_t t[N];                                                           \
    double l1[N], l2[N];                                                      \
    long long bad = 0;                                                        \
    uint64_t st = 99;                                                         \
    for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++) {                \
        int m = ms[im];                                                       \
        for (int i = 0; i < N * m; i++) {                                     \
            st = st * 6364136223846793005u + 1442695040888963407u;           \
            z[i] = (T)(((double)(st >> 11) * 0x1p-53 - 0.5)                   \
                       * (i / m < CE_ROWS ? 20.0 : 2000.0));                  \
        }                                                                     \
        z[(N - 2) * m] = -INFINITY;                                           \
        z[(N - 1) * m + m / 2] = NAN;                                         \
        for (int k = 0; k < N; k++) {                                         \
            st = st * 6364136223846793005u + 1442695040888963407u;           \
            t[k] = k == 5 ? -1 : (ptrdiff_t)((st >> 33) % (uint64_t)m);       \
            for (int j = 0; j < m; j++) zt[j * N + k] = z[k * m + j];         \
        }                                                                     \
        for (int b = 0; b < N; b += CE_ROWS) {                                \
            int len = N - b < CE_ROWS ? N - b : CE_ROWS;                      \
            const T *zr1[CE_ROWS], *zr2[CE_ROWS];                             \
            T *gr1[CE_ROWS], *gr2[CE_ROWS];                                   \
            for (int k = 0; k < len; k++) {                                   \
                zr1[k] = z + (b + k) * m;  gr1[k] = g1 + (b + k) * m;         \
                zr2[k] = zt + (b + k);     gr2[k] = g2 + (b + k);             \
            }                                                                 \
            double s1 = ce_short_xent_##SFX(zr1, 1, t + b, NULL, len, m, gr1, 1, 0.5, l1 + b); \
            double s2 = ce_short_xent_##SFX(zr2, N, t + b, NULL, len, m, gr2, N, 0.5, l2 + b); \
            bad += !CE_SAME(s1, s2);                                          \
        }                                                                     \
        for (int k = 0; k < N; k++) {                                         \
            bad += !CE_SAME(l1[k], l2[k]);                                    \
            for (int j = 0; j < m; j++)                                       \
                bad += !CE_SAME(g1[k * m + j], g2[j * N + k]);                \
        }                                                                     \
    }                                                                         \
    return bad;                                                               \
}
TILE_CHECK(float, f32)
TILE_CHECK(double, f64)

/* With an argument: "exp" or "tiles", the checks above.  Otherwise
   stdin: n_rows, m, then n_rows*m floats (logits), then n_rows int64 targets.
   stdout: n_rows*m exps of the flat logits, the expsum of row 0, then the
   short-row loss (n_rows doubles) and gradient (n_rows*m floats). */
int main(int argc, char **argv)
{
    if (argc > 1) {
        if (strcmp(argv[1], "exp") == 0)
            printf("%lld", exp_disagreements());
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
    for (long long b = 0; b < n; b += CE_ROWS) {
        long long len = n - b < CE_ROWS ? n - b : CE_ROWS;
        const float *zr[CE_ROWS];
        float *gr[CE_ROWS];
        for (long long k = 0; k < len; k++) { zr[k] = z + (b + k) * m; gr[k] = g + (b + k) * m; }
        ce_short_xent_f32(zr, 1, t + b, NULL, len, m, gr, 1, 1.0, loss + b);
    }
    fwrite(e, 4, n * m, stdout);
    fwrite(&s, 8, 1, stdout);
    fwrite(loss, 8, n, stdout);
    fwrite(g, 4, n * m, stdout);
    printf("%d", CE_HAVE_DISPATCH && __builtin_cpu_supports("avx2"));
    return 0;
}
"""


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dispatch")
    src = tmp / "harness.c"
    src.write_text(HARNESS)
    built = {}
    for name, defines in [("dispatched", []), ("baseline", ["-DCE_NO_DISPATCH"])]:
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
    avx2 = out[2 * k + 8 + 8 * n:] == b"1"
    return exps, expsum, loss, grad, avx2


@pytest.mark.parametrize("build", ["dispatched", "baseline"])
def test_each_dispatch_target_matches_numpy(harnesses, build):
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((150, 10)) * 5).astype(np.float32)
    z[0, :4] = [-np.inf, np.nan, 88.0, -100.0]            # specials through exp
    t = rng.integers(0, 10, 150)
    t[3] = -1                                               # an ignored row
    exps, expsum, loss, grad, _ = run_harness(harnesses[build], z, t)

    with np.errstate(over="ignore", invalid="ignore"):
        np.testing.assert_allclose(exps, np.exp(z.astype(np.float64)), rtol=3e-7, equal_nan=True,
                                   atol=np.finfo(np.float32).smallest_subnormal)
    rows = slice(1, None)                                   # row 0 holds the specials
    expected = ref.cross_entropy(z[rows], np.where(t[rows] < 0, 0, t[rows]), "none")
    expected[t[rows] < 0] = 0.0
    np.testing.assert_allclose(loss[rows], expected, rtol=2e-6, atol=2e-6)
    expected_grad = ref.cross_entropy_grad(z[rows], np.where(t[rows] < 0, 0, t[rows]), "none")
    expected_grad[t[rows] < 0] = 0.0
    np.testing.assert_allclose(grad[rows], expected_grad, rtol=2e-6, atol=1e-7)
    top = np.float64(np.nanmax(z[0]))
    with np.errstate(invalid="ignore"):
        assert np.isnan(expsum) == np.isnan(np.exp(z[0].astype(np.float64) - top).sum())


@pytest.mark.parametrize("build", ["dispatched", "baseline"])
def test_one_scale_exp_gives_the_two_scale_bits_in_its_range(harnesses, build):
    # Rows whose exps are all normal numbers take the cheaper exp; results
    # must not depend on which one ran.
    out = subprocess.run([str(harnesses[build]), "exp"], capture_output=True, check=True)
    assert out.stdout == b"0"


@pytest.mark.parametrize("build", ["dispatched", "baseline"])
def test_register_tiles_give_the_strided_bits(harnesses, build):
    # float and double, row lengths 1..64 around the tile widths (8, 4), and
    # a block of 64 rows followed by a partial one, with an ignored row.
    out = subprocess.run([str(harnesses[build]), "tiles"], capture_output=True, check=True)
    assert out.stdout == b"0"


def test_the_dispatched_build_runs_the_avx2_clone_where_the_cpu_has_it(harnesses):
    with open("/proc/cpuinfo") as f:
        has_avx2 = " avx2" in f.read()
    z = np.zeros((1, 3), dtype=np.float32)
    *_, avx2 = run_harness(harnesses["dispatched"], z, np.zeros(1, dtype=np.int64))
    assert avx2 == has_avx2
    *_, avx2 = run_harness(harnesses["baseline"], z, np.zeros(1, dtype=np.int64))
    assert not avx2


def test_the_installed_extension_was_built_with_dispatch():
    from crossentropy import _kernels
    if platform.system() == "Linux":
        assert _kernels.has_dispatch()
