"""Time crossentropy's loss + gradient against other implementations, in one run.

    python -m crossentropy --bench              # the full benchmark
    python benchmarks/bench.py                  # the same, results in benchmarks/results/
    python benchmarks/bench.py --quick          # smaller shapes, fewer repeats

Everything is measured in the same process, every implementation and thread
count in the same rounds, and each ratio is the median of its per-round ratios,
so the ratios hold on any machine (and through a shared machine's slow spells);
the absolute numbers are this machine's.  Implementations (each skipped when not
installed):

* crossentropy     cross_entropy_and_grad(..., out=preallocated)
* torch            F.cross_entropy forward + backward (CPU)
* sklearn          HalfMultinomialLoss.loss_gradient with preallocated outputs
* numpy            the textbook NumPy version (single-threaded)
* copy             np.copyto of the logits into a preallocated array: the floor
                   for anything that reads the logits and writes a gradient

Also reported: the gradient's accuracy against a float64 reference (largest
relative error of any entry whose reference is a normal float32), for
crossentropy and torch, and how much memory each crossentropy mode allocates.
"""

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc

import numpy as np

import crossentropy as ce

SHAPES = [((65536, 10), "float32"), ((4096, 1000), "float32"), ((2048, 32000), "float32"),
          ((512, 128000), "float32"), ((4096, 1000), "float64"), ((2, 1000000), "float32")]
QUICK_SHAPES = [((16384, 10), "float32"), ((1024, 1000), "float32"), ((256, 32000), "float32"),
                ((64, 128000), "float32"), ((1024, 1000), "float64"), ((2, 300000), "float32")]
ACCURACY_ROWS = 32


WARM_UP_S = 0.025    # longer than an OpenMP runtime's idle threads spin (~10 ms)
BURST_S = 0.05
MIN_ROUNDS = 5


