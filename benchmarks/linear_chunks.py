"""The fused linear cross-entropy's chunk size against its two targets (time
at most 1.05x the three matrix products alone, memory beyond the gradients
at most a quarter of torch's chunked path's), behind the README's chunk
table.

    python benchmarks/linear_chunks.py [--rounds 2] [--repeats 2] [--threads 1 2]

For each shape and thread count: the products alone and torch's chunked
F.linear_cross_entropy once per round, and the fused call with chunks of
16 to 256 MiB of logits, each in a fresh process (benchmarks/linear.py's
child).  Writes benchmarks/results/linear_chunks.{json,md}.
"""

import statistics

from linear import gradients_mb
from solo import options, print_saved, run_alone, save

SHAPES = [(4096, 1024, 32000), (2048, 1024, 128000)]
CHUNKS_MIB = [16, 32, 64, 128, 256]


def table(results, thread_counts):
    lines = ["| tokens × d × classes | threads | chunk (MiB, tokens) | fused / products "
             "| memory beyond the gradients, fused / torch chunked |", "|---|---|---|---|---|"]
    for key, row in results.items():
        shape = tuple(int(x) for x in key.split("x")[:3])
        threads = int(key.split("x")[3])
        if threads not in thread_counts:
            continue
        grads = gradients_mb(shape)
        products = row["products"]["seconds"]
        theirs = statistics.median(row["torch chunked"]["peak_mb"]) - grads
        for mib in CHUNKS_MIB:
            name = f"fused:{mib}"
            if name not in row:
                continue
            ratios = [f / p for f, p in zip(row[name]["seconds"], products)]
            ours = statistics.median(row[name]["peak_mb"]) - grads
            tokens = max(1, (mib << 20) // (shape[2] * 4))
            lines.append(f"| {shape[0]}×{shape[1]}×{shape[2]} | {threads} | {mib}, {tokens} | "
                         f"{statistics.median(ratios):.3f}× ({min(ratios):.3f}–{max(ratios):.3f})"
                         f" | {ours:.0f} / {theirs:.0f} MB = {ours / theirs:.2f} |")
    return "\n".join(lines)


def main():
    parser = options(__doc__, rounds=2, repeats=2)
    args = parser.parse_args()
    if print_saved(args, lambda results: table(results, args.threads)):
        return
    results = {}
    for r in range(args.rounds):
        for n, d, v in SHAPES:
            for threads in args.threads:
                row = results.setdefault(f"{n}x{d}x{v}x{threads}", {})
                for impl in ["products", "torch chunked"] + [f"fused:{m}" for m in CHUNKS_MIB]:
                    got = run_alone("linear", [impl, n, d, v, threads, args.repeats], threads)
                    entry = row.setdefault(impl, {"seconds": [], "peak_mb": []})
                    entry["seconds"].append(min(got["seconds"]))
                    entry["peak_mb"].append(got["peak_bytes"] / 1e6)
                    print(f"round {r + 1} {n}x{d}x{v} threads {threads} {impl}: "
                          f"{min(got['seconds']):.2f} s, {got['peak_bytes'] / 1e6:.0f} MB",
                          flush=True)
    save(args.out, "linear_chunks", {"rounds": args.rounds, "repeats": args.repeats,
                                     "results": results}, table(results, args.threads))


if __name__ == "__main__":
    main()
