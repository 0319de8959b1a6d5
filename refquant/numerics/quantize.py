"""Quantize and dequantize: the two maps between real tensors and integer grids.

    quantize:    q = saturate(round_half_even(x / scale) + zero_point)
    dequantize:  x̂ = (q - zero_point) * scale

Numeric decisions (they are what ONNX Runtime's MLAS and the onnx reference evaluator do):

* ``x / scale`` is a float32 division — a division, not a multiplication by ``1/scale``,
  which rounds differently. float16 inputs and scales are widened to float32 exactly first;
  float64 inputs are rounded to float32 first (ONNX QuantizeLinear has no float64 input).
* rounding is half to even (``np.rint``), then the zero point is added as an integer, then
  the result saturates to ``[qmin, qmax]``.
* dequantize subtracts in int32, converts to float32 (exact below 2**24) and multiplies by
  the float32 scale: one float32 rounding.
* NaN or ±Inf in ``x`` raises ``ValueError``: there is no integer to give them.
"""

from __future__ import annotations

import numpy as np

from .qparams import QParams

__all__ = ["quantize", "dequantize", "round_half_even", "saturate"]


def round_half_even(x) -> np.ndarray:
    """Round to the nearest integer, ties to even (IEEE 754 default, ``np.rint``)."""
    return np.rint(x)


def saturate(q, qmin: int, qmax: int) -> np.ndarray:
    """Clamp integers (held in any wide dtype) to ``[qmin, qmax]``."""
    return np.clip(q, qmin, qmax)


def quantize(x, qp: QParams) -> np.ndarray:
    """``saturate(round_half_even(float32(x) / scale) + zero_point)`` in ``qp.fmt``'s storage dtype."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"quantize {qp.name!r}: expected a real tensor, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        n_bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"quantize {qp.name!r}: {n_bad} non-finite value(s) (NaN or Inf)")
    scale, zp = qp.broadcast_to(x.shape)
    with np.errstate(over="ignore"):  # x / scale beyond float32 is ±inf, which saturates
        r = round_half_even(x / scale)
    # float64 holds every integer the sum can take before saturation (|r| > 2**53 saturates anyway)
    q = saturate(r.astype(np.float64) + zp, qp.fmt.qmin, qp.fmt.qmax)
    return q.astype(qp.fmt.storage_dtype)


def dequantize(q, qp: QParams) -> np.ndarray:
    """``float32(int32(q) - zero_point) * scale`` as float32."""
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise TypeError(f"dequantize {qp.name!r}: expected integers, got dtype {q.dtype}")
    scale, zp = qp.broadcast_to(q.shape)
    return (q.astype(np.int32) - zp).astype(np.float32) * scale
