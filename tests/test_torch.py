"""crossentropy.torch: the drop-ins for F.cross_entropy and F.linear_cross_entropy,
their autograd (gradcheck, random upstream gradients), torch.compile without
graph breaks, torch.library.opcheck, the modules, a training loop, and errors.
Runs where torch is installed (.ci/run installs the CPU build)."""

import importlib.util
import itertools
import subprocess
import sys

import numpy as np
import pytest

from conftest import random_case

torch = pytest.importorskip("torch")
F = torch.nn.functional
ct = pytest.importorskip("crossentropy.torch")

SHAPES = [(7,), (9, 5), (4, 6, 3), (2, 5, 3, 2), (5, 300)]
# (inductor's own use of torch.jit, on first compiling)
INDUCTORS_OWN_WARNING = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def as_torch(logits, target, kwargs, requires_grad=True):
    z = torch.tensor(logits, requires_grad=requires_grad)
    t = torch.tensor(target if target.dtype.kind == "f" else target.astype(np.int64))
    options = {k: torch.tensor(v, dtype=z.dtype) for k, v in kwargs.items()}
    return z, t, options


def upstream(loss, rng):
    """A random, non-uniform upstream gradient of the loss's shape."""
    return torch.tensor(rng.standard_normal(loss.shape) * 2, dtype=loss.dtype)


def grad_of(f, inputs, g):
    loss = f()
    return loss.detach(), torch.autograd.grad(loss, inputs, g)


# --- cross_entropy ------------------------------------------------------------------

GRID = [case for case in itertools.product(
    [torch.float32, torch.float64], ["mean", "sum", "none"], [False, True], [False, True],
    [0.0, 0.2], [False, True], range(len(SHAPES)))
    if not (case[3] and case[5])]


def grid_id(case):
    dtype, reduction, weighted, ignore, eps, probabilities, shape = case
    flags = [n for n, on in (("weight", weighted), ("ignore", ignore), (f"smooth{eps}", eps),
                             ("probs", probabilities)) if on]
    return "-".join([str(dtype)[6:], reduction, "x".join(map(str, SHAPES[shape])), *flags])


@pytest.mark.parametrize("seed, case", list(enumerate(GRID)), ids=[grid_id(c) for c in GRID])
def test_same_loss_and_gradient_as_torch_for_random_upstream_gradients(seed, case):
    dtype, reduction, weighted, ignore, eps, probabilities, shape = case
    rng = np.random.default_rng(seed)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    axis = 0 if len(SHAPES[shape]) == 1 else 1
    logits, target, kwargs = random_case(rng, SHAPES[shape], axis, dtype=np_dtype,
                                         probabilities=probabilities, ignore=ignore,
                                         weighted=weighted)
    z, t, options = as_torch(logits, target, kwargs)
    expected = F.cross_entropy(z, t, reduction=reduction, label_smoothing=eps, **options)
    g = upstream(expected, rng)
    expected_grad, = torch.autograd.grad(expected, z, g)
    loss, (grad,) = grad_of(lambda: ct.cross_entropy(z, t, reduction=reduction,
                                                     label_smoothing=eps, **options), z, g)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(loss, expected.detach(), **tol)
    torch.testing.assert_close(grad, expected_grad, **tol)


