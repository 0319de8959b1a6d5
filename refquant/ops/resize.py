"""Resize (ONNX opset 11–18), mode ``nearest``, on NCHW-or-any-rank float32 tensors.

For every axis with input length ``L``, the output length is ``sizes[d]`` when ``sizes`` is
given (the scale is then ``sizes[d] / L``), else ``floor(L · scales[d])``.  Output index
``i`` reads input index ``nearest(x_orig(i))`` clamped to ``[0, L − 1]``, where
``x_orig`` is the ``coordinate_transformation_mode``:

* ``half_pixel``:          ``(i + 0.5) / scale − 0.5``
* ``pytorch_half_pixel``:  ``(i + 0.5) / scale − 0.5`` if ``L_out > 1``, else 0
* ``align_corners``:       ``i · (L − 1) / (L_out − 1)`` (0 when ``L_out <= 1``)
* ``asymmetric``:          ``i / scale``

with ``L_out = L · scale`` unrounded (``sizes[d]`` when sizes are given) — the onnx reference
evaluator's reading; onnxruntime 1.32 uses the rounded output length in ``align_corners`` and
``pytorch_half_pixel``, so the two differ when ``L · scale`` is not a whole number, and ``nearest`` is the ``nearest_mode``: ``round_prefer_floor`` ``ceil(x − 0.5)``,
``round_prefer_ceil`` ``floor(x + 0.5)``, ``floor``, ``ceil``.  ``x_orig`` is computed in
float64 from the float32 scale (as the onnx reference evaluator does; for the integer scales
these models use every ``x_orig`` is exact).  The values are copied, never computed: the
result is exact and its integers are its input's (an integer pass-through).

``mode`` ``linear``/``cubic`` and ``tf_crop_and_resize`` (which reads ``roi``) are refused
with an error naming the attribute.
"""

from __future__ import annotations

import math

import numpy as np

from .checks import require_float32

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize",
                    "half_pixel_symmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
RESIZE_MODES = ("nearest", "linear", "cubic")


def resize_output_shape(in_shape, scales=None, sizes=None) -> tuple:
    """The output shape from ``sizes`` (int64) or ``scales`` (float32: ``floor(L · scale)``)."""
    if sizes is not None and np.size(sizes):
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(sizes) != len(in_shape):
            raise ValueError(f"Resize: 'sizes' has {len(sizes)} values for a {len(in_shape)}-D input")
        return tuple(sizes)
    if scales is None or not np.size(scales):
        raise ValueError("Resize: one of 'scales' and 'sizes' must be given (non-empty)")
    scales = np.asarray(scales, np.float32).reshape(-1)
    if len(scales) != len(in_shape):
        raise ValueError(f"Resize: 'scales' has {len(scales)} values for a {len(in_shape)}-D input")
    if (scales <= 0).any():
        raise ValueError(f"Resize: 'scales' must be positive, got {scales.tolist()}")
    return tuple(int(math.floor(float(d) * float(s))) for d, s in zip(in_shape, scales))


def _source_index(length: int, out_len: int, scale: float, ctm: str, nearest_mode: str) -> np.ndarray:
    i = np.arange(out_len, dtype=np.float64)
    resized = length * scale  # L_out of the formulas: the unrounded length (= sizes[d] when sizes are given)
    if ctm == "half_pixel":
        x = (i + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        x = (i + 0.5) / scale - 0.5 if resized > 1 else np.zeros_like(i)
    elif ctm == "align_corners":
        x = i * (length - 1) / (resized - 1) if resized > 1 else np.zeros_like(i)
    elif ctm == "asymmetric":
        x = i / scale
    else:
        raise ValueError(f"Resize: coordinate_transformation_mode {ctm!r} is not supported "
                         f"(supported: half_pixel, pytorch_half_pixel, align_corners, asymmetric)")
    if nearest_mode == "round_prefer_floor":
        k = np.ceil(x - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        k = np.floor(x + 0.5)
    elif nearest_mode == "floor":
        k = np.floor(x)
    elif nearest_mode == "ceil":
        k = np.ceil(x)
    else:
        raise ValueError(f"Resize: nearest_mode {nearest_mode!r} is not one of {list(NEAREST_MODES)}")
    return np.clip(k, 0, length - 1).astype(np.int64)


def resize(x: np.ndarray, roi: np.ndarray | None = None, scales: np.ndarray | None = None,
           sizes: np.ndarray | None = None, *, coordinate_transformation_mode: str = "half_pixel",
           cubic_coeff_a: float = -0.75, exclude_outside: int = 0, extrapolation_value: float = 0.0,
           mode: str = "nearest", nearest_mode: str = "round_prefer_floor") -> np.ndarray:
    """ONNX Resize with ``mode="nearest"`` (module docstring); returns a new float32 array."""
    require_float32("Resize", x=x)
    if mode != "nearest":
        raise ValueError(f"Resize: mode {mode!r} is not supported (refquant implements mode 'nearest')")
    out_shape = resize_output_shape(x.shape, scales, sizes)
    y = x
    for d, (length, out_len) in enumerate(zip(x.shape, out_shape)):
        if length == out_len and (scales is None or not np.size(scales) or float(np.asarray(scales).reshape(-1)[d]) == 1.0):
            continue
        scale = out_len / length if sizes is not None and np.size(sizes) else float(np.asarray(scales, np.float32).reshape(-1)[d])
        y = np.take(y, _source_index(length, out_len, scale, coordinate_transformation_mode, nearest_mode), axis=d)
    return np.ascontiguousarray(y) if y is not x else x.copy()
