"""Softmax cross-entropy: the training loss, from logits, with a numerically stable log-softmax.

For logits ``z`` (N, K) and integer labels ``t`` (N,)::

    log_softmax(z)[n, k] = (z[n, k] - max_k z[n]) - log( sum_k exp(z[n, k] - max_k z[n]) )
    loss                 = -(1/N) sum_n log_softmax(z)[n, t[n]]
    d loss / d z[n, k]   = (softmax(z)[n, k] - [k == t[n]]) / N

Subtracting the row maximum first keeps every ``exp`` in (0, 1], so nothing overflows and the
largest term is exactly 1 (the log of the sum is then at least 0: no catastrophic
cancellation).  This is ONNX ``SoftmaxCrossEntropyLoss`` with ``reduction="mean"`` and no
weights or ignore index.
"""

from __future__ import annotations

import numpy as np

from ..ops.checks import require_float

__all__ = ["log_softmax", "softmax_cross_entropy", "softmax_cross_entropy_backward"]


def _check(op: str, logits: np.ndarray, labels: np.ndarray) -> None:
    require_float(op, logits=logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"{op}: logits must be a non-empty 2-D array (N, classes), got shape {logits.shape}")
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(f"{op}: labels must be {logits.shape[0]} integers (one per row of the logits), "
                         f"got {labels.dtype} of shape {labels.shape}")
    k = logits.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"{op}: labels must lie in [0, {k}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    if not np.isfinite(logits).all():
        raise ValueError(f"{op}: logits hold {int((~np.isfinite(logits)).sum())} NaN/Inf value(s)")


def log_softmax(z: np.ndarray) -> np.ndarray:
    """``(z - max) - log(sum(exp(z - max)))`` along the last axis, in ``z``'s dtype."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits)`` (a Python float).

    Numeric decisions: log-softmax in the logits' dtype, then the mean of the picked entries
    as a pairwise sum in that dtype and one division.
    """
    _check("softmax cross-entropy", logits, labels)
    picked = log_softmax(logits)[np.arange(logits.shape[0]), np.asarray(labels)]
    return float(-picked.sum() / logits.dtype.type(logits.shape[0]))


def softmax_cross_entropy_backward(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(softmax(logits) - onehot(labels)) / N``, with ``softmax = exp(log_softmax)``, in the
    logits' dtype."""
    _check("softmax cross-entropy backward", logits, labels)
    p = np.exp(log_softmax(logits))
    p[np.arange(logits.shape[0]), np.asarray(labels)] -= logits.dtype.type(1)
    return p / logits.dtype.type(logits.shape[0])
