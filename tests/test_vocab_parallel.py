"""crossentropy.torch.vocab_parallel_cross_entropy on two real processes
(torch.multiprocessing spawn, the gloo backend on localhost): every rank's
loss and its slice's gradient against the single-process results, every
option; and the errors, raised on every rank (none left waiting)."""

import datetime
import pathlib
import socket

import numpy as np
import pytest

import crossentropy as ce

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():                                  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

WORLD = 2
# (name, logits' shape, options); the vocabulary is split unevenly
CASES = [
    ("plain", (50, 37), {}),
    ("ignore-weight-sample", (40, 37), dict(ignore=True, weight=True, sample_weight=True)),
    ("smoothing-weight", (40, 37), dict(weight=True, label_smoothing=0.2)),
    ("z-loss-softcap", (40, 37), dict(z_loss=0.05, softcap=3.0)),
    ("everything-sum", (30, 37), dict(ignore=True, weight=True, sample_weight=True,
                                      label_smoothing=0.1, z_loss=0.01, softcap=4.0,
                                      reduction="sum")),
    ("everything-none", (30, 37), dict(ignore=True, weight=True, sample_weight=True,
                                       label_smoothing=0.1, z_loss=0.01, softcap=4.0,
                                       reduction="none")),
    ("long-rows-float32", (8, 5000), dict(dtype="float32", label_smoothing=0.1)),
    ("class-dim-1", (6, 37, 4), dict(weight=True, ignore=True)),
    ("bfloat16", (20, 300), dict(dtype="bfloat16")),
]


def make_case(index, shape, options):
    rng = np.random.default_rng(100 + index)
    dtype = options.get("dtype", "float64")
    logits = rng.standard_normal(shape) * 3
    positions = shape[:1] + shape[2:]
    target = rng.integers(0, shape[1], positions)
    if options.get("ignore"):
        target[rng.random(positions) < 0.3] = -100
        target.flat[0] = 0
    kwargs = {k: options[k] for k in ("label_smoothing", "z_loss", "softcap", "reduction")
              if k in options}
    if options.get("weight"):
        kwargs["weight"] = rng.random(shape[1]) + 0.1
    if options.get("sample_weight"):
        kwargs["sample_weight"] = rng.random(positions) * 2
    upstream = rng.random(positions) + 0.5 if options.get("reduction") == "none" else 0.7
    return logits, target, kwargs, dtype, upstream


def tensor(a, dtype="float64"):
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(getattr(torch, dtype)) if t.is_floating_point() else t


def cuts(n_classes):
    return [0, n_classes // 3, n_classes]


def _worker(rank, port, out):
    from crossentropy.torch import vocab_parallel_cross_entropy

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        for index, (name, shape, options) in enumerate(CASES):
            logits, target, kwargs, dtype, upstream = make_case(index, shape, options)
            a, b = cuts(shape[1])[rank:rank + 2]
            local = tensor(logits[:, a:b], dtype).requires_grad_()
            tensors = {k: tensor(v) if isinstance(v, np.ndarray) else v
                       for k, v in kwargs.items()}
            loss = vocab_parallel_cross_entropy(local, tensor(target), vocab_start=a,
                                                **tensors)
            loss.backward(tensor(upstream).to(loss.dtype) if np.ndim(upstream) else
                          torch.tensor(upstream, dtype=loss.dtype))
            np.save(out / f"{name}-{rank}-loss.npy", loss.detach().double().numpy())
            np.save(out / f"{name}-{rank}-grad.npy", local.grad.double().numpy())
        # errors, each raised on both ranks
        logits, target, _, _, _ = make_case(0, (10, 37), {})
        a, b = cuts(37)[rank:rank + 2]
        errors = []
        for label, call in [
            ("overlap", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:, a:b]), tensor(target), vocab_start=a - rank)),
            ("too-small", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:, a:b]), tensor(target), vocab_start=a, vocab_size=36)),
            ("bad-target", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:, a:b]), tensor(np.r_[target[:-1], 37]), vocab_start=a)),
        ]:
            try:
                call()
                errors.append(f"{label}: no error")
            except (ValueError, IndexError) as error:
                errors.append(f"{label}: {type(error).__name__}: {error}")
        (out / f"errors-{rank}.txt").write_text("\n".join(errors))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab_parallel")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(port, out), nprocs=WORLD, join=True)
    return pathlib.Path(out)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_each_rank_gets_the_single_process_loss_and_its_gradient(results, index):
    from crossentropy.torch import cross_entropy

    name, shape, options = CASES[index]
    logits, target, kwargs, dtype, upstream = make_case(index, shape, options)
    whole = tensor(logits, dtype).requires_grad_()
    tensors = {k: tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    want = cross_entropy(whole, tensor(target), **tensors)
    want.backward(tensor(upstream).to(want.dtype) if np.ndim(upstream) else
                  torch.tensor(upstream, dtype=want.dtype))
    want_loss, want_grad = want.detach().double().numpy(), whole.grad.double().numpy()
    eps = 1e-13 if dtype == "float64" else float(torch.finfo(getattr(torch, dtype)).eps)
    bounds = cuts(shape[1])
    for rank in range(WORLD):
        loss = np.load(results / f"{name}-{rank}-loss.npy")
        grad = np.load(results / f"{name}-{rank}-grad.npy")
        np.testing.assert_allclose(loss, want_loss, rtol=2 * eps, atol=1e-15)
        part = want_grad[:, bounds[rank]:bounds[rank + 1]]
        np.testing.assert_allclose(grad, part, rtol=2 * eps,
                                   atol=2 * eps * np.abs(want_grad).max())
    # and the NumPy reference of the whole rows, in float64
    if dtype == "float64":
        np.testing.assert_allclose(want_loss, ce.cross_entropy(logits, target, axis=1, **kwargs),
                                   rtol=1e-13)


def test_errors_are_raised_on_every_rank(results):
    for rank in range(WORLD):
        errors = dict(line.split(": ", 1) for line in
                      (results / f"errors-{rank}.txt").read_text().splitlines())
        assert "do not tile" in errors["overlap"]
        assert errors["bad-target"].startswith("IndexError") and "37 classes" in errors["bad-target"]
    # the slice that does not fit is rank 1's own error; rank 0 is told
    assert "class_start" in (results / "errors-1.txt").read_text()
    assert "failed on rank(s) [1]" in (results / "errors-0.txt").read_text()


def test_without_a_process_group_it_says_so():
    from crossentropy.torch import InputError, vocab_parallel_cross_entropy

    with pytest.raises(InputError, match="init_process_group"):
        vocab_parallel_cross_entropy(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long),
                                     vocab_start=0)
    with pytest.raises(TypeError, match="class-index targets"):
        vocab_parallel_cross_entropy(torch.zeros(3, 4), torch.zeros(3, 4), vocab_start=0)
