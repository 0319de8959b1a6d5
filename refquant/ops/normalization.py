"""LayerNormalization (ONNX opset 17) in float32, as onnxruntime's CPU kernel computes it."""

from __future__ import annotations

import numpy as np
from numba import njit

from .checks import require_float32


@njit(cache=True)
def _layer_norm_rows(x, scale, bias, eps, out):  # pragma: no cover - compiled
    """One row at a time, every operation in float32, in onnxruntime's order (module doc)."""
    rows, n = x.shape
    nf = np.float32(n)
    for r in range(rows):
        s = np.float32(0.0)
        s2 = np.float32(0.0)
        for h in range(n):
            v = x[r, h]
            s = np.float32(s + v)
            s2 = np.float32(s2 + np.float32(v * v))
        mean = np.float32(s / nf)
        var = np.float32(np.float32(s2 / nf) - np.float32(mean * mean))
        std = np.float32(np.sqrt(np.float32(var + eps)))
        for h in range(n):
            t = np.float32(np.float32(x[r, h] - mean) / std)
            t = np.float32(t * scale[h])
            out[r, h] = np.float32(t + bias[h])


def layer_normalization(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None, *,
                        axis: int = -1, epsilon: float = 1e-5, stash_type: int = 1) -> np.ndarray:
    """ONNX LayerNormalization: normalise over the axes ``axis .. rank-1``::

        mean = sum(x) / n          var = sum(x * x) / n - mean * mean
        y    = (x - mean) / sqrt(var + epsilon) * scale + bias

    Numeric decisions — onnxruntime's CPU kernel (``layer_norm_impl.cc``, ``ComputeJob``),
    operation for operation: both sums in float32, sequentially in increasing index (not
    pairwise); ``var`` by the one-pass formula ``E[x²] − mean²`` (in float32, so it can cancel
    when ``|mean| >> std``; the onnx reference evaluator uses ``E[(x − mean)²]``); ``epsilon``
    rounded to float32 and added to ``var``; one float32 ``sqrt``; then per element a float32
    subtraction, division (not a multiply by ``1/std``), multiply by ``scale`` and add of
    ``bias`` — each rounded to float32 (no fused multiply-add).  ``scale`` and ``bias`` have
    the shape of the normalised axes (ONNX allows broadcasting; refquant requires the exact
    shape).  ``stash_type`` 1 (float32) is the only one.
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
        _layer_norm_rows(x2, np.ascontiguousarray(scale.reshape(n)), b, np.float32(epsilon), out)
    return out.reshape(x.shape)
