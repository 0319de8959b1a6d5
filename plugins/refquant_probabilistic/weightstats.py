"""Offline weight statistics: the mean and variance of each output channel's weights, and of the tensor.

The surrogate treats the ``K = C_in/group · kh · kw`` weights of output channel ``o`` as i.i.d.
draws with mean ``m_o`` and variance ``v_o``. Both are the exact sample statistics of the
weights the kernel multiplies with — the dequantized weight ``ŵ = s_w[o] · (w_q − z_w[o])``::

    m̃_o = Σ_i w̃_{o,i} / K                  w̃ = w_q − z_w[o], integers (int64 sums: exact)
    ṽ_o = Σ_i (w̃_{o,i} − m̃_o)² / K          population variance (ddof 0), float64, two passes
    m_o = s_w[o] · m̃_o,   v_o = s_w[o]² · ṽ_o                 (float64 of the float32 scale)

Per tensor, over all ``C_out · K`` weights (every channel has the same ``K``)::

    m = mean_o m_o,       v = mean_o v_o + var_o m_o           (law of total variance)

For the per-tensor surrogate (a mixture over the output channels) :func:`mixture_statistics`
summarises them, with the bias, per group of channels: 7 floats per group.

They are computed once, in ``prepare``, and stored in ``LayerContext.state`` as plain float64
arrays and numbers: 2 floats per output channel, 2 per tensor and 7 per group.
"""

from __future__ import annotations

import numpy as np

from refquant.strategies import QuantizedWeight

__all__ = ["weight_statistics", "mixture_statistics"]


def weight_statistics(weight: QuantizedWeight, layer: str) -> dict:
    """``{"weight_mean", "weight_var"}`` (float64 ``[C_out]``), ``"weight_mean_tensor"``,
    ``"weight_var_tensor"`` (floats) and ``"fan_in"`` (K) of the quantized ``weight``."""
    values = np.asarray(weight.values)
    if values.dtype.kind not in "iu":
        raise TypeError(f"layer {layer!r}: quantized weight values must be integers, got dtype {values.dtype}")
    if values.ndim < 2 or values.shape[0] == 0 or values.size == 0:
        raise ValueError(f"layer {layer!r}: weight must have output channels on axis 0 and a non-empty "
                         f"fan-in, got shape {values.shape}")
    c_out = values.shape[0]
    k = values.size // c_out
    qp = weight.qparams
    if qp.axis not in (None, 0):
        raise ValueError(f"layer {layer!r}: weight qparams must be per tensor or per output channel "
                         f"(axis 0), got axis {qp.axis}")
    scale = np.broadcast_to(np.asarray(qp.scale, np.float64).reshape(-1), (c_out,))
    zero = np.broadcast_to(np.asarray(qp.zero_point, np.int64).reshape(-1), (c_out,))
    centred = values.reshape(c_out, k).astype(np.int64) - zero[:, None]
    mean_int = centred.sum(axis=1) / k                     # exact integer sum, one rounding
    var_int = ((centred - mean_int[:, None]) ** 2).mean(axis=1)
    mean = scale * mean_int
    var = scale**2 * var_int
    return {
        "weight_mean": mean,
        "weight_var": var,
        "weight_mean_tensor": float(mean.mean()),
        "weight_var_tensor": float(var.mean() + mean.var()),
        "fan_in": int(k),
    }


def mixture_statistics(weight_mean, weight_var, bias, groups: int) -> dict:
    """Per group ``g`` of output channels (``[G]`` float64 arrays), what the per-tensor surrogate needs.

    Over the channels ``o`` of group ``g`` (all groups have ``C_out / G`` channels):
    ``mix_mean = mean m_o``, ``mix_bias = mean b_o``, ``mix_var = mean v_o``,
    ``mix_mean_sq = mean m_o²``, ``mix_mean_var = var m_o``, ``mix_mean_bias_cov = mean (m_o −
    mean m)(b_o − mean b)``, ``mix_bias_var = var b_o`` (NumPy float64 ``mean``/``var``, ddof 0).
    A missing bias is 0.
    """
    m = np.asarray(weight_mean, np.float64).reshape(groups, -1)
    v = np.asarray(weight_var, np.float64).reshape(groups, -1)
    b = np.zeros_like(m) if bias is None else np.asarray(bias, np.float64).reshape(groups, -1)
    dm = m - m.mean(axis=1, keepdims=True)
    db = b - b.mean(axis=1, keepdims=True)
    return {"mix_mean": m.mean(axis=1), "mix_bias": b.mean(axis=1), "mix_var": v.mean(axis=1),
            "mix_mean_sq": (m * m).mean(axis=1), "mix_mean_var": m.var(axis=1),
            "mix_mean_bias_cov": (dm * db).mean(axis=1), "mix_bias_var": b.var(axis=1)}
