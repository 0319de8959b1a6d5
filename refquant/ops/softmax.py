"""Softmax (ONNX opset 13: normalised along one axis) in float32."""

from __future__ import annotations

import numpy as np

from .checks import require_float32


def softmax(x: np.ndarray, *, axis: int = -1) -> np.ndarray:
    """ONNX Softmax (opset >= 13)::

        y = exp(x - max_axis(x)) / sum_axis(exp(x - max_axis(x)))

    Numeric decisions: the maximum is subtracted first (exact when both are of similar
    magnitude, and it keeps exp from overflowing); ``numpy.exp`` in float32 (within a few ulp,
    not correctly rounded); the sum is float32 (NumPy pairwise order); one float32 division.
    """
    require_float32("Softmax", x=x)
    r = x.ndim
    if not -r <= axis < r:
        raise ValueError(f"Softmax: axis {axis} is outside [{-r}, {r - 1}] for a {r}-D input")
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
