"""The ``dynamic`` activation strategy: qparams of each input's output, from its own accumulators."""

from __future__ import annotations

import numpy as np

from refquant.numerics import QParams, qparams_from_range
from refquant.strategies import LayerSpec

from .accumulators import accumulator_range, activation_range
from .observer import RangeObserver, float_range

__all__ = ["DynamicActivations"]


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
    options = ()
    kind = "activations"
    timing = "after"
    doc = __doc__

    def qparams_after(self, acc: np.ndarray, acc_scale: np.ndarray, spec: LayerSpec, *,
                      channel_axis: int = 1, fused_activation: str | None = None) -> QParams:
        lo, hi = accumulator_range(acc, acc_scale, spec.layer, channel_axis=channel_axis,
                                   per_channel=spec.per_channel)
        lo, hi = activation_range(lo, hi, fused_activation, spec.layer)
        axis = channel_axis % np.ndim(acc) if spec.per_channel else None
        return qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric, axis=axis, name=spec.layer)

    def qparams_for_float(self, y: np.ndarray, spec: LayerSpec, observed: QParams | None) -> QParams:
        lo, hi = float_range(y, spec)
        return qparams_from_range(lo, hi, spec.fmt, symmetric=spec.symmetric,
                                  axis=1 if spec.per_channel else None, name=spec.layer)

    def make_observer(self, spec: LayerSpec) -> RangeObserver:
        return RangeObserver(spec)
