"""ReduceMean and ReduceSum (ONNX opset 13) in float32.

Numeric decision: the sum is accumulated in float64 (NumPy's pairwise order, no BLAS) and
rounded once to float32; the mean is ``float32(sum₆₄ / n)``.  So the result is the same on
every host, and within half an ulp of the exact value unless the float64 sum itself
cancels.  Backends sum in float32 (onnxruntime, in its own order) and differ by a few ulps.
"""

from __future__ import annotations

import math

import numpy as np

from .checks import require_float32
from .layout import normalise_axes


def _reduce(op: str, data: np.ndarray, axes, keepdims: int, mean: bool) -> np.ndarray:
    require_float32(op, data=data)
    axis = tuple(range(data.ndim)) if axes is None else tuple(normalise_axes(op, axes, data.ndim))
    s = data.astype(np.float64).sum(axis=axis, keepdims=bool(keepdims))
    if mean:
        s = s / math.prod(data.shape[a] for a in axis)
    return np.asarray(s, np.float32)


def reduce_mean(data: np.ndarray, *, axes: list | None = None, keepdims: int = 1) -> np.ndarray:
    """ONNX ReduceMean (opset 13, ``axes`` an attribute): the mean over ``axes`` (all axes when
    absent); ``keepdims`` keeps them as size 1."""
    return _reduce("ReduceMean", data, axes, keepdims, mean=True)


def reduce_sum(data: np.ndarray, axes: np.ndarray | None = None, *, keepdims: int = 1,
               noop_with_empty_axes: int = 0) -> np.ndarray:
    """ONNX ReduceSum (opset 13, ``axes`` an optional int64 input): the sum over ``axes``; when
    ``axes`` is absent or empty, every axis — or, with ``noop_with_empty_axes``, the input
    unchanged."""
    if axes is not None and np.asarray(axes).size == 0:
        axes = None
    if axes is None and noop_with_empty_axes:
        require_float32("ReduceSum", data=data)
        return data
    return _reduce("ReduceSum", data, axes, keepdims, mean=False)
