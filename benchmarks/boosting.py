"""A boosting round of XGBoost's multiclass model with crossentropy.xgboost's
objective, against XGBoost's own multi:softprob and the NumPy custom
objectives, behind the README's boosting table.

    python benchmarks/boosting.py [--rounds 3] [--repeats 5] [--threads 1 2]

Each implementation runs alone in a fresh process (pinned to n CPUs for an
n-thread run on a machine with more), on data made from seed 0: 100 000
samples of 20 features, 10 classes from a noisy linear model.  It times the
objective alone (`--repeats` calls on fixed margins; the best), then whole
boosting rounds of xgboost.train (hist, depth 6, `nthread` the thread
count; the mean over a few rounds after one untimed).  The implementations:

  builtin      objective="multi:softprob" (XGBoost's C++ objective)
  ours         crossentropy.xgboost.softprob_objective
  numpy        the same gradient and Hessian in vectorised NumPy (float64)
  numpy-loop   the algorithm of XGBoost's demo/guide-python/custom_softmax.py:
               a Python loop over samples and classes

Writes benchmarks/results/boosting.{json,md}.
"""

import statistics
import time

from solo import options, print_saved, ratio, run_alone, save

IMPLEMENTATIONS = ["builtin", "ours", "numpy", "numpy-loop"]
SAMPLES, FEATURES, CLASSES = 100_000, 20, 10
BOOST_ROUNDS = {"numpy-loop": 2}          # timed rounds (default 10)


def numpy_objective(predt, dtrain):
    """multi:softprob's gradient and Hessian, written in NumPy."""
    import numpy as np
    labels = dtrain.get_label().astype(np.intp)
    weights = dtrain.get_weight()
    w = weights[:, None] if weights.size else 1.0
    e = np.exp(predt - predt.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    grad = p.copy()
    grad[np.arange(len(labels)), labels] -= 1.0
    return grad * w, np.maximum(2.0 * p * (1.0 - p) * w, 1e-16)


def loop_objective(predt, dtrain):
    """The same, a sample and a class at a time (the demo's way)."""
    import numpy as np
    labels = dtrain.get_label()
    weights = dtrain.get_weight()
    grad = np.zeros(predt.shape)
    hess = np.zeros(predt.shape)
    for r in range(predt.shape[0]):
        e = np.exp(predt[r])
        p = e / e.sum()
        w = float(weights[r]) if weights.size else 1.0
        for c in range(predt.shape[1]):
            pc = float(p[c])
            grad[r, c] = (pc - 1.0 if c == int(labels[r]) else pc) * w
            hess[r, c] = max(2.0 * pc * (1.0 - pc) * w, 1e-16)
    return grad, hess


def child(impl, threads, repeats):
    """Runs in the fresh process: {"objective": [s], "round": s}."""
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, FEATURES))
    scores = x @ rng.standard_normal((FEATURES, CLASSES)) + rng.gumbel(size=(SAMPLES, CLASSES))
    dtrain = xgb.DMatrix(x, label=np.argmax(scores, axis=1), nthread=threads)
    params = {"num_class": CLASSES, "max_depth": 6, "eta": 0.3, "tree_method": "hist",
              "nthread": threads, "base_score": 0.0}
    objective = None
    if impl == "ours":
        from crossentropy.xgboost import softprob_objective as objective
    elif impl == "numpy":
        objective = numpy_objective
    elif impl == "numpy-loop":
        objective = loop_objective
    result = {"objective": []}
    if objective is not None:
        margins = rng.standard_normal((SAMPLES, CLASSES)).astype(np.float32)
        objective(margins, dtrain)
        for _ in range(repeats if impl != "numpy-loop" else 1):
            start = time.perf_counter()
            objective(margins, dtrain)
            result["objective"].append(time.perf_counter() - start)
        params["disable_default_eval_metric"] = True
    else:
        params["objective"] = "multi:softprob"
    booster = xgb.train(params, dtrain, 1, obj=objective)
    rounds = BOOST_ROUNDS.get(impl, 10)
    start = time.perf_counter()
    for _ in range(rounds):
        booster.update(dtrain, booster.num_boosted_rounds(), fobj=objective)
    result["round"] = (time.perf_counter() - start) / rounds
    return result


def table(results, thread_counts):
    lines = ["| threads | objective | objective alone (ms) | its time / ours "
             "| boosting round (ms) | its time / ours |", "|---|---|---|---|---|---|"]
    for threads in thread_counts:
        row = results.get(str(threads))
        if not row:
            continue
        impls = [impl for impl in IMPLEMENTATIONS if impl in row]
        objectives = {impl: {"best": row[impl]["objective"]} for impl in impls}
        rounds = {impl: {"best": row[impl]["round"]} for impl in impls}
        for impl in impls:
            objective = row[impl]["objective"]
            if objective:
                cells = (f"{statistics.median(objective) * 1e3:.1f}",
                         ratio(objectives, impl, "ours", 1))
            else:
                cells = ("(in C++)", "")
            lines.append(f"| {threads} | {impl} | {cells[0]} | {cells[1]} | "
                         f"{statistics.median(row[impl]['round']) * 1e3:.0f} | "
                         f"{ratio(rounds, impl, 'ours', 2)} |")
    return "\n".join(lines)


def main():
    parser = options(__doc__, rounds=3, repeats=5)
    args = parser.parse_args()
    if print_saved(args, lambda results: table(results, args.threads)):
        return
    results = {}
    for r in range(args.rounds):
        for threads in args.threads:
            for impl in IMPLEMENTATIONS:
                got = run_alone("boosting", [impl, threads, args.repeats], threads)
                entry = results.setdefault(str(threads), {}).setdefault(
                    impl, {"objective": [], "round": []})
                if got["objective"]:
                    entry["objective"].append(min(got["objective"]))
                entry["round"].append(got["round"])
                print(f"round {r + 1} threads {threads} {impl}: objective "
                      + (f"{min(got['objective']) * 1e3:.1f} ms" if got["objective"] else "-")
                      + f", boosting round {got['round'] * 1e3:.1f} ms", flush=True)
    save(args.out, "boosting", {"rounds": args.rounds, "repeats": args.repeats,
                                "samples": SAMPLES, "features": FEATURES, "classes": CLASSES,
                                "results": results}, table(results, args.threads))


if __name__ == "__main__":
    main()
