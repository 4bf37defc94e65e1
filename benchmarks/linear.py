"""The fused linear cross-entropy against the unfused computations and torch:
time and peak memory of a forward and backward, float32, behind the README's
table.

    python benchmarks/linear.py [--rounds 2] [--quick] [--threads 1 2]

Implementations, each alone in a fresh process (pinned to n CPUs for an
n-thread run on a machine with more, as the main benchmark does):

  fused          crossentropy.linear_cross_entropy_and_grad(h, w, t)
  numpy unfused  z = h @ w.T; cross_entropy_and_grad(z, t, inplace=True);
                 z @ w; z.T @ h
  products       the same three products alone, at full size (no loss)
  torch unfused  F.cross_entropy(h @ w.T, t).backward()
  torch chunked  F.linear_cross_entropy(h, w, t,
                 options=LinearCrossEntropyOptions()).backward()

Each process makes its inputs, calls once (its peak resident memory over
what it held before that call is the memory figure: the returned gradients
count, as torch's .grad tensors do), then times `--repeats` more calls.
The rounds interleave the implementations; ratios are taken per round.
Writes benchmarks/results/linear.{json,md}.
"""

import os
import statistics
import time

from solo import options, print_saved, ratio, run_alone, save

IMPLEMENTATIONS = ["fused", "numpy unfused", "products", "torch unfused", "torch chunked"]
SHAPES = [(4096, 1024, 32000), (16384, 1024, 32000), (2048, 1024, 128000)]
QUICK_SHAPES = [(1024, 256, 32000)]


def child(impl, n, d, v, threads, repeats):
    """Runs in the fresh process: inputs, one call for the memory, timed calls."""
    import resource

    import numpy as np

    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    rng = np.random.default_rng(0)
    h = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((v, d), dtype=np.float32)
    w *= 1 / np.sqrt(d)
    t = rng.integers(0, v, n)
    if impl.startswith("torch"):
        import torch
        import torch.nn.functional as F
        from torch.nn import LinearCrossEntropyOptions
        torch.set_num_threads(threads)
        th = torch.from_numpy(h).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        tt = torch.from_numpy(t)

        def step():
            th.grad = tw.grad = None
            if impl == "torch chunked":
                loss = F.linear_cross_entropy(th, tw, tt, options=LinearCrossEntropyOptions())
            else:
                loss = F.cross_entropy(th @ tw.T, tt)
            loss.backward()
            return float(loss)
    else:
        import crossentropy as ce

        # ("fused:<MiB>": the fused call with chunks of that many MiB of logits)
        chunk = None if ":" not in impl else max(1, (int(impl.split(":")[1]) << 20) // (v * 4))

        def step():
            if impl.startswith("fused"):
                return float(ce.linear_cross_entropy_and_grad(h, w, t, chunk_size=chunk)[0])
            z = h @ w.T
            loss = ce.cross_entropy_and_grad(z, t, inplace=True)[0] if impl != "products" else 0
            gh, gw = z @ w, z.T @ h
            return float(loss) + 0 * float(gh[0, 0] + gw[0, 0])
    base = resident()
    loss = step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "peak_bytes": peak, "loss": loss}


def gradients_mb(shape):
    """What the gradients returned take (input's and weight's, float32)."""
    n, d, v = shape
    return (n * d + v * d) * 4 / 1e6


def table(results, shapes, thread_counts):
    lines = ["| tokens × d × classes | threads | " + " | ".join(
                 f"{name} s (peak MB)" for name in IMPLEMENTATIONS)
             + " | fused / products | torch chunked / fused | torch unfused / fused "
             "| memory beyond the gradients, fused / torch chunked |",
             "|---|---|" + "---|" * (len(IMPLEMENTATIONS) + 4)]
    for shape in shapes:
        for threads in thread_counts:
            key = f"{shape[0]}x{shape[1]}x{shape[2]}-{threads}"
            row = results.get(key)
            if not row:
                continue
            cells = []
            for name in IMPLEMENTATIONS:
                r = row.get(name)
                cells.append("—" if r is None else
                             f"{statistics.median(r['best']):.2f} ({r['peak_mb']:.0f})")

            have = all(name in row for name in ("fused", "products"))
            cells.append(ratio(row, "fused", "products", 3) if have else "—")
            for torch_name in ("torch chunked", "torch unfused"):
                cells.append(ratio(row, torch_name, "fused", 3) if torch_name in row else "—")
            if "torch chunked" in row and "fused" in row:
                grads = gradients_mb(shape)
                ours, theirs = (row[k]["peak_mb"] - grads for k in ("fused", "torch chunked"))
                cells.append(f"{ours:.0f} / {theirs:.0f} MB = {ours / theirs:.2f}")
            else:
                cells.append("—")
            lines.append(f"| {shape[0]}×{shape[1]}×{shape[2]} | {threads} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines)


def main():
    parser = options(__doc__, rounds=2, repeats=1)
    parser.add_argument("--quick", action="store_true", help="one small shape, one round")
    parser.add_argument("--implementations", nargs="+", default=IMPLEMENTATIONS)
    args = parser.parse_args()
    if print_saved(args, lambda results: table(results, SHAPES + QUICK_SHAPES, args.threads)):
        return
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rounds = 1 if args.quick else args.rounds
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: its two rows are skipped")
        args.implementations = [i for i in args.implementations if not i.startswith("torch")]
    results = {}
    for r in range(rounds):
        for shape in shapes:
            for threads in args.threads:
                key = f"{shape[0]}x{shape[1]}x{shape[2]}-{threads}"
                for impl in args.implementations:
                    got = run_alone("linear", [impl, *shape, threads, args.repeats], threads)
                    entry = results.setdefault(key, {}).setdefault(
                        impl, {"best": [], "peak_mb": 0.0, "loss": got["loss"]})
                    entry["best"].append(min(got["seconds"]))
                    entry["peak_mb"] = max(entry["peak_mb"], got["peak_bytes"] / 1e6)
                    print(f"round {r + 1} {key} {impl}: {min(got['seconds']):.2f} s, "
                          f"peak +{got['peak_bytes'] / 1e6:.0f} MB", flush=True)
    save(args.out, "linear", {"rounds": rounds, "repeats": args.repeats, "results": results},
         table(results, shapes, args.threads))


if __name__ == "__main__":
    main()
