"""Beyond one process: crossentropy.dask on a two-worker LocalCluster, and
crossentropy.torch.vocab_parallel_cross_entropy on two gloo processes,
against one process, behind the README's distributed table.

    python benchmarks/sharded.py [--rounds 3] [--repeats 3]

Each case runs in a fresh process (the cluster's and the ranks' own
processes started from it), on float32 data made from seed 0:

  numpy-fits     cross_entropy_and_grad of 8192x16000 logits (500 MiB) in one
                 process with 2 threads
  dask-fits      the same on a LocalCluster of 2 workers x 1 thread, the
                 logits already on the workers (persisted, chunks 2048x4000),
                 the gradient persisted there and the loss brought back
  dask-stream    the loss of 65536x32768 logits (8 GiB) generated on 2
                 workers of 1 GiB each, chunks 2048x8192, against the same
                 graph summing the logits instead (what generating them costs)
  torch-1, -2    crossentropy.torch.cross_entropy forward and backward of
                 4096x32000 logits in one process with 1 and 2 threads
  vocab-parallel the same logits split in two, one half on each of 2 gloo
                 processes with 1 thread each (the slowest rank's time)

Times are the best of `--repeats` calls per process (dask-stream: one call
after one untimed); the table gives the
median over the rounds and the range of the per-round ratios.  Writes
benchmarks/results/sharded.{json,md}.
"""

import datetime
import json
import socket
import statistics
import time

from solo import options, print_saved, ratio, run_alone, save

FITS = (8192, 16000, (2048, 4000))
STREAM = (65536, 32768, (2048, 8192))
STREAM_MEMORY = 2**30
TORCH = (4096, 32000)
CASES = ["numpy-fits", "dask-fits", "dask-stream", "torch-1", "torch-2", "vocab-parallel"]


def _best(call, repeats):
    """The best time of call(k), k = 1..repeats, after call(0)."""
    call(0)
    times = []
    for k in range(1, repeats + 1):
        start = time.perf_counter()
        call(k)
        times.append(time.perf_counter() - start)
    return min(times)


def _fits_data():
    import dask.array as da
    rows, classes, chunks = FITS
    rng = da.random.default_rng(0)
    logits = rng.standard_normal((rows, classes), chunks=chunks, dtype="float32")
    target = rng.integers(0, classes, rows, chunks=chunks[0])
    return logits, target


def _cluster(memory_limit="4GiB"):
    import distributed
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                    memory_limit=memory_limit, dashboard_address=None)


def child(case, repeats):
    """Runs in the fresh process: {"time": s} (and what else the case measures)."""
    import numpy as np

    if case == "numpy-fits":
        import dask
        import crossentropy as ce
        logits, target = dask.compute(*_fits_data(), scheduler="sync")
        return {"time": _best(lambda k: ce.cross_entropy_and_grad(logits, target, n_threads=2),
                              repeats)}
    if case.startswith("dask-"):
        import distributed
        import crossentropy.dask as cdask
    if case == "dask-fits":
        with _cluster() as cluster, distributed.Client(cluster) as client:
            logits, target = client.persist(list(_fits_data()))
            distributed.wait([logits, target])

            def call(k):
                # (new targets each call, as each step has: a graph of new keys, which
                # the results of the last call, still being released, cannot answer)
                step = (target + k) % FITS[1]
                loss, grad = client.persist(list(cdask.cross_entropy_and_grad(logits, step)))
                distributed.wait([loss, grad])
                loss.compute()
            return {"time": _best(call, repeats)}
    if case == "dask-stream":
        import dask.array as da
        rows, classes, chunks = STREAM
        with _cluster(STREAM_MEMORY) as cluster, distributed.Client(cluster) as client:
            rng = da.random.default_rng(0)
            logits = rng.standard_normal((rows, classes), chunks=chunks, dtype=np.float32)
            target = rng.integers(0, classes, rows, chunks=chunks[0])
            # (one timed call after one untimed: each reads 8 GiB)
            loss = _best(lambda k: cdask.cross_entropy(logits, target).compute(), 1)
            generate = _best(lambda k: logits.sum(dtype=np.float64).compute(), 1)
            spilled = client.run(lambda dask_worker: dask_worker.data.spilled_total.disk)
            return {"time": loss, "generate": generate, "bytes": rows * classes * 4,
                    "spilled": sum(spilled.values())}
    if case.startswith("torch-"):
        import torch
        from crossentropy.torch import cross_entropy
        torch.set_num_threads(int(case[-1]))
        logits, target = _torch_data()
        x = logits.requires_grad_()

        def call(k):
            x.grad = None
            cross_entropy(x, target).backward()
        return {"time": _best(call, repeats)}
    if case == "vocab-parallel":
        import tempfile
        import torch.multiprocessing
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as out:
            torch.multiprocessing.spawn(_rank, args=(port, repeats, out), nprocs=2, join=True)
            times = [json.load(open(f"{out}/{rank}.json")) for rank in range(2)]
        return {"time": min(max(pair) for pair in zip(*times))}
    raise ValueError(f"unknown case {case}")


