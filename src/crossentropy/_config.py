"""show_config(): how this installation was built and what runs, as
numpy.show_config() tells it for NumPy."""

import os
import sys
from typing import Any

import numpy as np

from . import _kernels


def _config() -> dict[str, Any]:
    from . import __version__
    from ._linear import _accumulating_gemm
    build = _kernels.build_config()
    gemm = _accumulating_gemm(np.dtype(np.float32))
    return {
        "crossentropy": __version__,
        "Python": sys.version.split()[0],
        "compiler": build["compiler"],
        "OpenMP": {
            "build": build["openmp"],
            "version": build["openmp_version"] or None,
            "threads": _kernels.max_threads(),
            "fork handlers": _kernels.FORK_HANDLERS,
        },
        "SIMD": {
            "pragmas": build["simd_pragmas"],
            "portable C": build["portable"],
            "levels compiled": _kernels.dispatch_levels(),
            "level running": _kernels.dispatch_target(),
            "CROSSENTROPY_ISA": os.environ.get("CROSSENTROPY_ISA"),
        },
        "linear_cross_entropy": {
            "weight gradient": (f"added by NumPy's BLAS ({gemm.__name__}, beta = 1)"
                                if gemm is not None else "added a block at a time (no "
                                "cblas_?gemm64_ found in NumPy's BLAS)"),
        },
    }


def show_config(mode: str = "stdout") -> dict[str, Any] | None:
    """Print (``mode="stdout"``) or return (``mode="dicts"``) how this build was
    made and what runs: the compiler, the OpenMP setup (or none), the SIMD
    levels compiled in and the one running.

    Examples
    --------
    >>> import crossentropy
    >>> config = crossentropy.show_config(mode="dicts")
    >>> config["SIMD"]["level running"] in config["SIMD"]["levels compiled"]
    True
    """
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    config = _config()
    if mode == "dicts":
        return config
    for key, value in config.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {' '.join(v) if isinstance(v, list) else v}")
        else:
            print(f"{key}: {value}")
    return None
