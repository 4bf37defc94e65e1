"""Every code path of the runtime dispatch, against NumPy.

The extension runs the widest clones the CPU has (x86-64-v4, -v3 or
baseline), so the others never run in it here.  These tests compile the C
harness tests/c/harness.c over the kernels' C layer (src/crossentropy/csrc)
with dispatch (the clones this CPU picks) and, with -DCE_NO_DISPATCH, once for
each level (baseline, and on x86-64 -march=x86-64-v3 and -march=x86-64-v4),
run each level the CPU can run, and check the exp, the fused exp-sum and the
across-rows short-row kernel against NumPy; that the one-scale exp agrees bit
for bit with the two-scale one and the register-tile moves with the
element-by-element ones; and that the AVX2 and AVX-512 levels give the same
bits.  Skipped where there is no C compiler or no source tree.
"""

import os
import platform
import shutil
import subprocess

import numpy as np
import pytest

import reference as ref

SOURCE = os.path.join(os.path.dirname(__file__), os.pardir, "src", "crossentropy")
HARNESS = os.path.join(os.path.dirname(__file__), "c", "harness.c")
CC = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
X86_64 = platform.machine() in ("x86_64", "AMD64")

pytestmark = pytest.mark.skipif(
    CC is None or not os.path.exists(os.path.join(SOURCE, "csrc", "ce.h")),
    reason="needs a C compiler and the source tree",
)


def cpu_level():
    """The widest x86-64 level /proc/cpuinfo's flags admit (GCC's levels, less
    the flags every x86-64 CPU with AVX has); "baseline" elsewhere."""
    if not X86_64 or not os.path.exists("/proc/cpuinfo"):
        return "baseline"
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    v3 = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "xsave"}
    v4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    if v3 <= flags:
        return "x86-64-v4" if v4 <= flags else "x86-64-v3"
    return "baseline"


LEVELS = ["baseline", "x86-64-v3", "x86-64-v4"] if X86_64 else ["baseline"]
# aarch64, cross-compiled and run under qemu-user where both are installed
# (.ci/run installs them from the distribution's packages)
CROSS_CC = shutil.which("aarch64-linux-gnu-gcc")
QEMU = shutil.which("qemu-aarch64")
CROSS_ROOT = "/usr/aarch64-linux-gnu"
CROSS = ["aarch64", "aarch64-sve"]
BUILDS = ["dispatched", *LEVELS, "old-shuffle", "portable", *CROSS]


def runnable(build):
    """`build`, skipped where this machine cannot build or run it."""
    if build in CROSS:
        if not (CROSS_CC and QEMU and os.path.isdir(CROSS_ROOT)):
            pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64")
        return build
    if build.startswith("x86-64") and not X86_64:
        pytest.skip(f"{build} is an x86-64 level")
    need = build if build in LEVELS else "baseline"
    if LEVELS.index(need) > LEVELS.index(cpu_level()):
        pytest.skip(f"this CPU cannot run {need} code")
    return build


def openmp_flags(cc, tmp):
    """OpenMP where the compiler has it, else its SIMD pragmas alone."""
    probe = subprocess.run([cc, "-fopenmp", "-x", "c", "-", "-o", str(tmp / "probe")],
                           input="int main(void) { return 0; }", text=True, capture_output=True)
    return ["-fopenmp"] if probe.returncode == 0 else ["-fopenmp-simd", "-DCE_OPENMP_SIMD"]


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory):
    """Each build's command: the harness compiled for it, under qemu for aarch64."""
    tmp = tmp_path_factory.mktemp("dispatch")
    builds = [("dispatched", CC, []), ("baseline", CC, ["-DCE_NO_DISPATCH"]),
              ("old-shuffle", CC, ["-DCE_NO_DISPATCH", "-DCE_OLD_SHUFFLE"]),
              # standard C alone, as a compiler without GNU C gets it
              ("portable", CC, ["-DCE_PORTABLE", "-std=c11", "-pedantic-errors"])]
    if X86_64:
        builds += [("x86-64-v3", CC, ["-DCE_NO_DISPATCH", "-march=x86-64-v3"]),
                   ("x86-64-v4", CC, ["-DCE_NO_DISPATCH", "-march=x86-64-v4"])]
    if CROSS_CC and QEMU and os.path.isdir(CROSS_ROOT):
        builds += [("aarch64", CROSS_CC, []), ("aarch64-sve", CROSS_CC, ["-march=armv8-a+sve"])]
    built = {}
    for name, cc, flags in builds:
        exe = tmp / name
        subprocess.run([cc, "-O3", "-fno-trapping-math", "-fno-math-errno",
                        *openmp_flags(cc, tmp), *flags, "-I", SOURCE, HARNESS, "-o", str(exe),
                        "-lm"], check=True)
        built[name] = ([QEMU, "-cpu", "max", "-L", CROSS_ROOT] if name in CROSS else []) + [str(exe)]
    return built