OPTIONS = {
    "plain": {}, "weight": {"weighted": True}, "ignore": {"ignore": True},
    "smoothing": {"label_smoothing": 0.3}, "probabilities": {"probabilities": True},
    "z_loss": {"z_loss": 0.05}, "softcap": {"softcap": 1.5},
    "sample_weight": {"sample_weighted": True},
    "everything": {"weighted": True, "ignore": True, "label_smoothing": 0.2, "z_loss": 0.01,
                   "softcap": 2.0, "sample_weighted": True},
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2)], ids=["2d", "k-dim"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_gradcheck_in_float64(name, shape, reduction):
    option = dict(OPTIONS[name])
    case = {k: option.pop(k) for k in ("weighted", "ignore", "probabilities", "sample_weighted")
            if k in option}
    logits, target, kwargs = random_case(np.random.default_rng(1), shape, 1, **case)
    z, t, tensors = as_torch(logits, target, kwargs)
    assert torch.autograd.gradcheck(
        lambda x: ct.cross_entropy(x, t, reduction=reduction, allow_retain_graph=True,
                                   **tensors, **option), (z,))


def test_softcap_and_z_loss_equal_torch_composing_them():
    rng = np.random.default_rng(5)
    logits, target, kwargs = random_case(rng, (8, 6, 3), 1, ignore=True, weighted=True)
    z, t, options = as_torch(logits, target, kwargs)
    capped = 2.0 * torch.tanh(z / 2.0)
    kept = t != -100
    row_weight = torch.where(kept, options["weight"][torch.where(kept, t, 0)], 0.0)
    lse = torch.logsumexp(capped, dim=1)
    expected = (F.cross_entropy(capped, t, reduction="none", **options)
                + 0.1 * row_weight * lse**2)
    g = upstream(expected, rng)
    expected_grad, = torch.autograd.grad(expected, z, g)
    loss, (grad,) = grad_of(lambda: ct.cross_entropy(z, t, reduction="none", z_loss=0.1,
                                                     softcap=2.0, **options), z, g)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-13)


def test_any_strides_give_the_same_result():
    rng = np.random.default_rng(2)
    base = torch.tensor(rng.standard_normal((12, 40)), requires_grad=True)
    t = torch.tensor(rng.integers(0, 6, 5))
    views = (lambda b: b[:10:2, 3:9], lambda b: b.T[5:11, :5].T,
             lambda b: b[:5, :1].expand(5, 6))
    for view in views:
        z = view(base)
        grads = [torch.autograd.grad(f(z, t, reduction="sum"), base)[0]
                 for f in (ct.cross_entropy, F.cross_entropy)]
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def test_inference_computes_no_gradient():
    z = torch.randn(4, 5)
    t = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        loss = ct.cross_entropy(z.requires_grad_(), t)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, F.cross_entropy(z.detach(), t))


def test_second_backward_raises_unless_allowed():
    z = torch.randn(4, 5, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    loss = ct.cross_entropy(z, t)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="allow_retain_graph=True"):
        loss.backward()
    z.grad = None
    loss = ct.cross_entropy(z, t, allow_retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(z.grad, 2 * torch.autograd.grad(F.cross_entropy(z, t), z)[0])


HALVES = [pytest.param(torch.bfloat16, id="bfloat16",
                       marks=pytest.mark.skipif(importlib.util.find_spec("ml_dtypes") is None,
                                                reason="needs ml_dtypes")),
          pytest.param(torch.float16, id="float16")]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"probabilities": True},
                                     {"weighted": True, "ignore": True}],
                         ids=["plain", "smoothing", "probs", "weight-ignore"])
@pytest.mark.parametrize("shape", [(64, 1000), (8, 30, 5)], ids=["2d", "k-dim"])
@pytest.mark.parametrize("dtype", HALVES)
def test_half_precision_as_accurate_as_torchs_own(dtype, shape, options, reduction):
    # both against float64 on the same (rounded) values: ours within a few of
    # the dtype's rounding errors, and never far behind torch's
    rng = np.random.default_rng(11)
    case = {k: v for k, v in options.items() if k != "label_smoothing"}
    logits, target, kwargs = random_case(rng, shape, 1, dtype=np.float32, **case)
    eps = options.get("label_smoothing", 0.0)
    z = torch.tensor(logits).to(dtype).requires_grad_()
    t = torch.tensor(target if target.dtype.kind == "f" else target.astype(np.int64))
    t = t.to(dtype) if t.is_floating_point() else t
    weight = {k: torch.tensor(v, dtype=dtype) for k, v in kwargs.items()}
    results = []
    for f in (ct.cross_entropy, F.cross_entropy):
        loss = f(z, t, reduction=reduction, label_smoothing=eps, **weight)
        g = torch.tensor(rng.standard_normal(loss.shape)).to(dtype)
        results.append((loss.double(), torch.autograd.grad(loss, z, g)[0].double(), g))
    z64 = z.detach().double().requires_grad_()
    t64 = t.double() if t.is_floating_point() else t
    reference = F.cross_entropy(z64, t64, reduction=reduction, label_smoothing=eps,
                                **{k: v.double() for k, v in weight.items()})
    rounding = 2.0 ** (-8 if dtype == torch.bfloat16 else -11)
    (loss, grad, g), (torch_loss, torch_grad, _) = results
    assert loss.dtype == grad.dtype == torch.float64 and grad.shape == z.shape
    expected_grad, = torch.autograd.grad(reference, z64, g.double())
    for got, theirs, want in ((loss, torch_loss, reference.detach()),
                              (grad, torch_grad, expected_grad)):
        scale = want.abs().max().item()
        error = (got - want).abs().max().item()
        assert error <= 4 * rounding * scale + 1e-7, (error, scale)
        torch_error = (theirs - want).abs().max().item()
        assert error <= 2 * torch_error + rounding * scale or not np.isfinite(torch_error)


