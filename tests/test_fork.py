"""Threaded calls after fork(): a child never hangs, and it keeps its threads.

GNU OpenMP's thread pool does not survive fork(); the extension releases the
pool before every fork so that the child starts its own.  Each scenario runs
in a fresh interpreter under a timeout, so a hang fails the test instead of
stalling the suite.
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from crossentropy import _kernels

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

TIMEOUT = 120

# The parent makes a threaded call (which starts the thread pool), then a
# child computes the same call with two threads; it must give the parent's
# bits, with a team of two threads (one where the fallback is forced).
PRELUDE = textwrap.dedent("""
    import multiprocessing, os, sys
    import numpy as np
    import crossentropy as ce
    from crossentropy import _kernels

    z = np.random.default_rng(0).standard_normal((20000, 100)).astype(np.float32)
    t = np.arange(20000) % 100

    z16 = z.astype(np.float16)

    def work():
        loss, grad = ce.cross_entropy_and_grad(z, t, n_threads=2)
        # (half precision: its conversions run threads of their own)
        loss16, grad16 = ce.cross_entropy_and_grad(z16, t, n_threads=2)
        return (float(loss), grad.tobytes() + grad16.tobytes() + loss16.tobytes(),
                _kernels.team_size(2))

    expected = work()
    # two threads where the build has OpenMP, one without
    assert expected[2] == (2 if _kernels.build_config()["openmp_version"] else 1), expected[2]

    def in_child(check):
        # forks; the child exits 0 if check() holds, 3 if not; returns its exit code
        pid = os.fork()
        if pid == 0:
            os._exit(0 if check() else 3)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def same_as_parent():
        return work() == expected
""")

SCENARIOS = {
    "os.fork": """
        assert in_child(same_as_parent) == 0
        assert work() == expected           # the parent's threads are back
    """,
    "os.fork, fork handler off": """
        def one_thread_same_bits():          # the fallback
            got = work()
            return got[:2] == expected[:2] and got[2] == 1 and _kernels.max_threads() == 1

        _kernels._release_pool_before_fork(False)
        assert in_child(one_thread_same_bits) == 0
    """,
    "two forks in a row": """
        # (multiprocessing's pool forks its workers so; LLVM's libomp refuses
        # to release a pool it has already released)
        assert in_child(lambda: True) == 0
        assert in_child(same_as_parent) == 0
    """,
    "fork of a fork": """
        assert in_child(lambda: work() == expected and in_child(same_as_parent) == 0) == 0
    """,
    "multiprocessing fork": "METHOD = 'fork'",
    "multiprocessing forkserver": "METHOD = 'forkserver'",
    "multiprocessing spawn": "METHOD = 'spawn'",
}

POOL = """
    if __name__ == "__main__":
        with multiprocessing.get_context(METHOD).Pool(2) as pool:
            for got in pool.starmap(work, [()] * 4):
                assert got == expected, got[2]
"""


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_child_process_computes_with_threads_and_never_hangs(scenario, tmp_path):
    if scenario.startswith("multiprocessing"):
        method = scenario.split()[-1]
        if method not in __import__("multiprocessing").get_all_start_methods():
            pytest.skip(f"no {method} start method here")
        body = textwrap.dedent(SCENARIOS[scenario]) + textwrap.dedent(POOL)
    else:
        body = textwrap.dedent(SCENARIOS[scenario])
    if not _kernels.FORK_HANDLERS and scenario == "os.fork, fork handler off":
        pytest.skip("built without OpenMP fork handlers")
    script = tmp_path / "scenario.py"
    script.write_text(PRELUDE + body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # a session of its own, so that a hung grandchild is killed with it
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{scenario}: no result within {TIMEOUT} s (a child hung)")
    assert proc.returncode == 0, stderr
