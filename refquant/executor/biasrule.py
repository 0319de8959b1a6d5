"""The int32 bias rule: widen a weight channel whose int32 bias (with its accumulator) would not fit.

A layer's int32 bias is ``b_q[c] = rint(b[c] / float32(s_x · s_w[c]))``
(:func:`refquant.executor.program.quantize_bias`). A channel whose weights are (almost) dead —
BatchNormalization folding leaves channels with max |w| ~ 1e-9 — gets a tiny weight scale, so
``|b[c]| / (s_x s_w[c])`` leaves int32 (EfficientNet-Lite0's stem: about -6.6e12). This is the
production toolchains' rule (onnxruntime ``_adjust_weight_scale_for_int32_bias``, TFLite
``AdjustWeightsForBiasScale``) with the accumulator's headroom reserved as well, so that the
bias *and* every sum of products fit:

    limit   = 2^31 - 1 - K · Q_w · Q_x
    s_w'[c] = max(s_w[c], 1.0001 · |b[c]| / (s_x · limit))

``K`` is the number of products per output value (the weight's size per output channel),
``Q_w = max(qmax_w - z_w, z_w - qmin_w)`` and ``Q_x = max(qmax_x - z_x, z_x - qmin_x)`` the
largest magnitudes of ``q_w - z_w`` and ``q_x - z_x`` on their grids. Then
``|b_q| + |Σ (q_x - z_x)(q_w - z_w)| ≤ 2^31 - 1`` for every input: the widened layer can
never overflow. A widened channel's weights are requantized on its new scale (uniform
weights: ``quantize(w[c], s_w'[c], z_w[c])`` from the float weight — the zero point is kept,
so the grid still covers the range; codebook weights: each int8 level re-rounded,
``rint(level · s_w / s_w')``, the same function of the level for the lookup table
``codebook_int8`` and the values, so the indices stay valid). Per-tensor weights widen their
one scale to the largest channel's need. Weights executed in float (``execution="float"``:
float formats, ``lloydmax-float``) keep a float32 bias and are left alone.

``s_x`` is the input's scale as calibration fixes it (:func:`~refquant.executor.program.static_qparams`):
exact for an input whose qparams are decided offline. An input whose qparams are decided per
input (the previous layer's strategy is ``dynamic`` or ``probabilistic``) has no fixed scale:
the rule then sizes the weight scale for :data:`PER_INPUT_SCALE_FACTOR` (1/256) times the
calibrated scale (``static_qparams(offline_only=False)``) — one image's range is rarely a
256th of the calibration set's. An input whose run-time scale falls below that can still
overflow, and the kernels raise :class:`~refquant.kernels.AccumulatorOverflowError` as before
(onnxruntime's dynamic quantization avoids the question by adding the bias in float; the
int32 bias is refquant's contract). A layer with
``K·Q_w·Q_x ≥ 2^31 - 1`` (over 66 000 products per output at 8 bits) cannot be helped by any
weight scale and is left as it is: if its accumulators leave int32 the kernel raises.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..numerics import QParams, quantize

__all__ = ["BIAS_RULES", "INT32_MAX", "MARGIN", "PER_INPUT_SCALE_FACTOR", "Widening", "accumulator_headroom",
           "widen_for_bias"]

#: ``quantize_model(..., bias_rule=...)``: ``"widen"`` (default) applies the rule, ``"off"`` does not
BIAS_RULES = ("widen", "off")
INT32_MAX = 2**31 - 1
#: onnxruntime's relative margin on the smallest allowed ``s_x · s_w``
MARGIN = 1.0001
#: an input scale decided per input is assumed to be at least this share of the calibrated one
PER_INPUT_SCALE_FACTOR = 2.0 ** -8


@dataclass(frozen=True)
class Widening:
    """What the rule did to one layer: the channels widened, their old and new weight scales."""

    layer: str
    channels: np.ndarray      # output channels whose scale was widened (all of them: per tensor)
    old_scale: np.ndarray     # float32, the strategy's scales of those channels
    new_scale: np.ndarray     # float32, after the rule
    input_scale: float
    headroom: int             # K · Q_w · Q_x

    def as_dict(self) -> dict:
        return {"layer": self.layer, "channels": [int(c) for c in self.channels],
                "old_scale": [float(s) for s in self.old_scale],
                "new_scale": [float(s) for s in self.new_scale],
                "input_scale": float(self.input_scale), "headroom": int(self.headroom)}


def _grid_magnitude(fmt, zero_point) -> int:
    z = np.asarray(zero_point, np.int64)
    return int(np.max(np.maximum(fmt.qmax - z, z - fmt.qmin)))


def accumulator_headroom(weight_values: np.ndarray, w_qp: QParams, x_qp: QParams) -> int:
    """``K · Q_w · Q_x``: the largest ``|Σ (q_x - z_x)(q_w - z_w)|`` one output value can reach."""
    k = int(np.prod(weight_values.shape[1:], dtype=np.int64))
    return k * _grid_magnitude(w_qp.fmt, w_qp.zero_point) * _grid_magnitude(x_qp.fmt, x_qp.zero_point)


def _fits(bias: np.ndarray, x_scale: np.float32, w_scale: np.ndarray, limit: int) -> np.ndarray:
    """Per channel: ``MARGIN · |b| ≤ limit · float32(s_x · s_w)`` (the product as quantize_bias forms it)."""
    prod = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float64)
    return MARGIN * np.abs(bias.astype(np.float64)) <= limit * prod


def widen_for_bias(weight, w_float: np.ndarray, bias: np.ndarray | None, x_qp: QParams,
                   layer: str, *, per_input: bool = False):
    """``(weight', Widening | None)``: ``weight`` with the int32 bias rule applied (module doc).

    ``per_input``: ``x_qp`` is the calibrated estimate of a scale decided per input; the rule
    sizes for ``PER_INPUT_SCALE_FACTOR · s_x``."""
    if bias is None or weight.execution == "float" or not x_qp.per_tensor:
        return weight, None
    w_qp = weight.qparams
    headroom = accumulator_headroom(weight.values, w_qp, x_qp)
    limit = INT32_MAX - headroom
    if limit <= 0:
        return weight, None
    b = np.asarray(bias, np.float32).reshape(-1)
    s_x = np.float32(x_qp.scale)
    if per_input:
        s_x = np.float32(float(s_x) * PER_INPUT_SCALE_FACTOR)
    per_tensor = w_qp.per_tensor
    scale = np.atleast_1d(np.asarray(w_qp.scale, np.float32)).copy()
    need = scale if not per_tensor else np.full(b.shape, scale[0], np.float32)
    ok = _fits(b, s_x, need, limit)
    if ok.all():
        return weight, None
    wanted = (MARGIN * np.abs(b.astype(np.float64)) / (float(s_x) * limit)).astype(np.float32)
    if per_tensor:
        wanted = np.array([wanted.max()], np.float32)
        rows = np.array([0])
        channels = np.arange(len(b))
    else:
        rows = channels = np.flatnonzero(~ok)
    new = np.maximum(scale[rows], wanted[rows]).astype(np.float32)
    for _ in range(64):  # float32 rounding of s_x · s_w': step up until it fits
        check_b = b[channels] if not per_tensor else np.array([np.abs(b).max()], np.float32)
        bad = ~_fits(check_b, s_x, new, limit)
        if not bad.any():
            break
        new[bad] = np.nextafter(new[bad], np.float32(np.inf))
    old = scale[rows].copy()
    scale[rows] = new
    z = np.atleast_1d(np.asarray(w_qp.zero_point, np.int32))
    if per_tensor:
        qp = QParams(scale[0], z[0], w_qp.fmt, name=w_qp.name)
    else:
        qp = QParams(scale, z, w_qp.fmt, axis=0, name=w_qp.name)
    values = np.array(weight.values, copy=True)
    arrays = dict(weight.arrays)
    if weight.representation == "uniform":
        w32 = np.asarray(w_float, np.float32)
        if per_tensor:
            values = quantize(w32, qp)
        else:
            sub = QParams(new, z[rows], w_qp.fmt, axis=0, name=w_qp.name)
            values[rows] = quantize(w32[rows], sub)
    else:
        fmt = w_qp.fmt
        ratio = (old / new).astype(np.float64)

        def reround(levels, zp, r):
            shape = (-1,) + (1,) * (levels.ndim - 1)
            q = np.rint((levels.astype(np.float64) - zp.reshape(shape)) * r.reshape(shape)) + zp.reshape(shape)
            return np.clip(q, fmt.qmin, fmt.qmax).astype(levels.dtype)

        if per_tensor:
            values = reround(values[None], z[:1], ratio)[0]
            if "codebook_int8" in arrays:
                cb = np.asarray(arrays["codebook_int8"])
                arrays["codebook_int8"] = reround(cb.reshape(1, -1), z[:1], ratio).reshape(cb.shape)
        else:
            values[rows] = reround(values[rows], z[rows], ratio)
            cb = arrays.get("codebook_int8")
            if cb is not None and np.asarray(cb).shape[0] == len(scale):
                cb = np.array(cb, copy=True)
                cb[rows] = reround(cb[rows], z[rows], ratio)
                arrays["codebook_int8"] = cb
    widened = replace(weight, values=values, qparams=qp, arrays=arrays)
    return widened, Widening(layer, np.asarray(channels), old if not per_tensor else np.repeat(old, 1),
                             new, float(s_x), int(headroom))