@INDUCTORS_OWN_WARNING
@pytest.mark.parametrize("dtype", HALVES)
def test_half_precision_results_keep_the_dtype_and_compile(dtype):
    z = torch.randn(16, 40).to(dtype).requires_grad_()
    t = torch.randint(0, 40, (16,))
    f = torch.compile(lambda z, t: ct.cross_entropy(z, t, softcap=5.0), fullgraph=True)
    loss = f(z, t)
    loss.backward()
    assert loss.dtype == z.grad.dtype == dtype
    eager = z.grad.clone()
    z.grad = None
    ct.cross_entropy(z, t, softcap=5.0).backward()
    assert torch.equal(z.grad, eager)


# --- linear_cross_entropy -----------------------------------------------------------

LINEAR_GRID = list(itertools.product([torch.float32, torch.float64], ["mean", "sum", "none"],
                                     [False, True], [False, True], [0.0, 0.2]))


@pytest.mark.parametrize("dtype, reduction, bias, weighted, eps", LINEAR_GRID,
                         ids=lambda v: str(v)[6:] if isinstance(v, torch.dtype) else None)
def test_linear_same_as_torch_for_random_upstream_gradients(dtype, reduction, bias, weighted,
                                                            eps):
    rng = np.random.default_rng(7)
    h = torch.tensor(rng.standard_normal((33, 8)), dtype=dtype, requires_grad=True)
    w = torch.tensor(rng.standard_normal((70, 8)) * 0.5, dtype=dtype, requires_grad=True)
    b = torch.tensor(rng.standard_normal(70), dtype=dtype, requires_grad=True) if bias else None
    t = torch.tensor(rng.integers(0, 70, 33))
    t[::4] = -100
    weight = torch.tensor(rng.random(70) + 0.5, dtype=dtype) if weighted else None
    kwargs = dict(linear_bias=b, weight=weight, reduction=reduction, label_smoothing=eps)
    inputs = (h, w) + ((b,) if bias else ())
    expected = F.linear_cross_entropy(h, w, t, **kwargs)
    g = upstream(expected, rng)
    expected_grads = torch.autograd.grad(expected, inputs, g)
    loss, grads = grad_of(lambda: ct.linear_cross_entropy(h, w, t, chunk_size=10, **kwargs),
                          inputs, g)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, expected.detach(), **tol)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("dtype", HALVES)
