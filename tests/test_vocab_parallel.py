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
        # a slice of NaN: the whole rows' loss is NaN, on every rank
        logits, target, _, _, _ = make_case(0, (10, 37), {})
        a, b = cuts(37)[rank:rank + 2]
        nan_slice = logits[:, a:b] * (np.nan if rank == 1 else 1.0)
        np.save(out / f"nan-slice-{rank}.npy", vocab_parallel_cross_entropy(
            tensor(nan_slice), tensor(target), vocab_start=a).numpy())
        # errors: each raised on both ranks, none left waiting
        mine = rank == 1
        errors = []
        for label, call in [
            ("overlap", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:, a:b]), tensor(target), vocab_start=a - rank)),
            ("too-small", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:, a:b]), tensor(target), vocab_start=a, vocab_size=36)),
            ("bad-target", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:, a:b]), tensor(np.r_[target[:-1], 37]), vocab_start=a)),
            ("probabilities", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:, a:b]), tensor(logits[:, a:b]), vocab_start=a)),
            ("one-rank-bad-start", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:, a:b]), tensor(target), vocab_start=a + 0.5 if mine else a)),
            ("one-rank-not-a-tensor", lambda: vocab_parallel_cross_entropy(
                logits[:, a:b] if mine else tensor(logits[:, a:b]), tensor(target),
                vocab_start=a)),
            ("one-rank-fewer-rows", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:9 if mine else 10, a:b]), tensor(target[:9 if mine else 10]),
                vocab_start=a)),
            ("one-rank-other-targets", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:, a:b]), tensor((target + mine) % 37), vocab_start=a)),
            ("one-rank-rows-unlike-target", lambda: vocab_parallel_cross_entropy(
                tensor(logits[:9 if mine else 10, a:b]), tensor(target), vocab_start=a)),
        ]:
            try:
                call()
                errors.append(f"{label}: no error")
            except (ValueError, IndexError, TypeError) as error:
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


def test_a_slice_of_nan_makes_the_loss_nan_on_every_rank(results):
    for rank in range(WORLD):
        assert np.isnan(np.load(results / f"nan-slice-{rank}.npy"))


def test_errors_are_raised_on_every_rank(results):
    errors = [dict(line.split(": ", 1) for line in
                   (results / f"errors-{rank}.txt").read_text().splitlines())
              for rank in range(WORLD)]
    for mine in errors:
        assert "do not tile" in mine["overlap"]
        assert "make 37 classes, but vocab_size is 36" in mine["too-small"]
        assert mine["bad-target"].startswith("IndexError") and "37 classes" in mine["bad-target"]
        assert "different numbers of positions" in mine["one-rank-fewer-rows"]
        assert "different targets" in mine["one-rank-other-targets"]
        assert mine["probabilities"].startswith("InputTypeError")
        assert "class-index targets" in mine["probabilities"]
    # a rank's own failure is raised there, and the others are told
    assert "vocab_start must be an integer" in errors[1]["one-rank-bad-start"]
    assert "local_logits must be a torch.Tensor" in errors[1]["one-rank-not-a-tensor"]
    assert "target has shape" in errors[1]["one-rank-rows-unlike-target"]
    for label in ("one-rank-bad-start", "one-rank-not-a-tensor", "one-rank-rows-unlike-target"):
        assert "failed on rank(s) [1]" in errors[0][label]


def test_without_a_process_group_it_says_so():
    from crossentropy.torch import InputError, vocab_parallel_cross_entropy

    with pytest.raises(InputError, match="init_process_group"):
        vocab_parallel_cross_entropy(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long),
                                     vocab_start=0)
