"""Transpose, Concat, Unsqueeze and Squeeze (ONNX opset 13).  They only move values: every
result is exact, and the same on every backend."""

from __future__ import annotations

import numpy as np

from .checks import require_float32


def normalise_axes(op: str, axes, rank: int, what: str = "axes") -> list[int]:
    """``axes`` (an int64 array or a list) normalised to ``[0, rank)``; ValueError naming ``op``
    for an axis out of ``[-rank, rank)`` or a repeated one."""
    values = [int(a) for a in np.asarray(axes).reshape(-1)]
    out = []
    for a in values:
        if not -rank <= a < rank:
            raise ValueError(f"{op}: {what} {values} has {a}, outside [{-rank}, {rank - 1}]")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: {what} {values} names an axis twice")
    return out


def transpose(data: np.ndarray, *, perm: list | None = None) -> np.ndarray:
    """ONNX Transpose: ``y.shape[i] = x.shape[perm[i]]``; without ``perm``, the axes reversed."""
    require_float32("Transpose", data=data)
    if perm is None:
        return np.transpose(data)
    if sorted(perm) != list(range(data.ndim)):
        raise ValueError(f"Transpose: perm {list(perm)} is not a permutation of the {data.ndim} axes")
    return np.transpose(data, perm)


def concat(*inputs: np.ndarray, axis: int) -> np.ndarray:
    """ONNX Concat: the inputs joined along ``axis`` (negative counts from the end); every other
    dimension must agree."""
    if not inputs:
        raise ValueError("Concat: needs at least one input")
    require_float32("Concat", **{f"inputs[{i}]": a for i, a in enumerate(inputs)})
    r = inputs[0].ndim
    if not -r <= axis < r:
        raise ValueError(f"Concat: axis {axis} is outside [{-r}, {r - 1}] for {r}-D inputs")
    a = axis % r
    for i, x in enumerate(inputs):
        if x.ndim != r or x.shape[:a] + x.shape[a + 1:] != inputs[0].shape[:a] + inputs[0].shape[a + 1:]:
            raise ValueError(f"Concat: input {i} has shape {x.shape}, which does not match input 0's "
                             f"{inputs[0].shape} outside axis {axis}")
    return np.concatenate(inputs, axis=a)


def unsqueeze(data: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """ONNX Unsqueeze (opset 13: ``axes`` is an int64 input): size-1 axes inserted so that they
    sit at ``axes`` of the output (negative axes count from the output's end)."""
    require_float32("Unsqueeze", data=data)
    out_rank = data.ndim + np.asarray(axes).size
    shape = list(data.shape)
    for a in sorted(normalise_axes("Unsqueeze", axes, out_rank)):
        shape.insert(a, 1)
    return data.reshape(shape)


def squeeze(data: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    """ONNX Squeeze (opset 13: ``axes`` is an optional int64 input): the named axes, which must
    have size 1, removed; without ``axes``, every size-1 axis."""
    require_float32("Squeeze", data=data)
    if axes is None:
        return data.reshape([d for d in data.shape if d != 1])
    drop = normalise_axes("Squeeze", axes, data.ndim)
    for a in drop:
        if data.shape[a] != 1:
            raise ValueError(f"Squeeze: axis {a} of shape {data.shape} has size {data.shape[a]}, not 1")
    return data.reshape([d for i, d in enumerate(data.shape) if i not in drop])