def test_linear_half_precision_as_accurate_as_torchs_own(dtype, reduction):
    rng = np.random.default_rng(12)
    h = torch.tensor(rng.standard_normal((40, 16))).to(dtype).requires_grad_()
    w = torch.tensor(rng.standard_normal((300, 16)) * 0.3).to(dtype).requires_grad_()
    b = torch.tensor(rng.standard_normal(300)).to(dtype).requires_grad_()
    t = torch.tensor(rng.integers(0, 300, 40))
    t[::6] = -100
    results = []
    for f in (ct.linear_cross_entropy, F.linear_cross_entropy):
        loss = f(h, w, t, linear_bias=b, reduction=reduction)
        g = torch.tensor(rng.standard_normal(loss.shape)).to(dtype)
        results.append((loss, torch.autograd.grad(loss, (h, w, b), g), g))
    assert all(x.dtype == dtype for x in (results[0][0], *results[0][1]))
    leaves = [x.detach().double().requires_grad_() for x in (h, w, b)]
    reference = F.cross_entropy(leaves[0] @ leaves[1].T + leaves[2], t, reduction=reduction)
    expected = torch.autograd.grad(reference, leaves, results[0][2].double())
    rounding = 2.0 ** (-8 if dtype == torch.bfloat16 else -11)
    (loss, grads, _), (torch_loss, torch_grads, _) = results
    for got, theirs, want in zip((loss, *grads), (torch_loss, *torch_grads),
                                 (reference.detach(), *expected)):
        scale = want.abs().max().item()
        error = (got.double() - want).abs().max().item()
        torch_error = (theirs.double() - want).abs().max().item()
        assert error <= 2 * torch_error + 4 * rounding * scale, (error, torch_error, scale)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["plain", "smoothing", "z_loss", "softcap", "everything"])
def test_linear_gradcheck_in_float64(name, reduction):
    rng = np.random.default_rng(3)
    option = {k: v for k, v in OPTIONS[name].items()
              if k in ("label_smoothing", "z_loss", "softcap")}
    h = torch.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((6, 4)), requires_grad=True)
    b = torch.tensor(rng.standard_normal(6), requires_grad=True)
    t = torch.tensor(rng.integers(0, 6, (2, 3)))
    t[0, 1] = -100
    weight = torch.tensor(rng.random(6) + 0.5) if name == "everything" else None
    assert torch.autograd.gradcheck(
        lambda h, w, b: ct.linear_cross_entropy(h, w, t, linear_bias=b, weight=weight,
                                                reduction=reduction, chunk_size=4,
                                                allow_retain_graph=True, **option), (h, w, b))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_gradients_computed_only_where_asked(reduction, monkeypatch):
    from crossentropy import _linear
    calls = []
    real = _linear._linear
    monkeypatch.setattr(_linear, "_linear",
                        lambda *a, **k: calls.append(k.get("wanted")) or real(*a, **k))
    h = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(4, 3)                       # frozen
    b = torch.randn(4, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, 0])
    ct.linear_cross_entropy(h, w, t, linear_bias=b, reduction=reduction).sum().backward()
    assert h.grad is not None and w.grad is None and b.grad is not None
    assert (True, False, True) in calls
    expected = torch.autograd.grad(F.cross_entropy(h @ w.T + b, t, reduction=reduction).sum(),
                                   (h, b))
    torch.testing.assert_close(h.grad, expected[0])
    torch.testing.assert_close(b.grad, expected[1])


# --- torch.compile and opcheck -------------------------------------------------------

def test_opcheck_passes_for_every_op():
    h, w, b = (torch.randn(6, 4, requires_grad=True), torch.randn(7, 4, requires_grad=True),
               torch.randn(7, requires_grad=True))
    z = torch.randn(6, 7, 2, requires_grad=True)
    t, t2 = torch.randint(0, 7, (6,)), torch.randint(0, 7, (6, 2))
    ops = torch.ops.crossentropy
    cases = []
    for retain in (False, True):           # (the gradient scaled in place, or copied)
        cases += [
            (ops.cross_entropy.default,
             (z, t2, None, None, -100, "mean", 0.1, 0.0, None, 0, True, retain)),
            (ops.cross_entropy.default,
             (z, t2, None, None, -100, "none", 0.0, 0.01, 2.0, 0, True, retain)),
            (ops.linear_cross_entropy.default,
             (h, w, t, b, None, -100, "sum", 0.0, 0.0, None, 4, 0, True, True, True, retain)),
            (ops.linear_cross_entropy.default,
             (h, w, t, b, None, -100, "mean", 0.0, 0.0, None, 4, 0, False, True, False, retain)),
        ]
    cases += [
        (ops.linear_cross_entropy_none.default, (h, w, t, b, None, -100, 0.0, 0.0, None, 4, 0)),
        (ops.linear_cross_entropy_none_backward.default,
         (torch.randn(6, dtype=torch.float64), h.detach(), w.detach(), t, b.detach(), None,
          -100, 0.0, 0.0, None, 4, 0, True, False, True)),
    ]
    for op, args in cases:
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, (op, args, result)


