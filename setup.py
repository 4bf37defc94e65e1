"""Build the Cython extension, with OpenMP where the compiler supports it.

Deliberately absent: -march=native (the wheel must run on any x86-64; the
AVX2 and AVX-512 code is chosen at import by the kernels' own dispatch,
csrc/platform.h and csrc/dispatch.h) and
-ffast-math (it breaks NaN/inf semantics and, linked, turns on flush-to-zero for
the whole process).  -fno-trapping-math lets GCC if-convert the exp loop and
changes no result; -fno-math-errno only stops libm calls from setting errno.

The environment can ask for less: CROSSENTROPY_NO_OPENMP=1 (no threads; the
SIMD pragmas stay, with -fopenmp-simd), CROSSENTROPY_PORTABLE=1 (standard C
alone: no GNU vector extensions, no runtime dispatch; what MSVC gets anyway),
and LIBOMP_PREFIX names where LLVM's libomp lives (macOS's clang needs one).
"""

import glob
import os
import platform
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

GNU_OPTIMISE = ["-O3", "-g0", "-fno-trapping-math", "-fno-math-errno"]
MSVC_OPTIMISE = ["/O2", "/std:c11"]


def gnu_like(compiler):
    """GCC, clang, MinGW (everything but MSVC and clang-cl) take GNU flags."""
    return compiler.compiler_type != "msvc"


OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
PLAIN_PROBE = "int main(void) { return 0; }\n"


def compiler_accepts(compiler, compile_flags, link_flags=(), source=OPENMP_PROBE):
    """Whether `compiler` compiles and links a tiny program (by default an
    OpenMP one) with these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=list(compile_flags))
            compiler.link_executable(objs, os.path.join(tmp, "probe"),
                                     extra_postargs=list(link_flags))
        except Exception:
            return False
    return True


def openmp_candidates(compiler):
    """(name, compile flags, link flags) of the OpenMP setups to try, in order."""
    if not gnu_like(compiler):
        return [("MSVC /openmp", ["/openmp"], [])]
    candidates = [("-fopenmp", ["-fopenmp"], ["-fopenmp"])]
    # Apple's clang has no OpenMP runtime of its own: LLVM's libomp, from
    # Homebrew or conda, reached through the preprocessor
    for prefix in (os.environ.get("LIBOMP_PREFIX"), os.environ.get("CONDA_PREFIX"),
                   "/opt/homebrew/opt/libomp", "/usr/local/opt/libomp"):
        if prefix and os.path.exists(os.path.join(prefix, "include", "omp.h")):
            candidates.append((f"libomp in {prefix}",
                               ["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"],
                               [f"-L{prefix}/lib", "-lomp", f"-Wl,-rpath,{prefix}/lib"]))
    candidates.append(("-Xpreprocessor -fopenmp -lomp", ["-Xpreprocessor", "-fopenmp"], ["-lomp"]))
    return candidates


def say(message):
    # (pip shows a build's output only with -v; python -m build always does)
    print(f"crossentropy: {message}", file=sys.stderr)


class BuildExt(build_ext):
    def build_extensions(self):
        gnu = gnu_like(self.compiler)
        x86_64 = platform.machine().lower() in ("x86_64", "amd64")
        compile_args = list(GNU_OPTIMISE if gnu else MSVC_OPTIMISE)
        link_args = []
        macros = []
        openmp = None
        if not os.environ.get("CROSSENTROPY_NO_OPENMP"):
            openmp = next((c for c in openmp_candidates(self.compiler)
                           if compiler_accepts(self.compiler, c[1], c[2])), None)
        if openmp is not None:
            compile_args += openmp[1]
            link_args += openmp[2]
        else:
            why = "asked (CROSSENTROPY_NO_OPENMP)" if os.environ.get("CROSSENTROPY_NO_OPENMP") \
                else "this compiler has none that links"
            simd = gnu and compiler_accepts(self.compiler, ["-fopenmp-simd"], [], PLAIN_PROBE)
            if simd:        # the SIMD pragmas without the runtime
                compile_args += ["-fopenmp-simd"]
                macros.append(("CE_OPENMP_SIMD", "1"))
            say(f"building without OpenMP ({why}): single-threaded"
                + ("; SIMD loops kept (-fopenmp-simd)" if simd else ""))
        portable = bool(os.environ.get("CROSSENTROPY_PORTABLE")) or not gnu
        # clang's x86-64-v4 prefers 256-bit vectors, which leaves its AVX-512
        # clones no wider than the AVX2 ones (GCC's use 512 bits already)
        wide = ["-mprefer-vector-width=512"]
        if not portable and x86_64 and compiler_accepts(self.compiler, wide, [], PLAIN_PROBE):
            compile_args += wide
        if portable:
            macros.append(("CE_PORTABLE", "1"))
        if portable or not x86_64:
            say("no runtime ISA dispatch here (" + ("portable C" if portable else
                platform.machine()) + "): the kernels run baseline code")
        macros.append(("CE_BUILD_OPENMP", '"' + (openmp[0] if openmp else "none") + '"'))
        for ext in self.extensions:
            ext.extra_compile_args = compile_args
            ext.extra_link_args = link_args
            ext.define_macros = list(ext.define_macros or []) + macros
        super().build_extensions()


# One abi3 wheel serves every CPython >= 3.11: the kernels use only typed
# memoryviews, which Cython's Limited API mode supports there, and measured
# against a version-specific build it costs nothing we could see (README).
# Not for 3.10 (its headers predate that API) nor free-threaded builds (no abi3).
LIMITED_API = sys.version_info >= (3, 11) and not sysconfig.get_config_var("Py_GIL_DISABLED")

extension = Extension(
    "crossentropy._kernels",
    sources=["src/crossentropy/_kernels.pyx"],
    depends=sorted(glob.glob("src/crossentropy/csrc/*.h")) + ["src/crossentropy/_kernels.pxd"],
    include_dirs=["src/crossentropy"],
    define_macros=[("Py_LIMITED_API", "0x030B0000"), ("CYTHON_LIMITED_API", "1")] if LIMITED_API else [],
    py_limited_api=LIMITED_API,
)

setup(
    ext_modules=cythonize(
        [extension],
        compiler_directives={"language_level": 3},
    ),
    cmdclass={"build_ext": BuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if LIMITED_API else {},
)
