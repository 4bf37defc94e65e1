"""One implementation timed alone: a fresh process, pinned to n CPUs for an
n-thread run on a machine with more (as the main benchmark pins), running
`child(*args)` of a benchmark module in this folder and printing its JSON."""

import json
import os
import subprocess
import statistics
import sys

from crossentropy._benchmark import cpus_for

CHILD_TIMEOUT_S = 1800


def run_alone(module, args, threads):
    """child(*args) of benchmarks/<module>.py in a fresh process; its result."""
    cpus = cpus_for(threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=os.pathsep.join(sys.path))
    code = ("import json, os, sys\n"
            "cpus = json.loads(sys.argv[1])\n"
            "if cpus: os.sched_setaffinity(0, cpus)\n"
            f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
            f"from {module} import child\n"
            "print(json.dumps(child(*json.loads(sys.argv[2]))))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(cpus), json.dumps(args)],
                          env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{module} {args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values):
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def ratio(row, a, b, digits):
    """The cell of a table for row[a] / row[b]: the median of the per-round
    ratios of their best times, and their range."""
    med, lo, hi = spread([x / y for x, y in zip(row[a]["best"], row[b]["best"])])
    return f"{med:.{digits}f}× ({lo:.{digits}f}–{hi:.{digits}f})"
