"""Constant folding at import: shape subgraphs become initializers.

Exporters compute target shapes at run time: ``Shape → Cast → Slice → Concat → Reshape``,
``Constant → Cast``, ``Gather`` of a shape.  When every input of such a node is a constant —
an initializer, a folded value, or the shape of a tensor whose shape refquant knows at import
— the node is evaluated here, in NumPy, and its output becomes an initializer; the node
disappears from the imported graph (:data:`FOLDABLE_OPS`).

A symbolic dimension (the batch ``N``) has no value at import.  ``Shape`` writes it as a
*marker* (a negative int64 that no real shape holds, :data:`MARKER_BASE` minus its index)
which the structural operators (Cast to an integer type, Slice, Concat, Gather, Squeeze,
Unsqueeze, Identity) carry unchanged.  Two uses of a marker are allowed, because their meaning
is certain: a Reshape target whose entry ``i`` is the marker of the input's own symbolic
dimension ``i`` gets ``0`` there ("copy dimension i", ONNX Reshape with ``allowzero = 0``);
everything else that reads a marker — arithmetic, a cast to float, any other operator —
is refused with an error naming the node and the symbol, never folded into a wrong number.
"""

from __future__ import annotations

import numpy as np

from ..ops.shape import reshape_target
from ..ops.slice import slice_index

__all__ = ["FOLDABLE_OPS", "MARKER_BASE", "fold_node", "has_marker", "reshape_target_with_markers"]

#: the operators evaluated at import when all their inputs are constants
FOLDABLE_OPS = ("Shape", "Cast", "Slice", "Concat", "Gather", "Squeeze", "Unsqueeze", "Identity", "Reshape",
                "Add", "Sub", "Mul", "Div", "Neg", "ConstantOfShape", "Range", "Equal", "Where", "Expand")
_STRUCTURAL = ("Shape", "Cast", "Slice", "Concat", "Gather", "Squeeze", "Unsqueeze", "Identity")
#: markers are MARKER_BASE - k for the k-th symbolic dimension name met (int32-safe: exporters cast shapes to int32)
MARKER_BASE = -(2**30)


def has_marker(a) -> bool:
    a = np.asarray(a)
    return a.dtype.kind == "i" and bool((a <= MARKER_BASE).any())


def _normalise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return a.astype(np.float32)
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    raise ValueError(f"dtype {a.dtype} is not representable")


def _cast_dtype(onnx, to: int):
    return onnx.helper.tensor_dtype_to_np_dtype(to)


def _axes(node_attrs, values, i):
    if "axes" in node_attrs:
        return [int(v) for v in node_attrs["axes"]]
    if len(values) > i and values[i] is not None:
        return [int(v) for v in np.asarray(values[i]).reshape(-1)]
    return None


def fold_node(onnx, op: str, values: list, attrs: dict, symbols: dict, where: str, input_shape=None):
    """The value of one foldable node from its constant inputs (``None`` for absent inputs).

    ``Shape`` takes ``input_shape`` (its input's shape, ints and symbols; ``symbols`` maps each
    symbol to its marker and grows as new ones are met).  Raises ValueError naming ``where``.
    """
    marked = any(v is not None and has_marker(v) for v in values)
    if marked and op not in _STRUCTURAL:
        names = ", ".join(s for s in symbols)
        raise ValueError(f"{where}: computes with the symbolic dimension(s) {names} at import; refquant folds "
                         f"shape arithmetic only for static shapes (give the input a static shape)")
    if op == "Shape":
        dims = []
        for d in input_shape:
            if isinstance(d, str):
                d = symbols.setdefault(d, MARKER_BASE - len(symbols))
            dims.append(int(d))
        a = np.asarray(dims, np.int64)
        start, end = attrs.get("start", 0), attrs.get("end")
        return a[start:end]
    x = values[0] if values else None
    if op == "Cast":
        dt = np.dtype(_cast_dtype(onnx, attrs["to"]))
        if marked and dt.kind not in "iu":
            raise ValueError(f"{where}: casts a symbolic dimension to {dt}")
        return _normalise(x.astype(dt))
    if op == "Identity":
        return x
    if op == "Slice":
        if "starts" in attrs:  # opset < 10
            idx = slice_index(x.shape, attrs["starts"], attrs["ends"], attrs.get("axes"))
        else:
            idx = slice_index(x.shape, *values[1:3], *(values[3:5] + [None, None])[:2])
        return x[idx].copy()
    if op == "Concat":
        return np.concatenate([v for v in values if v is not None], axis=attrs["axis"])
    if op == "Gather":
        return np.take(x, values[1], axis=attrs.get("axis", 0))
    if op == "Squeeze":
        axes = _axes(attrs, values, 1)
        return np.squeeze(x, axis=tuple(axes) if axes is not None else None)
    if op == "Unsqueeze":
        axes = sorted(a % (x.ndim + len(_axes(attrs, values, 1))) for a in _axes(attrs, values, 1))
        for a in axes:
            x = np.expand_dims(x, a)
        return x
    if op == "Reshape":
        return x.reshape(reshape_target(x.shape, values[1]))
    if op in ("Add", "Sub", "Mul"):
        return _normalise({"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](x, values[1]))
    if op == "Div":
        if x.dtype.kind == "f":
            return _normalise(np.divide(x, values[1]))
        return _normalise(np.trunc(np.true_divide(x, values[1])).astype(np.int64))  # ONNX integer Div truncates
    if op == "Neg":
        return -x
    if op == "ConstantOfShape":
        fill = attrs.get("value")
        fill = np.zeros(1, np.float32) if fill is None else onnx.numpy_helper.to_array(fill)
        return _normalise(np.full(tuple(int(v) for v in x), fill.reshape(-1)[0], dtype=fill.dtype))
    if op == "Range":
        return _normalise(np.arange(x.item(), values[1].item(), values[2].item(), dtype=x.dtype))
    if op == "Equal":
        return np.equal(x, values[1]).astype(np.int64)
    if op == "Where":
        return np.where(x.astype(bool), values[1], values[2])
    if op == "Expand":
        return x * np.ones(tuple(int(v) for v in values[1]), x.dtype)
    raise ValueError(f"{where}: {op} is not foldable")


def reshape_target_with_markers(target: np.ndarray, in_shape, symbols: dict, where: str) -> np.ndarray:
    """A folded Reshape target with its markers resolved (module docstring): entry ``i`` equal
    to the marker of the input's symbolic dimension ``i`` becomes ``0``; any other marker is refused."""
    by_marker = {m: s for s, m in symbols.items()}
    out = target.copy()
    for i, v in enumerate(target):
        if v <= MARKER_BASE:
            sym = by_marker.get(int(v), "?")
            if i < len(in_shape) and in_shape[i] == sym:
                out[i] = 0
            else:
                raise ValueError(f"{where}: the target shape places the symbolic dimension {sym} at position {i}, "
                                 f"where the input {tuple(in_shape)} does not have it; refquant cannot fold that")
    return out
