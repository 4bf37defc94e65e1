"""Checked by mypy in CI (not run by pytest): the stubs type real usage."""

import numpy as np
import numpy.typing as npt

import crossentropy as ce
from crossentropy import special

logits: npt.NDArray[np.float32] = np.zeros((4, 3), dtype=np.float32)
target = np.array([0, 1, 2, 1])

mean_loss: np.float16 | np.float32 | np.float64 = ce.cross_entropy(logits, target)
per_row: npt.NDArray[np.floating] = ce.cross_entropy(logits, target, reduction="none")
loss, grad = ce.cross_entropy_and_grad(logits, target, weight=[1.0, 2.0, 1.0], inplace=True)
scaled: float = float(loss) * 2.0
rows, grad2 = ce.cross_entropy_and_grad(logits, target, reduction="none", out=grad)
probabilities = ce.softmax(logits, axis=-1)
lse = ce.logsumexp(logits, keepdims=True)
version: str = ce.__version__
capped, lse_rows = ce.cross_entropy(logits, target, softcap=30.0, z_loss=1e-4, return_lse=True)
h = np.zeros((4, 8), dtype=np.float32)
w = np.zeros((3, 8), dtype=np.float32)
lin: np.float32 | np.float64 = ce.linear_cross_entropy(h, w, target, chunk_size=2)
lin_loss, grad_h, grad_w, grad_b = ce.linear_cross_entropy_and_grad(h, w, target)
lin_rows, lin_gh, lin_gw, lin_gb, lin_lse = ce.linear_cross_entropy_and_grad(
    h, w, target, reduction="none", return_lse=True)
weighted, sign = special.logsumexp(logits, 1, b=logits, return_sign=True)
over_all = special.logsumexp([1, 2, 3])
normalised = special.softmax(logits, (0, 1))
log_normalised = special.log_softmax(logits, None, out=np.empty_like(logits))
gh_loss, gh_grad, gh_hess = ce.cross_entropy_grad_hess(logits, target, out=(None, grad))
gh_rows, _, _, gh_lse = ce.cross_entropy_grad_hess(logits, target, reduction="none",
                                                   return_lse=True)
product: npt.NDArray[np.floating] = ce.cross_entropy_hvp(logits, target, np.ones((4, 3)))
parts: npt.NDArray[np.float64] = ce.combine_partials([
    ce.cross_entropy_partials(logits[:, :1], target, class_start=0, n_classes=3),
    ce.cross_entropy_partials(logits[:, 1:], target, class_start=1, n_classes=3)])
sharded_loss = ce.cross_entropy_from_partials(parts, target, n_classes=3, dtype=np.float32)
sharded_rows, sharded_lse = ce.cross_entropy_from_partials(parts, target, n_classes=3,
                                                           reduction="none", return_lse=True)
slice_grad: npt.NDArray[np.floating] = ce.cross_entropy_shard_grad(
    logits[:, 1:], target, parts, class_start=1, n_classes=3, inplace=False)
