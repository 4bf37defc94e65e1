"""crossentropy.torch.cross_entropy against F.cross_entropy, eager and compiled:
time and peak memory of one training step's loss (forward and backward), behind
the README's PyTorch table.

    python benchmarks/torch_loss.py [--rounds 3] [--repeats 5] [--threads 1 2]

Implementations, each alone in a fresh process (pinned to n CPUs for an
n-thread run on a machine with more, as the main benchmark does):

  ours            crossentropy.torch.cross_entropy(z, t).backward()
  torch eager     F.cross_entropy(z, t).backward()
  torch compiled  torch.compile(F.cross_entropy)(z, t).backward() (inductor)

Each process makes a (4096, 32000) leaf tensor of logits (float32, then
bfloat16), runs two warm-up steps (compiling, for the compiled one), then
measures one step's peak resident memory over what it held before (the peak
is reset through /proc/self/clear_refs; z.grad, which every implementation
returns, counts) and times `--repeats` more.  The rounds interleave the implementations;
ratios are taken per round.  Writes benchmarks/results/torch_loss.{json,md}.
"""

import os
import statistics
import time

from solo import options, print_saved, ratio, run_alone, save

IMPLEMENTATIONS = ["ours", "torch eager", "torch compiled"]
SHAPE = (4096, 32000)
DTYPES = ["float32", "bfloat16"]


def child(impl, rows, classes, dtype, threads, repeats):
    """Runs in the fresh process: inputs, warm-up, one step for the memory,
    timed steps."""
    import warnings

    import torch
    import torch.nn.functional as F

    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)

    def resident(field=None):
        if field is None:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

    g = torch.Generator().manual_seed(0)
    z = torch.randn(rows, classes, generator=g, dtype=getattr(torch, dtype)).requires_grad_()
    t = torch.randint(0, classes, (rows,), generator=g)
    if impl == "ours":
        import crossentropy.torch as ct
        loss_fn = ct.cross_entropy
    elif impl == "torch compiled":
        loss_fn = torch.compile(F.cross_entropy, fullgraph=True)
    else:
        loss_fn = F.cross_entropy

    def step():
        z.grad = None
        loss = loss_fn(z, t)
        loss.backward()
        return float(loss)

    step()
    step()
    z.grad = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                    # resets the peak (VmHWM)
    base = resident()
    loss = step()
    peak = resident("VmHWM:") - base
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "peak_bytes": peak, "loss": loss}


def table(results, thread_counts):
    lines = ["| logits | threads | " + " | ".join(f"{name} ms (peak MB)"
                                                  for name in IMPLEMENTATIONS)
             + " | torch eager / ours | torch compiled / ours | peak, ours / torch eager |",
             "|---|---|" + "---|" * (len(IMPLEMENTATIONS) + 3)]
    for dtype in DTYPES:
        for threads in thread_counts:
            row = results.get(f"{dtype}-{threads}")
            if not row:
                continue
            cells = [f"{statistics.median(row[n]['best']) * 1e3:.0f} ({row[n]['peak_mb']:.0f})"
                     if n in row else "—" for n in IMPLEMENTATIONS]
            for peer in ("torch eager", "torch compiled"):
                cells.append(ratio(row, peer, "ours", 2) if peer in row and "ours" in row
                             else "—")
            cells.append(f"{row['ours']['peak_mb'] / row['torch eager']['peak_mb']:.2f}"
                         if "ours" in row and "torch eager" in row else "—")
            lines.append(f"| {SHAPE[0]}×{SHAPE[1]} {dtype} | {threads} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines)


def main():
    parser = options(__doc__, rounds=3, repeats=5)
    args = parser.parse_args()
    if print_saved(args, lambda results: table(results, args.threads)):
        return
    results = {}
    for r in range(args.rounds):
        for dtype in DTYPES:
            for threads in args.threads:
                key = f"{dtype}-{threads}"
                for impl in IMPLEMENTATIONS:
                    got = run_alone("torch_loss", [impl, *SHAPE, dtype, threads, args.repeats],
                                    threads)
                    entry = results.setdefault(key, {}).setdefault(
                        impl, {"best": [], "peak_mb": 0.0, "loss": got["loss"]})
                    entry["best"].append(min(got["seconds"]))
                    entry["peak_mb"] = max(entry["peak_mb"], got["peak_bytes"] / 1e6)
                    print(f"round {r + 1} {key} {impl}: {min(got['seconds']) * 1e3:.0f} ms, "
                          f"peak +{got['peak_bytes'] / 1e6:.0f} MB", flush=True)
    save(args.out, "torch_loss", {"rounds": args.rounds, "repeats": args.repeats,
                                  "results": results}, table(results, args.threads))


if __name__ == "__main__":
    main()
