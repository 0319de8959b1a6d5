"""Gather (ONNX opset 13): rows of a table picked by integer indices — the embedding lookup."""

from __future__ import annotations

import numpy as np

from .checks import require_float32


def gather(data: np.ndarray, indices: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """ONNX Gather::

        y[i_0, ..., i_(q-1), ...] = data[..., indices[i_0, ..., i_(q-1)], ...]   (along ``axis``)

    The output shape is ``data.shape[:axis] + indices.shape + data.shape[axis+1:]``.
    ``indices`` are int64 (or int32); a negative index counts from the end, as ONNX allows.
    Exact: a selection, no arithmetic.  An index outside ``[-d, d-1]`` (``d = data.shape[axis]``)
    raises ValueError naming the first offending value (NumPy would wrap negatives silently
    only inside the range, and raise IndexError outside it).
    """
    require_float32("Gather", data=data)
    if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu":
        got = indices.dtype if isinstance(indices, np.ndarray) else type(indices).__name__
        raise TypeError(f"Gather: argument 'indices' must be an int64 numpy.ndarray, got {got}")
    r = data.ndim
    if r == 0:
        raise ValueError("Gather: 'data' must be at least 1-D, got a scalar")
    if not -r <= axis < r:
        raise ValueError(f"Gather: axis {axis} is outside [{-r}, {r - 1}] for {r}-D data")
    axis = axis + r if axis < 0 else axis
    d = data.shape[axis]
    idx = indices.astype(np.int64)
    bad = (idx < -d) | (idx >= d)
    if bad.any():
        raise ValueError(f"Gather: index {int(idx[bad].flat[0])} is outside [{-d}, {d - 1}] "
                         f"(data dimension {axis} has size {d})")
    return np.take(data, np.where(idx < 0, idx + d, idx), axis=axis)
