"""The README's multinomial logistic regression: scipy.optimize.minimize with
cross_entropy_and_grad (L-BFGS) or cross_entropy_hvp (Newton-CG) reaches
scikit-learn's LogisticRegression coefficients, for the same penalty."""

import os
import re

import numpy as np
import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def readme_solver():
    """fit_multinomial, from the README's code block that defines it."""
    with open(README, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    code = next(block for block in blocks if "def fit_multinomial" in block)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["fit_multinomial"]


@pytest.mark.parametrize("method", ["L-BFGS-B", "Newton-CG"])
@pytest.mark.parametrize("C", [0.05, 1.0])
def test_readme_solver_reaches_scikit_learns_coefficients(rng, method, C):
    pytest.importorskip("scipy")
    linear_model = pytest.importorskip("sklearn.linear_model")
    n, d, k = 600, 6, 4
    x = rng.standard_normal((n, d))
    y = np.argmax(x @ rng.standard_normal((d, k)) + rng.gumbel(size=(n, k)), axis=1)
    sk = linear_model.LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(x, y)
    coef, intercept = readme_solver()(x, y, k, C=C, method=method)
    np.testing.assert_allclose(coef, sk.coef_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(intercept, sk.intercept_, rtol=0, atol=1e-5)
