"""Slice (ONNX opset 13): ``starts``, ``ends``, ``axes``, ``steps`` are int64 inputs.

For each listed axis of length ``L`` (negative axes count from the end; default all axes,
steps 1): a negative start/end has ``L`` added; then, for a positive step, ``start`` is
clamped to ``[0, L]`` and ``end`` to ``[0, L]``; for a negative step, ``start`` to
``[0, L − 1]`` and ``end`` to ``[−1, L − 1]``; the result is ``x[start:end:step]`` along that
axis (``end = −1`` meaning "through index 0").  A step of 0 and a repeated axis are refused.
Values are copied, never computed: exact, an integer pass-through.
"""

from __future__ import annotations

import numpy as np

from .checks import require_float32


def slice_index(shape, starts, ends, axes=None, steps=None) -> tuple:
    """The tuple of Python slices the ONNX rule gives for an input of ``shape``."""
    r = len(shape)
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).reshape(-1)]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError(f"Slice: starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    index = [slice(None)] * r
    seen = set()
    for s, e, a, st in zip(starts, ends, axes, steps):
        if not -r <= a < r:
            raise ValueError(f"Slice: axis {a} is outside [{-r}, {r - 1}] for a {r}-D input")
        a %= r
        if a in seen:
            raise ValueError(f"Slice: axis {a} is listed twice")
        seen.add(a)
        if st == 0:
            raise ValueError("Slice: a step of 0")
        n = shape[a]
        if not isinstance(n, (int, np.integer)):
            if (s, e, st) in ((0, 2**63 - 1, 1),):
                continue
            raise ValueError(f"Slice: axis {a} has the symbolic length {n!r}; only a full slice is allowed there")
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
        else:
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
        index[a] = slice(s, None if e == -1 else e, st)
    return tuple(index)


def slice_(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, axes: np.ndarray | None = None,
           steps: np.ndarray | None = None) -> np.ndarray:
    """ONNX Slice (module docstring); a new contiguous float32 array."""
    require_float32("Slice", data=data)
    return np.ascontiguousarray(data[slice_index(data.shape, starts, ends, axes, steps)])
