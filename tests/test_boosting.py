"""crossentropy.xgboost and crossentropy.lightgbm: the custom objectives give
the libraries' own multiclass objectives, to the margins after tens of
boosting rounds, and the conventions of their gradients and Hessians."""

import subprocess
import sys

import numpy as np
import pytest

from crossentropy.lightgbm import multiclass_objective
from crossentropy.xgboost import softprob_objective

import reference as ref

ROUNDS = 30


def classification_data(rng, n=2000, d=10, k=4):
    """Features, labels from a noisy linear model, and sample weights."""
    x = rng.standard_normal((n, d))
    scores = x @ rng.standard_normal((d, k)) + rng.gumbel(size=(n, k))
    return x, np.argmax(scores, axis=1).astype(np.float64), rng.random(n) + 0.5


@pytest.mark.parametrize("k", [2, 4, 7])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_xgboost_margins_are_multi_softprobs(rng, k, weighted):
    xgb = pytest.importorskip("xgboost")
    x, y, w = classification_data(rng, k=k)
    dtrain = xgb.DMatrix(x, label=y, weight=w if weighted else None)
    # (base_score: the built-in objective would otherwise start from an
    # intercept it estimates, a custom objective from base_score)
    params = {"num_class": k, "max_depth": 4, "eta": 0.3, "tree_method": "hist",
              "nthread": 1, "base_score": 0.0}
    builtin = xgb.train(dict(params, objective="multi:softprob"), dtrain, ROUNDS)
    ours = xgb.train(dict(params, disable_default_eval_metric=True), dtrain, ROUNDS,
                     obj=softprob_objective)
    expected = builtin.predict(dtrain, output_margin=True)
    got = ours.predict(dtrain, output_margin=True)
    assert got.shape == (len(y), k)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [2, 4, 7])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_lightgbm_scores_are_multiclasss(rng, k, weighted):
    lgb = pytest.importorskip("lightgbm")
    x, y, w = classification_data(rng, k=k)
    params = {"num_class": k, "num_leaves": 15, "learning_rate": 0.3, "verbose": -1,
              "num_threads": 1, "deterministic": True}

    def data():
        return lgb.Dataset(x, label=y, weight=w if weighted else None)

    # (boost_from_average: the built-in objective would otherwise start from
    # the classes' log frequencies, a custom objective from 0)
    builtin = lgb.train(dict(params, objective="multiclass", boost_from_average=False), data(),
                        ROUNDS)
    ours = lgb.train(dict(params, objective=multiclass_objective), data(), ROUNDS)
    np.testing.assert_allclose(ours.predict(x, raw_score=True),
                               builtin.predict(x, raw_score=True), rtol=0, atol=1e-5)


class _Data:
    """The part of a DMatrix or Dataset that the objectives read."""

    def __init__(self, label, weight):
        self.label, self.weight = label, weight

    def get_label(self):
        return self.label

    def get_weight(self):
        return self.weight


def expected_gradients(preds, labels, weights):
    p = ref.softmax(preds)
    onehot = np.eye(preds.shape[1])[labels.astype(int)]
    w = np.ones(len(labels)) if weights is None or len(weights) == 0 else weights
    return (p - onehot) * w[:, None], p * (1 - p) * w[:, None]


@pytest.mark.parametrize("weights", [None, "empty", "given"])
def test_the_libraries_conventions(rng, weights):
    preds = rng.standard_normal((50, 5)) * 3
    preds[0] = [60.0, -60.0, 0.0, 0.0, 0.0]          # a Hessian below XGBoost's floor
    labels = rng.integers(0, 5, 50).astype(np.float32)
    w = {"None": None, "empty": np.zeros(0, np.float32),
         "given": rng.random(50).astype(np.float32)}[str(weights)]
    grad_ref, hess_ref = expected_gradients(preds, labels, w)
    grad, hess = softprob_objective(preds.astype(np.float32), _Data(labels, w))
    assert grad.dtype == hess.dtype == np.float32
    np.testing.assert_allclose(grad, grad_ref, rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(hess, np.maximum(2 * hess_ref, 1e-16), rtol=2e-6, atol=1e-30)
    assert hess[0, 1] == np.float32(1e-16)
    grad, hess = multiclass_objective(preds, _Data(labels.astype(np.float64), w))
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hess, 5 / 4 * hess_ref, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("preds, labels, match", [
    (np.zeros(6), np.zeros(6), r"\(samples, classes\) margins .* set num_class"),
    (np.zeros((6, 3)), np.zeros(5), "one label per sample"),
    (np.zeros((3, 3)), np.array([0.0, 1.5, 2.0]), r"label 1\.5 of sample 1 is not"),
    (np.zeros((3, 3)), np.array([0.0, 3.0, 2.0]), r"in \[0, 3\): label 3\.0 of sample 1"),
    (np.zeros((3, 3)), np.array([0.0, -1.0, 2.0]), "label -1.0 of sample 1"),
    (np.zeros((3, 3)), np.array([0.0, 1.0, np.nan]), "label nan of sample 2"),
    (np.zeros((3, 3)), np.array([np.inf, 1.0, 0.0]), "label inf of sample 0"),
], ids=["flat", "count", "fraction", "too-large", "negative", "nan", "inf"])
@pytest.mark.parametrize("objective", [softprob_objective, multiclass_objective],
                         ids=["xgboost", "lightgbm"])
def test_bad_labels_and_margins_are_refused(objective, preds, labels, match):
    with pytest.raises(ValueError, match=match):
        objective(preds, _Data(labels, None))


def test_the_adapters_import_neither_library():
    code = ("import sys, crossentropy.xgboost, crossentropy.lightgbm; "
            "assert not {'xgboost', 'lightgbm'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
