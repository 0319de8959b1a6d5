"""Flatten and Reshape (ONNX).  Both only reinterpret the shape: values are untouched and the
result may be a view of the input (the executor never writes into a tensor)."""

from __future__ import annotations

import math

import numpy as np

from .checks import require_float, require_float32


def flatten(x: np.ndarray, *, axis: int = 1) -> np.ndarray:
    """ONNX Flatten: ``(d0..d_{axis-1}, d_axis..d_{r-1}) -> (prod(d0..), prod(d_axis..))``,
    ``axis`` in ``[-r, r]`` (negative counts from the end)."""
    require_float32("Flatten", x=x)
    r = x.ndim
    if not -r <= axis <= r:
        raise ValueError(f"Flatten: axis {axis} is outside [{-r}, {r}] for a {r}-D input")
    axis = axis % r if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def reshape_target(in_shape: tuple[int, ...], shape: np.ndarray) -> tuple[int, ...]:
    """Resolve an ONNX Reshape target (opset 13, allowzero = 0) against a concrete input shape.

    ``0`` copies the input dimension at the same index; one ``-1`` takes whatever size makes
    the element counts equal; every other entry is a positive size.
    """
    values = [int(v) for v in np.asarray(shape).reshape(-1)]
    if values.count(-1) > 1:
        raise ValueError(f"Reshape: target {values} has more than one -1")
    out = []
    for i, v in enumerate(values):
        if v == 0:
            if i >= len(in_shape):
                raise ValueError(f"Reshape: target {values} copies dimension {i} (0) but the input is {len(in_shape)}-D")
            out.append(int(in_shape[i]))
        elif v >= -1:
            out.append(v)
        else:
            raise ValueError(f"Reshape: target {values} has a negative size {v} (only -1 is allowed)")
    total = math.prod(in_shape)
    known = math.prod(v for v in out if v != -1)
    if -1 in out:
        if known == 0 or total % known:
            raise ValueError(f"Reshape: cannot reshape {tuple(in_shape)} into {values}: {total} elements")
        out[out.index(-1)] = total // known
    elif known != total:
        raise ValueError(
            f"Reshape: cannot reshape {tuple(in_shape)} ({total} elements) into {values} ({known} elements)"
        )
    return tuple(out)


def reshape(data: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """ONNX Reshape: ``data`` with the shape :func:`reshape_target` gives for ``shape`` (int64)."""
    require_float32("Reshape", data=data)
    if not isinstance(shape, np.ndarray) or shape.dtype != np.int64 or shape.ndim != 1:
        raise TypeError(f"Reshape: 'shape' must be a 1-D int64 array, got {shape!r}")
    return data.reshape(reshape_target(data.shape, shape))


# ---- backward -------------------------------------------------------------------------------


def flatten_backward(dy: np.ndarray, x: np.ndarray, *, axis: int = 1) -> tuple:
    """Gradient of Flatten: ``dy`` reshaped back to ``x``'s shape (exact)."""
    require_float("Flatten backward", dy=dy, x=x)
    if dy.size != x.size:
        raise ValueError(f"Flatten backward: gradient of shape {dy.shape} cannot be reshaped to {x.shape}")
    return (dy.reshape(x.shape),)


def reshape_backward(dy: np.ndarray, data: np.ndarray, shape: np.ndarray) -> tuple:
    """Gradient of Reshape: ``(dy reshaped to data's shape, None)`` — the shape input is an
    integer constant and has no gradient.  Exact."""
    require_float("Reshape backward", dy=dy, data=data)
    if dy.size != data.size:
        raise ValueError(f"Reshape backward: gradient of shape {dy.shape} cannot be reshaped to {data.shape}")
    return dy.reshape(data.shape), None