def run_harness(command, z, t):
    n, m = z.shape
    payload = (np.array([n, m], dtype=np.int64).tobytes() + z.astype(np.float32).tobytes()
               + t.astype(np.int64).tobytes())
    out = subprocess.run(command, input=payload, capture_output=True, check=True).stdout
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


@pytest.mark.parametrize("build", BUILDS)
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


@pytest.mark.parametrize("build", BUILDS)
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




@pytest.mark.parametrize("build", BUILDS)
def test_one_scale_exp_gives_the_two_scale_bits_in_its_range(harnesses, build):
    # Rows whose exps are all normal numbers take the cheaper exp; results
    # must not depend on which one ran.
    out = subprocess.run([*harnesses[runnable(build)], "exp"], capture_output=True,
                         check=True)
    assert out.stdout == b"0"


@pytest.mark.parametrize("build", BUILDS)
def test_register_tiles_give_the_strided_bits_and_stay_inside_the_rows(harnesses, build):
    # float and double, every row length and block size up to 64, rows against
    # inaccessible pages (a stray access crashes the harness: check=True).
    # Under qemu, block sizes 1-8 and every 7th (emulated SVE took 280 s for all).
    step = "7" if build in CROSS else "1"
    out = subprocess.run([*harnesses[runnable(build)], "tiles", step], capture_output=True,
                         check=True)
    assert out.stdout == b"0"


@pytest.mark.parametrize("build", BUILDS)
def test_a_nan_with_any_payload_keeps_its_row_off_the_one_scale_exp(harnesses, build):
    out = subprocess.run([*harnesses[runnable(build)], "nan"], capture_output=True,
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
    # rows in runs: 100 rows for every count of runs from 2 to 21 (where a
    # reduction that fused only some terms would depend on the vector
    # width), and many runs
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


def test_the_installed_extension_runs_the_widest_level_the_cpu_has():
    from crossentropy import _kernels
    if _kernels.dispatch_levels() == ["baseline"]:
        pytest.skip("this build has no runtime dispatch (a compiler without GNU C, "
                    "CE_NO_DISPATCH or CE_PORTABLE, or not x86-64): baseline only")
    if os.environ.get("CROSSENTROPY_ISA"):
        pytest.skip("CROSSENTROPY_ISA caps the level")
    assert _kernels.dispatch_target() == cpu_level()


MINGW = shutil.which("x86_64-w64-mingw32-gcc")


@pytest.mark.skipif(MINGW is None, reason="needs x86_64-w64-mingw32-gcc")
@pytest.mark.parametrize("mode", [[], ["-DCE_PORTABLE"]], ids=["gnu", "portable"])
def test_the_harness_compiles_for_windows(tmp_path, mode):
    # MinGW's GCC (GNU C, with dispatch) and the portable mode that MSVC gets;
    # compiled only: nothing here runs Windows programs
    subprocess.run([MINGW, "-std=c11", "-pedantic-errors", "-O2", "-fopenmp", *mode, "-I", SOURCE,
                    HARNESS, "-o", str(tmp_path / "harness.exe"), "-lm"], check=True)
