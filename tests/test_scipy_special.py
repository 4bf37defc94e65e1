"""SciPy's own tests of ``logsumexp``, ``softmax`` and ``log_softmax``
(``scipy/special/tests/test_logsumexp.py`` of the installed SciPy), run
against ``crossentropy.special``.

The module is read from SciPy, its import of the three functions pointed at
ours, and executed here, so that pytest collects its test classes from this
file.  Three things are bypassed: ``make_xp_test_case``, SciPy's registry of
array-API backends, which knows only SciPy's functions (the cases run with
NumPy, SciPy's default backend), and ``test_wrap_radians``, which tests a
private helper of SciPy's; and one iterator of parameters is made a list,
which pytest 9 requires.  Every real-valued case must pass as written;
each complex one must raise our TypeError, since complex input is refused.
"""

import functools
import importlib.util
import itertools

import numpy as np
import pytest

import crossentropy.special

pytest.importorskip("scipy")

_SPEC = importlib.util.find_spec("scipy.special.tests.test_logsumexp")
if _SPEC is None or _SPEC.origin is None:
    raise ImportError("SciPy is installed without its tests (scipy/special/tests)")

# (each edit must apply exactly as often as stated: a change in SciPy's
# module fails here, rather than quietly testing SciPy's own functions)
_EDITS = [("from scipy.special import log_softmax, logsumexp, softmax",
           "from crossentropy.special import log_softmax, logsumexp, softmax", 1),
          ("@make_xp_test_case(logsumexp)\n", "", 1),
          ("@make_xp_test_case(softmax)\n", "", 1),
          ("@make_xp_test_case(log_softmax)\n", "", 1),
          # (pytest 9 deprecates an iterator of parameters: a list, the same cases)
          ("@pytest.mark.parametrize('x,y', it.product(",
           "@pytest.mark.parametrize('x,y', _product(", 1)]


def _product(*iterables, **kwargs):
    return list(itertools.product(*iterables, **kwargs))


def _load(source):
    for old, new, count in _EDITS:
        found = source.count(old)
        if found != count:
            raise AssertionError(f"SciPy's {_SPEC.origin} holds {old!r} {found} times, "
                                 f"not {count}: the harness needs updating")
        source = source.replace(old, new)
    return source


with open(_SPEC.origin, encoding="utf-8") as _file:
    exec(compile(_load(_file.read()), _SPEC.origin, "exec"))
del test_wrap_radians                       # noqa: F821 (SciPy's private _wrap_radians)
assert (logsumexp, softmax, log_softmax) == (   # noqa: F821
    crossentropy.special.logsumexp, crossentropy.special.softmax,
    crossentropy.special.log_softmax)

_COMPLEX_TESTS = {"test_logsumexp_complex_sign", "test_gh21610", "test_gh21709_small_imaginary"}


def _is_complex(name, arguments):
    """Whether a case of SciPy's feeds complex numbers: by its name, or by a
    parameter that is a complex number or names a complex dtype."""
    return name in _COMPLEX_TESTS or any(
        isinstance(v, complex) or (isinstance(v, str) and v.startswith("complex"))
        for v in arguments.values())


def _complex_refused(test):
    """`test`, which expects a TypeError for complex numbers where it feeds
    them and runs unchanged otherwise."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        if not _is_complex(test.__name__, kwargs):
            return test(*args, **kwargs)
        with pytest.raises(TypeError, match="complex input is not supported"):
            test(*args, **kwargs)
    return run


for _cls in TestLogSumExp, TestSoftmax, TestLogSoftmax:     # noqa: F821
    for _name, _test in list(vars(_cls).items()):
        if _name.startswith("test_"):
            setattr(_cls, _name, _complex_refused(_test))


@pytest.fixture
def xp():
    """SciPy's array namespace fixture, for NumPy alone."""
    return np


@pytest.fixture
def devices():
    return ["cpu"]
