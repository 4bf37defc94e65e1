"""The ISA levels of one build: each the CPU can run gives correct results, and
the AVX2 and AVX-512 levels give the same bits on every path (the README says
so), checked in the extension itself: CROSSENTROPY_ISA caps the level a fresh
interpreter selects at import."""

import json
import os
import subprocess
import sys

import pytest

from crossentropy import _kernels

LEVELS = _kernels.dispatch_levels()

# Every path (short rows, the general short block, long rows, next-row fetch,
# runs, rows shared by threads), both dtypes, the options; digests of the bits.
GRID = r"""
import hashlib, json, sys
import numpy as np
import crossentropy as ce
from crossentropy import _kernels

def digest(a):
    a = np.ascontiguousarray(a)
    return hashlib.sha256(a.dtype.str.encode() + a.tobytes()).hexdigest()

out = {"level": _kernels.dispatch_target(), "results": {}}
for m, n in ((3, 200), (10, 300), (64, 100), (65, 100), (1000, 50), (9000, 8), (140000, 2)):
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(m * 7 + n)
        z = (rng.standard_normal((n, m)) * 4).astype(dtype)
        z[0, 0] = -np.inf
        t = rng.integers(0, m, n)
        t[1] = -100
        probs = rng.random((n, m)).astype(dtype)
        probs /= probs.sum(1, keepdims=True)
        w = rng.random(m) + 0.5
        for name, target, kw in (("plain", t, {}), ("weights", t, {"weight": w}),
                                 ("smoothing", t, {"label_smoothing": 0.2, "weight": w}),
                                 ("probabilities", probs, {"label_smoothing": 0.1})):
            for threads in (1, 2):
                loss, grad = ce.cross_entropy_and_grad(z, target, reduction="none",
                                                       n_threads=threads, **kw)
                key = f"{m}x{n}/{np.dtype(dtype).name}/{name}/t{threads}"
                out["results"][key + "/loss"] = digest(loss)
                out["results"][key + "/grad"] = digest(grad)
                out["results"][key + "/hess"] = digest(ce.cross_entropy_grad_hess(
                    z, target, reduction="none", n_threads=threads, **kw)[2])
                out["results"][key + "/hvp"] = digest(ce.cross_entropy_hvp(
                    z, target, np.cos(np.arange(z.size).reshape(z.shape)).astype(dtype),
                    reduction="none", n_threads=threads, **kw))
        out["results"][f"{m}x{n}/{np.dtype(dtype).name}/softmax"] = digest(ce.softmax(z))
        out["results"][f"{m}x{n}/{np.dtype(dtype).name}/lse"] = digest(ce.logsumexp(z))
json.dump(out, sys.stdout)
"""


def results_at(level, tmp_path):
    script = tmp_path / "grid.py"
    script.write_text(GRID)
    env = {**os.environ, "CROSSENTROPY_ISA": level,
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_avx2_and_avx512_levels_give_the_same_bits(tmp_path):
    if "x86-64-v4" not in LEVELS:
        pytest.skip("this build has no x86-64-v4 level")
    v4 = results_at("x86-64-v4", tmp_path)
    if v4["level"] != "x86-64-v4":
        pytest.skip("this CPU cannot run x86-64-v4 code")
    v3 = results_at("x86-64-v3", tmp_path)
    assert v3["level"] == "x86-64-v3"
    differ = [k for k in v4["results"] if v4["results"][k] != v3["results"][k]]
    assert not differ, differ[:10]


@pytest.mark.parametrize("level", ["baseline", "x86-64-v3", "x86-64-v4"])
def test_each_level_is_correct(level, tmp_path):
    if level not in LEVELS:
        pytest.skip(f"this build has no {level} level")
    script = tmp_path / "check.py"
    script.write_text(r"""
import numpy as np, crossentropy as ce
from crossentropy import _kernels
rng = np.random.default_rng(1)
for m in (3, 10, 65, 1000, 9000, 140000):
    for dtype in (np.float32, np.float64):
        n = 2 if m > 100000 else 50
        z = (rng.standard_normal((n, m)) * 3).astype(dtype)
        t = rng.integers(0, m, n)
        loss, grad = ce.cross_entropy_and_grad(z, t, reduction="none", label_smoothing=0.1)
        z64 = z.astype(np.float64)
        lse = np.log(np.exp(z64 - z64.max(1, keepdims=True)).sum(1)) + z64.max(1)
        logp = z64 - lse[:, None]
        ref = -(0.9 * logp[np.arange(n), t] + 0.1 / m * logp.sum(1))
        tol = 2e-6 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, ref, rtol=tol, atol=tol)
print(_kernels.dispatch_target())
""")
    env = {**os.environ, "CROSSENTROPY_ISA": level, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    ran = done.stdout.strip()
    if ran != level:
        assert LEVELS.index(ran) > LEVELS.index(level)        # a narrower level, never wider
        pytest.skip(f"this CPU cannot run {level} code (ran {ran})")


def test_the_environment_only_lowers_the_level(tmp_path):
    script = tmp_path / "level.py"
    script.write_text("from crossentropy import _kernels; print(_kernels.dispatch_target())")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    widest = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, check=True).stdout.strip()
    for asked, expected in (("baseline", "baseline"), ("not-a-level", "baseline"),
                            ("x86-64-v4", widest)):
        got = subprocess.run([sys.executable, str(script)],
                             env={**env, "CROSSENTROPY_ISA": asked},
                             capture_output=True, text=True, check=True).stdout.strip()
        assert got == expected, (asked, got)
    assert widest in LEVELS
