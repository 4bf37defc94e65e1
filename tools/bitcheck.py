"""Every result of a build over a grid that reaches every kernel path, for
comparing two builds bit for bit (a change that must keep every bit: build
the commit before it and after it in place, save each, compare).

    python tools/bitcheck.py save SRC OUT.json    # SRC: a source tree built in place
    python tools/bitcheck.py compare A.json B.json

Each result is stored as a digest of its dtype, shape and bytes.

The grid: class counts from 1 to 300 000 on both sides of every path
boundary (short rows, the across-rows block, long rows, next-row fetch, runs,
rows shared by the threads), both dtypes, every option (class and sample
weights, ignored positions, label smoothing, probability targets, grad_scale,
every reduction), in place, out=, strided (Fortran order), K-dimensional
(class axis 1), one and two threads; and softmax, log_softmax, logsumexp.
"""

import hashlib
import json
import sys

import numpy as np

CLASSES = [1, 2, 3, 4, 5, 7, 8, 10, 16, 31, 33, 63, 64, 65, 100, 511, 512, 513, 1000,
           2047, 2049, 4100, 8191, 8192, 8193, 16384, 16385, 20000, 131071, 131072, 300000]


def rows_for(m):
    if m >= 131072:
        return [2, 65]            # shared by the threads, and row by row
    return [max(1, min(300, 2_000_000 // (m * 8)))]


def cases():
    for m in CLASSES:
        for n in rows_for(m):
            for dtype in (np.float32, np.float64):
                seed = m * 1000 + n * 10 + (dtype == np.float64)
                rng = np.random.default_rng(seed)
                z = (rng.standard_normal((n, m)) * 4).astype(dtype)
                if n > 2:
                    z[1, 0] = -np.inf
                    z[2, m // 2] += 80          # one row spanning the two-scale exp
                t = rng.integers(0, m, n)
                t[::7] = -100
                probs = rng.random((n, m)).astype(dtype)
                probs /= probs.sum(1, keepdims=True)
                w = rng.random(m) + 0.2
                sw = rng.random(n) * 2
                options = [
                    ("plain", t, {}),
                    ("weights", t, {"weight": w, "sample_weight": sw}),
                    ("smoothing", t, {"label_smoothing": 0.2, "weight": w}),
                    ("probabilities", probs, {"label_smoothing": 0.1}),
                    ("grad_scale", t, {"grad_scale": 3.5, "reduction": "sum"}),
                ]
                yield f"{m}x{n}/{np.dtype(dtype).name}", z, options


def compute(ce):
    """Every result over the grid, by name, as digests."""
    results = Results()
    for key, z, options in cases():
        for name, target, kwargs in options:
            for reduction in ("mean", "none") if "reduction" not in kwargs else (None,):
                kw = dict(kwargs, **({"reduction": reduction} if reduction else {}))
                tag = f"{key}/{name}/{kw.get('reduction')}"
                for threads in (1, 2):
                    loss, grad = ce.cross_entropy_and_grad(z, target, n_threads=threads, **kw)
                    results[f"{tag}/t{threads}/loss"] = np.asarray(loss)
                    results[f"{tag}/t{threads}/grad"] = grad
                loss_kw = {k: v for k, v in kw.items() if k != "grad_scale"}
                results[f"{tag}/lossonly"] = np.asarray(ce.cross_entropy(z, target, **loss_kw))
                buf = z.copy()
                ce.cross_entropy_and_grad(buf, target, inplace=True, **kw)
                results[f"{tag}/inplace"] = buf
                fz = np.asfortranarray(z)
                results[f"{tag}/fortran"] = ce.cross_entropy_and_grad(
                    fz, target if target.ndim == 1 else np.asfortranarray(target), **kw)[1]
        # K-dimensional: (n, m, 3) with the class axis 1
        k3 = np.repeat(z[:, :, None], 3, axis=2) * np.array([1, 0.5, -1], z.dtype)
        t3 = np.stack([options[0][1]] * 3, axis=1)
        loss, grad = ce.cross_entropy_and_grad(k3, t3, axis=1, reduction="none")
        results[f"{key}/kdim/loss"], results[f"{key}/kdim/grad"] = loss, grad
        for f in ("softmax", "log_softmax"):
            results[f"{key}/{f}"] = getattr(ce, f)(z)
            results[f"{key}/{f}/kdim"] = getattr(ce, f)(k3, axis=1)
        results[f"{key}/logsumexp"] = np.asarray(ce.logsumexp(z))
        results[f"{key}/logsumexp/t2"] = np.asarray(ce.logsumexp(z, n_threads=2))
    return results


class Results(dict):
    """A dict that keeps only digests (the grid's results take gigabytes)."""

    def __setitem__(self, key, value):
        super().__setitem__(key, digest(value))


def digest(a):
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def main():
    if sys.argv[1] == "save":
        sys.path.insert(0, sys.argv[2])
        import crossentropy as ce
        results = compute(ce)
        with open(sys.argv[3], "w") as f:
            json.dump(results, f, indent=0, sort_keys=True)
        print(f"{len(results)} results from {ce.__file__}")
    else:
        a, b = (json.load(open(p)) for p in sys.argv[2:4])
        assert sorted(a) == sorted(b), "different grids"
        bad = [k for k in a if a[k] != b[k]]
        print(f"{len(a)} results compared: {len(bad)} differ")
        for k in bad[:20]:
            print("  ", k)
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
