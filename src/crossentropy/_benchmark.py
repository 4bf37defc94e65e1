"""Time crossentropy's loss + gradient against other implementations, each alone in its process.

    python -m crossentropy --bench              # the full benchmark
    python benchmarks/bench.py                  # the same, results in benchmarks/results/
    python benchmarks/bench.py --quick          # smaller shapes, one process each

Every implementation, at every shape and thread count, is timed in a fresh
Python process of its own, on the same data (made from the same seed): a
library's time depends on the allocator and cache state that other libraries
leave behind in a shared process (torch took 2-3x its solo time at 4096x1000
when it was timed beside the others).  In each process the first calls
(torch.compile's and JAX's compilation among them) are untimed warm-up; then
the calls are timed one by one for about a second, and the process reports
their median.  Each implementation gets `--processes` such processes, taken in
turns with the others, round after round, so that a slow spell of the machine
falls on all of them alike; the table shows the median over the processes,
and each ratio is the median (and range) of the per-round ratios.

n threads means n cores: the process is pinned to n CPUs (the last n it
may use) with os.sched_setaffinity where that exists (Linux), before it
imports anything, and the library is asked for n threads; JAX, which has no
such setting, gets XLA's one-thread flag at one thread and relies on the
pinning otherwise.  Pinned to one core, JAX also gets synchronous dispatch,
without which it passes each call between its threads through the OS
scheduler and takes 2-3x longer.  n equal to every CPU there is leaves the
process unpinned.  NumPy and the copy are single-threaded: timed at the
first thread count, and that time stands for every thread count.

Implementations (each skipped, and said so, when not installed):

* crossentropy   cross_entropy_and_grad(..., out=preallocated)
* torch          F.cross_entropy forward + backward, eager (CPU)
* torch.compile  the same through torch.compile (inductor; needs a C++ compiler)
* jax            jax.jit(jax.value_and_grad(mean of
                 optax.softmax_cross_entropy_with_integer_labels))
* sklearn        HalfMultinomialLoss.loss_gradient with preallocated outputs
* numpy          the textbook NumPy version (single-threaded)
* copy           np.copyto of the logits into a preallocated array: the floor
                 for anything that reads the logits and writes a gradient

Also reported (measured in the parent process, untimed): the gradient's
accuracy against a float64 reference (largest relative error of any entry
whose reference is a normal number), for crossentropy and torch, and how much
memory each crossentropy mode allocates.
"""

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import tracemalloc

import numpy as np

import crossentropy as ce

SHAPES = [((65536, 10), "float32"), ((4096, 1000), "float32"), ((2048, 32000), "float32"),
          ((512, 128000), "float32"), ((4096, 1000), "float64"), ((2, 1000000), "float32")]
QUICK_SHAPES = [((16384, 10), "float32"), ((1024, 1000), "float32"), ((256, 32000), "float32"),
                ((64, 128000), "float32"), ((1024, 1000), "float64"), ((2, 300000), "float32")]
PEERS = ("crossentropy", "torch", "torch.compile", "jax", "sklearn", "numpy", "copy")
SINGLE_THREADED = ("numpy", "copy")        # timed once, at the first thread count
ACCURACY_ROWS = 32
WARM_UP_S = 0.2      # and at least WARM_UP_CALLS calls; compilation happens here
WARM_UP_CALLS = 3
MIN_CALLS = 5
MAX_CALLS = 2000


def call_for(fn, seconds, at_least=0):
    """Call `fn` back to back, untimed, for about `seconds` and `at_least` times."""
    until = time.perf_counter() + seconds
    calls = 0
    while calls < at_least or time.perf_counter() < until:
        fn()
        calls += 1


def problem(shape, dtype):
    """The benchmark's data for a shape, the same in every process."""
    rows, classes = shape
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((rows, classes), dtype=np.float32).astype(dtype) * 2
    return logits, rng.integers(0, classes, rows)


