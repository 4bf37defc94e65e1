"""``python -m crossentropy``: train a softmax classifier, show the loss and the speed.

On a built-in default it generates a classification problem (Gaussian clusters
in ``--features`` dimensions), trains a linear softmax classifier on it by
gradient descent with :func:`crossentropy.cross_entropy_and_grad`, prints the
loss falling, and then times one loss-and-gradient step against the same step
written in plain NumPy.
"""

import argparse
import sys
import time

import numpy as np

from . import __version__, cross_entropy_and_grad
from ._api import _chunking
from ._kernels import build_config, dispatch_target
from ._validate import _resolve_n_threads
from ._benchmark import call_for, numpy_loss_and_grad


def make_data(rng, n_samples, n_features, n_classes, dtype):
    centres = rng.standard_normal((n_classes, n_features)) * 0.35
    target = rng.integers(0, n_classes, n_samples)
    x = centres[target] + rng.standard_normal((n_samples, n_features))
    return x.astype(dtype), target


# Untimed calls before timing, at least this long: the training just before
# leaves NumPy's BLAS threads spinning for up to about 0.1 s after its last
# matrix product, and calls made meanwhile measure that contention (see the
# README, "Threads"), not the step.
WARM_UP_SECONDS = 0.2


def call_times(fn, repeats):
    """Times of `repeats` calls of `fn` in seconds, after WARM_UP_SECONDS of calls."""
    call_for(fn, WARM_UP_SECONDS)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def train(args, out):
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(args.seed)
    x, y = make_data(rng, args.samples, args.features, args.classes, dtype)
    weights = np.zeros((args.features, args.classes), dtype=dtype)
    logits = np.empty((args.samples, args.classes), dtype=dtype)
    # The mean softmax loss is L-smooth in the weights with L <= sigma_max(x)^2 / (2 n),
    # so 1/L is a safe first step; it is then grown after every step that lowers
    # the loss, and a step that raises it is undone and halved.
    step_size = args.learning_rate
    if step_size is None:
        step_size = 2.0 * args.samples / float(np.linalg.norm(x.astype(np.float64), 2)) ** 2
    adaptive = args.learning_rate is None
    print(f"crossentropy {__version__}: softmax classifier, {args.samples} samples x "
          f"{args.features} features -> {args.classes} classes, {dtype}, "
          f"n_threads={args.threads if args.threads is not None else 'auto'}", file=out)
    print(f"{'step':>6}  {'loss':>10}  {'accuracy':>8}", file=out)
    kept_loss, kept_accuracy, kept_weights = np.inf, 0.0, weights.copy()
    for step in range(args.steps + 1):
        np.matmul(x, weights, out=logits)
        accuracy = float(np.mean(logits.argmax(axis=1) == y))
        # The gradient overwrites the logits: no allocation per step.
        loss, grad = cross_entropy_and_grad(logits, y, n_threads=args.threads, inplace=True)
        if adaptive and loss > kept_loss:      # overshot: undo, take a shorter step
            weights[...] = kept_weights
            step_size *= 0.5
        else:
            kept_loss, kept_accuracy = loss, accuracy
            if adaptive:
                kept_weights[...] = weights
                step_size *= 1.25
            weights -= step_size * (x.T @ grad)
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"{step:>6}  {float(kept_loss):>10.5f}  {kept_accuracy:>8.3f}", file=out)
    return float(kept_loss)


def compare_speed(args, out):
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(args.seed)
    logits = rng.standard_normal((args.samples, args.classes)).astype(dtype)
    target = rng.integers(0, args.classes, args.samples)
    grad = np.empty_like(logits)
    ours = call_times(lambda: cross_entropy_and_grad(logits, target, n_threads=args.threads,
                                                     out=grad), args.repeats)
    theirs = call_times(lambda: numpy_loss_and_grad(logits, target), args.repeats)
    loss_ours, grad_ours = cross_entropy_and_grad(logits, target, n_threads=args.threads)
    loss_exact, grad_exact = numpy_loss_and_grad(logits.astype(np.float64), target)
    # the threads the kernel runs: the shim's own rule, and one without OpenMP
    threads = 1 if build_config()["openmp"] == "none" else _chunking(
        args.samples, args.classes, _resolve_n_threads(args.threads))[2]
    print(f"\nloss + gradient of a {args.samples} x {args.classes} {dtype} batch, "
          f"{threads} thread{'s' if threads > 1 else ''}, {dispatch_target()} kernels "
          f"({args.repeats} calls each):", file=out)
    print(f"{'implementation':<18} {'median ms':>10} {'min-max ms':>17} {'speed-up':>9}", file=out)
    for name, times in (("numpy (textbook)", theirs), ("crossentropy", ours)):
        ms = 1e3 * times
        spread = f"{ms.min():.3f}-{ms.max():.3f}"
        print(f"{name:<18} {np.median(ms):>10.3f} {spread:>17} "
              f"{np.median(theirs) / np.median(times):>8.1f}x", file=out)
    scale = float(np.abs(grad_exact).max())
    print(f"error against float64: loss {abs(float(loss_ours) - loss_exact) / abs(loss_exact):.1e} "
          f"relative, gradient {np.abs(grad_ours - grad_exact).max() / scale:.1e} of its largest "
          f"entry", file=out)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m crossentropy",
        description="Train a softmax classifier with crossentropy.cross_entropy_and_grad on "
                    "generated data, print the loss falling, and time a step against NumPy.")
    parser.add_argument("--samples", type=int, default=20000, help="rows (default: 20000)")
    parser.add_argument("--features", type=int, default=64, help="input features (default: 64)")
    parser.add_argument("--classes", type=int, default=1000, help="classes (default: 1000)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="floating type (default: float32)")
    parser.add_argument("--steps", type=int, default=50, help="gradient steps (default: 50)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="step size (default: 1/L, from the loss's smoothness bound)")
    parser.add_argument("--threads", type=int, default=None,
                        help="n_threads for the kernel (default: automatic)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timing repeats (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--bench", action="store_true",
                        help="run the full benchmark instead (against torch eager and "
                             "compiled, JAX, scikit-learn, NumPy and a copy, each in its own "
                             "process; those not installed are skipped)")
    parser.add_argument("--quick", action="store_true",
                        help="with --bench: smaller shapes, fewer repeats")
    args = parser.parse_args(argv)
    if args.quick and not args.bench:
        parser.error("--quick goes with --bench")
    for name in ("samples", "features", "classes", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.threads == 0:
        parser.error("--threads must not be 0")
    return args


def main(argv=None, out=sys.stdout):
    args = parse_args(argv)
    if args.bench:
        from . import _benchmark
        bench_argv = ["--quick"] if args.quick else []
        if args.threads is not None:
            bench_argv += ["--threads", str(args.threads)]
        return _benchmark.main(bench_argv)
    train(args, out)
    compare_speed(args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
