"""show_config(): how this installation was built and what runs, as
numpy.show_config() tells it for NumPy."""

import os
import sys
from typing import Any

from . import _kernels


def _config() -> dict[str, Any]:
    from . import __version__
    build = _kernels.build_config()
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