def numpy_loss_and_grad(logits, target):
    """The textbook NumPy version: the baseline this package replaces."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(target))
    loss = np.mean(np.log(sums[:, 0]) - shifted[rows, target])
    grad = exp / sums
    grad[rows, target] -= 1.0
    grad /= len(target)
    return loss, grad


MODULES = {"torch": ["torch"], "torch.compile": ["torch"], "jax": ["jax", "optax"],
           "sklearn": ["sklearn"]}


def why_missing(peer):
    """None if `peer` can run here, else what it lacks."""
    absent = [name for name in MODULES.get(peer, []) if importlib.util.find_spec(name) is None]
    if absent:
        return " and ".join(absent) + " not installed"
    if peer == "torch.compile" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return "no C++ compiler for inductor"
    return None


def make_step(peer, logits, target, n_threads):
    """One loss-and-gradient call of `peer` on this data, as a callable."""
    if peer == "crossentropy":
        out = np.empty_like(logits)
        return lambda: ce.cross_entropy_and_grad(logits, target, out=out, n_threads=n_threads)
    if peer in ("torch", "torch.compile"):
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(n_threads)
        z, t = torch.from_numpy(logits), torch.from_numpy(target.astype(np.int64))
        loss = torch.compile(F.cross_entropy) if peer == "torch.compile" else F.cross_entropy

        def step():
            zz = z.detach().requires_grad_(True)
            loss(zz, t).backward()
            return zz.grad
        return step
    if peer == "jax":
        import jax
        import optax
        jax.config.update("jax_enable_x64", True)      # else float64 runs as float32
        # On one core, asynchronous dispatch hands every call from thread to
        # thread through the scheduler: 11-15 ms a call at 4096x1000, not 4.
        jax.config.update("jax_cpu_enable_async_dispatch", n_threads > 1)
        z, t = jax.device_put(logits), jax.device_put(target.astype(np.int32))
        value_and_grad = jax.jit(jax.value_and_grad(
            lambda z, t: optax.softmax_cross_entropy_with_integer_labels(z, t).mean()))
        return lambda: jax.block_until_ready(value_and_grad(z, t))
    if peer == "sklearn":
        from sklearn._loss.loss import HalfMultinomialLoss
        loss = HalfMultinomialLoss(n_classes=logits.shape[1])
        y = target.astype(logits.dtype)
        loss_out, grad_out = np.empty(len(target), dtype=logits.dtype), np.empty_like(logits)
        return lambda: loss.loss_gradient(y, logits, loss_out=loss_out, gradient_out=grad_out,
                                          n_threads=n_threads)
    if peer == "numpy":
        return lambda: numpy_loss_and_grad(logits, target)
    if peer == "copy":
        out = np.empty_like(logits)
        return lambda: np.copyto(out, logits)
    raise ValueError(f"unknown implementation {peer!r}")


def time_here(peer, shape, dtype, n_threads, seconds):
    """In this process: warm up, then time calls for about `seconds`; ms."""
    logits, target = problem(shape, dtype)
    step = make_step(peer, logits, target, n_threads)
    call_for(step, WARM_UP_S, WARM_UP_CALLS)
    times = []
    until = time.perf_counter() + seconds
    while len(times) < MIN_CALLS or (time.perf_counter() < until and len(times) < MAX_CALLS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"ms": 1e3 * float(np.median(times)), "module": ce.__file__}


def cpus_for(n_threads):
    """The CPUs an n-thread run is pinned to, or None (not pinned: n covers
    every CPU this process may use, or the OS cannot pin)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-n_threads:] if n_threads < len(allowed) else None


# The child pins itself before it imports anything (NumPy's BLAS starts its
# threads at import), then times one implementation.
CHILD = ("import json, os, sys\n"
         "cpus = json.loads(sys.argv[1])\n"
         "if cpus: os.sched_setaffinity(0, cpus)\n"
         "from crossentropy._benchmark import time_here\n"
         "spec = json.loads(sys.argv[2])\n"
         "print(json.dumps(time_here(spec['peer'], tuple(spec['shape']), spec['dtype'],"
         " spec['threads'], spec['seconds'])))\n")
