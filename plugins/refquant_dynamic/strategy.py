"""The ``dynamic`` activation strategy: qparams of each input's output, from its own accumulators."""

from __future__ import annotations

import numpy as np

from refquant.numerics import QParams, qparams_from_range, tensor_range
from refquant.strategies import LayerSpec

from .accumulators import accumulator_range, activation_range
from .observer import RangeObserver, float_range

__all__ = ["DynamicActivations", "PER", "per_token_qparams"]

#: the values of the ``per`` option
PER = ("tensor", "token")


def _per(spec: LayerSpec) -> str:
    per = spec.option("per", "tensor")
    if per not in PER:
        raise ValueError(f"layer {spec.layer!r}: dynamic option per={per!r}; expected one of {', '.join(PER)}")
    if per == "token" and spec.per_channel:
        raise ValueError(f"layer {spec.layer!r}: dynamic per=token is its own granularity; drop per-channel")
    return per


def per_token_qparams(y: np.ndarray, spec: LayerSpec) -> QParams:
    """Per-token (per-row) qparams of a float tensor ``y [..., K]``: for every row ``r`` (a position
    of the leading axes — a token)::

        lo_r = min_k y[r, k],  hi_r = max_k y[r, k]                           (float32)
        (s_r, z_r) = qparams_from_range(lo_r, hi_r, spec.fmt, symmetric=spec.symmetric)

    — ``DynamicQuantizeLinear`` applied to each row on its own (uint8, asymmetric: bit for bit).
    Returned as blocked qparams: ``axis = ndim − 1``, ``block_size = K``, scale and zero point of
    shape ``y.shape[:-1] + (1,)`` (one block per row). A tensor of rank < 2 has no rows: ValueError.
    """
    y = np.asarray(y)
    if y.ndim < 2:
        raise ValueError(f"layer {spec.layer!r}: per=token needs rows (rank >= 2), got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"layer {spec.layer!r}: the tensor is empty (shape {y.shape}); there is no range to quantize")
    lo, hi = tensor_range(y.astype(np.float32).reshape(-1, y.shape[-1]), axis=0, name=f"layer {spec.layer!r}")
    qp = qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric, axis=0, name=spec.layer)
    lead = y.shape[:-1] + (1,)
    return QParams(qp.scale.reshape(lead), qp.zero_point.reshape(lead), qp.fmt, axis=y.ndim - 1,
                   block_size=int(y.shape[-1]), name=spec.layer)


class DynamicActivations:
    """Activations by dynamic range: qparams from each input's own int32 accumulators, after the layer.

    ``qparams_after`` computes the exact range of the layer's real output from its accumulators
    (:mod:`refquant_dynamic.accumulators`)::

        lo_c = float32(min acc_c) · s_c,   hi_c = float32(max acc_c) · s_c      (float32)
        per tensor: lo = min_c lo_c, hi = max_c hi_c
        fused Relu: [max(lo, 0), max(hi, 0)];  Relu6: [clip(lo, 0, 6), clip(hi, 0, 6)]

    then ``qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric)`` — per tensor, or
    per channel on ``channel_axis``.

    This is the integer equivalent of ONNX ``DynamicQuantizeLinear`` applied to the float
    output ``y = float32(acc) · s_c`` (and of its Relu): for a uint8 asymmetric per-tensor plan
    the scale and zero point are bit for bit those onnxruntime's DynamicQuantizeLinear returns
    on ``y``, without ``y`` ever being formed. It can differ from DynamicQuantizeLinear on a
    float output computed another way: a float model's own output is not ``acc · s`` (its
    inputs and weights were never quantized), and ``float32(acc)`` rounds to a multiple of 2,
    4, … once ``|acc| > 2^24`` — exact for the ``float32(acc) · s`` definition used here, but
    not the real value ``acc · s`` a float64 dequantization would give. DynamicQuantizeLinear
    itself only defines uint8 per tensor; symmetric, signed, other widths and per-channel
    ranges follow the same rule through ``qparams_from_range``.

    ``qparams_for_float`` applies the same rule to a float tensor (the graph input, and
    dequantize → op → quantize nodes): ``tensor_range`` then ``qparams_from_range`` — for uint8
    per tensor exactly ``DynamicQuantizeLinear``. Calibration is ignored there.

    ``make_observer`` gives a running min-max observer (same rule over all calibration data),
    for an executor that needs calibrated qparams as a fallback (:mod:`refquant_dynamic.observer`).

    Memory: qparams can only be chosen once every accumulator of the input is known, so the
    layer runs through the *unfused* kernel and its whole int32 accumulator tensor exists at
    once — 4 bytes per output element, four times an int8 output, on top of it. The engine
    records that buffer in the layer's working bytes; this strategy only reads it (in-place
    reductions, ``O(channels)`` extra memory).
    """

    name = "dynamic"
    #: ``per=tensor`` (default) or ``per=token``: :func:`per_token_qparams`
    options = ("per",)
    kind = "activations"
    timing = "after"
    doc = __doc__

    def qparams_after(self, acc: np.ndarray, acc_scale: np.ndarray, spec: LayerSpec, *,
                      channel_axis: int = 1, fused_activation: str | None = None) -> QParams:
        if _per(spec) == "token":
            raise ValueError(f"layer {spec.layer!r}: dynamic activations per=token apply to tensors quantized "
                             f"from float (the inputs of a transformer's linear layers, whose outputs stay "
                             f"float); this layer's output is requantized from its int32 accumulators, which "
                             f"takes per-tensor or per-channel qparams (use per=tensor here)")
        lo, hi = accumulator_range(acc, acc_scale, spec.layer, channel_axis=channel_axis,
                                   per_channel=spec.per_channel)
        lo, hi = activation_range(lo, hi, fused_activation, spec.layer)
        axis = channel_axis % np.ndim(acc) if spec.per_channel else None
        return qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric, axis=axis, name=spec.layer)

    def qparams_for_float(self, y: np.ndarray, spec: LayerSpec, observed: QParams | None) -> QParams:
        if _per(spec) == "token":
            return per_token_qparams(y, spec)
        lo, hi = float_range(y, spec)
        return qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric,
                                  axis=1 if spec.per_channel else None, name=spec.layer)

    def make_observer(self, spec: LayerSpec) -> RangeObserver:
        return RangeObserver(spec)