def test_backward_traced_outside_dynamo():
    from functorch.compile import aot_function, nop
    z = torch.randn(5, 6, requires_grad=True)
    t = torch.randint(0, 6, (5,))
    for reduction in ("mean", "none"):
        f = aot_function(lambda z, t: ct.cross_entropy(z, t, reduction=reduction).sum(), nop)
        grad, = torch.autograd.grad(f(z, t), z)
        expected, = torch.autograd.grad(F.cross_entropy(z, t, reduction=reduction).sum(), z)
        torch.testing.assert_close(grad, expected)


def test_no_double_backward():
    z = torch.randn(4, 5, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(ct.cross_entropy(z, t), z, create_graph=True)
    w = torch.randn(5, 3, requires_grad=True)
    h = torch.randn(4, 3)
    for reduction in ("mean", "none"):
        with pytest.raises(RuntimeError, match="double backward"):
            torch.autograd.grad(ct.linear_cross_entropy(h, w, t, reduction=reduction).sum(), w,
                                create_graph=True)


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh())
        self.head = ct.LinearCrossEntropyLoss(16, 9, bias=True, z_loss=1e-3)

    def forward(self, x, t):
        h = self.body(x)
        return (self.head(h, t)
                + ct.cross_entropy(h[:, :9], t, reduction="none", softcap=3.0).mean())


@INDUCTORS_OWN_WARNING
def test_compiled_training_step_equals_eager_without_graph_breaks():
    torch.manual_seed(0)
    model = TinyModel()
    x, t = torch.randn(12, 4), torch.randint(0, 9, (12,))
    explanation = torch._dynamo.explain(model)(x, t)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(model, fullgraph=True)
    results = []
    for f in (model, compiled):
        model.zero_grad()
        loss = f(x, t)
        loss.backward()
        results.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-6)


def test_bigram_language_model_trains_as_with_torchs_loss():
    # a bigram model on text generated from a random Markov chain: the same
    # losses, step for step, with torch's loss and with ours
    rng = np.random.default_rng(0)
    vocab = 50
    transition = rng.dirichlet(np.full(vocab, 0.1), vocab)
    tokens = [0]
    for _ in range(2000):
        tokens.append(rng.choice(vocab, p=transition[tokens[-1]]))
    tokens = torch.tensor(tokens)
    histories = []
    for loss_fn in (F.linear_cross_entropy, ct.linear_cross_entropy):
        torch.manual_seed(1)
        embedding = torch.nn.Embedding(vocab, 16)
        out = torch.nn.Linear(16, vocab)
        params = list(embedding.parameters()) + list(out.parameters())
        optimiser = torch.optim.Adam(params, lr=3e-2)
        history = []
        for step in range(30):
            start = (step * 64) % (len(tokens) - 65)
            x, y = tokens[start:start + 64], tokens[start + 1:start + 65]
            loss = loss_fn(embedding(x), out.weight, y, linear_bias=out.bias)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(loss.item())
        histories.append(history)
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-4)
    assert histories[1][-1] < histories[1][0] - 0.5            # it learned


# --- modules ------------------------------------------------------------------------

def test_cross_entropy_loss_module_as_torchs():
    weight = torch.rand(5) + 0.5
    ours = ct.CrossEntropyLoss(weight, ignore_index=1, label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(weight, ignore_index=1, label_smoothing=0.1)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    z, t = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 1])
    torch.testing.assert_close(ours(z, t), theirs(z, t))


def test_linear_cross_entropy_loss_module_as_torchs():
    torch.manual_seed(3)
    theirs = torch.nn.LinearCrossEntropyLoss(8, 20, bias=True, weight=torch.rand(20) + 0.5)
    ours = ct.LinearCrossEntropyLoss(8, 20, bias=True, weight=torch.rand(20) + 0.5)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    h, t = torch.randn(11, 8), torch.randint(0, 20, (11,))
    for module in (ours, theirs):
        module(h, t).backward()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="out_features"):
        ct.LinearCrossEntropyLoss(8, 20, out_features=(3,))