def _torch_data():
    import torch
    generator = torch.Generator().manual_seed(0)
    rows, classes = TORCH
    logits = torch.randn(rows, classes, generator=generator)
    return logits, torch.randint(0, classes, (rows,), generator=generator)


def _rank(rank, port, repeats, out):
    """One gloo rank: its half of the vocabulary, timed call by call, the
    ranks starting each call together."""
    import torch
    import torch.distributed as dist
    from crossentropy.torch import vocab_parallel_cross_entropy

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=datetime.timedelta(seconds=120))
    logits, target = _torch_data()
    half = TORCH[1] // 2
    x = logits[:, rank * half:(rank + 1) * half].contiguous().requires_grad_()
    times = []
    for _ in range(repeats + 1):
        x.grad = None
        dist.barrier()
        start = time.perf_counter()
        vocab_parallel_cross_entropy(x, target, vocab_start=rank * half,
                                     vocab_size=TORCH[1]).backward()
        times.append(time.perf_counter() - start)
    dist.destroy_process_group()
    with open(f"{out}/{rank}.json", "w") as f:
        json.dump(times[1:], f)


def table(results):
    best = {case: {"best": results[case]["time"]} for case in results}
    ms = {case: statistics.median(results[case]["time"]) * 1e3 for case in results}
    lines = ["| float32 | one process | distributed | distributed / one process |",
             "|---|---|---|---|"]
    if {"numpy-fits", "dask-fits"} <= set(results):
        lines.append(f"| {FITS[0]}×{FITS[1]} loss and gradient, the logits in memory | "
                     f"NumPy API, 2 threads: {ms['numpy-fits']:.0f} ms | dask, LocalCluster of "
                     f"2 workers × 1 thread: {ms['dask-fits']:.0f} ms | "
                     f"{ratio(best, 'dask-fits', 'numpy-fits', 2)} |")
    if "vocab-parallel" in results:
        for one in ("torch-1", "torch-2"):
            if one in results:
                threads = f"{one[-1]} thread" + ("s" if one[-1] != "1" else "")
                lines.append(f"| {TORCH[0]}×{TORCH[1]} forward and backward | "
                             f"crossentropy.torch, {threads}: {ms[one]:.0f} ms | "
                             f"vocab-parallel, 2 gloo ranks × 1 thread: "
                             f"{ms['vocab-parallel']:.0f} ms | "
                             f"{ratio(best, 'vocab-parallel', one, 2)} |")
    if "dask-stream" in results:
        row = results["dask-stream"]
        size = row["bytes"][0]
        rate = statistics.median(size / t / 2**30 for t in row["time"])
        generate = statistics.median(size / t / 2**30 for t in row["generate"])
        both = {"loss": {"best": row["time"]}, "sum": {"best": row["generate"]}}
        lines.append(f"| {STREAM[0]}×{STREAM[1]} loss, {size / 2**30:.0f} GiB generated on "
                     f"2 workers of {STREAM_MEMORY / 2**30:.0f} GiB (nothing spilled: "
                     f"{max(row['spilled'])} bytes) | the same graph summing the logits "
                     f"instead: {generate:.2f} GiB/s | the loss: {rate:.2f} GiB/s | "
                     f"{ratio(both, 'loss', 'sum', 2)} |")
    return "\n".join(lines)


def main():
    parser = options(__doc__, rounds=3, repeats=3)
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    args = parser.parse_args()
    if print_saved(args, table):
        return
    results = {}
    for r in range(args.rounds):
        for case in args.cases:
            got = run_alone("sharded", [case, args.repeats], 2)
            entry = results.setdefault(case, {})
            for key, value in got.items():
                entry.setdefault(key, []).append(value)
            print(f"round {r + 1} {case}: " + ", ".join(
                f"{k} {v * 1e3:.0f} ms" if k in ("time", "generate") else f"{k} {v}"
                for k, v in got.items()), flush=True)
    save(args.out, "sharded", {"rounds": args.rounds, "repeats": args.repeats,
                                   "results": results}, table(results))


if __name__ == "__main__":
    main()