def call_for(fn, seconds):
    """Call `fn` back to back, untimed, for about `seconds` (none for 0)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        fn()


def burst_rounds_ms(fns, repeats, budget_s):
    """Per-round median wall times in ms of each callable in `fns` (key -> fn).

    Each callable runs in bursts: untimed calls for WARM_UP_S, then calls back
    to back for about BURST_S (2 to 10 of them), each timed; the burst's median
    is its round's time.  The bursts take turns, round after round, so that a
    slow spell of the machine (this is often a shared VM) falls on all of them
    alike, and times from the same round can be compared pairwise.  The
    warm-up is there because torch, scikit-learn and this package each bring
    their own OpenMP runtime, whose idle threads spin for some milliseconds
    after a parallel region: timed right after another library, a call would
    compete with that library's spinning threads, and its own threads would
    still be asleep.  (A call of 50 ms or more gets no warm-up: that is noise
    to it.)  As many rounds as fit in about budget_s seconds, at least
    MIN_ROUNDS and at most `repeats`.
    """
    call_s = {}
    for key, fn in fns.items():        # a call's time once warm: a first call may be far slower
        start = time.perf_counter()
        fn()
        call_s[key] = time.perf_counter() - start
        if call_s[key] < 0.5:
            start = time.perf_counter()
            fn()
            call_s[key] = time.perf_counter() - start
    per_burst = {key: int(max(2, min(10, BURST_S / max(t, 1e-9)))) for key, t in call_s.items()}
    warm_up = {key: WARM_UP_S if t < 0.05 else 0.0 for key, t in call_s.items()}
    round_s = sum(per_burst[key] * call_s[key] + warm_up[key] for key in fns)
    rounds = int(max(MIN_ROUNDS, min(repeats, budget_s / round_s)))
    per_round = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            call_for(fn, warm_up[key])
            burst = []
            for _ in range(per_burst[key]):
                start = time.perf_counter()
                fn()
                burst.append(time.perf_counter() - start)
            per_round[key].append(1e3 * float(np.median(burst)))
    return per_round


def paired_ratio(numerator, denominator):
    """Median over rounds of numerator / denominator (per-round times)."""
    return float(np.median(np.asarray(numerator) / np.asarray(denominator)))


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


def reference_grad(logits, target):
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(target)), target] -= 1.0
    return p / len(target)


def relative_error(grad, reference, dtype):
    mask = np.abs(reference) >= np.finfo(dtype).tiny
    return float(np.max(np.abs(grad[mask] - reference[mask]) / np.abs(reference[mask])))


def implementations(logits, target, grad_out):
    """name -> (make(n_threads) -> callable, threaded?)"""
    impls = {}
    impls["crossentropy"] = (lambda n: lambda: ce.cross_entropy_and_grad(
        logits, target, out=grad_out, n_threads=n), True)
    try:
        import torch
        import torch.nn.functional as F

        z = torch.from_numpy(logits)
        t = torch.from_numpy(target.astype(np.int64))

        def make_torch(n):
            def step():
                torch.set_num_threads(n)
                zz = z.detach().requires_grad_(True)
                F.cross_entropy(zz, t).backward()
                return zz.grad
            return step
        impls["torch"] = (make_torch, True)
    except ImportError:
        pass
    try:
        from sklearn._loss.loss import HalfMultinomialLoss

        loss = HalfMultinomialLoss(n_classes=logits.shape[1])
        y = target.astype(logits.dtype)
        loss_out = np.empty(len(target), dtype=logits.dtype)
        sk_grad = np.empty_like(logits)
        impls["sklearn"] = (lambda n: lambda: loss.loss_gradient(
            y, logits, loss_out=loss_out, gradient_out=sk_grad, n_threads=n), True)
    except ImportError:
        pass
    impls["numpy"] = (lambda n: lambda: numpy_loss_and_grad(logits, target), False)
    copy_out = np.empty_like(logits)
    impls["copy"] = (lambda n: lambda: np.copyto(copy_out, logits), False)
    return impls


def accuracy(logits, target):
    rows = slice(0, ACCURACY_ROWS)
    z, t = logits[rows], target[rows]
    reference = reference_grad(z, t)
    errors = {}
    _, grad = ce.cross_entropy_and_grad(z, t)
    errors["crossentropy"] = relative_error(grad, reference, logits.dtype)
    try:
        import torch
        import torch.nn.functional as F
        zz = torch.from_numpy(z.copy()).requires_grad_(True)
        F.cross_entropy(zz, torch.from_numpy(t.astype(np.int64))).backward()
        errors["torch"] = relative_error(zz.grad.numpy(), reference, logits.dtype)
    except ImportError:
        pass
    return errors


def allocations(logits, target, grad_out):
    """Peak bytes NumPy allocates during one call, per crossentropy mode."""
    peaks = {}
    buffer = logits.copy()
    for mode, call in [("new", lambda: ce.cross_entropy_and_grad(logits, target)),
                       ("out=", lambda: ce.cross_entropy_and_grad(logits, target, out=grad_out)),
                       ("inplace", lambda: ce.cross_entropy_and_grad(buffer, target, inplace=True))]:
        tracemalloc.start()
        call()
        peaks[mode] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peaks


def run(shapes, thread_counts, repeats, budget_s):
    """Each shape: every implementation at every thread count, in the same
    rounds (single-threaded ones once).  Records median times, and ratios as
    medians of the per-round ratios (paired, so that the machine's slow
    spells cancel): against torch and NumPy, to the copy, and 1 thread to n."""
    rng = np.random.default_rng(0)
    results = []
    for (rows, classes), dtype in shapes:
        logits = rng.standard_normal((rows, classes), dtype=np.float32).astype(dtype) * 2
        target = rng.integers(0, classes, rows)
        grad_out = np.empty_like(logits)
        impls = implementations(logits, target, grad_out)
        entry = {"shape": [rows, classes], "dtype": dtype,
                 "grad_relative_error": accuracy(logits, target),
                 "allocated_bytes": allocations(logits, target, grad_out),
                 "logits_bytes": logits.nbytes}
        fns = {(name, n): make(n) for name, (make, threaded) in impls.items()
               for n in (thread_counts if threaded else thread_counts[:1])}
        per_round = burst_rounds_ms(fns, repeats, budget_s * len(thread_counts))

        def times(name, n):
            threaded = impls[name][1]
            return per_round[(name, n if threaded else thread_counts[0])]

        entry["ms"] = {name: {str(n): float(np.median(times(name, n))) for n in thread_counts}
                       for name in impls}
        ours = {n: times("crossentropy", n) for n in thread_counts}
        entry["ratios"] = {
            f"vs_{other}": {str(n): paired_ratio(times(other, n), ours[n]) for n in thread_counts}
            for other in impls if other not in ("crossentropy", "copy")}
        entry["ratios"]["per_copy"] = {str(n): paired_ratio(ours[n], times("copy", n))
                                       for n in thread_counts}
        entry["ratios"]["speedup_from_threads"] = {
            str(n): paired_ratio(ours[thread_counts[0]], ours[n]) for n in thread_counts}
        for n in thread_counts:
            print(f"  {rows}x{classes} {dtype} {n} thread(s): "
                  + ", ".join(f"{name} {entry['ms'][name][str(n)]:.3f} ms" for name in impls),
                  file=sys.stderr)
        results.append(entry)
        del logits, grad_out, impls, fns
    return results


TABLE_NOTE = ("Times are medians; each ratio is the median of the per-round ratios (paired "
              "by round), so it need not equal the quotient of two time columns.")


def table(results, thread_counts):
    names = [n for n in ("crossentropy", "torch", "sklearn", "numpy", "copy")
             if any(n in r["ms"] for r in results)]
    head = (["shape", "dtype", "threads"] + [f"{n} ms" for n in names]
            + ["vs torch", "vs numpy", "/ copy", f"{thread_counts[0]} thread / n"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for n in thread_counts:
            ms = {name: r["ms"][name][str(n)] for name in names if name in r["ms"]}
            ratio = {key: value[str(n)] for key, value in r["ratios"].items()}
            cells = [f"{r['shape'][0]}×{r['shape'][1]}", r["dtype"], str(n)]
            cells += [f"{ms[name]:.2f}" if name in ms else "–" for name in names]
            cells.append(f"**{ratio['vs_torch']:.1f}×**" if "vs_torch" in ratio else "–")
            cells.append(f"{ratio['vs_numpy']:.1f}×")
            cells.append(f"{ratio['per_copy']:.1f}×")
            cells.append(f"{ratio['speedup_from_threads']:.2f}×" if n != thread_counts[0] else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_table(results):
    lines = ["| shape | dtype | crossentropy | torch |", "|---|---|---|---|"]
    for r in results:
        e = r["grad_relative_error"]
        lines.append(f"| {r['shape'][0]}×{r['shape'][1]} | {r['dtype']} | "
                     f"{e['crossentropy']:.1e} | {e['torch']:.1e} |" if "torch" in e else
                     f"| {r['shape'][0]}×{r['shape'][1]} | {r['dtype']} | {e['crossentropy']:.1e} | – |")
    return "\n".join(lines)


def chart(results, thread_counts, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("crossentropy", "torch", "sklearn", "numpy", "copy")
             if any(n in r["ms"] for r in results)]
    colours = {"crossentropy": "#1b7837", "torch": "#ee4c2c", "sklearn": "#f89939",
               "numpy": "#4d77cf", "copy": "#999999"}
    labels = [f"{r['shape'][0]}×{r['shape'][1]}\n{r['dtype']}" for r in results]
    fig, axes = plt.subplots(1, len(thread_counts), figsize=(6 * len(thread_counts), 4.5),
                             sharey=True, squeeze=False)
    width = 0.8 / len(names)
    for ax, n in zip(axes[0], thread_counts):
        for k, name in enumerate(names):
            xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(results))]
            ys = [r["ms"].get(name, {}).get(str(n), np.nan) for r in results]
            ax.bar(xs, ys, width, label=name, color=colours[name])
        ax.set_yscale("log")
        ax.set_xticks(range(len(results)), labels, fontsize=8)
        ax.set_title(f"loss + gradient, {n} thread{'s' if n > 1 else ''}")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("ms (median, log scale)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None, default_out="crossentropy-benchmark"):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes, fewer repeats")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts to measure (default: 1 2)")
    parser.add_argument("--repeats", type=int, default=21, help="rounds per measurement at most")
    parser.add_argument("--budget", type=float, default=12.0,
                        help="seconds per shape and thread count, roughly (default: 12)")
    parser.add_argument("--out", default=default_out,
                        help=f"directory for bench.json, bench.md and bench.png (default: {default_out})")
    args = parser.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = 5 if args.quick else args.repeats
    results = run(shapes, args.threads, repeats, args.budget)
    versions = {"crossentropy": ce.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    for module in ("torch", "sklearn"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    report = {"command": "python benchmarks/bench.py" + (" --quick" if args.quick else ""),
              "argv": list(sys.argv[1:] if argv is None else argv),
              "machine": {"cpu": cpu, "cpus": os.cpu_count(),
                          "simd_clones": ce._kernels.dispatch_target()},
              "versions": versions, "results": results}
    os.makedirs(args.out, exist_ok=True)
    text = (f"{table(results, args.threads)}\n\n{TABLE_NOTE}\n\nGradient accuracy (largest "
            f"relative error of an entry, against float64):\n\n{accuracy_table(results)}\n")
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    try:
        chart(results, args.threads, os.path.join(args.out, "bench.png"))
    except ImportError:
        print("matplotlib not installed: no chart", file=sys.stderr)
    print(f"{cpu}, {os.cpu_count()} CPUs, {ce._kernels.dispatch_target()} clones; "
          f"{', '.join(f'{k} {v}' for k, v in versions.items())}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