# --- errors -------------------------------------------------------------------------

def test_importing_crossentropy_does_not_import_torch():
    code = "import sys, crossentropy; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_are_torchs_kinds_and_name_the_problem():
    z = torch.randn(4, 5, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    cases = [
        (lambda: ct.cross_entropy(z, t, size_average=True), TypeError, "reduction="),
        (lambda: ct.cross_entropy(z, torch.tensor([0, 1, 2])), RuntimeError, "target"),
        (lambda: ct.cross_entropy(z, torch.tensor([0, 1, 2])), ValueError, "target"),
        (lambda: ct.cross_entropy(z, torch.tensor([0, 1, 2, 7])), IndexError, "7"),
        (lambda: ct.cross_entropy(z, t, weight=torch.ones(3)), RuntimeError, "weight"),
        (lambda: ct.cross_entropy(z, t, reduction="avg"), ValueError, "reduction"),
        (lambda: ct.cross_entropy(z, t, label_smoothing=1.5), RuntimeError, "label_smoothing"),
        (lambda: ct.cross_entropy(z.long(), t), TypeError, "float16, float32 or float64"),
        (lambda: ct.cross_entropy(torch.tensor(1.0), t), ValueError, "at least one dimension"),
        (lambda: ct.cross_entropy(z, t, softcap=-1.0), ValueError, "softcap"),
        (lambda: ct.cross_entropy(z, t, n_threads=0), ValueError, "n_threads"),
        (lambda: ct.cross_entropy(z, torch.rand(4, 5, requires_grad=True)), ValueError,
         "target.detach"),
        (lambda: ct.cross_entropy(torch.randn(4, 5, device="meta"), t), RuntimeError,
         "torch.nn.functional.cross_entropy"),
        (lambda: ct.cross_entropy(z.numpy(force=True), t), TypeError, "torch.Tensor"),
        (lambda: ct.linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 2), t), RuntimeError,
         "features"),
        (lambda: ct.linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 3).double(), t),
         RuntimeError, "dtype"),
        (lambda: ct.linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 3), t, chunk_size=0),
         ValueError, "chunk_size"),
        (lambda: ct.linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 3),
                                         torch.tensor([0, 1, 2, 9])), IndexError, "9"),
        (lambda: ct.linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 3), torch.rand(4, 5)),
         TypeError, "class indices"),
        (lambda: ct.linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 3), t,
                                         linear_bias=torch.randn(4)), ValueError, "linear_bias"),
    ]
    cases += [
        (lambda: ct.cross_entropy(z, t, reduction=None), ValueError, "reduction"),
        (lambda: ct.cross_entropy(z, t, ignore_index=2**70), ValueError, "64 bits"),
        (lambda: ct.cross_entropy(z, t, ignore_index=1.5), TypeError, "ignore_index"),
        (lambda: ct.cross_entropy(z, t, softcap="x"), TypeError, "softcap"),
        (lambda: ct.cross_entropy(z, t, label_smoothing="0.1"), TypeError, "label_smoothing"),
        (lambda: ct.linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 3), t,
                                         chunk_size=2.0), TypeError, "chunk_size"),
    ]
    for call, kind, words in cases:
        with pytest.raises(kind, match=words):
            call()


def test_numpy_integers_and_grad_free_weights_are_taken():
    z = torch.randn(4, 5, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    weight = torch.rand(5, requires_grad=True)
    with torch.no_grad():                       # (no gradient to refuse for weight)
        torch.testing.assert_close(ct.cross_entropy(z, t, weight=weight),
                                   F.cross_entropy(z, t, weight=weight))
    h, w = torch.randn(4, 3), torch.randn(5, 3)
    torch.testing.assert_close(
        ct.linear_cross_entropy(h, w, t, chunk_size=np.int64(2), ignore_index=np.int64(-1)),
        F.linear_cross_entropy(h, w, t))


def test_docstring_examples():
    import doctest
    result = doctest.testmod(ct, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
