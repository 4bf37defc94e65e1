"""One implementation timed alone: a fresh process, pinned to n CPUs for an
n-thread run on a machine with more (as the main benchmark pins), running
`child(*args)` of a benchmark module in this folder and printing its JSON."""

import argparse
import json
import os
import platform
import subprocess
import statistics
import sys

from crossentropy._benchmark import cpus_for

CHILD_TIMEOUT_S = 1800
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


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


def options(doc, rounds, repeats):
    """The options every benchmark here takes, for its module docstring `doc`;
    a parser that more can be added to."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed calls per process")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--table", metavar="JSON", help="print the table of a saved run")
    return parser


def print_saved(args, table):
    """With --table, prints table(results) of the saved run it names and
    returns True; else False."""
    if not args.table:
        return False
    with open(args.table) as f:
        print(table(json.load(f)["results"]))
    return True


def machine():
    """What ran the benchmark: the CPU's model, how many there are, and the
    kernels' ISA level."""
    from crossentropy import _kernels
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "kernels": _kernels.dispatch_target()}


def save(out, name, record, md):
    """Prints the table `md` and writes it and `record`, with the machine, to
    out/name.{md,json}."""
    print(md)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump({"machine": machine(), **record}, f, indent=1)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(md + "\n")
    print(f"wrote {out}/{name}.json and {name}.md")
