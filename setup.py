"""Build the Cython extension, with OpenMP where the compiler supports it.

Deliberately absent: -march=native (the wheel must run on any x86-64; AVX2+FMA
code paths are selected at load time by target_clones, csrc/platform.h) and
-ffast-math (it breaks NaN/inf semantics and, linked, turns on flush-to-zero for
the whole process).  -fno-trapping-math lets GCC if-convert the exp loop and
changes no result; -fno-math-errno only stops libm calls from setting errno.
"""

import glob
import os
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPTIMISE = ["-O3", "-g0", "-fno-trapping-math", "-fno-math-errno"]


def compiler_accepts(compiler, flags):
    """Whether `compiler` compiles and links a tiny OpenMP program with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        unix_like = self.compiler.compiler_type == "unix"
        openmp = ["-fopenmp"] if unix_like else ["/openmp"]
        if os.environ.get("CROSSENTROPY_NO_OPENMP") or not compiler_accepts(self.compiler, openmp):
            print("crossentropy: building without OpenMP (single-threaded)", file=sys.stderr)
            openmp = []
        for ext in self.extensions:
            ext.extra_compile_args = (OPTIMISE if unix_like else ["/O2"]) + openmp
            ext.extra_link_args = openmp
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