CHILD_TIMEOUT_S = 900


def time_alone(peer, shape, dtype, n_threads, seconds):
    """Time `peer` in a fresh process of its own (see the module's docstring)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(n_threads), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    if peer == "jax" and n_threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    spec = {"peer": peer, "shape": list(shape), "dtype": dtype, "threads": n_threads,
            "seconds": seconds}
    what = f"{peer} {shape[0]}x{shape[1]} {dtype} at {n_threads} thread(s)"
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cpus_for(n_threads)),
                               json.dumps(spec)], env=env, capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: no result within {CHILD_TIMEOUT_S} s") from None
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"{what} failed:\n" + done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["module"] != ce.__file__:
        raise RuntimeError(f"{what}: the child imported {result['module']}, not {ce.__file__}")
    return result["ms"]


def reference_grad(logits, target):
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(target)), target] -= 1.0
    return p / len(target)


def relative_error(grad, reference, dtype):
    mask = np.abs(reference) >= np.finfo(dtype).tiny
    return float(np.max(np.abs(grad[mask] - reference[mask]) / np.abs(reference[mask])))


def accuracy(logits, target, peers):
    rows = slice(0, ACCURACY_ROWS)
    z, t = logits[rows], target[rows]
    reference = reference_grad(z, t)
    errors = {"crossentropy": relative_error(ce.cross_entropy_and_grad(z, t)[1], reference,
                                             logits.dtype)}
    if "torch" in peers:
        import torch
        import torch.nn.functional as F
        zz = torch.from_numpy(z.copy()).requires_grad_(True)
        F.cross_entropy(zz, torch.from_numpy(t.astype(np.int64))).backward()
        errors["torch"] = relative_error(zz.grad.numpy(), reference, logits.dtype)
    return errors


def allocations(logits, target):
    """Peak bytes NumPy allocates during one call, per crossentropy mode."""
    peaks = {}
    grad_out, buffer = np.empty_like(logits), logits.copy()
    for mode, call in [("new", lambda: ce.cross_entropy_and_grad(logits, target)),
                       ("out=", lambda: ce.cross_entropy_and_grad(logits, target, out=grad_out)),
                       ("inplace", lambda: ce.cross_entropy_and_grad(buffer, target, inplace=True))]:
        tracemalloc.start()
        call()
        peaks[mode] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peaks


def spread(values):
    values = sorted(values)
    return {"median": float(np.median(values)), "min": values[0], "max": values[-1]}


def run(shapes, thread_counts, processes, seconds, peers=PEERS, timer=None, log=sys.stderr,
        failed=None):
    """Every implementation in `peers` at every shape and thread count, each
    in `processes` processes of its own (by `timer`, time_alone by default),
    in turns.  Records per implementation the median time over its processes,
    and per ratio the median and range of the per-round ratios: each peer
    against crossentropy, crossentropy against the copy, and the first thread
    count against n.  A peer whose process fails is dropped from the results,
    with the reason in `failed` (a dict) and the log; crossentropy's or the
    copy's failure is an error."""
    timer = timer or time_alone
    failed = {} if failed is None else failed
    runs = [(shape, dtype, name, n) for shape, dtype in shapes for n in thread_counts
            for name in peers if n == thread_counts[0] or name not in SINGLE_THREADED]
    ms = {key: [] for key in runs}
    for round_ in range(processes):
        for key in runs:
            if key[2] in failed:
                continue
            try:
                ms[key].append(timer(key[2], *key[:2], key[3], seconds))
            except RuntimeError as error:
                if key[2] in ("crossentropy", "copy"):
                    raise
                failed[key[2]] = str(error).splitlines()[0]
                print(f"  dropping {key[2]}: {error}", file=log)
                continue
            print(f"  round {round_ + 1}/{processes}: {key[2]} {key[0][0]}x{key[0][1]} {key[1]}, "
                  f"{key[3]} thread(s): {ms[key][-1]:.3f} ms", file=log)
    peers = tuple(name for name in peers if name not in failed)
    results = []
    for shape, dtype in shapes:
        logits, target = problem(shape, dtype)

        def times(name, n):
            return np.asarray(ms[(shape, dtype, name, thread_counts[0] if name in SINGLE_THREADED
                                  else n)])
        entry = {"shape": list(shape), "dtype": dtype, "logits_bytes": logits.nbytes,
                 "grad_relative_error": accuracy(logits, target, peers),
                 "allocated_bytes": allocations(logits, target),
                 "ms": {name: {str(n): spread(times(name, n)) for n in thread_counts}
                        for name in peers},
                 "ratios": {}}
        ours = {n: times("crossentropy", n) for n in thread_counts}
        for name in peers:
            if name not in ("crossentropy", "copy"):
                entry["ratios"][f"vs_{name}"] = {str(n): spread(times(name, n) / ours[n])
                                                 for n in thread_counts}
        entry["ratios"]["per_copy"] = {str(n): spread(ours[n] / times("copy", n))
                                       for n in thread_counts}
        entry["ratios"]["speedup_from_threads"] = {
            str(n): spread(ours[thread_counts[0]] / ours[n]) for n in thread_counts}
        results.append(entry)
    return results


