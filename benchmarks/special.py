"""crossentropy.special against scipy.special: logsumexp, softmax and
log_softmax, behind the README's SciPy table.

    python benchmarks/special.py [--rounds 3] [--repeats 20] [--threads 1 2]

Each implementation runs alone in a fresh process (pinned to n CPUs for an
n-thread run on a machine with more, as the main benchmark does), makes the
case's array from seed 0, calls each function twice to warm up and then
times `--repeats` calls; the best of those is the process's figure.  The
rounds interleave the implementations; ratios are taken per round.  SciPy's
functions are NumPy's ufuncs, one thread whatever the count; ours get
``n_threads``.  The cases:

  rows f32       (4096, 1000) float32 standard normal, axis=-1
  rows f64       the same in float64
  short rows     (65536, 10) float64, axis=-1
  log-probs      log-probabilities of 8 times rows f64 (each row's log-sum-exp
                 0, one class dominant in most rows: there logsumexp sums the
                 rest again, for log1p's precision)
  whole          rows f64, axis=None

Writes benchmarks/results/special.{json,md}.
"""

import statistics
import time

from solo import options, print_saved, ratio, run_alone, save

IMPLEMENTATIONS = ["ours", "scipy"]
FUNCTIONS = ["logsumexp", "softmax", "log_softmax"]
CASES = {                       # name: (shape, dtype, axis, log-probabilities of 8 x)
    "rows f32": ((4096, 1000), "float32", -1, False),
    "rows f64": ((4096, 1000), "float64", -1, False),
    "short rows": ((65536, 10), "float64", -1, False),
    "log-probs": ((4096, 1000), "float64", -1, True),
    "whole": ((4096, 1000), "float64", None, False),
}


def child(impl, case, threads, repeats):
    """Runs in the fresh process: the case's array, then each function's
    warm-up and timed calls; {function: [seconds]}."""
    import numpy as np

    shape, dtype, axis, log_probs = CASES[case]
    x = np.random.default_rng(0).standard_normal(shape)
    if log_probs:
        x *= 8
        x -= x.max(-1, keepdims=True)
        x -= np.log(np.exp(x).sum(-1, keepdims=True))
    x = x.astype(dtype)
    if impl == "ours":
        import functools

        from crossentropy import special
        calls = {name: functools.partial(getattr(special, name), n_threads=threads)
                 for name in FUNCTIONS}
    else:
        import scipy.special as special
        calls = {name: getattr(special, name) for name in FUNCTIONS}
    seconds = {}
    for name, call in calls.items():
        call(x, axis)
        call(x, axis)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call(x, axis)
            times.append(time.perf_counter() - start)
        seconds[name] = times
    return seconds


def table(results, thread_counts):
    lines = ["| case | threads | " + " | ".join(f"{f}: ours ms, SciPy ms, SciPy / ours"
                                                 for f in FUNCTIONS) + " |",
             "|---|---|" + "---|" * len(FUNCTIONS)]
    for case, (shape, dtype, axis, _) in CASES.items():
        for threads in thread_counts:
            row = results.get(f"{case}-{threads}")
            if not row:
                continue
            cells = []
            for f in FUNCTIONS:
                per = {impl: {"best": row[impl][f]} for impl in IMPLEMENTATIONS}
                ms = [f"{statistics.median(per[impl]['best']) * 1e3:.2f}"
                      for impl in IMPLEMENTATIONS]
                cells.append(f"{ms[0]}, {ms[1]}, {ratio(per, 'scipy', 'ours', 1)}")
            where = "axis=None" if axis is None else f"axis={axis}"
            lines.append(f"| {case}: {shape[0]}×{shape[1]} {dtype}, {where} | {threads} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = options(__doc__, rounds=3, repeats=20)
    args = parser.parse_args()
    if print_saved(args, lambda results: table(results, args.threads)):
        return
    results = {}
    for r in range(args.rounds):
        for case in CASES:
            for threads in args.threads:
                key = f"{case}-{threads}"
                for impl in IMPLEMENTATIONS:
                    got = run_alone("special", [impl, case, threads, args.repeats], threads)
                    entry = results.setdefault(key, {}).setdefault(impl, {f: [] for f in got})
                    for f, seconds in got.items():
                        entry[f].append(min(seconds))
                    print(f"round {r + 1} {key} {impl}: " + ", ".join(
                        f"{f} {min(s) * 1e3:.2f} ms" for f, s in got.items()), flush=True)
    save(args.out, "special", {"rounds": args.rounds, "repeats": args.repeats,
                               "results": results}, table(results, args.threads))


if __name__ == "__main__":
    main()
