"""LayerNormalization (ONNX opset 17): float32 in and out, computed in float64, rounded once."""

from __future__ import annotations

import numpy as np
from numba import njit

from .checks import require_float32


@njit(cache=True)
def _layer_norm_rows(x, scale, bias, eps, out):  # pragma: no cover - compiled
    """One row at a time in float64, sums in increasing index, one rounding per output (module doc)."""
    rows, n = x.shape
    for r in range(rows):
        s = 0.0
        for h in range(n):
            s += np.float64(x[r, h])
        mean = s / n
        ss = 0.0
        for h in range(n):
            d = np.float64(x[r, h]) - mean
            ss += d * d
        std = np.sqrt(ss / n + eps)
        for h in range(n):
            out[r, h] = np.float32((np.float64(x[r, h]) - mean) / std * np.float64(scale[h]) + np.float64(bias[h]))


def layer_normalization(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None, *,
                        axis: int = -1, epsilon: float = 1e-5, stash_type: int = 1) -> np.ndarray:
    """ONNX LayerNormalization: normalise over the axes ``axis .. rank-1``::

        mean = sum(x) / n          var = sum((x - mean)²) / n
        y    = (x - mean) / sqrt(var + epsilon) * scale + bias

    Numeric decisions (the float reference path: machine-independent, one rounding): every
    quantity in float64 from the float32 inputs — the mean and then the variance by the two-pass
    formula ``sum((x - mean)²) / n`` (the onnx reference evaluator's; not onnxruntime's one-pass
    ``E[x²] − mean²``, which cancels when ``|mean| >> std``), each sum sequential in increasing
    index; ``epsilon`` (the float32 attribute, widened) added to the variance; then
    ``(x − mean) / sqrt(var + eps) · scale + bias`` in float64, rounded once to float32.
    onnxruntime's CPU kernel (``layer_norm_impl.cc``) computes in float32 with its own
    vectorised order, which NumPy cannot reproduce: on BERT-like rows the two differ by at most
    a few float32 ulp of the output (tests measure it). ``scale`` and ``bias`` have the shape of
    the normalised axes (ONNX allows broadcasting; refquant requires the exact shape).
    ``stash_type`` 1 is the only one.
    """
    require_float32("LayerNormalization", x=x, scale=scale, bias=bias)
    r = x.ndim
    if not -r <= axis < r:
        raise ValueError(f"LayerNormalization: axis {axis} is outside [{-r}, {r - 1}] for a {r}-D input")
    if stash_type != 1:
        raise ValueError(f"LayerNormalization: stash_type must be 1 (float32), got {stash_type}")
    axis = axis + r if axis < 0 else axis
    norm_shape = x.shape[axis:]
    for name, a in (("scale", scale), ("bias", bias)):
        if a is not None and a.shape != norm_shape:
            raise ValueError(f"LayerNormalization: {name!r} must have shape {norm_shape} (the normalised axes), "
                             f"got {a.shape}")
    n = int(np.prod(norm_shape, dtype=np.int64))
    rows = x.size // n if n else 0
    x2 = np.ascontiguousarray(x.reshape(rows, n))
    b = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias.reshape(n))
    out = np.empty_like(x2)
    if x2.size:
        _layer_norm_rows(x2, np.ascontiguousarray(scale.reshape(n)), b, float(np.float32(epsilon)), out)
    return out.reshape(x.shape)