TABLE_NOTE = ("Times are medians over the processes (each process's time is the median of its "
              "calls); a ratio is the median over rounds of the per-round ratio, with its range "
              "over the rounds in brackets when there were several. NumPy and the copy are "
              "single-threaded: their time at one thread stands in every row, and \"/ copy\" "
              "compares with that one-thread copy.")


def ratio_cell(r, bold=False):
    text = f"{r['median']:.1f}×"
    text = f"**{text}**" if bold else text
    return text + (f" ({r['min']:.1f}–{r['max']:.1f})" if r["max"] > r["min"] else "")


def table(results, thread_counts):
    names = [n for n in PEERS if any(n in r["ms"] for r in results)]
    versus = [n for n in ("torch", "torch.compile", "jax") if n in names]
    head = (["shape", "dtype", "threads"] + [f"{n} ms" for n in names]
            + [f"vs {n}" for n in versus] + ["/ copy", f"{thread_counts[0]} thread / n"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for n in thread_counts:
            cells = [f"{r['shape'][0]}×{r['shape'][1]}", r["dtype"], str(n)]
            cells += [f"{r['ms'][name][str(n)]['median']:.2f}" if name in r["ms"] else "–"
                      for name in names]
            cells += [ratio_cell(r["ratios"][f"vs_{name}"][str(n)], bold=True)
                      if f"vs_{name}" in r["ratios"] else "–" for name in versus]
            cells.append(ratio_cell(r["ratios"]["per_copy"][str(n)]))
            cells.append(ratio_cell(r["ratios"]["speedup_from_threads"][str(n)])
                         if n != thread_counts[0] else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_table(results):
    lines = ["| shape | dtype | crossentropy | torch |", "|---|---|---|---|"]
    for r in results:
        e = r["grad_relative_error"]
        torch_cell = f"{e['torch']:.1e}" if "torch" in e else "–"
        lines.append(f"| {r['shape'][0]}×{r['shape'][1]} | {r['dtype']} | "
                     f"{e['crossentropy']:.1e} | {torch_cell} |")
    return "\n".join(lines)


COLOURS = {"crossentropy": "#1b7837", "torch": "#ee4c2c", "torch.compile": "#a50f15",
           "jax": "#6a51a3", "sklearn": "#f89939", "numpy": "#4d77cf", "copy": "#999999"}


def chart(results, thread_counts, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in PEERS if any(n in r["ms"] for r in results)]
    labels = [f"{r['shape'][0]}×{r['shape'][1]}\n{r['dtype']}" for r in results]
    fig, axes = plt.subplots(1, len(thread_counts), figsize=(6 * len(thread_counts), 4.5),
                             sharey=True, squeeze=False)
    width = 0.8 / len(names)
    for ax, n in zip(axes[0], thread_counts):
        for k, name in enumerate(names):
            xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(results))]
            ys = [r["ms"][name][str(n)]["median"] if name in r["ms"] else np.nan for r in results]
            ax.bar(xs, ys, width, label=name, color=COLOURS[name])
        ax.set_yscale("log")
        ax.set_xticks(range(len(results)), labels, fontsize=8)
        ax.set_title(f"loss + gradient, {n} thread{'s' if n > 1 else ''}, each alone")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("ms (median, log scale)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def versions(peers):
    found = {"crossentropy": ce.__version__, "numpy": np.__version__,
             "python": platform.python_version()}
    for module in dict.fromkeys(m for peer in peers for m in MODULES.get(peer, [])):
        found[module] = __import__(module).__version__
    return found


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv=None, default_out="crossentropy-benchmark"):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller shapes, one process each, shorter timing")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts to measure (default: 1 2)")
    parser.add_argument("--processes", type=int, default=None,
                        help="processes per implementation, shape and thread count "
                             "(default: 3; 1 with --quick)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per process (default: 1; 0.2 with --quick)")
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS),
                        help="implementations to time (default: all that are installed; "
                             "crossentropy and copy are always timed)")
    parser.add_argument("--out", default=default_out,
                        help=f"directory for bench.json, bench.md and bench.png (default: {default_out})")
    args = parser.parse_args(argv)
    if min(args.threads) < 1 or (args.processes is not None and args.processes < 1):
        parser.error("--threads and --processes must be at least 1")
    shapes = QUICK_SHAPES if args.quick else SHAPES
    processes = args.processes or (1 if args.quick else 3)
    seconds = args.seconds if args.seconds is not None else (0.2 if args.quick else 1.0)
    asked = set(args.peers) | {"crossentropy", "copy"}
    skipped = {peer: why for peer in PEERS if peer in asked and (why := why_missing(peer))}
    peers = tuple(peer for peer in PEERS if peer in asked and peer not in skipped)
    for peer, why in skipped.items():
        print(f"skipping {peer}: {why}", file=sys.stderr)
    failed = {}
    results = run(shapes, args.threads, processes, seconds, peers, failed=failed)
    peers = tuple(peer for peer in peers if peer not in failed)
    found = versions(peers)
    pinned = cpus_for(1) is not None
    report = {"command": "python benchmarks/bench.py" + (" --quick" if args.quick else ""),
              "argv": list(sys.argv[1:] if argv is None else argv),
              "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(),
                          "simd_clones": ce._kernels.dispatch_target(),
                          "one_thread_pinned": pinned},
              "processes": processes, "seconds": seconds, "versions": found,
              "skipped": skipped, "failed": failed, "results": results}
    os.makedirs(args.out, exist_ok=True)
    text = (f"{table(results, args.threads)}\n\n{TABLE_NOTE}\n\nGradient accuracy (largest "
            f"relative error of an entry, against float64):\n\n{accuracy_table(results)}\n")
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    written = ["bench.json", "bench.md"]
    try:
        chart(results, args.threads, os.path.join(args.out, "bench.png"))
        written.append("bench.png")
    except ImportError:
        print("matplotlib not installed: no chart", file=sys.stderr)
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, {ce._kernels.dispatch_target()} clones, "
          f"runs {'pinned to as many CPUs as threads' if pinned else 'not pinned'}; "
          f"{', '.join(f'{k} {v}' for k, v in found.items())}\n")
    print(text)
    if skipped:
        print("Skipped: " + "; ".join(f"{peer} ({why})" for peer, why in skipped.items()))
    if failed:
        print("Failed, and left out: " + "; ".join(f"{peer} ({why})" for peer, why in failed.items()))
    print(f"Results written to {os.path.abspath(args.out)}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
